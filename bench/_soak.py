"""Soak: a long run in the cluster simulator, on virtual time, with memory sampled along the way.

The issue's requirement ("Hardening", *Bounded memory in long runs*): a run with a million
track/untrack operations and a hundred node restarts ends with memory proportional to the live
presences only, and the delta generations respect their caps.

The run is one :class:`~presence_adapters.simulation.Scenario` written out by
:func:`soak_scenario`: :attr:`SoakPlan.nodes` nodes with :data:`CONFIG` (the simulator's
TrackerConfig with a 20 s permdown period and a 64 KiB message limit, so full transfers travel
in parts), a lightly faulty network (:data:`NETWORK`: 1 to 50 ms, 1 % loss, 1 % duplication,
2 % reordering, so gaps and transfer requests happen) and a steady client workload (track,
update, untrack, disconnect) that holds the live presences at :attr:`SoakPlan.max_presences`.
After a :attr:`SoakPlan.warmup` (the workload fills up), the restarts come evenly spread, the
nodes but the first in turn: a crash (no goodbye) or, for :attr:`SoakPlan.graceful_share` of
them, a graceful shutdown, and the node comes back a few seconds later as a new incarnation.
The first node, the *survivor*, never restarts: it lives through the whole history, so whatever
a tracker keeps of it piles up there. After the last restart the workload runs on for
:attr:`SoakPlan.tail`, long enough for every retired incarnation to be forgotten.

The simulation runs with ``checks=False``: its invariants remember every ``phx_ref`` ever handed
out, which would grow with the run and drown what is measured. The soak checks instead, after
the settle phase, that every running replica lists exactly what the live connections track.

About 50 times along the run (the simulation's ``on_progress``) and once at the end, the soak
takes a :class:`SoakSample`: the operations done, the live presences, the whole process's traced
memory (:mod:`tracemalloc`, started just before the simulation is built, read after a garbage
collection) and the :class:`Footprint` of every running tracker: what it stores that could grow
with history, counted, and for the survivor the bytes its tracker retains. :func:`footprint` is
the one place that reads the tracker's private attributes; when the core renames one, it fails
naming what it was looking for, and only it needs adapting.

:func:`soak_problems` judges a run: every count within a bound derived from the plan alone
(:func:`soak_bounds`: never from the number of operations or restarts), the counts at the end
within what the live presences and the running nodes account for, the survivor's memory and the
traced memory at the end within :data:`GROWTH_LIMIT` and :data:`TRACED_LIMIT` of the first
sample at the plateau, the generations within their caps. ``python -m bench --soak`` runs
:data:`FULL_SOAK` (a million operations, 100 restarts; some 12 minutes of CPU, tracing included)
and prints the curve; ``tests/sim/test_soak.py`` runs :data:`CI_SOAK`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import random
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import attrs

from presence_adapters.simulation import (
    SIM_CONFIG,
    Fault,
    FaultyNetwork,
    Scenario,
    Simulation,
    Workload,
)
from presence_core import Tracker, TrackerConfig

__all__ = [
    "CI_SOAK",
    "CONFIG",
    "COUNTS",
    "FULL_SOAK",
    "GROWTH_LIMIT",
    "MESSAGE_BYTES",
    "NETWORK",
    "QUANTITIES",
    "Footprint",
    "FootprintError",
    "SoakBounds",
    "SoakPlan",
    "SoakResult",
    "SoakSample",
    "TRACED_LIMIT",
    "footprint",
    "render_soak",
    "run_soak",
    "soak_bounds",
    "soak_problems",
    "soak_scenario",
]

MESSAGE_BYTES = 64 * 1024
"""Every node's ``max_message_bytes``: deltas fit in one message, full transfers go in parts."""

NETWORK = FaultyNetwork(
    latency_min=0.001, latency_max=0.05, loss=0.01, duplicate=0.01, reorder=0.02
)
"""The soak's network: the simulator's latencies, with a little loss, duplication and reordering
so that gaps, clouds and transfer requests are exercised too."""

CONFIG = attrs.evolve(
    SIM_CONFIG,
    permdown_period=20.0,
    max_message_bytes=MESSAGE_BYTES,
    max_meta_bytes=4096,
    max_conn_bytes=256,
    max_topic_bytes=256,
    max_key_bytes=256,
)
"""The simulator's TrackerConfig (a tick every 0.5 s, down after 4 s of silence) with a permdown
period of 20 s instead of 60 (retired incarnations are forgotten sooner, so the run ends with
none left after a shorter tail) and a message limit of :data:`MESSAGE_BYTES`, with limits on
one presence (and on the clocks every part repeats) that fit it."""

GROWTH_LIMIT = 1.25
"""The most the survivor's tracker may retain at the end, as a multiple of what it retained at
the first sample at the full plateau of live presences.

Both points hold the same live presences (the plateau, :attr:`SoakPlan.max_presences`); what
differs is the history behind them: every operation and restart in between. The survivor (the
first node) never restarts, so whatever its tracker keeps of that history is still there.
"""

TRACED_LIMIT = 1.5
"""The same for the traced memory of the whole process: looser, because it also holds every
tracker's delta generations (which swing between empty and their caps as they fill and start
over: some 1.5 MB in the test's run) and the messages in flight."""

PLATEAU = 0.95
"""A sample is on the plateau when it has at least this share of ``max_presences`` live."""


@dataclass(frozen=True)
class SoakPlan:
    """The sizes of one soak run.

    Attributes:
        operations: client operations (track, update, untrack, disconnect) to run, at least.
        restarts: node restarts, spread evenly over the run.
        nodes: cluster size.
        rate: client operations per virtual second, cluster-wide. At 200 a node's window of one
            tick holds some 25 operations, so the smallest delta generation (100) holds several.
        max_presences: live presences the workload holds (joins turn into leaves above it).
        topics: topics of the workload.
        keys: presence keys of the workload (with 3 connections per key and node).
        graceful_share: the share of the restarts that are graceful shutdowns (else crashes).
        warmup: virtual seconds before the first restart, for the workload to fill up (the
            first sample at the plateau of live presences comes before any restart).
        seed: the scenario's seed.
        config: every node's TrackerConfig (:data:`CONFIG`).
    """

    operations: int = 1_000_000
    restarts: int = 100
    nodes: int = 4
    rate: float = 200.0
    max_presences: int = 2_000
    topics: int = 20
    keys: int = 500
    graceful_share: float = 0.3
    warmup: float = 30.0
    seed: int = 1
    config: TrackerConfig = dataclasses.field(default_factory=lambda: CONFIG)

    @property
    def duration(self) -> float:
        """Virtual seconds of workload: enough for :attr:`operations` (5 deviations of margin)."""
        return (self.operations + 5 * math.sqrt(self.operations)) / self.rate

    @property
    def tail(self) -> float:
        """Virtual seconds of workload after the last restart: every retired incarnation is
        permanently down (and forgotten) by the end: ``permdown_period``, the down period four
        times over (the last restart's gap, the silence before down, a tick) and a second."""
        config = self.config
        return config.permdown_period + 4 * config.effective_down_period + 1.0

    @property
    def spacing(self) -> float:
        """Virtual seconds between two restarts (spread from :attr:`warmup` to the tail)."""
        return (self.duration - self.warmup - self.tail) / self.restarts


FULL_SOAK = SoakPlan()
"""What the issue asks for: a million operations and a hundred restarts (``python -m bench
--soak``; some 12 minutes of CPU, most of it :mod:`tracemalloc`'s, which slows the simulator
about five times)."""

CI_SOAK = SoakPlan(operations=20_000, restarts=9, max_presences=1_200, warmup=20.0)
"""The test's run (``tests/sim/test_soak.py``): the same cluster, rate and mix of operations, 50
times fewer operations, fewer live presences (so the warmup fills up sooner), restarts closer
together (each restarting node every 15 virtual seconds or so)."""


def soak_scenario(plan: SoakPlan) -> Scenario:
    """The plan as a simulator scenario (deterministic in ``plan.seed``)."""
    names = tuple(f"n{i}" for i in range(plan.nodes))
    rng = random.Random(f"presence-soak:{plan.seed}")
    down = plan.config.effective_down_period
    faults: list[Fault] = []
    if plan.spacing <= 0:
        raise ValueError(f"{plan} leaves no time for the restarts between warmup and tail")
    graceful = set(rng.sample(range(plan.restarts), round(plan.graceful_share * plan.restarts)))
    restarting = names[1:] or names  # the first node lives through every restart of the others
    for index in range(plan.restarts):
        at = plan.warmup + (index + 0.5) * plan.spacing
        node = (restarting[index % len(restarting)],)
        kind: Literal["crash", "shutdown"] = "shutdown" if index in graceful else "crash"
        # Back after a quarter to three down periods (some peers see the new incarnation before
        # the old one went down, others after), before the node's next turn.
        gap = min(rng.uniform(0.25 * down, 3 * down), len(restarting) * plan.spacing / 2)
        faults.append(Fault(at=at, kind=kind, nodes=node))
        faults.append(Fault(at=at + gap, kind="restart", nodes=node))
    workload = Workload(
        rate=plan.rate,
        join=0.6,
        update=0.2,
        leave=0.1,
        disconnect=0.1,
        topics=plan.topics,
        hot_topics=2,
        hot_share=0.3,
        keys=plan.keys,
        conns_per_key=3,
        max_presences=plan.max_presences,
    )
    return Scenario(
        nodes=names,
        seed=plan.seed,
        duration=plan.duration,
        config=plan.config,
        network=NETWORK,
        workload=workload,
        faults=tuple(faults),
    )


# ------------------------------------------------------------------------------------ footprint


class FootprintError(AssertionError):
    """The tracker no longer has an attribute :func:`footprint` reads: adapt :func:`footprint`."""


@dataclass(frozen=True)
class Footprint:
    """What one tracker stores that could grow with history, counted.

    Attributes:
        entries: stored entries, visible or hidden (a down replica's are kept until permdown).
        visible: entries of replicas not marked down (what ``list`` shows, all topics).
        replicas: replicas in the CRDT's context, this one included.
        down: replicas marked down, kept until their permdown.
        cloud_dots: dots observed beyond a gap, all replicas together.
        cloud_replicas: replicas with a cloud entry (empty or not).
        index_keys: keys at the top of the CRDT's indexes (by owner, by topic, by connection):
            an index that keeps an empty dict for every owner or topic ever seen grows here.
        pending_delta: values plus dots of the delta not yet broadcast (reset every tick).
        records: remote replica records (liveness).
        departed: retired incarnations remembered (that left gracefully or were replaced), so
            that their late heartbeats do not bring them back.
        windows: replay windows of the origins heard (sealed messages only; 0 without a
            keyring, or in a core without them).
        generations: the size of each delta generation (values plus cloud dots).
        caps: the generations' caps, ``config.max_delta_sizes``.
        requests: outstanding transfer requests.
        assemblies: messages in parts being assembled (heartbeats and transfer replies).
        clockset: clocks collected towards the next transfer sampling.
        events: events queued for the application and not yet taken.
        outbox: messages queued for the transport and not yet taken.
        retained: bytes of every object reachable from the tracker (``sys.getsizeof`` each,
            once), the delta generations left out (they are counted by ``generations``, and
            swing with their fill far more than the rest): the tracker's own memory. ``None``
            unless asked for (the walk takes some 50 ms under :mod:`tracemalloc`).
    """

    entries: int
    visible: int
    replicas: int
    down: int
    cloud_dots: int
    cloud_replicas: int
    index_keys: int
    pending_delta: int
    records: int
    departed: int
    windows: int
    generations: tuple[int, ...]
    caps: tuple[int, ...]
    requests: int
    assemblies: int
    clockset: int
    events: int
    outbox: int
    retained: int | None


_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
"""What :func:`_retained` does not count or walk into: classes, modules and functions."""


def _retained(root: object, leave_out: object) -> int:
    """Bytes of every object reachable from ``root`` (each once), not through ``leave_out``.

    Walked level by level, with one ``gc.get_referents`` call a level: few allocations, so
    the walk stays cheap under :mod:`tracemalloc`.
    """
    seen = {id(leave_out)}
    total = 0
    level: list[object] = [root]
    while level:
        fresh = []
        for obj in level:
            key = id(obj)
            if key in seen or isinstance(obj, _SHARED):
                continue
            seen.add(key)
            total += sys.getsizeof(obj)
            fresh.append(obj)
        level = gc.get_referents(*fresh)
    return total


def _probe(obj: object, what: str, *names: str) -> Any:
    """``obj``'s first attribute among ``names``; a :class:`FootprintError` when none exists."""
    for name in names:
        try:
            return getattr(obj, name)
        except AttributeError:
            continue
    slots = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())]
    have = sorted({*getattr(obj, "__dict__", {}), *slots})
    raise FootprintError(
        f"soak footprint: {type(obj).__name__} has no {' or '.join(names)} (what the soak reads "
        f"to count {what}); its attributes are now {have}. The core changed: adapt "
        "bench/_soak.py footprint() to the new attributes."
    )


def _size(value: Any) -> int:
    return len(value) if value is not None else 0


def footprint(tracker: Tracker, *, retained: bool = False) -> Footprint:
    """Count what ``tracker`` stores (the only function that reads its private attributes);
    with ``retained``, also weigh it (:attr:`Footprint.retained`).

    Where the core renamed an attribute, every name it had is tried (``_departed`` became
    ``_retired``; the clock set ``_clockset`` became a clock per record, ``_Record.sampled``).

    Raises:
        FootprintError: an attribute it reads is gone (the core was reworked): adapt this
            function, the message says which attribute and what was counted with it.
    """
    state = tracker.state
    clouds: Mapping[Any, set[int]] = _probe(state, "cloud dots", "_clouds")
    indexes = [
        _probe(state, "the values by owner", "_rows"),
        _probe(state, "the identities by owner", "_ids"),
        _probe(state, "the entries by topic", "_topics"),
        _probe(state, "our own entries by topic", "_own_topics"),
        _probe(state, "our own entries by connection", "_own_ids"),
    ]
    tombs: Mapping[Any, set[int]] = _probe(state, "the pending delta's tombstones", "_delta_tombs")
    delta_values = _probe(state, "the pending delta's values", "_delta_values")
    delta_start: int = _probe(state, "the pending delta's start", "_delta_start")
    generations = _probe(tracker, "the delta generations", "_generations")
    records: Mapping[Any, Any] = _probe(tracker, "remote replica records", "_records")
    requests: Mapping[Any, Any] = _probe(tracker, "outstanding transfer requests", "_requests")
    heartbeat_parts = _probe(tracker, "heartbeats in parts", "_heartbeat_parts")
    replying = sum(
        1
        for r in requests.values()
        for parts in _probe(r, "the replies in parts, by request id", "asked").values()
        if parts is not None
    )
    clockset = sum(
        1 for r in records.values() if _probe(r, "a sampled clock", "sampled") is not None
    )
    return Footprint(
        entries=len(state),
        visible=sum(1 for _ in state.visible_entries()),
        replicas=len(state.context),
        down=len(state.down_replicas()),
        cloud_dots=sum(len(dots) for dots in clouds.values()),
        cloud_replicas=len(clouds),
        index_keys=sum(len(index) for index in indexes),
        pending_delta=(
            len(delta_values)
            + sum(len(dots) for dots in tombs.values())
            + max(0, state.clock - delta_start)
        ),
        records=len(records),
        departed=_size(_probe(tracker, "retired incarnations", "_retired", "_departed")),
        # the security layer's replay windows, one per origin heard (none without a keyring)
        windows=_size(getattr(tracker, "_windows", None)),
        generations=tuple(g.size for g in _probe(generations, "generations", "generations")),
        caps=tuple(tracker.config.max_delta_sizes),
        requests=len(requests),
        assemblies=_size(heartbeat_parts) + replying,
        clockset=clockset,
        events=_size(_probe(tracker, "queued events", "_events")),
        outbox=_size(_probe(tracker, "the outbox", "_outbox")),
        retained=_retained(tracker, generations) if retained else None,
    )


# ------------------------------------------------------------------------------------ the run

COUNTS = (
    "entries",
    "visible",
    "replicas",
    "down",
    "cloud_dots",
    "cloud_replicas",
    "index_keys",
    "pending_delta",
    "records",
    "departed",
    "windows",
    "requests",
    "assemblies",
    "clockset",
    "events",
    "outbox",
)
"""The :class:`Footprint` fields that are single counts (``generations`` is per level)."""


@dataclass(frozen=True)
class SoakSample:
    """One point of the curve.

    Attributes:
        at: virtual time.
        operations: client operations done so far.
        restarts: node restarts done so far (incarnations started beyond the first ones).
        live: presences the live connections track, all nodes together.
        owned: the same, by node (running nodes only).
        traced: bytes :mod:`tracemalloc` traces for the whole process (after a collection).
        footprints: the footprint of each running tracker, by node.
    """

    at: float
    operations: int
    restarts: int
    live: int
    owned: Mapping[str, int]
    traced: int
    footprints: Mapping[str, Footprint]

    def most(self, field: str) -> int:
        """The largest value of the count ``field`` among the trackers (0 if none runs)."""
        return max((getattr(f, field) for f in self.footprints.values()), default=0)

    def generations(self) -> tuple[int, ...]:
        """Per generation level, the largest size among the trackers."""
        levels = [f.generations for f in self.footprints.values()]
        width = max((len(g) for g in levels), default=0)
        return tuple(max(g[i] for g in levels if len(g) > i) for i in range(width))


@dataclass(frozen=True)
class SoakResult:
    """A soak run: its samples (the last one after the settle phase) and what it cost.

    Attributes:
        plan: what ran.
        samples: the curve, in order; the last is taken after the run ended.
        peak_traced: tracemalloc's own peak over the whole run (transient allocations too).
        seconds: wall-clock seconds the run took (sampling included).
        digest: the simulation's trace digest (the same plan gives the same digest).
        converged: after the settle phase, every running replica listed exactly what the live
            connections tracked.
        errors: the simulation's violations, as text (with its checks off, only a tracker that
            raised, ``error``, or a message a node could not decode, ``malformed``).
        cpu_seconds: CPU seconds of this process during the run (on a shared machine the wall
            time also counts the others' load).
    """

    plan: SoakPlan
    samples: tuple[SoakSample, ...]
    peak_traced: int
    seconds: float
    digest: str
    converged: bool
    errors: tuple[str, ...]
    cpu_seconds: float = 0.0

    @property
    def survivor(self) -> str:
        """The node that never restarts (the first): it lives through the whole history."""
        return soak_scenario(self.plan).nodes[0]

    @property
    def operations(self) -> int:
        """Operations the run performed."""
        return self.samples[-1].operations

    @property
    def restarts(self) -> int:
        """Restarts the run performed."""
        return self.samples[-1].restarts

    def plateau(self) -> list[SoakSample]:
        """The samples with the live presences at the plateau (see :data:`PLATEAU`)."""
        floor = PLATEAU * self.plan.max_presences
        return [s for s in self.samples if s.live >= floor]

    def first_plateau(self) -> SoakSample:
        """The earliest sample at the plateau: the least history behind the full live state.

        In the test's run it comes before the first restart; in the full run the samples are
        some 100 virtual seconds apart, and the first one after the start comes after the first
        restart (with 2 % of the operations behind it).

        Raises:
            AssertionError: no sample is at the plateau: the workload never filled up.
        """
        plateau = self.plateau()
        if not plateau:
            raise AssertionError(
                f"soak: no sample has {PLATEAU:.0%} of {self.plan.max_presences} presences "
                "live: the workload never filled up"
            )
        return plateau[0]


def _converged(sim: Simulation) -> bool:
    expected = {ref for model in sim.tracked().values() for ref in model.values()}
    for tracker in sim.trackers().values():
        listed = {str(e.meta.get("phx_ref")) for e in tracker.state.visible_entries()}
        if listed != expected:
            return False
    return True


def _incarnations(sim: Simulation) -> Iterator[int]:
    for tracker in sim.trackers().values():
        yield tracker.replica.vsn


def run_soak(plan: SoakPlan, *, progress: Callable[[str], None] | None = None) -> SoakResult:
    """Run ``plan`` in the simulator and sample its memory about 50 times along the way.

    Tracing starts just before the simulation is built and stops when the run ends; the
    result's last sample is taken after the settle phase, with the workload stopped.
    """
    scenario = soak_scenario(plan)
    survivor = scenario.nodes[0]
    samples: list[SoakSample] = []
    # Restarts counted from the fault schedule, so a node that is down at a sample still counts.
    restart_times = sorted(f.at for f in scenario.faults if f.kind == "restart")

    def sample(now: float) -> None:
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        owned = {name: len(model) for name, model in sim.tracked().items()}
        live = sum(owned.values())
        prints = {
            name: footprint(tracker, retained=name == survivor)
            for name, tracker in sorted(sim.trackers().items())
        }
        restarts = sum(1 for at in restart_times if at <= now)
        samples.append(
            SoakSample(
                at=now,
                operations=sim.operations,
                restarts=restarts,
                live=live,
                owned=owned,
                traced=traced,
                footprints=prints,
            )
        )
        if progress is not None:
            progress(
                f"soak: t={now:,.0f}s ops={sim.operations:,} live={live:,} "
                f"traced={traced / 1e6:.1f} MB"
            )

    failed: list[Exception] = []

    def on_progress(now: float, end: float) -> None:
        try:
            sample(now)
        except Exception as exc:  # the simulation would report it as a tracker error
            failed.append(exc)
            raise

    gc.collect()
    began, cpu = time.perf_counter(), time.process_time()
    tracemalloc.start()
    try:
        sim = Simulation(scenario, checks=False, on_progress=on_progress)
        result = sim.run()
        if failed:
            raise failed[0]
        sample(sim.now)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    errors = tuple(str(v) for v in result.violations)
    return SoakResult(
        plan=plan,
        samples=tuple(samples),
        peak_traced=peak,
        seconds=seconds,
        digest=result.digest,
        converged=_converged(sim),
        errors=errors,
        cpu_seconds=cpu,
    )


# ------------------------------------------------------------------------------------ bounds


@dataclass(frozen=True)
class SoakBounds:
    """How large each footprint count may get in a correct tracker, whatever the run's length.

    Derived from the plan only (:func:`soak_bounds`): live presences, nodes, topics, the tracker
    config and the restart rhythm, never the number of operations or restarts. A count that
    grows with history crosses its bound in a long enough run.

    Attributes:
        during: per :class:`Footprint` count field, its bound at any sample.
        window: values plus dots of one tick's delta at the workload's rate, with a margin.
        generations: the most any delta generation may hold, whatever its level (twice the
            largest cap: see :func:`soak_bounds`).
    """

    during: Mapping[str, int]
    window: int
    generations: int


def soak_bounds(plan: SoakPlan) -> SoakBounds:
    """The bounds of :class:`SoakBounds`, derived from ``plan``.

    * ``retired``: old incarnations a tracker may still hold (down, not yet permanently): the
      restarts within one ``permdown_period`` plus four down periods, plus one.
    * ``window``: one tick's delta: at most 3 units an operation (an update: a value, a dot and
      the tombstone of the old dot), with a margin of four (a late tick, a burst, the
      tombstones a merge gossips on).
    * generations: twice the largest cap, for every level. Looser than the caps themselves
      (``generation_caps`` in :func:`soak_problems`): Phoenix's push rule keeps a delta larger
      than a cap whole (a busy window, or a peer's generation received in a transfer, at level
      0; an oversized merge handed up one level), which exceeds the caps without growing with
      history; this bound tells the two apart.
    """
    config = plan.config
    nodes = plan.nodes
    down = config.effective_down_period
    retired = math.ceil((config.permdown_period + 4 * down) / plan.spacing) + 1
    replicas = nodes + retired
    window = math.ceil(4 * 3 * plan.rate * config.broadcast_period)
    presences = plan.max_presences
    during = {
        # the live presences, plus the hidden ones of retired incarnations (all of them, at most)
        "entries": presences * (1 + retired),
        "visible": presences * (1 + retired),
        "replicas": replicas,
        "down": retired,
        # gaps: a few windows of each replica beyond a lost delta, until a transfer fills them
        "cloud_dots": replicas * window * 4,
        "cloud_replicas": replicas,
        # by owner (two indexes), by topic (two), by connection (one a presence at most)
        "index_keys": 2 * replicas + 2 * plan.topics + presences,
        "pending_delta": window + presences,
        "records": replicas - 1,
        # the newest retired incarnation of each name (a core that remembers every retired
        # incarnation grows here with the restarts)
        "departed": nodes,
        "windows": replicas,
        "requests": replicas - 1,
        "assemblies": 2 * (replicas - 1),
        "clockset": replicas,
        "events": 0,
        "outbox": 0,
    }
    return SoakBounds(during=during, window=window, generations=2 * max(config.max_delta_sizes))


def _end_bounds(plan: SoakPlan, window: int, sample: SoakSample, name: str) -> dict[str, int]:
    """What a tracker may hold at the end: every retired incarnation is gone by then
    (:attr:`SoakPlan.tail`) and the workload has stopped, so only the live presences and the
    running nodes count. ``entries``, ``visible``, ``replicas`` and ``records`` must be exact."""
    others = plan.nodes - 1
    return {
        "entries": sample.live,
        "visible": sample.live,
        "replicas": plan.nodes,
        "down": 0,
        "cloud_dots": window,
        "cloud_replicas": others,
        "index_keys": 2 * others + 2 * plan.topics + sample.owned.get(name, 0),
        "pending_delta": window,
        "records": others,
        "departed": others,
        "windows": others,
        "requests": others,
        "assemblies": others,
        "clockset": others,
        "events": 0,
        "outbox": 0,
    }


_EXACT = frozenset({"entries", "visible", "replicas", "records"})
"""The counts that must equal their end bound (the others must not exceed it)."""

QUANTITIES = (
    *COUNTS,
    "generation_caps",
    "generations",
    "retained",
    "traced",
    "converged",
    "errors",
)
"""Every quantity :func:`soak_problems` judges (its keys)."""


def soak_problems(result: SoakResult) -> dict[str, list[str]]:
    """Every problem found, by quantity (one of :data:`QUANTITIES`).

    * each :class:`Footprint` count: beyond its bound at any sample (:func:`soak_bounds`), or,
      at the end, beyond (or, for ``entries``, ``visible``, ``replicas`` and ``records``, not
      equal to) what the live presences and the running nodes account for;
    * ``generation_caps``: a delta generation holding more than its cap
      (``config.max_delta_sizes``);
    * ``generations``: one holding more than :attr:`SoakBounds.generations`;
    * ``retained``: the survivor's (the first node's, never restarted) own memory at the end
      above :data:`GROWTH_LIMIT` times what it was at the first sample at the plateau;
    * ``traced``: the traced memory at the end above :data:`TRACED_LIMIT` times that of the
      first sample at the plateau (both hold the same live presences);
    * ``converged`` and ``errors``: the run itself went wrong.

    Quantities with no problem are absent: an empty dict means the soak passed.
    """
    plan = result.plan
    bounds = soak_bounds(plan)
    problems: dict[str, list[str]] = {}

    def report(quantity: str, problem: str) -> None:
        problems.setdefault(quantity, []).append(problem)

    last = result.samples[-1]
    for s in result.samples:
        for name, f in s.footprints.items():
            where = f"{name} at t={s.at:,.0f}s ({s.operations:,} ops, {s.restarts} restarts)"
            for field in COUNTS:
                value, bound = getattr(f, field), bounds.during[field]
                if value > bound:
                    report(field, f"{where}: {field}={value} > {bound}")
            for level, (size, cap) in enumerate(zip(f.generations, f.caps, strict=False)):
                if size > cap:
                    report("generation_caps", f"{where}: generation {level} holds {size} > {cap}")
                if size > bounds.generations:
                    report(
                        "generations",
                        f"{where}: generation {level} holds {size} > {bounds.generations}",
                    )
    for name, f in last.footprints.items():
        where = f"{name} at the end ({last.operations:,} ops, {last.restarts} restarts)"
        for field, bound in _end_bounds(plan, bounds.window, last, name).items():
            value = getattr(f, field)
            if value > bound or (field in _EXACT and value != bound):
                relation = "!=" if field in _EXACT else ">"
                report(field, f"{where}: {field}={value} {relation} {bound}")
    first = result.first_plateau()
    survivor = result.survivor
    before = first.footprints[survivor].retained or 0
    after = last.footprints[survivor].retained or 0
    if after > GROWTH_LIMIT * before:
        report(
            "retained",
            f"{survivor}, never restarted, grew from {before / 1e6:.2f} MB ({first.live} live, "
            f"{first.operations:,} ops) to {after / 1e6:.2f} MB ({last.live} live, "
            f"{last.operations:,} ops): over {GROWTH_LIMIT}x",
        )
    if last.traced > TRACED_LIMIT * first.traced:
        report(
            "traced",
            f"traced memory grew from {first.traced / 1e6:.2f} MB ({first.live} live, "
            f"{first.operations:,} ops) to {last.traced / 1e6:.2f} MB ({last.live} live, "
            f"{last.operations:,} ops): over {TRACED_LIMIT}x",
        )
    if not result.converged:
        report("converged", "after the settle phase a replica did not list the live presences")
    for error in result.errors:
        report("errors", error)
    return problems


# ------------------------------------------------------------------------------------ report


def _mb(value: int) -> str:
    return f"{value / 1e6:.2f}"


def render_soak(result: SoakResult) -> str:
    """The curve as a text table, the footprint at the end, the summary and any problems."""
    plan = result.plan
    survivor = result.survivor
    caps = "/".join(str(c) for c in plan.config.max_delta_sizes)
    lines = [
        f"Soak: {plan.nodes} nodes, {result.operations:,} operations, {result.restarts} restarts "
        f"({plan.graceful_share:.0%} graceful; {survivor} never restarts), {plan.rate:g} "
        f"operations per virtual second, {plan.max_presences:,} live presences at most, "
        f"seed {plan.seed}",
        "",
        f"Per sample: the traced MB of the whole process, the MB {survivor}'s tracker retains "
        "(generations",
        "left out); then the largest value among the running trackers of the entries stored, "
        "replicas",
        "known, replicas down, cloud dots, records, retired incarnations, the generations' sizes",
        f"(caps {caps}), transfer requests, assemblies, sampled clocks and the pending delta.",
        "",
    ]
    header = (
        f"{'virtual s':>9} {'ops':>9} {'rst':>3} {'live':>5} {'traced':>6} {survivor + ' MB':>6} "
        f"{'entries':>7} {'repl':>4} {'down':>4} {'cloud':>5} {'recs':>4} {'ret':>3} "
        f"{'generations':>16} {'req':>3} {'asm':>3} {'clk':>3} {'pend':>4}"
    )
    lines += [header, "-" * len(header)]
    for s in result.samples:
        gens = "/".join(str(g) for g in s.generations()) or "-"
        own = s.footprints.get(survivor)
        lines.append(
            f"{s.at:>9,.0f} {s.operations:>9,} {s.restarts:>3} {s.live:>5} {_mb(s.traced):>6} "
            f"{_mb(own.retained) if own and own.retained else '-':>6} {s.most('entries'):>7} "
            f"{s.most('replicas'):>4} {s.most('down'):>4} {s.most('cloud_dots'):>5} "
            f"{s.most('records'):>4} {s.most('departed'):>3} {gens:>16} {s.most('requests'):>3} "
            f"{s.most('assemblies'):>3} {s.most('clockset'):>3} {s.most('pending_delta'):>4}"
        )
    first = result.first_plateau()
    start, last = result.samples[0], result.samples[-1]
    peak = max(result.samples, key=lambda s: s.traced)
    lines += ["", f"Footprint at the end ({last.live} live presences):"]
    for name, f in last.footprints.items():
        fields = dataclasses.asdict(f)
        shown = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in ("caps", "retained"))
        weight = f"{_mb(f.retained)} MB retained; " if f.retained is not None else ""
        lines.append(f"  {name}: {weight}{shown}")
    before = first.footprints[survivor].retained or 0
    after = last.footprints[survivor].retained or 0
    lines += [
        "",
        f"traced memory: start {_mb(start.traced)} MB ({start.live} live), first plateau "
        f"{_mb(first.traced)} MB ({first.live} live, {first.operations:,} ops), sampled peak "
        f"{_mb(peak.traced)} MB (t={peak.at:,.0f}s, {peak.live} live), end {_mb(last.traced)} MB "
        f"({last.live} live, {last.operations:,} ops); tracemalloc's own peak "
        f"{_mb(result.peak_traced)} MB",
        f"end / first plateau: traced {last.traced / first.traced:.2f}x, {survivor}'s tracker "
        f"{after / max(before, 1):.2f}x ({_mb(before)} -> {_mb(after)} MB); limit {GROWTH_LIMIT}x",
        f"converged after the settle phase: {'yes' if result.converged else 'NO'}; digest "
        f"{result.digest[:16]}",
        f"wall time: {result.seconds:,.1f} s"
        + (f" ({result.cpu_seconds:,.1f} s of CPU)" if result.cpu_seconds else "")
        + ", tracing and sampling included",
    ]
    problems = soak_problems(result)
    if problems:
        lines += ["", "PROBLEMS (memory that grows with history, a cap exceeded, or a broken run):"]
        for quantity, found in sorted(problems.items()):
            shown_problems = found[:3] + (
                [f"... and {len(found) - 3} more"] if len(found) > 3 else []
            )
            lines += [f"  {quantity}:"] + [f"    {p}" for p in shown_problems]
    else:
        lines += ["", "every quantity stayed within its bound: no growth with history"]
    return "\n".join(lines)
