"""Tracker behaviour through the public API, on scripted time (SPEC §1.3-§1.9, §3, §7.6).

Each clustered case of phoenix_pubsub's ``shard_replication_test.exs`` that does not depend on
Erlang processes is restated here with a :class:`helpers.Cluster`: instant delivery, an explicit
``now`` and the same timings (broadcast 0.1 s, max_silent 2, permdown 1.5 s, so down is 0.4 s).
Expected event lists are written out in full: a change in order or content must fail a test.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from helpers import (
    DOWN,
    PERIOD,
    PERMDOWN,
    Cluster,
    drain,
    entry_id,
    make_tracker,
    observe,
    summarize,
)
from presence_core import (
    AlreadyTracked,
    Entry,
    GracefulPermdown,
    Heartbeat,
    InvalidArgument,
    JSONValue,
    LimitExceeded,
    LocalProtocolError,
    NoPresence,
    Outbound,
    PresenceDiff,
    RemoteProtocolError,
    ReplicaRef,
    ReplicaState,
    ReplicaStatus,
    ReplicaUp,
    Tracker,
    TransferAck,
    TransferRequest,
    encode_message,
)

A1 = ReplicaRef("a", 1)
B1 = ReplicaRef("b", 1)
B2 = ReplicaRef("b", 2)


def up_cluster(*names: str, **config: Any) -> Cluster:
    """A cluster whose trackers all know each other, with every event drained."""
    cluster = Cluster(names, **config)
    cluster.advance(0.5)
    cluster.events()
    return cluster


def heartbeat_times(cluster: Cluster, name: str, *, since: int = 0) -> list[float]:
    return [sent.at for sent in cluster.messages(Heartbeat, sender=name, since=since)]


def only_diff(events: list[Any]) -> PresenceDiff:
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, PresenceDiff)
    return event


# ---------------------------------------------------------------------------- heartbeats


def test_heartbeats_are_broadcast_repeatedly() -> None:
    cluster = Cluster(["a"])
    start = cluster["a"].next_deadline()
    assert start is not None
    cluster.advance(1.0)
    sent = cluster.messages(sender="a")
    # The first tick always heartbeats (the silent counter starts at its maximum), then an empty
    # heartbeat every (max_silent_periods + 1) ticks.
    assert [type(s.message) for s in sent] == [Heartbeat] * 4
    assert [s.at for s in sent] == pytest.approx([start + k * 3 * PERIOD for k in range(4)])
    assert all(s.to is None for s in sent)
    assert all(isinstance(s.message, Heartbeat) and s.message.delta is None for s in sent)
    assert all(isinstance(s.message, Heartbeat) and s.message.sender == A1 for s in sent)


def test_a_delta_goes_out_at_the_next_tick_and_resets_the_silence() -> None:
    cluster = Cluster(["a"])
    start = cluster["a"].next_deadline()
    assert start is not None
    cluster.advance(start + 4.5 * PERIOD)  # ticks 0..4 ran; heartbeats at ticks 0 and 3
    mark = len(cluster.sent)
    cluster.track("a", "c1", "lobby", "u1")
    cluster.advance(0.7)  # ticks 5..11
    sent = cluster.messages(Heartbeat, sender="a", since=mark)
    deltas = [isinstance(s.message, Heartbeat) and s.message.delta is not None for s in sent]
    assert deltas == [True, False, False]
    assert [s.at for s in sent] == pytest.approx([start + k * PERIOD for k in (5, 8, 11)])


# ---------------------------------------------------------------------------- discovery, transfer


def test_gossip_from_an_unseen_replica_triggers_up_and_a_transfer_request() -> None:
    cluster = Cluster(["primary"])
    cluster.advance(0.5)
    cluster.deaf.add("primary")
    cluster.add("node1")
    ref = cluster.track("node1", "p1", "lobby", "node1")
    cluster.advance(0.5)
    assert drain(cluster["primary"]) == []
    assert cluster["primary"].replicas() == {}
    assert cluster["primary"].presences("lobby") == {}

    cluster.deaf.discard("primary")
    mark = len(cluster.sent)
    cluster.advance(1.0)

    requests = cluster.messages(TransferRequest, sender="primary", since=mark)
    assert [r.to for r in requests] == ["node1"]
    acks = cluster.messages(TransferAck, sender="node1", since=mark)
    assert [a.to for a in acks] == ["primary"]
    request, ack = requests[0].message, acks[0].message
    assert isinstance(request, TransferRequest)
    assert isinstance(ack, TransferAck)
    assert ack.request_id == request.request_id
    assert request.sender == ReplicaRef("primary", 1)
    # primary keeps heartbeating to node1
    assert cluster.messages(Heartbeat, sender="primary", since=mark)[-1].delivered_to == ("node1",)
    assert summarize(drain(cluster["primary"])) == [
        ("up", "node1", 1),
        ("diff", "lobby", ("node1/p1/node1",), ()),
    ]
    assert cluster["primary"].presences("lobby") == {"node1": {"metas": [{"phx_ref": ref}]}}
    assert cluster["primary"].replicas()["node1"].status is ReplicaStatus.UP


def test_requests_for_transfer_collapse_to_the_dominating_clock() -> None:
    # primary ticks in the first quarter of each 0.1 s period, node1 and node2 in the third one,
    # so node1's and node2's heartbeats always fall in the same sampling window of primary.
    cluster = Cluster(["primary"])
    cluster.advance(0.05)
    cluster.add("node1")
    cluster.add("node2")
    cluster.advance(0.54)
    cluster.events()
    # primary misses the deltas; node2 never hears node1, so node1's clock dominates node2's.
    cluster.deaf.add("primary")
    cluster.cut.add(("node1", "node2"))
    cluster.track("node2", "p3", "lobby", "n2")
    cluster.track("node1", "p1", "lobby", "n1a")
    cluster.track("node1", "p2", "lobby", "n1b")
    cluster.advance(0.1)
    assert cluster["primary"].presences("lobby") == {}
    cluster.deaf.discard("primary")
    mark = len(cluster.sent)
    cluster.advance(1.0)

    requests = cluster.messages(TransferRequest, sender="primary", since=mark)
    assert [r.to for r in requests] == ["node1"]
    acks = cluster.messages(TransferAck, to="primary", since=mark)
    assert [(a.sender, getattr(a.message, "request_id", None)) for a in acks] == [
        ("node1", getattr(requests[0].message, "request_id", None))
    ]
    # Missing one 0.3 s heartbeat is a 0.6 s silence: over the 0.4 s down period.
    assert summarize(drain(cluster["primary"])) == [
        ("down", "node1", 1),
        ("down", "node2", 1),
        ("up", "node2", 1),
        ("up", "node1", 1),
        ("diff", "lobby", ("node1/p1/n1a", "node1/p2/n1b", "node2/p3/n2"), ()),
    ]
    assert sorted(cluster["primary"].presences("lobby")) == ["n1a", "n1b", "n2"]


def test_a_restarted_replica_has_its_old_presences_removed_at_once() -> None:
    cluster = up_cluster("a", "b", "c")
    cluster.track("b", "c1", "lobby", "u1")
    cluster.advance(0.5)
    cluster.events()
    cluster.kill("b")
    cluster.advance(0.05)  # well within the down period: nobody noticed
    cluster.restart("b")
    cluster.track("b", "c1", "lobby", "u1-back")
    cluster.advance(0.5)
    events = cluster.events()
    for name in ("a", "c"):
        assert summarize(events[name]) == [
            ("down", "b", 1),
            ("diff", "lobby", (), ("b/c1/u1",)),
            ("permdown", "b", 1),
            ("up", "b", 2),
            ("diff", "lobby", ("b/c1/u1-back",), ()),
        ]
    assert summarize(events["b"]) == [
        ("diff", "lobby", ("b/c1/u1-back",), ()),
        ("up", "a", 1),
        ("up", "c", 1),
    ]
    for tracker in cluster:
        assert B1 not in tracker.state.context
        assert all(entry.owner != B1 for entry in tracker.state.entries())
        assert list(tracker.presences("lobby")) == ["u1-back"]
    assert cluster["a"].replicas()["b"].ref == B2


def test_tempdown_and_back_up_with_the_same_incarnation() -> None:
    cluster = up_cluster("a", "b")
    ref = cluster.track("b", "c1", "lobby", "u1", {"n": 1})
    cluster.advance(0.5)
    cluster.events()
    listed = cluster["a"].presences("lobby")
    assert listed == {"u1": {"metas": [{"n": 1, "phx_ref": ref}]}}

    cluster.mute.add("b")
    cluster.advance(DOWN + 0.3)
    assert summarize(drain(cluster["a"])) == [("down", "b", 1), ("diff", "lobby", (), ("b/c1/u1",))]
    assert cluster["a"].presences("lobby") == {}
    assert cluster["a"].count("lobby") == 0
    assert cluster["a"].replicas()["b"].status is ReplicaStatus.DOWN
    assert cluster["a"].replicas()["b"].ref == B1
    assert [e.key for e in cluster["a"].state.entries() if e.owner == B1] == ["u1"]

    cluster.mute.discard("b")
    cluster.advance(0.5)
    assert summarize(drain(cluster["a"])) == [("up", "b", 1), ("diff", "lobby", ("b/c1/u1",), ())]
    assert cluster["a"].presences("lobby") == listed
    assert cluster["a"].replicas()["b"].status is ReplicaStatus.UP
    assert drain(cluster["b"]) == []


def test_down_then_permdown_deletes_the_presences() -> None:
    cluster = up_cluster("a", "b")
    cluster.track("b", "c1", "lobby", "u1")
    cluster.track("a", "c1", "lobby", "mine")
    cluster.advance(0.5)
    cluster.events()
    last_heard = cluster["a"].replicas()["b"].last_heard
    cluster.kill("b")

    cluster.advance(DOWN + 0.2)
    assert summarize(drain(cluster["a"])) == [("down", "b", 1), ("diff", "lobby", (), ("b/c1/u1",))]
    # hidden, but still stored until permdown
    assert [e.key for e in cluster["a"].state.entries() if e.owner == B1] == ["u1"]
    assert list(cluster["a"].presences("lobby")) == ["mine"]

    cluster.advance(last_heard + PERMDOWN - cluster.now - 0.05)
    assert drain(cluster["a"]) == []
    cluster.advance(0.2)
    assert summarize(drain(cluster["a"])) == [("permdown", "b", 1)]
    assert [e.key for e in cluster["a"].state.entries()] == ["mine"]
    assert cluster["a"].replicas() == {}
    assert B1 not in cluster["a"].state.context
    assert list(cluster["a"].presences("lobby")) == ["mine"]
    cluster.advance(2.0)
    assert drain(cluster["a"]) == []


def test_tempdowns_with_nodeups_of_new_vsn_and_permdowns() -> None:
    # shard_replication_test "tempdowns with nodeups of new vsn, and permdowns" (SPEC §7.6 #5)
    cluster = up_cluster("a", "b", "c")
    a = cluster["a"]
    cluster.track("b", "p1", "lobby", "node1")
    cluster.track("c", "p2", "lobby", "node2")
    cluster.advance(0.2)
    cluster.events()

    cluster.mute.add("b")  # suspended
    cluster.advance(0.8)
    assert summarize(drain(a)) == [("down", "b", 1), ("diff", "lobby", (), ("b/p1/node1",))]
    assert a.replicas()["b"].status is ReplicaStatus.DOWN

    cluster.mute.discard("b")  # resumed, same vsn
    cluster.advance(0.4)
    assert summarize(drain(a)) == [("up", "b", 1), ("diff", "lobby", ("b/p1/node1",), ())]
    assert a.replicas()["b"].ref == B1

    cluster.kill("b")
    cluster.advance(0.8)
    assert summarize(drain(a)) == [("down", "b", 1), ("diff", "lobby", (), ("b/p1/node1",))]

    cluster.restart("b")
    cluster.track("b", "p1", "lobby", "node1-back")
    cluster.advance(0.4)
    assert summarize(drain(a)) == [
        ("permdown", "b", 1),
        ("up", "b", 2),
        ("diff", "lobby", ("b/p1/node1-back",), ()),
    ]
    assert list(a.presences("lobby")) == ["node1-back", "node2"]
    assert a.replicas()["b"].ref == B2

    cluster.kill("b")
    cluster.advance(0.8)
    assert summarize(drain(a)) == [("down", "b", 2), ("diff", "lobby", (), ("b/p1/node1-back",))]
    cluster.advance(1.0)
    assert summarize(drain(a)) == [("permdown", "b", 2)]
    assert sorted(a.replicas()) == ["c"]
    assert list(a.presences("lobby")) == ["node2"]


def test_graceful_permdown_of_a_replica_already_down_only_permdowns() -> None:
    tracker = make_tracker("a")
    state = ReplicaState(B1)
    state.replica_up(A1)
    state.join("c1", "lobby", "u1", {})
    tracker.receive(Heartbeat(sender=B1, clock=state.clocks()[1], delta=state.take_delta()), now=0)
    tracker.handle_timer(now=1.0)
    assert summarize(drain(tracker)) == [
        ("up", "b", 1),
        ("diff", "lobby", ("b/c1/u1",), ()),
        ("down", "b", 1),
        ("diff", "lobby", (), ("b/c1/u1",)),
    ]
    tracker.receive(GracefulPermdown(sender=B1), now=1.0)
    assert summarize(drain(tracker)) == [("permdown", "b", 1)]
    assert tracker.replicas() == {}
    assert list(tracker.state.entries()) == []


def test_a_transfer_ack_is_not_a_heartbeat() -> None:
    tracker = make_tracker("a")
    state = ReplicaState(B1)
    state.join("c1", "lobby", "u1", {})
    snapshot = state.extract(A1, {A1: 0, B1: 0})
    tracker.receive(TransferAck(request_id=1, sender=B1, payload=snapshot), now=0.0)
    # b is unknown: no record is created and its entries are not accepted
    assert summarize(drain(tracker)) == [("rejected", "unsolicited", "b")]
    assert tracker.replicas() == {}
    assert tracker.presences("lobby") == {}
    tracker.receive(Heartbeat(sender=B1, clock={B1: 1}), now=0.05)
    for now in (0.1, 0.2, 0.3):  # the clock sample asks b for what it has
        tracker.handle_timer(now=now)
    (request,) = [o.message for o in tracker.messages_to_send() if o.to == "b"]
    assert isinstance(request, TransferRequest)
    reply = TransferAck(request_id=request.request_id, sender=B1, payload=snapshot)
    tracker.receive(reply, now=0.35)
    assert summarize(drain(tracker)) == [("up", "b", 1), ("diff", "lobby", ("b/c1/u1",), ())]
    assert tracker.replicas()["b"].last_heard == 0.05  # the ack did not refresh it
    tracker.receive(reply, now=0.4)  # a duplicate: the request was answered already
    assert summarize(drain(tracker)) == [("rejected", "unsolicited", "b")]
    assert tracker.presences("lobby") != {}


# ------------------------------------------------------------------------- local and remote diffs


def test_local_and_remote_joins_and_leaves() -> None:
    cluster = up_cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    ref = cluster.track("a", "c1", "lobby", "u1", {"name": "u1"})
    diff = only_diff(drain(a))
    assert diff.topic == "lobby"
    assert diff.leaves == ()
    assert [(e.key, e.conn, e.owner, dict(e.meta)) for e in diff.joins] == [
        ("u1", "c1", A1, {"name": "u1", "phx_ref": ref})
    ]
    assert drain(b) == []  # not replicated before the next tick
    assert b.presences("lobby") == {}

    cluster.advance(PERIOD)
    remote = only_diff(drain(b))
    assert remote.joins == diff.joins
    assert remote.leaves == ()
    assert (
        b.presences("lobby")
        == a.presences("lobby")
        == {"u1": {"metas": [{"name": "u1", "phx_ref": ref}]}}
    )

    cluster.track("b", "c9", "lobby", "u2")
    cluster.advance(PERIOD)
    assert summarize(drain(a)) == [("diff", "lobby", ("b/c9/u2",), ())]
    assert summarize(drain(b)) == [("diff", "lobby", ("b/c9/u2",), ())]

    a.untrack(conn="c1", topic="lobby", key="u1", now=cluster.now)
    assert summarize(drain(a)) == [("diff", "lobby", (), ("a/c1/u1",))]
    cluster.advance(PERIOD)
    assert summarize(drain(b)) == [("diff", "lobby", (), ("a/c1/u1",))]
    assert list(a.presences("lobby")) == list(b.presences("lobby")) == ["u2"]

    b.untrack_conn(conn="c9", now=cluster.now)
    cluster.advance(PERIOD)
    assert summarize(drain(a)) == [("diff", "lobby", (), ("b/c9/u2",))]
    assert summarize(drain(b)) == [("diff", "lobby", (), ("b/c9/u2",))]
    assert a.presences("lobby") == b.presences("lobby") == {}
    assert a.topics() == b.topics() == []


def test_untrack_with_no_presence_is_a_noop() -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=1.0)
    drain(tracker)
    tracker.messages_to_send()
    before = observe(tracker)
    tracker.untrack(conn="c1", topic="lobby", key="nobody", now=1.0)
    tracker.untrack(conn="c1", topic="elsewhere", key="u1", now=1.0)
    tracker.untrack(conn="c2", topic="lobby", key="u1", now=1.0)
    tracker.untrack_conn(conn="c2", now=1.0)
    assert drain(tracker) == []
    assert tracker.messages_to_send() == []
    assert observe(tracker) == before


def test_untrack_with_no_presence_sends_no_delta() -> None:
    cluster = up_cluster("a", "b")
    mark = len(cluster.sent)
    cluster["a"].untrack(conn="c1", topic="lobby", key="u1", now=cluster.now)
    cluster.advance(1.0)
    assert all(
        isinstance(s.message, Heartbeat) and s.message.delta is None
        for s in cluster.messages(sender="a", since=mark)
    )
    assert cluster.events() == {"a": [], "b": []}


def test_untrack_one_of_two_topics() -> None:
    cluster = up_cluster("a", "b")
    a = cluster["a"]
    cluster.track("a", "c1", "t1", "u1")
    ref2 = cluster.track("a", "c1", "t2", "u1")
    cluster.advance(PERIOD)
    cluster.events()
    a.untrack(conn="c1", topic="t1", key="u1", now=cluster.now)
    assert summarize(drain(a)) == [("diff", "t1", (), ("a/c1/u1",))]
    cluster.advance(PERIOD)
    assert summarize(drain(cluster["b"])) == [("diff", "t1", (), ("a/c1/u1",))]
    for tracker in cluster:
        assert tracker.presences("t1") == {}
        assert tracker.presences("t2") == {"u1": {"metas": [{"phx_ref": ref2}]}}
        assert tracker.topics() == ["t2"]
    assert [e.topic for e in a.state.get_by_conn("c1")] == ["t2"]
    a.untrack(conn="c1", topic="t2", key="u1", now=cluster.now)
    assert summarize(drain(a)) == [("diff", "t2", (), ("a/c1/u1",))]
    assert a.topics() == []
    assert a.state.get_by_conn("c1") == []


def test_untrack_conn_clears_every_topic() -> None:
    cluster = up_cluster("a", "b")
    a = cluster["a"]
    for topic in ("t2", "t1", "t3"):
        cluster.track("a", "c1", topic, "u1")
    cluster.track("a", "c1", "t1", "u1-alt")
    ref = cluster.track("a", "c2", "t1", "other")
    cluster.advance(PERIOD)
    cluster.events()
    a.untrack_conn(conn="c1", now=cluster.now)
    expected = [
        ("diff", "t1", (), ("a/c1/u1", "a/c1/u1-alt")),
        ("diff", "t2", (), ("a/c1/u1",)),
        ("diff", "t3", (), ("a/c1/u1",)),
    ]
    assert summarize(drain(a)) == expected
    cluster.advance(PERIOD)
    assert summarize(drain(cluster["b"])) == expected
    for tracker in cluster:
        assert tracker.topics() == ["t1"]
        assert tracker.presences("t1") == {"other": {"metas": [{"phx_ref": ref}]}}


# ---------------------------------------------------------------------------- update


def test_update_with_a_map_sends_one_diff_with_join_leave_and_phx_ref_prev() -> None:
    cluster = up_cluster("a", "b")
    a = cluster["a"]
    old_ref = cluster.track("a", "c1", "lobby", "u1", {"old": "field"})
    cluster.advance(PERIOD)
    cluster.events()
    new_ref = a.update(conn="c1", topic="lobby", key="u1", meta={"new": "thing"}, now=cluster.now)
    assert new_ref != old_ref
    diff = only_diff(drain(a))
    assert [dict(e.meta) for e in diff.joins] == [
        {"new": "thing", "phx_ref": new_ref, "phx_ref_prev": old_ref}
    ]
    assert [dict(e.meta) for e in diff.leaves] == [{"old": "field", "phx_ref": old_ref}]
    assert a.presences("lobby") == {
        "u1": {"metas": [{"new": "thing", "phx_ref": new_ref, "phx_ref_prev": old_ref}]}
    }
    cluster.advance(PERIOD)
    remote = only_diff(drain(cluster["b"]))
    assert remote.joins == diff.joins
    assert remote.leaves == diff.leaves
    assert cluster["b"].presences("lobby") == a.presences("lobby")


def test_update_with_a_function_changes_one_field_and_keeps_the_others() -> None:
    tracker = make_tracker("a")
    old_ref = tracker.track(conn="c1", topic="lobby", key="u1", meta={"a": "old", "b": 1}, now=0.0)
    drain(tracker)
    seen: list[dict[str, JSONValue]] = []

    def change(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
        seen.append(copy.deepcopy(meta))
        return {**meta, "a": "newval"}

    new_ref = tracker.update(conn="c1", topic="lobby", key="u1", meta=change, now=0.0)
    assert seen == [{"a": "old", "b": 1, "phx_ref": old_ref}]
    diff = only_diff(drain(tracker))
    assert [dict(e.meta) for e in diff.joins] == [
        {"a": "newval", "b": 1, "phx_ref": new_ref, "phx_ref_prev": old_ref}
    ]
    assert [dict(e.meta) for e in diff.leaves] == [{"a": "old", "b": 1, "phx_ref": old_ref}]

    # A second update: the function sees phx_ref_prev; whatever it returns for the two refs is
    # overwritten.
    def spoof(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
        seen.append(copy.deepcopy(meta))
        return {**meta, "phx_ref": "spoofed", "phx_ref_prev": "spoofed"}

    third = tracker.update(conn="c1", topic="lobby", key="u1", meta=spoof, now=0.0)
    assert seen[1] == {"a": "newval", "b": 1, "phx_ref": new_ref, "phx_ref_prev": old_ref}
    assert tracker.get_by_key("lobby", "u1") == {
        "metas": [{"a": "newval", "b": 1, "phx_ref": third, "phx_ref_prev": new_ref}]
    }


def test_update_function_gets_a_copy() -> None:
    tracker = make_tracker("a")
    old_ref = tracker.track(
        conn="c1", topic="lobby", key="u1", meta={"a": "old", "nested": {"x": [1]}}, now=0.0
    )
    drain(tracker)
    stored_before = tracker.presences("lobby")

    def mutate(meta: dict[str, Any]) -> dict[str, Any]:
        meta["a"] = "mutated"
        meta["nested"]["x"].append(2)
        meta["phx_ref"] = "hacked"
        return {"fresh": True}

    new_ref = tracker.update(conn="c1", topic="lobby", key="u1", meta=mutate, now=0.0)
    diff = only_diff(drain(tracker))
    assert [dict(e.meta) for e in diff.leaves] == [
        {"a": "old", "nested": {"x": [1]}, "phx_ref": old_ref}
    ]
    assert stored_before == {
        "u1": {"metas": [{"a": "old", "nested": {"x": [1]}, "phx_ref": old_ref}]}
    }
    assert tracker.presences("lobby") == {
        "u1": {"metas": [{"fresh": True, "phx_ref": new_ref, "phx_ref_prev": old_ref}]}
    }


def test_update_of_an_absent_presence_is_nopresence() -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=0.0)
    drain(tracker)
    before = observe(tracker)
    for conn, topic, key in [("c1", "lobby", "u2"), ("c2", "lobby", "u1"), ("c1", "x", "u1")]:
        with pytest.raises(NoPresence) as info:
            tracker.update(conn=conn, topic=topic, key=key, meta={"a": 1}, now=0.0)
        assert (info.value.conn, info.value.topic, info.value.key) == (conn, topic, key)
    called: list[object] = []
    with pytest.raises(NoPresence):
        tracker.update(conn="zz", topic="lobby", key="u1", meta=called.append, now=0.0)  # type: ignore[arg-type]
    assert called == []
    assert observe(tracker) == before
    assert drain(tracker) == []


# ---------------------------------------------------------------------------- duplicates, limits


def test_duplicate_tracking() -> None:
    tracker = make_tracker("a")
    first = tracker.track(conn="c1", topic="lobby", key="u1", meta={"n": 1}, now=0.0)
    drain(tracker)
    before = observe(tracker)
    with pytest.raises(AlreadyTracked) as info:
        tracker.track(conn="c1", topic="lobby", key="u1", meta={"n": 2}, now=0.0)
    assert (info.value.conn, info.value.topic, info.value.key) == ("c1", "lobby", "u1")
    assert isinstance(info.value, LocalProtocolError)
    assert observe(tracker) == before
    assert drain(tracker) == []

    other_topic = tracker.track(conn="c1", topic="other", key="u1", meta={}, now=0.0)
    other_key = tracker.track(conn="c1", topic="lobby", key="u2", meta={}, now=0.0)
    other_conn = tracker.track(conn="c2", topic="lobby", key="u1", meta={}, now=0.0)
    assert len({first, other_topic, other_key, other_conn}) == 4
    assert tracker.get_by_key("lobby", "u1") == {
        "metas": [{"n": 1, "phx_ref": first}, {"phx_ref": other_conn}]
    }
    for conn, topic, key in [("c1", "lobby", "u1"), ("c1", "other", "u1"), ("c1", "lobby", "u2")]:
        tracker.untrack(conn=conn, topic=topic, key=key, now=0.0)
    assert tracker.presences("lobby") == {"u1": {"metas": [{"phx_ref": other_conn}]}}
    assert tracker.topics() == ["lobby"]


def test_meta_too_big_is_refused_with_nothing_changed() -> None:
    tracker = make_tracker("a", max_meta_bytes=64)
    fresh = make_tracker("a", max_meta_bytes=64)
    ok = tracker.track(conn="c1", topic="lobby", key="u1", meta={"s": "x"}, now=0.0)
    assert ok == fresh.track(conn="c1", topic="lobby", key="u1", meta={"s": "x"}, now=0.0)
    drain(tracker)
    tracker.messages_to_send()
    before = observe(tracker)
    big = {"s": "x" * 64}
    with pytest.raises(LimitExceeded):
        tracker.track(conn="c2", topic="lobby", key="u2", meta=big, now=0.0)
    with pytest.raises(LimitExceeded):
        tracker.update(conn="c1", topic="lobby", key="u1", meta=big, now=0.0)
    with pytest.raises(LimitExceeded):
        tracker.update(conn="c1", topic="lobby", key="u1", meta=lambda m: {**m, **big}, now=0.0)
    assert observe(tracker) == before
    assert drain(tracker) == []
    assert tracker.messages_to_send() == []
    # no ref was consumed: the next one is the same as on a tracker that never failed
    assert tracker.track(conn="c2", topic="lobby", key="u2", meta={}, now=0.0) == fresh.track(
        conn="c2", topic="lobby", key="u2", meta={}, now=0.0
    )


def test_meta_at_the_limit_is_accepted() -> None:
    # {"s":"...","phx_ref":"<16 chars>"} is 37 bytes plus the string, as compact JSON
    tracker = make_tracker("a", max_meta_bytes=64)
    tracker.track(conn="c1", topic="lobby", key="u1", meta={"s": "x" * 27}, now=0.0)
    with pytest.raises(LimitExceeded, match="meta is 65 bytes"):
        tracker.track(conn="c2", topic="lobby", key="u1", meta={"s": "x" * 28}, now=0.0)
    # multi-byte characters count as their UTF-8 bytes
    with pytest.raises(LimitExceeded, match="meta is 65 bytes"):
        tracker.track(conn="c3", topic="lobby", key="u1", meta={"s": "é" * 14}, now=0.0)
    assert tracker.count("lobby") == 1


def test_caller_supplied_phx_ref_is_overwritten() -> None:
    tracker = make_tracker("a")
    meta: dict[str, JSONValue] = {"phx_ref": "mine", "name": "x"}
    ref = tracker.track(conn="c1", topic="lobby", key="u1", meta=meta, now=0.0)
    assert ref != "mine"
    assert meta == {"phx_ref": "mine", "name": "x"}  # the caller's dict is not touched
    assert tracker.presences("lobby") == {"u1": {"metas": [{"phx_ref": ref, "name": "x"}]}}
    diff = only_diff(drain(tracker))
    assert [dict(e.meta) for e in diff.joins] == [{"phx_ref": ref, "name": "x"}]
    meta["name"] = "changed later"
    assert tracker.presences("lobby") == {"u1": {"metas": [{"phx_ref": ref, "name": "x"}]}}


# ---------------------------------------------------------------------------- graceful permdown


def test_graceful_permdown_of_a_peer() -> None:
    cluster = up_cluster("a", "b", "c")
    cluster.track("b", "c1", "lobby", "u1")
    cluster.track("b", "c2", "lobby", "u2")
    cluster.track("b", "c1", "kitchen", "u1")
    cluster.track("a", "c1", "lobby", "mine")
    cluster.advance(PERIOD)
    cluster.events()

    cluster["b"].graceful_permdown(now=cluster.now)
    cluster.pump()  # at once: no time passes
    events = cluster.events()
    assert events["b"] == []  # no local leaves
    for name in ("a", "c"):
        assert summarize(events[name]) == [
            ("down", "b", 1),
            ("diff", "kitchen", (), ("b/c1/u1",)),
            ("diff", "lobby", (), ("b/c1/u1", "b/c2/u2")),
            ("permdown", "b", 1),
        ]
        tracker = cluster[name]
        assert list(tracker.presences("lobby")) == ["mine"]
        assert tracker.presences("kitchen") == {}
        assert sorted(tracker.replicas()) == sorted({"a", "c"} - {name})
        assert all(e.owner != B1 for e in tracker.state.entries())
    assert [s.message for s in cluster.messages(GracefulPermdown)] == [GracefulPermdown(sender=B1)]


def test_graceful_permdown_of_the_only_peer_leaves_an_empty_view() -> None:
    cluster = up_cluster("a", "b")
    cluster.track("b", "c1", "lobby", "u1")
    cluster.advance(PERIOD)
    cluster.events()
    cluster["b"].graceful_permdown(now=cluster.now)
    cluster.pump()
    assert summarize(drain(cluster["a"])) == [
        ("down", "b", 1),
        ("diff", "lobby", (), ("b/c1/u1",)),
        ("permdown", "b", 1),
    ]
    assert cluster["a"].presences("lobby") == {}
    assert cluster["a"].replicas() == {}
    cluster.advance(3.0)
    assert drain(cluster["a"]) == []


def test_a_stopped_tracker_refuses_commands() -> None:
    tracker = make_tracker("b")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=0.0)
    drain(tracker)
    tracker.messages_to_send()
    tracker.graceful_permdown(now=1.0)
    assert tracker.stopped
    goodbye = GracefulPermdown(sender=B1)
    (sent,) = tracker.messages_to_send()
    assert sent == Outbound(message=goodbye, data=encode_message(goodbye))
    assert sent.data == encode_message(goodbye)
    assert tracker.next_deadline() is None
    before = observe(tracker)
    with pytest.raises(LocalProtocolError):
        tracker.track(conn="c2", topic="lobby", key="u2", meta={}, now=1.0)
    with pytest.raises(LocalProtocolError):
        tracker.update(conn="c1", topic="lobby", key="u1", meta={}, now=1.0)
    with pytest.raises(LocalProtocolError):
        tracker.untrack(conn="c1", topic="lobby", key="u1", now=1.0)
    with pytest.raises(LocalProtocolError):
        tracker.untrack_conn(conn="c1", now=1.0)
    with pytest.raises(LocalProtocolError):
        tracker.graceful_permdown(now=1.0)
    # the timer and incoming messages are ignored
    tracker.handle_timer(now=100.0)
    tracker.receive(Heartbeat(sender=A1, clock={A1: 0}), now=100.0)
    tracker.receive(TransferRequest(request_id=1, sender=A1, clock={A1: 0}), now=100.0)
    assert tracker.next_deadline() is None
    assert tracker.messages_to_send() == []
    assert drain(tracker) == []
    assert observe(tracker) == before


# ---------------------------------------------------------------------------- rolling update


def test_rolling_node_update() -> None:
    cluster = up_cluster("a", "b", permdown_period=2.0)
    cluster.track("a", "c1", "lobby", "ua")
    cluster.track("b", "c1", "lobby", "ub")
    cluster.advance(0.5)
    cluster.events()
    last_heard_b = cluster["a"].replicas()["b"].last_heard
    cluster.kill("b")
    cluster.advance(0.6)
    assert summarize(drain(cluster["a"])) == [("down", "b", 1), ("diff", "lobby", (), ("b/c1/ub",))]

    cluster.add("c")
    cluster.advance(3.0)
    assert cluster.now > last_heard_b + 2.0
    requests = cluster.messages(TransferRequest, sender="c")
    assert [r.to for r in requests] == ["a"]  # exactly one, during the whole scenario
    assert cluster.messages(TransferRequest, sender="a") == []
    events = cluster.events()
    assert summarize(events["a"]) == [("up", "c", 1), ("permdown", "b", 1)]
    assert summarize(events["c"]) == [("up", "a", 1), ("diff", "lobby", ("a/c1/ua",), ())]
    assert sorted(cluster["a"].replicas()) == ["c"]
    assert sorted(cluster["c"].replicas()) == ["a"]
    assert list(cluster["c"].presences("lobby")) == ["ua"]


# ---------------------------------------------------------------------------- stale and echoed


def _delta_of(ref: ReplicaRef, key: str) -> Any:
    state = ReplicaState(ref)
    state.join("c1", "lobby", key, {})
    return state.take_delta()


def test_a_heartbeat_from_an_older_incarnation_is_ignored() -> None:
    tracker = make_tracker("a")
    tracker.receive(Heartbeat(sender=B2, clock={B2: 0}), now=1.0)
    assert summarize(drain(tracker)) == [("up", "b", 2)]
    tracker.messages_to_send()
    before = observe(tracker)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 1}, delta=_delta_of(B1, "old")), now=2.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 1}), now=2.0)
    tracker.receive(GracefulPermdown(sender=B1), now=2.0)
    assert summarize(drain(tracker)) == [("rejected", "stale", "b")] * 2
    assert tracker.messages_to_send() == []
    after = observe(tracker)
    assert after["replicas"] == {"b": (B2, ReplicaStatus.UP, 1.0)}
    assert after == before
    assert list(tracker.state.entries()) == []


def test_a_graceful_permdown_of_another_incarnation_is_ignored() -> None:
    tracker = make_tracker("a")
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=1.0)
    drain(tracker)
    tracker.receive(GracefulPermdown(sender=B2), now=1.5)
    tracker.receive(GracefulPermdown(sender=ReplicaRef("zz", 1)), now=1.5)
    assert drain(tracker) == []
    assert tracker.replicas()["b"].status is ReplicaStatus.UP


def test_messages_with_our_own_name_are_ignored() -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="mine", meta={}, now=0.0)
    drain(tracker)
    tracker.messages_to_send()
    before = observe(tracker)
    for vsn in (0, 1, 2):
        me = ReplicaRef("a", vsn)
        tracker.receive(Heartbeat(sender=me, clock={me: 5}, delta=_delta_of(me, "echo")), now=0.0)
        tracker.receive(TransferRequest(request_id=1, sender=me, clock={me: 0}), now=0.0)
        tracker.receive(GracefulPermdown(sender=me), now=0.0)
    assert drain(tracker) == []
    assert tracker.messages_to_send() == []
    assert not tracker.stopped
    assert observe(tracker) == before


def test_a_transfer_request_is_answered_to_its_sender() -> None:
    tracker = make_tracker("a")
    ref = tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=0.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.0)
    tracker.messages_to_send()
    tracker.receive(TransferRequest(request_id=41, sender=B1, clock={B1: 0, A1: 0}), now=0.0)
    (outbound,) = tracker.messages_to_send()
    assert outbound.to == "b"
    assert isinstance(outbound.message, TransferAck)
    assert outbound.message.request_id == 41
    assert outbound.message.sender == A1
    entries = list(outbound.message.payload.entries())
    assert [(e.key, e.meta["phx_ref"]) for e in entries] == [("u1", ref)]


# ---------------------------------------------------------------------------- query shapes


def test_list_get_by_key_count_and_topics_shapes_and_ordering() -> None:
    cluster = up_cluster("a", "b", "c")

    def meta(who: str) -> dict[str, JSONValue]:
        return {"who": who}

    # stored in an order that is neither key order nor owner order
    refs = {
        "c/c1/zed": cluster.track("c", "c1", "lobby", "zed", meta("c/c1")),
        "b/c0/amy": cluster.track("b", "c0", "lobby", "amy", meta("b/c0")),
        "a/c2/amy": cluster.track("a", "c2", "lobby", "amy", meta("a/c2")),
        "a/c1/amy": cluster.track("a", "c1", "lobby", "amy", meta("a/c1")),
        "a/c1/bob": cluster.track("a", "c1", "lobby", "bob", meta("a/c1")),
        "a/c10/amy": cluster.track("a", "c10", "lobby", "amy", meta("a/c10")),
    }
    cluster.track("b", "c0", "kitchen", "amy")
    cluster.track("c", "c0", "attic", "amy")
    cluster.advance(PERIOD)

    def m(ident: str) -> dict[str, JSONValue]:
        owner, conn, _ = ident.split("/")
        return {"who": f"{owner}/{conn}", "phx_ref": refs[ident]}

    expected = {
        "amy": {"metas": [m("a/c1/amy"), m("a/c10/amy"), m("a/c2/amy"), m("b/c0/amy")]},
        "bob": {"metas": [m("a/c1/bob")]},
        "zed": {"metas": [m("c/c1/zed")]},
    }
    for tracker in cluster:
        listed = tracker.presences("lobby")
        assert listed == expected
        assert list(listed) == ["amy", "bob", "zed"]
        assert [[x["who"] for x in v["metas"]] for v in listed.values()] == [
            ["a/c1", "a/c10", "a/c2", "b/c0"],
            ["a/c1"],
            ["c/c1"],
        ]
        assert tracker.get_by_key("lobby", "amy") == expected["amy"]
        assert tracker.get_by_key("lobby", "nobody") == {"metas": []}
        assert tracker.get_by_key("nowhere", "amy") == {"metas": []}
        assert tracker.count("lobby") == 6
        assert tracker.count("kitchen") == 1
        assert tracker.count("nowhere") == 0
        assert tracker.presences("nowhere") == {}
        assert tracker.topics() == ["attic", "kitchen", "lobby"]

    # entries of a down replica are hidden from every query
    cluster.kill("c")
    cluster.advance(DOWN + 0.3)
    a = cluster["a"]
    assert list(a.presences("lobby")) == ["amy", "bob"]
    assert a.count("lobby") == 5
    assert a.topics() == ["kitchen", "lobby"]
    assert a.presences("attic") == {}


BAD_ARGUMENTS: list[dict[str, object]] = [
    {"conn": 1},
    {"topic": None},
    {"key": b"u1"},
]
UNHASHABLE = [{"conn": ["c1"]}, {"topic": ["lobby"]}, {"key": ["u1"]}]


def _bad_argument_calls(tracker: Any, options: dict[str, object]) -> list[Any]:
    args: dict[str, Any] = {"conn": "c1", "topic": "lobby", "key": "u1", **options}
    return [
        lambda: tracker.track(meta={}, now=1.0, **args),
        lambda: tracker.update(meta={}, now=1.0, **args),
        lambda: tracker.untrack(now=1.0, **args),
    ]


@pytest.mark.parametrize(
    "options",
    [
        *BAD_ARGUMENTS,
        *UNHASHABLE,
    ],
    ids=repr,
)
def test_wrong_argument_types_are_local_protocol_errors(options: dict[str, object]) -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=1.0)
    drain(tracker)
    before = observe(tracker)
    for call in _bad_argument_calls(tracker, options):
        with pytest.raises(LocalProtocolError):
            call()
    assert observe(tracker) == before
    assert drain(tracker) == []


@pytest.mark.parametrize("meta", [None, "x", ["a"], {1: "a"}, {"a": {1, 2}}, {"f": float("nan")}])
def test_a_meta_json_cannot_carry_is_refused(meta: Any) -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=1.0)
    drain(tracker)
    before = observe(tracker)
    with pytest.raises(LocalProtocolError):
        tracker.track(conn="c2", topic="lobby", key="u1", meta=meta, now=1.0)
    with pytest.raises(LocalProtocolError):
        tracker.update(conn="c1", topic="lobby", key="u1", meta=meta, now=1.0)
    with pytest.raises(LocalProtocolError):
        tracker.update(conn="c1", topic="lobby", key="u1", meta=lambda m: meta, now=1.0)
    assert observe(tracker) == before
    assert drain(tracker) == []


# ---------------------------------------------------------------------------- wire


def test_bytes_round_trip_through_the_codec_and_garbage_is_refused() -> None:

    sender = make_tracker("a")
    receiver = make_tracker("b", seed=1)
    ref = sender.track(conn="c1", topic="lobby", key="u1", meta={"n": 1}, now=0.0)
    deadline = sender.next_deadline()
    assert deadline is not None
    sender.handle_timer(now=deadline)
    (outbound,) = sender.messages_to_send()
    assert isinstance(outbound.message, Heartbeat)
    receiver.receive(encode_message(outbound.message), now=1.0)
    assert summarize(drain(receiver)) == [("up", "a", 1), ("diff", "lobby", ("a/c1/u1",), ())]
    assert receiver.presences("lobby") == {"u1": {"metas": [{"n": 1, "phx_ref": ref}]}}
    receiver.messages_to_send()

    before = observe(receiver)
    for garbage in (b"", b"\x00garbage\xff", b"{}", b"[1,2,3]", b'{"v": 999}'):
        with pytest.raises(RemoteProtocolError):
            receiver.receive(garbage, now=2.0)
        with pytest.raises(RemoteProtocolError):
            receiver.receive(bytearray(garbage), now=2.0)
    assert observe(receiver) == before
    assert drain(receiver) == []
    assert receiver.messages_to_send() == []
    # the refused bytes did not move the clock: an earlier time is still accepted
    receiver.handle_timer(now=1.0)


def test_receive_refuses_what_is_not_a_message() -> None:
    tracker = make_tracker("a")
    for bad in ("heartbeat", 42, None, {"sender": "b"}, Entry("t", "k", "c", {}, B1, 1)):
        with pytest.raises(LocalProtocolError):
            tracker.receive(bad, now=1.0)  # type: ignore[arg-type]
    assert tracker.next_deadline() is None  # the clock did not start


def test_queries_return_equal_results_on_every_replica_after_quiescence() -> None:
    cluster = up_cluster("a", "b", "c")
    for i, name in enumerate(["c", "a", "b", "a", "c"]):
        cluster.track(name, f"conn{i}", "lobby", f"k{i % 2}", {"i": i})
    cluster.advance(1.0)
    lists: list[Mapping[str, Any]] = [t.presences("lobby") for t in cluster]
    assert lists[0] == lists[1] == lists[2]
    ids = [sorted(entry_id(e) for e in t.state.visible_entries()) for t in cluster]
    assert ids[0] == ids[1] == ids[2]
    assert len(ids[0]) == 5


def _transfer_targets(tracker: Tracker, until: float) -> list[str | None]:
    targets: list[str | None] = []
    now = 0.01
    while now < until:
        tracker.handle_timer(now=now)
        targets.extend(
            out.to for out in tracker.messages_to_send() if isinstance(out.message, TransferRequest)
        )
        now = round(now + 0.05, 2)
    return targets


def test_a_retired_incarnation_attracts_no_transfer_request() -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=0.0)
    old, new = ReplicaRef("b", 1), ReplicaRef("b", 2)
    tracker.receive(Heartbeat(sender=old, clock={old: 5}), now=0.001)
    tracker.receive(Heartbeat(sender=new, clock={new: 3}), now=0.002)
    # Only the current incarnation of "b" is asked, once per sampling round.
    assert _transfer_targets(tracker, 0.3) == ["b"]


def test_a_late_heartbeat_does_not_revive_a_departed_replica() -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=0.0)
    b = ReplicaRef("b", 1)
    tracker.receive(Heartbeat(sender=b, clock={b: 0}), now=0.01)
    tracker.receive(GracefulPermdown(sender=b), now=0.02)
    drain(tracker)
    tracker.receive(Heartbeat(sender=b, clock={b: 0}), now=0.03)
    assert summarize(drain(tracker)) == [("rejected", "stale", "b")]
    assert tracker.replicas() == {}
    # A new incarnation of the same node is welcome.
    b2 = ReplicaRef("b", 2)
    tracker.receive(Heartbeat(sender=b2, clock={b2: 0}), now=0.04)
    assert drain(tracker) == [ReplicaUp(replica=b2)]


@pytest.mark.parametrize(
    "arguments",
    [
        {"conn": "c\ud800"},
        {"topic": "lobby\udfff"},
        {"key": "\ud800"},
        {"meta": {"name": "\ud800"}},
        {"meta": {"\udfff": 1}},
        {"meta": {"nested": ["ok", {"deep": "\ud800"}]}},
    ],
    ids=repr,
)
def test_strings_utf8_cannot_carry_are_refused(arguments: dict[str, Any]) -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={}, now=1.0)
    drain(tracker)
    before = observe(tracker)
    call: dict[str, Any] = {"conn": "c2", "topic": "lobby", "key": "u2", "meta": {}, **arguments}
    with pytest.raises(LocalProtocolError, match="not valid Unicode"):
        tracker.track(now=2.0, **call)
    assert observe(tracker) == before
    assert drain(tracker) == []


NOT_A_REF: Any = "b"


@pytest.mark.parametrize(
    "build",
    [
        lambda: TransferRequest(request_id=-1, sender=B1, clock={}),
        lambda: TransferRequest(request_id=True, sender=B1, clock={}),
        lambda: Heartbeat(sender=B1, clock={B1: -1}),
        lambda: Heartbeat(sender=B1, clock={NOT_A_REF: 1}),
    ],
)
def test_messages_refuse_malformed_fields(build: Any) -> None:
    with pytest.raises(InvalidArgument):
        build()


def test_receive_takes_a_memoryview_of_encoded_bytes() -> None:
    sender = make_tracker("b")
    sender.handle_timer(now=0.0)
    sender.handle_timer(now=1.0)
    (outbound,) = sender.messages_to_send()
    receiver = make_tracker("a")
    receiver.receive(memoryview(encode_message(outbound.message)), now=1.0)
    assert drain(receiver) == [ReplicaUp(replica=sender.replica)]
