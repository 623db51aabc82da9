"""Everything one run measured, the targets, and how it is shown: text, reStructuredText, a plot.

Absolute numbers carry the machine they came from (platform, Python, CPU); comparisons are
ratios from one run. Every timed figure is shown as CPU time and wall time, each the min and the
median of its interleaved runs (``bench/_timing.py``). Two ratios pick one of the four:

* a speed-up over Phoenix divides the Phoenix reference by our **wall min**: BENCH.md's anchors
  are best-of-5 wall-clock runs, so ours is measured the same way;
* CRDT / floor divides our **CPU min** by the floor's (both from the same interleaved runs; CPU
  time leaves out what other processes on the machine took), and so do the targets section's
  verdicts.
"""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._brokers import (
    BrokerResult,
    churn_header,
    churn_rows,
    latency_header,
    latency_rows,
    notes,
    render_brokers,
    transfer_failures,
    transfer_header,
    transfer_rows,
)
from ._convergence import ConvergenceResult
from ._driver import IDLE_PERIOD, VARIANTS, DriverResult, median_ms, p99_ms
from ._e2e import E2EResult
from ._endpoint import EndpointResult
from ._endpoint import median_ms as endpoint_median_ms
from ._endpoint import p99_ms as endpoint_p99_ms
from ._fanout import FanoutResult, render_fanout
from ._format import ROOT, Machine, machine, machine_lines, ms, rst_table, rst_text, text_table
from ._latency import LatencyResult
from ._memory import MEMORY_TARGET, MEMORY_TARGET_PRESENCES, MemoryResult
from ._scaling import ScalingResult
from ._targets import TARGET_HEADER, TargetsResult, target_rows, targets_caption
from ._timing import Samples
from ._wire import HEARTBEAT_TARGET, TRANSFER_TARGET, WireResult
from ._workloads import FLOOR_TARGET, WorkloadResult

__all__ = [
    "ROOT",
    "Machine",
    "Results",
    "Target",
    "judged_targets",
    "machine",
    "render_broker_text",
    "render_rst",
    "render_text",
    "write_plot",
]


@dataclass(frozen=True)
class Results:
    """Everything one run of the suite measured."""

    quick: bool
    repeat: int
    machine: Machine
    workloads: Sequence[WorkloadResult]
    targets: TargetsResult
    memory: Sequence[MemoryResult]
    wire: WireResult
    e2e: E2EResult
    latency: LatencyResult
    presences: ScalingResult
    topic: ScalingResult
    replicas: ScalingResult
    convergence: ConvergenceResult
    drivers: DriverResult
    endpoint: EndpointResult
    seconds: float
    brokers: BrokerResult | None = None
    fanout: FanoutResult | None = None


@dataclass(frozen=True)
class Target:
    """One ratio or size target of the issue and whether this run met it."""

    name: str
    goal: str
    measured: str
    met: bool


def judged_targets(results: Results) -> list[Target]:
    """The issue's ratio and size targets, judged on this run (meaningful only at full size).

    The speed pass's time targets, and memory per presence, are the targets section's
    (:mod:`bench._targets`).
    """
    found: list[Target] = []
    for w in results.workloads:
        found.append(
            Target(
                f"{w.spec.id}: speed-up over Phoenix (our wall min)",
                f">= {w.spec.target_speedup:g}x",
                _x(w.speedup),
                w.speedup >= w.spec.target_speedup,
            )
        )
    for w in results.workloads:
        found.append(
            Target(
                f"{w.spec.id}: CRDT / plain-dict floor (CPU min)",
                f"<= {FLOOR_TARGET:g}x",
                _x(w.floor_ratio),
                w.floor_ratio <= FLOOR_TARGET,
            )
        )
    wire = results.wire
    found.append(
        Target(
            "idle heartbeat, 10 replicas known (presence@10.0.0.<i>)",
            f"< {HEARTBEAT_TARGET} B",
            f"{wire.idle_heartbeat} B",
            wire.idle_heartbeat < HEARTBEAT_TARGET,
        )
    )
    per = wire.transfer_per_presence
    found.append(
        Target(
            f"full transfer of {wire.transfer_presences:,}, per presence",
            f"< {TRANSFER_TARGET:g} B",
            f"{per:.1f} B",
            per < TRANSFER_TARGET,
        )
    )
    return found


# ---------------------------------------------------------------------------- formatting


def _x(ratio: float) -> str:
    """A ratio with enough digits that a near miss (2.99x against 3x) shows as one."""
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _bytes(value: int) -> str:
    return f"{value:,}"


def _four(samples: Samples, show: Callable[[float], str] = ms) -> list[str]:
    """CPU min, CPU median, wall min, wall median."""
    return [show(value) for value in samples.stats]


def _us_per(count: float) -> Callable[[float], str]:
    def show(seconds: float) -> str:
        us = seconds / count * 1e6
        return f"{us:.2f}" if us < 10 else f"{us:.1f}" if us < 100 else f"{us:.0f}"

    return show


FOUR_MS = ["CPU: min (ms)", "CPU: median (ms)", "wall: min (ms)", "wall: median (ms)"]
FOUR_US = ["CPU: min (µs)", "CPU: median (µs)", "wall: min (µs)", "wall: median (µs)"]


def _workload_rows(results: Results) -> list[list[str]]:
    return [[w.spec.id, w.spec.title, *_four(w.crdt), w.verified] for w in results.workloads]


WORKLOAD_HEADER = ["id", "workload", *FOUR_MS, "checked"]


def _phoenix_rows(results: Results) -> list[list[str]]:
    rows = []
    for w in results.workloads:
        ref = w.spec.reference
        row = [w.spec.id, f"{ref.mid_ms:g} ({ref.low_ms:g}-{ref.high_ms:g})", ms(w.crdt.wall_min)]
        if results.quick:
            row += ["-", "-", "-"]
        else:
            low, high = w.speedup_range
            row += [
                f"{_x(w.speedup)} ({_x(low)}-{_x(high)})",
                f">= {w.spec.target_speedup:g}x",
                _verdict(w.speedup >= w.spec.target_speedup),
            ]
        rows.append(row)
    return rows


PHOENIX_HEADER = [
    "id",
    "Phoenix (ms): mid (range)",
    "ours: wall min (ms)",
    "speed-up: mid (range)",
    "target",
    "met?",
]


def _floor_rows(results: Results) -> list[list[str]]:
    rows = []
    for w in results.workloads:
        verdict = "-" if results.quick else _verdict(w.floor_ratio <= FLOOR_TARGET)
        rows.append([w.spec.id, *_four(w.floor), _x(w.floor_ratio), verdict])
    return rows


FLOOR_HEADER = [
    "id",
    "floor CPU: min (ms)",
    "floor CPU: median (ms)",
    "floor wall: min (ms)",
    "floor wall: median (ms)",
    f"CRDT/floor, CPU min (<= {FLOOR_TARGET:g}x)",
    "met?",
]


def _phase_rows(results: Results) -> list[list[str]]:
    rows = []
    for w in results.workloads:
        for phase, samples in w.phases.items():
            reference = w.spec.phases_reference.get(phase)
            if reference is None or results.quick:
                ratio = "-"
            else:
                ratio = _x(reference / (samples.wall_min * 1000))
            rows.append(
                [
                    w.spec.id,
                    phase,
                    *_four(samples),
                    "-" if reference is None else f"~{reference:g}",
                    ratio,
                ]
            )
    return rows


PHASE_HEADER = ["id", "phase", *FOUR_MS, "Phoenix (ms)", "speed-up (wall min)"]


def _memory_rows(results: Results) -> list[list[str]]:
    return [
        [
            f"{m.presences:,}",
            f"{m.steady:.0f}",
            f"{m.with_delta:.0f}",
            f"{m.meta:.0f} ({m.meta_share:.0%})",
            f"{m.without_meta:.0f}",
            f"{m.floor:.0f}",
            (
                f"<= {MEMORY_TARGET:g}: {'-' if results.quick else _verdict(m.met)}"
                if m.judged
                else "-"
            ),
        ]
        for m in results.memory
    ]


MEMORY_HEADER = [
    "presences",
    "bytes/presence after broadcast, meta included",
    "before broadcast (pending delta)",
    "of which the meta (share)",
    "without the meta",
    "plain-dict floor, meta included",
    f"target (at {MEMORY_TARGET_PRESENCES:,})",
]


def _wire_rows(results: Results) -> list[list[str]]:
    wire = results.wire
    per = wire.transfer_per_presence
    return [
        [
            "idle heartbeat, 10 replicas known (presence@10.0.0.<i>)",
            _bytes(wire.idle_heartbeat),
            "-",
        ],
        ["idle heartbeat, 10 replicas known (r<i>)", _bytes(wire.idle_heartbeat_short), "-"],
        [
            "heartbeat with a delta of 100 joins",
            _bytes(wire.delta_joins),
            f"{wire.delta_joins / 100:.1f} per change",
        ],
        [
            "heartbeat with a delta of 50 joins + 50 leaves",
            _bytes(wire.delta_mixed),
            f"{wire.delta_mixed / 100:.1f} per change",
        ],
        [
            f"full transfer of {wire.transfer_presences:,} presences",
            _bytes(wire.transfer),
            f"{per:.1f} per presence",
        ],
    ]


WIRE_HEADER = ["message (JSON codec)", "bytes", "per item"]


def _e2e_rows(results: Results) -> list[list[str]]:
    e2e = results.e2e
    per_join = _us_per(e2e.joins)
    return [
        [name, *_four(samples, per_join), f"{e2e.joins / samples.wall_min:,.0f}"]
        for name, samples in (
            ("message objects", e2e.objects),
            ("encoded bytes (encode + decode)", e2e.encoded),
        )
    ]


E2E_HEADER = [
    "delivery",
    "CPU: min (µs/join)",
    "CPU: median (µs/join)",
    "wall: min (µs/join)",
    "wall: median (µs/join)",
    "joins/s (wall min)",
]


def _e2e_caption(results: Results) -> str:
    e2e = results.e2e
    return (
        f"{e2e.joins:,} joins tracked, ticked and delivered to a second tracker; "
        f"{results.repeat} {_plural(results.repeat, 'run')} per row, interleaved"
    )


def _latency_rows(results: Results) -> list[list[str]]:
    latency = results.latency
    return [
        [
            name,
            f"{found.cpu_median_us:.0f}",
            f"{found.cpu_p99_us:.0f}",
            f"{found.cpu_fastest_us:.0f}",
            f"{found.median_us:.0f}",
            f"{found.p99_us:.0f}",
            f"{found.fastest_us:.0f}",
        ]
        for name, found in (
            ("message objects", latency.objects),
            ("encoded bytes (encode + decode)", latency.encoded),
        )
    ]


LATENCY_HEADER = [
    "delivery",
    "CPU: median (µs)",
    "CPU: p99 (µs)",
    "CPU: min (µs)",
    "wall: median (µs)",
    "wall: p99 (µs)",
    "wall: min (µs)",
]


def _latency_caption(results: Results) -> str:
    return (
        f"{results.latency.joins:,} single joins per delivery (the two alternating): from track "
        "on A, through A's tick run at once, to B's diff drained"
    )


def _driver_latency_rows(results: Results) -> list[list[str]]:
    return [
        [
            found.driver,
            f"{median_ms(found.end_to_end):.1f}",
            f"{p99_ms(found.end_to_end):.1f}",
            f"{median_ms(found.after_tick):.2f}",
            f"{p99_ms(found.after_tick):.2f}",
            f"{median_ms(found.lateness):.2f}",
            f"{p99_ms(found.lateness):.2f}",
        ]
        for found in results.drivers.latency
    ]


DRIVER_LATENCY_HEADER = [
    "driver",
    "end to end: median (ms)",
    "end to end: p99 (ms)",
    "after the tick: median (ms)",
    "after the tick: p99 (ms)",
    "timer lateness: median (ms)",
    "timer lateness: p99 (ms)",
]


def _driver_latency_caption(results: Results) -> str:
    d = results.drivers
    return (
        f"{d.samples:,} tracks per driver ({d.rounds} interleaved {_plural(d.rounds, 'round')}), "
        "two nodes, "
        f"broadcast_period {d.period:g} s: from a.track to b's subscription yielding the diff; "
        "after the tick: from a's tick that broadcast the delta"
    )


YIELDS = VARIANTS[0]


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else f"{noun}s"


def _us(seconds: float, n: int) -> str:
    us = seconds / n * 1e6
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


def _driver_track_rows(results: Results) -> list[list[str]]:
    d = results.drivers
    rows = []
    for run in d.track_runs:
        rows.append(
            [
                run.driver,
                run.variant,
                _us(min(run.cpu), d.tracks),
                _us(statistics.median(run.cpu), d.tracks),
                _us(min(run.wall), d.tracks),
                _us(statistics.median(run.wall), d.tracks),
                "-" if run.variant == YIELDS else f"{d.tracks / min(run.wall):,.0f}",
            ]
        )
    return rows


DRIVER_TRACK_HEADER = [
    "driver",
    "run",
    "CPU: min (µs/track)",
    "CPU: median (µs/track)",
    "wall: min (µs/track)",
    "wall: median (µs/track)",
    "tracks/s (min wall)",
]


def _driver_track_caption(results: Results) -> str:
    d = results.drivers
    ticked = sum(run.ticks for run in d.track_runs)
    caption = (
        f"{d.tracks:,} tracks per run on a running node (default TrackerConfig), each followed "
        f"by one yield to the loop; {d.repeat} {_plural(d.repeat, 'run')} per row, interleaved"
    )
    if ticked:
        caption += f"; {ticked} run(s) included a tick of the node"
    return caption


def _driver_idle_rows(results: Results) -> list[list[str]]:
    return [
        [
            run.driver,
            f"0 (a bare {IDLE_PERIOD:g} s timer)" if run.nodes == 0 else f"{run.nodes}",
            f"{run.per_node * 1e6:.0f}",
            f"{run.per_node * 100:.3f} %",
            "-" if run.nodes == 0 else f"{run.pump_per_node * 1e6:.0f}",
            f"{run.sent}",
            f"{run.received}",
        ]
        for run in results.drivers.idle
    ]


DRIVER_IDLE_HEADER = [
    "driver",
    "idle nodes",
    "CPU per node (µs per s)",
    "of one core",
    "of which in the pump (µs per s)",
    "messages sent",
    "received",
]


def _driver_idle_caption(results: Results) -> str:
    d = results.drivers
    return (
        f"Nodes idle for {d.idle_window:g} s of wall time (default TrackerConfig, one hub, one "
        "process per row): the process's CPU time per wall second per node"
    )


def _driver_note(results: Results) -> str:
    d = results.drivers
    note = f"the section took {d.seconds:.0f} s"
    if d.missing:
        note += f"; not installed, not measured: {', '.join(d.missing)}"
    return note


def _per_socket_us(
    samples: Sequence[float] | None, n: int, pick: Callable[[Sequence[float]], float]
) -> str:
    return "-" if samples is None else f"{pick(samples) / n * 1e6:.0f}"


def _endpoint_join_rows(results: Results) -> list[list[str]]:
    e = results.endpoint
    return [
        [
            runs.variant,
            f"{e.sockets / min(runs.wall):,.0f}",
            f"{e.sockets / statistics.median(runs.wall):,.0f}",
            _per_socket_us(runs.server_cpu, e.sockets, min),
            _per_socket_us(runs.server_cpu, e.sockets, statistics.median),
            _per_socket_us(runs.client_cpu, e.sockets, min),
            _per_socket_us(runs.client_cpu, e.sockets, statistics.median),
        ]
        for runs in e.joins
    ]


ENDPOINT_JOIN_HEADER = [
    "run",
    "sockets/s: best (wall min)",
    "sockets/s: median (wall)",
    "server CPU: min (µs/socket)",
    "server CPU: median (µs/socket)",
    "client CPU: min (µs/socket)",
    "client CPU: median (µs/socket)",
]


def _endpoint_join_caption(results: Results) -> str:
    e = results.endpoint
    return (
        f"{e.sockets:,} websockets at once from one client process, each joining a topic of its "
        "own (V2 frames): from the first connect until every join reply and presence_state "
        f"arrived; {e.repeat} {_plural(e.repeat, 'run')} per row, interleaved"
    )


def _endpoint_fanout_rows(results: Results) -> list[list[str]]:
    fanout = results.endpoint.fanout
    return [
        [
            name,
            f"{endpoint_median_ms(samples):.1f}",
            f"{endpoint_p99_ms(samples):.1f}",
            f"{min(samples) * 1e3:.1f}",
        ]
        for name, samples in (
            ("first socket", fanout.first),
            ("median socket", fanout.median),
            ("last socket", fanout.last),
        )
    ]


ENDPOINT_FANOUT_HEADER = ["the diff reached the", "median (ms)", "p99 (ms)", "best (ms)"]


def _endpoint_fanout_caption(results: Results) -> str:
    e = results.endpoint
    fanout = e.fanout
    server = fanout.server_cpu_per_fanout
    cpu = "" if server is None else f"server CPU {server * 1e3:.1f} ms, "
    return (
        f"one tracked join fanned out as a presence_diff to {e.watchers:,} sockets of one topic "
        f"on one node, {e.rounds} rounds: from the joining socket's phx_join to each socket's "
        f"parsed frame; per fan-out, {cpu}client CPU "
        f"{endpoint_median_ms(fanout.client_cpu):.1f} ms (median)"
    )


def _endpoint_note(results: Results) -> str:
    e = results.endpoint
    note = (
        f"{e.server}; the client in the benchmark process; {e.cores} cores shared by both; "
        f"the section took {e.seconds:.0f} s"
    )
    if not e.cpu_readable:
        note += "; the server's CPU time could not be read (no /proc), so its columns are empty"
    return note


def _convergence_rows(results: Results) -> list[list[str]]:
    seeds = len(results.convergence.seeds)
    rows = []
    for p in results.convergence.points:
        low, high = min(p.victim_presences), max(p.victim_presences)
        held = f"{low}" if low == high else f"{low}-{high}"
        rows.append(
            [
                f"{p.nodes}",
                f"{p.heal_median:.1f}",
                f"{p.heal_worst:.1f}",
                f"{p.crash_median:.1f}",
                f"{p.crash_worst:.1f}",
                f"{2 * seeds} runs ok; the crashed node held {held} presences",
            ]
        )
    return rows


CONVERGENCE_HEADER = [
    "replicas",
    "heal: median (s)",
    "heal: worst (s)",
    "crash: median (s)",
    "crash: worst (s)",
    "checked",
]


def _convergence_bounds(results: Results) -> str:
    bounds = results.convergence.bounds
    return (
        f"the simulator's bounds: a crashed node's presences gone within {bounds.crash:.2f} s, "
        f"a join seen everywhere within {bounds.join:.2f} s"
    )


def _scaling_show(scaling: ScalingResult) -> Callable[[float], str]:
    if scaling.axis == "presences":
        return _us_per(1)
    return ms


def _scaling_rows(scaling: ScalingResult) -> list[list[str]]:
    show = _scaling_show(scaling)
    rows = []
    for op, per_point in scaling.samples.items():
        unit = scaling.units[op]
        label = op if unit == "per operation" else f"{op} ({unit})"
        for point, samples in zip(scaling.points, per_point, strict=True):
            rows.append([label, f"{point:,}", *_four(samples, show)])
    return rows


def _scaling_header(scaling: ScalingResult) -> list[str]:
    return ["operation", scaling.axis, *(FOUR_US if scaling.axis == "presences" else FOUR_MS)]


def _scaling_title(scaling: ScalingResult) -> str:
    if scaling.axis == "presences":
        return f"Microseconds per entry by presences held ({scaling.note})"
    return f"Milliseconds per operation by {scaling.axis} ({scaling.note})"


def _judged_rows(results: Results) -> list[list[str]]:
    return [[t.name, t.goal, t.measured, _verdict(t.met)] for t in judged_targets(results)]


JUDGED_HEADER = ["target", "goal", "measured", "met?"]


NO_BROKERS = "not measured in this run (python -m bench --brokers measures only them)"


def render_broker_text(found: BrokerResult) -> str:
    """The broker section alone as plain text (``python -m bench --brokers``)."""
    return render_brokers(found, text_table)


def _runs(results: Results) -> str:
    return (
        f"{results.repeat} interleaved {_plural(results.repeat, 'run')} per figure, "
        "CPU and wall time, min and median"
    )


def render_text(results: Results) -> str:
    """The whole run as plain text, for the terminal."""
    mode = "QUICK (small sizes, correctness only)" if results.quick else "full (BENCH.md sizes)"
    parts = [
        f"presence-core benchmarks: {mode}; {_runs(results)}",
        *machine_lines(results.machine),
        "",
        "Workloads (BENCH.md)",
        text_table(WORKLOAD_HEADER, _workload_rows(results)),
        "",
        "Against Phoenix: speed-up = Phoenix midpoint / our wall min (the anchors are best-of-5 "
        "wall-clock runs), range from the reference range",
        text_table(PHOENIX_HEADER, _phoenix_rows(results)),
        "",
        "Against the plain-dict floor (same interleaved runs): CRDT/floor = our CPU min / floor's",
        text_table(FLOOR_HEADER, _floor_rows(results)),
        "",
        "The phases of workloads c and e",
        text_table(PHASE_HEADER, _phase_rows(results)),
        "",
        textwrap.fill(targets_caption(results.targets), 100),
        text_table(TARGET_HEADER, target_rows(results.targets)),
        "",
        "Memory per presence, the stored meta included (tracemalloc)",
        text_table(MEMORY_HEADER, _memory_rows(results)),
        "",
        "Bytes on the wire (BENCH.md meta)",
        text_table(WIRE_HEADER, _wire_rows(results)),
        "",
        f"End to end: {_e2e_caption(results)}",
        text_table(E2E_HEADER, _e2e_rows(results)),
        "",
        f"Diff latency: {_latency_caption(results)}",
        text_table(LATENCY_HEADER, _latency_rows(results)),
        "",
        f"Drivers on the memory bus ({_driver_note(results)})",
        textwrap.fill(f"Track to remote diff: {_driver_latency_caption(results)}", 100),
        text_table(DRIVER_LATENCY_HEADER, _driver_latency_rows(results)),
        "",
        textwrap.fill(f"Tracks per second: {_driver_track_caption(results)}", 100),
        text_table(DRIVER_TRACK_HEADER, _driver_track_rows(results)),
        "",
        textwrap.fill(f"Idle CPU: {_driver_idle_caption(results)}", 100),
        text_table(DRIVER_IDLE_HEADER, _driver_idle_rows(results)),
        "",
        textwrap.fill(f"Phoenix endpoint over loopback ({_endpoint_note(results)})", 100),
        textwrap.fill(f"Joins per second: {_endpoint_join_caption(results)}", 100),
        text_table(ENDPOINT_JOIN_HEADER, _endpoint_join_rows(results)),
        "",
        textwrap.fill(f"Fan-out: {_endpoint_fanout_caption(results)}", 100),
        text_table(ENDPOINT_FANOUT_HEADER, _endpoint_fanout_rows(results)),
        "",
        "Convergence (simulator): virtual seconds from a partition heal, and from a crash, until "
        "every live replica's view is equal",
        textwrap.fill(f"({results.convergence.note}; {_convergence_bounds(results)})", 100),
        text_table(CONVERGENCE_HEADER, _convergence_rows(results)),
        "",
    ]
    for scaling in (results.presences, results.topic, results.replicas):
        parts += [
            textwrap.fill(f"Scaling: {_scaling_title(scaling)}", 100),
            text_table(_scaling_header(scaling), _scaling_rows(scaling)),
            "",
        ]
    if results.fanout is not None:
        parts += [render_fanout(results.fanout, text_table), ""]
    if results.brokers is not None:
        parts += [render_brokers(results.brokers, text_table), ""]
    else:
        parts += [f"Brokers: {NO_BROKERS}", ""]
    if results.quick:
        parts.append(
            "Ratio targets: not judged in quick mode (sizes are small; only results checked)."
        )
    else:
        parts += ["Ratio and size targets", text_table(JUDGED_HEADER, _judged_rows(results))]
    parts.append(f"\ntotal time of the run: {results.seconds:.0f} s")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- rst


def render_rst(results: Results, *, image: str | None) -> str:
    """The generated part of ``docs/performance.rst`` (it is included there)."""
    m = results.machine
    mode = "quick mode (small sizes)" if results.quick else "BENCH.md sizes"
    parts = [
        ".. This file is generated by ``python -m bench``: do not edit it by hand.",
        "",
        f"Measured on {m.date}, {mode}, {_runs(results)}, "
        f"in {results.seconds:.0f} s, at commit ``{m.commit}``:",
        "",
        f"* platform: ``{m.platform}``",
        f"* Python: {m.python}",
        f"* CPU: {m.cpu} ({m.cores} cores)",
        "",
        "Workloads",
        "^^^^^^^^^",
        "",
        rst_table(WORKLOAD_HEADER, _workload_rows(results), "BENCH.md workloads on presence-core"),
        "",
        rst_table(
            PHOENIX_HEADER,
            _phoenix_rows(results),
            "Against Phoenix.Tracker.State: its midpoint over our wall min (its figures are "
            "best-of-5 wall-clock runs)",
        ),
        "",
        rst_table(
            FLOOR_HEADER,
            _floor_rows(results),
            "Against the plain-dict floor, from the same interleaved runs: our CPU min over its",
        ),
        "",
        rst_table(PHASE_HEADER, _phase_rows(results), "The phases of workloads c and e"),
        "",
        "Targets",
        "^^^^^^^",
        "",
        rst_table(
            TARGET_HEADER, target_rows(results.targets), rst_text(targets_caption(results.targets))
        ),
        "",
    ]
    if not results.quick:
        parts += [
            rst_table(
                JUDGED_HEADER, _judged_rows(results), "Ratio and size targets, judged on this run"
            ),
            "",
        ]
    parts += [
        "Memory",
        "^^^^^^",
        "",
        rst_table(
            MEMORY_HEADER, _memory_rows(results), "Bytes per presence, the stored meta included"
        ),
        "",
        "Bytes on the wire",
        "^^^^^^^^^^^^^^^^^",
        "",
        rst_table(WIRE_HEADER, _wire_rows(results), "Encoded replica messages"),
        "",
        "End to end",
        "^^^^^^^^^^",
        "",
        rst_table(E2E_HEADER, _e2e_rows(results), rst_text(_e2e_caption(results))),
        "",
        "Diff latency",
        "^^^^^^^^^^^^",
        "",
        rst_table(LATENCY_HEADER, _latency_rows(results), rst_text(_latency_caption(results))),
        "",
        "Drivers",
        "^^^^^^^",
        "",
        f"On the memory bus; {rst_text(_driver_note(results))}.",
        "",
        rst_table(
            DRIVER_LATENCY_HEADER,
            _driver_latency_rows(results),
            rst_text(f"Track to remote diff: {_driver_latency_caption(results)}"),
        ),
        "",
        rst_table(
            DRIVER_TRACK_HEADER,
            _driver_track_rows(results),
            rst_text(f"Tracks per second: {_driver_track_caption(results)}"),
        ),
        "",
        rst_table(
            DRIVER_IDLE_HEADER, _driver_idle_rows(results), rst_text(_driver_idle_caption(results))
        ),
        "",
        "Phoenix endpoint",
        "^^^^^^^^^^^^^^^^",
        "",
        f"Over loopback; {rst_text(_endpoint_note(results))}.",
        "",
        rst_table(
            ENDPOINT_JOIN_HEADER,
            _endpoint_join_rows(results),
            rst_text(f"Joins per second: {_endpoint_join_caption(results)}"),
        ),
        "",
        rst_table(
            ENDPOINT_FANOUT_HEADER,
            _endpoint_fanout_rows(results),
            rst_text(f"Fan-out: {_endpoint_fanout_caption(results)}"),
        ),
        "",
        "Convergence",
        "^^^^^^^^^^^",
        "",
        f"{rst_text(results.convergence.note)}; {rst_text(_convergence_bounds(results))}.",
        "",
        rst_table(
            CONVERGENCE_HEADER,
            _convergence_rows(results),
            "Virtual seconds until every live replica's view is equal (simulator)",
        ),
        "",
        "Scaling",
        "^^^^^^^",
        "",
    ]
    for scaling in (results.presences, results.topic, results.replicas):
        parts += [
            rst_table(
                _scaling_header(scaling), _scaling_rows(scaling), rst_text(_scaling_title(scaling))
            ),
            "",
        ]
    if image is not None:
        parts += [
            f".. image:: {image}",
            "   :alt: cost of each operation by presences held, by topic size and by number of "
            "replicas",
            "   :width: 100%",
            "",
        ]
    parts += ["Brokers", "^^^^^^^", ""]
    parts += _rst_brokers(results.brokers)
    return "\n".join(parts)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _rst_brokers(found: BrokerResult | None) -> list[str]:
    if found is None:
        return [f"{rst_text(_sentence(NO_BROKERS))}.", ""]
    text = notes(found)
    parts = [f"{rst_text(_sentence(text['where']))}.", ""]
    for key, title, header, rows in (
        ("latency", "Track to visible", latency_header(), latency_rows(found)),
        ("transfer", "A large state reaching a new node", transfer_header(), transfer_rows(found)),
        ("churn", "Bytes per second under churn", churn_header(), churn_rows(found)),
    ):
        if rows:
            parts += [rst_table(header, rows, rst_text(f"{title}: {text[key]}")), ""]
        failures = transfer_failures(found) if key == "transfer" else []
        if failures:
            parts += ["The state did not reach the new node:", ""]
            parts += [f"* {rst_text(why)}" for why in failures] + [""]
    parts += [f"Left out: {rst_text(text['left out'])}.", ""]
    return parts


# ---------------------------------------------------------------------------- plot


# ---------------------------------------------------------------------------- plot


def write_plot(results: Results, path: Path) -> None:
    """Draw the three scaling axes into a PNG at ``path``.

    Each operation is a line at its CPU min (solid) with a band up to its CPU median, and a dotted
    line at its wall min.

    Raises:
        ModuleNotFoundError: matplotlib is missing (``pip install -e '.[bench]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, panels = plt.subplots(1, 3, figsize=(17, 5.2), constrained_layout=True)
    markers = ("o", "s", "^", "D", "v", "P")
    axes_of = (results.presences, results.topic, results.replicas)
    for axes, scaling in zip(panels, axes_of, strict=True):
        scale = 1e6 if scaling.axis == "presences" else 1e3
        for op, marker in zip(scaling.samples, markers, strict=False):
            found = scaling.samples[op]
            low = [s.cpu_min * scale for s in found]
            (line,) = axes.plot(scaling.points, low, marker=marker, label=op)
            colour = line.get_color()
            axes.fill_between(
                scaling.points, low, [s.cpu_median * scale for s in found], color=colour, alpha=0.2
            )
            axes.plot(
                scaling.points,
                [s.wall_min * scale for s in found],
                linestyle=":",
                color=colour,
                linewidth=1,
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.grid(True, which="major", alpha=0.4)
        axes.legend(loc="best", fontsize="small")
    left, middle, right = panels
    left.set_ylabel("µs per entry (merge delta: per merge)")
    left.set_xlabel(f"presences held ({results.presences.note})", fontsize="small")
    left.set_title("by presences held")
    middle.set_ylabel("ms per operation")
    middle.set_xlabel(results.topic.note, fontsize="small")
    middle.set_title("by topic size")
    right.set_ylabel("ms per operation")
    right.set_xlabel(f"replicas ({results.replicas.note})", fontsize="small")
    right.set_title("by number of replicas")
    right.xaxis.set_minor_locator(ticker.NullLocator())
    right.set_xticks(results.replicas.points)
    right.set_xticklabels([str(p) for p in results.replicas.points])
    m = results.machine
    fig.suptitle(
        f"presence-core scaling - {m.python}, {m.cpu}: CPU min (line), up to CPU median (band), "
        f"wall min (dotted), {results.repeat} {_plural(results.repeat, 'run')} each",
        fontsize="medium",
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)
