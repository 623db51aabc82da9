"""Liveness of remote replicas: one status x input transition table (SPEC §3.6).

Theory of operation
===================

The tracker keeps one record per remote replica *name*: the incarnation it last heard from, when
it last heard from it (on the local clock) and a status. Every transition of that status lives in
:data:`TRANSITIONS`; nothing else in the code changes a status.

Statuses:

* ``UNKNOWN``: no record. Never heard of it, or it was permanently removed (a replica heard from
  again after a permdown is a brand-new replica, and its presences come back through a transfer).
* ``UP``: heard from within the down period; its presences are visible.
* ``DOWN``: silent for longer than the down period; its presences are hidden but kept.

Inputs:

* ``HEARTBEAT``: a heartbeat (empty or with a delta) from the recorded incarnation.
* ``SILENCE_DOWN_PERIOD`` / ``SILENCE_PERMDOWN_PERIOD``: seen at a tick, when the silence since the
  last heartbeat exceeds the down or the permdown period.
* ``NEW_INCARNATION``: a heartbeat from the same name with a newer incarnation: the recorded one
  restarted, so the old incarnation is retired at once (the new one then gets its own HEARTBEAT).
* ``GRACEFUL_PERMDOWN``: the recorded incarnation announced its departure.

Each transition names the actions to run, in order: ``UP`` (mark up, re-emit its presences as
joins), ``DOWN`` (mark down, emit its presences as leaves), ``PERMDOWN`` (delete its presences and
its record). A pair missing from the table cannot happen for a correct tracker and raises
:class:`~presence_core.LocalProtocolError`.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from typing import Final

from ._errors import LocalProtocolError

__all__ = ["TRANSITIONS", "LivenessAction", "LivenessInput", "ReplicaStatus", "transition"]


class ReplicaStatus(enum.Enum):
    """What this replica believes about a remote replica."""

    #: No record: never heard of, or permanently removed.
    UNKNOWN = "unknown"
    #: Alive: its presences are visible.
    UP = "up"
    #: Silent for longer than the down period: its presences are hidden but kept.
    DOWN = "down"


class LivenessInput(enum.Enum):
    """What can happen to a remote replica's record."""

    HEARTBEAT = "heartbeat"
    SILENCE_DOWN_PERIOD = "silence_down_period"
    SILENCE_PERMDOWN_PERIOD = "silence_permdown_period"
    NEW_INCARNATION = "new_incarnation"
    GRACEFUL_PERMDOWN = "graceful_permdown"


class LivenessAction(enum.Enum):
    """What a transition asks the tracker to do, in order."""

    UP = "up"
    DOWN = "down"
    PERMDOWN = "permdown"


_S = ReplicaStatus
_I = LivenessInput
_A = LivenessAction

TRANSITIONS: Final[
    Mapping[tuple[ReplicaStatus, LivenessInput], tuple[ReplicaStatus, tuple[LivenessAction, ...]]]
] = types.MappingProxyType(
    {
        (_S.UNKNOWN, _I.HEARTBEAT): (_S.UP, (_A.UP,)),
        (_S.UP, _I.HEARTBEAT): (_S.UP, ()),
        (_S.UP, _I.SILENCE_DOWN_PERIOD): (_S.DOWN, (_A.DOWN,)),
        (_S.UP, _I.SILENCE_PERMDOWN_PERIOD): (_S.UNKNOWN, (_A.DOWN, _A.PERMDOWN)),
        (_S.UP, _I.NEW_INCARNATION): (_S.UNKNOWN, (_A.DOWN, _A.PERMDOWN)),
        (_S.UP, _I.GRACEFUL_PERMDOWN): (_S.UNKNOWN, (_A.DOWN, _A.PERMDOWN)),
        (_S.DOWN, _I.HEARTBEAT): (_S.UP, (_A.UP,)),
        (_S.DOWN, _I.SILENCE_DOWN_PERIOD): (_S.DOWN, ()),
        (_S.DOWN, _I.SILENCE_PERMDOWN_PERIOD): (_S.UNKNOWN, (_A.PERMDOWN,)),
        (_S.DOWN, _I.NEW_INCARNATION): (_S.UNKNOWN, (_A.PERMDOWN,)),
        (_S.DOWN, _I.GRACEFUL_PERMDOWN): (_S.UNKNOWN, (_A.PERMDOWN,)),
    }
)
"""``(status, input) -> (new status, actions)``: every legal liveness transition."""


def transition(
    status: ReplicaStatus, trigger: LivenessInput
) -> tuple[ReplicaStatus, tuple[LivenessAction, ...]]:
    """Look up the transition for ``trigger`` in ``status``.

    Raises:
        LocalProtocolError: the pair is not in :data:`TRANSITIONS` (for example silence of a
            replica that has no record).
    """
    try:
        return TRANSITIONS[(status, trigger)]
    except KeyError:
        raise LocalProtocolError(
            f"no liveness transition for input {trigger.name} in state {status.name}"
        ) from None
