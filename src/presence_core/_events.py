"""What the tracker tells the application (past tense): diffs and replica liveness changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Union

import attrs

from ._messages import Message
from ._state import Entry
from ._vclock import ReplicaRef

__all__ = ["Event", "PresenceDiff", "ReplicaDown", "ReplicaPermdown", "ReplicaUp", "Unsendable"]


def _entries(value: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class PresenceDiff:
    """Presences joined and left one topic, as Phoenix's ``handle_diff`` reports them.

    An update of a presence is one diff holding the new entry in ``joins`` and the old one in
    ``leaves`` (its meta's ``phx_ref_prev`` names the old ``phx_ref``).

    Attributes:
        topic: the topic.
        joins: entries that appeared.
        leaves: entries that disappeared.
    """

    topic: str
    joins: tuple[Entry, ...] = attrs.field(default=(), converter=_entries)
    leaves: tuple[Entry, ...] = attrs.field(default=(), converter=_entries)


@attrs.frozen(kw_only=True)
class ReplicaUp:
    """A remote replica was heard from for the first time, or again after being down."""

    replica: ReplicaRef


@attrs.frozen(kw_only=True)
class ReplicaDown:
    """A remote replica was silent for longer than the down period (or is leaving)."""

    replica: ReplicaRef


@attrs.frozen(kw_only=True)
class ReplicaPermdown:
    """A remote replica is gone for good: its presences were deleted."""

    replica: ReplicaRef


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
    """

    message: Message
    to: str | None
    reason: str


Event = Union[PresenceDiff, ReplicaUp, ReplicaDown, ReplicaPermdown, Unsendable]  # noqa: UP007
"""Any event :meth:`Tracker.next_event <presence_core.Tracker.next_event>` returns."""
