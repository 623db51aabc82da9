"""One run of the whole suite: the sizes of each mode, and the order things are measured in."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._brokers import FULL_BROKERS, QUICK_BROKERS, BrokerPlan, measure_brokers
from ._convergence import measure_convergence
from ._driver import measure_drivers
from ._e2e import measure_e2e
from ._endpoint import measure_endpoint
from ._fanout import FULL_FANOUT, QUICK_FANOUT, FanoutPlan, measure_fanout
from ._latency import measure_latency
from ._memory import measure_memory
from ._report import Results, machine
from ._scaling import scale_presences, scale_replicas, scale_topic
from ._targets import FULL_TARGETS, QUICK_TARGETS, TargetPlan, measure_targets
from ._wire import measure_wire
from ._workloads import FULL, QUICK, Sizes, run_workloads

__all__ = ["FULL_PLAN", "QUICK_PLAN", "Plan", "run_suite"]


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode.

    Attributes:
        workloads: the sizes of workloads a to e.
        targets: the sizes of the speed pass's target figures.
        repeat: repetitions per figure (each shown as CPU and wall time, min and median).
        memory_conns: connections (x 100 topics) of each memory figure.
        wire_conns: connections (x 100 topics) of the full transfer.
        e2e: ``(ticks, joins per tick)`` of the end-to-end run.
        latency_joins: timed single joins per delivery of the diff latency.
        convergence_nodes: cluster sizes of the convergence runs.
        convergence_seeds: the seeds every cluster size runs (a heal run and a crash run each).
        presence_points: presences held at each point of the per-entry scaling (multiples
            of 100).
        topic_points: topic sizes of the scaling plot.
        replica_points: cluster sizes of the scaling plot.
        replica_total: presences listed and transferred at every cluster size.
        replica_down: presences of each replica in the down + permdown figure.
        driver_period: the ``broadcast_period`` of the drivers' track-to-remote-diff latency.
        driver_samples: track-to-remote-diff samples per driver (split over the repetitions).
        driver_tracks: tracks per run of the drivers' tracks-per-second figures.
        driver_idle: ``(window, settle)``: seconds the idle nodes are measured for, after
            meeting and then settling for ``settle`` seconds.
        endpoint_sockets: websockets per run of the endpoint's joins-per-second figure.
        endpoint_watchers: websockets of the topic a join is fanned out to.
        endpoint_rounds: fan-out rounds (one tracked join each).
        fanout: the sizes of the fan-out section (a large room on three nodes, batched against
            unbatched; its own ``repeat``, which an explicit ``repeat`` overrides).
        brokers: the sizes of the broker section (nodes in processes over Redis and NATS).
    """

    workloads: Sizes
    targets: TargetPlan
    repeat: int
    memory_conns: tuple[int, ...]
    wire_conns: int
    e2e: tuple[int, int]
    latency_joins: int
    convergence_nodes: tuple[int, ...]
    convergence_seeds: tuple[int, ...]
    presence_points: tuple[int, ...]
    topic_points: tuple[int, ...]
    replica_points: tuple[int, ...]
    replica_total: int
    replica_down: int
    driver_period: float
    driver_samples: int
    driver_tracks: int
    driver_idle: tuple[float, float]
    endpoint_sockets: int
    endpoint_watchers: int
    endpoint_rounds: int
    fanout: FanoutPlan
    brokers: BrokerPlan


FULL_PLAN = Plan(
    workloads=FULL,
    targets=FULL_TARGETS,
    repeat=5,
    memory_conns=(1_000, 10_000),
    wire_conns=1_000,
    e2e=(20, 1_000),
    latency_joins=5_000,
    convergence_nodes=(3, 10, 50),
    convergence_seeds=(1, 2, 3, 4, 5),
    presence_points=(1_000, 10_000, 100_000, 1_000_000),  # ~1 GB and ~12 s a run at 1,000,000
    topic_points=(10, 100, 1_000, 10_000, 100_000),
    replica_points=(2, 5, 10, 20, 50),
    replica_total=10_000,
    replica_down=1_000,
    driver_period=0.02,
    driver_samples=300,
    driver_tracks=5_000,
    driver_idle=(20.0, 3.0),  # 13 ticks and at least one empty heartbeat (16.5 s) per node
    endpoint_sockets=1_000,
    endpoint_watchers=1_000,
    endpoint_rounds=100,
    fanout=FULL_FANOUT,
    brokers=FULL_BROKERS,
)

QUICK_PLAN = Plan(
    workloads=QUICK,
    targets=QUICK_TARGETS,
    repeat=1,
    memory_conns=(1, 10),
    wire_conns=10,
    e2e=(3, 50),
    latency_joins=200,
    convergence_nodes=(3, 10),
    convergence_seeds=(1, 2),
    presence_points=(100, 1_000),
    topic_points=(10, 100),
    replica_points=(2, 3),
    replica_total=100,
    replica_down=10,
    driver_period=0.02,
    driver_samples=12,
    driver_tracks=200,
    driver_idle=(0.3, 0.0),
    endpoint_sockets=20,
    endpoint_watchers=20,
    endpoint_rounds=5,
    fanout=QUICK_FANOUT,
    brokers=QUICK_BROKERS,
)


def run_suite(
    plan: Plan,
    *,
    quick: bool,
    repeat: int | None = None,
    progress: Callable[[str], None],
    brokers: bool = False,
) -> Results:
    """Measure and check everything; every figure is checked for correctness, never for speed.

    The broker section (``plan.brokers``) runs only when ``brokers`` is true: it starts broker
    servers and node processes.

    Raises:
        AssertionError: a workload or figure produced a wrong result (``CheckFailed`` for the
            workloads).
    """
    fanout_plan = plan.fanout if repeat is None else dataclasses.replace(plan.fanout, repeat=repeat)
    repeat = plan.repeat if repeat is None else repeat
    start = time.perf_counter()
    progress("machine ...")
    where = machine()
    workloads = run_workloads(plan.workloads, repeat, progress=progress)
    memory = []
    for conns in plan.memory_conns:
        memory.append(measure_memory(conns))
        progress(
            f"memory at {memory[-1].presences:,}: {memory[-1].steady:.0f} B per presence, "
            f"meta included"
        )
    target_memory = next(
        (m for m in memory if m.presences == plan.targets.memory_conns * 100), None
    )
    targets = measure_targets(
        plan.targets, quick=quick, repeat=repeat, memory=target_memory, progress=progress
    )
    wire = measure_wire(plan.wire_conns)
    progress(f"wire: idle heartbeat {wire.idle_heartbeat} B, transfer {wire.transfer} B")
    ticks, batch = plan.e2e
    e2e = measure_e2e(ticks, batch, repeat)
    progress(f"end to end: {e2e.objects_per_second:,.0f} joins/s")
    latency = measure_latency(plan.latency_joins, warmup=max(1, plan.latency_joins // 50))
    progress(
        f"diff latency: median {latency.objects.median_us:.0f} us, "
        f"p99 {latency.objects.p99_us:.0f} us (message objects)"
    )
    presences = scale_presences(plan.presence_points, repeat)
    progress("scaling by presences held done")
    topic = scale_topic(plan.topic_points, repeat)
    progress("scaling by topic size done")
    replicas = scale_replicas(
        plan.replica_points, repeat, total=plan.replica_total, per_down=plan.replica_down
    )
    progress("scaling by replicas done")
    convergence = measure_convergence(
        plan.convergence_nodes, plan.convergence_seeds, progress=progress
    )
    window, settle = plan.driver_idle
    drivers = measure_drivers(
        period=plan.driver_period,
        samples=plan.driver_samples,
        tracks=plan.driver_tracks,
        repeat=repeat,
        idle_window=window,
        idle_settle=settle,
        progress=progress,
    )
    endpoint = measure_endpoint(
        sockets=plan.endpoint_sockets,
        repeat=repeat,
        watchers=plan.endpoint_watchers,
        rounds=plan.endpoint_rounds,
        progress=progress,
    )
    fanout = measure_fanout(fanout_plan, progress=progress)
    broker_result = measure_brokers(plan.brokers, progress=progress) if brokers else None
    return Results(
        quick=quick,
        repeat=repeat,
        machine=where,
        workloads=workloads,
        targets=targets,
        memory=memory,
        wire=wire,
        e2e=e2e,
        latency=latency,
        presences=presences,
        topic=topic,
        replicas=replicas,
        convergence=convergence,
        drivers=drivers,
        endpoint=endpoint,
        fanout=fanout,
        seconds=time.perf_counter() - start,
        brokers=broker_result,
    )
