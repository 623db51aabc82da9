"""The timer contract (STYLE §3.5): the core is told the time and never reads it.

* ``next_deadline()`` is a pure query; ``None`` until the first call that takes ``now``;
* the first tick comes within a quarter of ``broadcast_period``, drawn from the injected rng;
* ``handle_timer`` called early, late, twice or spuriously is harmless;
* a late call runs one tick and schedules the next a period after ``now``;
* time going backwards, and a ``now`` that is not a finite number, are refused with nothing
  changed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from helpers import PERIOD, drain, make_tracker, observe, summarize
from presence_core import (
    GracefulPermdown,
    Heartbeat,
    LocalProtocolError,
    NoPresence,
    ReplicaRef,
    ReplicaState,
    Tracker,
)

B1 = ReplicaRef("b", 1)
JITTER = 0.25 * PERIOD

Command = Callable[[Tracker, Any], object]

# Every public method that takes ``now``, as (name, call(tracker, now)). The tracker they run on
# holds ("c1", "lobby", "u1"), so update has something to update.
COMMANDS: list[tuple[str, Command]] = [
    ("handle_timer", lambda t, now: t.handle_timer(now=now)),
    ("track", lambda t, now: t.track(conn="c9", topic="lobby", key="u9", meta={}, now=now)),
    ("update", lambda t, now: t.update(conn="c1", topic="lobby", key="u1", meta={}, now=now)),
    ("untrack", lambda t, now: t.untrack(conn="c1", topic="lobby", key="u1", now=now)),
    ("untrack_conn", lambda t, now: t.untrack_conn(conn="c1", now=now)),
    ("receive", lambda t, now: t.receive(Heartbeat(sender=B1, clock={B1: 0}), now=now)),
    ("graceful_permdown", lambda t, now: t.graceful_permdown(now=now)),
]
COMMAND_IDS = [name for name, _ in COMMANDS]


def started(now: float = 10.0, seed: int = 0) -> Tracker:
    tracker = make_tracker("a", seed=seed)
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=now)
    drain(tracker)
    tracker.messages_to_send()
    return tracker


def delta_heartbeat(key: str) -> Heartbeat:
    state = ReplicaState(B1)
    state.replica_up(ReplicaRef("a", 1))
    state.join("b-conn", "lobby", key, {"k": key})
    return Heartbeat(sender=B1, clock=state.clocks()[1], delta=state.take_delta())


# ---------------------------------------------------------------------------- next_deadline


def test_next_deadline_is_a_pure_query() -> None:
    tracker = make_tracker("a")
    assert tracker.next_deadline() is None
    assert tracker.next_deadline() is None
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=5.0)
    before = observe(tracker)
    first = tracker.next_deadline()
    assert first is not None
    assert tracker.next_deadline() == first
    assert observe(tracker) == before
    tracker.handle_timer(now=first)
    after_tick = tracker.next_deadline()
    assert after_tick == first + PERIOD
    assert tracker.next_deadline() == after_tick
    # the queued outputs are still there: the query consumed nothing
    assert len(tracker.messages_to_send()) == 1
    assert summarize(drain(tracker)) == [("diff", "lobby", ("a/c1/u1",), ())]


STARTERS = [
    (name, command) for name, command in COMMANDS if name not in ("update", "graceful_permdown")
]


@pytest.mark.parametrize(("name", "command"), STARTERS, ids=[name for name, _ in STARTERS])
def test_the_clock_starts_at_the_first_call_that_takes_now(name: str, command: Command) -> None:
    tracker = make_tracker("a", seed=7)
    assert tracker.next_deadline() is None
    command(tracker, 10.0)
    deadline = tracker.next_deadline()
    assert deadline is not None
    assert 10.0 <= deadline < 10.0 + JITTER
    # whatever started it, the same seed gives the same first deadline
    reference = make_tracker("a", seed=7)
    reference.handle_timer(now=10.0)
    assert deadline == reference.next_deadline()


def test_a_failing_call_does_not_start_the_clock() -> None:
    tracker = make_tracker("a")
    with pytest.raises(NoPresence):
        tracker.update(conn="c1", topic="lobby", key="u1", meta={}, now=10.0)
    bad_meta: Any = {"bad": {1, 2}}
    with pytest.raises(LocalProtocolError):
        tracker.track(conn="c1", topic="lobby", key="u1", meta=bad_meta, now=10.0)
    assert tracker.next_deadline() is None
    # nor record the time: an earlier one is still accepted
    tracker.handle_timer(now=5.0)
    deadline = tracker.next_deadline()
    assert deadline is not None
    assert 5.0 <= deadline < 5.0 + JITTER


def test_construction_starts_no_clock_and_graceful_permdown_clears_it() -> None:
    tracker = make_tracker("a")
    assert tracker.next_deadline() is None
    tracker.graceful_permdown(now=3.0)
    assert tracker.next_deadline() is None
    running = make_tracker("b")
    running.handle_timer(now=3.0)
    assert running.next_deadline() is not None
    running.graceful_permdown(now=3.0)
    assert running.next_deadline() is None


def test_the_first_tick_is_drawn_from_the_injected_rng() -> None:
    def first_deadline(seed: int, period: float = PERIOD) -> float:
        tracker = make_tracker("a", seed=seed, broadcast_period=period, permdown_period=1200.0)
        tracker.handle_timer(now=100.0)
        deadline = tracker.next_deadline()
        assert deadline is not None
        return deadline

    offsets = [first_deadline(seed) - 100.0 for seed in range(40)]
    assert all(0.0 <= offset < JITTER for offset in offsets)
    assert len(set(offsets)) > 30  # different seeds give different first deadlines
    assert first_deadline(3) == first_deadline(3)
    assert first_deadline(3) != first_deadline(4)
    # scaled with the period: a quarter of Phoenix's default 1.5 s is 0.375 s
    slow = [first_deadline(seed, period=1.5) - 100.0 for seed in range(40)]
    assert all(0.0 <= offset < 0.375 for offset in slow)
    assert max(slow) > 0.25  # the whole quarter is used, not just the fast config's range


def test_the_rng_is_the_only_source_of_the_jitter() -> None:
    rng = random.Random(11)
    state = rng.getstate()
    tracker = Tracker(config=make_tracker("x").config, replica=ReplicaRef("a", 1), rng=rng)
    assert rng.getstate() == state  # construction draws nothing
    tracker.handle_timer(now=0.0)
    assert rng.getstate() != state
    drawn = rng.getstate()
    tracker.handle_timer(now=0.0)
    tracker.track(conn="c", topic="t", key="k", meta={}, now=0.0)
    assert rng.getstate() == drawn  # only the start of the clock draws


def test_the_first_tick_runs_when_its_deadline_is_reached_and_not_before() -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=0.0)
    deadline = tracker.next_deadline()
    assert deadline is not None
    assert deadline > 0.0
    tracker.handle_timer(now=math.nextafter(deadline, 0.0))
    assert tracker.messages_to_send() == []
    assert tracker.next_deadline() == deadline
    tracker.handle_timer(now=deadline)
    assert [type(o.message) for o in tracker.messages_to_send()] == [Heartbeat]
    assert tracker.next_deadline() == deadline + PERIOD


# ---------------------------------------------------------------------------- harmless calls


Script = list[tuple[float, Callable[[Tracker, float], object]]]


def scenario() -> Script:
    """Inputs at fixed times: local commands and messages from a peer, over ~3 s."""
    return [
        (0.0, lambda t, now: t.handle_timer(now=now)),
        (0.05, lambda t, now: t.receive(Heartbeat(sender=B1, clock={B1: 0}), now=now)),
        (0.21, lambda t, now: t.track(conn="c1", topic="lobby", key="u1", meta={}, now=now)),
        (0.37, lambda t, now: t.receive(delta_heartbeat("b1"), now=now)),
        (0.52, lambda t, now: t.update(conn="c1", topic="lobby", key="u1", meta={"x": 1}, now=now)),
        (0.8, lambda t, now: t.track(conn="c2", topic="other", key="u2", meta={}, now=now)),
        (1.1, lambda t, now: t.untrack_conn(conn="c1", now=now)),
        # then silence from b: down after 0.4 s, permdown after 1.5 s
    ]


Trace = list[tuple[float, list[Any], list[Any], float | None]]


def run(
    script: Script,
    *,
    until: float,
    extra: Callable[[Tracker, float, float], None] | None = None,
    late: float = 0.0,
) -> tuple[Trace, dict[str, Any]]:
    """Run ``script`` on a fresh tracker, calling handle_timer at each deadline (plus ``late``).

    ``extra(tracker, previous_time, deadline)`` may make any additional calls before each
    scheduled one; they must produce no output. Returns what each scheduled timer call produced.
    """
    tracker = make_tracker("a", seed=5)
    trace: Trace = []
    inputs = list(script)
    last = 0.0
    while True:
        deadline = tracker.next_deadline()
        next_input = inputs[0][0] if inputs else math.inf
        if deadline is not None and deadline + late <= min(next_input, until):
            when = deadline + late
            if extra is not None:
                extra(tracker, last, when)
                assert tracker.messages_to_send() == []
                assert drain(tracker) == []
            tracker.handle_timer(now=when)
            trace.append(
                (when - late, tracker.messages_to_send(), drain(tracker), tracker.next_deadline())
            )
            last = when
        elif inputs:
            when, action = inputs.pop(0)
            action(tracker, when)
            trace.append((when, tracker.messages_to_send(), drain(tracker), None))
            last = when
        else:
            break
    return trace, observe(tracker)


def test_early_twice_and_spurious_timer_calls_are_harmless() -> None:
    reference, final = run(scenario(), until=3.0)
    noise = random.Random(1234)

    def extra(tracker: Tracker, previous: float, deadline: float) -> None:
        tracker.handle_timer(now=previous)  # again at the previous call's time (a "twice")
        # spurious calls anywhere between the previous call and the deadline
        for when in sorted(noise.uniform(previous, deadline) for _ in range(3)):
            tracker.handle_timer(now=when)
        tracker.handle_timer(now=math.nextafter(deadline, 0.0))  # just early

    noisy, noisy_final = run(scenario(), until=3.0, extra=extra)
    assert noisy == reference
    assert noisy_final == final
    # the reference really exercised the timer: deltas, heartbeats, down and permdown of b
    messages = [o.message for _, out, _, _ in reference for o in out]
    assert sum(isinstance(m, Heartbeat) and m.delta is not None for m in messages) == 4
    events = summarize(e for _, _, evs, _ in reference for e in evs)
    assert ("down", "b", 1) in events
    assert ("permdown", "b", 1) in events


def test_a_second_call_at_the_same_time_does_nothing() -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=0.0)
    deadline = tracker.next_deadline()
    assert deadline is not None
    tracker.handle_timer(now=deadline)
    first = (tracker.messages_to_send(), drain(tracker), observe(tracker))
    assert len(first[0]) == 1
    tracker.handle_timer(now=deadline)
    assert (tracker.messages_to_send(), drain(tracker), observe(tracker)) == ([], [], first[2])


def test_late_by_several_periods_runs_one_tick() -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=0.0)
    first = tracker.next_deadline()
    assert first is not None
    tracker.handle_timer(now=first)  # tick 0: the announcing heartbeat
    assert len(tracker.messages_to_send()) == 1
    late = first + 5.5 * PERIOD
    tracker.handle_timer(now=late)
    # one tick (silent counter 0 -> 1), not five (which would have sent a heartbeat at the third)
    assert tracker.messages_to_send() == []
    assert tracker.next_deadline() == late + PERIOD
    tracker.handle_timer(now=late + PERIOD)  # silent counter 1 -> 2
    assert tracker.messages_to_send() == []
    tracker.handle_timer(now=late + PERIOD + PERIOD)  # 2 >= max_silent_periods: heartbeat
    assert [type(o.message) for o in tracker.messages_to_send()] == [Heartbeat]
    assert tracker.next_deadline() == late + PERIOD + PERIOD + PERIOD


def test_late_by_several_periods_with_a_delta_sends_it_once() -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=0.0)
    tracker.handle_timer(now=50.0)
    sent = tracker.messages_to_send()
    assert len(sent) == 1
    assert isinstance(sent[0].message, Heartbeat)
    assert sent[0].message.delta is not None
    assert tracker.next_deadline() == 50.0 + PERIOD


def test_a_long_stall_marks_peers_down_and_permdown_in_one_tick() -> None:
    # Not a feature, the documented risk of SPEC §3.6: the adapter's clock is the only clock.
    tracker = make_tracker("a")
    tracker.receive(delta_heartbeat("b1"), now=0.0)
    drain(tracker)
    tracker.handle_timer(now=100.0)
    assert summarize(drain(tracker)) == [
        ("down", "b", 1),
        ("diff", "lobby", (), ("b/b-conn/b1",)),
        ("permdown", "b", 1),
    ]
    assert tracker.replicas() == {}


# ---------------------------------------------------------------------------- bad time


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=COMMAND_IDS)
def test_time_going_backwards_is_refused_with_nothing_changed(name: str, command: Command) -> None:
    tracker = started(now=10.0)
    tracker.handle_timer(now=20.0)
    tracker.receive(delta_heartbeat("b1"), now=20.0)
    drain(tracker)
    tracker.messages_to_send()
    before = observe(tracker)
    with pytest.raises(LocalProtocolError, match="backwards"):
        command(tracker, 19.5)
    assert observe(tracker) == before
    assert drain(tracker) == []
    assert tracker.messages_to_send() == []
    # the refused call did not move the clock back: 19.7 is still in the past
    with pytest.raises(LocalProtocolError, match="backwards"):
        command(tracker, 19.7)
    # and the same time as the last call is fine
    command(tracker, 20.0)


BAD_TIMES: list[object] = [
    math.nan,
    math.inf,
    -math.inf,
    "1.0",
    None,
    True,
    b"1",
    Decimal("1.0"),
    Fraction(1, 2),
    1 + 0j,
    [1.0],
]


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=COMMAND_IDS)
@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_a_non_finite_or_non_number_now_is_refused(
    name: str, command: Command, bad: object
) -> None:
    for tracker in (make_tracker("a"), started(now=1.0)):
        before = observe(tracker)
        with pytest.raises(LocalProtocolError, match="finite number"):
            command(tracker, bad)
        assert observe(tracker) == before  # a fresh tracker's clock did not start either
        assert drain(tracker) == []
        assert tracker.messages_to_send() == []


def test_ints_are_accepted_as_time() -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=3)
    deadline = tracker.next_deadline()
    assert deadline is not None
    assert 3.0 <= deadline < 3.0 + JITTER
    tracker.track(conn="c", topic="t", key="k", meta={}, now=4)
    tracker.receive(GracefulPermdown(sender=B1), now=5)
    assert tracker.next_deadline() == deadline
