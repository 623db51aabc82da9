"""End to end: joins per second through two Trackers on an in-memory bus.

Tracker A tracks presences, ticks (broadcasting its delta in a heartbeat) and the heartbeat is
delivered to tracker B; both event queues are drained, as an adapter would. The bus is a function
call: once handing B the message object, once its encoded bytes, which B decodes. Each repetition
starts from two fresh trackers that already know each other (an untimed exchange of heartbeats).
The timed part is ``ticks`` rounds of ``batch`` joins, a tick of A 1.5 s of virtual time later, and
the delivery. The two deliveries' repetitions are interleaved (AB, BA, ...); each is timed as CPU
and wall time, and B must see every join (checked after the clocks stop).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from presence_core import Message, Tracker, TrackerConfig, encode_message

from ._timing import Job, Samples, measure_pair
from ._workloads import META, R1, R2

__all__ = ["E2EResult", "measure_e2e"]


@dataclass(frozen=True)
class E2EResult:
    """The samples of both deliveries.

    Attributes:
        joins: joins per run.
        objects: B receives the message objects.
        encoded: B receives the encoded bytes (A encodes, B decodes).
    """

    joins: int
    objects: Samples
    encoded: Samples

    @property
    def objects_per_second(self) -> float:
        """Joins per second of the fastest run (wall), message objects."""
        return self.joins / self.objects.wall_min

    @property
    def bytes_per_second(self) -> float:
        """Joins per second of the fastest run (wall), encoded bytes."""
        return self.joins / self.encoded.wall_min


def _drain(tracker: Tracker) -> int:
    count = 0
    while tracker.next_event() is not None:
        count += 1
    return count


def _introduced() -> tuple[Tracker, Tracker]:
    config = TrackerConfig()
    a = Tracker(config=config, replica=R1, rng=random.Random(1))
    b = Tracker(config=config, replica=R2, rng=random.Random(2))
    for tracker in (a, b):
        tracker.handle_timer(now=0.0)
        tracker.handle_timer(now=1.0)  # past the jittered first tick: an empty heartbeat
    for sender, receiver in ((a, b), (b, a)):
        for out in sender.messages_to_send():
            receiver.receive(out.message, now=1.0)
    _drain(a)
    _drain(b)
    if b.replicas().get(R1.name) is None or a.replicas().get(R2.name) is None:
        raise AssertionError("e2e: the trackers did not meet")
    return a, b


def _run(
    inputs: list[list[tuple[str, str, str]]], deliver: Callable[[Tracker, Message, float], None]
) -> Callable[[tuple[Tracker, Tracker]], Tracker]:
    def run(trackers: tuple[Tracker, Tracker]) -> Tracker:
        a, b = trackers
        now = 1.0
        for batch in inputs:
            for conn, topic, key in batch:
                a.track(conn=conn, topic=topic, key=key, meta=META, now=now)
            now += a.config.broadcast_period
            a.handle_timer(now=now)
            for out in a.messages_to_send():
                deliver(b, out.message, now)
            _drain(a)
            _drain(b)
        return b

    return run


def measure_e2e(ticks: int, batch: int, repeat: int) -> E2EResult:
    """Joins per second of ``ticks`` x ``batch`` joins (10 topics) delivered to a second tracker."""
    inputs = [
        [(f"conn{t}_{j}", f"topic{j % 10}", f"user{t}_{j}") for j in range(batch)]
        for t in range(ticks)
    ]
    n = ticks * batch

    def check(b: Tracker) -> int:
        total = sum(b.count(topic) for topic in b.topics())
        if total != n:
            raise AssertionError(f"e2e: the second tracker sees {total} presences, not {n}")
        return total

    def as_object(b: Tracker, message: Message, now: float) -> None:
        b.receive(message, now=now)

    def as_bytes(b: Tracker, message: Message, now: float) -> None:
        b.receive(encode_message(message), now=now)

    objects, encoded = measure_pair(
        Job(_introduced, _run(inputs, as_object), check),
        Job(_introduced, _run(inputs, as_bytes), check),
        repeat=repeat,
    )
    return E2EResult(joins=n, objects=objects.samples(), encoded=encoded.samples())
