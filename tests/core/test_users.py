"""The per-user view (``_users``, ``docs/per-user.rst``): a key's first join and last leave, with
its connection count, folded from a topic's diffs.

The unit tests feed it diffs of real trackers (and a few built by hand for the edge cases); the
properties feed it every diff a tracker emits under random commands, replication between two
trackers and links that fail, with and without a leave grace period and large-room batching, and
compare it, diff by diff, with what a phoenix.js client replaying the same diffs shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import PERIOD, client_command, drain, make_tracker
from presence_core import (
    Entry,
    Event,
    InvalidArgument,
    PresenceDiff,
    ReplicaRef,
    TopicOptions,
    Tracker,
    UserJoined,
    UserLeft,
    UserView,
    group,
    presence_diff_payload,
    sync_diff,
)

A1 = ReplicaRef("a", 1)


def entry(key: str, conn: str = "c", clock: int = 1, topic: str = "t") -> Entry:
    return Entry(topic, key, conn, {"phx_ref": f"{conn}-{clock}"}, A1, clock)


def diffs_of(tracker: Tracker, topic: str = "t") -> list[PresenceDiff]:
    return [e for e in drain(tracker) if isinstance(e, PresenceDiff) and e.topic == topic]


def feed(view: UserView, diffs: Sequence[PresenceDiff]) -> list[UserJoined | UserLeft]:
    return [event for diff in diffs for event in view.apply(diff)]


def counts_of(presences: Mapping[str, Any]) -> dict[str, int]:
    return {key: len(value["metas"]) for key, value in sorted(presences.items()) if value["metas"]}


def live_counts(tracker: Tracker, topic: str = "room") -> dict[str, int]:
    """The connections of each key of ``topic`` in the visible state."""
    return counts_of(group(tracker.state.get_by_topic(topic)))


def joined(key: str, connections: int = 1, topic: str = "t") -> UserJoined:
    return UserJoined(topic=topic, key=key, connections=connections)


def left(key: str, topic: str = "t") -> UserLeft:
    return UserLeft(topic=topic, key=key)


def started(**config: Any) -> tuple[Tracker, float]:
    tracker = make_tracker("a", **config)
    tracker.handle_timer(now=0.0)
    tick = tracker.next_deadline()
    assert tick is not None
    tracker.handle_timer(now=tick)
    drain(tracker)
    return tracker, tick


# ---------------------------------------------------------------------------- units


def test_a_key_is_reported_on_its_first_join_and_its_last_leave_only() -> None:
    tracker, t0 = started()
    view = UserView("t")
    assert (len(view), view.counts, view.connections("u")) == (0, {}, 0)
    tracker.track(conn="tab1", topic="t", key="u", meta={}, now=t0)
    assert feed(view, diffs_of(tracker)) == [joined("u", 1)]
    tracker.track(conn="tab2", topic="t", key="u", meta={}, now=t0)
    tracker.track(conn="tab3", topic="t", key="u", meta={}, now=t0)
    assert feed(view, diffs_of(tracker)) == []
    assert view.connections("u") == 3
    tracker.update(conn="tab2", topic="t", key="u", meta={"away": True}, now=t0)
    tracker.untrack(conn="tab1", topic="t", key="u", now=t0)
    tracker.untrack(conn="tab3", topic="t", key="u", now=t0)
    assert feed(view, diffs_of(tracker)) == []
    assert (len(view), view.counts) == (1, {"u": 1})
    tracker.untrack(conn="tab2", topic="t", key="u", now=t0)
    assert feed(view, diffs_of(tracker)) == [left("u")]
    assert (len(view), view.counts, view.connections("u")) == (0, {}, 0)
    tracker.track(conn="tab4", topic="t", key="u", meta={}, now=t0)
    assert feed(view, diffs_of(tracker)) == [joined("u", 1)]  # a new interval


def test_several_connections_arriving_in_one_diff_are_counted_in_the_join() -> None:
    tracker, t0 = started()
    tracker.configure_topic("t", TopicOptions(large_room=True))
    view = UserView("t")
    for conn in ("c1", "c2", "c3"):
        tracker.track(conn=conn, topic="t", key="u", meta={}, now=t0)
    tracker.track(conn="c1", topic="t", key="v", meta={}, now=t0)
    tracker.track(conn="c1", topic="t", key="w", meta={}, now=t0)
    tracker.untrack(conn="c1", topic="t", key="w", now=t0)  # never seen: nothing
    assert diffs_of(tracker) == []
    tracker.handle_timer(now=t0 + PERIOD)
    assert feed(view, diffs_of(tracker)) == [joined("u", 3), joined("v", 1)]
    # All of u's connections go, one comes back, within one tick: no event, one connection.
    for conn in ("c1", "c2", "c3"):
        tracker.untrack(conn=conn, topic="t", key="u", now=t0 + PERIOD)
    tracker.track(conn="c4", topic="t", key="u", meta={}, now=t0 + PERIOD)
    tracker.untrack(conn="c1", topic="t", key="v", now=t0 + PERIOD)
    tracker.handle_timer(now=t0 + 2 * PERIOD)
    assert feed(view, diffs_of(tracker)) == [left("v")]
    assert view.counts == {"u": 1}


def test_a_reconnect_within_the_grace_period_is_no_event() -> None:
    tracker, t0 = started(leave_grace_period=1.0)
    view = UserView("t")
    tracker.track(conn="tab1", topic="t", key="u", meta={}, now=t0)
    assert feed(view, diffs_of(tracker)) == [joined("u", 1)]
    tracker.untrack(conn="tab1", topic="t", key="u", now=t0)
    assert feed(view, diffs_of(tracker)) == []
    assert view.counts == {"u": 1}  # what subscribers were shown, still
    assert counts_of(tracker.presences("t")) == {"u": 1}  # and what the tracker lists
    tracker.track(conn="tab2", topic="t", key="u", meta={}, now=t0 + 0.5)
    assert feed(view, diffs_of(tracker)) == []
    assert view.counts == {"u": 1}
    tracker.untrack(conn="tab2", topic="t", key="u", now=t0 + 0.6)
    tracker.handle_timer(now=t0 + 1.5)
    assert feed(view, diffs_of(tracker)) == []
    tracker.handle_timer(now=t0 + 1.6)
    assert feed(view, diffs_of(tracker)) == [left("u")]  # once, when the period ends
    tracker.handle_timer(now=t0 + 5)
    assert feed(view, diffs_of(tracker)) == []


def test_a_view_starts_from_the_entries_of_its_topic() -> None:
    tracker, t0 = started()
    for conn, key in (("c1", "u"), ("c2", "u"), ("c1", "v")):
        tracker.track(conn=conn, topic="t", key=key, meta={}, now=t0)
    tracker.track(conn="c1", topic="other", key="w", meta={}, now=t0)
    earlier = diffs_of(tracker)
    view = UserView("t", tracker.entries("t"))
    assert view.counts == {"u": 2, "v": 1} == counts_of(tracker.presences("t"))
    # Diffs that overlap the starting entries change nothing.
    assert feed(view, earlier) == []
    assert view.counts == {"u": 2, "v": 1}
    tracker.untrack_conn(conn="c1", now=t0)
    assert feed(view, diffs_of(tracker)) == [left("v")]
    assert view.counts == {"u": 1}


def test_a_view_started_while_a_leave_is_held_gets_that_leave() -> None:
    tracker, t0 = started(leave_grace_period=1.0)
    tracker.track(conn="tab1", topic="t", key="u", meta={}, now=t0)
    tracker.untrack(conn="tab1", topic="t", key="u", now=t0)
    drain(tracker)
    view = UserView("t", tracker.entries("t"))  # u is still shown: the view starts with it
    assert view.counts == {"u": 1}
    tracker.handle_timer(now=t0 + 1.0)
    assert feed(view, diffs_of(tracker)) == [left("u")]
    assert view.counts == {}


def test_a_view_started_within_a_tick_of_a_large_room_has_no_ghost() -> None:
    tracker, t0 = started()
    tracker.configure_topic("t", TopicOptions(large_room=True))
    tracker.track(conn="c", topic="t", key="ghost", meta={}, now=t0)
    view = UserView("t", tracker.entries("t"))  # the join is in the batch: not shown yet
    assert view.counts == {}
    tracker.untrack(conn="c", topic="t", key="ghost", now=t0)
    tracker.handle_timer(now=t0 + PERIOD)
    assert feed(view, diffs_of(tracker)) == []  # joined and left within the tick: nothing
    assert view.counts == {} == counts_of(tracker.presences("t"))


def test_events_follow_the_order_of_the_keys_in_the_diff() -> None:
    view = UserView("t", [entry("c", "x", 1)])
    diff = PresenceDiff(
        topic="t",
        joins=[entry("b", "x", 2), entry("a", "x", 3), entry("a", "y", 4)],
        leaves=[entry("c", "x", 1)],
    )
    assert view.apply(diff) == [joined("b"), joined("a", 2), left("c")]
    assert list(view.counts) == ["a", "b"]


def test_joins_are_applied_before_leaves() -> None:
    view = UserView("t")
    # The same new connection joins and leaves in one diff: the key never shows.
    both = PresenceDiff(topic="t", joins=[entry("u", "x", 1)], leaves=[entry("u", "x", 1)])
    assert view.apply(both) == []
    assert (len(view), view.connections("u")) == (0, 0)
    # A replacement: the new connection joins, the old leaves, the key stays.
    view.apply(PresenceDiff(topic="t", joins=[entry("u", "x", 2)]))
    swap = PresenceDiff(topic="t", joins=[entry("u", "y", 3)], leaves=[entry("u", "x", 2)])
    assert view.apply(swap) == []
    assert view.counts == {"u": 1}


def test_joins_already_counted_and_leaves_never_counted_change_nothing() -> None:
    view = UserView("t", [entry("u", "x", 1)])
    again = PresenceDiff(topic="t", joins=[entry("u", "x", 1)])
    assert view.apply(again) == []
    unknown = PresenceDiff(topic="t", leaves=[entry("u", "y", 9), entry("nobody", "z", 8)])
    assert view.apply(unknown) == []
    assert view.counts == {"u": 1}
    assert view.apply(PresenceDiff(topic="t")) == []


def test_counts_are_a_copy_in_key_order() -> None:
    view = UserView("t", [entry("b", "x", 1), entry("a", "x", 2), entry("a", "y", 3)])
    counts = view.counts
    assert list(counts.items()) == [("a", 2), ("b", 1)]
    assert isinstance(counts, dict)
    counts["a"] = 99
    del counts["b"]
    assert view.counts == {"a": 2, "b": 1}
    assert repr(view) == "<UserView 't' keys=2>"


@pytest.mark.parametrize(
    ("topic", "entries"),
    [
        (1, []),
        (None, []),
        (b"t", []),
        ("t", [object()]),
        ("t", "ab"),
        ("t", [("t", "u", "c", {}, A1, 1)]),
        ("t", [entry("u", topic="other")]),
        ("t", [entry("u"), entry("v", topic="other")]),
    ],
    ids=repr,
)
def test_a_view_refuses_what_is_not_its_topics_entries(topic: Any, entries: Any) -> None:
    with pytest.raises(InvalidArgument):
        UserView(topic, entries)


def test_a_diff_it_cannot_take_changes_nothing() -> None:
    view = UserView("t", [entry("u", "x", 1)])
    before = (view.counts, len(view), repr(view), view.connections("u"))
    bad: list[Any] = [
        None,
        {"joins": {}, "leaves": {}},
        presence_diff_payload(PresenceDiff(topic="t", leaves=[entry("u", "x", 1)])),
        PresenceDiff(topic="other", leaves=[entry("u", "x", 1)]),
        PresenceDiff(topic="other", joins=[entry("v", "y", 2)]),
    ]
    for value in bad:
        with pytest.raises(InvalidArgument):
            view.apply(value)
        assert (view.counts, len(view), repr(view), view.connections("u")) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"topic": 1, "key": "u", "connections": 1},
        {"topic": "t", "key": None, "connections": 1},
        {"topic": "t", "key": "u", "connections": 0},
        {"topic": "t", "key": "u", "connections": -1},
        {"topic": "t", "key": "u", "connections": True},
        {"topic": "t", "key": "u", "connections": 1.0},
    ],
    ids=repr,
)
def test_a_user_joined_event_is_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        UserJoined(**fields)


@pytest.mark.parametrize(
    "fields", [{"topic": b"t", "key": "u"}, {"topic": "t", "key": 1}], ids=repr
)
def test_a_user_left_event_is_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        UserLeft(**fields)


def test_events_are_values() -> None:
    assert joined("u", 2) == UserJoined(topic="t", key="u", connections=2)
    assert joined("u", 2) != joined("u", 3)
    assert left("u") == UserLeft(topic="t", key="u")
    assert len({joined("u"), joined("u"), left("u")}) == 2


# ---------------------------------------------------------------------------- properties

NODES = ("a", "b")
_identity = st.tuples(
    st.sampled_from(NODES),
    st.sampled_from(["c1", "c2", "c3"]),
    st.sampled_from(["room", "other"]),
    st.sampled_from(["k1", "k2", "k3"]),
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["track", "update", "untrack"]), _identity),
        st.tuples(st.just("untrack_conn"), st.tuples(st.sampled_from(NODES), st.just("c1"))),
        st.tuples(st.just("step"), st.sampled_from([0.01, 0.05, 0.1, 0.3, 0.6])),
        st.tuples(st.just("cut"), st.sampled_from(NODES)),
        st.tuples(st.just("checkpoint"), st.none()),
    ),
    max_size=40,
)

MODES: dict[str, tuple[dict[str, Any], TopicOptions]] = {
    "phoenix": ({}, TopicOptions()),
    "grace": ({"leave_grace_period": 0.3}, TopicOptions()),
    "batched": ({}, TopicOptions(large_room=True)),
    "batched+grace": ({}, TopicOptions(large_room=True, leave_grace_period=0.2)),
}


class Pair:
    """Two trackers exchanging their messages by hand (a cut sender's messages are lost), and
    on each one a :class:`UserView` and a phoenix.js-like replay of topic ``room``'s diffs."""

    def __init__(self, config: Mapping[str, Any], options: TopicOptions) -> None:
        self.trackers = {n: make_tracker(n, seed=i, **config) for i, n in enumerate(NODES)}
        self.cut: set[str] = set()
        self.views = {name: UserView("room") for name in NODES}
        self.shown: dict[str, dict[str, Any]] = {name: {} for name in NODES}
        self.last: dict[str, dict[str, type]] = {name: {} for name in NODES}
        for tracker in self.trackers.values():
            tracker.configure_topic("room", options)
            tracker.handle_timer(now=0.0)

    def exchange(self, now: float) -> None:
        for _ in range(1000):
            outs = [
                (name, out)
                for name, tracker in self.trackers.items()
                for out in tracker.messages_to_send()
            ]
            if not outs:
                return
            for sender, out in outs:
                if sender in self.cut:
                    continue
                for name, receiver in self.trackers.items():
                    if name != sender and out.to in (None, name):
                        receiver.receive(out.data, now=now)
        raise AssertionError("the trackers never go quiet")

    def timers(self, now: float) -> None:
        for tracker in self.trackers.values():
            tracker.handle_timer(now=now)

    def observe(self) -> None:
        """Feed every tracker's new diffs of ``room`` to its view, checking each one."""
        for name, tracker in self.trackers.items():
            for event in drain(tracker):
                if isinstance(event, PresenceDiff) and event.topic == "room":
                    self._check(name, event)

    def _check(self, name: str, diff: PresenceDiff) -> None:
        view, last = self.views[name], self.last[name]
        before = self.shown[name]
        after = self.shown[name] = sync_diff(before, presence_diff_payload(diff)).state
        events = view.apply(diff)
        # An event for each key the diff brought to the client or took away, no other.
        appeared = sorted(set(after) - set(before))
        gone = sorted(set(before) - set(after))
        assert sorted(e.key for e in events if isinstance(e, UserJoined)) == appeared
        assert sorted(e.key for e in events if isinstance(e, UserLeft)) == gone
        for event in events:
            assert event.topic == "room"
            if isinstance(event, UserJoined):
                assert event.connections == len(after[event.key]["metas"])
                assert last.get(event.key, UserLeft) is UserLeft  # never twice in a row
            else:
                assert last.get(event.key) is UserJoined
            last[event.key] = type(event)
        assert view.counts == counts_of(after)
        assert len(view) == len(after)


@pytest.mark.parametrize("mode", list(MODES))
@given(operations=OPERATIONS)
def test_the_view_reports_each_presence_interval_once_with_live_counts(
    mode: str, operations: list[tuple[str, Any]]
) -> None:
    config, options = MODES[mode]
    phoenix = mode == "phoenix"
    pair = Pair(config, options)
    now = 0.0
    for kind, args in operations:
        if kind in ("track", "update", "untrack"):
            node, conn, topic, key = args
            client_command(pair.trackers[node], kind, conn, topic, key, now=now)
        elif kind == "untrack_conn":
            node, conn = args
            pair.trackers[node].untrack_conn(conn=conn, now=now)
        elif kind == "step":
            now = round(now + args, 6)
            pair.timers(now)
            pair.exchange(now)
        elif kind == "cut":
            pair.cut ^= {args}
        else:
            # A tick is due on both by a period from now: right after it, no batch is pending.
            now = round(now + PERIOD + 0.001, 6)  # past now + PERIOD, whatever the rounding
            pair.timers(now)
            pair.observe()
            if not config and options.leave_grace_period is None:  # nothing held, or batched
                for name, tracker in pair.trackers.items():
                    assert pair.views[name].counts == live_counts(tracker)
            pair.exchange(now)
        pair.observe()
        for name, tracker in pair.trackers.items():
            # The view counts what the tracker lists: what its subscribers were shown.
            counts = pair.views[name].counts
            assert counts == counts_of(tracker.presences("room"))
            occupancy = tracker.occupancy("room")
            assert (len(counts), sum(counts.values())) == (occupancy.keys, occupancy.presences)
            if phoenix:  # every diff delivered at once: that is the live state
                assert counts == live_counts(tracker)

    # Heal, let every held leave end and a last tick flush: the view is the live state.
    pair.cut.clear()
    for k in range(1, 61):
        pair.timers(now + k * PERIOD / 2)
        pair.exchange(now + k * PERIOD / 2)
    pair.observe()
    for name, tracker in pair.trackers.items():
        live = live_counts(tracker)
        assert pair.views[name].counts == live
        assert counts_of(tracker.presences("room")) == live
        for key, last in pair.last[name].items():
            assert last is (UserJoined if key in live else UserLeft)
        assert set(live) <= set(pair.last[name])


def test_user_events_are_events_of_the_topic_given() -> None:
    view = UserView("room:1")
    events: list[Event | UserJoined | UserLeft] = list(
        view.apply(PresenceDiff(topic="room:1", joins=[entry("u", topic="room:1")]))
    )
    assert events == [UserJoined(topic="room:1", key="u", connections=1)]
