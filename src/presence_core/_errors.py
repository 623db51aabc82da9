"""The exception hierarchy of presence_core.

Every error the core raises is a :class:`PresenceError`. Two branches say whose fault it was:

* :class:`LocalProtocolError`: the caller broke the contract (a wrong argument type, tracking the
  same presence twice, time going backwards, ...). Fix the calling code. A value class built with
  an argument it cannot hold (a :class:`~presence_core.ReplicaRef`, a message, a payload) raises
  its subclass :class:`InvalidArgument`, which is also a ``ValueError`` and a ``TypeError``.
* :class:`RemoteProtocolError`: another replica sent something no correct replica could send
  (garbage bytes, a field of the wrong type, an unknown wire version). Drop the message, keep going.

A failing call never changes state: the core validates first and commits after.
"""

from __future__ import annotations

__all__ = [
    "AlreadyTracked",
    "ConfigurationError",
    "InvalidArgument",
    "LimitExceeded",
    "LocalProtocolError",
    "NoPresence",
    "PresenceError",
    "RemoteProtocolError",
]


_LONG_INT_BITS = 1024
"""Ints longer than this are described by their size in error messages."""


def shown(value: object) -> str:
    """``repr(value)`` for an error message, for any value a caller may pass.

    Python refuses to print an int of more than 4300 digits (``ValueError``), and one of hundreds
    of digits says nothing: an int longer than 1024 bits is described by its size instead, in a
    tuple or a list too.
    """
    if type(value) is int and value.bit_length() > _LONG_INT_BITS:
        return f"an int of {value.bit_length()} bits"
    if type(value) is tuple or type(value) is list:
        items = [shown(item) for item in value]
        if type(value) is list:
            return f"[{', '.join(items)}]"
        return f"({', '.join(items)}{',' if len(items) == 1 else ''})"
    return repr(value)


class PresenceError(Exception):
    """Base class of every error raised by presence_core. Never raised itself."""

    def __init__(self, message: str) -> None:
        if type(self) is PresenceError:
            raise TypeError("PresenceError is abstract: raise a concrete subclass")
        super().__init__(message)
        self.message = message


class LocalProtocolError(PresenceError):
    """The caller misused the API; the object's state is exactly what it was before the call."""


class ConfigurationError(LocalProtocolError, ValueError):
    """A configuration value is invalid (for example ``down_period < 2 * broadcast_period``)."""


class InvalidArgument(LocalProtocolError, ValueError, TypeError):
    """An argument no call could accept: of the wrong type, or out of range.

    Raised when a value is built from fields it cannot hold (:class:`~presence_core.ReplicaRef`,
    :class:`~presence_core.Entry`, the messages and :class:`~presence_core.Outbound`, the
    events, :class:`~presence_core.Snapshot`, :class:`~presence_core.Delta`,
    :class:`~presence_core.SnapshotPart`, :class:`~presence_core.DeltaGenerations`, the keys of
    :class:`~presence_core.Keyring`), and by the free functions given something that is not what
    they take. Nothing is created or changed.

    It is also a ``ValueError`` and a ``TypeError``: what these constructors raised before, so
    code that catches either keeps working.
    """


class _IdentityError(LocalProtocolError):
    """An error about one presence identity of this replica."""

    _what = ""

    def __init__(self, conn: str, topic: str, key: str) -> None:
        super().__init__(f"{self._what}: conn={conn!r} topic={topic!r} key={key!r}")
        self.conn = conn
        self.topic = topic
        self.key = key


class AlreadyTracked(_IdentityError):
    """The exact ``(conn, topic, key)`` is already tracked by this replica.

    Attributes:
        conn: the connection id.
        topic: the topic.
        key: the presence key.
    """

    _what = "already tracked"


class NoPresence(_IdentityError):
    """There is no presence for ``(conn, topic, key)`` to update.

    Attributes:
        conn: the connection id.
        topic: the topic.
        key: the presence key.
    """

    _what = "no presence"


class LimitExceeded(LocalProtocolError):
    """A size limit was exceeded (for example a meta too large to replicate)."""


class RemoteProtocolError(PresenceError):
    """Another replica sent a message that no correct replica could send.

    Attributes:
        replica: the sending replica's name when it could be read, else ``None``.
    """

    def __init__(self, message: str, *, replica: str | None = None) -> None:
        super().__init__(message)
        self.replica = replica
