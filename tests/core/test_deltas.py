"""Delta generations (SPEC §4.7 and the cases of phoenix_pubsub's delta_generation_test, §7.3)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from presence_core import Delta, InvalidArgument, ReplicaRef, ReplicaState, Snapshot
from presence_core._deltas import DeltaGenerations

SIZES = (2, 5, 6)


def keys(payload: Delta | Snapshot) -> list[str]:
    return sorted(entry.key for entry in payload.entries())


def dots(clouds: Mapping[ReplicaRef, frozenset[int]]) -> list[tuple[str, int]]:
    return sorted((replica.name, dot) for replica, cloud in clouds.items() for dot in cloud)


def state(name: str) -> ReplicaState:
    return ReplicaState(ReplicaRef(name, 1))


def test_generations_fill_merge_and_roll_over() -> None:
    s1, s2 = state("s1"), state("s2")
    s1.join("p1", "lobby", "user1", {})
    gens = DeltaGenerations(SIZES)
    gens.push(s1.pending_delta, pending=s1.pending_delta)
    first = gens.generations
    assert first[0] == first[1] == first[2]
    assert keys(first[0]) == ["user1"]
    assert dots(first[0].clouds) == [("s1", 1)]

    # Pushing the same delta again changes nothing.
    gens.push(s1.pending_delta, pending=s1.pending_delta)
    assert gens.generations == first

    s1.reset_delta()
    s1.join("p2", "lobby", "user2", {})
    gens.push(s1.pending_delta, pending=s1.pending_delta)
    g1, g2, g3 = gens.generations
    assert (keys(g1), keys(g2), keys(g3)) == (["user2"], ["user1", "user2"], ["user1", "user2"])
    assert dots(g1.clouds) == [("s1", 2)]
    assert dots(g2.clouds) == dots(g3.clouds) == [("s1", 1), ("s1", 2)]

    s1.reset_delta()
    s1.join("p3", "lobby", "user3", {})
    gens.push(s1.pending_delta, pending=s1.pending_delta)
    g1, g2, g3 = gens.generations
    # Level 0 overflowed (3 dots + values > 2): it holds the new delta alone.
    assert g1 == s1.pending_delta
    assert (keys(g1), keys(g2), keys(g3)) == (
        ["user3"],
        ["user2", "user3"],
        ["user1", "user2", "user3"],
    )
    assert dots(g2.clouds) == [("s1", 2), ("s1", 3)]
    assert dots(g3.clouds) == [("s1", 1), ("s1", 2), ("s1", 3)]

    s1.reset_delta()
    s1.join("p4", "lobby", "user4", {})
    gens.push(s1.pending_delta, pending=s1.pending_delta)
    g1, g2, g3 = gens.generations
    assert (keys(g1), keys(g2), keys(g3)) == (
        ["user4"],
        ["user3", "user4"],
        ["user2", "user3", "user4"],
    )
    assert dots(g3.clouds) == [("s1", 2), ("s1", 3), ("s1", 4)]

    # A delta received from another replica joins the generations too.
    s2.join("p5", "lobby", "user5", {})
    gens.push(s2.pending_delta, pending=s1.pending_delta)
    g1, g2, g3 = gens.generations
    assert (keys(g1), keys(g2), keys(g3)) == (
        ["user5"],
        ["user4", "user5"],
        ["user3", "user4", "user5"],
    )
    assert dots(g1.clouds) == [("s2", 1)]
    assert dots(g2.clouds) == [("s1", 4), ("s2", 1)]
    assert dots(g3.clouds) == [("s1", 3), ("s1", 4), ("s2", 1)]

    # A tombstone drops the value but keeps every dot.
    s2.leave_conn("p5")
    gens.push(s2.pending_delta, pending=s1.pending_delta)
    g1, g2, g3 = gens.generations
    assert (keys(g1), keys(g2), keys(g3)) == ([], ["user4"], ["user3", "user4"])
    assert dots(g1.clouds) == [("s2", 1), ("s2", 2)]
    assert dots(g2.clouds) == [("s1", 4), ("s2", 1), ("s2", 2)]
    assert dots(g3.clouds) == [("s1", 3), ("s1", 4), ("s2", 1), ("s2", 2)]


def test_non_contiguous_deltas_are_not_included() -> None:
    s1, s3 = state("s1"), state("s3")
    s1.join("p1", "lobby", "user1", {})
    s3.join("p3", "lobby", "user3", {})
    old = s3.pending_delta
    for conn in ("p3b", "p3c"):
        s3.reset_delta()
        s3.join(conn, "lobby", "user3", {})
    gens = DeltaGenerations((5, 10, 15))
    gens.push(old, pending=s1.pending_delta)
    before = gens.generations
    assert before[0] == before[1] == before[2]
    gens.push(s3.pending_delta, pending=s1.pending_delta)
    assert gens.generations == before


def test_remove_replica_prunes_every_generation() -> None:
    s1, s2, s3 = state("s1"), state("s2"), state("s3")
    s3.replica_up(s2.replica)
    s2.join("p2", "lobby", "user2", {})
    gens = DeltaGenerations((5, 10, 15))
    gens.push(s2.pending_delta, pending=s1.pending_delta)
    assert keys(gens.generations[0]) == ["user2"]
    gens.remove_replica(s2.replica)
    pruned = gens.generations
    assert pruned[0] == pruned[1] == pruned[2]
    assert s2.replica not in pruned[0].clouds
    assert s2.replica not in pruned[0].start
    assert s2.replica not in pruned[0].end
    # Even a replica that knows s2 learns nothing from the pruned generation.
    assert not s3.merge(pruned[0])
    assert s3.get_by_topic("lobby") == []


def test_whole_state_is_extracted_without_generations() -> None:
    r1, r2 = ReplicaRef("r1", 1), ReplicaRef("r2", 1)
    s = ReplicaState(r1)
    s.join("p1", "lobby", "user1", {})
    reply = DeltaGenerations((100,)).extract(s, r2, {r1: 1})
    assert isinstance(reply, Snapshot)
    assert reply == s.extract(r2, {r1: 1})
    assert keys(reply) == ["user1"]
    assert reply.context == {r1: 1}


def test_first_generation_the_requester_lacks_is_extracted() -> None:
    r1, r2 = ReplicaRef("r1", 1), ReplicaRef("r2", 1)
    s = ReplicaState(r1)
    s.join("p1", "lobby", "user1", {})
    d2 = s.take_delta()
    s.join("p1", "lobby", "user2", {})
    d3 = s.pending_delta
    gens = DeltaGenerations((100, 1000), [d2, d3])
    # r2 has seen dot 1 already: d2 is fully known, d3 is what it lacks.
    assert gens.extract(s, r2, {r1: 1}) == d3


def test_an_empty_generation_is_skipped() -> None:
    r1, r2, r3 = ReplicaRef("r1", 1), ReplicaRef("r2", 1), ReplicaRef("r3", 1)
    s = ReplicaState(r1)
    s.join("p1", "lobby", "user1", {})
    d1 = s.take_delta()
    d2 = s.pending_delta
    assert d2.is_empty()
    stranger = ReplicaState(r2).join("p2", "lobby", "user2", {})
    d3 = Delta(
        replica=r1,
        values={r1: d1.values[r1], r2: {1: stranger}},
        clouds=d1.clouds,
        start={r1: 0, r2: 0},
        end={r1: 1, r2: 1},
    )
    reply = DeltaGenerations((100, 1000), [d2, d3]).extract(s, r3, {r2: 0})
    assert reply == Delta(
        replica=r1, values={r2: {1: stranger}}, clouds={}, start={r2: 0}, end={r2: 1}
    )


def test_generation_not_ahead_on_shared_replicas_is_skipped() -> None:
    r1, r2, r3 = ReplicaRef("r1", 1), ReplicaRef("r2", 1), ReplicaRef("r3", 1)
    s = ReplicaState(r1)
    s.join("p1", "lobby", "user1", {})
    d1 = s.pending_delta
    s.join("p1", "lobby", "user2", {})
    d2 = s.pending_delta
    widened = Delta(
        replica=r1,
        values=d1.values,
        clouds=d1.clouds,
        start={**d1.start, r2: 0},
        end={**d1.end, r2: 1},
    )
    # On r1, the only replica r3 knows, `widened` holds nothing new (0 -> 1 and r3 has 1).
    assert DeltaGenerations((100, 1000), [widened, d2]).extract(s, r3, {r1: 1}) == d2


def test_full_transfer_clears_generations() -> None:
    s = state("s1")
    s.join("p1", "lobby", "user1", {})
    gens = DeltaGenerations(SIZES)
    gens.push(s.pending_delta, pending=s.pending_delta)
    assert gens.generations
    gens.clear()
    assert gens.generations == ()


@pytest.mark.parametrize("sizes", [(), (0,), (10, -1), (1.5,)])
def test_bad_sizes_are_refused(sizes: tuple[int, ...]) -> None:
    with pytest.raises(InvalidArgument, match="max_sizes"):
        DeltaGenerations(sizes)


def test_generations_must_match_sizes() -> None:
    delta = state("s1").pending_delta
    with pytest.raises(InvalidArgument, match="expected 2 generations"):
        DeltaGenerations((1, 2), [delta])


def test_a_delta_larger_than_a_cap_leaves_that_generation_empty_not_oversized() -> None:
    s1 = state("s1")
    gens = DeltaGenerations(SIZES)
    for i in range(4):  # one window of 4 joins: size 8, over every cap but the merges'
        s1.join(f"p{i}", "lobby", f"user{i}", {})
    busy = s1.take_delta()
    gens.push(busy, pending=busy)
    assert [g.size for g in gens.generations] == [0, 0, 0]
    # empty, but contiguous: the next windows build them up again, each within its cap
    for i in range(4, 7):
        s1.join(f"p{i}", "lobby", f"user{i}", {})
        gens.push(s1.take_delta())
    sizes = [g.size for g in gens.generations]
    assert all(size <= cap for size, cap in zip(sizes, SIZES, strict=True))
    assert sizes == [2, 4, 6]
    # an empty generation is never sent: a requester that lacks the busy window gets it all
    assert isinstance(gens.extract(s1, None, {s1.replica: 0}), Snapshot)


def test_every_generation_stays_within_its_cap_whatever_is_pushed() -> None:
    s1, s2 = state("s1"), state("s2")
    gens = DeltaGenerations(SIZES)
    gens.push(s1.pending_delta, pending=s1.pending_delta)
    for i in range(40):
        owner = (s1, s2)[i % 2]
        for j in range(i % 5):
            owner.join(f"p{i}-{j}", "lobby", f"u{i}-{j}", {})
        if i % 3 == 0 and len(owner):
            entry = next(iter(owner.entries()))
            owner.leave(entry.conn, entry.topic, entry.key)
        gens.push(owner.take_delta())
        assert all(g.size <= cap for g, cap in zip(gens.generations, SIZES, strict=True))
