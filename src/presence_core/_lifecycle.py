"""The tracker's own lifecycle: new, running, stopped, as one status and one table.

A :class:`~presence_core.Tracker` is ``NEW`` until a call gives it the time for the first time
(any call that takes ``now``): that starts its clock, and the first tick falls due within a
quarter of a broadcast period. It is then ``RUNNING``. :meth:`Tracker.graceful_permdown
<presence_core.Tracker.graceful_permdown>` announces its departure and makes it ``STOPPED`` for
good: local commands raise, and :meth:`~presence_core.Tracker.receive` and
:meth:`~presence_core.Tracker.handle_timer` do nothing. Every change of status is in
:data:`LIFECYCLE`; ``docs/tracker.rst`` draws its diagram from that table.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from typing import Final

from ._errors import LocalProtocolError

__all__ = ["LIFECYCLE", "Lifecycle", "LifecycleInput", "advance"]


class Lifecycle(enum.Enum):
    """Where a tracker is in its life."""

    #: No call has given it the time yet: no tick is due.
    NEW = "new"
    #: Its clock runs: ticks fall due at :meth:`~presence_core.Tracker.next_deadline`.
    RUNNING = "running"
    #: It left (graceful permdown): commands raise, messages and timers are ignored.
    STOPPED = "stopped"


class LifecycleInput(enum.Enum):
    """What moves a tracker along its life."""

    #: The first call that takes ``now``.
    FIRST_NOW = "first_now"
    #: :meth:`~presence_core.Tracker.graceful_permdown`.
    GRACEFUL_PERMDOWN = "graceful_permdown"


_L = Lifecycle
_I = LifecycleInput

LIFECYCLE: Final[Mapping[tuple[Lifecycle, LifecycleInput], Lifecycle]] = types.MappingProxyType(
    {
        (_L.NEW, _I.FIRST_NOW): _L.RUNNING,
        (_L.NEW, _I.GRACEFUL_PERMDOWN): _L.STOPPED,
        (_L.RUNNING, _I.GRACEFUL_PERMDOWN): _L.STOPPED,
    }
)
"""``(status, input) -> new status``: every legal change of a tracker's lifecycle."""


def advance(status: Lifecycle, trigger: LifecycleInput) -> Lifecycle:
    """The status after ``trigger`` in ``status``.

    Raises:
        LocalProtocolError: the table has no such transition (a stopped tracker cannot stop
            again, nor start).
    """
    try:
        return LIFECYCLE[(status, trigger)]
    except KeyError:
        raise LocalProtocolError(
            f"a {status.value} tracker cannot take {trigger.value.replace('_', ' ')}"
        ) from None
