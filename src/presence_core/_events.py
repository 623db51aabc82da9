"""What the tracker tells the application (past tense): diffs and replica liveness changes.

Events are values: frozen, validated on construction, comparable. A field an event cannot hold
raises :class:`~presence_core.InvalidArgument` (a :class:`~presence_core.LocalProtocolError` that
is also a ``ValueError`` and a ``TypeError``) and no event is created. The checks are of types
only, and cheap: a diff's entries are checked in one C-level pass over their types, since the
tracker builds a diff of every entry of a replica that comes back up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Union

import attrs

from ._errors import InvalidArgument
from ._messages import Message, _message, _ref, _to
from ._payloads import Entry
from ._security import MessageRejected
from ._vclock import ReplicaRef

__all__ = ["Event", "PresenceDiff", "ReplicaDown", "ReplicaPermdown", "ReplicaUp", "Unsendable"]


_ENTRY = frozenset({Entry})


def _entries(value: Iterable[Entry]) -> tuple[Entry, ...]:
    given: object = value
    if type(given) is tuple:
        entries: tuple[object, ...] = given
    elif type(given) is list or (
        isinstance(given, Iterable) and not isinstance(given, (str, bytes))
    ):
        entries = tuple(given)
    else:
        raise InvalidArgument(
            f"joins and leaves must be iterables of Entry, not {type(given).__name__}"
        )
    if not _ENTRY.issuperset(map(type, entries)):  # the hot path: one C-level pass
        for i, entry in enumerate(entries):
            if not isinstance(entry, Entry):
                raise InvalidArgument(
                    f"joins and leaves must hold Entry, not {type(entry).__name__} (item {i})"
                )
    return entries  # type: ignore[return-value]  # every item is an Entry: checked above


def _str(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not str:
        raise InvalidArgument(f"{attribute.name} must be a str, not {type(value).__name__}")


@attrs.frozen(kw_only=True)
class PresenceDiff:
    """Presences joined and left one topic, as Phoenix's ``handle_diff`` reports them.

    An update of a presence is one diff holding the new entry in ``joins`` and the old one in
    ``leaves`` (its meta's ``phx_ref_prev`` names the old ``phx_ref``).

    Attributes:
        topic: the topic.
        joins: entries that appeared.
        leaves: entries that disappeared.

    Raises:
        InvalidArgument: ``topic`` is not a ``str``, or ``joins`` / ``leaves`` is not an iterable
            of :class:`~presence_core.Entry`.
    """

    topic: str = attrs.field(validator=_str)
    joins: tuple[Entry, ...] = attrs.field(default=(), converter=_entries)
    leaves: tuple[Entry, ...] = attrs.field(default=(), converter=_entries)


@attrs.frozen(kw_only=True)
class ReplicaUp:
    """A remote replica was heard from for the first time, or again after being down.

    Raises:
        InvalidArgument: ``replica`` is not a :class:`~presence_core.ReplicaRef`.
    """

    replica: ReplicaRef = attrs.field(validator=_ref)


@attrs.frozen(kw_only=True)
class ReplicaDown:
    """A remote replica was silent for longer than the down period (or is leaving).

    Raises:
        InvalidArgument: ``replica`` is not a :class:`~presence_core.ReplicaRef`.
    """

    replica: ReplicaRef = attrs.field(validator=_ref)


@attrs.frozen(kw_only=True)
class ReplicaPermdown:
    """A remote replica is gone for good: its presences were deleted.

    Raises:
        InvalidArgument: ``replica`` is not a :class:`~presence_core.ReplicaRef`.
    """

    replica: ReplicaRef = attrs.field(validator=_ref)


@attrs.frozen(kw_only=True)
class Unsendable:
    """A message could not be sent: even split into parts, it does not fit one message.

    It was dropped, and nothing else was: the state is unchanged, and the normal rules repair
    what the message would have carried where they can (a lost delta by a transfer; a heartbeat
    is not repaired, so peers will mark this replica down). The configuration's limits make one
    presence always fit; what is left to overflow is what every part repeats: the clocks, which
    grow with the number of replicas and the length of their names.

    Attributes:
        message: the message that was dropped.
        to: the replica it was for, or ``None`` for a broadcast.
        reason: why, with the sizes involved.

    Raises:
        InvalidArgument: ``message`` is not a :data:`~presence_core.Message`, ``to`` neither a
            non-empty ``str`` nor ``None``, or ``reason`` not a ``str``.
    """

    message: Message = attrs.field(validator=_message)
    to: str | None = attrs.field(validator=_to)
    reason: str = attrs.field(validator=_str)


Event = Union[  # noqa: UP007
    PresenceDiff, ReplicaUp, ReplicaDown, ReplicaPermdown, Unsendable, MessageRejected
]
"""Any event :meth:`Tracker.next_event <presence_core.Tracker.next_event>` returns."""
