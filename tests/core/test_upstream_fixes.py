"""Regression tests for Phoenix.Tracker.State bugs that presence-core fixes (SPEC §8.1).

Each test is written so that it fails against the upstream behaviour; the comment above it says
what upstream does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest

from helpers import state_cluster
from presence_core import Delta, Entry, MergeResult, ReplicaRef, ReplicaState, Snapshot

A = ReplicaRef("a", 1)
B = ReplicaRef("b", 1)
C = ReplicaRef("c", 1)

View = frozenset[tuple[ReplicaRef, str, str, str, str]]


def pull(into: ReplicaState, source: ReplicaState) -> MergeResult:
    """What a transfer does: ``source`` extracts for the clocks ``into`` announces."""
    return into.merge(source.extract(into.replica, into.clocks()[1]))


def view(state: ReplicaState) -> View:
    return frozenset(
        (e.owner, e.conn, e.topic, e.key, json.dumps(e.meta, sort_keys=True))
        for e in state.visible_entries()
    )


def full_exchange(states: Iterable[ReplicaState]) -> None:
    group = list(states)
    for _ in range(3):
        for into in group:
            for source in group:
                if source is not into:
                    pull(into, source)


# ---------------------------------------------------------------------------- #214


def test_same_conn_and_key_on_two_replicas_are_two_presences() -> None:
    # Upstream #214: entries are keyed by (topic, pid, key) only. When two replicas add the same
    # (topic, pid, key), each node keeps whichever add it merged last: the metas disagree across
    # the cluster forever, and the pid index gets a duplicate row.
    a, b, c = state_cluster(A, B, C)
    ours = a.join("c1", "lobby", "u1", {"from": "a"})
    theirs = b.join("c1", "lobby", "u1", {"from": "b"})
    full_exchange([a, b, c])

    for state in (a, b, c):
        metas = sorted(json.dumps(e.meta, sort_keys=True) for e in state.get_by_key("lobby", "u1"))
        assert metas == ['{"from": "a"}', '{"from": "b"}']
        assert state.count("lobby") == 2
        assert state.get("c1", "lobby", "u1", owner=A) == ours
        assert state.get("c1", "lobby", "u1", owner=B) == theirs
    assert view(a) == view(b) == view(c)

    # A later leave by one owner removes its own presence only.
    a.leave("c1", "lobby", "u1")
    full_exchange([a, b, c])
    for state in (a, b, c):
        assert state.get_by_key("lobby", "u1") == [theirs]
    assert view(a) == view(b) == view(c)


def test_same_identity_from_two_replicas_converges_whatever_the_merge_order() -> None:
    # Upstream #214: the result depends on the order a third node merges the two adds.
    a, b = state_cluster(A, B)
    a.join("c1", "lobby", "u1", {"from": "a"})
    b.join("c1", "lobby", "u1", {"from": "b"})
    from_a = a.take_delta()
    from_b = b.take_delta()

    first, second = (ReplicaState(C) for _ in range(2))
    for state in (first, second):
        state.replica_up(A)
        state.replica_up(B)
    first.merge(from_a)
    first.merge(from_b)
    second.merge(from_b)
    second.merge(from_a)
    assert view(first) == view(second)
    assert len(view(first)) == 2


# ---------------------------------------------------------------------------- #213


@pytest.mark.parametrize("stale_via", ["full extract of b", "old delta of a"])
def test_a_stale_older_dot_never_overwrites_a_newer_one(stale_via: str) -> None:
    # Upstream #213: C holds a's newest add beyond a gap (its dot sits in a cloud). The older dot
    # of the same (topic, pid, key) is not "seen", so a stale payload carrying it is admitted and
    # overwrites the row: C shows the old meta, its pid index gets a duplicate, and the next remove
    # crashes the shard with {:badmatch, N} in State.remove/4.
    a, b, c = state_cluster(A, B, C)
    a.join("c1", "lobby", "u1", {"v": 1})
    first = a.take_delta()
    b.merge(first)  # b knows v1 and nothing later
    a.update("c1", "lobby", "u1", {"v": 2})
    a.take_delta()  # lost on the way to b and c
    _, newest = a.update("c1", "lobby", "u1", {"v": 3})
    assert c.merge(a.take_delta()) == MergeResult(joins=(newest,))
    assert c.context[A] == 0  # dots 1 and 2 never reached c: dot 5 is parked in a cloud
    assert 5 in c.clouds[A]

    stale = pull(c, b) if stale_via == "full extract of b" else c.merge(first)

    assert stale == MergeResult()
    assert c.get_by_key("lobby", "u1") == [newest]
    assert [e for e in c.entries() if e.owner == A] == [newest]

    # Nothing later crashes, duplicates or resurrects the stale meta.
    again = a.join("c2", "lobby", "u2", {})
    assert c.merge(a.take_delta()) == MergeResult(joins=(again,))
    a.leave("c1", "lobby", "u1")
    assert c.merge(a.take_delta()) == MergeResult(leaves=(newest,))
    assert c.merge(first) == MergeResult()
    assert pull(c, b) == MergeResult()
    full_exchange([a, b, c])
    assert view(a) == view(b) == view(c)
    assert [e.key for e in c.visible_entries()] == ["u2"]


# ---------------------------------------------------------------------------- replaced rows


def test_a_newer_dot_without_a_tombstone_replaces_the_row_and_reports_a_leave() -> None:
    # Upstream: the newer add silently overwrites the row in the values table (only a join is
    # reported, so the client keeps the old meta forever) and the pid index gets a second row.
    a, c = state_cluster(A, C)
    old = a.join("c1", "lobby", "u1", {"v": 1})
    c.merge(a.take_delta())
    a.leave("c1", "lobby", "u1")
    a.take_delta()  # the tombstone of the old dot is lost
    new = a.join("c1", "lobby", "u1", {"v": 2})
    delta = a.take_delta()
    assert delta.clouds == {A: frozenset({3})}

    assert c.merge(delta) == MergeResult(joins=(new,), leaves=(old,))
    assert c.get_by_key("lobby", "u1") == [new]
    assert len(c) == 1
    assert c.get_by_conn("c1", owner=A) == [new]


def test_a_hand_built_snapshot_with_a_newer_dot_replaces_the_row() -> None:
    a, c = state_cluster(A, C)
    old = a.join("c1", "lobby", "u1", {"v": 1})
    c.merge(a.take_delta())
    new = Entry("lobby", "u1", "c1", {"v": 9}, A, 7)
    snapshot = Snapshot(replica=B, context={A: 0, C: 0}, clouds={A: {7}}, values={A: {7: new}})

    assert c.merge(snapshot) == MergeResult(joins=(new,), leaves=(old,))
    assert list(c.entries()) == [new]
    # An older dot of that identity arriving afterwards is ignored.
    older = Entry("lobby", "u1", "c1", {"v": 5}, A, 4)
    assert c.merge(Delta(replica=A, values={A: {4: older}}, clouds={A: {4}}, start={}, end={})) == (
        MergeResult()
    )
    assert list(c.entries()) == [new]


@pytest.mark.parametrize("newest_first", [True, False])
def test_one_payload_with_two_dots_of_one_identity_keeps_the_newest(newest_first: bool) -> None:
    c = ReplicaState(C)
    c.replica_up(A)
    older = Entry("lobby", "u1", "c1", {"v": 1}, A, 1)
    newer = Entry("lobby", "u1", "c1", {"v": 2}, A, 3)
    rows = {3: newer, 1: older} if newest_first else {1: older, 3: newer}
    delta = Delta(replica=A, values={A: rows}, clouds={A: {1, 3}}, start={A: 0}, end={A: 3})
    assert c.merge(delta) == MergeResult(joins=(newer,))
    assert list(c.entries()) == [newer]


# ---------------------------------------------------------------------------- redelivery


def test_a_redelivered_delta_does_not_resurrect_a_removed_entry() -> None:
    # Upstream (State.merge / observe_removes): when a merge observes a remove, it deletes the
    # removed tag from its clouds. If that dot sat beyond a gap, it is no longer "seen", so the
    # add delta delivered again (a transfer reply built from delta generations overlaps the
    # heartbeats already received) brings the presence back. Once the gap fills, the node's clock
    # equals everyone else's, no transfer is ever requested, and the ghost stays for good.
    a, c = state_cluster(A, C)
    a.join("c0", "lobby", "early", {})
    early = a.take_delta()  # delayed
    ghost = a.join("c1", "lobby", "ghost", {})
    added = a.take_delta()
    a.leave("c1", "lobby", "ghost")
    removed = a.take_delta()

    assert c.merge(added) == MergeResult(joins=(ghost,))
    assert c.merge(removed) == MergeResult(leaves=(ghost,))
    assert c.merge(added) == MergeResult()
    c.merge(early)

    assert c.clocks() == (C, {C: 0, A: 3})
    assert c.clocks()[1] == a.clocks()[1]
    assert view(c) == view(a)
    assert [e.key for e in c.entries()] == ["early"]


def test_an_observed_remove_beyond_a_gap_leaves_no_hole_in_the_context() -> None:
    # Upstream, same root cause: the forgotten dot can never be folded into the context, so the
    # node's clock for that replica stays behind for good and every clock sample asks for a full
    # transfer again (and the replica's later deltas never compact either).
    a, c = state_cluster(A, C)
    a.join("c1", "lobby", "k1", {})
    first = a.take_delta()  # delayed
    second_entry = a.join("c1", "lobby", "k2", {})
    second = a.take_delta()
    a.leave_conn("c1")
    third = a.take_delta()

    assert c.merge(second) == MergeResult(joins=(second_entry,))
    assert c.merge(third) == MergeResult(leaves=(second_entry,))
    c.merge(first)

    assert c.context[A] == a.clock == 4
    assert c.clouds == {}
    assert list(c.entries()) == []


# ---------------------------------------------------------------------------- #179


def test_down_replicas_are_pruned_so_bookkeeping_stays_bounded() -> None:
    # Upstream #179 / phoenix#5568: permdowned replica refs stay in the replicas map as :down
    # forever; every node restart adds one, and after about a week the list filter built from them
    # exceeds the match-spec limit (SystemLimitError), and presence stops working.
    me, peer = state_cluster(A, B)
    me.join("c1", "lobby", "mine", {})
    peer.join("c1", "lobby", "peer", {})
    pull(me, peer)
    sizes = set()
    for vsn in range(1, 301):
        restarted = ReplicaRef("node", vsn)
        other = ReplicaState(restarted)
        other.replica_up(A)
        entry = other.join(f"c{vsn}", "lobby", f"user{vsn}", {"vsn": vsn})
        assert me.replica_up(restarted) == ()
        assert me.merge(other.take_delta()) == MergeResult(joins=(entry,))
        assert me.replica_down(restarted) == (entry,)
        assert me.remove_down_replica(restarted) == (entry,)

        assert me.down_replicas() == frozenset()
        sizes.add(
            (
                len(me.clocks()[1]),
                len(me.context),
                len(me.replicas()),
                len(me.clouds),
                len(me),
                len(me.pending_delta.end),
            )
        )
    assert sizes == {(2, 2, 2, 0, 2, 1)}
    assert me.clocks() == (A, {A: 1, B: 1})
    assert me.replicas() == {A: True, B: True}
