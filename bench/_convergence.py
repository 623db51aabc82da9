"""Convergence: virtual seconds from a partition heal, and from a node crash, until every live
replica's view is equal, measured by the deterministic simulator (``presence_adapters.simulation``).

Every run is a :class:`~presence_adapters.simulation.Scenario` written out here, so what it does is
plain: ``n`` nodes ``n0`` .. ``n<n-1>`` with :data:`CONFIG` (the simulator's own TrackerConfig), a
network of :data:`NETWORK` (1 to 50 ms, nothing lost), a light client workload (:data:`WORKLOAD`:
joins, updates, leaves and disconnects at 2 operations per virtual second, cluster-wide) and one
fault:

* **heal**: at :data:`PARTITION_AT` half the nodes (a seeded random half) are cut off from the
  other half for :data:`PARTITION_LENGTH` (longer than the down period, so each side has marked the
  other down and hidden its presences), then the partition heals;
* **crash**: at :data:`CRASH_AT` one node stops without a goodbye. The victim is a node that holds
  presences at that moment (else there is nothing to converge on): the client operations of a seed
  do not depend on the network or on a partition, so the heal run of the same seed tells which
  node holds the most at :data:`CRASH_AT`; the crash run then checks that it really did.

The figure is the simulator's :class:`~presence_adapters.simulation.ConvergenceSample` of that
fault: the virtual time from the fault until every running replica shows every presence that was
alive at the fault and none that was gone by then (checked every :data:`CHECK_INTERVAL`, which is
the resolution). Each size runs a few seeds; the median and the worst are reported. Every run must
pass all the simulator's invariants (``SimResult.ok``) and converge, or the suite fails.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from presence_adapters.simulation import (
    SIM_CONFIG,
    Bounds,
    Fault,
    FaultyNetwork,
    Scenario,
    SimResult,
    Simulation,
    Workload,
)
from presence_core import ReplicaRef, Tracker, TrackerConfig

__all__ = [
    "CHECK_INTERVAL",
    "CONFIG",
    "CRASH_AT",
    "NETWORK",
    "PARTITION_AT",
    "PARTITION_LENGTH",
    "WORKLOAD",
    "ConvergencePoint",
    "ConvergenceResult",
    "measure_convergence",
]

CONFIG: TrackerConfig = SIM_CONFIG
"""The simulator's TrackerConfig: a tick every 0.5 s, an idle heartbeat every 5 ticks, down after
4 s of silence, transfer sampling every 2 ticks (Phoenix's shape, 3x faster)."""

NETWORK = FaultyNetwork(latency_min=0.001, latency_max=0.05)
"""Uniform latency of 1 to 50 ms; no loss, duplication or reordering (the fault is the only one)."""

WORKLOAD = Workload(rate=2.0)
"""The simulator's default client mix at 2 operations per virtual second, cluster-wide."""

CHECK_INTERVAL = 0.1
"""Virtual seconds between the simulator's checks: the resolution of every figure."""

PARTITION_AT = 2.0
PARTITION_LENGTH = 1.5 * CONFIG.effective_down_period
"""Longer than the down period: both sides mark each other down before the heal."""

HEAL_AT = PARTITION_AT + PARTITION_LENGTH
HEAL_DURATION = HEAL_AT + 6.0
CRASH_AT = 4.0
CRASH_DURATION = CRASH_AT + 6.0


@dataclass(frozen=True)
class ConvergencePoint:
    """The convergence times (virtual seconds, one per seed) of one cluster size.

    Attributes:
        nodes: replicas in the cluster.
        heal: seconds from the partition's heal to convergence, per seed.
        crash: seconds from the crash to convergence, per seed.
        victim_presences: presences the crashed node held when it crashed, per seed.
        wall: wall-clock seconds all the runs of this size took.
    """

    nodes: int
    heal: tuple[float, ...]
    crash: tuple[float, ...]
    victim_presences: tuple[int, ...]
    wall: float

    @property
    def heal_median(self) -> float:
        return statistics.median(self.heal)

    @property
    def heal_worst(self) -> float:
        return max(self.heal)

    @property
    def crash_median(self) -> float:
        return statistics.median(self.crash)

    @property
    def crash_worst(self) -> float:
        return max(self.crash)


@dataclass(frozen=True)
class ConvergenceResult:
    """Every size's convergence times, and what the runs were made of.

    Attributes:
        points: one per cluster size, ascending.
        seeds: the seeds every size ran.
        config: the TrackerConfig of every node.
        bounds: the simulator's invariant bounds for these scenarios (``crash``: by when a crashed
            node's presences must be gone; ``join``: by when a presence must be seen everywhere).
        wall: wall-clock seconds of the whole section.
    """

    points: tuple[ConvergencePoint, ...]
    seeds: tuple[int, ...]
    config: TrackerConfig
    bounds: Bounds
    wall: float

    @property
    def runs(self) -> int:
        """Simulations run (two per size and seed), every one of them checked."""
        return 2 * len(self.points) * len(self.seeds)

    @property
    def note(self) -> str:
        """The timing that makes the numbers readable, in one line."""
        c = self.config
        idle = (c.max_silent_periods + 1) * c.broadcast_period
        return (
            f"TrackerConfig: broadcast_period {c.broadcast_period:g} s, idle heartbeat every "
            f"{idle:g} s, down after {c.effective_down_period:g} s of silence, transfer sampling "
            f"every {c.clock_sample_periods} ticks; network {NETWORK.latency_min * 1000:g}-"
            f"{NETWORK.latency_max * 1000:g} ms, no loss; partition of half the nodes for "
            f"{PARTITION_LENGTH:g} s; {WORKLOAD.rate:g} client operations/s; checked every "
            f"{CHECK_INTERVAL:g} s; {len(self.seeds)} seed(s) per size"
        )


class _Keeper:
    """A tracker factory that remembers the latest tracker of every node."""

    def __init__(self) -> None:
        self.trackers: dict[str, Tracker] = {}

    def __call__(self, replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        tracker = Tracker(config=config, replica=replica, rng=rng)
        self.trackers[replica.name] = tracker
        return tracker

    def owned(self) -> dict[str, int]:
        """Presences each node's tracker owns (itself the tracking replica)."""
        return {
            name: sum(1 for entry in tracker.state.entries() if entry.owner == tracker.replica)
            for name, tracker in self.trackers.items()
        }


def _scenario(
    nodes: tuple[str, ...], seed: int, faults: Sequence[Fault], duration: float
) -> Scenario:
    return Scenario(
        nodes=nodes,
        seed=seed,
        duration=duration,
        config=CONFIG,
        network=NETWORK,
        workload=WORKLOAD,
        faults=tuple(faults),
        check_interval=CHECK_INTERVAL,
    )


def _checked(result: SimResult, cause: str, what: str) -> float:
    """The convergence time of ``cause``; raises unless the run is correct and converged."""
    if not result.ok:
        shown = "\n  ".join(str(v) for v in result.violations[:5])
        raise AssertionError(
            f"convergence: {what} broke {len(result.violations)} invariant(s):\n  {shown}"
        )
    samples = [s for s in result.metrics.convergence if s.cause == cause]
    if len(samples) != 1:
        raise AssertionError(f"convergence: {what} has {len(samples)} samples of {cause!r}, not 1")
    seconds = samples[0].seconds
    if seconds is None:
        raise AssertionError(f"convergence: {what} never converged after {cause!r}")
    return max(0.0, seconds)


def _heal_run(nodes: tuple[str, ...], seed: int) -> tuple[float, Mapping[str, int]]:
    """Seconds from the heal to convergence, and the presences each node owned at CRASH_AT."""
    rng = random.Random(f"bench-convergence:{len(nodes)}:{seed}")
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    cut = max(1, len(nodes) // 2)
    side, other = sorted(shuffled[:cut]), sorted(shuffled[cut:])
    faults = [
        Fault(at=PARTITION_AT, kind="partition", nodes=side, others=other),
        Fault(at=HEAL_AT, kind="heal"),
    ]
    keeper = _Keeper()
    owned: dict[str, int] = {}

    def snapshot(now: float, end: float) -> None:
        if now <= CRASH_AT:  # the last progress call at or before the crash time
            owned.clear()
            owned.update(keeper.owned())

    scenario = _scenario(nodes, seed, faults, HEAL_DURATION)
    result = Simulation(scenario, tracker_factory=keeper, on_progress=snapshot).run()
    what = f"the heal run of {len(nodes)} nodes, seed {seed}"
    seconds = _checked(result, "heal", what)
    if result.metrics.dropped == 0:
        raise AssertionError(f"convergence: {what} dropped nothing: the partition did not bite")
    return seconds, owned


def _crash_run(nodes: tuple[str, ...], seed: int, victim: str) -> tuple[float, int]:
    """Seconds from the crash of ``victim`` to convergence, and the presences it held."""
    keeper = _Keeper()
    faults = [Fault(at=CRASH_AT, kind="crash", nodes=(victim,))]
    scenario = _scenario(nodes, seed, faults, CRASH_DURATION)
    result = Simulation(scenario, tracker_factory=keeper).run()
    what = f"the crash run of {len(nodes)} nodes, seed {seed} ({victim} crashes)"
    seconds = _checked(result, f"crash {victim}", what)
    held = keeper.owned()[victim]  # the crashed tracker is never called again: as at the crash
    if held == 0:
        raise AssertionError(f"convergence: in {what}, {victim} held no presence")
    return seconds, held


def measure_convergence(
    sizes: Sequence[int], seeds: Sequence[int], *, progress: Callable[[str], None]
) -> ConvergenceResult:
    """Run the heal and the crash scenario of every size and seed; check and collect them.

    Raises:
        AssertionError: a run broke an invariant, did not converge, or its fault did not bite.
    """
    start = time.perf_counter()
    points = []
    for n in sizes:
        began = time.perf_counter()
        nodes = tuple(f"n{i}" for i in range(n))
        heal: list[float] = []
        crash: list[float] = []
        held: list[int] = []
        for seed in seeds:
            healed, owned = _heal_run(nodes, seed)
            if not owned or max(owned.values()) == 0:
                raise AssertionError(
                    f"convergence: no node of {n} holds a presence at t={CRASH_AT:g}, seed {seed}"
                )
            victim = max(sorted(owned), key=lambda name: owned[name])
            crashed, victim_held = _crash_run(nodes, seed, victim)
            heal.append(healed)
            crash.append(crashed)
            held.append(victim_held)
        point = ConvergencePoint(
            nodes=n,
            heal=tuple(heal),
            crash=tuple(crash),
            victim_presences=tuple(held),
            wall=time.perf_counter() - began,
        )
        points.append(point)
        progress(
            f"convergence of {n}: heal {point.heal_median:.1f} s, crash {point.crash_median:.1f} s "
            f"(median, virtual; {point.wall:.1f} s of wall time)"
        )
    names = tuple(f"n{i}" for i in range(max(sizes, default=1)))
    return ConvergenceResult(
        points=tuple(points),
        seeds=tuple(seeds),
        config=CONFIG,
        bounds=_scenario(names, 0, (), HEAL_DURATION).bounds(),
        wall=time.perf_counter() - start,
    )
