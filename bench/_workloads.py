"""Workloads a to e of BENCH.md, each on the CRDT and on the plain-dict floor.

Every workload follows BENCH.md to the letter: inputs are built before timing, every repetition
starts from a fresh state built by an untimed setup, and the CRDT's repetitions are interleaved
with the floor's (:func:`~bench._timing.measure_pair`); each is timed as CPU and wall time (min and
median reported). Every timed run hands what it produced to a check right after the clocks stop
(workload c must return 100,000 joins, e 50,000 leaves, ...), for the CRDT and for the floor alike,
so neither can get fast by doing less; the check keeps only counts and a digest of the identities,
which must agree between the two.

Workload d discards each round's merge result, as Phoenix's benchmark does (it keeps no list of
1,000 results for the collector to walk): the joins and leaves are counted inside the loop, one
``len`` each a round, and checked after timing. Its round ends with ``take_delta`` (the pending
delta, then a reset: what a broadcast does) and ``compact``.

Names the BENCH.md text leaves open are fixed here: connection ``conn<i>``, topics ``topic<t>``;
in b the keys of a connection are ``key<j>``; in d the connection of join ``j`` is ``c<j>`` and its
topic ``topic<j mod 10>``; in e R1's 50,000 presences are 500 connections x 100 topics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from presence_core import Entry, MergeResult, ReplicaRef, ReplicaState

from ._floor import PlainRecord, PlainState, ident
from ._timing import Job, PhaseClock, Samples, measure_pair

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
    "crdt_a",
    "crdt_c",
    "crdt_d",
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
        crdt: the CRDT's samples (CPU and wall, every repetition).
        floor: the floor's samples, interleaved with the CRDT's.
        verified: what was checked, in words ("100,000 joins returned").
        phases: the samples of each phase of the CRDT run (c and e only).
    """

    spec: WorkloadSpec
    crdt: Samples
    floor: Samples
    verified: str
    phases: dict[str, Samples]

    @property
    def speedup(self) -> float:
        """The reference's midpoint over our min wall time (the anchors are best-of-5 wall)."""
        return self.spec.reference.mid_ms / (self.crdt.wall_min * 1000.0)

    @property
    def speedup_range(self) -> tuple[float, float]:
        ref, ours = self.spec.reference, self.crdt.wall_min * 1000.0
        return ref.low_ms / ours, ref.high_ms / ours

    @property
    def floor_ratio(self) -> float:
        """Our min CPU time over the floor's (both from the same interleaved runs)."""
        return self.crdt.cpu_min / self.floor.cpu_min


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


def digest(idents: Iterable[Ident]) -> int:
    """A digest of a set of identities: equal for equal sets (what the checks keep)."""
    return hash(frozenset(idents))


def entry_digest(entries: Iterable[Entry]) -> int:
    return digest((e.conn, e.topic, e.key) for e in entries)


def record_digest(records: Iterable[PlainRecord]) -> int:
    return digest(map(ident, records))


def d_rounds(sizes: Sizes) -> list[list[Ident]]:
    """Workload d's joins, round by round: conn ``c<j>``, topic ``topic<j mod topics>``."""
    per_round, topics = sizes.d_per_round, sizes.d_topics
    return [
        [(f"c{j}", f"topic{j % topics}", f"k{r}_{j}") for j in range(per_round)]
        for r in range(sizes.d_rounds)
    ]


# ---------------------------------------------------------------------------- a

StatePair = tuple[ReplicaState, ReplicaState]
PlainPair = tuple[PlainState, PlainState]
Counts = tuple[int, int, int]
"""Workload d's check: ``(joins merged, leaves merged, digest of what R2 holds at the end)``."""


def crdt_a(sizes: Sizes) -> Job[ReplicaState, ReplicaState, int]:
    """Workload a on the CRDT; the check returns a digest of topic1's identities."""
    inputs = grid(sizes.a_conns, sizes.a_topics)
    n = len(inputs)

    def run(state: ReplicaState) -> ReplicaState:
        return fill(state, inputs)

    def check_a(state: ReplicaState) -> int:
        check(len(state) == n and state.clock == n, f"a: {len(state)} entries, clock {state.clock}")
        check(state.count("topic0") == sizes.a_conns, "a: wrong topic size")
        return entry_digest(state.get_by_topic("topic1"))

    return Job(lambda: ReplicaState(R1), run, check_a)


def workload_a(sizes: Sizes, repeat: int) -> WorkloadResult:
    inputs = grid(sizes.a_conns, sizes.a_topics)
    n = len(inputs)

    def floor(state: PlainState) -> PlainState:
        return fill_plain(state, inputs)

    def check_floor(plain: PlainState) -> int:
        check(len(plain) == n, f"a: the floor holds {len(plain)}")
        return record_digest(plain.get_by_topic("topic1"))

    timed, base = measure_pair(
        crdt_a(sizes), Job(lambda: PlainState(R1.name), floor, check_floor), repeat=repeat
    )
    check(timed.result == base.result, "a: CRDT and floor disagree")
    return WorkloadResult(
        WORKLOADS["a"], timed.samples(), base.samples(), f"{n:,} presences stored", {}
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

    def check_crdt(entries: list[Entry]) -> int:
        check(len(entries) == per_topic, f"b: {len(entries)} entries listed, not {per_topic}")
        check(all(e.topic == "topic0" for e in entries), "b: an entry of another topic")
        return entry_digest(entries)

    def check_floor(records: list[PlainRecord]) -> int:
        check(len(records) == per_topic, f"b: the floor listed {len(records)}")
        return record_digest(records)

    timed, base = measure_pair(
        Job(
            lambda: fill(ReplicaState(R1), inputs),
            lambda state: state.get_by_topic("topic0"),
            check_crdt,
        ),
        Job(
            lambda: fill_plain(PlainState(R1.name), inputs),
            lambda p: p.get_by_topic("topic0"),
            check_floor,
        ),
        repeat=repeat,
    )
    check(timed.result == base.result, "b: CRDT and floor disagree")
    return WorkloadResult(
        WORKLOADS["b"],
        timed.samples(),
        base.samples(),
        f"{per_topic:,} entries listed from {len(inputs):,}",
        {},
    )


# ---------------------------------------------------------------------------- c


def crdt_c(
    sizes: Sizes, phases: PhaseClock | None = None
) -> Job[StatePair, tuple[ReplicaState, MergeResult], int]:
    """Workload c on the CRDT, split into extract and merge when ``phases`` is given; the check
    returns a digest of the joins returned."""
    inputs = grid(sizes.a_conns, sizes.a_topics)
    n = len(inputs)

    def setup() -> StatePair:
        r1, r2 = pair()
        fill(r1, inputs)
        return r1, r2

    def run(states: StatePair) -> tuple[ReplicaState, MergeResult]:
        r1, r2 = states
        return r2, r2.merge(r1.extract(*r2.clocks()))

    def run_in_phases(states: StatePair) -> tuple[ReplicaState, MergeResult]:
        assert phases is not None
        r1, r2 = states
        since = phases.start()
        snapshot = r1.extract(*r2.clocks())
        since = phases.lap("extract", since)
        result = r2.merge(snapshot)
        phases.lap("merge", since)
        return r2, result

    def check_c(out: tuple[ReplicaState, MergeResult]) -> int:
        r2, result = out
        check(len(result.joins) == n, f"c: {len(result.joins)} joins returned, not {n}")
        check(not result.leaves, "c: leaves returned")
        check(
            len(r2) == n and all(e.owner == R1 for e in r2.entries()), "c: R2 holds wrong entries"
        )
        check(r2.context.get(R1) == n, "c: R2 did not learn R1's clock")
        return entry_digest(result.joins)

    return Job(setup, run if phases is None else run_in_phases, check_c)


def workload_c(sizes: Sizes, repeat: int) -> WorkloadResult:
    inputs = grid(sizes.a_conns, sizes.a_topics)
    n = len(inputs)
    phases = PhaseClock()

    def plain_setup() -> PlainPair:
        p1, p2 = plain_pair()
        fill_plain(p1, inputs)
        return p1, p2

    def floor(states: PlainPair) -> tuple[PlainState, list[PlainRecord]]:
        p1, p2 = states
        return p2, p2.merge(p1.extract())

    def check_floor(out: tuple[PlainState, list[PlainRecord]]) -> int:
        p2, joins = out
        check(len(joins) == n and len(p2) == n, "c: the floor merged wrong")
        return record_digest(joins)

    timed, base = measure_pair(
        crdt_c(sizes, phases), Job(plain_setup, floor, check_floor), repeat=repeat
    )
    check(timed.result == base.result, "c: CRDT and floor disagree")
    return WorkloadResult(
        WORKLOADS["c"], timed.samples(), base.samples(), f"{n:,} joins returned", phases.phases()
    )


# ---------------------------------------------------------------------------- d


def crdt_d(sizes: Sizes) -> Job[StatePair, tuple[int, int, ReplicaState, ReplicaState], Counts]:
    """Workload d on the CRDT, every merge result discarded; the check returns the counts."""
    rounds = d_rounds(sizes)
    per_round = sizes.d_per_round
    total = sizes.d_rounds * per_round

    def run(states: StatePair) -> tuple[int, int, ReplicaState, ReplicaState]:
        r1, r2 = states
        join, leave, take, compact, merge = r1.join, r1.leave, r1.take_delta, r1.compact, r2.merge
        joins = leaves = 0
        previous: list[Ident] = []
        for batch in rounds:
            for conn, topic, key in batch:
                join(conn, topic, key, META)
            for conn, topic, key in previous:
                leave(conn, topic, key)
            result = merge(take())  # counted, then dropped: Phoenix discards it too
            joins += len(result.joins)
            leaves += len(result.leaves)
            compact()
            previous = batch
        return joins, leaves, r1, r2

    def check_d(out: tuple[int, int, ReplicaState, ReplicaState]) -> Counts:
        joins, leaves, r1, r2 = out
        check(joins == total, f"d: {joins} joins merged, not {total}")
        check(leaves == total - per_round, f"d: {leaves} leaves merged, not {total - per_round}")
        seen = {(e.conn, e.topic, e.key) for e in r2.visible_entries()}
        check(
            seen == set(rounds[-1]) and len(r1) == per_round,
            "d: R2 does not hold the last round exactly",
        )
        check(r2.context.get(R1) == r1.clock == 2 * total - per_round, "d: clocks disagree")
        check(not r2.clouds and not r1.has_delta(), "d: clouds or a pending delta left over")
        return joins, leaves, digest(seen)

    return Job(pair, run, check_d)


def workload_d(sizes: Sizes, repeat: int) -> WorkloadResult:
    rounds = d_rounds(sizes)
    per_round = sizes.d_per_round

    def floor(states: PlainPair) -> tuple[int, int, PlainState, PlainState]:
        p1, p2 = states
        join, leave, take, apply = p1.join, p1.leave, p1.take_delta, p2.apply_delta
        joins = leaves = 0
        previous: list[Ident] = []
        for batch in rounds:
            for conn, topic, key in batch:
                join(conn, topic, key, META)
            for conn, topic, key in previous:
                leave(conn, topic, key)
            joined, left = apply(take())
            joins += len(joined)
            leaves += len(left)
            previous = batch
        return joins, leaves, p1, p2

    def check_floor(out: tuple[int, int, PlainState, PlainState]) -> Counts:
        joins, leaves, p1, p2 = out
        check(len(p1) == len(p2) == per_round, "d: the floor holds the wrong presences")
        held = (r for topic in _topics(sizes) for r in p2.get_by_topic(topic))
        return joins, leaves, record_digest(held)

    timed, base = measure_pair(crdt_d(sizes), Job(plain_pair, floor, check_floor), repeat=repeat)
    check(timed.result == base.result, "d: the floor disagrees")
    joins, leaves, _ = timed.result
    return WorkloadResult(
        WORKLOADS["d"],
        timed.samples(),
        base.samples(),
        f"{joins:,} joins and {leaves:,} leaves merged, {per_round} left",
        {},
    )


def _topics(sizes: Sizes) -> list[str]:
    return [f"topic{t}" for t in range(sizes.d_topics)]


# ---------------------------------------------------------------------------- e


def workload_e(sizes: Sizes, repeat: int) -> WorkloadResult:
    inputs = grid(sizes.e_conns, sizes.e_topics)
    n = len(inputs)
    phases = PhaseClock()

    def setup() -> ReplicaState:
        r1, r2 = pair()
        fill(r1, inputs)
        r2.merge(r1.extract(*r2.clocks()))
        return r2

    def crdt(r2: ReplicaState) -> tuple[tuple[Entry, ...], tuple[Entry, ...], ReplicaState]:
        since = phases.start()
        leaves = r2.replica_down(R1)
        since = phases.lap("down", since)
        removed = r2.remove_down_replica(R1)
        phases.lap("remove", since)
        return leaves, removed, r2

    def check_crdt(out: tuple[tuple[Entry, ...], tuple[Entry, ...], ReplicaState]) -> int:
        leaves, removed, r2 = out
        check(len(leaves) == n, f"e: {len(leaves)} leaves returned, not {n}")
        check(len(removed) == n and len(r2) == 0, "e: entries left behind")
        check(R1 not in r2.replicas() and not r2.down_replicas(), "e: R1 not forgotten")
        return entry_digest(leaves)

    def plain_setup() -> PlainState:
        p1, p2 = plain_pair()
        fill_plain(p1, inputs)
        p2.merge(p1.extract())
        return p2

    def floor(p2: PlainState) -> tuple[list[PlainRecord], list[PlainRecord], PlainState]:
        leaves = p2.replica_down(R1.name)
        removed = p2.remove_down_replica(R1.name)
        return leaves, removed, p2

    def check_floor(out: tuple[list[PlainRecord], list[PlainRecord], PlainState]) -> int:
        leaves, removed, p2 = out
        check(len(leaves) == len(removed) == n and len(p2) == 0, "e: the floor is wrong")
        return record_digest(leaves)

    timed, base = measure_pair(
        Job(setup, crdt, check_crdt), Job(plain_setup, floor, check_floor), repeat=repeat
    )
    check(timed.result == base.result, "e: CRDT and floor disagree")
    return WorkloadResult(
        WORKLOADS["e"], timed.samples(), base.samples(), f"{n:,} leaves returned", phases.phases()
    )


# ---------------------------------------------------------------------------- all


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
            crdt, floor = result.crdt, result.floor
            progress(
                f"workload {workload_id}: CPU {crdt.cpu_min * 1e3:9.2f} ms, wall "
                f"{crdt.wall_min * 1e3:9.2f} ms (floor CPU {floor.cpu_min * 1e3:.2f} ms) - "
                f"{result.verified}"
            )
        results.append(result)
    return results
