"""Diff latency: the time from ``track`` on tracker A until tracker B's PresenceDiff is drained,
through two Trackers in memory, as CPU time (:func:`time.process_time`) and wall time
(:func:`time.perf_counter`).

Two fresh :class:`~presence_core.Tracker` objects with the default TrackerConfig know each other
(an untimed exchange of heartbeats). For each of ``joins`` single joins, the timed part is what one
node's adapter and the other's would do back to back, with no waiting:

1. A tracks the presence (a fresh connection, topic ``topic<i mod 10>``) and its event queue is
   drained (the local diff an adapter pushes to A's own clients);
2. A's tick runs right away: ``handle_timer`` at ``next_deadline()`` (virtual time, so no sleep);
3. the heartbeat carrying the one-join delta is handed to B, as the message object or as its
   encoded bytes (``encode_message``, then ``Tracker.receive(bytes)``, which decodes);
4. B's event queue is drained; the clock stops when it is empty. B's diff must hold exactly
   the new presence with the ``phx_ref`` A returned (checked after the clock stopped).

Untimed, A then leaves the presence again, both trackers tick and exchange their heartbeats, so
no presence accumulates and neither tracker ever goes quiet long enough to be marked down. The two
deliveries alternate join by join (two pairs of trackers; AB, BA, ...), so a burst of load from
elsewhere hits both alike. The garbage collector stays enabled (the p99 includes its pauses).

Every delta a tracker sends or receives is also folded into its delta generations
(``max_delta_sizes``, by default up to 100, 1,000 and 10,000 changes kept to answer transfer
requests). The fold copies the generations' tables wholesale, so its cost grows a little as they
fill and drops when the largest starts over; from fresh trackers a few thousand join-and-leave
rounds span about one such cycle. The fastest join shows the cost with near-empty generations.

In real time a remote join also waits for A's next tick (up to ``broadcast_period``, 1.5 s by
default) and the network; this measures only the processing on both sides.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from presence_core import Message, PresenceDiff, Tracker, encode_message

from ._e2e import _drain, _introduced
from ._workloads import META

__all__ = ["LatencyResult", "Percentiles", "measure_latency", "percentile"]

Deliver = Callable[[Tracker, Message, float], None]


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (``0 < q <= 100``) of ``samples``.

    Raises:
        ValueError: ``samples`` is empty or ``q`` is out of range.
    """
    if not samples:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"q must be within (0, 100], not {q!r}")
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Percentiles:
    """The latency samples of one delivery, in seconds, in the order they ran.

    Attributes:
        samples: the wall time of each join.
        cpu: the CPU time of each join.
    """

    samples: tuple[float, ...]
    cpu: tuple[float, ...]

    @property
    def cpu_median_us(self) -> float:
        return statistics.median(self.cpu) * 1e6

    @property
    def cpu_p99_us(self) -> float:
        return percentile(self.cpu, 99) * 1e6

    @property
    def cpu_fastest_us(self) -> float:
        return min(self.cpu) * 1e6

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples) * 1e6

    @property
    def p99_us(self) -> float:
        return percentile(self.samples, 99) * 1e6

    @property
    def fastest_us(self) -> float:
        return min(self.samples) * 1e6


@dataclass(frozen=True)
class LatencyResult:
    """Diff latency of single joins.

    Attributes:
        joins: timed joins per delivery.
        objects: B receives the message object.
        encoded: B receives the encoded bytes (A encodes, B decodes).
    """

    joins: int
    objects: Percentiles
    encoded: Percentiles


class _Pair:
    """Two trackers that know each other, and the virtual time of A's last tick."""

    def __init__(self, deliver: Deliver) -> None:
        self.a, self.b = _introduced()
        self.deliver = deliver
        self.now = 1.0

    def _deadline(self) -> float:
        deadline = self.a.next_deadline()
        if deadline is None:
            raise AssertionError("latency: tracker A has no deadline")
        return deadline

    def settle(self) -> None:
        """Untimed: both trackers tick at A's next deadline and exchange what they send."""
        a, b = self.a, self.b
        self.now = self._deadline()
        a.handle_timer(now=self.now)
        for out in a.messages_to_send():
            self.deliver(b, out.message, self.now)
        b.handle_timer(now=self.now)
        for out in b.messages_to_send():
            self.deliver(a, out.message, self.now)
        _drain(a)
        _drain(b)

    def join(self, i: int) -> tuple[float, float]:
        """``(cpu, wall)`` of one join from A's track until B's diff is drained; check it; undo it
        untimed."""
        a, b, deliver = self.a, self.b, self.deliver
        conn, topic, key = f"lat{i}", f"topic{i % 10}", f"latuser{i}"
        diffs: list[PresenceDiff] = []
        cpu, start = time.process_time(), time.perf_counter()
        ref = a.track(conn=conn, topic=topic, key=key, meta=META, now=self.now)
        _drain(a)
        now = self._deadline()
        a.handle_timer(now=now)
        for out in a.messages_to_send():
            deliver(b, out.message, now)
        while (event := b.next_event()) is not None:
            if isinstance(event, PresenceDiff):
                diffs.append(event)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        self.now = now
        joined = [(d.topic, e.key, e.meta.get("phx_ref")) for d in diffs for e in d.joins]
        if joined != [(topic, key, ref)] or any(d.leaves for d in diffs):
            raise AssertionError(f"latency: B's diffs for join {i} are {diffs!r}")
        b.handle_timer(now=now)
        for out in b.messages_to_send():
            deliver(a, out.message, now)
        _drain(a)
        a.untrack(conn=conn, topic=topic, key=key, now=now)
        _drain(a)
        self.settle()
        if b.count(topic) != 0:
            raise AssertionError(f"latency: B did not see join {i} leave again")
        return cpu, elapsed


def measure_latency(joins: int, *, warmup: int = 0) -> LatencyResult:
    """Median and p99 of ``joins`` single joins per delivery, after ``warmup`` untimed ones."""

    def as_object(tracker: Tracker, message: Message, now: float) -> None:
        tracker.receive(message, now=now)

    def as_bytes(tracker: Tracker, message: Message, now: float) -> None:
        tracker.receive(encode_message(message), now=now)

    pairs = {"objects": _Pair(as_object), "encoded": _Pair(as_bytes)}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pairs}
    gc.collect()
    names = list(pairs)
    for i in range(warmup + joins):
        for name in names if i % 2 == 0 else reversed(names):  # AB, BA, ...
            timing = pairs[name].join(i)
            if i >= warmup:
                samples[name].append(timing)
    found = {
        name: Percentiles(
            samples=tuple(wall for _, wall in runs), cpu=tuple(cpu for cpu, _ in runs)
        )
        for name, runs in samples.items()
    }
    return LatencyResult(joins=joins, objects=found["objects"], encoded=found["encoded"])
