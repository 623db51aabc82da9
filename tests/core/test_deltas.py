"""Delta generations (SPEC §4.7 and the cases of phoenix_pubsub's delta_generation_test, §7.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from presence_core import (
    Delta,
    Entry,
    InvalidArgument,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    dominates,
    dominates_or_equal,
    merge_deltas,
)
from presence_core._deltas import DeltaGenerations
from presence_core._vclock import filter_replicas

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


# --- The in-place generations against the immutable ones they replace ----------------------------


class ReferenceGenerations:
    """The oracle: ``DeltaGenerations`` as it was, a new immutable Delta per merge.

    Each push called ``merge_deltas`` on every generation, which copies it: the cost of a push
    grew with the generations, not with the delta. The in-place rewrite must give exactly what
    this gives, after every step.
    """

    def __init__(self, max_sizes: tuple[int, ...], generations: Sequence[Delta] = ()) -> None:
        self.max_sizes = max_sizes
        self.generations: tuple[Delta, ...] = tuple(generations)

    def push(self, delta: Delta, *, pending: Delta) -> None:
        generations = self.generations or (pending,) * len(self.max_sizes)
        previous = delta
        result: list[Delta] = []
        for generation, cap in zip(generations, self.max_sizes, strict=True):
            merged = merge_deltas(generation, delta)
            if merged is None:
                result.append(generation)
                previous = generation
            elif merged.size <= cap:
                result.append(merged)
                previous = merged
            else:
                result.append(previous if previous.size <= cap else empty_at(previous))
                previous = merged
        self.generations = tuple(result)

    def clear(self) -> None:
        self.generations = ()

    def remove_replica(self, replica: ReplicaRef) -> None:
        self.generations = tuple(g.without_replica(replica) for g in self.generations)

    def find(self, remote_context: Mapping[ReplicaRef, int]) -> Delta | None:
        known = list(remote_context)
        for generation in self.generations:
            start = filter_replicas(generation.start, known)
            end = filter_replicas(generation.end, known)
            if (
                not dominates_or_equal(start, end)
                and dominates_or_equal(remote_context, start)
                and not dominates(remote_context, end)
            ):
                return generation
        return None


def empty_at(delta: Delta) -> Delta:
    return Delta(replica=delta.replica, values={}, clouds={}, start=delta.end, end=delta.end)


def in_order(delta: Delta) -> tuple[object, ...]:
    """A delta with the order of its mappings made visible (Delta equality ignores it): the
    rewrite keeps the order too, so whatever iterates a generation sees the same sequence."""
    return (
        delta.replica,
        [(owner, list(rows.items())) for owner, rows in delta.values.items()],
        [(replica, sorted(dots)) for replica, dots in delta.clouds.items()],
        list(delta.start.items()),
        list(delta.end.items()),
    )


REFS = [ReplicaRef(name, 1) for name in ("a", "b", "c")]
STRANGER = ReplicaRef("z", 1)  # named by the odd deltas below only

# How a delta taken from a replica is pushed: as taken (its range names its replica only);
# "wide", its range stretched over the latest clock of every replica (the next wide delta starts
# exactly where it ends); "empty_rows", with an empty row for a stranger (a stored delta reads
# back with it, a merged one never has it); "lopsided", its start naming a replica its end does
# not, and "reversed", its start and end swapped (ranges that do not run forward).
SHAPES = ["narrow", "narrow", "wide", "wide", "empty_rows", "lopsided", "reversed"]

replica_index = st.integers(min_value=0, max_value=len(REFS) - 1)
steps = st.one_of(
    st.tuples(st.just("join"), replica_index),
    st.tuples(st.just("leave"), replica_index, st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("push"), replica_index, st.sampled_from(SHAPES)),
    st.tuples(st.just("peek"), replica_index),  # the pending delta, pushed again later
    st.tuples(st.just("skip"), replica_index),  # a window never pushed: a gap
    st.tuples(st.just("replay"), st.integers(min_value=0, max_value=20)),
    # a delta of nothing, with an empty range (or just a start: a range that does not run forward)
    st.tuples(st.just("bare"), st.booleans()),
    st.tuples(st.just("remove"), replica_index),
    st.tuples(st.just("clear")),
)


class Cluster:
    """Replicas producing the deltas, and the latest clock heard of each (for wide ranges)."""

    def __init__(self) -> None:
        self.states = [ReplicaState(ref) for ref in REFS]
        self.latest: dict[ReplicaRef, int] = dict.fromkeys(REFS, 0)
        self.taken: list[Delta] = []
        self.joins = 0

    def join(self, i: int) -> None:
        self.joins += 1
        self.states[i].join(f"c{self.joins}", "lobby", f"u{self.joins % 3}", {"n": self.joins})

    def leave(self, i: int, k: int) -> None:
        entries = sorted(self.states[i].entries(), key=lambda e: e.clock)
        if entries:
            entry = entries[k % len(entries)]
            self.states[i].leave(entry.conn, entry.topic, entry.key)

    def take(self, i: int, shape: str) -> Delta:
        delta = self.states[i].take_delta()
        self.taken.append(delta)
        replica = REFS[i]
        if shape == "wide":
            start = {**self.latest, replica: delta.start[replica]}
            self.latest[replica] = delta.end[replica]
            return Delta(
                replica=replica,
                values=delta.values,
                clouds=delta.clouds,
                start=start,
                end=dict(self.latest),
            )
        self.latest[replica] = max(self.latest[replica], delta.end[replica])
        if shape == "empty_rows":
            values = {**delta.values, STRANGER: {}}
            return Delta(
                replica=replica,
                values=values,
                clouds=delta.clouds,
                start=delta.start,
                end=delta.end,
            )
        if shape == "lopsided":
            start = {**delta.start, STRANGER: 0}
            return Delta(
                replica=replica,
                values=delta.values,
                clouds=delta.clouds,
                start=start,
                end=delta.end,
            )
        if shape == "reversed":
            return Delta(
                replica=replica,
                values=delta.values,
                clouds=delta.clouds,
                start=delta.end,
                end=delta.start,
            )
        return delta


# Rare paths, pinned whatever the number of examples drawn: a delta of nothing, into a generation
# with replicas and into one left without any (all were removed), then deltas that do not run
# forward into that one; a stale delta that ends before a generation starts; a replica removed
# from a merged generation nobody read; ranges that do not run forward; wide deltas, each
# starting where the one before ended, with a remove.
RARE_RUNS = [
    [
        ("push", 0, "narrow"),
        ("bare", False),
        ("remove", 0),
        ("bare", False),
        ("bare", True),
        ("join", 0),
        ("push", 0, "lopsided"),
    ],
    [("push", 0, "narrow"), ("join", 0), ("push", 0, "narrow"), ("replay", 0)],
    [("push", 0, "narrow"), ("remove", 0)],
    [("push", 0, "lopsided"), ("join", 0), ("push", 0, "reversed")],
    [
        ("push", 0, "wide"),
        ("join", 1),
        ("push", 1, "wide"),
        ("join", 2),
        ("leave", 1, 0),
        ("push", 1, "wide"),
        ("push", 2, "wide"),
    ],
]


@example(max_sizes=[1], restored=False, program=[(step, True) for step in RARE_RUNS[0]])
@example(max_sizes=[1], restored=False, program=[(step, True) for step in RARE_RUNS[1]])
@example(
    max_sizes=[5, 5], restored=False, program=[(RARE_RUNS[2][0], False), (RARE_RUNS[2][1], True)]
)
@example(max_sizes=[2, 9], restored=True, program=[(step, True) for step in RARE_RUNS[3]])
@example(max_sizes=[4, 50], restored=False, program=[(step, True) for step in RARE_RUNS[4]])
@given(
    max_sizes=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=4),
    restored=st.booleans(),
    program=st.lists(st.tuples(steps, st.booleans() | st.just(True)), max_size=60),
)
def test_generations_merged_in_place_equal_the_immutable_merges(
    max_sizes: list[int], restored: bool, program: list[tuple[tuple[Any, ...], bool]]
) -> None:
    """Random runs (contiguous deltas and not, removes, caps in any order, permdowns, clears):
    after each step the generations are exactly the reference's.

    Reading ``.generations`` keeps what it built until the next change, so a few steps are not
    looked at (``look`` false): what follows them starts from generations nobody read.
    """
    caps = tuple(max_sizes)
    cluster = Cluster()
    cluster.join(0)
    pending = cluster.states[0].pending_delta  # the local replica's: where the first push starts
    if restored:
        initial = [pending] * len(caps)
        new, old = DeltaGenerations(caps, initial), ReferenceGenerations(caps, initial)
    else:
        new, old = DeltaGenerations(caps), ReferenceGenerations(caps)
    for step, look in [*program, (("look",), True)]:
        kind = step[0]
        delta: Delta | None = None
        if kind == "join":
            cluster.join(step[1])
        elif kind == "leave":
            cluster.leave(step[1], step[2])
        elif kind == "push":
            delta = cluster.take(step[1], step[2])
        elif kind == "peek":
            delta = cluster.states[step[1]].pending_delta
        elif kind == "skip":
            cluster.take(step[1], "narrow")
        elif kind == "replay" and cluster.taken:
            delta = cluster.taken[step[1] % len(cluster.taken)]
        elif kind == "bare":
            start = {STRANGER: 0} if step[1] else {}
            delta = Delta(replica=STRANGER, values={}, clouds={}, start=start, end={})
        elif kind == "remove":
            new.remove_replica(REFS[step[1]])
            old.remove_replica(REFS[step[1]])
        elif kind == "clear":
            new.clear()
            old.clear()
        if delta is not None:
            new.push(delta, pending=pending)
            old.push(delta, pending=pending)
        assert len(new) == len(old.generations)
        if look:
            assert new.generations == old.generations
            assert [in_order(g) for g in new.generations] == [in_order(g) for g in old.generations]
            for state in cluster.states:
                assert new.find(state.context) == old.find(state.context)


# ----------------------------------------------------------------------------- merge_deltas alone


def _entry(clock: int) -> Entry:
    return Entry("t", f"k{clock}", f"c{clock}", {}, MD_A, clock)


MD_A = ReplicaRef("md", 1)


def test_merge_deltas_keeps_what_the_later_window_did_not_remove() -> None:
    a = Delta(
        replica=MD_A,
        values={MD_A: {1: _entry(1), 2: _entry(2), 3: _entry(3)}},
        clouds={MD_A: frozenset({1, 2, 3})},
        start={MD_A: 0},
        end={MD_A: 3},
    )
    # The next window added entry 4: fewer dots than a's entries, so a's rows are trimmed dot by
    # dot, and its one dot removes nothing.
    b = Delta(
        replica=MD_A,
        values={MD_A: {4: _entry(4)}},
        clouds={MD_A: frozenset({4})},
        start={MD_A: 3},
        end={MD_A: 4},
    )
    merged = merge_deltas(a, b)
    assert merged is not None
    assert merged.values == {MD_A: {1: _entry(1), 2: _entry(2), 3: _entry(3), 4: _entry(4)}}
    assert merged.clouds == {MD_A: frozenset({1, 2, 3, 4})}


def test_merge_deltas_drops_an_owner_whose_entries_were_all_removed() -> None:
    a = Delta(
        replica=MD_A,
        values={MD_A: {1: _entry(1)}},
        clouds={MD_A: frozenset({1})},
        start={MD_A: 0},
        end={MD_A: 1},
    )
    b = Delta(
        replica=MD_A, values={}, clouds={MD_A: frozenset({1, 2})}, start={MD_A: 1}, end={MD_A: 2}
    )
    merged = merge_deltas(a, b)
    assert merged is not None
    assert merged.values == {}
    assert merged.clouds == {MD_A: frozenset({1, 2})}
    assert (merged.start, merged.end) == ({MD_A: 0}, {MD_A: 2})
