"""The tracker's lifecycle (new, running, stopped): the table, exhaustively, and through a tracker.

* every ``Lifecycle`` x ``LifecycleInput`` pair: legal pairs give the table's result, written out
  here independently of the code; the others raise ``LocalProtocolError`` naming both;
* a tracker is ``NEW`` until a call gives it ``now`` (any such call starts it, and only then is a
  tick due), ``RUNNING`` until ``graceful_permdown``, then ``STOPPED`` for good;
* the docs draw the table (``docs/state_machines.py``): every transition is in the drawing.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import make_tracker
from presence_core import (
    LIFECYCLE,
    TRANSITIONS,
    Lifecycle,
    LifecycleInput,
    LocalProtocolError,
    ReplicaRef,
    Tracker,
)
from presence_core._lifecycle import advance

sys.path.insert(0, str(Path(__file__).parents[2] / "docs"))

from state_machines import lifecycle_dot, lifecycle_table, liveness_dot, liveness_table

L = Lifecycle
I = LifecycleInput  # noqa: E741

EXPECTED = {
    (L.NEW, I.FIRST_NOW): L.RUNNING,
    (L.NEW, I.GRACEFUL_PERMDOWN): L.STOPPED,
    (L.RUNNING, I.GRACEFUL_PERMDOWN): L.STOPPED,
}


@pytest.mark.parametrize(("status", "trigger"), list(itertools.product(Lifecycle, LifecycleInput)))
def test_every_pair_of_the_table(status: Lifecycle, trigger: LifecycleInput) -> None:
    if (status, trigger) in EXPECTED:
        assert advance(status, trigger) is EXPECTED[(status, trigger)]
        assert LIFECYCLE[(status, trigger)] is EXPECTED[(status, trigger)]
    else:
        assert (status, trigger) not in LIFECYCLE
        with pytest.raises(LocalProtocolError, match=f"a {status.value} tracker cannot take"):
            advance(status, trigger)


def test_the_table_holds_exactly_the_expected_pairs() -> None:
    assert dict(LIFECYCLE) == EXPECTED


def status_of(tracker: Tracker) -> Lifecycle:
    """The tracker's lifecycle, read afresh (so the type checker does not narrow it)."""
    return tracker.lifecycle


CALLS: dict[str, Callable[[Tracker, float], object]] = {
    "handle_timer": lambda t, now: t.handle_timer(now=now),
    "track": lambda t, now: t.track(conn="c", topic="t", key="k", meta={}, now=now),
    "untrack": lambda t, now: t.untrack(conn="c", topic="t", key="k", now=now),
    "untrack_conn": lambda t, now: t.untrack_conn(conn="c", now=now),
    "receive": lambda t, now: t.receive(
        b'{"clock":[],"delta":null,"own":0,"sender":["b",1],"type":"heartbeat","v":2}', now=now
    ),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_any_call_that_gives_the_time_starts_a_new_tracker(call: str) -> None:
    tracker = make_tracker("a")
    assert status_of(tracker) is L.NEW
    assert tracker.next_deadline() is None
    CALLS[call](tracker, 5.0)
    assert status_of(tracker) is L.RUNNING
    deadline = tracker.next_deadline()
    assert deadline is not None
    assert 5.0 <= deadline <= 5.0 + tracker.config.broadcast_period / 4


def test_a_call_that_fails_its_checks_does_not_start_the_tracker() -> None:
    tracker = make_tracker("a")
    with pytest.raises(LocalProtocolError):
        tracker.track(conn=1, topic="t", key="k", meta={}, now=5.0)  # type: ignore[arg-type]
    assert tracker.lifecycle is L.NEW
    assert tracker.next_deadline() is None


@pytest.mark.parametrize("started", [False, True])
def test_graceful_permdown_stops_for_good(started: bool) -> None:
    tracker = make_tracker("a")
    if started:
        tracker.handle_timer(now=1.0)
    tracker.graceful_permdown(now=2.0)
    assert tracker.lifecycle is L.STOPPED
    assert tracker.stopped
    assert tracker.next_deadline() is None
    with pytest.raises(LocalProtocolError, match="stopped"):
        tracker.graceful_permdown(now=3.0)
    with pytest.raises(LocalProtocolError, match="stopped"):
        tracker.track(conn="c", topic="t", key="k", meta={}, now=3.0)
    tracker.handle_timer(now=100.0)  # ignored
    CALLS["receive"](tracker, 100.0)  # ignored
    assert tracker.lifecycle is L.STOPPED
    assert tracker.next_deadline() is None
    assert tracker.replicas() == {}
    assert tracker.state.replicas() == {ReplicaRef("a", 1): True}


def test_the_docs_draw_every_transition() -> None:
    dot, table = lifecycle_dot(), lifecycle_table()
    for (status, trigger), after in LIFECYCLE.items():
        assert (
            f'{status.name} -> {after.name} [label="{trigger.name.lower().replace("_", " ")}"]'
            in dot
        )
        assert (
            f"   * - ``{status.name}``\n     - ``{trigger.name}``\n     - ``{after.name}``" in table
        )
    dot, table = liveness_dot(), liveness_table()
    assert dot.count(" -> ") == len(TRANSITIONS)
    assert table.count("   * - ``") == len(TRANSITIONS)
    for (replica_status, liveness_input), (new_status, _actions) in TRANSITIONS.items():
        assert f"{replica_status.name} -> {new_status.name}" in dot
        assert f"     - ``{liveness_input.name}``\n     - ``{new_status.name}``" in table
