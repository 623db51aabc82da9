"""Everything one run measured, the targets, and how it is shown: text, reStructuredText, a plot.

Absolute numbers carry the machine they came from (platform, Python, CPU); comparisons are
ratios from one run.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import textwrap
from collections.abc import Iterable, Sequence
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
from ._latency import LatencyResult
from ._memory import MEMORY_TARGET, MemoryResult
from ._scaling import OPERATIONS, ScalingResult
from ._wire import HEARTBEAT_TARGET, TRANSFER_TARGET, WireResult
from ._workloads import FLOOR_TARGET, WorkloadResult

__all__ = [
    "Machine",
    "Results",
    "Target",
    "machine",
    "render_broker_text",
    "render_rst",
    "render_text",
    "targets",
    "write_plot",
]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Machine:
    """Where the numbers come from."""

    platform: str
    python: str
    cpu: str
    cores: int
    commit: str
    date: str


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def machine() -> Machine:
    """Describe this machine and this checkout."""
    return Machine(
        platform=platform.platform(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        cpu=_cpu(),
        cores=os.cpu_count() or 0,
        commit=_commit(),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


@dataclass(frozen=True)
class Results:
    """Everything one run of the suite measured."""

    quick: bool
    repeat: int
    machine: Machine
    workloads: Sequence[WorkloadResult]
    memory: Sequence[MemoryResult]
    wire: WireResult
    e2e: E2EResult
    latency: LatencyResult
    topic: ScalingResult
    replicas: ScalingResult
    convergence: ConvergenceResult
    drivers: DriverResult
    endpoint: EndpointResult
    seconds: float
    brokers: BrokerResult | None = None


@dataclass(frozen=True)
class Target:
    """One target of the issue and whether this run met it."""

    name: str
    goal: str
    measured: str
    met: bool


def targets(results: Results) -> list[Target]:
    """The issue's targets, judged on this run (speed and size only at full size)."""
    found: list[Target] = []
    for w in results.workloads:
        found.append(
            Target(
                f"{w.spec.id}: speed-up over Phoenix",
                f">= {w.spec.target_speedup:g}x",
                _x(w.speedup),
                w.speedup >= w.spec.target_speedup,
            )
        )
    for w in results.workloads:
        found.append(
            Target(
                f"{w.spec.id}: CRDT / plain-dict floor",
                f"<= {FLOOR_TARGET:g}x",
                _x(w.floor_ratio),
                w.floor_ratio <= FLOOR_TARGET,
            )
        )
    for m in results.memory:
        found.append(
            Target(
                f"memory per presence at {m.presences:,}",
                f"< {MEMORY_TARGET:g} B",
                f"{m.steady:.0f} B",
                m.steady < MEMORY_TARGET,
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


def _ms(seconds: float) -> str:
    ms = seconds * 1000.0
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3g}"


def _x(ratio: float) -> str:
    """A ratio with enough digits that a near miss (2.99x against 3x) shows as one."""
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _bytes(value: int) -> str:
    return f"{value:,}"


def _workload_rows(results: Results) -> list[list[str]]:
    rows = []
    for w in results.workloads:
        ref = w.spec.reference
        low, high = w.speedup_range
        row = [w.spec.id, w.spec.title, _ms(w.crdt.best)]
        if results.quick:
            row += ["-", "-", "-", "-"]
        else:
            row += [
                f"{ref.mid_ms:g} ({ref.low_ms:g}-{ref.high_ms:g})",
                f"{_x(w.speedup)} ({_x(low)}-{_x(high)})",
                f">= {w.spec.target_speedup:g}x",
                _verdict(w.speedup >= w.spec.target_speedup),
            ]
        row += [_ms(w.floor.best), _x(w.floor_ratio), w.verified]
        rows.append(row)
    return rows


WORKLOAD_HEADER = [
    "id",
    "workload",
    "ours (ms)",
    "Phoenix (ms): mid (range)",
    "speed-up: mid (range)",
    "target",
    "met?",
    "floor (ms)",
    "CRDT/floor",
    "checked",
]


def _phase_rows(results: Results) -> list[list[str]]:
    rows = []
    for w in results.workloads:
        for phase, seconds in w.phases.items():
            reference = w.spec.phases_reference.get(phase)
            if reference is None or results.quick:
                ratio = "-"
            else:
                ratio = _x(reference / (seconds * 1000))
            rows.append(
                [
                    w.spec.id,
                    phase,
                    _ms(seconds),
                    "-" if reference is None else f"~{reference:g}",
                    ratio,
                ]
            )
    return rows


PHASE_HEADER = ["id", "phase", "ours (ms)", "Phoenix (ms)", "speed-up"]


def _memory_rows(results: Results) -> list[list[str]]:
    return [
        [
            f"{m.presences:,}",
            f"{m.steady:.0f}",
            f"{m.with_delta:.0f}",
            f"{m.floor:.0f}",
            f"{m.meta:.0f}",
        ]
        for m in results.memory
    ]


MEMORY_HEADER = [
    "presences",
    "bytes/presence (after broadcast)",
    "before broadcast (pending delta)",
    "plain-dict floor",
    "one meta copy (excluded)",
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
    return [
        ["message objects", f"{e2e.objects_per_second:,.0f}"],
        ["encoded bytes (encode + decode)", f"{e2e.bytes_per_second:,.0f}"],
    ]


def _latency_rows(results: Results) -> list[list[str]]:
    latency = results.latency
    return [
        [name, f"{found.median_us:.0f}", f"{found.p99_us:.0f}", f"{found.fastest_us:.0f}"]
        for name, found in (
            ("message objects", latency.objects),
            ("encoded bytes (encode + decode)", latency.encoded),
        )
    ]


LATENCY_HEADER = ["delivery", "median (µs)", "p99 (µs)", "fastest (µs)"]


def _latency_caption(results: Results) -> str:
    return (
        f"{results.latency.joins:,} single joins per delivery: from track on A, through A's tick "
        "run at once, to B's diff drained"
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


def _per_socket_us(samples: Sequence[float] | None, n: int) -> str:
    return "-" if samples is None else f"{statistics.median(samples) / n * 1e6:.0f}"


def _endpoint_join_rows(results: Results) -> list[list[str]]:
    e = results.endpoint
    return [
        [
            runs.variant,
            f"{e.sockets / min(runs.wall):,.0f}",
            f"{e.sockets / statistics.median(runs.wall):,.0f}",
            _per_socket_us(runs.server_cpu, e.sockets),
            _per_socket_us(runs.client_cpu, e.sockets),
        ]
        for runs in e.joins
    ]


ENDPOINT_JOIN_HEADER = [
    "run",
    "sockets/s: best",
    "sockets/s: median",
    "server CPU: median (µs/socket)",
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


def _scaling_rows(scaling: ScalingResult) -> list[list[str]]:
    return [
        [f"{point:,}", *(_ms(scaling.seconds[op][i]) for op in OPERATIONS)]
        for i, point in enumerate(scaling.points)
    ]


def _target_rows(results: Results) -> list[list[str]]:
    return [[t.name, t.goal, t.measured, _verdict(t.met)] for t in targets(results)]


TARGET_HEADER = ["target", "goal", "measured", "met?"]


def _text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(header), *map(list, rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _machine_lines(m: Machine) -> list[str]:
    return [
        f"platform: {m.platform}",
        f"python:   {m.python}",
        f"cpu:      {m.cpu} ({m.cores} cores)",
        f"commit:   {m.commit}",
        f"date:     {m.date}",
    ]


NO_BROKERS = "not measured in this run (python -m bench --brokers measures only them)"


def render_broker_text(found: BrokerResult) -> str:
    """The broker section alone as plain text (``python -m bench --brokers``)."""
    return render_brokers(found, _text_table)


def render_text(results: Results) -> str:
    """The whole run as plain text, for the terminal."""
    mode = "QUICK (small sizes, correctness only)" if results.quick else "full (BENCH.md sizes)"
    parts = [
        f"presence-core benchmarks: {mode}, best of {results.repeat}",
        *_machine_lines(results.machine),
        "",
        "Workloads (BENCH.md); speed-up = Phoenix midpoint / ours, range from the reference range",
        _text_table(WORKLOAD_HEADER, _workload_rows(results)),
        "",
        _text_table(PHASE_HEADER, _phase_rows(results)),
        "",
        "Memory per presence, meta excluded (tracemalloc)",
        _text_table(MEMORY_HEADER, _memory_rows(results)),
        "",
        "Bytes on the wire (BENCH.md meta)",
        _text_table(WIRE_HEADER, _wire_rows(results)),
        "",
        f"End to end: {results.e2e.joins:,} joins tracked, ticked and delivered, joins per second",
        _text_table(["delivery", "joins/s"], _e2e_rows(results)),
        "",
        f"Diff latency: {_latency_caption(results)}",
        _text_table(LATENCY_HEADER, _latency_rows(results)),
        "",
        f"Drivers on the memory bus ({_driver_note(results)})",
        textwrap.fill(f"Track to remote diff: {_driver_latency_caption(results)}", 100),
        _text_table(DRIVER_LATENCY_HEADER, _driver_latency_rows(results)),
        "",
        textwrap.fill(f"Tracks per second: {_driver_track_caption(results)}", 100),
        _text_table(DRIVER_TRACK_HEADER, _driver_track_rows(results)),
        "",
        textwrap.fill(f"Idle CPU: {_driver_idle_caption(results)}", 100),
        _text_table(DRIVER_IDLE_HEADER, _driver_idle_rows(results)),
        "",
        textwrap.fill(f"Phoenix endpoint over loopback ({_endpoint_note(results)})", 100),
        textwrap.fill(f"Joins per second: {_endpoint_join_caption(results)}", 100),
        _text_table(ENDPOINT_JOIN_HEADER, _endpoint_join_rows(results)),
        "",
        textwrap.fill(f"Fan-out: {_endpoint_fanout_caption(results)}", 100),
        _text_table(ENDPOINT_FANOUT_HEADER, _endpoint_fanout_rows(results)),
        "",
        "Convergence (simulator): virtual seconds from a partition heal, and from a crash, until "
        "every live replica's view is equal",
        textwrap.fill(f"({results.convergence.note}; {_convergence_bounds(results)})", 100),
        _text_table(CONVERGENCE_HEADER, _convergence_rows(results)),
        "",
        f"Scaling with the topic size (ms; {results.topic.note})",
        _text_table(["topic size", *OPERATIONS], _scaling_rows(results.topic)),
        "",
        f"Scaling with the replicas (ms; {results.replicas.note})",
        _text_table(["replicas", *OPERATIONS], _scaling_rows(results.replicas)),
        "",
    ]
    if results.brokers is not None:
        parts += [render_brokers(results.brokers, _text_table), ""]
    else:
        parts += [f"Brokers: {NO_BROKERS}", ""]
    if results.quick:
        parts.append("Targets: not judged in quick mode (sizes are small; only results checked).")
    else:
        parts += ["Targets", _text_table(TARGET_HEADER, _target_rows(results))]
    parts.append(f"\ntotal time of the run: {results.seconds:.0f} s")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- rst


def _rst_cell(cell: str) -> str:
    if not cell:
        return ".."  # an empty comment keeps the cell well formed
    for special in ("\\", "*", "|", "@", "`", "_"):  # markup, links and e-mail addresses
        cell = cell.replace(special, "\\" + special)
    return "\\" + cell if cell[0] in "-+#" else cell  # not a bullet or enumerated list


def _rst_text(text: str) -> str:
    for special in ("\\", "*", "|", "`", "_"):
        text = text.replace(special, "\\" + special)
    return text


def _rst_table(header: Sequence[str], rows: Iterable[Sequence[str]], caption: str) -> str:
    lines = [f".. list-table:: {caption}", "   :header-rows: 1", ""]
    for row in [list(header), *map(list, rows)]:
        lines.append(f"   * - {_rst_cell(row[0])}")
        lines.extend(f"     - {_rst_cell(cell)}" for cell in row[1:])
    return "\n".join(lines)


def render_rst(results: Results, *, image: str | None) -> str:
    """The generated part of ``docs/performance.rst`` (it is included there)."""
    m = results.machine
    mode = "quick mode (small sizes)" if results.quick else "BENCH.md sizes"
    parts = [
        ".. This file is generated by ``python -m bench``: do not edit it by hand.",
        "",
        f"Measured on {m.date}, {mode}, best of {results.repeat}, "
        f"in {results.seconds:.0f} s, at commit ``{m.commit}``:",
        "",
        f"* platform: ``{m.platform}``",
        f"* Python: {m.python}",
        f"* CPU: {m.cpu} ({m.cores} cores)",
        "",
        "Workloads",
        "^^^^^^^^^",
        "",
        _rst_table(
            WORKLOAD_HEADER,
            _workload_rows(results),
            "BENCH.md workloads: ours, Phoenix.Tracker.State and the plain-dict floor",
        ),
        "",
        _rst_table(PHASE_HEADER, _phase_rows(results), "The phases of workloads c and e"),
        "",
    ]
    if not results.quick:
        parts += [
            "Targets",
            "^^^^^^^",
            "",
            _rst_table(TARGET_HEADER, _target_rows(results), "The targets, judged on this run"),
            "",
        ]
    parts += [
        "Memory",
        "^^^^^^",
        "",
        _rst_table(MEMORY_HEADER, _memory_rows(results), "Bytes per presence, meta excluded"),
        "",
        "Bytes on the wire",
        "^^^^^^^^^^^^^^^^^",
        "",
        _rst_table(WIRE_HEADER, _wire_rows(results), "Encoded replica messages"),
        "",
        "End to end",
        "^^^^^^^^^^",
        "",
        _rst_table(
            ["delivery", "joins/s"],
            _e2e_rows(results),
            f"{results.e2e.joins:,} joins tracked, ticked and delivered to a second tracker",
        ),
        "",
        "Diff latency",
        "^^^^^^^^^^^^",
        "",
        _rst_table(LATENCY_HEADER, _latency_rows(results), _latency_caption(results)),
        "",
        "Drivers",
        "^^^^^^^",
        "",
        f"On the memory bus; {_rst_text(_driver_note(results))}.",
        "",
        _rst_table(
            DRIVER_LATENCY_HEADER,
            _driver_latency_rows(results),
            _rst_text(f"Track to remote diff: {_driver_latency_caption(results)}"),
        ),
        "",
        _rst_table(
            DRIVER_TRACK_HEADER,
            _driver_track_rows(results),
            _rst_text(f"Tracks per second: {_driver_track_caption(results)}"),
        ),
        "",
        _rst_table(
            DRIVER_IDLE_HEADER, _driver_idle_rows(results), _rst_text(_driver_idle_caption(results))
        ),
        "",
        "Phoenix endpoint",
        "^^^^^^^^^^^^^^^^",
        "",
        f"Over loopback; {_rst_text(_endpoint_note(results))}.",
        "",
        _rst_table(
            ENDPOINT_JOIN_HEADER,
            _endpoint_join_rows(results),
            _rst_text(f"Joins per second: {_endpoint_join_caption(results)}"),
        ),
        "",
        _rst_table(
            ENDPOINT_FANOUT_HEADER,
            _endpoint_fanout_rows(results),
            _rst_text(f"Fan-out: {_endpoint_fanout_caption(results)}"),
        ),
        "",
        "Convergence",
        "^^^^^^^^^^^",
        "",
        f"{_rst_text(results.convergence.note)}; {_rst_text(_convergence_bounds(results))}.",
        "",
        _rst_table(
            CONVERGENCE_HEADER,
            _convergence_rows(results),
            "Virtual seconds until every live replica's view is equal (simulator)",
        ),
        "",
        "Scaling",
        "^^^^^^^",
        "",
        _rst_table(
            ["topic size", *OPERATIONS],
            _scaling_rows(results.topic),
            f"Milliseconds by topic size ({results.topic.note})",
        ),
        "",
        _rst_table(
            ["replicas", *OPERATIONS],
            _scaling_rows(results.replicas),
            f"Milliseconds by number of replicas ({results.replicas.note})",
        ),
        "",
        "Brokers",
        "^^^^^^^",
        "",
    ]
    parts += _rst_brokers(results.brokers)
    if image is not None:
        parts += [
            f".. image:: {image}",
            "   :alt: cost of each operation by topic size and by number of replicas",
            "   :width: 100%",
            "",
        ]
    return "\n".join(parts)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _rst_brokers(found: BrokerResult | None) -> list[str]:
    if found is None:
        return [f"{_rst_text(_sentence(NO_BROKERS))}.", ""]
    text = notes(found)
    parts = [f"{_rst_text(_sentence(text['where']))}.", ""]
    for key, title, header, rows in (
        ("latency", "Track to visible", latency_header(), latency_rows(found)),
        ("transfer", "A large state reaching a new node", transfer_header(), transfer_rows(found)),
        ("churn", "Bytes per second under churn", churn_header(), churn_rows(found)),
    ):
        if rows:
            parts += [_rst_table(header, rows, _rst_text(f"{title}: {text[key]}")), ""]
        failures = transfer_failures(found) if key == "transfer" else []
        if failures:
            parts += ["The state did not reach the new node:", ""]
            parts += [f"* {_rst_text(why)}" for why in failures] + [""]
    parts += [f"Left out: {_rst_text(text['left out'])}.", ""]
    return parts


# ---------------------------------------------------------------------------- plot


def write_plot(results: Results, path: Path) -> None:
    """Draw the two scaling axes into a PNG at ``path``.

    Raises:
        ModuleNotFoundError: matplotlib is missing (``pip install -e '.[bench]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    markers = ("o", "s", "^", "D", "v")
    for axes, scaling in ((left, results.topic), (right, results.replicas)):
        for op, marker in zip(OPERATIONS, markers, strict=True):
            axes.plot(
                scaling.points,
                [s * 1000.0 for s in scaling.seconds[op]],
                marker=marker,
                label=op,
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_ylabel(f"milliseconds (best of {results.repeat})")
        axes.grid(True, which="major", alpha=0.4)
    left.set_xlabel(results.topic.note, fontsize="small")
    left.set_title("by topic size")
    right.set_xlabel(f"replicas ({results.replicas.note})", fontsize="small")
    right.set_title("by number of replicas")
    right.xaxis.set_minor_locator(ticker.NullLocator())
    right.set_xticks(results.replicas.points)
    right.set_xticklabels([str(p) for p in results.replicas.points])
    left.legend(loc="upper left", fontsize="small")
    m = results.machine
    fig.suptitle(f"presence-core scaling - {m.python}, {m.cpu}", fontsize="medium")
    fig.savefig(path, dpi=100)
    plt.close(fig)
