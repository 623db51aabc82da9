"""The benchmark suite in quick mode: every workload and figure still produces the right result.

It runs ``python -m bench --quick`` in-process (small sizes, one repetition) so the suite never
rots: a change to the core that breaks a workload, or a workload that no longer does what BENCH.md
says, fails here. It checks that every timed figure carries CPU and wall samples (min and median
are shown), the targets section, memory per presence with its meta, and the scaling tables; it
never checks speed: CI machines are noisy and speed lives in ``docs/``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (tox) does not put the repository root on the path
    sys.path.insert(0, str(ROOT))

from bench import FULL_PLAN, QUICK_PLAN, run_suite  # noqa: E402
from bench.__main__ import main, write_outputs  # noqa: E402
from bench._convergence import measure_convergence  # noqa: E402
from bench._driver import (  # noqa: E402
    CORE_VARIANT,
    DRIVER_NAMES,
    IDLE_NODES,
    VARIANTS,
    available_drivers,
)
from bench._driver import measure_latency as measure_driver_latency  # noqa: E402
from bench._endpoint import VARIANTS as ENDPOINT_VARIANTS  # noqa: E402
from bench._endpoint import _check_diff, _check_state  # noqa: E402
from bench._fanout import (  # noqa: E402
    FULL_FANOUT,
    MODES,
    QUICK_FANOUT,
    FanoutPlan,
    cpu_rows,
    measure_fanout,
    process_rows,
    traffic_rows,
)
from bench._floor import PlainState  # noqa: E402
from bench._format import machine  # noqa: E402
from bench._latency import measure_latency, percentile  # noqa: E402
from bench._memory import MEMORY_TARGET, MEMORY_TARGET_PRESENCES  # noqa: E402
from bench._report import Results, render_rst, render_text  # noqa: E402
from bench._scaling import OPERATIONS, PRESENCE_OPERATIONS  # noqa: E402
from bench._targets import QUICK_TARGETS, render_targets, target_rows  # noqa: E402
from bench._timing import Job, Samples, measure_jobs  # noqa: E402
from bench._workloads import (  # noqa: E402
    CheckFailed,
    Sizes,
    check,
    crdt_d,
    run_workloads,
)


@pytest.fixture(scope="module")
def results() -> Results:
    return run_suite(QUICK_PLAN, quick=True, progress=lambda message: None)


def test_every_workload_returns_the_right_result(results: Results) -> None:
    sizes = QUICK_PLAN.workloads
    verified = {w.spec.id: w.verified for w in results.workloads}
    a_n = sizes.a_conns * sizes.a_topics
    assert verified == {
        "a": f"{a_n:,} presences stored",
        "b": f"{sizes.b_conns * sizes.b_keys:,} entries listed from "
        f"{sizes.b_conns * sizes.b_keys * sizes.b_topics:,}",
        "c": f"{a_n:,} joins returned",
        "d": f"{sizes.d_rounds * sizes.d_per_round:,} joins and "
        f"{(sizes.d_rounds - 1) * sizes.d_per_round:,} leaves merged, {sizes.d_per_round} left",
        "e": f"{sizes.e_conns * sizes.e_topics:,} leaves returned",
    }
    for w in results.workloads:
        for samples in (w.crdt, w.floor):
            _check_samples(samples, results.repeat)
        assert w.floor_ratio == w.crdt.cpu_min / w.floor.cpu_min
        assert w.speedup == w.spec.reference.mid_ms / (w.crdt.wall_min * 1000)
    assert {w.spec.id: set(w.phases) for w in results.workloads if w.phases} == {
        "c": {"extract", "merge"},
        "e": {"down", "remove"},
    }
    for w in results.workloads:
        for samples in w.phases.values():
            _check_samples(samples, results.repeat)


def _check_samples(samples: Samples, repeat: int) -> None:
    """CPU and wall samples of every run; min <= median on both clocks (never their values)."""
    assert len(samples.cpu) == len(samples.wall) == repeat
    assert all(seconds >= 0 for seconds in samples.cpu)
    assert all(seconds > 0 for seconds in samples.wall)
    assert samples.cpu_min <= samples.cpu_median
    assert samples.wall_min <= samples.wall_median


def test_the_timing_keeps_both_clocks_and_only_what_the_check_returns() -> None:
    seen: list[int] = []

    def check_and_count(out: list[int]) -> int:
        seen.append(len(out))
        return len(out)

    first = Job(lambda: 3, lambda n: list(range(n)), check_and_count)
    second = Job(lambda: 5, lambda n: list(range(n)), check_and_count)
    a, b = measure_jobs([first, second], repeat=3)
    assert seen == [3, 5, 5, 3, 3, 5]  # interleaved, the order reversing every repetition
    assert (a.result, b.result) == (3, 5)
    _check_samples(a, 3)
    _check_samples(b, 3)
    assert Samples((1.0, 3.0, 2.0), (4.0, 6.0, 5.0)).stats == (1.0, 2.0, 4.0, 5.0)
    assert Samples((2.0,), (4.0,)).per(2).stats == (1.0, 1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="repeat"):
        measure_jobs([first], repeat=0)


def test_the_other_figures_are_there(results: Results) -> None:
    assert results.wire.transfer_presences == 1_000
    assert results.e2e.joins == 150
    assert results.e2e.objects_per_second > 0
    for samples in (results.e2e.objects, results.e2e.encoded):
        _check_samples(samples, results.repeat)


def test_memory_per_presence_includes_the_meta(results: Results) -> None:
    assert [m.presences for m in results.memory] == [100, 1_000]
    for m in results.memory:
        assert m.meta > 0
        assert m.steady > m.meta  # the meta's copy is part of the figure, not subtracted
        assert m.with_delta > m.meta
        assert m.floor > m.meta  # the floor's records hold a dict(meta) each
        assert m.without_meta == m.steady - m.meta
        assert 0 < m.meta_share < 1
        assert not m.judged  # quick sizes: the target is judged at 100,000 only
    # the full run measures the size the target is about
    assert MEMORY_TARGET_PRESENCES == 100_000
    assert MEMORY_TARGET == 400
    assert MEMORY_TARGET_PRESENCES in [conns * 100 for conns in FULL_PLAN.memory_conns]
    assert FULL_PLAN.targets.memory_conns * 100 == MEMORY_TARGET_PRESENCES


def test_the_targets_section(results: Results) -> None:
    targets = results.targets
    assert targets.quick
    assert targets.repeat == results.repeat
    assert [f.spec.id for f in targets.figures] == [
        "a",
        "c",
        "d",
        "track",
        "encode",
        "decode",
        "decode + merge",
        "heartbeat",
        "heartbeat + join",
    ]
    for figure in targets.figures:
        _check_samples(figure.samples, results.repeat)
    bounded = {f.spec.id for f in targets.figures if f.spec.target is not None}
    assert bounded == {"a", "c", "d", "track", "decode + merge", "heartbeat"}
    # the memory row reuses the memory section's figure at the same size
    assert targets.memory is not None
    assert targets.memory.presences == QUICK_TARGETS.memory_conns * 100 == 1_000
    assert targets.memory in results.memory
    text = render_targets(targets, results.machine)
    assert "CPU: min" in text
    assert "wall: median" in text
    assert "MET" not in text  # quick mode judges nothing
    assert "MISSED" not in text
    assert "meta included" in text


def test_the_targets_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--targets", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "presence-core targets" in out
    assert machine().python in out  # the report names the Python it ran on
    for figure in ("a: ", "d: ", "track: ", "heartbeat: ", "memory: "):
        assert figure in out
    assert "wrote" not in out
    for conflicting in (["--targets", "--out", "x"], ["--targets", "--soak"]):
        with pytest.raises(SystemExit):
            main(conflicting)


def test_a_target_figure_that_does_less_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench._targets import measure_targets

    from presence_core import ReplicaState

    real = ReplicaState.merge

    def lossy(self: ReplicaState, remote: object) -> object:
        result = real(self, remote)  # type: ignore[arg-type]
        return type(result)(joins=result.joins[1:], leaves=result.leaves)

    monkeypatch.setattr(ReplicaState, "merge", lossy)
    with pytest.raises(CheckFailed, match="c: "):
        measure_targets(QUICK_TARGETS, quick=True, repeat=1, with_memory=False, only=("c",))


def test_workload_d_discards_the_merge_results() -> None:
    tiny = Sizes(d_rounds=3, d_per_round=4, d_topics=2)
    job = crdt_d(tiny)
    joins, leaves, r1, r2 = job.run(job.setup())
    assert (type(joins), type(leaves)) == (int, int)  # counts, no MergeResult kept
    assert job.check((joins, leaves, r1, r2))[:2] == (12, 8)


def test_the_floor_is_bare_dicts_and_tuples() -> None:
    p1, p2 = PlainState("r1"), PlainState("r2")
    record = p1.join("c", "t", "k", {"status": "online"})
    assert type(record) is tuple
    assert type(record[3]) is dict
    p2.add_owner("r1")
    owner, joins, leaves = delta = p1.take_delta()
    assert (type(delta), owner, type(joins), type(leaves)) == (tuple, "r1", list, list)
    assert p2.apply_delta(delta) == ([record], [])
    assert all(type(r) is tuple for r in p2.get_by_topic("t"))


def test_the_scaling_tables(results: Results) -> None:
    presences = results.presences
    assert presences.axis == "presences"
    assert presences.points == QUICK_PLAN.presence_points == (100, 1_000)
    assert FULL_PLAN.presence_points[0] == 1_000
    assert FULL_PLAN.presence_points[-1] == 1_000_000
    assert tuple(presences.samples) == tuple(PRESENCE_OPERATIONS)
    assert results.topic.points == (10, 100)
    assert results.replicas.points == (2, 3)
    for scaling in (results.topic, results.replicas):
        assert tuple(scaling.samples) == OPERATIONS
    for scaling in (presences, results.topic, results.replicas):
        assert set(scaling.units) == set(scaling.samples)
        for per_point in scaling.samples.values():
            assert len(per_point) == len(scaling.points)
            for samples in per_point:
                _check_samples(samples, results.repeat)
    text = render_text(results)
    assert "Microseconds per entry by presences held" in text
    assert "join (per join)" in text
    assert "merge delta (per merge of 10 changes)" in text


def test_diff_latency_is_measured_on_every_join(results: Results) -> None:
    latency = results.latency
    assert latency.joins == QUICK_PLAN.latency_joins == 200
    for found in (latency.objects, latency.encoded):
        assert len(found.samples) == len(found.cpu) == latency.joins
        assert 0 < found.fastest_us <= found.median_us <= found.p99_us
        assert 0 <= found.cpu_fastest_us <= found.cpu_median_us <= found.cpu_p99_us


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile(samples, 50) == 50.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_convergence_runs_every_size_and_seed(results: Results) -> None:
    convergence = results.convergence
    assert [p.nodes for p in convergence.points] == [3, 10]
    assert convergence.seeds == QUICK_PLAN.convergence_seeds == (1, 2)
    assert convergence.runs == 8
    assert convergence.config.broadcast_period == 0.5
    for point in convergence.points:
        assert len(point.heal) == len(point.crash) == len(point.victim_presences) == 2
        assert all(seconds >= 0 for seconds in point.heal)
        # the crashed node held presences, so the others need the down period to drop them
        assert all(0 < seconds <= convergence.bounds.settle for seconds in point.crash)
        assert all(held >= 1 for held in point.victim_presences)
        assert point.heal_median <= point.heal_worst
        assert point.crash_median <= point.crash_worst
    assert "broadcast_period 0.5 s" in convergence.note


def test_a_broken_tracker_fails_the_convergence_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    from presence_core import Message, Tracker

    class Deaf(Tracker):
        def receive(self, message: Message | bytes | bytearray | memoryview, *, now: float) -> None:
            return None

    monkeypatch.setattr("bench._convergence.Tracker", Deaf)
    with pytest.raises(AssertionError, match="invariant"):
        measure_convergence((3,), (1,), progress=lambda message: None)


def test_a_lost_diff_fails_the_latency_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    from presence_core import ReplicaState

    real = ReplicaState.merge

    def lossy(self: ReplicaState, remote: object) -> object:
        result = real(self, remote)  # type: ignore[arg-type]
        return type(result)(joins=(), leaves=result.leaves)

    monkeypatch.setattr(ReplicaState, "merge", lossy)
    with pytest.raises(AssertionError, match="latency: "):
        measure_latency(3)


def test_the_driver_section_measures_every_installed_driver(results: Results) -> None:
    drivers = results.drivers
    names = [d.name for d in available_drivers()[0]]
    assert names[0] == "asyncio"  # the standard library is enough for it
    assert sorted([*names, *drivers.missing]) == sorted(DRIVER_NAMES)
    # track to remote diff: every sample's diff arrived and held the tracked presence
    assert [found.driver for found in drivers.latency] == names
    assert drivers.period == QUICK_PLAN.driver_period
    assert drivers.samples == QUICK_PLAN.driver_samples == 12
    for found in drivers.latency:
        assert len(found.end_to_end) == len(found.after_tick) == len(found.lateness) == 12
        for total, after, late in zip(
            found.end_to_end, found.after_tick, found.lateness, strict=True
        ):
            assert 0 < after <= total
            assert late >= 0
    # tracks per second: the core alone, then every variant on every driver, every repetition
    assert drivers.tracks == QUICK_PLAN.driver_tracks
    assert [(runs.driver, runs.variant) for runs in drivers.track_runs] == [
        ("-", CORE_VARIANT),
        *((name, variant) for name in names for variant in VARIANTS),
    ]
    for runs in drivers.track_runs:
        assert len(runs.cpu) == len(runs.wall) == results.repeat
        assert all(seconds > 0 for seconds in runs.wall)
        assert all(seconds >= 0 for seconds in runs.cpu)
    # idle: a bare timer, one node and three nodes per driver, each over the whole window
    assert [(idle.driver, idle.nodes) for idle in drivers.idle] == [
        (name, nodes) for name in names for nodes in IDLE_NODES
    ]
    window = QUICK_PLAN.driver_idle[0]
    for idle in drivers.idle:
        assert idle.wall >= 0.9 * window  # the whole window was measured
        assert 0 <= idle.pump <= idle.cpu
        if idle.nodes == 0:
            assert idle.pump == idle.sent == idle.received == 0


def test_a_lost_diff_fails_the_driver_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    from presence_core import ReplicaState

    real = ReplicaState.merge

    def lossy(self: ReplicaState, remote: object) -> object:
        result = real(self, remote)  # type: ignore[arg-type]
        return type(result)(joins=(), leaves=result.leaves)

    monkeypatch.setattr(ReplicaState, "merge", lossy)
    asyncio_driver = available_drivers()[0][:1]
    with pytest.raises(AssertionError, match="drivers: latency on asyncio: no remote diff"):
        measure_driver_latency(asyncio_driver, period=0.02, samples=2, rounds=1, timeout=0.5)


def test_the_endpoint_section_joins_and_fans_out_every_socket(results: Results) -> None:
    endpoint = results.endpoint
    assert endpoint.sockets == QUICK_PLAN.endpoint_sockets == 20
    assert endpoint.watchers == QUICK_PLAN.endpoint_watchers == 20
    assert endpoint.rounds == QUICK_PLAN.endpoint_rounds == 5
    # joins per second: the websocket alone, then with a join, every repetition
    assert [runs.variant for runs in endpoint.joins] == list(ENDPOINT_VARIANTS)
    for runs in endpoint.joins:
        assert len(runs.wall) == len(runs.client_cpu) == results.repeat
        assert all(seconds > 0 for seconds in runs.wall)
        if endpoint.cpu_readable:
            assert runs.server_cpu is not None
            assert len(runs.server_cpu) == results.repeat
    # fan-out: every round reached every watcher (the section checks each frame)
    fanout = endpoint.fanout
    assert len(fanout.first) == len(fanout.median) == len(fanout.last) == endpoint.rounds
    assert len(fanout.client_cpu) == endpoint.rounds
    for first, median, last in zip(fanout.first, fanout.median, fanout.last, strict=True):
        assert 0 < first <= median <= last
    assert "uvicorn" in endpoint.server


def test_the_endpoint_section_refuses_frames_phoenix_would_not_send() -> None:
    key_meta = '{"probe0":{"metas":[{"device":"web","phx_ref":"r1","status":"online"}]}}'
    diff = f'[null,null,"room:fanout","presence_diff",{{"joins":{key_meta},"leaves":{{}}}}]'
    _check_diff(diff, "room:fanout", "probe0", None, "ok")
    with pytest.raises(AssertionError, match="not a presence_diff broadcast"):
        _check_diff(diff.replace("[null,null", '["1",null'), "room:fanout", "probe0", None, "x")
    with pytest.raises(AssertionError, match="no presence of probe1"):
        _check_diff(diff, "room:fanout", "probe1", None, "x")
    with pytest.raises(AssertionError, match="wrong presences"):
        _check_diff(diff.replace('"web"', '"ios"'), "room:fanout", "probe0", None, "x")
    state = f'["1",null,"room:fanout","presence_state",{key_meta}]'
    assert _check_state(state, "1", "room:fanout", "probe0", "ok") == "r1"
    with pytest.raises(AssertionError, match="not the channel's presence_state"):
        _check_state(state, "2", "room:fanout", "probe0", "x")  # another join_ref
    with pytest.raises(AssertionError, match="not a V2 frame"):
        _check_state('{"event":"presence_state"}', "1", "room:fanout", None, "x")


def test_the_codec_figures(results: Results) -> None:
    wire = results.wire
    assert wire.idle_heartbeat_short < wire.idle_heartbeat  # shorter replica names
    assert wire.delta_joins > 0
    assert wire.delta_mixed > 0
    assert wire.transfer > wire.transfer_presences  # every presence is on the wire
    assert results.e2e.bytes_per_second > 0


def test_reports_render_and_judge_no_target_in_quick_mode(results: Results) -> None:
    text = render_text(results)
    assert "QUICK" in text
    assert "not judged in quick mode" in text
    assert "MISSED" not in text
    assert " met " not in text
    for column in ("CPU: min", "CPU: median", "wall: min", "wall: median"):
        assert column in text
    assert "our wall min" in text  # what the speed-ups over Phoenix divide by
    assert "our CPU min" in text  # what CRDT/floor divides
    rst = render_rst(results, image=None)
    # 4 workload tables, targets, memory, wire, e2e, latency, 3 drivers, 2 endpoint,
    # convergence, 3 scaling; the ratio targets only at full size
    assert rst.count(".. list-table::") == 18
    assert "Targets\n^^^^^^^" in rst
    assert "Diff latency" in rst
    assert "Drivers" in rst
    assert "Phoenix endpoint" in rst
    assert "Convergence" in rst
    assert ".. image::" not in rst


def test_the_full_mode_report_judges_every_target(results: Results) -> None:
    # rendering only: quick figures dressed as a full run, so every verdict is printed
    targets = dataclasses.replace(results.targets, quick=False)
    full = dataclasses.replace(results, quick=False, targets=targets)
    text = render_text(full)
    assert "not judged" not in text
    assert "Ratio and size targets" in text
    verdicts = [row[-1] for row in target_rows(targets)]
    assert all(v in ("MET", "MISSED", "no target") for v in verdicts[:-1])
    assert verdicts[-1].startswith(("MET: ", "MISSED: "))  # the memory row, in bytes
    rst = render_rst(full, image="performance.png")
    assert rst.count(".. list-table::") == 19  # the ratio and size targets too
    assert ".. image:: performance.png" in rst


def test_outputs_are_written(results: Results, tmp_path: Path) -> None:
    written = write_outputs(results, tmp_path, plot=False)
    assert [p.name for p in written] == ["performance_results.inc", "fanout_results.inc"]
    assert "list-table" in written[0].read_text(encoding="utf-8")
    fanout = written[1].read_text(encoding="utf-8")
    # CPU per node, what each subscriber received, the whole process, latency
    assert fanout.count(".. list-table::") == 4
    assert "do not edit it by hand" in fanout


def test_a_wrong_result_is_caught() -> None:
    with pytest.raises(CheckFailed, match="boom"):
        check(False, "boom")


def test_checks_reject_a_workload_that_does_less(monkeypatch: pytest.MonkeyPatch) -> None:
    from presence_core import ReplicaState

    real = ReplicaState.merge

    def lossy(self: ReplicaState, remote: object) -> object:
        result = real(self, remote)  # type: ignore[arg-type]
        return type(result)(joins=result.joins[1:], leaves=result.leaves)

    monkeypatch.setattr(ReplicaState, "merge", lossy)
    tiny = Sizes(1, 2, 1, 2, 1, 2, 2, 1, 1, 2)
    with pytest.raises(CheckFailed, match="c: "):
        run_workloads(tiny, 1)


def test_the_command_line_in_quick_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "workload" in out.lower()
    assert "wrote" not in out


def test_the_fanout_section_runs_both_modes_and_checks_every_change(results: Results) -> None:
    found = results.fanout
    assert found is not None
    plan = found.plan
    assert plan == QUICK_FANOUT
    assert found.calibration.inside > 0
    assert found.calibration.read > 0
    # the issue's sizes at full size: 100,000 presences, 1,000 joins/s, 3 nodes, a 10 s window
    # rounded up to whole broadcast periods (Phoenix's default, 1.5 s)
    assert (FULL_FANOUT.presences, FULL_FANOUT.rate, FULL_FANOUT.nodes) == (100_000, 1_000, 3)
    assert FULL_FANOUT.broadcast_period == 1.5
    assert FULL_FANOUT.window == pytest.approx(10.5)
    assert plan.window == pytest.approx(0.3)
    # interleaved: AB, BA, ...; one run per mode in quick mode
    assert [run.mode for run in found.runs] == list(MODES)
    for run in found.runs:
        assert run.window > 0
        assert run.joins == plan.window_joins == 90
        assert [node.node for node in run.nodes] == ["n0", "n1", "n2"]
        for node in run.nodes:
            # CPU without the collections and the meters' clock reads, which are measured apart
            assert node.pump > 0
            assert node.pump_calls > 0
            assert node.subscriber > 0
            assert node.pump_gc >= 0
            assert node.subscriber_gc >= 0
            # payloads are JSON: at least `{"joins":{},"leaves":{}}` each
            assert node.payload_bytes >= node.diffs * len('{"joins":{},"leaves":{}}')
        assert run.meters > 0
        assert run.process > 0
        # every join of the window was timed once on every subscriber: on its own node (local)
        # and on the two others (the run checked that each subscriber saw each change once)
        assert len(run.local) == run.joins
        assert len(run.remote) == 2 * run.joins
        assert all(t >= 0 for t in (*run.local, *run.remote))
        assert run.transfers >= 0
        assert run.dropped >= 0
    batched = found.of("batched")[0]
    for node in batched.nodes:
        # one diff per tick at most, and a node ticks at most once per broadcast period
        assert node.diffs <= batched.window / plan.broadcast_period + 1
    # the report: three rows per node (each mode, then their ratio), and the process's rows
    for rows in (cpu_rows(found), traffic_rows(found)):
        assert [row[:2] for row in rows[:3]] == [
            ["n0", "unbatched"],
            ["n0", "batched"],
            ["n0", "batched / unbatched"],
        ]
        assert len(rows) == 9
    assert [row[0] for row in process_rows(found)] == [
        "unbatched",
        "batched",
        "batched / unbatched",
    ]
    text = " ".join(render_text(results).split())  # the captions are wrapped
    assert "Fan-out (300 presences in one topic on 3 nodes" in text
    assert "Presence latency" in text


def test_the_fanout_plan_refuses_what_its_checks_cannot_judge() -> None:
    with pytest.raises(ValueError, match="live at least 4 broadcast periods"):
        FanoutPlan(presences=30, rate=300.0, seconds=0.3, repeat=1, broadcast_period=0.05)
    with pytest.raises(ValueError, match="2 nodes or more"):
        FanoutPlan(presences=300, rate=300.0, seconds=0.3, repeat=1, broadcast_period=0.05, nodes=1)
    with pytest.raises(ValueError, match="repeat"):
        FanoutPlan(presences=300, rate=300.0, seconds=0.3, repeat=0, broadcast_period=0.05)


def _patch_pushes(monkeypatch: pytest.MonkeyPatch, copies: Callable[[int], int]) -> None:
    """Every topic subscription receives ``copies(i)`` copies of its ``i``-th diff."""
    from presence_adapters.presence import Subscription

    real = Subscription._push
    seen: dict[int, int] = {}

    def push(self: Subscription[object], item: object, weight: int) -> None:
        if self.topic is None:
            real(self, item, weight)
            return
        i = seen[id(self)] = seen.get(id(self), 0) + 1
        for _ in range(copies(i)):
            real(self, item, weight)

    monkeypatch.setattr(Subscription, "_push", push)
    monkeypatch.setattr("bench._fanout.DRAIN_GRACE", 1.0)


def test_a_lost_diff_fails_the_fanout(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_pushes(monkeypatch, lambda i: 0 if i == 3 else 1)
    with pytest.raises(AssertionError, match="did not receive every join and leave"):
        measure_fanout(QUICK_FANOUT, progress=lambda message: None)


def test_a_repeated_diff_fails_the_fanout(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_pushes(monkeypatch, lambda i: 2 if i == 3 else 1)
    with pytest.raises(AssertionError, match="not each of the"):
        measure_fanout(QUICK_FANOUT, progress=lambda message: None)


def test_the_fanout_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--fanout", "--quick", "--fanout-seconds", "0.2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    words = " ".join(out.split())  # the captions are wrapped
    assert "Fan-out (300 presences" in words
    assert "a window of 0.2 s" in words
    assert "batched / unbatched" in out
    assert f"wrote {tmp_path / 'fanout_results.inc'}" in out
    assert (tmp_path / "fanout_results.inc").read_text(encoding="utf-8").count("list-table") == 4
    for wrong in (["--fanout", "--soak"], ["--fanout", "--fanout-seconds", "0"]):
        with pytest.raises(SystemExit):
            main(wrong)
