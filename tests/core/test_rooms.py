"""Topic modes beyond Phoenix, through real trackers on scripted time (``_rooms``): the leave
grace period (``docs/grace-period.rst``), large rooms batched per tick, pages and occupancy
(``docs/large-rooms.rst``).

Single trackers are driven by hand; clusters of two or three exchange their messages by hand too
(:class:`Net`: every ``messages_to_send()`` output's bytes go to the other trackers' ``receive``),
so each test decides exactly which message reaches whom, and when.

What a subscriber sees is checked the way a phoenix.js client would see it: every diff replayed
with ``syncDiff`` semantics (:func:`presence_core.sync_diff`: joins, then leaves, by
``phx_ref``). A topic's list, counts and pages are what its subscribers were shown (a key in its
grace period is still listed, a join still in the tick's batch not yet), so the replay must equal
``Tracker.presences`` at every moment; the visible state, ``tracker.state.get_by_topic``, is
what the list becomes once nothing is held back. The properties compare two identical setups,
one with a topic batched and one without, step by step.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import PERIOD, client_command, drain, make_tracker, observe, summarize
from presence_core import (
    AlreadyTracked,
    ConfigurationError,
    Event,
    LocalProtocolError,
    Occupancy,
    PresenceDiff,
    PresencePage,
    ReplicaDown,
    ReplicaRef,
    ReplicaUp,
    TopicOptions,
    Tracker,
    TrackerConfig,
    group,
    presence_diff_payload,
    sync_diff,
)

SLOW: Mapping[str, Any] = {
    "broadcast_period": 10.0,
    "max_silent_periods": 1,
    "permdown_period": 100.0,
}
"""Ticks 10 s apart: grace deadlines of a few seconds fall between two ticks."""

SLOW_PERIOD = 10.0


# ---------------------------------------------------------------------------- helpers


def first_tick(tracker: Tracker, now: float = 0.0) -> float:
    """Start ``tracker``'s clock at ``now`` and run its first tick; return the tick's time (the
    next one comes a period later). Everything it produced is drained."""
    tracker.handle_timer(now=now)
    tick = tracker.next_deadline()
    assert tick is not None
    tracker.handle_timer(now=tick)
    drain(tracker)
    tracker.messages_to_send()
    return tick


def slow_tracker(name: str = "a", **config: Any) -> tuple[Tracker, float]:
    """A tracker with :data:`SLOW` timings (overridden by ``config``) past its first tick, and
    the time of that tick: nothing ticks again before ``t0 + 10``."""
    tracker = make_tracker(name, **{**SLOW, **config})
    return tracker, first_tick(tracker)


def fast_tracker(name: str = "a", **config: Any) -> tuple[Tracker, float]:
    """A tracker with the FAST timings (ticks every :data:`PERIOD`) past its first tick."""
    tracker = make_tracker(name, **config)
    return tracker, first_tick(tracker)


class Net:
    """Trackers that exchange their messages by hand: each output's bytes go to its addressee,
    or to every other tracker when broadcast, except over a cut ``(sender, receiver)`` link
    (what is sent over it is lost)."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = {tracker.replica.name: tracker for tracker in trackers}
        self.cut: set[tuple[str, str]] = set()

    def __getitem__(self, name: str) -> Tracker:
        return self.trackers[name]

    def exchange(self, now: float) -> None:
        """Deliver what the trackers want sent, and their replies, until none sends anything."""
        for _ in range(1000):
            moved = False
            for name, tracker in self.trackers.items():
                for out in tracker.messages_to_send():
                    for other, receiver in self.trackers.items():
                        if other == name or out.to not in (None, other):
                            continue
                        if (name, other) not in self.cut:
                            receiver.receive(out.data, now=now)
                            moved = True
            if not moved:
                return
        raise AssertionError("the trackers never go quiet")

    def tick(self, now: float) -> None:
        for tracker in self.trackers.values():
            tracker.handle_timer(now=now)
        self.exchange(now)

    def run(self, start: float, end: float, step: float = PERIOD / 2) -> float:
        """Every tracker's timer at each ``step`` from ``start`` to ``end``, messages exchanged
        after each; returns ``end``."""
        k = 1
        while start + k * step < end:
            self.tick(start + k * step)
            k += 1
        self.tick(end)
        return end


def cluster(*names: str, **configs: Mapping[str, Any]) -> tuple[Net, float]:
    """FAST trackers ``names`` (``configs[name]`` overrides one's config) that know each other,
    every event drained; returns them and the time."""
    net = Net([make_tracker(name, seed=i, **configs.get(name, {})) for i, name in enumerate(names)])
    now = net.run(0.0, 1.0)
    for tracker in net.trackers.values():
        drain(tracker)
    return net, now


def diffs(events: Sequence[Event]) -> list[PresenceDiff]:
    return [event for event in events if isinstance(event, PresenceDiff)]


def live(tracker: Tracker, topic: str) -> dict[str, Any]:
    """``topic``'s visible presences (what the list shows once nothing is held back)."""
    return group(tracker.state.get_by_topic(topic))


def canonical(presences: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """A presence map in a form that compares equal whatever the order of keys and metas."""
    return sorted(
        (key, sorted(json.dumps(meta, sort_keys=True) for meta in value["metas"]))
        for key, value in presences.items()
        if value["metas"]
    )


def recount(presences: Mapping[str, Any]) -> tuple[int, int]:
    """(keys, presences) of a presence map, counted."""
    return len(presences), sum(len(value["metas"]) for value in presences.values())


def counted(occupancy: Occupancy) -> tuple[int, int]:
    return occupancy.keys, occupancy.presences


class Replay:
    """What a phoenix.js client subscribed to a tracker's topics shows: its diffs replayed with
    ``syncDiff`` semantics, from an empty state."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self.diffs: dict[str, int] = {}

    def apply(self, events: Sequence[Event]) -> None:
        for diff in diffs(events):
            state = self.states.get(diff.topic, {})
            self.states[diff.topic] = sync_diff(state, presence_diff_payload(diff)).state
            self.diffs[diff.topic] = self.diffs.get(diff.topic, 0) + 1

    def __getitem__(self, topic: str) -> dict[str, Any]:
        return self.states.get(topic, {})


def walk(tracker: Tracker, topic: str, limit: int) -> list[PresencePage]:
    """Every page of ``topic``, from the start."""
    pages = [tracker.page(topic, limit=limit)]
    while pages[-1].next_after is not None:
        pages.append(tracker.page(topic, after=pages[-1].next_after, limit=limit))
        assert len(pages) < 10_000
    return pages


def walked(tracker: Tracker, topic: str, limit: int) -> dict[str, Any]:
    """The presences of ``topic`` read page by page, merged."""
    merged: dict[str, Any] = {}
    for page in walk(tracker, topic, limit):
        assert not merged.keys() & page.presences.keys()
        merged.update(page.presences)
    return merged


# ---------------------------------------------------------------------------- grace: defaults


def test_without_a_grace_period_every_leave_is_delivered_at_once() -> None:
    assert TrackerConfig().leave_grace_period == 0.0
    assert TopicOptions() == TopicOptions(leave_grace_period=None, large_room=False)
    tracker, t0 = slow_tracker()
    assert tracker.topic_options("t") == TopicOptions()
    tracker.track(conn="c1", topic="t", key="u1", meta={}, now=t0 + 1)
    tracker.untrack(conn="c1", topic="t", key="u1", now=t0 + 2)
    tracker.track(conn="c2", topic="t", key="u1", meta={}, now=t0 + 2)
    assert summarize(drain(tracker)) == [
        ("diff", "t", ("a/c1/u1",), ()),
        ("diff", "t", (), ("a/c1/u1",)),
        ("diff", "t", ("a/c2/u1",), ()),
    ]
    assert tracker.stats().leaves_held == 0
    assert tracker.next_deadline() == t0 + SLOW_PERIOD  # the tick, nothing else


# ---------------------------------------------------------------------------- grace: one tracker


def test_a_last_leave_is_held_and_delivered_once_when_the_grace_period_ends() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.track(conn="c1", topic="t", key="u1", meta={}, now=t0 + 1)
    assert summarize(drain(tracker)) == [("diff", "t", ("a/c1/u1",), ())]
    left_at = t0 + 2
    tracker.untrack(conn="c1", topic="t", key="u1", now=left_at)
    deadline = left_at + 5.0
    assert drain(tracker) == []
    # Subscribers were shown u1 and still are: the list, counts and pages say so too. The
    # visible state has it no more.
    assert list(tracker.presences("t")) == ["u1"]
    assert tracker.get_by_key("t", "u1") == tracker.presences("t")["u1"]
    assert tracker.count("t") == 1
    assert tracker.page("t").presences == tracker.presences("t")
    assert tracker.occupancy("t") == Occupancy(topic="t", keys=1, presences=1)
    assert live(tracker, "t") == {}
    assert tracker.stats().leaves_held == 1
    assert tracker.next_deadline() == deadline
    tracker.handle_timer(now=deadline - 0.001)
    assert drain(tracker) == []
    tracker.handle_timer(now=deadline)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/c1/u1",))]
    assert tracker.stats().leaves_held == 0
    assert tracker.occupancy("t") == Occupancy(topic="t", keys=0, presences=0)
    assert tracker.presences("t") == {}
    assert tracker.get_by_key("t", "u1") == {"metas": []}
    assert tracker.next_deadline() == t0 + SLOW_PERIOD
    for now in (deadline + 1, t0 + SLOW_PERIOD, t0 + 3 * SLOW_PERIOD):
        tracker.handle_timer(now=now)
    assert drain(tracker) == []  # delivered exactly once


def test_any_call_taking_now_delivers_the_leaves_due_first() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=1.0)
    tracker.track(conn="c1", topic="t", key="u1", meta={}, now=t0)
    tracker.untrack(conn="c1", topic="t", key="u1", now=t0)
    drain(tracker)
    # A command on another topic, late: the leave comes first, then the command's own diff.
    tracker.track(conn="c2", topic="other", key="u2", meta={}, now=t0 + 3)
    assert summarize(drain(tracker)) == [
        ("diff", "t", (), ("a/c1/u1",)),
        ("diff", "other", ("a/c2/u2",), ()),
    ]


def test_a_reconnect_within_the_grace_period_is_one_update() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.track(conn="c1", topic="t", key="u1", meta={"tab": 1}, now=t0)
    tracker.untrack(conn="c1", topic="t", key="u1", now=t0 + 1)
    drain(tracker)
    tracker.track(conn="c2", topic="t", key="u1", meta={"tab": 2}, now=t0 + 5.9)
    (diff,) = drain(tracker)
    assert summarize([diff]) == [("diff", "t", ("a/c2/u1",), ("a/c1/u1",))]
    assert isinstance(diff, PresenceDiff)
    assert [dict(e.meta)["tab"] for e in diff.joins] == [2]
    assert [dict(e.meta)["tab"] for e in diff.leaves] == [1]
    assert tracker.stats().leaves_held == 0
    assert tracker.next_deadline() == t0 + SLOW_PERIOD  # the hold's deadline is gone
    tracker.handle_timer(now=t0 + 7)
    assert drain(tracker) == []
    # A client that replays the one diff ends with the new connection only.
    replay = Replay()
    replay.apply([PresenceDiff(topic="t", joins=diff.leaves)])
    replay.apply([diff])
    assert canonical(replay["t"]) == canonical(tracker.presences("t"))


@pytest.mark.parametrize("late", [0.0, 0.5], ids=["at-the-deadline", "after-it"])
def test_a_reconnect_at_or_after_the_deadline_is_a_leave_then_a_join(late: float) -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.track(conn="c1", topic="t", key="u1", meta={}, now=t0)
    left_at = t0 + 1
    tracker.untrack(conn="c1", topic="t", key="u1", now=left_at)
    drain(tracker)
    tracker.track(conn="c2", topic="t", key="u1", meta={}, now=left_at + 5.0 + late)
    assert summarize(drain(tracker)) == [
        ("diff", "t", (), ("a/c1/u1",)),
        ("diff", "t", ("a/c2/u1",), ()),
    ]
    tracker.handle_timer(now=t0 + 3 * SLOW_PERIOD)
    assert drain(tracker) == []


def test_only_the_last_connection_of_a_key_is_held() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.track(conn="c1", topic="t", key="u1", meta={}, now=t0)
    tracker.track(conn="c2", topic="t", key="u1", meta={}, now=t0)
    drain(tracker)
    tracker.untrack(conn="c1", topic="t", key="u1", now=t0 + 1)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/c1/u1",))]
    assert tracker.stats().leaves_held == 0
    tracker.untrack(conn="c2", topic="t", key="u1", now=t0 + 2)
    assert drain(tracker) == []
    assert tracker.stats().leaves_held == 1
    assert tracker.occupancy("t") == Occupancy(topic="t", keys=1, presences=1)
    # Two connections back within grace: one diff, both joins and the held leave.
    tracker.track(conn="c3", topic="t", key="u1", meta={}, now=t0 + 3)
    assert summarize(drain(tracker)) == [("diff", "t", ("a/c3/u1",), ("a/c2/u1",))]
    tracker.track(conn="c4", topic="t", key="u1", meta={}, now=t0 + 3)
    assert summarize(drain(tracker)) == [("diff", "t", ("a/c4/u1",), ())]


def test_untrack_conn_holds_the_last_leave_of_each_topic() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=2.0)
    for topic in ("t1", "t2"):
        tracker.track(conn="ws", topic=topic, key="u", meta={}, now=t0)
    tracker.track(conn="ws2", topic="t2", key="u", meta={}, now=t0)
    drain(tracker)
    tracker.untrack_conn(conn="ws", now=t0 + 1)
    # t2 keeps a connection of u: that leave goes at once; t1's is held.
    assert summarize(drain(tracker)) == [("diff", "t2", (), ("a/ws/u",))]
    assert tracker.stats().leaves_held == 1
    tracker.handle_timer(now=t0 + 3)
    assert summarize(drain(tracker)) == [("diff", "t1", (), ("a/ws/u",))]


def test_an_update_is_delivered_at_once_under_grace() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.track(conn="c1", topic="t", key="u1", meta={"v": 1}, now=t0)
    drain(tracker)
    tracker.update(conn="c1", topic="t", key="u1", meta={"v": 2}, now=t0 + 1)
    assert summarize(drain(tracker)) == [("diff", "t", ("a/c1/u1",), ("a/c1/u1",))]
    assert tracker.stats().leaves_held == 0


def test_next_deadline_is_the_earliest_live_hold_or_the_tick() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tick = t0 + SLOW_PERIOD
    for key in ("k1", "k2", "k3", "k4"):
        tracker.track(conn=key, topic="t", key=key, meta={}, now=t0)
    assert tracker.next_deadline() == tick
    tracker.untrack(conn="k1", topic="t", key="k1", now=t0 + 1)  # due t0 + 6
    tracker.untrack(conn="k2", topic="t", key="k2", now=t0 + 2)  # due t0 + 7
    tracker.untrack(conn="k3", topic="t", key="k3", now=t0 + 3)  # due t0 + 8
    assert tracker.next_deadline() == t0 + 1 + 5.0
    tracker.track(conn="k2b", topic="t", key="k2", meta={}, now=t0 + 4)  # k2 is back
    assert tracker.next_deadline() == t0 + 1 + 5.0
    tracker.track(conn="k1b", topic="t", key="k1", meta={}, now=t0 + 4)  # so is k1
    assert tracker.next_deadline() == t0 + 3 + 5.0  # k2's deadline went with it
    tracker.untrack(conn="k1b", topic="t", key="k1", now=t0 + 4.5)  # held again: due t0 + 9.5
    drain(tracker)
    tracker.handle_timer(now=t0 + 3 + 5.0)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/k3/k3",))]
    assert tracker.next_deadline() == t0 + 4.5 + 5.0
    tracker.handle_timer(now=t0 + 4.5 + 5.0)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/k1b/k1",))]
    assert tracker.next_deadline() == tick
    # A hold due after the tick: the tick comes first.
    tracker.untrack(conn="k4", topic="t", key="k4", now=t0 + 9.9)
    assert tracker.next_deadline() == tick
    tracker.handle_timer(now=tick)
    assert tracker.next_deadline() == t0 + 9.9 + 5.0
    assert drain(tracker) == []


def test_a_deadline_left_behind_by_a_released_hold_is_not_reported() -> None:
    # k1 and k2 are held, k2 comes back (its deadline, below k1's in the heap, stays there),
    # then k1's leave is delivered: the next deadline is k3's, not k2's stale one.
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    for key in ("k1", "k2", "k3"):
        tracker.track(conn=key, topic="t", key=key, meta={}, now=t0)
    tracker.untrack(conn="k1", topic="t", key="k1", now=t0 + 0)
    tracker.untrack(conn="k2", topic="t", key="k2", now=t0 + 1)
    tracker.untrack(conn="k3", topic="t", key="k3", now=t0 + 2)
    tracker.track(conn="k2b", topic="t", key="k2", meta={}, now=t0 + 3)
    drain(tracker)
    tracker.handle_timer(now=t0 + 5.0)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/k1/k1",))]
    assert tracker.next_deadline() == t0 + 2 + 5.0


def test_stale_deadlines_are_skipped_when_they_fall_due_together() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    for key in ("k0", "k1"):
        tracker.track(conn=key, topic="t", key=key, meta={}, now=t0)
    tracker.track(conn="x", topic="t2", key="x", meta={}, now=t0)
    drain(tracker)
    tracker.untrack(conn="k0", topic="t", key="k0", now=t0)  # due t0 + 5
    tracker.untrack(conn="k1", topic="t", key="k1", now=t0 + 1)  # due t0 + 6: released...
    tracker.untrack(conn="x", topic="t2", key="x", now=t0 + 1.5)  # due t0 + 6.5: released...
    tracker.track(conn="k1b", topic="t", key="k1", meta={}, now=t0 + 2)
    tracker.untrack(conn="k1b", topic="t", key="k1", now=t0 + 3)  # ...held again: due t0 + 8
    tracker.configure_topic("t2", TopicOptions(leave_grace_period=0))  # ...t2 has no room now
    assert summarize(drain(tracker)) == [
        ("diff", "t", ("a/k1b/k1",), ("a/k1/k1",)),
        ("diff", "t2", (), ("a/x/x",)),
    ]
    tracker.handle_timer(now=t0 + 7)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/k0/k0",))]
    assert tracker.next_deadline() == t0 + 3 + 5.0
    tracker.handle_timer(now=t0 + 8)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/k1b/k1",))]
    assert tracker.stats().leaves_held == 0


# ---------------------------------------------------------------------------- grace: per topic


def test_a_topic_can_have_a_grace_period_of_its_own() -> None:
    tracker, t0 = slow_tracker()
    options = TopicOptions(leave_grace_period=3.0)
    tracker.configure_topic("g", options)
    assert tracker.topic_options("g") == options
    assert tracker.topic_options("p") == TopicOptions()
    for topic in ("g", "p"):
        tracker.track(conn="c", topic=topic, key="u", meta={}, now=t0)
    drain(tracker)
    tracker.untrack_conn(conn="c", now=t0 + 1)
    assert summarize(drain(tracker)) == [("diff", "p", (), ("a/c/u",))]
    assert tracker.next_deadline() == t0 + 1 + 3.0
    tracker.handle_timer(now=t0 + 4)
    assert summarize(drain(tracker)) == [("diff", "g", (), ("a/c/u",))]


def test_a_topic_can_opt_out_of_the_trackers_grace_period() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=3.0)
    tracker.configure_topic("p", TopicOptions(leave_grace_period=0))
    assert tracker.topic_options("p") == TopicOptions(leave_grace_period=0.0)
    for topic in ("g", "p"):
        tracker.track(conn="c", topic=topic, key="u", meta={}, now=t0)
    drain(tracker)
    tracker.untrack_conn(conn="c", now=t0 + 1)
    assert summarize(drain(tracker)) == [("diff", "p", (), ("a/c/u",))]
    assert tracker.stats().leaves_held == 1
    tracker.handle_timer(now=t0 + 4)
    assert summarize(drain(tracker)) == [("diff", "g", (), ("a/c/u",))]
    # TopicOptions() goes back to the tracker's default: p's leaves are held again.
    tracker.configure_topic("p", TopicOptions())
    assert tracker.topic_options("p") == TopicOptions()
    tracker.track(conn="c", topic="p", key="u", meta={}, now=t0 + 5)
    tracker.untrack(conn="c", topic="p", key="u", now=t0 + 5)
    assert summarize(drain(tracker)) == [("diff", "p", ("a/c/u",), ())]
    assert tracker.stats().leaves_held == 1


def test_setting_the_grace_period_to_zero_releases_the_held_leaves_at_once() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    for topic in ("t", "other"):
        tracker.track(conn="c", topic=topic, key="u", meta={}, now=t0)
    tracker.track(conn="c", topic="t", key="v", meta={}, now=t0)
    tracker.untrack_conn(conn="c", now=t0 + 1)
    drain(tracker)
    assert tracker.stats().leaves_held == 3
    tracker.configure_topic("t", TopicOptions(leave_grace_period=0))
    (diff,) = drain(tracker)  # during the call itself, in one diff
    assert isinstance(diff, PresenceDiff)
    assert (diff.topic, sorted(e.key for e in diff.leaves), diff.joins) == ("t", ["u", "v"], ())
    assert tracker.stats().leaves_held == 1  # other's is still held
    assert tracker.occupancy("t") == Occupancy(topic="t", keys=0, presences=0)
    assert tracker.next_deadline() == t0 + 1 + 5.0
    tracker.handle_timer(now=t0 + 6)
    assert summarize(drain(tracker)) == [("diff", "other", (), ("a/c/u",))]


def test_a_longer_or_shorter_nonzero_grace_keeps_the_held_leaves() -> None:
    tracker, t0 = slow_tracker()
    tracker.configure_topic("t", TopicOptions(leave_grace_period=5.0))
    tracker.track(conn="c", topic="t", key="u", meta={}, now=t0)
    tracker.untrack(conn="c", topic="t", key="u", now=t0 + 1)
    drain(tracker)
    tracker.configure_topic("t", TopicOptions(leave_grace_period=1.0))
    assert drain(tracker) == []
    assert tracker.next_deadline() == t0 + 6.0  # a hold keeps the deadline it was given
    tracker.track(conn="c", topic="t", key="w", meta={}, now=t0 + 2)
    tracker.untrack(conn="c", topic="t", key="w", now=t0 + 2)  # due t0 + 3: the new period
    assert summarize(drain(tracker)) == [("diff", "t", ("a/c/w",), ())]
    tracker.handle_timer(now=t0 + 3)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/c/w",))]
    tracker.handle_timer(now=t0 + 6)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/c/u",))]


def test_configuring_the_defaults_of_an_empty_topic_creates_nothing() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=2.0)
    before = observe(tracker)
    tracker.configure_topic("empty", TopicOptions())
    tracker.configure_topic("empty", TopicOptions(leave_grace_period=0))
    tracker.configure_topic("empty", TopicOptions())
    assert observe(tracker) == before
    assert drain(tracker) == []
    # A topic with presences gets its room from the defaults at once, and holds leaves.
    tracker.track(conn="c", topic="full", key="u", meta={}, now=t0)
    tracker.configure_topic("full", TopicOptions())
    tracker.untrack(conn="c", topic="full", key="u", now=t0 + 1)
    assert summarize(drain(tracker)) == [("diff", "full", ("a/c/u",), ())]
    assert tracker.occupancy("full") == Occupancy(topic="full", keys=1, presences=1)


def test_an_empty_large_room_going_back_to_the_defaults_is_dropped() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=2.0)
    tracker.configure_topic("t", TopicOptions(large_room=True))
    assert tracker.occupancy("t") == Occupancy(topic="t", keys=0, presences=0)
    assert tracker.page("t") == PresencePage(presences={}, next_after=None)
    tracker.configure_topic("t", TopicOptions())
    assert tracker.topic_options("t") == TopicOptions()
    tracker.track(conn="c", topic="t", key="u", meta={}, now=t0)
    tracker.untrack(conn="c", topic="t", key="u", now=t0)
    assert summarize(drain(tracker)) == [("diff", "t", ("a/c/u",), ())]  # grace, no batch
    tracker.handle_timer(now=t0 + 2)
    assert summarize(drain(tracker)) == [("diff", "t", (), ("a/c/u",))]


def test_graceful_permdown_delivers_everything_held() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.configure_topic("big", TopicOptions(large_room=True))
    tracker.track(conn="c", topic="t", key="u", meta={}, now=t0)
    tracker.untrack(conn="c", topic="t", key="u", now=t0 + 1)
    tracker.track(conn="c", topic="big", key="v", meta={}, now=t0 + 1)
    assert summarize(drain(tracker)) == [("diff", "t", ("a/c/u",), ())]
    tracker.graceful_permdown(now=t0 + 2)
    assert summarize(drain(tracker)) == [
        ("diff", "t", (), ("a/c/u",)),
        ("diff", "big", ("a/c/v",), ()),
    ]
    assert tracker.stats().leaves_held == 0
    assert tracker.next_deadline() is None
    tracker.handle_timer(now=t0 + 50)
    assert drain(tracker) == []


# ---------------------------------------------------------------------------- grace: clusters


def test_a_leave_replicated_from_another_node_is_held() -> None:
    net, now = cluster("a", "c", c={"leave_grace_period": 1.0})
    net["a"].track(conn="ws", topic="t", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    assert summarize(drain(net["c"])) == [("diff", "t", ("a/ws/u",), ())]
    net["a"].untrack(conn="ws", topic="t", key="u", now=now)
    left_at = now
    now = net.run(now, now + 0.3)
    assert drain(net["c"]) == []
    assert net["c"].stats().leaves_held == 1
    assert net["c"].occupancy("t") == Occupancy(topic="t", keys=1, presences=1)
    deadline = net["c"].next_deadline()
    assert deadline is not None
    assert left_at < deadline <= left_at + 1.0 + PERIOD
    now = net.run(now, left_at + 1.0 + PERIOD)
    assert summarize(drain(net["c"])) == [("diff", "t", (), ("a/ws/u",))]
    now = net.run(now, now + 2.0)
    assert drain(net["c"]) == []


def test_a_handover_between_nodes_is_one_update_for_every_observer() -> None:
    grace = {"leave_grace_period": 1.0}
    net, now = cluster("a", "b", "c", a=grace, b=grace, c=grace)
    net["a"].track(conn="ws1", topic="t", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    for name in "abc":
        assert summarize(drain(net[name])) == [("diff", "t", ("a/ws1/u",), ())]
    net["a"].untrack(conn="ws1", topic="t", key="u", now=now)
    now = net.run(now, now + 0.3)  # the leave has reached everyone: held everywhere
    for name in "abc":
        assert drain(net[name]) == []
        assert net[name].stats().leaves_held == 1
    net["b"].track(conn="ws2", topic="t", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    for name in "abc":
        assert summarize(drain(net[name])) == [("diff", "t", ("b/ws2/u",), ("a/ws1/u",))]
    now = net.run(now, now + 3.0)
    for name in "abc":
        assert drain(net[name]) == []
        assert net[name].stats().leaves_held == 0


def test_a_handover_whose_join_arrives_first_never_shows_the_key_gone() -> None:
    net, now = cluster("a", "b", "c", c={"leave_grace_period": 1.0})
    net["a"].track(conn="ws1", topic="t", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    drain(net["c"])
    net["a"].untrack(conn="ws1", topic="t", key="u", now=now)
    net["b"].track(conn="ws2", topic="t", key="u", meta={}, now=now)
    # b ticks first: its join reaches c while a's leave still waits for a's tick.
    b_tick = net["b"].next_deadline()
    assert b_tick is not None
    net["b"].handle_timer(now=b_tick)
    net.exchange(b_tick)
    now = net.run(b_tick, b_tick + 0.3)
    # b's join, then a's leave of a connection that is no longer the key's last.
    assert summarize(drain(net["c"])) == [
        ("diff", "t", ("b/ws2/u",), ()),
        ("diff", "t", (), ("a/ws1/u",)),
    ]


def test_a_handover_slower_than_the_grace_period_is_a_leave_then_a_join() -> None:
    net, now = cluster("a", "b", "c", c={"leave_grace_period": 0.3})
    net["a"].track(conn="ws1", topic="t", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    drain(net["c"])
    net["a"].untrack(conn="ws1", topic="t", key="u", now=now)
    now = net.run(now, now + 0.6)
    assert summarize(drain(net["c"])) == [("diff", "t", (), ("a/ws1/u",))]
    net["b"].track(conn="ws2", topic="t", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    assert summarize(drain(net["c"])) == [("diff", "t", ("b/ws2/u",), ())]


def test_a_replica_down_then_up_within_the_grace_period_shows_nothing() -> None:
    net, now = cluster("a", "c", c={"leave_grace_period": 2.0})
    for key in ("u", "v"):
        net["a"].track(conn="ws-" + key, topic="t", key=key, meta={}, now=now)
    now = net.run(now, now + 0.3)
    assert summarize(drain(net["c"])) == [("diff", "t", ("a/ws-u/u", "a/ws-v/v"), ())]
    listed = net["c"].presences("t")
    net.cut.add(("a", "c"))
    now = net.run(now, now + 0.8)  # silent for longer than the down period
    assert [type(e) for e in drain(net["c"])] == [ReplicaDown]
    assert net["c"].presences("t") == listed  # still shown
    assert live(net["c"], "t") == {}
    assert net["c"].occupancy("t") == Occupancy(topic="t", keys=2, presences=2)
    assert net["c"].stats().leaves_held == 2
    net.cut.clear()
    now = net.run(now, now + 0.5)
    assert [type(e) for e in drain(net["c"])] == [ReplicaUp]  # and no diff at all
    assert net["c"].presences("t") == listed
    assert net["c"].stats().leaves_held == 0
    now = net.run(now, now + 3.0)
    assert drain(net["c"]) == []


def test_a_replica_down_for_longer_than_the_grace_period_leaves_once_then_joins() -> None:
    net, now = cluster("a", "c", c={"leave_grace_period": 0.3})
    net["a"].track(conn="ws", topic="t", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    drain(net["c"])
    net.cut.add(("a", "c"))
    now = net.run(now, now + 1.2)  # down after 0.4 s, the leave delivered 0.3 s later
    assert summarize(drain(net["c"])) == [("down", "a", 1), ("diff", "t", (), ("a/ws/u",))]
    net.cut.clear()
    now = net.run(now, now + 0.5)
    assert summarize(drain(net["c"])) == [("up", "a", 1), ("diff", "t", ("a/ws/u",), ())]


# ---------------------------------------------------------------------------- grace: errors


@pytest.mark.parametrize(
    "value",
    [-1, -0.001, float("nan"), float("inf"), 10**400, "1", True, [1.0]],
    ids=repr,
)
def test_a_grace_period_must_be_a_finite_number_of_seconds(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="leave_grace_period"):
        TopicOptions(leave_grace_period=value)
    with pytest.raises(ConfigurationError, match="leave_grace_period"):
        TrackerConfig(leave_grace_period=value)


@pytest.mark.parametrize("value", [1, 0, None, "yes"], ids=repr)
def test_large_room_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="large_room must be a bool"):
        TopicOptions(large_room=value)


def test_grace_periods_may_be_ints_or_floats() -> None:
    assert TopicOptions(leave_grace_period=2).leave_grace_period == 2
    assert TrackerConfig(leave_grace_period=2).leave_grace_period == 2


def test_wrong_arguments_are_refused_and_change_nothing() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.configure_topic("big", TopicOptions(large_room=True))
    for topic in ("t", "big"):
        tracker.track(conn="c", topic=topic, key="u", meta={}, now=t0)
        tracker.track(conn="d", topic=topic, key="v", meta={}, now=t0)
    tracker.untrack(conn="d", topic="t", key="v", now=t0)
    drain(tracker)

    def snapshot() -> Any:
        return (
            observe(tracker),
            tracker.stats(),
            {t: tracker.topic_options(t) for t in ("t", "big")},
            {t: tracker.occupancy(t) for t in ("t", "big")},
            {t: tracker.page(t) for t in ("t", "big")},
        )

    before = snapshot()
    bad_calls: list[Any] = [
        lambda: tracker.configure_topic(1, TopicOptions()),  # type: ignore[arg-type]
        lambda: tracker.configure_topic("t", {"large_room": True}),  # type: ignore[arg-type]
        lambda: tracker.configure_topic("t", None),  # type: ignore[arg-type]
        lambda: tracker.topic_options(b"t"),  # type: ignore[arg-type]
        lambda: tracker.occupancy(None),  # type: ignore[arg-type]
        lambda: tracker.page(1),  # type: ignore[arg-type]
        lambda: tracker.page("big", after=1),  # type: ignore[arg-type]
        lambda: tracker.page("t", after=b"a"),  # type: ignore[arg-type]
        lambda: tracker.page("big", limit=0),
        lambda: tracker.page("t", limit=-1),
        lambda: tracker.page("big", limit=True),
        lambda: tracker.page("t", limit=2.0),  # type: ignore[arg-type]
        lambda: tracker.page("t", limit=None),  # type: ignore[arg-type]
        lambda: tracker.get_by_key("big", 1),  # type: ignore[arg-type]
        lambda: tracker.get_by_key("t", None),  # type: ignore[arg-type]
        lambda: tracker.get_by_key(1, "u"),  # type: ignore[arg-type]
        lambda: tracker.entries(b"big"),  # type: ignore[arg-type]
        lambda: tracker.count(None),  # type: ignore[arg-type]
    ]
    for call in bad_calls:
        with pytest.raises(LocalProtocolError):
            call()
        assert snapshot() == before
    assert drain(tracker) == []


def test_configure_topic_is_refused_from_inside_an_update_callback() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=5.0)
    tracker.track(conn="c", topic="t", key="u", meta={}, now=t0)
    tracker.track(conn="d", topic="t", key="v", meta={}, now=t0)
    tracker.untrack(conn="d", topic="t", key="v", now=t0)
    drain(tracker)
    refused: list[Exception] = []

    def callback(meta: dict[str, Any]) -> dict[str, Any]:
        try:
            tracker.configure_topic("t", TopicOptions(leave_grace_period=0))
        except LocalProtocolError as exc:
            refused.append(exc)
        return meta

    tracker.update(conn="c", topic="t", key="u", meta=callback, now=t0 + 1)
    assert len(refused) == 1
    assert "re-entrant" in str(refused[0])
    assert tracker.topic_options("t") == TopicOptions()
    assert tracker.stats().leaves_held == 1  # v is still held


# ---------------------------------------------------------------------------- large rooms


def test_a_large_room_delivers_one_diff_per_tick_with_the_net_effect() -> None:
    tracker, t0 = fast_tracker()
    tracker.configure_topic("room", TopicOptions(large_room=True))
    tracker.configure_topic("hall", TopicOptions(large_room=True))
    tracker.track(conn="c1", topic="room", key="k1", meta={"v": 1}, now=t0)
    tracker.track(conn="c3", topic="room", key="k3", meta={}, now=t0)
    tracker.handle_timer(now=t0 + PERIOD)
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c1/k1", "a/c3/k3"), ())]
    t1 = t0 + PERIOD
    tracker.update(conn="c1", topic="room", key="k1", meta={"v": 2}, now=t1 + 0.01)
    tracker.update(conn="c1", topic="room", key="k1", meta={"v": 3}, now=t1 + 0.02)
    tracker.track(conn="c2", topic="room", key="k2", meta={}, now=t1 + 0.03)  # joins and
    tracker.untrack(conn="c2", topic="room", key="k2", now=t1 + 0.04)  # leaves within the tick
    tracker.untrack(conn="c3", topic="room", key="k3", now=t1 + 0.05)
    tracker.track(conn="c4", topic="hall", key="k4", meta={}, now=t1 + 0.05)
    tracker.track(conn="c5", topic="plain", key="k5", meta={}, now=t1 + 0.06)
    # Between ticks, only the topic without options is delivered, and the list, counts and
    # pages of the large rooms are still what their subscribers were shown.
    assert summarize(drain(tracker)) == [("diff", "plain", ("a/c5/k5",), ())]
    tracker.handle_timer(now=t1 + 0.09)
    assert drain(tracker) == []
    assert tracker.presences("hall") == {}
    assert tracker.get_by_key("hall", "k4") == {"metas": []}
    assert list(tracker.presences("room")) == ["k1", "k3"]
    assert [dict(m)["v"] for m in tracker.get_by_key("room", "k1")["metas"]] == [1]
    assert tracker.occupancy("room") == Occupancy(topic="room", keys=2, presences=2)
    assert tracker.count("room") == 2
    assert list(tracker.page("room").presences) == ["k1", "k3"]
    assert list(live(tracker, "room")) == ["k1"]
    assert list(live(tracker, "hall")) == ["k4"]
    tracker.handle_timer(now=t1 + PERIOD)
    events = drain(tracker)
    assert summarize(events) == [
        ("diff", "hall", ("a/c4/k4",), ()),
        ("diff", "room", ("a/c1/k1",), ("a/c1/k1", "a/c3/k3")),
    ]
    room = diffs(events)[1]
    assert [dict(e.meta)["v"] for e in room.joins] == [3]  # the update chain collapsed
    assert [dict(e.meta)["v"] for e in room.leaves[:1]] == [1]
    for topic in ("room", "hall"):
        assert tracker.presences(topic) == live(tracker, topic)
    tracker.handle_timer(now=t1 + 2 * PERIOD)
    assert drain(tracker) == []  # no change, no diff


def test_a_presence_that_leaves_and_comes_back_within_a_tick_is_no_change() -> None:
    net, now = cluster("a", "c")
    a, c = net["a"], net["c"]
    c.configure_topic("room", TopicOptions(large_room=True, leave_grace_period=0.05))
    a.track(conn="ws", topic="room", key="u", meta={}, now=now)
    now = net.run(now, now + 0.3)
    assert summarize(drain(c)) == [("diff", "room", ("a/ws/u",), ())]
    listed = c.presences("room")
    # c hears nothing from a (what a sends is kept back) until c marks it down, in a tick.
    kept: list[bytes] = []
    events: list[Event] = []
    while not events:
        now = round(now + 0.01, 6)
        a.handle_timer(now=now)
        kept.extend(out.data for out in a.messages_to_send())
        c.handle_timer(now=now)
        c.messages_to_send()
        events = drain(c)
    assert summarize(events) == [("down", "a", 1)]  # the leave is held
    tick = now + PERIOD
    assert c.next_deadline() == now + 0.05
    c.handle_timer(now=now + 0.05)
    assert drain(c) == []  # the leave went into the batch
    for data in kept:  # a is heard from again before the tick: the presence is back
        c.receive(data, now=now + 0.07)
    assert summarize(drain(c)) == [("up", "a", 1)]
    c.handle_timer(now=tick)
    assert drain(c) == []  # left and came back within the tick: no diff at all
    assert c.presences("room") == listed
    net.run(tick, tick + 1.0)
    assert drain(c) == []


def test_turning_large_room_off_delivers_the_pending_batch_at_once() -> None:
    tracker, t0 = fast_tracker()
    tracker.configure_topic("room", TopicOptions(large_room=True))
    tracker.track(conn="c1", topic="room", key="k1", meta={}, now=t0 + 0.01)
    tracker.track(conn="c2", topic="room", key="k2", meta={}, now=t0 + 0.02)
    assert drain(tracker) == []
    tracker.configure_topic("room", TopicOptions())
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c1/k1", "a/c2/k2"), ())]
    tracker.track(conn="c3", topic="room", key="k3", meta={}, now=t0 + 0.03)
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c3/k3",), ())]  # at once again
    tracker.handle_timer(now=t0 + PERIOD)
    assert drain(tracker) == []
    # Turning it off with nothing pending delivers nothing.
    tracker.configure_topic("room", TopicOptions(large_room=True))
    tracker.configure_topic("room", TopicOptions())
    assert drain(tracker) == []
    # ... and on again starts from the topic as it is (no diff for what is already there).
    tracker.configure_topic("room", TopicOptions(large_room=True))
    tracker.untrack(conn="c3", topic="room", key="k3", now=t0 + PERIOD + 0.01)
    assert drain(tracker) == []
    tracker.handle_timer(now=t0 + 2 * PERIOD)
    assert summarize(drain(tracker)) == [("diff", "room", (), ("a/c3/k3",))]


def test_a_large_room_with_grace_delivers_an_expired_leave_with_the_next_tick() -> None:
    tracker, t0 = fast_tracker()
    tracker.configure_topic("room", TopicOptions(large_room=True, leave_grace_period=0.15))
    tracker.track(conn="c1", topic="room", key="k1", meta={}, now=t0)
    tracker.handle_timer(now=t0 + PERIOD)
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c1/k1",), ())]
    t1 = t0 + PERIOD
    tracker.untrack(conn="c1", topic="room", key="k1", now=t1 + 0.01)  # due t1 + 0.16
    tracker.handle_timer(now=t1 + PERIOD)
    assert drain(tracker) == []  # held
    assert tracker.next_deadline() == t1 + 0.01 + 0.15
    tracker.handle_timer(now=t1 + 0.01 + 0.15)
    assert drain(tracker) == []  # expired into the batch
    assert tracker.stats().leaves_held == 0
    assert tracker.occupancy("room") == Occupancy(topic="room", keys=1, presences=1)  # shown
    tracker.handle_timer(now=t1 + 2 * PERIOD)
    assert summarize(drain(tracker)) == [("diff", "room", (), ("a/c1/k1",))]
    assert tracker.occupancy("room") == Occupancy(topic="room", keys=0, presences=0)
    # A reconnect within grace, in a large room: one update, at the tick.
    tracker.track(conn="c2", topic="room", key="k2", meta={}, now=t1 + 2 * PERIOD)
    tracker.handle_timer(now=t1 + 3 * PERIOD)
    drain(tracker)
    tracker.untrack(conn="c2", topic="room", key="k2", now=t1 + 3 * PERIOD + 0.01)
    tracker.track(conn="c3", topic="room", key="k2", meta={}, now=t1 + 3 * PERIOD + 0.02)
    tracker.handle_timer(now=t1 + 4 * PERIOD)
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c3/k2",), ("a/c2/k2",))]


def test_releasing_held_leaves_of_a_large_room_puts_them_in_its_batch() -> None:
    tracker, t0 = fast_tracker()
    tracker.configure_topic("room", TopicOptions(large_room=True, leave_grace_period=5.0))
    tracker.track(conn="c1", topic="room", key="k1", meta={}, now=t0)
    tracker.handle_timer(now=t0 + PERIOD)
    drain(tracker)
    tracker.untrack(conn="c1", topic="room", key="k1", now=t0 + PERIOD + 0.01)
    tracker.configure_topic("room", TopicOptions(large_room=True, leave_grace_period=0))
    assert drain(tracker) == []
    assert tracker.stats().leaves_held == 0
    # Without a grace period now, a last leave goes straight into the batch.
    tracker.track(conn="c5", topic="room", key="k5", meta={}, now=t0 + PERIOD + 0.02)
    tracker.handle_timer(now=t0 + 2 * PERIOD)
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c5/k5",), ("a/c1/k1",))]
    tracker.untrack(conn="c5", topic="room", key="k5", now=t0 + 2 * PERIOD)
    assert tracker.stats().leaves_held == 0
    assert tracker.next_deadline() == t0 + 2 * PERIOD + PERIOD  # the tick, no hold
    # Both off at once: held leaves released, then the batch flushed, in one diff.
    tracker.configure_topic("room", TopicOptions(large_room=True, leave_grace_period=5.0))
    tracker.track(conn="c2", topic="room", key="k2", meta={}, now=t0 + 2 * PERIOD)
    tracker.track(conn="c3", topic="room", key="k3", meta={}, now=t0 + 2 * PERIOD)
    tracker.handle_timer(now=t0 + 3 * PERIOD)
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c2/k2", "a/c3/k3"), ("a/c5/k5",))]
    tracker.untrack(conn="c2", topic="room", key="k2", now=t0 + 3 * PERIOD)
    tracker.track(conn="c4", topic="room", key="k4", meta={}, now=t0 + 3 * PERIOD)
    tracker.configure_topic("room", TopicOptions())
    assert summarize(drain(tracker)) == [("diff", "room", ("a/c4/k4",), ("a/c2/k2",))]
    tracker.handle_timer(now=t0 + 4 * PERIOD)
    assert drain(tracker) == []


# ---------------------------------------------------------------------------- batching property

NODES = ("a", "b")
CONNS = ("c1", "c2", "c3")
KEYS = ("k1", "k2", "k3")
TOPICS = ("room", "other")

_node = st.sampled_from(NODES)
_conn = st.sampled_from(CONNS)
_identity = st.tuples(_node, _conn, st.sampled_from(TOPICS), st.sampled_from(KEYS))
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["track", "update", "untrack"]), _identity),
        st.tuples(st.just("untrack_conn"), st.tuples(_node, _conn)),
        st.tuples(st.just("step"), st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.6])),
        st.tuples(st.just("cut"), _node),
        st.tuples(st.just("checkpoint"), st.none()),
        st.tuples(st.just("toggle"), st.none()),
    ),
    max_size=40,
)


class Side:
    """Two trackers exchanging messages by hand, and what a client of each shows."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.net = Net([make_tracker(name, seed=i, **config) for i, name in enumerate(NODES)])
        self.replays = {name: Replay() for name in NODES}
        for tracker in self.net.trackers.values():
            tracker.handle_timer(now=0.0)

    def configure(self, options: TopicOptions) -> None:
        for tracker in self.net.trackers.values():
            tracker.configure_topic("room", options)
        self.collect()

    def collect(self) -> None:
        for name, tracker in self.net.trackers.items():
            self.replays[name].apply(drain(tracker))

    def command(self, kind: str, args: Any, now: float) -> str:
        if kind == "untrack_conn":
            node, conn = args
            self.net[node].untrack_conn(conn=conn, now=now)
            return "ok"
        node, conn, topic, key = args
        return client_command(self.net[node], kind, conn, topic, key, now=now)


MODES = {
    "batching": ({}, TopicOptions(large_room=True), TopicOptions()),
    "batching+tracker-grace": (
        {"leave_grace_period": 0.3},
        TopicOptions(large_room=True),
        TopicOptions(),
    ),
    "batching+topic-grace": (
        {},
        TopicOptions(large_room=True, leave_grace_period=0.25),
        TopicOptions(leave_grace_period=0.25),
    ),
}


@pytest.mark.parametrize("mode", list(MODES))
@given(operations=OPERATIONS)
def test_batched_diffs_replayed_on_a_client_end_equal_to_unbatched_ones(
    mode: str, operations: list[tuple[str, Any]]
) -> None:
    config, batched, plain = MODES[mode]
    grace = bool(config) or batched.leave_grace_period is not None
    x, y = Side(config), Side(config)  # x: "room" batched; y: not
    x.configure(batched)
    y.configure(plain)
    large = True
    now = 0.0

    def check() -> None:
        for side in (x, y):
            for name in NODES:
                tracker = side.net[name]
                for topic in TOPICS:
                    # The list, counts and pages are what a client replaying the diffs shows.
                    listed = tracker.presences(topic)
                    assert canonical(side.replays[name][topic]) == canonical(listed)
                    assert counted(tracker.occupancy(topic)) == recount(listed)
                    assert tracker.count(topic) == recount(listed)[1]
                    if side is y and not grace:  # Phoenix: nothing is ever held back
                        assert listed == live(tracker, topic)
                assert walked(tracker, "room", 2) == tracker.presences("room")
        for name in NODES:
            for topic in TOPICS:  # batching changes what is shown when, not what is there
                assert live(x.net[name], topic) == live(y.net[name], topic)

    for kind, args in operations:
        if kind in ("track", "update", "untrack", "untrack_conn"):
            assert x.command(kind, args, now) == y.command(kind, args, now)
        elif kind == "step":
            now = round(now + args, 6)
            x.net.tick(now)
            y.net.tick(now)
        elif kind == "cut":
            for side in (x, y):
                side.net.cut ^= {(args, other) for other in NODES if other != args}
        elif kind == "toggle":
            large = not large
            x.configure(batched if large else plain)
        else:
            # A tick is due on every tracker by a period from now: right after it, nothing is
            # pending in a batch, and both clients show the same.
            now = round(now + PERIOD + 0.001, 6)  # past now + PERIOD, whatever the rounding
            for side in (x, y):
                for tracker in side.net.trackers.values():
                    tracker.handle_timer(now=now)
                side.collect()
            for name in NODES:
                for topic in TOPICS:
                    assert canonical(x.replays[name][topic]) == canonical(y.replays[name][topic])
                    assert x.net[name].presences(topic) == y.net[name].presences(topic)
            x.net.exchange(now)
            y.net.exchange(now)
        x.collect()
        y.collect()
        check()

    # Heal, let every hold expire and a last tick flush: both clients show the final state.
    for side in (x, y):
        side.net.cut.clear()
        side.net.run(now, now + 3.0)
        side.collect()
    for name in NODES:
        for topic in TOPICS:
            final = live(y.net[name], topic)
            for side in (x, y):
                assert side.net[name].presences(topic) == final
                assert canonical(side.replays[name][topic]) == canonical(final)
        assert x.net[name].stats().leaves_held == 0
        assert y.net[name].stats().leaves_held == 0


# ---------------------------------------------------------------------------- pages


ODD_KEYS = ["b", "a", "B", "10", "9", "é", "z", "€", "😀", "a b", "ab", "_", "Z"]


@pytest.mark.parametrize("large_room", [False, True], ids=["page_of", "room"])
def test_pages_list_the_keys_in_code_point_order(large_room: bool) -> None:
    tracker, t0 = fast_tracker()
    if large_room:
        tracker.configure_topic("t", TopicOptions(large_room=True))
    for i, key in enumerate(ODD_KEYS):
        tracker.track(conn="c", topic="t", key=key, meta={"i": i}, now=t0)
    tracker.track(conn="d", topic="t", key="a", meta={"i": 99}, now=t0)  # two metas
    tracker.handle_timer(now=t0 + PERIOD)  # a large room shows them from its next tick on
    ordered = sorted(ODD_KEYS)
    first = tracker.page("t", limit=5)
    assert list(first.presences) == ordered[:5]
    assert first.next_after == ordered[4]
    assert first.presences == {k: v for k, v in tracker.presences("t").items() if k in ordered[:5]}
    assert walked(tracker, "t", 5) == tracker.presences("t")
    assert len(walked(tracker, "t", 5)["a"]["metas"]) == 2
    pages = walk(tracker, "t", 5)
    assert [list(page.presences) for page in pages] == [ordered[:5], ordered[5:10], ordered[10:]]
    assert [page.next_after for page in pages] == [ordered[4], ordered[9], None]
    # Exactly a page's worth: no next page.
    assert tracker.page("t", limit=len(ODD_KEYS)).next_after is None
    assert tracker.page("t", limit=len(ODD_KEYS) - 1).next_after == ordered[-2]
    # The default limit, an ``after`` that is no key, an ``after`` past the last key.
    assert list(tracker.page("t").presences) == ordered
    assert tracker.page("t").next_after is None
    assert list(tracker.page("t", after="aa", limit=2).presences) == ["ab", "b"]
    assert tracker.page("t", after="\U0010ffff") == PresencePage(presences={}, next_after=None)
    assert tracker.page("t", after="") == tracker.page("t")
    assert tracker.page("nothing") == PresencePage(presences={}, next_after=None)


def test_pages_list_the_keys_in_their_grace_period() -> None:
    tracker, t0 = slow_tracker(leave_grace_period=2.0)
    for key in ("a", "b", "c", "d"):
        tracker.track(conn="c", topic="t", key=key, meta={}, now=t0)
    tracker.untrack(conn="c", topic="t", key="b", now=t0 + 1)
    assert [list(p.presences) for p in walk(tracker, "t", 3)] == [["a", "b", "c"], ["d"]]
    assert list(live(tracker, "t")) == ["a", "c", "d"]
    tracker.handle_timer(now=t0 + 3)
    assert [list(p.presences) for p in walk(tracker, "t", 3)] == [["a", "c", "d"]]


KEY_POOL = [f"k{i:02d}" for i in range(30)] + ["A", "é", "😀"]


@st.composite
def walks(draw: st.DrawFn) -> tuple[list[str], int, list[list[tuple[str, str, str]]]]:
    initial = draw(st.lists(st.sampled_from(KEY_POOL), unique=True, max_size=len(KEY_POOL)))
    limit = draw(st.integers(1, 6))
    change = st.tuples(
        st.sampled_from(["join", "leave"]), st.sampled_from(KEY_POOL), st.sampled_from("xy")
    )
    batches = draw(st.lists(st.lists(change, max_size=6), max_size=len(KEY_POOL) + 1))
    return initial, limit, batches


@given(walk_plan=walks())
def test_a_walk_through_pages_is_stable_while_the_room_changes(
    walk_plan: tuple[list[str], int, list[list[tuple[str, str, str]]]],
) -> None:
    # The same changes on a large room (pages from its index) and on a topic without options
    # (pages sorted from the presences); each batch of changes is followed by a tick, after
    # which the room shows them too.
    initial, limit, batches = walk_plan
    room, plain = make_tracker("a"), make_tracker("a")
    room.configure_topic("t", TopicOptions(large_room=True))
    trackers = (room, plain)
    now = 1.0

    def tick() -> None:
        nonlocal now
        now = round(now + PERIOD + 0.001, 6)  # a tick is due by then, whatever the rounding
        for tracker in trackers:
            tracker.handle_timer(now=now)

    for key in initial:
        for tracker in trackers:
            tracker.track(conn="x", topic="t", key=key, meta={}, now=now)
    tick()
    always = set(initial)  # the keys listed at every read so far
    listed: list[str] = []
    after: str | None = None
    for read in range(len(KEY_POOL) + 2):
        presences = plain.presences("t")
        assert room.presences("t") == presences
        always &= set(presences)
        pages = [tracker.page("t", after=after, limit=limit) for tracker in trackers]
        assert pages[0] == pages[1]
        page = pages[0]
        # The page is the list at the time of the read.
        keys = sorted(k for k in presences if after is None or k > after)
        assert list(page.presences) == keys[:limit]
        assert page.presences == {key: presences[key] for key in keys[:limit]}
        assert page.next_after == (keys[limit - 1] if len(keys) > limit else None)
        listed.extend(page.presences)
        if page.next_after is None:
            break
        after = page.next_after
        for kind, key, conn in batches[read] if read < len(batches) else []:
            for tracker in trackers:
                if kind == "join":
                    with contextlib.suppress(AlreadyTracked):
                        tracker.track(conn=conn, topic="t", key=key, meta={}, now=now)
                else:
                    tracker.untrack(conn=conn, topic="t", key=key, now=now)
        tick()
    else:
        raise AssertionError("the walk never ended")
    assert listed == sorted(set(listed))  # strictly increasing: no key twice
    assert always <= set(listed)


def test_the_sorted_keys_are_patched_or_rebuilt_to_the_same_order() -> None:
    rng = random.Random(7)
    tracker, now = fast_tracker()
    tracker.configure_topic("t", TopicOptions(large_room=True))
    keys = [f"user-{i:04d}" for i in range(200)] + ["é", "Z", "😀"]
    rng.shuffle(keys)

    def check() -> None:
        nonlocal now
        now = round(now + PERIOD + 0.001, 6)
        tracker.handle_timer(now=now)  # the room shows the changes from this tick on
        expected = live(tracker, "t")
        assert tracker.presences("t") == expected
        assert walked(tracker, "t", 7) == expected
        ordered = sorted(expected)
        chunks = [ordered[i : i + 7] for i in range(0, len(ordered), 7)] or [[]]
        assert [list(page.presences) for page in walk(tracker, "t", 7)] == chunks

    for key in keys:
        tracker.track(conn="c", topic="t", key=key, meta={}, now=now)
    check()  # the order is built on the first read
    # A few changes: patched key by key, including a key that leaves and comes back and one
    # that comes and goes between two reads.
    tracker.untrack(conn="c", topic="t", key=keys[0], now=now)
    tracker.untrack(conn="c", topic="t", key=keys[1], now=now)
    tracker.track(conn="c", topic="t", key=keys[1], meta={}, now=now)
    tracker.track(conn="c", topic="t", key="new-1", meta={}, now=now)
    tracker.track(conn="c", topic="t", key="new-2", meta={}, now=now)
    tracker.untrack(conn="c", topic="t", key="new-2", now=now)
    tracker.track(conn="d", topic="t", key=keys[2], meta={}, now=now)  # a second conn: no change
    tracker.untrack(conn="c", topic="t", key=keys[2], now=now)
    check()
    # A key that leaves at one tick and comes back at the next, unread in between.
    tracker.untrack(conn="c", topic="t", key=keys[3], now=now)
    now = round(now + PERIOD + 0.001, 6)
    tracker.handle_timer(now=now)
    tracker.track(conn="c", topic="t", key=keys[3], meta={}, now=now)
    check()
    # Many changes: rebuilt.
    for key in keys[4:60]:
        tracker.untrack(conn="c", topic="t", key=key, now=now)
    for i in range(20):
        tracker.track(conn="c", topic="t", key=f"zz-{i}", meta={}, now=now)
    check()
    # Everything gone, then a few back.
    for entry in tracker.state.get_by_topic("t"):
        tracker.untrack(conn=entry.conn, topic="t", key=entry.key, now=now)
    check()
    assert tracker.page("t") == PresencePage(presences={}, next_after=None)
    tracker.track(conn="c", topic="t", key="back", meta={}, now=now)
    check()


# ---------------------------------------------------------------------------- occupancy


OCCUPANCY_OPTIONS = {
    "plain": TopicOptions(),
    "large-room": TopicOptions(large_room=True),
    "grace": TopicOptions(leave_grace_period=5.0),
}


@pytest.mark.parametrize("mode", list(OCCUPANCY_OPTIONS))
def test_occupancy_counts_keys_and_presences(mode: str) -> None:
    tracker, now = fast_tracker()
    tracker.configure_topic("t", OCCUPANCY_OPTIONS[mode])

    def occupancy() -> tuple[int, int]:
        nonlocal now
        now = round(now + PERIOD + 0.001, 6)
        tracker.handle_timer(now=now)  # a large room shows the changes from its next tick on
        counts = counted(tracker.occupancy("t"))
        assert counts == recount(tracker.presences("t"))
        assert tracker.count("t") == counts[1]
        return counts

    assert occupancy() == (0, 0)
    for conn in ("c1", "c2", "c3"):
        tracker.track(conn=conn, topic="t", key="u", meta={}, now=now)
    tracker.track(conn="c1", topic="t", key="v", meta={}, now=now)
    tracker.track(conn="c1", topic="elsewhere", key="w", meta={}, now=now)
    assert occupancy() == (2, 4)
    tracker.untrack(conn="c2", topic="t", key="u", now=now)
    assert occupancy() == (2, 3)
    tracker.untrack(conn="c3", topic="t", key="u", now=now)
    tracker.update(conn="c1", topic="t", key="u", meta={"x": 1}, now=now)
    assert occupancy() == (2, 2)
    assert walked(tracker, "t", 1) == tracker.presences("t") == live(tracker, "t")
    tracker.untrack_conn(conn="c1", now=now)
    # A key in its grace period still counts, until its leave is delivered.
    assert occupancy() == ((2, 2) if mode == "grace" else (0, 0))
    now += 5.0  # the grace period is over
    assert occupancy() == (0, 0)


@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(["join", "leave", "update"]),
            st.sampled_from(["c1", "c2", "c3"]),
            st.sampled_from(["t", "u"]),
            st.sampled_from(["k1", "k2", "k3", "k4"]),
            st.sampled_from([0.0, 0.05, 0.3]),
        ),
        max_size=40,
    )
)
def test_occupancy_is_a_recount_of_what_subscribers_are_shown(
    changes: list[tuple[str, str, str, str, float]],
) -> None:
    # "t" has a room: large with a grace period on one tracker, a grace period alone on the
    # other; "u" has none. Every count is a recount of what a client replaying the diffs shows.
    batched, t0 = fast_tracker()
    unbatched, _ = fast_tracker()
    batched.configure_topic("t", TopicOptions(large_room=True, leave_grace_period=0.2))
    unbatched.configure_topic("t", TopicOptions(leave_grace_period=0.2))
    replays = {batched: Replay(), unbatched: Replay()}
    now = t0
    for kind, conn, topic, key, dt in changes:
        now += dt
        for tracker, replay in replays.items():
            command = "track" if kind == "join" else kind
            client_command(tracker, command, conn, topic, key, now=now)
            tracker.handle_timer(now=now)
            replay.apply(drain(tracker))
            for name in ("t", "u"):
                counts = counted(tracker.occupancy(name))
                assert counts == recount(tracker.presences(name)) == recount(replay[name])
            assert counted(tracker.occupancy("u")) == recount(live(tracker, "u"))
        # Unbatched, the keys shown but gone are exactly those whose leave is held.
        held = set(unbatched.presences("t")) - set(live(unbatched, "t"))
        assert unbatched.stats().leaves_held == len(held)
        assert live(batched, "t") == live(unbatched, "t")


def test_topics_lists_the_topics_as_subscribers_were_shown_them() -> None:
    tracker = Tracker(config=TrackerConfig(), replica=ReplicaRef("a", 1), rng=random.Random(7))
    tracker.configure_topic("g", TopicOptions(leave_grace_period=5.0))
    tracker.configure_topic("big", TopicOptions(large_room=True))
    tracker.track(conn="c", topic="g", key="k", meta={}, now=0.0)
    tracker.track(conn="c", topic="plain", key="k", meta={}, now=0.0)
    tracker.untrack(conn="c", topic="g", key="k", now=0.0)  # held: still shown
    tracker.track(conn="c", topic="big", key="k", meta={}, now=0.0)  # batched: not shown yet
    assert tracker.state.topics() == ["big", "plain"]
    assert tracker.topics() == ["g", "plain"]
    tracker.handle_timer(now=10.0)  # the tick flushes the batch; the grace period is over
    assert tracker.topics() == ["big", "plain"]
