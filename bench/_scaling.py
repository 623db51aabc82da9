"""How each cost grows: with the size of a topic (10 to 100,000) and with the replicas (2 to 50).

Topic-size axis, ``n`` presences in one topic:

* ``get_by_topic`` and ``Tracker.list``: listing a topic of ``n`` (the tracker's presences were
  tracked through ``Tracker.track``); read-only, so one state serves every repetition;
* ``merge delta``: R2 holds R1's ``n`` presences; R1 makes 10 changes (5 leaves, 5 joins) and R2
  merges the delta. It should not grow with ``n``;
* ``merge extract``: an empty R2 merges R1's extract of ``n`` presences;
* ``down + permdown``: R2 holds R1's ``n`` presences; ``replica_down(R1)`` then
  ``remove_down_replica(R1)``.

Replica axis, an observer R0 and ``r - 1`` remote replicas:

* ``get_by_topic``, ``Tracker.list``: 10,000 presences in one topic, split evenly over the
  remote owners (the tracker learns them through real heartbeats carrying deltas);
* ``merge delta``: one remote replica makes 10 changes, R0 merges the delta;
* ``merge extract``: an empty R0 merges the extract of a replica that holds everybody's presences;
* ``down + permdown``: every remote replica holds 1,000 presences; one goes down and is removed.

Every repetition of a mutating operation starts from a fresh state built untimed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
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

from ._timing import measure
from ._workloads import META, R1, Ident, check, fill, pair

__all__ = ["OPERATIONS", "ScalingResult", "scale_replicas", "scale_topic"]

OPERATIONS = ("get_by_topic", "Tracker.list", "merge delta", "merge extract", "down + permdown")

TOPIC = "topic0"


@dataclass(frozen=True)
class ScalingResult:
    """Best times (seconds) of every operation at every point of one axis.

    Attributes:
        axis: what grows ("topic size" or "replicas").
        points: the sizes, ascending.
        seconds: per operation, one best time per point.
        note: what each point holds, in words.
    """

    axis: str
    points: tuple[int, ...]
    seconds: dict[str, tuple[float, ...]]
    note: str


def _topic_inputs(n: int, prefix: str = "") -> list[Ident]:
    return [(f"{prefix}conn{i}", TOPIC, f"{prefix}user{i}") for i in range(n)]


def _changed(r1: ReplicaState, prefix: str) -> Delta:
    """R1's delta of 5 leaves (of its oldest presences) and 5 joins."""
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


# ---------------------------------------------------------------------------- topic size


def _topic_point(n: int, repeat: int) -> dict[str, float]:
    inputs = _topic_inputs(n)
    seconds: dict[str, float] = {}

    own = fill(ReplicaState(R1), inputs)
    timing = measure(lambda: own, lambda s: s.get_by_topic(TOPIC), repeat=repeat)
    check(len(timing.result) == n, "scaling: get_by_topic")
    seconds["get_by_topic"] = timing.best

    tracker = _tracker(R1)
    for conn, topic, key in inputs:
        tracker.track(conn=conn, topic=topic, key=key, meta=META, now=0.0)
    listed = measure(lambda: tracker, lambda t: t.list(TOPIC), repeat=repeat)
    check(sum(len(p["metas"]) for p in listed.result.values()) == n, "scaling: Tracker.list")
    seconds["Tracker.list"] = listed.best

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
    seconds["merge delta"] = merged.best

    def with_extract() -> tuple[ReplicaState, Snapshot]:
        r1, r2 = pair()
        fill(r1, inputs)
        return r2, r1.extract(*r2.clocks())

    full = measure(with_extract, lambda p: p[0].merge(p[1]), repeat=repeat)
    check(len(full.result.joins) == n, "scaling: merge extract")
    seconds["merge extract"] = full.best

    def down(states: tuple[ReplicaState, ReplicaState]) -> int:
        r2 = states[1]
        return len(r2.replica_down(R1)) + len(r2.remove_down_replica(R1))

    gone = measure(holding, down, repeat=repeat)
    check(gone.result == 2 * n, "scaling: down + permdown")
    seconds["down + permdown"] = gone.best
    return seconds


def scale_topic(points: Sequence[int], repeat: int) -> ScalingResult:
    """Every operation at every topic size."""
    rows = [_topic_point(n, repeat) for n in points]
    return ScalingResult(
        axis="topic size",
        points=tuple(points),
        seconds={op: tuple(row[op] for row in rows) for op in OPERATIONS},
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


def _replica_point(replicas: int, total: int, per_down: int, repeat: int) -> dict[str, float]:
    per_owner = total // (replicas - 1)
    seen = per_owner * (replicas - 1)
    seconds: dict[str, float] = {}

    observer, remotes, refs = _cluster(replicas, per_owner)
    listed = measure(lambda: observer, lambda s: s.get_by_topic(TOPIC), repeat=repeat)
    check(len(listed.result) == seen, "scaling: get_by_topic over replicas")
    seconds["get_by_topic"] = listed.best

    tracker = _tracker(ReplicaRef("r0", 1))
    for remote in remotes:
        fresh = ReplicaState(remote.replica)
        fill(fresh, _topic_inputs(per_owner, f"{remote.replica.name}-"))
        delta = fresh.take_delta()
        tracker.receive(
            Heartbeat(sender=fresh.replica, clock=fresh.clocks()[1], delta=delta), now=0
        )
    grouped = measure(lambda: tracker, lambda t: t.list(TOPIC), repeat=repeat)
    check(sum(len(p["metas"]) for p in grouped.result.values()) == seen, "scaling: Tracker.list")
    seconds["Tracker.list"] = grouped.best

    def with_delta() -> tuple[ReplicaState, Delta]:
        observer, remotes, _ = _cluster(replicas, per_owner)
        return observer, _changed(remotes[0], f"{remotes[0].replica.name}-")

    merged = measure(with_delta, lambda p: p[0].merge(p[1]), repeat=repeat)
    _check_delta(merged.result, min(5, per_owner))
    seconds["merge delta"] = merged.best

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
    seconds["merge extract"] = full.best

    def holding() -> ReplicaState:
        return _cluster(replicas, per_down)[0]

    def down(observer: ReplicaState) -> int:
        first = refs[0]
        return len(observer.replica_down(first)) + len(observer.remove_down_replica(first))

    gone = measure(holding, down, repeat=repeat)
    check(gone.result == 2 * per_down, "scaling: down + permdown over replicas")
    seconds["down + permdown"] = gone.best
    return seconds


def scale_replicas(
    points: Sequence[int], repeat: int, *, total: int = 10_000, per_down: int = 1_000
) -> ScalingResult:
    """Every operation at every cluster size (``total`` presences listed and transferred)."""
    rows = [_replica_point(r, total, per_down, repeat) for r in points]
    return ScalingResult(
        axis="replicas",
        points=tuple(points),
        seconds={op: tuple(row[op] for row in rows) for op in OPERATIONS},
        note=f"{total:,} presences in the topic; down + permdown: {per_down:,} each",
    )
