"""Fan-out: one room of 100,000 presences on three nodes under 1,000 joins per second.

What a large room costs each node, and what each subscriber receives, with Phoenix's one diff per
change (*unbatched*) and with large-room mode (*batched*: ``TopicOptions(large_room=True)``, one
diff per tick holding the net effect; ``docs/large-rooms.rst``).

**Real time, on the memory bus.** Three nodes on the asyncio driver
(:mod:`presence_adapters.drivers.asyncio`), one :class:`~presence_adapters.MemoryHub`, one event
loop, one process, everything through the public API but the two meters below. Real time rather
than the core's trackers on virtual time, because what batching changes is mostly outside the
core: how many diffs the pump hands to subscriptions, how often a subscriber's task wakes, and
how much grouping and JSON encoding each diff costs. A run takes the window, two periods of
warm-up, an untimed setup (10 to 15 s at full size: replicating 100,000 presences to three nodes)
and up to two periods of draining, so three runs per mode take about three minutes.

**One run.** A fresh hub and three nodes named ``n0``, ``n1``, ``n2``, each with
``TrackerConfig(broadcast_period=period)`` and the other options at their defaults. In batched
runs every node configures the topic as a large room first (:meth:`Presence.configure_topic
<presence_adapters.Presence.configure_topic>`). Then, untimed:

* *setup*: the nodes track ``presences`` presences in one topic (presence ``n`` on node
  ``n mod 3``, key ``u<n>``, connection ``c<n>``, BENCH.md's meta) and replicate them until every
  node counts them all; then they settle for 1.5 periods (so the last batch of the setup is out)
  and :func:`gc.collect` runs;
* *subscribers*: each node gets one subscriber (:meth:`Presence.subscribe
  <presence_adapters.Presence.subscribe>`), a task of its own that reads every diff and encodes
  its payload as a Phoenix client would receive it: ``json.dumps`` of
  :attr:`TopicDiff.payload <presence_adapters.TopicDiff.payload>` (which is
  :func:`~presence_core.presence_diff_payload` of the diff: checked on each subscriber's first
  diff), compact, keys sorted, as the Phoenix endpoint's serializer writes it, in UTF-8 bytes.

*Load*: every 10 ms, the joins due by then at ``rate`` per second (about 10 at 1,000 per second),
round robin over the nodes; each join (a new key and connection) is followed at once by a leave of
the oldest presence of the same node, so the room's size stays at ``presences``. Each presence
thus lives ``presences / rate`` seconds (100 s at full size), far longer than a tick: nothing
joins and leaves within one tick, so batching cannot cancel any change and the bytes it saves
are the envelope of the diffs only. The first ``2 x period`` seconds of load are a warm-up (the
ticks, deltas and batches of the load are under way when measuring starts, as many still under
way when it ends); the next ``seconds``, rounded up to whole broadcast periods (so that every node
ticks as many times in every window), are the **window**, which every figure is per second of.
After the window the load stops and the run waits until every subscriber has received every join
and every leave (checked: each exactly once, nothing else, and every node counts ``presences``).

**What is measured over the window**, per node:

* *node CPU*: the thread CPU time (:func:`time.thread_time`) spent inside the node's pump: its
  ``wake`` (the ticks: taking and encoding deltas, batches flushed), ``receive`` (decoding and
  merging the other nodes' deltas) and ``command`` (the local ``track`` and ``untrack``), each
  wrapped on that one instance. Handing each diff to the subscriptions happens in there too.
  What is outside: the driver's send and receive loops around the pump, the hub, the event loop;
* *subscriber CPU*: the same clock around the subscription's conversion of each diff (grouping it
  by key: Presence's ``_convert_diff``, wrapped on that instance before subscribing, the JSON
  encoding done inside the same interval, and checked to see every diff): what a node pays per
  diff to serve its clients, once per diff whatever the number of sockets (the endpoint encodes
  a frame once and writes it to every socket);
* *diffs/s*, *payload bytes/s* per subscriber (what each client of that node receives), and the
  bytes the node put on and took from the bus (its replication traffic, which large-room mode
  does not change);
* for the whole process, its CPU time (:func:`time.process_time`): the three nodes, the three
  subscribers, and what the benchmark adds (the load generator, the latency bookkeeping, the
  event loop's wake-ups);
* the *garbage collector*: the thread CPU time of every collection (a :data:`gc.callbacks`
  entry), and of each full one. A collection runs wherever the allocation count trips it (in
  whichever pump, subscriber or task is allocating then), and a full one walks the whole
  process's heap, three nodes' worth here, so its time is reported for the process, and the node
  and subscriber figures are shown without the collections that struck inside them (each is
  kept where it struck: ``NodeRun.pump_gc``, ``NodeRun.subscriber_gc``).

The meters cost something: on the VMs we measure on, reading a thread's CPU clock is a system
call, about a microsecond of CPU, and unbatched runs measure one interval per change and per
diff. So :func:`calibrate` measures, before the runs, what an empty interval reads (about one
read) and what a read costs; every measured interval has the former subtracted, and the process's
figure has every read the meters made subtracted (``FanoutRun.meters``). What remains of the
meters is a few Python operations per call.

*Presence latency*: for every join of the window, the time from just before ``track`` until each
subscriber has the diff holding it, on the loop's clock: on the node that tracked it (*local*)
and on the two others (*remote*).

Runs alternate between the modes (unbatched, batched, then batched, unbatched, ...), ``repeat``
runs each. The garbage collector stays on. Left out: the endpoint and its sockets (the bytes are
what one socket would get; the envelope of a frame, ``[null,null,"<topic>","presence_diff",...]``,
adds about 40 bytes per diff), fetch hooks, other drivers, a real network, occupancy-only
subscribers, and presences that join and leave within one tick (the case where batching also
saves the bytes).
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import statistics
import textwrap
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

from presence_adapters import MemoryHub
from presence_adapters.drivers._pump import Pump
from presence_adapters.presence import Presence, Subscription, TopicDiff
from presence_core import TopicOptions, TrackerConfig, presence_diff_payload

from ._format import Machine, rst_table, rst_text
from ._latency import percentile
from ._workloads import META

__all__ = [
    "FULL_FANOUT",
    "MODES",
    "QUICK_FANOUT",
    "Calibration",
    "FanoutPlan",
    "FanoutResult",
    "FanoutRun",
    "NodeRun",
    "calibrate",
    "cpu_rows",
    "latency_rows",
    "measure_fanout",
    "process_rows",
    "render_fanout",
    "render_fanout_rst",
    "traffic_rows",
]

T = TypeVar("T")

TOPIC = "room:fanout"
UNBATCHED = "unbatched"
BATCHED = "batched"
MODES = (UNBATCHED, BATCHED)
"""Phoenix's one diff per change, and large-room mode's one diff per tick."""

STEP = 0.01
"""Seconds between two bursts of the load generator."""

SETUP_GRACE = 60.0
"""Seconds (plus one per 1,000 presences) the setup may take to replicate the room."""

DRAIN_GRACE = 30.0
"""Seconds (plus ten broadcast periods) the subscribers may take, after the load, to receive the
last changes."""

MAX_BUFFERED = 1_000_000
"""Each subscription's buffer, in presences: far more than a tick of load, so that a stall of the
machine cannot end a run in an overflow."""


@dataclass(frozen=True)
class FanoutPlan:
    """The sizes of the fan-out section.

    Attributes:
        presences: presences in the room (replicated to every node).
        rate: joins per second (as many leaves), over all nodes.
        seconds: the measured window, in seconds of load.
        repeat: runs per mode (interleaved).
        broadcast_period: every node's ``TrackerConfig.broadcast_period``.
        nodes: nodes in the cluster.
    """

    presences: int
    rate: float
    seconds: float
    repeat: int
    broadcast_period: float
    nodes: int = 3

    def __post_init__(self) -> None:
        if self.nodes < 2 or self.presences < self.nodes:
            raise ValueError("the fan-out needs 2 nodes or more, and a presence on each")
        if not (self.rate > 0 and self.seconds > 0 and self.broadcast_period > 0):
            raise ValueError("rate, seconds and broadcast_period must be positive")
        if self.repeat < 1:
            raise ValueError(f"repeat must be at least 1, not {self.repeat}")
        if self.presences / self.rate < 4 * self.broadcast_period:
            # Shorter lives would make joins and leaves of one presence meet in one batch, where
            # they cancel: the runs' checks (every change seen once) assume they never do.
            raise ValueError(
                "each presence must live at least 4 broadcast periods (presences / rate)"
            )

    @property
    def warmup(self) -> float:
        """Seconds of load before the window: two broadcast periods."""
        return 2 * self.broadcast_period

    @property
    def window(self) -> float:
        """The window: ``seconds`` rounded up to a whole number of broadcast periods, so that
        every node ticks as many times in every window (a batched subscriber gets one diff per
        tick: a window that holds one tick more for some nodes than for others would skew them)."""
        periods = max(1, math.ceil(self.seconds / self.broadcast_period - 1e-9))
        return periods * self.broadcast_period

    @property
    def warm_joins(self) -> int:
        return round(self.warmup * self.rate)

    @property
    def window_joins(self) -> int:
        return max(1, round(self.window * self.rate))


FULL_FANOUT = FanoutPlan(
    presences=100_000, rate=1_000.0, seconds=10.0, repeat=3, broadcast_period=1.5
)
"""The issue's sizes at Phoenix's default broadcast period: about 2.5 minutes."""

QUICK_FANOUT = FanoutPlan(presences=300, rate=300.0, seconds=0.3, repeat=1, broadcast_period=0.05)
"""A smoke run: a few seconds for both modes."""


@dataclass(frozen=True)
class NodeRun:
    """One node over one run's window (seconds of CPU, counts and bytes).

    The CPU figures leave out the garbage collections that struck inside them (counted apart) and
    the clock reads of the meters themselves (:class:`Calibration`).

    Attributes:
        node: the node's name.
        pump: CPU inside its pump (ticks, receiving, local commands).
        subscriber: its subscriber's CPU grouping each diff by key and encoding it as JSON.
        pump_gc: the garbage collections that struck inside its pump.
        subscriber_gc: the collections that struck inside its subscriber's measured work.
        pump_calls: calls of its pump measured (one interval each).
        diffs: diffs its subscriber received.
        payload_bytes: their payloads' JSON, in UTF-8 bytes.
        sent_bytes: bytes it put on the bus (a broadcast counts once).
        received_bytes: bytes it received from the bus.
    """

    node: str
    pump: float
    subscriber: float
    pump_gc: float
    subscriber_gc: float
    pump_calls: int
    diffs: int
    payload_bytes: int
    sent_bytes: int
    received_bytes: int


@dataclass(frozen=True)
class Calibration:
    """What the meters' own clock reads cost, in CPU seconds, measured before the runs.

    Every measured interval holds about one clock read's worth of :func:`time.thread_time`
    (``inside``: the median of empty intervals); the reads themselves cost the process ``read``
    each (on the VMs we measure on, a thread-CPU clock read is a system call, about a
    microsecond). Both are subtracted from the figures.
    """

    inside: float
    read: float


@dataclass(frozen=True)
class FanoutRun:
    """One run of one mode.

    Attributes:
        mode: :data:`UNBATCHED` or :data:`BATCHED`.
        window: wall seconds of the window.
        joins: joins issued in the window (as many leaves).
        nodes: each node's figures.
        local: latencies (seconds) of the window's joins to the subscriber of their own node.
        remote: latencies of the window's joins to the subscribers of the other nodes.
        process: the process's CPU time over the window, the meters' clock reads left out.
        meters: what those clock reads cost the process (left out of ``process``).
        gc: thread CPU time the garbage collector took during the window (counted in
            ``process``, and left out of the pumps' and subscribers' figures).
        full_collections: the thread CPU time of each full (generation 2) collection during the
            window.
        transfers: transfer requests the nodes sent during the window (0: replication by deltas
            alone, as it should be).
        dropped: messages the hub dropped during the run (0 unless an inbox overflowed).
        setup: wall seconds the untimed setup took.
    """

    mode: str
    window: float
    process: float
    meters: float
    joins: int
    nodes: tuple[NodeRun, ...]
    local: tuple[float, ...]
    remote: tuple[float, ...]
    gc: float
    full_collections: tuple[float, ...]
    transfers: int
    dropped: int
    setup: float


@dataclass(frozen=True)
class FanoutResult:
    """Every run of the section, in the order they ran.

    Attributes:
        plan: the sizes.
        runs: ``repeat`` runs per mode, interleaved.
        seconds: wall time of the whole section.
        calibration: the cost of the meters' clock reads (subtracted from every CPU figure).
    """

    plan: FanoutPlan
    runs: tuple[FanoutRun, ...]
    seconds: float
    calibration: Calibration

    def of(self, mode: str) -> list[FanoutRun]:
        """The runs of one mode, in the order they ran."""
        return [run for run in self.runs if run.mode == mode]

    @property
    def repeat(self) -> int:
        return len(self.of(UNBATCHED))


# ---------------------------------------------------------------------------- meters


class _GcMeter:
    """A :data:`gc.callbacks` entry: the thread CPU time of every collection, by where it struck
    (:attr:`where`: a node's pump, a subscriber, or :data:`REST`), and the full collections."""

    def __init__(self) -> None:
        self.where = REST
        self.spent: dict[int, float] = {}
        self.full: list[float] = []  # the thread CPU time of each full collection
        self.collections = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.thread_time()
            return
        took = time.thread_time() - self._start
        self.collections += 1
        spent = self.spent
        spent[self.where] = spent.get(self.where, 0.0) + took
        if info.get("generation") == 2:
            self.full.append(took)


REST = -1
"""Where a collection struck when it was in no pump and no subscriber's measured work."""


class _Meter:
    """Thread CPU time spent inside one node's pump."""

    __slots__ = ("calls", "cpu", "inside")

    def __init__(self) -> None:
        self.cpu = 0.0
        self.calls = 0  # intervals measured
        self.inside = False  # receive calls wake: count that once


def _meter(pump: Pump, where: int, collector: _GcMeter) -> _Meter:
    """Wrap this pump's ``wake``, ``receive`` and ``command`` (this instance only); a collection
    that strikes inside them is counted at ``where``."""
    wake, receive, command = pump.wake, pump.receive, pump.command
    meter = _Meter()
    clock = time.thread_time

    def metered_wake(*, now: float) -> None:
        if meter.inside:
            wake(now=now)
            return
        before, collector.where = collector.where, where
        start = clock()
        try:
            wake(now=now)
        finally:
            meter.cpu += clock() - start
            meter.calls += 1
            collector.where = before

    def metered_receive(data: bytes, *, now: float) -> None:
        meter.inside = True
        before, collector.where = collector.where, where
        start = clock()
        try:
            receive(data, now=now)
        finally:
            meter.cpu += clock() - start
            meter.calls += 1
            meter.inside = False
            collector.where = before

    def metered_command(call: Callable[[float], T], *, now: float) -> T:
        before, collector.where = collector.where, where
        start = clock()
        try:
            return command(call, now=now)
        finally:
            meter.cpu += clock() - start
            meter.calls += 1
            collector.where = before

    pump.wake = metered_wake  # type: ignore[method-assign]
    pump.receive = metered_receive  # type: ignore[method-assign]
    pump.command = metered_command  # type: ignore[method-assign]
    return meter


Joined = dict[str, tuple[float, int, bool]]
"""Key of every join of the load -> (loop time just before its track, node index, in window)."""


@dataclass
class _Subscriber:
    """One node's subscriber: counts, bytes, CPU, latencies, and what it saw (for the checks).

    Its measured work (grouping a diff, encoding its payload) is one interval per diff, in the
    subscription's conversion; a collection that strikes in it is counted at ``where``.
    """

    index: int
    where: int
    joined: Joined
    clock: Callable[[], float]
    collector: _GcMeter
    subscription: Subscription[TopicDiff] | None = None
    diffs: int = 0
    payload_bytes: int = 0
    cpu: float = 0.0
    conversions: int = 0
    size: int = -1  # the payload size of the diff just converted, for the reader
    join_count: int = 0
    leave_count: int = 0
    joins: set[str] = field(default_factory=set)
    leaves: set[str] = field(default_factory=set)
    local: list[float] = field(default_factory=list)
    remote: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    payload_checked: bool = False

    def subscribe(self, presence: Presence) -> None:
        """Subscribe to the topic, the conversion of each diff metered, with its encoding."""
        convert = presence._convert_diff
        clock = time.thread_time
        collector = self.collector

        async def metered(cell: Any) -> TopicDiff:
            before, collector.where = collector.where, self.where
            start = clock()
            try:
                diff = await convert(cell)  # no fetch hook: it returns without suspending
                text = json.dumps(
                    diff.payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False
                )
                self.size = len(text.encode())
                return diff
            finally:
                self.cpu += clock() - start
                self.conversions += 1
                collector.where = before

        presence._convert_diff = metered  # type: ignore[method-assign]
        self.subscription = presence.subscribe(TOPIC, max_buffered=MAX_BUFFERED)

    async def run(self) -> None:
        assert self.subscription is not None
        joined = self.joined
        async with self.subscription as diffs:
            async for diff in diffs:
                now = self.clock()
                size, self.size = self.size, -1
                if size < 0:
                    self.wrong.append("a diff that did not pass through the metered conversion")
                self.diffs += 1
                self.payload_bytes += size
                if not self.payload_checked:
                    self.payload_checked = True
                    if diff.payload != presence_diff_payload(diff.event):
                        self.wrong.append("a payload that is not presence_diff_payload's")
                for key, value in diff.joins.items():
                    found = joined.get(key)
                    if found is None or len(value["metas"]) != 1:
                        self.wrong.append(f"join of {key}")
                        continue
                    self.join_count += 1
                    self.joins.add(key)
                    at, origin, timed = found
                    if timed:
                        (self.local if origin == self.index else self.remote).append(now - at)
                for key, value in diff.leaves.items():
                    if len(value["metas"]) != 1:
                        self.wrong.append(f"leave of {key}")
                    self.leave_count += 1
                    self.leaves.add(key)

    def counters(self) -> tuple[int, int, float, int]:
        return self.diffs, self.payload_bytes, self.cpu, self.conversions


@dataclass(frozen=True)
class _Snapshot:
    wall: float
    cpu: float
    pumps: tuple[float, ...]
    calls: tuple[int, ...]
    subscribers: tuple[tuple[int, int, float, int], ...]
    sent: tuple[int, ...]
    received: tuple[int, ...]
    gc: dict[int, float]
    collections: int
    full_collections: int
    transfers: int

    def gc_at(self, where: int) -> float:
        return self.gc.get(where, 0.0)


def _snapshot(
    nodes: Sequence[Presence],
    meters: Sequence[_Meter],
    subscribers: Sequence[_Subscriber],
    collector: _GcMeter,
) -> _Snapshot:
    return _Snapshot(
        wall=time.perf_counter(),
        cpu=time.process_time(),
        gc=dict(collector.spent),
        collections=collector.collections,
        full_collections=len(collector.full),
        pumps=tuple(meter.cpu for meter in meters),
        calls=tuple(meter.calls for meter in meters),
        subscribers=tuple(s.counters() for s in subscribers),
        sent=tuple(node.stats.sent_bytes for node in nodes),
        received=tuple(node.stats.received_bytes for node in nodes),
        transfers=sum(node.tracker_stats().transfer_requests_sent for node in nodes),
    )


# ---------------------------------------------------------------------------- one run


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"fan-out: {what} within {timeout:g} s")
        await asyncio.sleep(0.02)


async def _run(plan: FanoutPlan, mode: str, seed: int, calibration: Calibration) -> FanoutRun:
    from presence_adapters.drivers.asyncio import open_node

    loop = asyncio.get_running_loop()
    clock = loop.time
    period = plan.broadcast_period
    hub = MemoryHub(rng=random.Random(seed))
    config = TrackerConfig(broadcast_period=period)
    what = f"{mode} run"
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_node(hub.connect(f"n{i}"), config=config, rng=random.Random(seed + i), vsn=1)
            )
            for i in range(plan.nodes)
        ]
        if mode == BATCHED:
            for node in nodes:
                node.configure_topic(TOPIC, TopicOptions(large_room=True))
        elif mode != UNBATCHED:
            raise ValueError(f"unknown mode {mode!r}")

        # setup (untimed): the room, replicated to every node
        started = clock()
        owned: list[deque[int]] = [deque() for _ in nodes]
        for n in range(plan.presences):
            i = n % plan.nodes
            nodes[i].track(f"c{n}", TOPIC, f"u{n}", META)
            owned[i].append(n)
            if n % 1_000 == 999:
                await asyncio.sleep(0)  # let the nodes' loops run
        await _until(
            lambda: all(node.count(TOPIC) == plan.presences for node in nodes),
            SETUP_GRACE + plan.presences / 1_000,
            f"{what}: the nodes did not all hold the {plan.presences:,} presences",
        )
        await asyncio.sleep(1.5 * period)
        setup = clock() - started
        gc.collect()

        joined: Joined = {}
        collector = _GcMeter()
        count = plan.nodes
        meters = [_meter(node.pump, i, collector) for i, node in enumerate(nodes)]
        subscribers = [
            _Subscriber(i, count + i, joined, clock, collector) for i in range(plan.nodes)
        ]
        for subscriber, node in zip(subscribers, nodes, strict=True):
            subscriber.subscribe(node)
        tasks = [loop.create_task(subscriber.run()) for subscriber in subscribers]
        gc.callbacks.append(collector)
        try:
            left: list[str] = []
            first, last = await _load(
                plan,
                nodes,
                owned,
                joined,
                left,
                lambda: _snapshot(nodes, meters, subscribers, collector),
            )
            total = len(joined)

            def delivered() -> bool:
                if any(s.wrong for s in subscribers):
                    return True  # reported below
                return all(s.join_count >= total and s.leave_count >= total for s in subscribers)

            await _until(
                delivered,
                DRAIN_GRACE + 10 * period,
                f"{what}: a subscriber did not receive every join and leave",
            )
        finally:
            gc.callbacks.remove(collector)
            for subscriber in subscribers:
                if subscriber.subscription is not None:
                    subscriber.subscription.close()
            done, _ = await asyncio.wait(tasks, timeout=10)
            for task in tasks:
                if task not in done:
                    task.cancel()
        for task in tasks:
            task.result()  # a subscriber that failed fails the run
        _check(plan, what, nodes, subscribers, joined, left)
        dropped = hub.stats.dropped_full + hub.stats.dropped_faults

    return _result(
        plan, mode, calibration, nodes, subscribers, collector, first, last, setup, dropped
    )


def _result(
    plan: FanoutPlan,
    mode: str,
    calibration: Calibration,
    nodes: Sequence[Presence],
    subscribers: Sequence[_Subscriber],
    collector: _GcMeter,
    first: _Snapshot,
    last: _Snapshot,
    setup: float,
    dropped: int,
) -> FanoutRun:
    """The window's figures: the differences of two snapshots, each CPU figure without the
    collections that struck in it and without the meters' clock reads."""
    inside, read = calibration.inside, calibration.read
    count = plan.nodes
    found = []
    intervals = last.collections - first.collections  # each collection is timed too
    for i, node in enumerate(nodes):
        calls = last.calls[i] - first.calls[i]
        pump_gc = last.gc_at(i) - first.gc_at(i)
        diffs, size, cpu, conversions = last.subscribers[i]
        diffs0, size0, cpu0, conversions0 = first.subscribers[i]
        diffs, size, cpu, conversions = (
            diffs - diffs0,
            size - size0,
            cpu - cpu0,
            conversions - conversions0,
        )
        subscriber_gc = last.gc_at(count + i) - first.gc_at(count + i)
        intervals += calls + conversions
        found.append(
            NodeRun(
                node=node.name,
                pump=last.pumps[i] - first.pumps[i] - pump_gc - calls * inside,
                subscriber=cpu - subscriber_gc - conversions * inside,
                pump_gc=pump_gc,
                subscriber_gc=subscriber_gc,
                pump_calls=calls,
                diffs=diffs,
                payload_bytes=size,
                sent_bytes=last.sent[i] - first.sent[i],
                received_bytes=last.received[i] - first.received[i],
            )
        )
    collections = last.collections - first.collections
    meters = 2 * intervals * read
    return FanoutRun(
        mode=mode,
        window=last.wall - first.wall,
        process=last.cpu - first.cpu - meters,
        meters=meters,
        joins=plan.window_joins,
        nodes=tuple(found),
        local=tuple(t for s in subscribers for t in s.local),
        remote=tuple(t for s in subscribers for t in s.remote),
        gc=sum(last.gc.values()) - sum(first.gc.values()) - collections * inside,
        full_collections=tuple(collector.full[first.full_collections : last.full_collections]),
        transfers=last.transfers - first.transfers,
        dropped=dropped,
        setup=setup,
    )


async def _load(
    plan: FanoutPlan,
    nodes: Sequence[Presence],
    owned: Sequence[deque[int]],
    joined: Joined,
    left: list[str],
    snapshot: Callable[[], _Snapshot],
) -> tuple[_Snapshot, _Snapshot]:
    """Joins at ``plan.rate`` (each followed by a leave on the same node), in bursts every
    :data:`STEP`; the snapshots at the start and the end of the window."""
    clock = asyncio.get_running_loop().time
    rate = plan.rate
    warm = plan.warm_joins
    total = warm + plan.window_joins
    count = len(nodes)
    base = plan.presences
    first: _Snapshot | None = None
    start = clock()
    done = 0
    while done < total:
        due = min(total, int((clock() - start) * rate) + 1)
        while done < due:
            if done == warm:
                first = snapshot()
            i = done % count
            node = nodes[i]
            n = base + done
            key = f"u{n}"
            joined[key] = (clock(), i, done >= warm)
            node.track(f"c{n}", TOPIC, key, META)
            owned[i].append(n)
            old = owned[i].popleft()
            node.untrack(f"c{old}", TOPIC, f"u{old}")
            left.append(f"u{old}")
            done += 1
        if done < total:
            await asyncio.sleep(STEP)
    last = snapshot()
    assert first is not None
    return first, last


def _check(
    plan: FanoutPlan,
    what: str,
    nodes: Sequence[Presence],
    subscribers: Sequence[_Subscriber],
    joined: Joined,
    left: Sequence[str],
) -> None:
    """Every node holds the room at its size; every subscriber saw every change exactly once."""
    for node in nodes:
        if node.count(TOPIC) != plan.presences:
            raise AssertionError(
                f"fan-out: {what}: {node.name} holds {node.count(TOPIC):,} presences, "
                f"not {plan.presences:,}"
            )
    expected_joins = set(joined)
    expected_leaves = set(left)
    for s in subscribers:
        name = nodes[s.index].name
        if s.wrong:
            raise AssertionError(f"fan-out: {what}: {name}'s subscriber got {s.wrong[:3]}")
        if s.joins != expected_joins or s.join_count != len(expected_joins):
            raise AssertionError(
                f"fan-out: {what}: {name}'s subscriber saw {s.join_count:,} joins of "
                f"{len(s.joins):,} keys, not each of the {len(expected_joins):,} once"
            )
        if s.leaves != expected_leaves or s.leave_count != len(expected_leaves):
            raise AssertionError(
                f"fan-out: {what}: {name}'s subscriber saw {s.leave_count:,} leaves of "
                f"{len(s.leaves):,} keys, not each of the {len(expected_leaves):,} once"
            )
        if s.conversions != s.diffs:
            raise AssertionError(
                f"fan-out: {what}: {s.conversions} diffs metered, {s.diffs} received: the "
                "subscription no longer converts diffs through Presence._convert_diff"
            )
        timed = sum(1 for _, _, in_window in joined.values() if in_window)
        if len(s.local) + len(s.remote) != timed:
            raise AssertionError(f"fan-out: {what}: {name} timed {len(s.local) + len(s.remote)}")


# ---------------------------------------------------------------------------- the section


def measure_fanout(plan: FanoutPlan, *, progress: Callable[[str], None]) -> FanoutResult:
    """``plan.repeat`` runs per mode, interleaved (AB, BA, ...); every run checked.

    Raises:
        AssertionError: the nodes did not replicate the room, a subscriber missed a change or
            saw one twice, or a node does not hold the room at its size at the end.
    """
    began = time.perf_counter()
    calibration = calibrate()
    runs: list[FanoutRun] = []
    for r in range(plan.repeat):
        for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
            gc.collect()
            run = asyncio.run(_run(plan, mode, seed=1_000 * r + 1, calibration=calibration))
            runs.append(run)
            per_node = statistics.mean(n.pump for n in run.nodes) / run.window
            diffs = statistics.mean(n.diffs for n in run.nodes) / run.window
            progress(
                f"fan-out {mode} {r + 1}/{plan.repeat}: {per_node * 1e3:.1f} ms CPU/s per node, "
                f"{diffs:,.1f} diffs/s per subscriber (setup {run.setup:.1f} s)"
            )
    return FanoutResult(
        plan=plan,
        runs=tuple(runs),
        seconds=time.perf_counter() - began,
        calibration=calibration,
    )


def calibrate(reads: int = 20_000) -> Calibration:
    """Measure :class:`Calibration`: the median of ``reads`` empty intervals, and the thread CPU
    time of ``reads`` clock reads, per read."""
    clock = time.thread_time
    empty = []
    for _ in range(reads):
        start = clock()
        empty.append(clock() - start)
    start = clock()
    for _ in range(reads):
        clock()
    return Calibration(inside=statistics.median(empty), read=(clock() - start) / reads)


# ---------------------------------------------------------------------------- report


def _num(value: float) -> str:
    """Three significant digits or more, thousands separated."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ratio(batched: float, unbatched: float) -> str:
    if unbatched == 0:
        return "-"
    ratio = batched / unbatched
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _per_second(runs: Sequence[FanoutRun], pick: Callable[[FanoutRun], float]) -> list[float]:
    return [pick(run) / run.window for run in runs]


def _node_cpu(runs: Sequence[FanoutRun], index: int) -> list[float]:
    """ms of CPU per s of load, the garbage collector's left out: the pump's min and median, the
    subscriber's min and median."""
    pump = _per_second(runs, lambda run: run.nodes[index].pump * 1e3)
    sub = _per_second(runs, lambda run: run.nodes[index].subscriber * 1e3)
    return [min(pump), statistics.median(pump), min(sub), statistics.median(sub)]


CPU_HEADER = [
    "node",
    "mode",
    "node CPU: min (ms/s)",
    "node CPU: median (ms/s)",
    "subscriber CPU: min (ms/s)",
    "subscriber CPU: median (ms/s)",
]


def _node_traffic(runs: Sequence[FanoutRun], index: int) -> list[float]:
    """Medians of diffs/s and payload kB/s per subscriber, bytes per diff (over every run), and
    medians of the node's kB/s sent and received on the bus."""
    found = [run.nodes[index] for run in runs]
    diffs = _per_second(runs, lambda run: run.nodes[index].diffs)
    payload = _per_second(runs, lambda run: run.nodes[index].payload_bytes / 1e3)
    sent = _per_second(runs, lambda run: run.nodes[index].sent_bytes / 1e3)
    received = _per_second(runs, lambda run: run.nodes[index].received_bytes / 1e3)
    total = sum(n.diffs for n in found)
    per_diff = sum(n.payload_bytes for n in found) / total if total else 0.0
    return [
        statistics.median(diffs),
        statistics.median(payload),
        per_diff,
        statistics.median(sent),
        statistics.median(received),
    ]


TRAFFIC_HEADER = [
    "node",
    "mode",
    "diffs/s per subscriber",
    "payload kB/s per subscriber",
    "bytes per diff",
    "bus: sent (kB/s)",
    "bus: received (kB/s)",
]


def _per_node(
    found: FanoutResult, figures: Callable[[Sequence[FanoutRun], int], list[float]]
) -> list[list[str]]:
    rows = []
    unbatched, batched = found.of(UNBATCHED), found.of(BATCHED)
    for i in range(found.plan.nodes):
        name = unbatched[0].nodes[i].node
        plain = figures(unbatched, i)
        large = figures(batched, i)
        rows.append([name, UNBATCHED, *map(_num, plain)])
        rows.append([name, BATCHED, *map(_num, large)])
        rows.append([name, "batched / unbatched", *map(_ratio, large, plain)])
    return rows


def cpu_rows(found: FanoutResult) -> list[list[str]]:
    """Per node: each mode's CPU figures, then their ratio."""
    return _per_node(found, _node_cpu)


def traffic_rows(found: FanoutResult) -> list[list[str]]:
    """Per node: what each mode's subscriber received and the node's bus traffic, then ratios."""
    return _per_node(found, _node_traffic)


def _process_figures(runs: Sequence[FanoutRun]) -> list[float]:
    """min and median (ms/s) of: the process, the garbage collector, then the three pumps, the
    three subscribers and the rest, each without the collections that struck in it."""
    process = _per_second(runs, lambda run: run.process * 1e3)
    collector = _per_second(runs, lambda run: run.gc * 1e3)
    pumps = _per_second(runs, lambda run: sum(n.pump for n in run.nodes) * 1e3)
    subs = _per_second(runs, lambda run: sum(n.subscriber for n in run.nodes) * 1e3)
    rest = [p - c - q - s for p, c, q, s in zip(process, collector, pumps, subs, strict=True)]
    out = []
    for values in (process, collector, pumps, subs, rest):
        out += [min(values), statistics.median(values)]
    return out


PROCESS_HEADER = [
    "mode",
    "process: min (ms/s)",
    "process: median (ms/s)",
    "GC: min",
    "GC: median",
    "3 pumps: min",
    "3 pumps: median",
    "3 subscribers: min",
    "3 subscribers: median",
    "the rest: min",
    "the rest: median",
    "full collections",
]


def process_rows(found: FanoutResult) -> list[list[str]]:
    rows = []
    figures = {}
    for mode in MODES:
        runs = found.of(mode)
        figures[mode] = _process_figures(runs)
        full = [len(run.full_collections) for run in runs]
        rows.append([mode, *map(_num, figures[mode]), ", ".join(map(str, full))])
    ratios = map(_ratio, figures[BATCHED], figures[UNBATCHED])
    rows.append(["batched / unbatched", *ratios, "-"])
    return rows


def _ms(seconds: float) -> str:
    return _num(seconds * 1e3)


LATENCY_HEADER = ["mode", "subscriber", "joins timed", "median (ms)", "p99 (ms)", "max (ms)"]


def latency_rows(found: FanoutResult) -> list[list[str]]:
    rows = []
    for mode in MODES:
        runs = found.of(mode)
        for where, samples in (
            ("local (the tracking node)", [t for run in runs for t in run.local]),
            ("remote (the two others)", [t for run in runs for t in run.remote]),
        ):
            if not samples:
                rows.append([mode, where, "0", "-", "-", "-"])
                continue
            rows.append(
                [
                    mode,
                    where,
                    f"{len(samples):,}",
                    _ms(statistics.median(samples)),
                    _ms(percentile(samples, 99)),
                    _ms(max(samples)),
                ]
            )
    return rows


def notes(found: FanoutResult) -> dict[str, str]:
    """The captions: ``where``, ``cpu``, ``traffic``, ``process``, ``latency``."""
    plan = found.plan
    rates = [run.joins / run.window for run in found.runs]
    transfers = sum(run.transfers for run in found.runs)
    dropped = sum(run.dropped for run in found.runs)
    setup = statistics.median(run.setup for run in found.runs)
    meters = statistics.median(run.meters / run.window for run in found.runs)
    reads = found.calibration.read * 1e6
    full = [t for run in found.runs for t in run.full_collections]
    took = f"{min(full) * 1e3:,.0f} to {max(full) * 1e3:,.0f} ms each" if full else "none"
    where = (
        f"{plan.presences:,} presences in one topic on {plan.nodes} nodes (asyncio driver, one "
        f"MemoryHub, one process), {plan.rate:,.0f} joins and as many leaves per second, round "
        f"robin over the nodes; broadcast_period {plan.broadcast_period:g} s; a window of "
        f"{plan.window:g} s after {plan.warmup:g} s of warm-up; {found.repeat} "
        f"{'run' if found.repeat == 1 else 'runs'} per mode, interleaved; joins per second "
        f"achieved {min(rates):,.0f} to {max(rates):,.0f}; transfer requests during the windows: "
        f"{transfers}; messages dropped by the hub: {dropped}; setup {setup:.1f} s a run "
        f"(median), the section {found.seconds:.0f} s"
    )
    return {
        "where": where,
        "cpu": (
            "CPU per node, per second of load: in the node's pump (ticks, receiving, local "
            "commands) and in its subscriber (grouping and JSON-encoding each diff), min and "
            "median over the runs, the garbage collector's time left out (it is the whole "
            "process's: see the next table but one)"
        ),
        "traffic": (
            "What each node's subscriber received per second of load (medians over the runs; "
            "bytes per diff over all of them), and the node's replication traffic on the bus"
        ),
        "process": (
            "The whole process, per second of load: its CPU time, of which the garbage "
            "collector, the three pumps, the three subscribers and the rest (event loop, "
            "drivers' loops, hub, load generator, latency bookkeeping); full collections in each "
            f"run's window (CPU time: {took}). Left out of every CPU figure: the meters' own "
            f"clock reads ({reads:.2f} µs each; {meters * 1e3:.1f} ms/s, median)"
        ),
        "latency": (
            "From just before track to the subscriber holding the diff, every join of every "
            "window (pooled over the runs and subscribers)"
        ),
    }


def _tables(found: FanoutResult) -> list[tuple[str, list[str], list[list[str]]]]:
    text = notes(found)
    return [
        (text["cpu"], CPU_HEADER, cpu_rows(found)),
        (text["traffic"], TRAFFIC_HEADER, traffic_rows(found)),
        (text["process"], PROCESS_HEADER, process_rows(found)),
        (f"Presence latency: {text['latency']}", LATENCY_HEADER, latency_rows(found)),
    ]


def render_fanout(found: FanoutResult, table: Callable[[list[str], list[list[str]]], str]) -> str:
    """The section as text, its tables drawn by ``table(header, rows)``."""
    parts = [textwrap.fill(f"Fan-out ({notes(found)['where']})", 100)]
    for caption, header, rows in _tables(found):
        parts += ["", textwrap.fill(caption, 100), table(header, rows)]
    return "\n".join(parts)


def render_fanout_rst(found: FanoutResult, where: Machine) -> str:
    """``fanout_results.inc``, included by the *Fan-out* section of ``docs/performance.rst``."""
    text = notes(found)
    return "\n".join(
        [
            ".. This file is generated by ``python -m bench`` (or ``python -m bench --fanout``): "
            "do not edit it by hand.",
            "",
            f"Measured on {where.date}, at commit ``{where.commit}``, on ``{where.platform}``, "
            f"{where.python}, {where.cpu} ({where.cores} cores): {rst_text(text['where'])}.",
            "",
            *(
                f"{rst_table(header, rows, rst_text(caption))}\n"
                for caption, header, rows in _tables(found)
            ),
        ]
    )
