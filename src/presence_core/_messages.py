"""Messages replicas send each other (nouns), and where they go (SPEC §3.2).

These are values: frozen, validated on construction, comparable. The codec (``_codec``) turns
them into bytes and back. A field a message cannot hold raises
:class:`~presence_core.InvalidArgument` (a :class:`~presence_core.LocalProtocolError` that is
also a ``ValueError`` and a ``TypeError``) and no message is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import attrs

from ._errors import InvalidArgument, shown
from ._payloads import Delta, Snapshot, SnapshotPart
from ._vclock import ReplicaRef

__all__ = [
    "GracefulPermdown",
    "Heartbeat",
    "Message",
    "Outbound",
    "TransferAck",
    "TransferRequest",
]


def _context(value: Mapping[ReplicaRef, int]) -> Mapping[ReplicaRef, int]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidArgument(
            f"clock must be a mapping of ReplicaRef to int, not {type(value).__name__}"
        )
    context = dict(value)
    for replica, clock in context.items():
        if not isinstance(replica, ReplicaRef):
            raise InvalidArgument(f"clock keys must be ReplicaRef, not {type(replica).__name__}")
        if type(clock) is not int or clock < 0:
            raise InvalidArgument(f"clock[{replica!r}] must be an int >= 0, not {shown(clock)}")
    return context


def _request_id(_instance: object, _attribute: object, value: int) -> None:
    if type(value) is not int or value < 0:
        raise InvalidArgument(f"request_id must be an int >= 0, not {shown(value)}")


def _ref(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, ReplicaRef):
        raise InvalidArgument(f"{attribute.name} must be a ReplicaRef, not {type(value).__name__}")


def _delta(_instance: object, _attribute: object, value: Any) -> None:
    if value is not None and not isinstance(value, Delta):
        raise InvalidArgument(f"delta must be a Delta or None, not {type(value).__name__}")


def _payload(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, (Delta, Snapshot, SnapshotPart)):
        raise InvalidArgument(
            f"payload must be a Delta, a Snapshot or a SnapshotPart, not {type(value).__name__}"
        )


def _message(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, (Heartbeat, TransferRequest, TransferAck, GracefulPermdown)):
        raise InvalidArgument(
            "message must be a Heartbeat, a TransferRequest, a TransferAck or a GracefulPermdown, "
            f"not {type(value).__name__}"
        )


def _to(_instance: object, _attribute: object, value: Any) -> None:
    if value is not None and (type(value) is not str or not value):
        what = repr(value) if type(value) is str else type(value).__name__
        raise InvalidArgument(f"to must be a replica name (a non-empty str) or None, not {what}")


def _data(_instance: object, _attribute: object, value: Any) -> None:
    if type(value) is not bytes:
        raise InvalidArgument(f"data must be bytes, not {type(value).__name__}")


def _part(instance: Heartbeat | TransferAck, _attribute: object, value: int) -> None:
    parts = instance.parts
    if type(parts) is not int or parts < 1:
        raise InvalidArgument(f"parts must be an int >= 1, not {shown(parts)}")
    if type(value) is not int or not 0 <= value < parts:
        raise InvalidArgument(
            f"part must be an int from 0 to parts - 1 = {parts - 1}, not {shown(value)}"
        )


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A replica's periodic broadcast: its clock and, when it has one, its pending delta.

    A delta too large for one message goes out as ``parts`` heartbeats, each with the same clock
    and a part of the delta (see :func:`~presence_core.encode_parts`).

    Attributes:
        sender: the sending replica.
        clock: the sender's context, without the replicas it considers down.
        delta: the delta of the window just closed (or a part of it), or ``None`` for an empty
            heartbeat.
        part: which part this is, from 0.
        parts: how many parts the delta was sent in (1: it was sent whole).

    Raises:
        InvalidArgument: ``sender`` is not a ReplicaRef, ``clock`` not a mapping of ReplicaRef to
            int ``>= 0``, ``delta`` neither a Delta nor ``None``, or ``part`` / ``parts`` not
            ints with ``0 <= part < parts``.
    """

    sender: ReplicaRef = attrs.field(validator=_ref)
    clock: Mapping[ReplicaRef, int] = attrs.field(converter=_context)
    delta: Delta | None = attrs.field(default=None, validator=_delta)
    part: int = attrs.field(default=0, validator=_part)
    parts: int = 1


@attrs.frozen(kw_only=True)
class TransferRequest:
    """A request for what the sender lacks, sent to one replica.

    Attributes:
        request_id: correlation number, echoed by the reply.
        sender: the requesting replica.
        clock: the requester's context (without replicas it considers down).

    Raises:
        InvalidArgument: ``request_id`` is not an int ``>= 0``, ``sender`` not a ReplicaRef, or
            ``clock`` not a mapping of ReplicaRef to int ``>= 0``.
    """

    request_id: int = attrs.field(validator=_request_id)
    sender: ReplicaRef = attrs.field(validator=_ref)
    clock: Mapping[ReplicaRef, int] = attrs.field(converter=_context)


@attrs.frozen(kw_only=True)
class TransferAck:
    """The reply to a :class:`TransferRequest`: a delta generation or the full state.

    A reply too large for one message goes out as ``parts`` messages with the same request id,
    each carrying a part of the payload: parts of a delta are deltas, parts of the full state
    are :class:`~presence_core.SnapshotPart`.

    Attributes:
        request_id: the request's correlation number.
        sender: the replying replica.
        payload: a :class:`~presence_core.Delta`, a :class:`~presence_core.Snapshot` or a
            :class:`~presence_core.SnapshotPart`.
        part: which part this is, from 0.
        parts: how many parts the reply was sent in (1: it was sent whole).

    Raises:
        InvalidArgument: ``request_id`` is not an int ``>= 0``, ``sender`` not a ReplicaRef,
            ``payload`` not a Delta, Snapshot or SnapshotPart, ``part`` / ``parts`` not ints with
            ``0 <= part < parts``, or a Snapshot comes in more than one part.
    """

    request_id: int = attrs.field(validator=_request_id)
    sender: ReplicaRef = attrs.field(validator=_ref)
    payload: Delta | Snapshot | SnapshotPart = attrs.field(validator=_payload)
    part: int = attrs.field(default=0, validator=_part)
    parts: int = 1

    def __attrs_post_init__(self) -> None:
        if isinstance(self.payload, Snapshot) and self.parts != 1:
            raise InvalidArgument("a Snapshot is sent whole; its parts are SnapshotParts")


@attrs.frozen(kw_only=True)
class GracefulPermdown:
    """The sender is leaving for good: drop its presences now rather than after timeouts.

    Attributes:
        sender: the departing replica.

    Raises:
        InvalidArgument: ``sender`` is not a ReplicaRef.
    """

    sender: ReplicaRef = attrs.field(validator=_ref)


Message = Union[Heartbeat, TransferRequest, TransferAck, GracefulPermdown]  # noqa: UP007
"""Any message between replicas."""


@attrs.frozen(kw_only=True)
class Outbound:
    """A message the tracker wants sent, already encoded.

    Attributes:
        message: what to send (for traces and tests; ``data`` is what travels).
        data: its encoding, within ``TrackerConfig.max_message_bytes``.
        to: the name of the one replica to send it to, or ``None`` to broadcast it to every other
            replica of the cluster.

    Raises:
        InvalidArgument: ``message`` is not a :data:`Message`, ``data`` not ``bytes``, or ``to``
            neither a non-empty ``str`` nor ``None``.
    """

    message: Message = attrs.field(validator=_message)
    data: bytes = attrs.field(eq=False, repr=False, validator=_data)
    to: str | None = attrs.field(default=None, validator=_to)

    @property
    def is_broadcast(self) -> bool:
        """True when the message goes to every other replica."""
        return self.to is None
