"""Drivers: a presence node running on a real event loop, over the in-process memory bus.

Three measurements, each on every driver that is installed: the asyncio driver
(:mod:`presence_adapters.drivers.asyncio`), and the anyio driver
(:mod:`presence_adapters.drivers.anyio`) on asyncio and on trio. Every presence has BENCH.md's
meta. Nothing in ``src/`` is changed for the measurement.

**Latency from a track to the remote diff.** Two nodes ``a`` and ``b`` on one
:class:`~presence_adapters.MemoryHub`, each with ``TrackerConfig(broadcast_period=period)`` and the
other options at their defaults, meet (each lists the other among its replicas), and ``b``
subscribes to the topic. Each sample is: sleep a random fraction of a period (seeded; so a track
lands at a uniformly random point of ``a``'s tick cycle), read the loop's clock, ``a.track(...)``
a new presence, await the next diff of ``b``'s subscription, read the loop's clock. The diff must
hold exactly that presence with the ``phx_ref`` the track returned. A remote diff travels in the
sender's next delta broadcast, so this end-to-end time is mostly the wait for ``a``'s next tick.
To separate that wait, ``a``'s pump is instrumented (its ``wake`` method is wrapped on that one
instance): each wake-up that runs a tick records the deadline the tick was due at and the clock
reading the wake-up passes as ``now``. The first tick after the track is the one that broadcasts
its delta, so each sample also gives

* *after the tick*: from that tick's ``now`` to the diff yielded by ``b``'s subscription: the
  tick itself, encoding, the bus, ``b``'s receive loop, decoding, the merge, the subscription and
  the scheduling of two tasks: everything the library (and the loop) adds to the tick period;
* *timer lateness*: from the deadline to the wake-up that ran the tick (the event loop's timer).

The wrapper costs a function call and a comparison per wake-up (well under a microsecond). The
samples are split into rounds, one fresh pair of nodes per round and driver, and the drivers take
turns round by round (AB, BA, ...) so that a burst of load from elsewhere hits them all alike.
The garbage collector is on (the p99 includes its pauses). Both nodes also run their own ticks,
transfer sampling and empty heartbeats meanwhile, as they would in production.

**Tracks per second.** One node per run with the default TrackerConfig, on its own private hub,
already running (its first tick done, so the next one is 1.5 s away and none falls into a run; a
run into which one fell anyway is counted, and the count shown with the table). A run is ``n``
calls of ``presence.track`` with distinct connections (one topic), each followed by one yield to
the event loop (``asyncio.sleep(0)`` or anyio's ``checkpoint()``), as a connection handler returns
to the loop between two commands; *with a subscriber*, one task consumes the topic's subscription
meanwhile and the run ends when it has seen all ``n`` joins. Two baselines are measured alongside:
the same ``n`` yields without a track (the event loop's own share), and ``n`` calls of
:meth:`Tracker.track <presence_core.Tracker.track>` with no driver and no loop (the core's share).
Each figure is per track, as CPU time (:func:`time.process_time`, the whole process) and as wall
time (:func:`time.perf_counter`); every variant runs ``repeat`` times, the variants and drivers
interleaved (the order reverses every repetition), each run on a fresh node after
:func:`gc.collect`; min and median are reported. Left out: the delta broadcast that later carries
the ``n`` joins (one encode per tick, whatever the number of peers: see the end-to-end figure) and
everything a peer does with it.

**Idle CPU.** 1 and 3 nodes with the default TrackerConfig on one hub, doing nothing for
``window`` seconds of wall time once they have met and then settled for ``settle`` seconds: the
CPU time of the process (:func:`time.process_time`) over the window, per wall second and per node.
It includes the event loop itself: an idle node wakes it once per tick (every 1.5 s), and on a VM
a wake-up costs far more than the tick's own work. So two more figures come with it: the same loop
with no node and a bare timer that wakes it every 1.5 s (what any timer-driven process pays), and
the part spent inside the nodes' pumps (their ``wake`` and ``receive`` wrapped on those instances,
two :func:`time.process_time` reads per call): the ticks, and the replication traffic of the
window (an empty heartbeat every ``(max_silent_periods + 1) * broadcast_period`` = 16.5 s per
node, encoded once and decoded by each other node). Each configuration runs in a Python process of
its own, all at once (they are idle, together well under 1 % of a core, and each measures only
its own CPU), so the whole measurement takes one window.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from presence_adapters import MemoryHub
from presence_adapters.presence import Presence, Subscription, TopicDiff
from presence_core import ReplicaRef, Tracker, TrackerConfig

from ._latency import percentile
from ._workloads import META

__all__ = [
    "DRIVER_NAMES",
    "IDLE_PERIOD",
    "DriverResult",
    "IdleRun",
    "LatencySamples",
    "TrackRun",
    "available_drivers",
    "measure_drivers",
]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "room:bench"

DRIVER_NAMES = ("asyncio", "anyio/asyncio", "anyio/trio")
"""Every driver the section measures, in the order of the tables."""

VARIANTS = ("loop yields only", "track", "track + subscriber")
"""The tracks-per-second runs on a driver: the loop's share, a track, a track with a subscriber."""

CORE_VARIANT = "Tracker.track, no driver"
IDLE_NODES = (0, 1, 3)
"""The idle measurements: nodes in one process (0: a bare timer instead)."""

IDLE_PERIOD = TrackerConfig().broadcast_period
"""How often an idle node wakes (the default ``broadcast_period``), and so the bare timer too."""


# ---------------------------------------------------------------------------- drivers


class OpenNode(Protocol):
    def __call__(
        self,
        transport: Any = None,
        *,
        config: TrackerConfig | None = None,
        rng: random.Random | None = None,
    ) -> AbstractAsyncContextManager[Presence]: ...


class Runner(Protocol):
    def __call__(self, main: Callable[[], Awaitable[T]]) -> T: ...


@dataclass(frozen=True)
class Driver:
    """One driver on one event loop, and the few loop primitives the scenarios need.

    Attributes:
        name: ``asyncio``, ``anyio/asyncio`` or ``anyio/trio``.
        open_node: the driver's ``open_node``.
        run: run an async function to completion on a fresh event loop.
        clock: the loop's clock (the one the driver passes to its pump).
        sleep: sleep that many seconds.
        checkpoint: yield to the loop once.
        alongside: ``alongside(side, main)`` runs ``side()`` in a task of its own while awaiting
            ``main()``, and returns ``main()``'s result once both are done.
        within: ``within(seconds, main)`` awaits ``main()`` or raises :class:`TimeoutError`.
    """

    name: str
    open_node: OpenNode
    run: Runner
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    checkpoint: Callable[[], Awaitable[None]]
    alongside: Callable[[Callable[[], Awaitable[None]], Callable[[], Awaitable[T]]], Awaitable[T]]
    within: Callable[[float, Callable[[], Awaitable[T]]], Awaitable[T]]


def _asyncio_driver() -> Driver:
    from presence_adapters.drivers.asyncio import open_node

    def run(main: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await main()

        return asyncio.run(call())

    def clock() -> float:
        return asyncio.get_running_loop().time()

    async def checkpoint() -> None:
        await asyncio.sleep(0)

    async def alongside(side: Callable[[], Awaitable[None]], main: Callable[[], Awaitable[T]]) -> T:
        async def call_side() -> None:
            await side()

        task = asyncio.get_running_loop().create_task(call_side())
        try:
            await asyncio.sleep(0)  # let the side task start and park
            result = await main()
            await task
        finally:
            task.cancel()
        return result

    async def within(seconds: float, main: Callable[[], Awaitable[T]]) -> T:
        if sys.version_info >= (3, 11):  # a timer on this task, as anyio's fail_after
            async with asyncio.timeout(seconds):
                return await main()
        try:  # Python 3.10: wait_for runs main() in a task of its own
            return await asyncio.wait_for(main(), seconds)
        except asyncio.TimeoutError:
            raise TimeoutError from None

    return Driver("asyncio", open_node, run, clock, asyncio.sleep, checkpoint, alongside, within)


def _anyio_driver(backend: str) -> Driver:
    import anyio
    import anyio.lowlevel

    from presence_adapters.drivers.anyio import open_node

    def run(main: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await main()

        return anyio.run(call, backend=backend)

    async def alongside(side: Callable[[], Awaitable[None]], main: Callable[[], Awaitable[T]]) -> T:
        async def call_side() -> None:
            await side()

        async with anyio.create_task_group() as group:
            group.start_soon(call_side)
            await anyio.lowlevel.checkpoint()  # let the side task start and park
            result = await main()
        return result

    async def within(seconds: float, main: Callable[[], Awaitable[T]]) -> T:
        with anyio.fail_after(seconds):
            return await main()

    return Driver(
        f"anyio/{backend}",
        open_node,
        run,
        anyio.current_time,
        anyio.sleep,
        anyio.lowlevel.checkpoint,
        alongside,
        within,
    )


def _driver(name: str) -> Driver:
    if name == "asyncio":
        return _asyncio_driver()
    if name == "anyio/asyncio":
        return _anyio_driver("asyncio")
    if name == "anyio/trio":
        import trio  # noqa: F401  (anyio only imports its trio backend when a loop starts)

        return _anyio_driver("trio")
    raise ValueError(f"unknown driver {name!r}")


def available_drivers() -> tuple[list[Driver], list[str]]:
    """The drivers that can run here, and the names of those that cannot (not installed)."""
    found: list[Driver] = []
    missing: list[str] = []
    for name in DRIVER_NAMES:
        try:
            found.append(_driver(name))
        except ImportError:
            missing.append(name)
    return found, missing


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LatencySamples:
    """Track-to-remote-diff samples of one driver, in seconds, in the order they ran.

    Attributes:
        driver: the driver's name.
        end_to_end: from before ``a.track`` to after ``b``'s subscription yielded the diff.
        after_tick: from the ``now`` of ``a``'s tick that broadcast the delta to the diff.
        lateness: from that tick's deadline to its ``now`` (the loop's timer).
    """

    driver: str
    end_to_end: tuple[float, ...]
    after_tick: tuple[float, ...]
    lateness: tuple[float, ...]


@dataclass(frozen=True)
class TrackRun:
    """The runs of one tracks-per-second variant, in seconds per run (``n`` tracks each).

    Attributes:
        driver: the driver's name (``-`` for the core alone).
        variant: one of :data:`VARIANTS`, or :data:`CORE_VARIANT`.
        cpu: the process's CPU time of each run.
        wall: the wall time of each run.
        ticks: runs into which a tick of the node fell (0: the figure holds no broadcast).
    """

    driver: str
    variant: str
    cpu: tuple[float, ...]
    wall: tuple[float, ...]
    ticks: int = 0


@dataclass(frozen=True)
class IdleRun:
    """``nodes`` idle nodes in one process (0: a bare timer instead), over ``wall`` seconds.

    Attributes:
        cpu: the process's CPU time over the window.
        pump: the part of ``cpu`` spent inside the nodes' pumps (ticks, encoding, receiving).
        sent: messages the nodes put on the bus during the window (all nodes together).
        received: messages the nodes received during the window (all nodes together).
    """

    driver: str
    nodes: int
    cpu: float
    wall: float
    pump: float
    sent: int
    received: int

    @property
    def per_node(self) -> float:
        """CPU seconds per wall second per node (for 0 nodes: of the bare timer)."""
        return self.cpu / self.wall / max(1, self.nodes)

    @property
    def pump_per_node(self) -> float:
        """CPU seconds per wall second per node spent inside the pumps."""
        return self.pump / self.wall / max(1, self.nodes)


@dataclass(frozen=True)
class DriverResult:
    """Everything the driver section measured.

    Attributes:
        period: the ``broadcast_period`` of the latency runs, in seconds.
        rounds: rounds of the latency runs (a fresh pair of nodes per round and driver).
        latency: one entry per driver.
        tracks: tracks per run of the tracks-per-second figures.
        repeat: runs per tracks-per-second variant.
        track_runs: the core's baseline, then per driver :data:`VARIANTS`.
        idle_window: seconds of wall time of each idle measurement.
        idle: per driver, 0, 1 and 3 nodes.
        missing: drivers not measured because their packages are not installed.
        seconds: the wall time of the whole section.
    """

    period: float
    rounds: int
    latency: tuple[LatencySamples, ...]
    tracks: int
    repeat: int
    track_runs: tuple[TrackRun, ...]
    idle_window: float
    idle: tuple[IdleRun, ...]
    missing: tuple[str, ...]
    seconds: float

    @property
    def samples(self) -> int:
        """Latency samples per driver."""
        return len(self.latency[0].end_to_end) if self.latency else 0


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1e3


def p99_ms(samples: Sequence[float]) -> float:
    return percentile(samples, 99) * 1e3


# ---------------------------------------------------------------------------- latency


def _record_ticks(presence: Presence) -> list[tuple[float, float]]:
    """Wrap this node's ``pump.wake``: every wake-up that runs a tick appends (deadline, now)."""
    pump = presence.pump
    wake = pump.wake
    ticks: list[tuple[float, float]] = []

    def recording_wake(*, now: float) -> None:
        due = pump.deadline
        wake(now=now)
        if due is not None and now >= due:
            ticks.append((due, now))

    pump.wake = recording_wake  # type: ignore[method-assign]  # this instance only
    return ticks


async def _next_diff(
    diffs: Subscription[TopicDiff], clock: Callable[[], float]
) -> tuple[TopicDiff, float]:
    """The subscription's next diff, and the clock right after it was yielded."""
    diff = await diffs.__anext__()
    return diff, clock()


def _check_join(diff: TopicDiff, key: str, ref: str, what: str) -> None:
    joins = diff.joins
    metas = joins.get(key, {}).get("metas", [])
    refs = [meta.get("phx_ref") for meta in metas]
    if diff.topic != TOPIC or list(joins) != [key] or refs != [ref] or diff.leaves:
        raise AssertionError(f"drivers: {what}: the remote diff for {key} is {diff.payload!r}")


async def _latency_round(
    driver: Driver, *, period: float, samples: int, seed: int, first: int, timeout: float
) -> tuple[list[float], list[float], list[float]]:
    hub = MemoryHub()
    config = TrackerConfig(broadcast_period=period)
    rng = random.Random(seed)
    end_to_end: list[float] = []
    after_tick: list[float] = []
    lateness: list[float] = []
    clock, what = driver.clock, f"latency on {driver.name}"
    async with (
        driver.open_node(hub.connect("a"), config=config, rng=random.Random(seed + 1)) as a,
        driver.open_node(hub.connect("b"), config=config, rng=random.Random(seed + 2)) as b,
    ):
        ticks = _record_ticks(a)
        deadline = clock() + 100 * period
        while "a" not in b.replicas() or "b" not in a.replicas():
            if clock() > deadline:
                raise AssertionError(f"drivers: {what}: the two nodes did not meet")
            await driver.sleep(period / 4)
        async with b.subscribe(TOPIC) as diffs:
            for i in range(-1, samples):  # one untimed warm-up
                await driver.sleep(rng.uniform(0.0, period))
                key = f"user{first + 1 + i}"
                mark = len(ticks)
                start = clock()
                ref = a.track(f"conn{first + 1 + i}", TOPIC, key, META)
                try:
                    diff, end = await driver.within(timeout, partial(_next_diff, diffs, clock))
                except TimeoutError:
                    raise AssertionError(
                        f"drivers: {what}: no remote diff for {key} within {timeout} s"
                    ) from None
                _check_join(diff, key, ref, what)
                if len(ticks) <= mark or ticks[mark][1] < start:
                    raise AssertionError(f"drivers: {what}: no tick of a carried {key}")
                due, ticked = ticks[mark]
                if i >= 0:
                    end_to_end.append(end - start)
                    after_tick.append(end - ticked)
                    lateness.append(ticked - due)
        if b.count(TOPIC) != samples + 1:
            raise AssertionError(f"drivers: {what}: b holds {b.count(TOPIC)} presences")
    return end_to_end, after_tick, lateness


def measure_latency(
    drivers: Sequence[Driver], *, period: float, samples: int, rounds: int, timeout: float = 5.0
) -> list[LatencySamples]:
    """``samples`` track-to-remote-diff samples per driver, in ``rounds`` interleaved rounds.

    Raises:
        AssertionError: the nodes did not meet, or a diff was wrong or did not come within
            ``timeout`` seconds.
    """
    rounds = max(1, min(rounds, samples))
    collected: dict[str, tuple[list[float], list[float], list[float]]] = {
        d.name: ([], [], []) for d in drivers
    }
    done = 0
    for r in range(rounds):
        count = samples // rounds + (1 if r < samples % rounds else 0)
        for driver in drivers if r % 2 == 0 else list(reversed(drivers)):
            gc.collect()
            found = driver.run(
                partial(
                    _latency_round,
                    driver,
                    period=period,
                    samples=count,
                    seed=1000 * r,
                    first=done,
                    timeout=timeout,
                )
            )
            for into, more in zip(collected[driver.name], found, strict=True):
                into.extend(more)
        done += count + 1
    return [
        LatencySamples(d.name, tuple(e2e), tuple(after), tuple(late))
        for d in drivers
        for e2e, after, late in [collected[d.name]]
    ]


# ---------------------------------------------------------------------------- tracks per second


async def _first_tick_done(driver: Driver, nodes: Sequence[Presence]) -> None:
    """Wait until every node's first tick has run (it sends an empty heartbeat)."""
    deadline = driver.clock() + 5.0
    while any(node.stats.sent == 0 for node in nodes):
        if driver.clock() > deadline:
            raise AssertionError(f"drivers: tracks on {driver.name}: no first tick")
        await driver.sleep(0.01)


async def _tracks_round(
    driver: Driver, n: int, order: Sequence[str], seed: int
) -> dict[str, tuple[float, float, bool]]:
    """Every variant once, in ``order``, each on a fresh node: {variant: (cpu, wall, ticked)}."""
    what = f"tracks on {driver.name}"
    out: dict[str, tuple[float, float, bool]] = {}
    async with (
        driver.open_node(rng=random.Random(seed)) as plain,
        driver.open_node(rng=random.Random(seed + 1)) as subscribed,
    ):
        await _first_tick_done(driver, [plain, subscribed])
        checkpoint = driver.checkpoint
        conns = [f"conn{i}" for i in range(n)]
        keys = [f"user{i}" for i in range(n)]

        async def yields_only() -> None:
            for _ in range(n):
                await checkpoint()

        async def tracks(node: Presence) -> None:
            for conn, key in zip(conns, keys, strict=True):
                node.track(conn, TOPIC, key, META)
                await checkpoint()

        for variant in order:
            node = subscribed if variant == "track + subscriber" else plain
            sent = node.stats.sent
            gc.collect()
            if variant == "track + subscriber":
                seen: list[str] = []
                consume = partial(_consume, node.subscribe(TOPIC), n, seen)
                cpu, wall = time.process_time(), time.perf_counter()
                await driver.alongside(consume, partial(tracks, node))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if seen != keys:
                    raise AssertionError(f"drivers: {what}: the subscriber saw {len(seen)} joins")
            else:
                cpu, wall = time.process_time(), time.perf_counter()
                await (yields_only() if variant == "loop yields only" else tracks(node))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if variant != "loop yields only" and node.count(TOPIC) != n:
                raise AssertionError(f"drivers: {what}: {node.count(TOPIC)} presences, not {n}")
            out[variant] = (cpu, wall, node.stats.sent != sent)
    return out


async def _consume(diffs: Subscription[TopicDiff], n: int, seen: list[str]) -> None:
    """The subscriber: read diffs until ``n`` keys joined, then unsubscribe."""
    async with diffs:
        async for diff in diffs:
            seen.extend(diff.joins)
            if len(seen) >= n:
                break


def _core_tracks(n: int) -> tuple[float, float]:
    tracker = Tracker(config=TrackerConfig(), replica=ReplicaRef("core", 1), rng=random.Random(1))
    inputs = [(f"conn{i}", f"user{i}") for i in range(n)]
    track = tracker.track
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for conn, key in inputs:
        track(conn=conn, topic=TOPIC, key=key, meta=META, now=1.0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if tracker.count(TOPIC) != n:
        raise AssertionError(f"drivers: Tracker.track stored {tracker.count(TOPIC)}, not {n}")
    return cpu, wall


def measure_tracks(drivers: Sequence[Driver], n: int, repeat: int) -> list[TrackRun]:
    """``repeat`` runs of ``n`` tracks per variant and driver, interleaved (order reversed every
    repetition), and of the core alone."""
    runs: dict[tuple[str, str], list[tuple[float, float, bool]]] = {}
    for r in range(repeat):
        forward = r % 2 == 0
        core = _core_tracks(n)
        runs.setdefault(("-", CORE_VARIANT), []).append((*core, False))
        order = list(VARIANTS) if forward else list(reversed(VARIANTS))
        for driver in drivers if forward else list(reversed(drivers)):
            found = driver.run(partial(_tracks_round, driver, n, order, seed=10 * r))
            for variant, sample in found.items():
                runs.setdefault((driver.name, variant), []).append(sample)
    result = [
        TrackRun(
            "-",
            CORE_VARIANT,
            tuple(c for c, _, _ in runs["-", CORE_VARIANT]),
            tuple(w for _, w, _ in runs["-", CORE_VARIANT]),
        )
    ]
    for driver in drivers:
        for variant in VARIANTS:
            found_runs = runs[driver.name, variant]
            result.append(
                TrackRun(
                    driver.name,
                    variant,
                    tuple(c for c, _, _ in found_runs),
                    tuple(w for _, w, _ in found_runs),
                    sum(1 for _, _, ticked in found_runs if ticked),
                )
            )
    return result


# ---------------------------------------------------------------------------- idle CPU


def _meter_pump(presence: Presence) -> list[float]:
    """Wrap this node's ``pump.wake`` and ``pump.receive`` (this instance only): the returned
    one-item list accumulates the process's CPU time spent inside them."""
    pump = presence.pump
    wake, receive = pump.wake, pump.receive
    spent = [0.0]
    inside = [False]  # receive calls wake: count that once
    clock = time.process_time

    def metered_wake(*, now: float) -> None:
        if inside[0]:
            wake(now=now)
            return
        start = clock()
        try:
            wake(now=now)
        finally:
            spent[0] += clock() - start

    def metered_receive(data: bytes, *, now: float) -> None:
        inside[0] = True
        start = clock()
        try:
            receive(data, now=now)
        finally:
            spent[0] += clock() - start
            inside[0] = False

    pump.wake = metered_wake  # type: ignore[method-assign]
    pump.receive = metered_receive  # type: ignore[method-assign]
    return spent


async def _idle(driver: Driver, nodes: int, window: float, settle: float) -> dict[str, float]:
    """In this process: ``nodes`` nodes on one hub meet, settle, then idle for ``window``; with
    no node, a bare timer wakes the loop every ``broadcast_period`` instead."""
    from contextlib import AsyncExitStack

    hub = MemoryHub()
    period = IDLE_PERIOD
    async with AsyncExitStack() as stack:
        running = [
            await stack.enter_async_context(
                driver.open_node(hub.connect(f"n{i}"), rng=random.Random(i))
            )
            for i in range(nodes)
        ]
        meters = [_meter_pump(node) for node in running]
        deadline = driver.clock() + 10.0
        while any(node.stats.sent == 0 or len(node.replicas()) != nodes - 1 for node in running):
            if driver.clock() > deadline:
                raise AssertionError(f"drivers: idle on {driver.name}: the nodes did not meet")
            await driver.sleep(0.01)
        await driver.sleep(settle)
        gc.collect()
        sent = sum(node.stats.sent for node in running)
        received = sum(node.stats.received for node in running)
        in_pump = sum(meter[0] for meter in meters)
        cpu, wall = time.process_time(), time.perf_counter()
        if running:
            await driver.sleep(window)
        else:
            end = driver.clock() + window
            while (left := end - driver.clock()) > 0:
                await driver.sleep(min(period, left))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        for node in running:
            if len(node.replicas()) != nodes - 1 or node.closed:
                raise AssertionError(f"drivers: idle on {driver.name}: a node lost its peers")
        return {
            "cpu": cpu,
            "wall": wall,
            "pump": sum(meter[0] for meter in meters) - in_pump,
            "sent": sum(node.stats.sent for node in running) - sent,
            "received": sum(node.stats.received for node in running) - received,
        }


def _idle_main() -> None:
    """The child process of one idle measurement: ``driver nodes window settle`` in argv."""
    name, nodes, window, settle = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:5])
    driver = _driver(name)
    print(json.dumps(driver.run(partial(_idle, driver, nodes, window, settle))))


def measure_idle(drivers: Sequence[Driver], window: float, settle: float) -> list[IdleRun]:
    """Every driver with 0, 1 and 3 idle nodes, each in a Python process of its own, all at once.

    Raises:
        AssertionError: a child process failed.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import bench._driver as d; d._idle_main()"
    )
    children = []
    for driver in drivers:
        for nodes in IDLE_NODES:
            args = [sys.executable, "-c", code, driver.name, str(nodes), str(window), str(settle)]
            child = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
            )
            children.append((driver.name, nodes, child))
    runs = []
    for name, nodes, child in children:
        out, err = child.communicate(timeout=window + settle + 120)
        if child.returncode != 0:
            raise AssertionError(f"drivers: idle on {name} with {nodes} nodes failed:\n{err}")
        found = json.loads(out)
        runs.append(
            IdleRun(
                name,
                nodes,
                cpu=float(found["cpu"]),
                wall=float(found["wall"]),
                pump=float(found["pump"]),
                sent=int(found["sent"]),
                received=int(found["received"]),
            )
        )
    return runs


# ---------------------------------------------------------------------------- the section


def measure_drivers(
    *,
    period: float,
    samples: int,
    tracks: int,
    repeat: int,
    idle_window: float,
    idle_settle: float,
    progress: Callable[[str], None],
) -> DriverResult:
    """The whole section: latency, then tracks per second, then idle CPU; every result checked.

    Raises:
        AssertionError: a diff was lost or wrong, a node did not start or meet its peers, a
            presence was not stored, or an idle child process failed.
    """
    start = time.perf_counter()
    drivers, missing = available_drivers()
    if missing:
        progress(f"drivers not installed, not measured: {', '.join(missing)}")
    latency = measure_latency(drivers, period=period, samples=samples, rounds=repeat)
    for found in latency:
        progress(
            f"{found.driver}: track to remote diff median {median_ms(found.end_to_end):.1f} ms, "
            f"after the tick {median_ms(found.after_tick):.2f} ms"
        )
    track_runs = measure_tracks(drivers, tracks, repeat)
    for runs in track_runs:
        progress(f"{runs.driver}, {runs.variant}: {min(runs.cpu) / tracks * 1e6:.1f} us CPU/track")
    idle = measure_idle(drivers, idle_window, idle_settle)
    for each in idle:
        progress(
            f"idle {each.driver}, {each.nodes} nodes: {each.per_node * 1e6:.0f} us CPU/s per node "
            f"({each.pump_per_node * 1e6:.0f} in the pump)"
        )
    return DriverResult(
        period=period,
        rounds=max(1, min(repeat, samples)),
        latency=tuple(latency),
        tracks=tracks,
        repeat=repeat,
        track_runs=tuple(track_runs),
        idle_window=idle_window,
        idle=tuple(idle),
        missing=tuple(missing),
        seconds=time.perf_counter() - start,
    )
