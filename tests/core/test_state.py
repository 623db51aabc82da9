"""ReplicaState, the presence CRDT (SPEC §4), through its public API.

The first part restates every case of Phoenix's ``state_test.exs`` (SPEC §7.1) in our own terms.
Phoenix keys entries by a globally unique pid; presence-core keys them by
``(owner, conn, topic, key)`` with conn ids unique only within their replica, and only the owner
ever leaves its entries. Where an upstream case has one node leave another node's pid, the owner
leaves it here and a third replica relays the tombstone.

The second part covers what presence-core adds or pins down: the duplicate guard, errors and their
atomicity, the pending delta, gaps, down replicas and argument validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from helpers import by_dot, observe_state, state_cluster
from presence_core import (
    AlreadyTracked,
    Delta,
    Entry,
    InvalidArgument,
    LocalProtocolError,
    MergeResult,
    NoPresence,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    dominates,
    merge_deltas,
)

A = ReplicaRef("a", 1)
B = ReplicaRef("b", 1)
C = ReplicaRef("c", 1)

Dots = list[tuple[str, int]]


# ---------------------------------------------------------------------------- helpers


def pull(into: ReplicaState, source: ReplicaState) -> MergeResult:
    """``into`` merges the full state of ``source`` extracted for its whole context."""
    return into.merge(source.extract(into.replica, into.context))


def keys(entries: Iterable[Entry]) -> list[str]:
    return sorted(entry.key for entry in entries)


def dots(clouds: Mapping[ReplicaRef, Iterable[int]]) -> Dots:
    return sorted((replica.name, dot) for replica, cloud in clouds.items() for dot in cloud)


# ---------------------------------------------------------------------------- SPEC §7.1


def test_a_fresh_state_extracts_nothing_for_itself() -> None:
    a = ReplicaState(A)
    snapshot = a.extract(a.replica, a.context)
    assert dict(snapshot.values) == {}
    assert list(snapshot.entries()) == []
    assert dict(snapshot.context) == {A: 0}


def test_user_added_online_is_online() -> None:
    a = ReplicaState(A)
    a.join("c-john", "lobby", "john", {})
    assert [(e.key, e.meta) for e in a.get_by_topic("lobby")] == [("john", {})]
    a.leave("c-john", "lobby", "john")
    assert a.get_by_topic("lobby") == []


def test_users_from_other_servers_merge() -> None:
    a, b = state_cluster(A, B)

    assert a.get_by_conn("c-alice") == []
    alice = a.join("c-alice", "lobby", "alice", {})
    assert a.get_by_conn("c-alice") == [alice]
    bob = b.join("c-bob", "lobby", "bob", {})

    # a learns bob, and only bob.
    assert pull(a, b) == MergeResult(joins=(bob,))
    assert keys(a.get_by_topic("lobby")) == ["alice", "bob"]
    assert a.get_by_conn("c-bob", owner=B) == [bob]

    # Merging the same extract again reports nothing and changes nothing.
    before = observe_state(a)
    assert pull(a, b) == MergeResult()
    assert observe_state(a) == before

    # And the other way round.
    assert pull(b, a) == MergeResult(joins=(alice,))
    before = observe_state(b)
    assert pull(b, a) == MergeResult()
    assert observe_state(b) == before

    # An observed remove: alice leaves on a, b learns it and drops exactly her row.
    assert a.leave("c-alice", "lobby", "alice") == alice
    assert a.get_by_conn("c-alice") == []
    assert b.get(conn="c-alice", topic="lobby", key="alice", owner=A) == alice
    assert pull(b, a) == MergeResult(leaves=(alice,))
    assert b.get("c-alice", "lobby", "alice", owner=A) is None
    assert b.get_by_conn("c-bob") == [bob]
    assert keys(b.get_by_topic("lobby")) == ["bob"]
    before = observe_state(b)
    assert pull(b, a) == MergeResult()
    assert observe_state(b) == before

    carol = b.join("c-carol", "lobby", "carol", {})
    assert keys(b.get_by_topic("lobby")) == ["bob", "carol"]
    assert pull(a, b) == MergeResult(joins=(carol,))
    assert pull(a, b) == MergeResult()
    assert by_dot(a.get_by_topic("lobby")) == by_dot(b.get_by_topic("lobby"))

    # A remote update is one leave (old meta) and one join (new meta) of the same presence.
    old, new = b.update("c-carol", "lobby", "carol", {"updated": True})
    assert old == carol
    result = pull(a, b)
    assert result == MergeResult(joins=(new,), leaves=(carol,))
    assert result.joins[0].meta == {"updated": True}
    assert a.get_by_conn("c-carol", owner=B) == [new]
    assert pull(a, b) == MergeResult()
    assert by_dot(a.get_by_topic("lobby")) == by_dot(b.get_by_topic("lobby"))


def test_basic_netsplit() -> None:
    a, b = state_cluster(A, B)
    a.join("c-alice", "lobby", "alice", {})
    bob = b.join("c-bob", "lobby", "bob", {})
    assert pull(a, b).joins == (bob,)
    assert keys(a.get_by_topic("lobby")) == ["alice", "bob"]

    a.join("c-carol", "lobby", "carol", {})
    a.leave("c-alice", "lobby", "alice")
    a.join("c-david", "lobby", "david", {})

    assert a.replica_down(B) == (bob,)
    assert keys(a.get_by_topic("lobby")) == ["carol", "david"]

    # b's state brings nothing new while it is down.
    assert pull(a, b) == MergeResult()
    assert keys(a.get_by_topic("lobby")) == ["carol", "david"]

    assert a.replica_up(B) == (bob,)
    assert keys(a.get_by_topic("lobby")) == ["bob", "carol", "david"]


def test_joins_are_observed_via_other_node() -> None:
    a, b, c = state_cluster(A, B, C)
    alice = a.join("c-alice", "lobby", "alice", {})
    # Only so that c has some context of a.
    assert pull(c, a) == MergeResult(joins=(alice,))

    # Netsplit between a and c.
    assert a.replica_down(C) == ()
    assert c.replica_down(A) == (alice,)

    bob = a.join("c-bob", "lobby", "bob", {})
    result = pull(b, a)
    assert by_dot(result.joins) == by_dot([alice, bob])
    assert result.leaves == ()

    # c learns bob through b. At State level a join of a replica c considers down is still
    # accepted and reported; it stays hidden from queries until a comes back up.
    assert pull(c, b) == MergeResult(joins=(bob,))
    assert c.get_by_topic("lobby") == []
    assert c.get("c-bob", "lobby", "bob", owner=A) == bob
    assert by_dot(c.replica_up(A)) == by_dot([alice, bob])

    # What a tracker sends is filtered by the clocks c announces, which omit down replicas: then
    # nothing of a comes through at all.
    c.replica_down(A)
    assert list(b.extract(C, c.clocks()[1]).entries()) == []


def test_removes_are_observed_via_other_node() -> None:
    a, b, c = state_cluster(A, B, C)
    alice = a.join("c-alice", "lobby", "alice", {})
    assert pull(c, a).joins == (alice,)

    a.replica_down(C)
    c.replica_down(A)

    bob = a.join("c-bob", "lobby", "bob", {})
    assert by_dot(pull(b, a).joins) == by_dot([alice, bob])
    assert pull(c, b) == MergeResult(joins=(bob,))

    # bob's owner removes him; b sees it from a, and c sees it from b.
    a.leave("c-bob", "lobby", "bob")
    assert pull(b, a) == MergeResult(leaves=(bob,))
    assert pull(c, b) == MergeResult(leaves=(bob,))
    assert c.get("c-bob", "lobby", "bob", owner=A) is None
    assert c.get("c-alice", "lobby", "alice", owner=A) == alice


def test_get_by_conn() -> None:
    state = ReplicaState(A)
    assert state.get_by_conn("conn") == []

    state.join("conn", "topic", "key1", {})
    [entry] = state.get_by_conn("conn")
    assert (entry.topic, entry.conn, entry.key, entry.meta) == ("topic", "conn", "key1", {})
    assert entry.owner == A
    assert entry.dot == (A, 1)

    assert state.get("conn", "topic", "key1") == entry
    assert state.get("conn", "topic", "key1", owner=A) == entry
    assert state.get("conn", "notopic", "key1") is None
    assert state.get("conn", "notopic", "nokey") is None
    assert state.get("noconn", "topic", "key1") is None
    assert state.get_by_conn("conn", owner=B) == []


def test_get_by_key() -> None:
    state = ReplicaState(A)
    assert state.get_by_key("topic", "key1") == []

    state.join("browser-conn", "topic", "key1", {"device": "browser"})
    state.join("ios-conn", "topic", "key1", {"device": "ios"})
    state.join("ios-conn", "topic", "key2", {"device": "ios"})

    assert [(e.conn, e.meta) for e in state.get_by_key("topic", "key1")] == [
        ("browser-conn", {"device": "browser"}),
        ("ios-conn", {"device": "ios"}),
    ]
    assert state.get_by_key("another_topic", "key1") == []
    assert state.get_by_key("topic", "another_key") == []


def test_get_by_topic() -> None:
    n1, n2, n3 = ReplicaRef("node1", 1), ReplicaRef("node2", 1), ReplicaRef("node3", 1)
    s1, s2, s3 = state_cluster(n1, n2, n3)
    for state in (s1, s2, s3):
        assert state.context == {n1: 0, n2: 0, n3: 0}

    assert s1.get_by_topic("topic") == []
    s1.join("conn", "topic", "key1", {})
    s1.join("conn", "topic", "key2", {})
    s2.join("user2-conn", "topic", "user2", {})
    s3.join("user3-conn", "topic", "user3", {})
    assert keys(s1.get_by_topic("topic")) == ["key1", "key2"]

    pull(s1, s2)
    pull(s1, s3)
    assert keys(s1.get_by_topic("topic")) == ["key1", "key2", "user2", "user3"]
    assert all(entry.meta == {} for entry in s1.get_by_topic("topic"))

    # One replica down, then two.
    s1.replica_down(n2)
    assert keys(s1.get_by_topic("topic")) == ["key1", "key2", "user3"]
    s1.replica_down(n3)
    assert keys(s1.get_by_topic("topic")) == ["key1", "key2"]

    assert s1.get_by_topic("another:topic") == []


def test_remove_down_replica() -> None:
    n1, n2 = ReplicaRef("node1", 1), ReplicaRef("node2", 1)
    s1, s2 = state_cluster(n1, n2)
    alice = s1.join("c-alice", "lobby", "alice", {})
    bob = s2.join("c-bob", "lobby", "bob", {})
    pull(s2, s1)
    assert keys(s2.get_by_topic("lobby")) == ["alice", "bob"]

    # Down: hidden but kept.
    s2.replica_down(n1)
    assert s2.get("c-alice", "lobby", "alice", owner=n1) == alice
    assert by_dot(s2.entries()) == by_dot([alice, bob])

    # Removed: gone for good, and marking it up again does not bring alice back.
    assert s2.remove_down_replica(n1) == (alice,)
    assert s2.get("c-alice", "lobby", "alice", owner=n1) is None
    assert list(s2.entries()) == [bob]
    assert s2.replica_up(n1) == ()
    assert keys(s2.get_by_topic("lobby")) == ["bob"]


def test_basic_deltas() -> None:
    a, b = state_cluster(A, B)
    alice = a.join("c-alice", "lobby", "alice", {})
    b.join("c-bob", "lobby", "bob", {})

    assert b.merge(a.pending_delta) == MergeResult(joins=(alice,))
    assert b.clocks() == (B, {A: 1, B: 1})

    a.reset_delta()
    a.leave("c-alice", "lobby", "alice")
    assert b.merge(a.pending_delta) == MergeResult(leaves=(alice,))
    assert b.clocks() == (B, {A: 2, B: 1})

    again = a.join("c-alice", "lobby", "alice", {})
    assert b.merge(a.pending_delta) == MergeResult(joins=(again,))
    assert b.clocks() == (B, {A: 3, B: 1})
    # Everything folded into the context.
    assert b.clouds == {}


def test_deltas_are_not_merged_for_non_contiguous_ranges() -> None:
    s1 = ReplicaState(ReplicaRef("s1", 1))
    s1.join("p1", "lobby", "user1", {})
    early = s1.pending_delta  # range 0 -> 1
    s1.join("p2", "lobby", "user2", {})
    s1.reset_delta()
    s1.join("p3", "lobby", "user3", {})
    late = s1.pending_delta  # range 2 -> 3: dot 2 is in neither

    assert merge_deltas(early, late) is None
    assert merge_deltas(late, early) is None


def test_extracted_state_context_contains_only_replicas_known_to_remote_replica() -> None:
    r1, r2, r3 = ReplicaRef("s1", 1), ReplicaRef("s2", 1), ReplicaRef("s3", 1)
    s1, s2, s3 = ReplicaState(r1), ReplicaState(r2), ReplicaState(r3)
    s1.replica_up(r2)
    s2.replica_up(r1)
    s2.replica_up(r3)
    s1.join("p1", "lobby", "user1", {})
    s2.join("p2", "lobby", "user2", {})
    s3.join("p3", "lobby", "user3", {})
    s1.merge(s2.pending_delta)
    s2.merge(s1.pending_delta)
    s2.merge(s3.pending_delta)

    snapshot = s2.extract(r1, s1.context)
    assert dict(snapshot.context) == {r1: 1, r2: 1}
    assert keys(snapshot.entries()) == ["user2"]


def test_merging_deltas() -> None:
    r1, r2 = ReplicaRef("s1", 1), ReplicaRef("s2", 1)
    s1, s2 = ReplicaState(r1), ReplicaState(r2)
    u1_lobby = s1.join("u1", "lobby", "user1", {})
    u1_private = s1.join("u1", "private", "user1", {})
    u2_lobby = s2.join("u2", "lobby", "user2", {})
    u2_private = s2.join("u2", "private", "user2", {})

    merged = merge_deltas(s1.pending_delta, s2.pending_delta)
    assert merged is not None
    assert merged.values == {
        r1: {1: u1_lobby, 2: u1_private},
        r2: {1: u2_lobby, 2: u2_private},
    }
    assert dots(merged.clouds) == [("s1", 1), ("s1", 2), ("s2", 1), ("s2", 2)]


def test_merging_deltas_with_removes() -> None:
    r1, r2 = ReplicaRef("s1", 1), ReplicaRef("s2", 1)
    s1, s2 = state_cluster(r1, r2)

    # A concurrent add wins over a remove of another dot.
    lobby = s1.join("u1", "lobby", "user1", {})
    private = s1.join("u1", "private", "user1", {})
    s2.join("u1", "lobby", "user1", {})
    s2.leave("u1", "lobby", "user1")
    first = s1.take_delta()

    merged = merge_deltas(first, s2.pending_delta)
    assert merged is not None
    assert merged.values == {r1: {1: lobby, 2: private}}
    assert dots(merged.clouds) == [("s1", 1), ("s1", 2), ("s2", 1), ("s2", 2)]

    # Merging a delta already included changes nothing.
    assert merge_deltas(merged, s2.pending_delta) == merged

    # An observed remove: s1 leaves "private" and s2, having relayed that removal, carries its
    # tombstone. The merged delta drops the value but keeps every dot.
    s2.merge(first)
    s1.leave("u1", "private", "user1")
    assert s2.merge(s1.take_delta()) == MergeResult(leaves=(private,))
    merged = merge_deltas(first, s2.pending_delta)
    assert merged is not None
    assert merged.values == {r1: {1: lobby}}
    assert dots(merged.clouds) == [("s1", 1), ("s1", 2), ("s2", 1), ("s2", 2)]


# ---------------------------------------------------------------------------- local operations


def test_joining_the_same_presence_twice_raises_already_tracked_and_changes_nothing() -> None:
    a = ReplicaState(A)
    a.join("c1", "lobby", "u1", {"n": 1})
    before = observe_state(a)
    with pytest.raises(AlreadyTracked) as info:
        a.join("c1", "lobby", "u1", {"n": 2})
    assert (info.value.conn, info.value.topic, info.value.key) == ("c1", "lobby", "u1")
    assert isinstance(info.value, LocalProtocolError)
    assert observe_state(a) == before

    # Another key, topic or conn is another presence.
    a.join("c1", "lobby", "u2", {})
    a.join("c1", "other", "u1", {})
    a.join("c2", "lobby", "u1", {})
    assert len(a) == 4


def test_joining_a_conn_id_that_another_replica_uses_is_fine() -> None:
    a, b = state_cluster(A, B)
    theirs = b.join("c1", "lobby", "u1", {})
    pull(a, b)
    mine = a.join("c1", "lobby", "u1", {})
    assert a.get("c1", "lobby", "u1") == mine
    assert a.get("c1", "lobby", "u1", owner=B) == theirs


def test_update_of_an_absent_presence_raises_no_presence_and_changes_nothing() -> None:
    a, b = state_cluster(A, B)
    b.join("c1", "lobby", "u1", {})
    pull(a, b)
    a.join("c1", "lobby", "other", {})
    before = observe_state(a)
    for conn, topic, key in [("c9", "lobby", "u1"), ("c1", "nope", "u1"), ("c1", "lobby", "u1")]:
        # The last one exists, but it is b's: a can only update its own presences.
        with pytest.raises(NoPresence) as info:
            a.update(conn, topic, key, {"n": 1})
        assert (info.value.conn, info.value.topic, info.value.key) == (conn, topic, key)
    assert observe_state(a) == before


def test_leave_of_an_absent_presence_is_a_no_op_without_a_dot() -> None:
    a, b = state_cluster(A, B)
    theirs = b.join("c1", "lobby", "u1", {})
    pull(a, b)
    a.join("c1", "lobby", "mine", {})
    a.take_delta()
    before = observe_state(a)
    assert a.leave("c1", "lobby", "nobody") is None
    assert a.leave("c2", "lobby", "mine") is None
    # b's presence is not a's to remove.
    assert a.leave("c1", "lobby", "u1") is None
    assert a.get("c1", "lobby", "u1", owner=B) == theirs
    assert observe_state(a) == before
    assert not a.has_delta()


def test_leave_conn_removes_every_presence_of_the_conn_one_dot_each() -> None:
    a, b = state_cluster(A, B)
    b.join("c1", "lobby", "theirs", {})
    pull(a, b)
    first = a.join("c1", "lobby", "u1", {})
    second = a.join("c1", "room", "u1", {})
    third = a.join("c1", "lobby", "u2", {})
    kept = a.join("c2", "lobby", "u1", {})
    a.take_delta()

    assert a.leave_conn("c1") == (first, second, third)
    assert a.clock == 7
    assert a.get_by_conn("c1") == []
    assert a.get_by_conn("c2") == [kept]
    assert keys(a.get_by_topic("lobby")) == ["theirs", "u1"]
    assert a.get_by_conn("c1", owner=B) != []

    delta = a.pending_delta
    assert dots(delta.clouds) == [("a", 1), ("a", 2), ("a", 3), ("a", 5), ("a", 6), ("a", 7)]
    assert dict(delta.values) == {}

    # Nothing left: no dot.
    assert a.leave_conn("c1") == ()
    assert a.leave_conn("never") == ()
    assert a.clock == 7

    # b never saw the removed entries: the tombstones are no news to it, the survivor is.
    assert b.merge(a.take_delta()) == MergeResult()
    assert pull(b, a) == MergeResult(joins=(kept,))
    assert keys(b.get_by_topic("lobby")) == ["theirs", "u1"]


def test_leave_conn_is_seen_remotely_as_leaves() -> None:
    a, b = state_cluster(A, B)
    first = a.join("c1", "lobby", "u1", {})
    second = a.join("c1", "room", "u1", {})
    b.merge(a.take_delta())
    a.leave_conn("c1")
    result = b.merge(a.take_delta())
    assert result.joins == ()
    assert by_dot(result.leaves) == by_dot([first, second])
    assert list(b.entries()) == []


def test_update_uses_two_dots_and_replaces_the_row_in_place() -> None:
    a = ReplicaState(A)
    a.join("c0", "lobby", "other", {})
    entry = a.join("c1", "lobby", "u1", {"v": 1})
    old, new = a.update("c1", "lobby", "u1", {"v": 2})
    assert old == entry
    assert (new.conn, new.topic, new.key, new.meta, new.owner) == ("c1", "lobby", "u1", {"v": 2}, A)
    assert new.clock == entry.clock + 2 == a.clock == 4
    assert a.get_by_conn("c1") == [new]
    assert a.count("lobby") == 2


def test_update_in_one_window_then_leave_in_the_next() -> None:
    # The example of SPEC §4.2.
    a = ReplicaState(A)
    a.join("c1", "lobby", "u1", {})
    _, new = a.update("c1", "lobby", "u1", {"v": 2})
    delta = a.take_delta()
    assert delta.values == {A: {3: new}}
    assert dots(delta.clouds) == [("a", 1), ("a", 2), ("a", 3)]
    assert (delta.start, delta.end) == ({A: 0}, {A: 3})

    a.leave("c1", "lobby", "u1")
    delta = a.take_delta()
    assert delta.values == {}
    assert dots(delta.clouds) == [("a", 3), ("a", 4)]
    assert (delta.start, delta.end) == ({A: 3}, {A: 4})


@pytest.mark.parametrize("via", ["delta", "extract"])
def test_a_remote_update_is_one_leave_and_one_join(via: str) -> None:
    a, b = state_cluster(A, B)
    entry = a.join("c1", "lobby", "u1", {"v": 1})
    b.merge(a.take_delta())
    _, new = a.update("c1", "lobby", "u1", {"v": 2})
    result = b.merge(a.take_delta()) if via == "delta" else pull(b, a)
    assert result == MergeResult(joins=(new,), leaves=(entry,))
    assert b.get_by_conn("c1", owner=A) == [new]
    assert b.count("lobby") == 1


# ---------------------------------------------------------------------------- queries and down


def test_clocks_omit_down_replicas_but_the_context_keeps_them() -> None:
    a, b, _ = state_cluster(A, B, C)
    b.join("c1", "lobby", "u1", {})
    pull(a, b)
    assert a.clocks() == (A, {A: 0, B: 1, C: 0})
    a.replica_down(B)
    assert a.clocks() == (A, {A: 0, C: 0})
    assert a.up_context == {A: 0, C: 0}
    assert a.context == {A: 0, B: 1, C: 0}
    assert (a.clock_of(A), a.clock_of(B), a.clock_of(ReplicaRef("x", 1))) == (0, 1, None)
    with pytest.raises(LocalProtocolError, match="replica must be a ReplicaRef"):
        a.clock_of(("b", 1))  # type: ignore[arg-type]
    a.up_context[C] = 99  # a new dict each time: the caller's to change
    assert a.up_context == {A: 0, C: 0}
    a.replica_up(B)
    assert a.clocks() == (A, {A: 0, B: 1, C: 0})
    assert a.up_context == a.context


def test_queries_hide_the_entries_of_down_replicas() -> None:
    a, b = state_cluster(A, B)
    mine = a.join("c1", "lobby", "u1", {})
    theirs = b.join("c1", "lobby", "u1", {"b": True})
    only_theirs = b.join("c2", "room", "u2", {})
    pull(a, b)
    assert a.topics() == ["lobby", "room"]

    assert a.replica_down(B) == (theirs, only_theirs)
    assert a.is_down(B)
    assert a.get_by_topic("lobby") == [mine]
    assert a.get_by_topic("room") == []
    assert a.get_by_key("lobby", "u1") == [mine]
    assert a.get_by_conn("c1", owner=B) == []
    assert a.get_by_conn("c1") == [mine]
    assert a.count("lobby") == 1
    assert a.count("room") == 0
    assert a.topics() == ["lobby"]
    assert list(a.visible_entries()) == [mine]

    # Hidden, not gone.
    assert len(a) == 3
    assert by_dot(a.entries()) == by_dot([mine, theirs, only_theirs])
    assert a.get("c1", "lobby", "u1", owner=B) == theirs

    assert by_dot(a.replica_up(B)) == by_dot([theirs, only_theirs])
    assert a.count("lobby") == 2
    assert a.topics() == ["lobby", "room"]


def test_replica_status_results() -> None:
    a, b = state_cluster(A, B)
    fresh = ReplicaRef("d", 7)
    assert a.replica_up(fresh) == ()
    assert a.replicas() == {A: True, B: True, fresh: True}
    assert a.context[fresh] == 0

    entry = b.join("c1", "lobby", "u1", {})
    pull(a, b)
    assert a.replica_down(B) == (entry,)
    assert a.replica_down(B) == (entry,)  # asking twice reports the same entries
    assert a.replicas() == {A: True, B: False, fresh: True}
    assert a.down_replicas() == frozenset({B})
    assert a.replica_up(B) == (entry,)
    assert a.down_replicas() == frozenset()

    a.replica_down(B)
    assert a.remove_down_replica(B) == (entry,)
    assert B not in a.context
    assert B not in a.replicas()
    assert a.down_replicas() == frozenset()
    assert len(a) == 0
    assert a.topics() == []
    # Removing a replica that is not there is harmless.
    assert a.remove_down_replica(ReplicaRef("zz", 1)) == ()
    assert a.replica_down(ReplicaRef("zz", 1)) == ()


def test_remove_down_replica_forgets_its_clouds_and_tombstones() -> None:
    a, b, c = state_cluster(A, B, C)
    b.join("c1", "lobby", "u1", {})
    b.join("c2", "lobby", "u2", {})
    c.merge(b.take_delta())
    b.leave("c1", "lobby", "u1")
    c.merge(b.take_delta())  # c now gossips b's tombstone
    b.leave("c2", "lobby", "u2")
    b.take_delta()
    b.join("c3", "lobby", "u3", {})
    a.merge(b.take_delta())  # a: b's dot 5 parked beyond a gap
    assert dots(a.clouds) == [("b", 5)]
    assert B in c.pending_delta.clouds

    a.replica_down(B)
    a.remove_down_replica(B)
    c.replica_down(B)
    c.remove_down_replica(B)
    assert a.clouds == {}
    assert B not in a.context
    assert B not in c.pending_delta.clouds
    assert B not in c.pending_delta.end


def test_entries_of_an_unknown_replica_are_ignored() -> None:
    a = ReplicaState(A)
    c = ReplicaState(C)
    a.join("c1", "lobby", "u1", {})
    delta = a.take_delta()
    assert c.merge(delta) == MergeResult()
    assert A not in c.context
    assert c.clouds == {}
    assert list(c.entries()) == []
    assert c.merge(a.extract(C, {A: 1, C: 0})) == MergeResult()
    assert list(c.entries()) == []

    c.replica_up(A)
    assert [e.key for e in c.merge(delta).joins] == ["u1"]
    assert c.context[A] == 1


# ---------------------------------------------------------------------------- extract and merge


def test_extract_carries_only_replicas_the_remote_knows_and_never_its_own_entries() -> None:
    a, b, c = state_cluster(A, B, C)
    b_entry = b.join("c1", "lobby", "b", {})
    c.join("c1", "lobby", "c", {})
    a_entry = a.join("c1", "lobby", "a", {})
    pull(a, b)
    pull(a, c)

    # c knows everyone: it gets a's and b's entries but not its own.
    for_c = a.extract(C, c.clocks()[1])
    assert isinstance(for_c, Snapshot)
    assert for_c.replica == A
    assert by_dot(for_c.entries()) == by_dot([a_entry, b_entry])
    assert dict(for_c.context) == {A: 1, B: 1, C: 1}

    # A requester that only knows itself and a gets neither b's entries nor b's context.
    only_a = a.extract(C, {A: 0, C: 0})
    assert list(only_a.entries()) == [a_entry]
    assert set(only_a.context) == {A, C}
    assert B not in only_a.clouds

    # A requester that considers b down announces a clock without b.
    c.replica_down(B)
    assert B not in a.extract(C, c.clocks()[1]).values


def test_extract_lists_our_entries_in_clock_order_whatever_their_topics() -> None:
    # Made across interleaved topics, with an update and a leave on the way: stored topic by
    # topic, extracted in the order they were made (a receiver reads memory in sequence).
    a, b = state_cluster(A, B)
    for i in range(4):
        for topic in ("t2", "t0", "t1"):
            a.join(f"c{i}", topic, f"u{i}", {})
    a.update("c0", "t2", "u0", {"away": True})
    a.leave("c1", "t0", "u1")
    a.join("c9", "t0", "u9", {})

    ours = a.extract(B, b.context).values[A]

    assert list(ours) == sorted(e.clock for e in a.entries())
    assert [e.clock for e in ours.values()] == list(ours)


def test_merge_reports_joins_and_leaves_and_is_idempotent() -> None:
    a, b = state_cluster(A, B)
    gone = b.join("c1", "lobby", "gone", {})
    pull(a, b)
    b.leave("c1", "lobby", "gone")
    stays = b.join("c2", "lobby", "stays", {})
    snapshot = b.extract(A, a.context)

    assert a.merge(snapshot) == MergeResult(joins=(stays,), leaves=(gone,))
    assert bool(a.merge(snapshot)) is False
    before = observe_state(a)
    assert a.merge(snapshot) == MergeResult()
    assert observe_state(a) == before


def test_merge_learned_removals_reenter_our_pending_delta() -> None:
    a, b, c = state_cluster(A, B, C)
    entry = a.join("c1", "lobby", "u1", {})
    delta = a.take_delta()
    b.merge(delta)
    c.merge(delta)
    b.take_delta()
    assert not b.has_delta()

    a.leave("c1", "lobby", "u1")
    assert b.merge(a.take_delta()) == MergeResult(leaves=(entry,))
    # b learned the removal, so b gossips it on.
    assert b.has_delta()
    relayed = b.take_delta()
    assert relayed.clouds[A] >= {entry.clock}
    assert relayed.values == {}
    assert not b.has_delta()

    # c missed a's delta; b's delta is enough.
    assert c.merge(relayed) == MergeResult(leaves=(entry,))
    assert list(c.entries()) == []


def test_a_merge_never_removes_our_own_entries_nor_adds_in_our_name() -> None:
    a, _ = state_cluster(A, B)
    mine = a.join("c1", "lobby", "u1", {})
    forged = Snapshot(
        replica=B,
        context={A: 5, B: 0},
        clouds={},
        values={A: {2: Entry("lobby", "evil", "c9", {}, A, 2)}},
    )
    assert a.merge(forged) == MergeResult()
    assert list(a.entries()) == [mine]
    assert a.clock == 1
    assert a.context[A] == 1


# ---------------------------------------------------------------------------- pending delta


def test_delta_range_and_has_delta() -> None:
    a = ReplicaState(A)
    assert not a.has_delta()
    assert a.pending_delta.is_empty()
    assert (a.pending_delta.start, a.pending_delta.end) == ({A: 0}, {A: 0})

    first = a.join("c1", "lobby", "u1", {})
    second = a.join("c2", "lobby", "u2", {})
    assert a.has_delta()
    delta = a.pending_delta
    assert delta.replica == A
    assert (delta.start, delta.end) == ({A: 0}, {A: 2})
    assert delta.values == {A: {1: first, 2: second}}
    assert dots(delta.clouds) == [("a", 1), ("a", 2)]
    assert delta.size == 4
    # Reading the pending delta does not consume it.
    assert a.pending_delta == delta

    a.reset_delta()
    assert not a.has_delta()
    assert (a.pending_delta.start, a.pending_delta.end) == ({A: 2}, {A: 2})


def test_a_join_and_leave_in_one_window_leave_only_dots() -> None:
    a, b = state_cluster(A, B)
    a.join("c1", "lobby", "u1", {})
    a.leave("c1", "lobby", "u1")
    delta = a.take_delta()
    assert delta.values == {}
    assert dots(delta.clouds) == [("a", 1), ("a", 2)]
    assert b.merge(delta) == MergeResult()
    assert b.context[A] == 2


def test_take_delta_resets_and_compacts() -> None:
    a, b = state_cluster(A, B)
    entry = b.join("c1", "lobby", "u1", {})
    a.join("c1", "lobby", "mine", {})
    a.merge(b.take_delta())
    taken = a.take_delta()
    assert taken.end == {A: 1}
    assert not a.has_delta()
    assert a.pending_delta.is_empty()
    assert a.pending_delta.values == {}
    assert (a.pending_delta.start, a.pending_delta.end) == ({A: 1}, {A: 1})
    assert a.clouds == {}
    assert a.context == {A: 1, B: 1}
    assert a.get("c1", "lobby", "u1", owner=B) == entry
    # Taking again yields an empty delta.
    assert a.take_delta().is_empty()


def test_merging_deltas_with_a_gap_parks_dots_in_clouds_until_filled() -> None:
    a, b = state_cluster(A, B)
    first = a.join("c1", "lobby", "u1", {})
    d1 = a.take_delta()
    second = a.join("c2", "lobby", "u2", {})
    d2 = a.take_delta()
    third = a.join("c3", "lobby", "u3", {})
    d3 = a.take_delta()

    assert b.merge(d3) == MergeResult(joins=(third,))
    assert b.context[A] == 0
    assert dots(b.clouds) == [("a", 3)]
    assert b.merge(d2) == MergeResult(joins=(second,))
    assert dots(b.clouds) == [("a", 2), ("a", 3)]
    assert b.merge(d1) == MergeResult(joins=(first,))
    assert b.context[A] == 3
    assert b.clouds == {}
    assert keys(b.get_by_topic("lobby")) == ["u1", "u2", "u3"]

    # Redelivery after the fact changes nothing.
    for delta in (d1, d2, d3):
        assert b.merge(delta) == MergeResult()


def test_a_remove_beyond_a_gap_is_applied() -> None:
    a, b = state_cluster(A, B)
    a.join("c0", "lobby", "u0", {})
    a.take_delta()  # lost
    entry = a.join("c1", "lobby", "u1", {})
    b.merge(a.take_delta())
    a.leave("c1", "lobby", "u1")
    assert b.merge(a.take_delta()) == MergeResult(leaves=(entry,))
    assert list(b.entries()) == []
    assert b.context[A] == 0


# ---------------------------------------------------------------------------- bad arguments


BAD_STRINGS: list[object] = [None, 1, b"c1", ["c1"], 1.5]


@pytest.mark.parametrize("bad", BAD_STRINGS)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_join_update_and_leave_reject_non_str_ids(bad: object, position: int) -> None:
    a = ReplicaState(A)
    a.join("c1", "lobby", "u1", {})
    before = observe_state(a)
    ids: list[Any] = ["c1", "lobby", "u1"]
    ids[position] = bad
    with pytest.raises(LocalProtocolError, match="must be a str"):
        a.join(ids[0], ids[1], ids[2], {})
    with pytest.raises(LocalProtocolError, match="must be a str"):
        a.update(ids[0], ids[1], ids[2], {})
    with pytest.raises(LocalProtocolError, match="must be a str"):
        a.leave(ids[0], ids[1], ids[2])
    assert observe_state(a) == before


@pytest.mark.parametrize("bad", BAD_STRINGS)
def test_leave_conn_rejects_a_non_str_conn(bad: Any) -> None:
    a = ReplicaState(A)
    with pytest.raises(LocalProtocolError):
        a.leave_conn(bad)


def too_deep(levels: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for _ in range(levels):
        meta = {"x": meta}
    return meta


BAD_METAS: list[object] = [
    None,
    [("a", 1)],
    "meta",
    {1: "non-str key"},
    {"s": {1, 2}},
    {"b": b"bytes"},
    {"nan": float("nan")},
    {"inf": float("inf")},
    {"deep": [{"x": float("-inf")}]},
    {"obj": object()},
    too_deep(40),
]


@pytest.mark.parametrize("meta", BAD_METAS)
def test_join_and_update_reject_metas_json_cannot_carry(meta: Any) -> None:
    a = ReplicaState(A)
    a.join("c1", "lobby", "u1", {})
    before = observe_state(a)
    with pytest.raises(LocalProtocolError):
        a.join("c2", "lobby", "u1", meta)
    with pytest.raises(LocalProtocolError):
        a.update("c1", "lobby", "u1", meta)
    assert observe_state(a) == before


def test_metas_are_copied_on_the_way_in() -> None:
    a = ReplicaState(A)
    meta: dict[str, Any] = {"tags": ["x"], "nested": {"n": 1}, "t": (1, 2), "f": 1.5}
    entry = a.join("c1", "lobby", "u1", meta)
    meta["tags"].append("y")
    meta["nested"]["n"] = 2
    assert entry.meta == {"tags": ["x"], "nested": {"n": 1}, "t": [1, 2], "f": 1.5}
    assert a.join("c2", "lobby", "u1", too_deep(20)).meta == too_deep(20)


def test_a_state_needs_a_replica_ref() -> None:
    with pytest.raises(LocalProtocolError):
        ReplicaState(replica="x")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        ReplicaState(("a", 1))  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [42, None, "delta", {"values": {}}])
def test_merge_rejects_anything_but_a_snapshot_or_a_delta(payload: Any) -> None:
    a = ReplicaState(A)
    a.join("c1", "lobby", "u1", {})
    before = observe_state(a)
    with pytest.raises(LocalProtocolError):
        a.merge(payload)
    assert observe_state(a) == before


def test_replica_status_calls_reject_ourselves_and_non_refs() -> None:
    a, _ = state_cluster(A, B)
    before = observe_state(a)
    for call in (a.replica_up, a.replica_down, a.remove_down_replica):
        with pytest.raises(LocalProtocolError):
            call(A)
        with pytest.raises(LocalProtocolError):
            call(("b", 1))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        a.extract("b", {})  # type: ignore[arg-type]
    assert observe_state(a) == before


def test_payloads_refuse_entries_filed_under_the_wrong_dot() -> None:
    entry = Entry("lobby", "u1", "c1", {}, A, 3)
    with pytest.raises(InvalidArgument, match="filed under"):
        Snapshot(replica=A, context={A: 3}, clouds={}, values={A: {2: entry}})
    with pytest.raises(InvalidArgument, match="filed under"):
        Delta(replica=A, values={B: {3: entry}}, clouds={}, start={}, end={})


def test_a_stale_transfer_leaves_a_gap_that_the_next_transfer_repairs() -> None:
    # c holds a's newest version of u1 beyond a gap; b's transfer has seen that version removed
    # but still carries the first version, whose removal neither b nor c has seen. Whatever c
    # makes of it, its clock for a stays behind a's (so a tracker asks a for a transfer), and that
    # transfer settles everything.
    a, b, c = state_cluster(A, B, C)
    a.join("c1", "lobby", "u1", {"v": 1})
    first = a.take_delta()
    a.update("c1", "lobby", "u1", {"v": 2})
    a.take_delta()  # lost everywhere
    a.update("c1", "lobby", "u1", {"v": 3})
    third = a.take_delta()
    a.leave("c1", "lobby", "u1")
    fourth = a.take_delta()
    b.merge(first)
    b.merge(fourth)
    c.merge(third)

    pull(c, b)
    assert c.context[A] < a.clock
    assert dominates(a.clocks()[1], c.clocks()[1])
    assert not dominates(c.clocks()[1], a.clocks()[1])

    pull(c, a)
    pull(b, a)
    assert list(c.entries()) == list(b.entries()) == list(a.entries()) == []
    assert c.context == b.context == a.context


BAD: Any = "not a ReplicaRef"


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: Delta(replica=BAD, values={}, clouds={}, start={}, end={}), TypeError),
        (
            lambda: Delta(replica=A, values={}, clouds={A: frozenset({0})}, start={}, end={}),
            ValueError,
        ),
        (lambda: Delta(replica=A, values={}, clouds={}, start={A: -1}, end={}), ValueError),
        (
            lambda: Delta(replica=A, values={}, clouds={BAD: frozenset()}, start={}, end={}),
            TypeError,
        ),
        (lambda: Snapshot(replica=A, context={A: True}, clouds={}, values={}), ValueError),
        (lambda: Snapshot(replica=A, context={}, clouds={}, values={A: {1: BAD}}), TypeError),
    ],
)
def test_payload_constructors_refuse_malformed_fields(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_merges_keep_clouds_compact_so_compact_changes_nothing() -> None:
    a, b = state_cluster(A, B)
    b.join("c1", "lobby", "u1", {})
    b.take_delta()  # lost on the way to a
    b.join("c2", "lobby", "u2", {})
    a.merge(b.take_delta())  # dot 2 parked beyond the gap at 1
    before = (dict(a.context), dict(a.clouds), a.cloud_dots)
    assert before[2] == 1
    a.compact()
    assert (dict(a.context), dict(a.clouds), a.cloud_dots) == before
    b.leave("c2", "lobby", "u2")
    a.merge(b.extract(A, a.context))  # the gap filled: the parked dots folded into the context
    assert a.cloud_dots == 0
    a.compact()
    assert a.context[B] == b.clock
    assert a.clouds == {}


def test_an_entry_replaced_by_hand_is_checked_and_its_meta_copied() -> None:
    entry = Entry("lobby", "u1", "c1", {"a": 1}, A, 3)
    meta = {"b": [1]}
    changed = entry._replace(meta=meta, clock=4)
    meta["b"].append(2)  # the caller's dict: the entry holds its own copy
    assert changed == Entry("lobby", "u1", "c1", {"b": [1]}, A, 4)
    assert changed.meta == {"b": [1]}
    with pytest.raises(InvalidArgument, match=r"Entry\.clock"):
        entry._replace(clock=0)
    with pytest.raises(InvalidArgument, match="meta"):
        entry._replace(meta={"x": object()})


def test_one_connection_with_several_keys_in_a_topic() -> None:
    # The identity index stores a connection's key in a topic directly, and a {key: clock} dict
    # once it holds several; every lookup must see through both, on both sides of a merge.
    a, b = state_cluster(A, B)
    first = a.join("c1", "lobby", "u1", {"n": 1})
    second = a.join("c1", "lobby", "u2", {"n": 2})
    assert a.get("c1", "lobby", "u1") == first
    assert a.get("c1", "lobby", "u2") == second
    with pytest.raises(AlreadyTracked):
        a.join("c1", "lobby", "u2", {})
    before = observe_state(a)
    assert a.leave("c1", "lobby", "nobody") is None  # a key the connection does not hold
    assert observe_state(a) == before
    pull(b, a)
    assert b.get("c1", "lobby", "u2", owner=A) == second
    assert a.leave("c1", "lobby", "u1") == first
    assert a.get("c1", "lobby", "u1") is None
    assert a.get("c1", "lobby", "u2") == second
    third = a.join("c1", "lobby", "u3", {})  # the connection changes keys: join, then leave
    assert [e.key for e in a.get_by_conn("c1")] == ["u2", "u3"]
    pull(b, a)
    assert [e.key for e in b.get_by_conn("c1", owner=A)] == ["u2", "u3"]
    assert a.leave_conn("c1") == (second, third)
    assert a.get_by_conn("c1") == []
    assert a.leave("c1", "lobby", "u2") is None
    pull(b, a)
    assert b.get_by_conn("c1", owner=A) == []
    assert b.get_by_topic("lobby") == []
