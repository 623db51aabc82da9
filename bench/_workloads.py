"""Workloads a to e of BENCH.md, each on the CRDT and on the plain-dict floor.

Every workload follows BENCH.md to the letter: inputs are built before timing, every repetition
starts from a fresh state built by an untimed setup, and the best of ``repeat`` runs counts. Every
timed run returns what it produced, and :func:`run_workloads` checks it after timing (workload c
must return 100,000 joins, e 50,000 leaves, ...), for the CRDT and for the floor alike, so neither
can get fast by doing less.

Names the BENCH.md text leaves open are fixed here: connection ``conn<i>``, topics ``topic<t>``;
in b the keys of a connection are ``key<j>``; in d the connection of join ``j`` is ``c<j>`` and its
topic ``topic<j mod 10>``; in e R1's 50,000 presences are 500 connections x 100 topics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from presence_core import Entry, MergeResult, ReplicaRef, ReplicaState

from ._floor import PlainRecord, PlainState
from ._timing import Timing, measure_pair

__all__ = [
    "FULL",
    "META",
    "QUICK",
    "R1",
    "R2",
    "WORKLOADS",
    "CheckFailed",
    "Reference",
    "Sizes",
    "WorkloadResult",
    "WorkloadSpec",
    "run_workloads",
]

META = {"status": "online", "device": "web"}
"""The meta of every presence (BENCH.md)."""

R1 = ReplicaRef("r1", 1)
R2 = ReplicaRef("r2", 1)

Ident = tuple[str, str, str]


class CheckFailed(AssertionError):
    """A workload returned a wrong result: the benchmark figure would be meaningless."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


@dataclass(frozen=True)
class Reference:
    """A reference figure of BENCH.md: best of 5, range over 3 runs, in milliseconds."""

    low_ms: float
    high_ms: float

    @property
    def mid_ms(self) -> float:
        return (self.low_ms + self.high_ms) / 2


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload: its id, what it does, the Phoenix reference and our speed-up target."""

    id: str
    title: str
    reference: Reference
    target_speedup: float
    phases_reference: dict[str, float] = field(default_factory=dict)


WORKLOADS: dict[str, WorkloadSpec] = {
    spec.id: spec
    for spec in (
        WorkloadSpec("a", "100,000 joins on one replica", Reference(480, 598), 3.0),
        WorkloadSpec("b", "get_by_topic, 10,000 of 100,000", Reference(4.7, 4.9), 10.0),
        WorkloadSpec(
            "c",
            "clocks + extract + merge of 100,000",
            Reference(465, 477),
            6.0,
            {"extract": 79.0, "merge": 196.0},
        ),
        WorkloadSpec("d", "1,000 rounds of delta broadcast", Reference(982, 1110), 3.0),
        WorkloadSpec(
            "e",
            "replica_down + remove_down_replica of 50,000",
            Reference(267, 347),
            10.0,
            {"down": 23.0, "remove": 227.0},
        ),
    )
}

FLOOR_TARGET = 3.0
"""The CRDT must stay within this factor of the plain-dict floor."""


@dataclass(frozen=True)
class Sizes:
    """The sizes of the workloads (BENCH.md's in :data:`FULL`, small ones in :data:`QUICK`)."""

    a_conns: int = 1000
    a_topics: int = 100
    b_topics: int = 10
    b_conns: int = 1000
    b_keys: int = 10
    d_rounds: int = 1000
    d_per_round: int = 100
    d_topics: int = 10
    e_conns: int = 500
    e_topics: int = 100


FULL = Sizes()
QUICK = Sizes(
    a_conns=50,
    a_topics=10,
    b_topics=4,
    b_conns=50,
    b_keys=5,
    d_rounds=20,
    d_per_round=20,
    d_topics=5,
    e_conns=50,
    e_topics=10,
)


@dataclass(frozen=True)
class WorkloadResult:
    """One workload measured on the CRDT and on the floor, with its verified outcome.

    Attributes:
        spec: the workload.
        crdt: the CRDT's timings.
        floor: the floor's timings.
        verified: what was checked, in words ("100,000 joins returned").
        phases: the best time of each phase of the CRDT run, in seconds (c and e only).
    """

    spec: WorkloadSpec
    crdt: Timing[object]
    floor: Timing[object]
    verified: str
    phases: dict[str, float]

    @property
    def speedup(self) -> float:
        """The reference's midpoint over our best time."""
        return self.spec.reference.mid_ms / self.crdt.best_ms

    @property
    def speedup_range(self) -> tuple[float, float]:
        ref = self.spec.reference
        return ref.low_ms / self.crdt.best_ms, ref.high_ms / self.crdt.best_ms

    @property
    def floor_ratio(self) -> float:
        """Our best time over the floor's best time."""
        return self.crdt.best / self.floor.best


# ---------------------------------------------------------------------------- inputs


def grid(conns: int, topics: int) -> list[Ident]:
    """``conns`` connections each in ``topics`` topics: conn ``conn<i>``, key ``user<i>``."""
    return [(f"conn{i}", f"topic{t}", f"user{i}") for i in range(conns) for t in range(topics)]


def fill(state: ReplicaState, inputs: Sequence[Ident]) -> ReplicaState:
    join = state.join
    for conn, topic, key in inputs:
        join(conn, topic, key, META)
    return state


def fill_plain(state: PlainState, inputs: Sequence[Ident]) -> PlainState:
    join = state.join
    for conn, topic, key in inputs:
        join(conn, topic, key, META)
    return state


def pair() -> tuple[ReplicaState, ReplicaState]:
    """R1 and R2, each knowing the other."""
    r1, r2 = ReplicaState(R1), ReplicaState(R2)
    r1.replica_up(R2)
    r2.replica_up(R1)
    return r1, r2


def plain_pair() -> tuple[PlainState, PlainState]:
    p1, p2 = PlainState(R1.name), PlainState(R2.name)
    p1.add_owner(p2.name)
    p2.add_owner(p1.name)
    return p1, p2


def idents(entries: Sequence[Entry] | Sequence[PlainRecord]) -> set[Ident]:
    return {(e.conn, e.topic, e.key) for e in entries}


# ---------------------------------------------------------------------------- a


def workload_a(sizes: Sizes, repeat: int) -> WorkloadResult:
    inputs = grid(sizes.a_conns, sizes.a_topics)
    n = len(inputs)

    def crdt(state: ReplicaState) -> ReplicaState:
        return fill(state, inputs)

    def floor(state: PlainState) -> PlainState:
        return fill_plain(state, inputs)

    timed, base = measure_pair(
        (lambda: ReplicaState(R1), crdt), (lambda: PlainState(R1.name), floor), repeat=repeat
    )
    state, plain = timed.result, base.result
    check(len(state) == n and state.clock == n, f"a: {len(state)} entries, clock {state.clock}")
    check(state.count("topic0") == sizes.a_conns, "a: wrong topic size")
    check(len(plain) == n, f"a: the floor holds {len(plain)}")
    check(
        idents(state.get_by_topic("topic1")) == idents(plain.get_by_topic("topic1")),
        "a: CRDT and floor disagree",
    )
    return WorkloadResult(
        WORKLOADS["a"], _erase(timed), _erase(base), f"{n:,} presences stored", {}
    )


# ---------------------------------------------------------------------------- b


def workload_b(sizes: Sizes, repeat: int) -> WorkloadResult:
    inputs = [
        (f"conn{i}", f"topic{t}", f"key{j}")
        for i in range(sizes.b_conns)
        for t in range(sizes.b_topics)
        for j in range(sizes.b_keys)
    ]
    per_topic = sizes.b_conns * sizes.b_keys

    timed, base = measure_pair(
        (lambda: fill(ReplicaState(R1), inputs), lambda state: state.get_by_topic("topic0")),
        (lambda: fill_plain(PlainState(R1.name), inputs), lambda p: p.get_by_topic("topic0")),
        repeat=repeat,
    )
    entries, records = timed.result, base.result
    check(len(entries) == per_topic, f"b: {len(entries)} entries listed, not {per_topic}")
    check(all(e.topic == "topic0" for e in entries), "b: an entry of another topic")
    check(idents(entries) == idents(records), "b: CRDT and floor disagree")
    return WorkloadResult(
        WORKLOADS["b"],
        _erase(timed),
        _erase(base),
        f"{per_topic:,} entries listed from {len(inputs):,}",
        {},
    )


# ---------------------------------------------------------------------------- c


def workload_c(sizes: Sizes, repeat: int) -> WorkloadResult:
    inputs = grid(sizes.a_conns, sizes.a_topics)
    n = len(inputs)
    phases: list[dict[str, float]] = []

    def setup() -> tuple[ReplicaState, ReplicaState]:
        r1, r2 = pair()
        fill(r1, inputs)
        return r1, r2

    def crdt(states: tuple[ReplicaState, ReplicaState]) -> tuple[MergeResult, ReplicaState]:
        r1, r2 = states
        t0 = time.perf_counter()
        ref, context = r2.clocks()
        snapshot = r1.extract(ref, context)
        t1 = time.perf_counter()
        result = r2.merge(snapshot)
        t2 = time.perf_counter()
        phases.append({"extract": t1 - t0, "merge": t2 - t1})
        return result, r2

    def plain_setup() -> tuple[PlainState, PlainState]:
        p1, p2 = plain_pair()
        fill_plain(p1, inputs)
        return p1, p2

    def floor(states: tuple[PlainState, PlainState]) -> tuple[list[PlainRecord], PlainState]:
        p1, p2 = states
        return p2.merge(p1.extract()), p2

    timed, base = measure_pair((setup, crdt), (plain_setup, floor), repeat=repeat)
    (result, r2), (joins, p2) = timed.result, base.result
    check(len(result.joins) == n, f"c: {len(result.joins)} joins returned, not {n}")
    check(not result.leaves, "c: leaves returned")
    check(len(r2) == n and all(e.owner == R1 for e in r2.entries()), "c: R2 holds wrong entries")
    check(r2.context.get(R1) == n, "c: R2 did not learn R1's clock")
    check(len(joins) == n and len(p2) == n, "c: the floor merged wrong")
    check(idents(result.joins) == idents(joins), "c: CRDT and floor disagree")
    return WorkloadResult(
        WORKLOADS["c"], _erase(timed), _erase(base), f"{n:,} joins returned", _best(phases)
    )


# ---------------------------------------------------------------------------- d


def workload_d(sizes: Sizes, repeat: int) -> WorkloadResult:
    per_round, topics = sizes.d_per_round, sizes.d_topics
    rounds = [
        [(f"c{j}", f"topic{j % topics}", f"k{r}_{j}") for j in range(per_round)]
        for r in range(sizes.d_rounds)
    ]

    def crdt(
        states: tuple[ReplicaState, ReplicaState],
    ) -> tuple[list[MergeResult], ReplicaState, ReplicaState]:
        r1, r2 = states
        join, leave, merge = r1.join, r1.leave, r2.merge
        results: list[MergeResult] = []
        previous: list[Ident] = []
        for batch in rounds:
            for conn, topic, key in batch:
                join(conn, topic, key, META)
            for conn, topic, key in previous:
                leave(conn, topic, key)
            results.append(merge(r1.pending_delta))
            r1.reset_delta()
            r1.compact()
            previous = batch
        return results, r1, r2

    def floor(
        states: tuple[PlainState, PlainState],
    ) -> tuple[list[tuple[list[PlainRecord], list[PlainRecord]]], PlainState, PlainState]:
        p1, p2 = states
        join, leave, apply = p1.join, p1.leave, p2.apply_delta
        results: list[tuple[list[PlainRecord], list[PlainRecord]]] = []
        previous: list[Ident] = []
        for batch in rounds:
            for conn, topic, key in batch:
                join(conn, topic, key, META)
            for conn, topic, key in previous:
                leave(conn, topic, key)
            results.append(apply(p1.take_delta()))
            previous = batch
        return results, p1, p2

    timed, base = measure_pair((pair, crdt), (plain_pair, floor), repeat=repeat)
    (results, r1, r2), (plain_results, p1, p2) = timed.result, base.result
    total = sizes.d_rounds * per_round
    joins = sum(len(r.joins) for r in results)
    leaves = sum(len(r.leaves) for r in results)
    check(joins == total, f"d: {joins} joins merged, not {total}")
    check(leaves == total - per_round, f"d: {leaves} leaves merged, not {total - per_round}")
    last = set(rounds[-1])
    seen = {(e.conn, e.topic, e.key) for e in r2.visible_entries()}
    check(seen == last and len(r1) == per_round, "d: R2 does not hold the last round exactly")
    check(r2.context.get(R1) == r1.clock == 2 * total - per_round, "d: clocks disagree")
    check(not r2.clouds and not r1.has_delta(), "d: clouds or a pending delta left over")
    plain_joins = sum(len(j) for j, _ in plain_results)
    plain_leaves = sum(len(lv) for _, lv in plain_results)
    check((plain_joins, plain_leaves) == (joins, leaves), "d: the floor disagrees")
    check(len(p1) == len(p2) == per_round, "d: the floor holds the wrong presences")
    return WorkloadResult(
        WORKLOADS["d"],
        _erase(timed),
        _erase(base),
        f"{joins:,} joins and {leaves:,} leaves merged, {per_round} left",
        {},
    )


# ---------------------------------------------------------------------------- e


def workload_e(sizes: Sizes, repeat: int) -> WorkloadResult:
    inputs = grid(sizes.e_conns, sizes.e_topics)
    n = len(inputs)
    phases: list[dict[str, float]] = []

    def setup() -> ReplicaState:
        r1, r2 = pair()
        fill(r1, inputs)
        r2.merge(r1.extract(*r2.clocks()))
        return r2

    def crdt(r2: ReplicaState) -> tuple[tuple[Entry, ...], tuple[Entry, ...], ReplicaState]:
        t0 = time.perf_counter()
        leaves = r2.replica_down(R1)
        t1 = time.perf_counter()
        removed = r2.remove_down_replica(R1)
        t2 = time.perf_counter()
        phases.append({"down": t1 - t0, "remove": t2 - t1})
        return leaves, removed, r2

    def plain_setup() -> PlainState:
        p1, p2 = plain_pair()
        fill_plain(p1, inputs)
        p2.merge(p1.extract())
        return p2

    def floor(p2: PlainState) -> tuple[list[PlainRecord], list[PlainRecord], PlainState]:
        leaves = p2.replica_down(R1.name)
        removed = p2.remove_down_replica(R1.name)
        return leaves, removed, p2

    timed, base = measure_pair((setup, crdt), (plain_setup, floor), repeat=repeat)
    (leaves, removed, r2), (plain_leaves, plain_removed, p2) = timed.result, base.result
    check(len(leaves) == n, f"e: {len(leaves)} leaves returned, not {n}")
    check(len(removed) == n and len(r2) == 0, "e: entries left behind")
    check(R1 not in r2.replicas() and not r2.down_replicas(), "e: R1 not forgotten")
    check(len(plain_leaves) == len(plain_removed) == n and len(p2) == 0, "e: the floor is wrong")
    check(idents(leaves) == idents(plain_leaves), "e: CRDT and floor disagree")
    return WorkloadResult(
        WORKLOADS["e"], _erase(timed), _erase(base), f"{n:,} leaves returned", _best(phases)
    )


# ---------------------------------------------------------------------------- all


def _erase(timing: Timing[object]) -> Timing[object]:
    """Keep the samples, drop the (possibly huge) result so it can be garbage collected."""
    return Timing(samples=timing.samples, result=None)


def _best(phases: list[dict[str, float]]) -> dict[str, float]:
    return {name: min(p[name] for p in phases) for name in phases[0]} if phases else {}


RUNNERS: dict[str, Callable[[Sizes, int], WorkloadResult]] = {
    "a": workload_a,
    "b": workload_b,
    "c": workload_c,
    "d": workload_d,
    "e": workload_e,
}


def run_workloads(
    sizes: Sizes, repeat: int, *, progress: Callable[[str], None] | None = None
) -> list[WorkloadResult]:
    """Measure and check every workload, in order.

    Raises:
        CheckFailed: a workload (CRDT or floor) returned a wrong result.
    """
    results = []
    for workload_id, runner in RUNNERS.items():
        result = runner(sizes, repeat)
        if progress is not None:
            progress(
                f"workload {workload_id}: {result.crdt.best_ms:9.2f} ms "
                f"(floor {result.floor.best_ms:.2f} ms) - {result.verified}"
            )
        results.append(result)
    return results
