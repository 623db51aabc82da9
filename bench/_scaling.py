"""How each cost grows: with the presences held (1,000 to 1,000,000), with the size of a topic
(10 to 100,000) and with the replicas (2 to 50).

Presences axis, per operation and per entry, ``n`` presences built like workload a (``n / 100``
connections x 100 topics, BENCH.md's meta). One repetition is a chain on fresh states, each step
timed (CPU and wall, after :func:`gc.collect`) on what the steps before it built, untimed for it:

* ``join``: R1 joins the ``n`` presences (per join);
* ``get_by_topic``: R1 lists ``topic0`` (``n / 100`` entries; per entry listed);
* ``extract``: R1's extract for an empty R2 (``clocks`` + ``extract``; per entry);
* ``merge extract``: R2 merges it (per entry); the extract is then dropped;
* ``merge delta``: R1 makes 10 changes (5 leaves, 5 joins, untimed) and R2, holding ``n``, merges
  the delta (per merge: it should not grow with ``n``);
* ``down + permdown``: R1 is dropped; R2 runs ``replica_down(R1)`` and
  ``remove_down_replica(R1)`` (per entry removed).

The repetitions go round the points in turn (the order reversing every round), so a burst of load
hits every point alike; only one point's states are alive at a time. At 1,000,000 presences R1 and
R2 hold a million entries each at the peak.

Topic-size axis, ``n`` presences in one topic, per operation:

* ``get_by_topic`` and ``Tracker.presences``: listing a topic of ``n`` (the tracker's presences were
  tracked through ``Tracker.track``); read-only, so one state serves every repetition;
* ``merge delta``: R2 holds R1's ``n`` presences; R1 makes 10 changes (5 leaves, 5 joins) and R2
  merges the delta. It should not grow with ``n``;
* ``merge extract``: an empty R2 merges R1's extract of ``n`` presences;
* ``down + permdown``: R2 holds R1's ``n`` presences; ``replica_down(R1)`` then
  ``remove_down_replica(R1)``.

Replica axis, an observer R0 and ``r - 1`` remote replicas, per operation:

* ``get_by_topic``, ``Tracker.presences``: 10,000 presences in one topic, split evenly over the
  remote owners (the tracker learns them through real heartbeats carrying deltas);
* ``merge delta``: one remote replica makes 10 changes, R0 merges the delta;
* ``merge extract``: an empty R0 merges the extract of a replica that holds everybody's presences;
* ``down + permdown``: every remote replica holds 1,000 presences; one goes down and is removed.

Every repetition of a mutating operation starts from a fresh state built untimed; every figure is
CPU and wall time, min and median of the repetitions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from presence_core import (
    Delta,
    Heartbeat,
    MergeResult,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    Tracker,
    TrackerConfig,
)

from ._timing import Samples, measure, timed
from ._workloads import META, R1, Ident, check, fill, grid, pair

__all__ = [
    "OPERATIONS",
    "PRESENCE_OPERATIONS",
    "ScalingResult",
    "scale_presences",
    "scale_replicas",
    "scale_topic",
]

OPERATIONS = (
    "get_by_topic",
    "Tracker.presences",
    "merge delta",
    "merge extract",
    "down + permdown",
)
"""The operations of the topic-size and replica axes (whole operations)."""

PRESENCE_OPERATIONS = {
    "join": "per join",
    "get_by_topic": "per entry listed",
    "extract": "per entry",
    "merge extract": "per entry",
    "merge delta": "per merge of 10 changes",
    "down + permdown": "per entry removed",
}
"""The operations of the presences axis, and what each figure is divided by."""

TOPIC = "topic0"
TOPICS = 100
"""Topics of the presences axis (as in workload a)."""


@dataclass(frozen=True)
class ScalingResult:
    """CPU and wall samples (seconds) of every operation at every point of one axis.

    Attributes:
        axis: what grows ("presences", "topic size" or "replicas").
        points: the sizes, ascending.
        samples: per operation, one :class:`~bench._timing.Samples` per point, in seconds per
            operation (:attr:`units` says per what).
        units: per operation, what one sample is the cost of ("per join", "per operation", ...).
        note: what each point holds, in words.
    """

    axis: str
    points: tuple[int, ...]
    samples: dict[str, tuple[Samples, ...]]
    units: dict[str, str]
    note: str

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(self.samples)


def _topic_inputs(n: int, prefix: str = "") -> list[Ident]:
    return [(f"{prefix}conn{i}", TOPIC, f"{prefix}user{i}") for i in range(n)]


def _changed(r1: ReplicaState, prefix: str) -> Delta:
    """R1's delta of 5 leaves (of its oldest presences in ``topic0``) and 5 joins."""
    for entry in r1.get_by_topic(TOPIC)[:5]:
        r1.leave(entry.conn, entry.topic, entry.key)
    for i in range(5):
        r1.join(f"{prefix}new{i}", TOPIC, f"{prefix}new{i}", META)
    return r1.take_delta()


def _check_delta(result: MergeResult, leaves: int) -> None:
    check(len(result.joins) == 5 and len(result.leaves) == leaves, "scaling: wrong delta merge")


def _tracker(replica: ReplicaRef) -> Tracker:
    tracker = Tracker(config=TrackerConfig(), replica=replica, rng=random.Random(0))
    tracker.handle_timer(now=0.0)
    return tracker


# ---------------------------------------------------------------------------- presences


def _extract_for(source: ReplicaState, target: ReplicaState) -> Snapshot:
    return source.extract(*target.clocks())


def _presence_chain(n: int, inputs: list[Ident]) -> dict[str, tuple[float, float]]:
    """One repetition of the presences axis at ``n``: every step's ``(cpu, wall)``."""
    found: dict[str, tuple[float, float]] = {}
    r1, r2 = pair()

    cpu, wall, _ = timed(fill, r1, inputs)
    found["join"] = (cpu, wall)
    check(len(r1) == n and r1.clock == n, "scaling: join")

    cpu, wall, listed = timed(r1.get_by_topic, TOPIC)
    found["get_by_topic"] = (cpu, wall)
    check(len(listed) == n // TOPICS, "scaling: get_by_topic")
    del listed

    r1.reset_delta()
    cpu, wall, snapshot = timed(_extract_for, r1, r2)
    found["extract"] = (cpu, wall)
    cpu, wall, merged = timed(r2.merge, snapshot)
    found["merge extract"] = (cpu, wall)
    check(len(merged.joins) == n and len(r2) == n, "scaling: merge extract")
    del snapshot, merged

    delta = _changed(r1, "")
    cpu, wall, result = timed(r2.merge, delta)
    found["merge delta"] = (cpu, wall)
    _check_delta(result, min(5, n // TOPICS))
    del delta, result, r1

    held = len(r2)  # n - 5 + 5 (fewer leaves when topic0 holds fewer than 5)
    cpu, wall, gone = timed(lambda: len(r2.replica_down(R1)) + len(r2.remove_down_replica(R1)))
    found["down + permdown"] = (cpu, wall)
    check(gone == 2 * held and len(r2) == 0, "scaling: down + permdown")
    return found


def scale_presences(points: Sequence[int], repeat: int) -> ScalingResult:
    """Every operation's cost per entry at every number of presences (multiples of 100).

    Raises:
        ValueError: a point is not a positive multiple of 100, or ``repeat`` is less than 1.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    if any(n < TOPICS or n % TOPICS for n in points):
        raise ValueError(f"every point must be a positive multiple of {TOPICS}: {points}")
    runs: dict[int, list[dict[str, tuple[float, float]]]] = {n: [] for n in points}
    for i in range(repeat):
        for n in points if i % 2 == 0 else reversed(points):
            inputs = grid(n // TOPICS, TOPICS)
            runs[n].append(_presence_chain(n, inputs))
            del inputs
    divisors: dict[str, Callable[[int], int]] = {
        "join": lambda n: n,
        "get_by_topic": lambda n: n // TOPICS,
        "extract": lambda n: n,
        "merge extract": lambda n: n,
        "merge delta": lambda n: 1,
        "down + permdown": lambda n: n,
    }
    samples = {
        op: tuple(Samples.of([run[op] for run in runs[n]]).per(divisors[op](n)) for n in points)
        for op in PRESENCE_OPERATIONS
    }
    return ScalingResult(
        axis="presences",
        points=tuple(points),
        samples=samples,
        units=dict(PRESENCE_OPERATIONS),
        note=f"presences held, {TOPICS} topics; get_by_topic lists one topic (1/{TOPICS})",
    )


# ---------------------------------------------------------------------------- topic size


def _topic_point(n: int, repeat: int) -> dict[str, Samples]:
    inputs = _topic_inputs(n)
    found: dict[str, Samples] = {}

    own = fill(ReplicaState(R1), inputs)
    timing = measure(lambda: own, lambda s: s.get_by_topic(TOPIC), repeat=repeat)
    check(len(timing.result) == n, "scaling: get_by_topic")
    found["get_by_topic"] = timing.samples()

    tracker = _tracker(R1)
    for conn, topic, key in inputs:
        tracker.track(conn=conn, topic=topic, key=key, meta=META, now=0.0)
    listed = measure(lambda: tracker, lambda t: t.presences(TOPIC), repeat=repeat)
    check(sum(len(p["metas"]) for p in listed.result.values()) == n, "scaling: Tracker.presences")
    found["Tracker.presences"] = listed.samples()

    def holding() -> tuple[ReplicaState, ReplicaState]:
        r1, r2 = pair()
        fill(r1, inputs)
        r2.merge(r1.extract(*r2.clocks()))
        r1.reset_delta()
        return r1, r2

    def with_delta() -> tuple[ReplicaState, Delta]:
        r1, r2 = holding()
        return r2, _changed(r1, "")

    merged = measure(with_delta, lambda p: p[0].merge(p[1]), repeat=repeat)
    _check_delta(merged.result, min(5, n))
    found["merge delta"] = merged.samples()

    def with_extract() -> tuple[ReplicaState, Snapshot]:
        r1, r2 = pair()
        fill(r1, inputs)
        return r2, r1.extract(*r2.clocks())

    full = measure(with_extract, lambda p: p[0].merge(p[1]), repeat=repeat)
    check(len(full.result.joins) == n, "scaling: merge extract")
    found["merge extract"] = full.samples()

    def down(states: tuple[ReplicaState, ReplicaState]) -> int:
        r2 = states[1]
        return len(r2.replica_down(R1)) + len(r2.remove_down_replica(R1))

    gone = measure(holding, down, repeat=repeat)
    check(gone.result == 2 * n, "scaling: down + permdown")
    found["down + permdown"] = gone.samples()
    return found


def _per_operation() -> dict[str, str]:
    return dict.fromkeys(OPERATIONS, "per operation")


def scale_topic(points: Sequence[int], repeat: int) -> ScalingResult:
    """Every operation at every topic size."""
    rows = [_topic_point(n, repeat) for n in points]
    return ScalingResult(
        axis="topic size",
        points=tuple(points),
        samples={op: tuple(row[op] for row in rows) for op in OPERATIONS},
        units=_per_operation(),
        note="presences in the topic; merge delta: 10 changes",
    )


# ---------------------------------------------------------------------------- replicas


def _remotes(count: int) -> list[ReplicaRef]:
    return [ReplicaRef(f"r{i + 1}", 1) for i in range(count)]


def _cluster(
    replicas: int, per_owner: int
) -> tuple[ReplicaState, list[ReplicaState], list[ReplicaRef]]:
    """Observer R0 holding the presences of ``replicas - 1`` remote states (``per_owner`` each)."""
    observer_ref = ReplicaRef("r0", 1)
    refs = _remotes(replicas - 1)
    observer = ReplicaState(observer_ref)
    remotes = []
    for ref in refs:
        remote = ReplicaState(ref)
        remote.replica_up(observer_ref)
        fill(remote, _topic_inputs(per_owner, f"{ref.name}-"))
        remote.reset_delta()
        observer.replica_up(ref)
        observer.merge(remote.extract(*observer.clocks()))
        remotes.append(remote)
    return observer, remotes, refs


def _replica_point(replicas: int, total: int, per_down: int, repeat: int) -> dict[str, Samples]:
    per_owner = total // (replicas - 1)
    seen = per_owner * (replicas - 1)
    found: dict[str, Samples] = {}

    observer, remotes, refs = _cluster(replicas, per_owner)
    listed = measure(lambda: observer, lambda s: s.get_by_topic(TOPIC), repeat=repeat)
    check(len(listed.result) == seen, "scaling: get_by_topic over replicas")
    found["get_by_topic"] = listed.samples()

    tracker = _tracker(ReplicaRef("r0", 1))
    for remote in remotes:
        fresh = ReplicaState(remote.replica)
        fill(fresh, _topic_inputs(per_owner, f"{remote.replica.name}-"))
        delta = fresh.take_delta()
        tracker.receive(
            Heartbeat(sender=fresh.replica, clock=fresh.clocks()[1], delta=delta), now=0
        )
    grouped = measure(lambda: tracker, lambda t: t.presences(TOPIC), repeat=repeat)
    check(
        sum(len(p["metas"]) for p in grouped.result.values()) == seen, "scaling: Tracker.presences"
    )
    found["Tracker.presences"] = grouped.samples()

    def with_delta() -> tuple[ReplicaState, Delta]:
        observer, remotes, _ = _cluster(replicas, per_owner)
        return observer, _changed(remotes[0], f"{remotes[0].replica.name}-")

    merged = measure(with_delta, lambda p: p[0].merge(p[1]), repeat=repeat)
    _check_delta(merged.result, min(5, per_owner))
    found["merge delta"] = merged.samples()

    def with_extract() -> tuple[ReplicaState, Snapshot]:
        observer, remotes, refs = _cluster(replicas, per_owner)
        source = remotes[0]
        for remote in remotes[1:]:
            source.replica_up(remote.replica)
            source.merge(remote.extract(*source.clocks()))
        empty = ReplicaState(observer.replica)
        for ref in refs:
            empty.replica_up(ref)
        return empty, source.extract(*empty.clocks())

    full = measure(with_extract, lambda p: p[0].merge(p[1]), repeat=repeat)
    check(len(full.result.joins) == seen, "scaling: merge extract over replicas")
    found["merge extract"] = full.samples()

    def holding() -> ReplicaState:
        return _cluster(replicas, per_down)[0]

    def down(observer: ReplicaState) -> int:
        first = refs[0]
        return len(observer.replica_down(first)) + len(observer.remove_down_replica(first))

    gone = measure(holding, down, repeat=repeat)
    check(gone.result == 2 * per_down, "scaling: down + permdown over replicas")
    found["down + permdown"] = gone.samples()
    return found


def scale_replicas(
    points: Sequence[int], repeat: int, *, total: int = 10_000, per_down: int = 1_000
) -> ScalingResult:
    """Every operation at every cluster size (``total`` presences listed and transferred)."""
    rows = [_replica_point(r, total, per_down, repeat) for r in points]
    return ScalingResult(
        axis="replicas",
        points=tuple(points),
        samples={op: tuple(row[op] for row in rows) for op in OPERATIONS},
        units=_per_operation(),
        note=f"{total:,} presences in the topic; down + permdown: {per_down:,} each",
    )
