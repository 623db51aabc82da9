"""The cluster simulator: seed sweeps per fault mix, determinism, and checks that cannot pass
vacuously (each invariant is shown to fire on a deliberately broken cluster)."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from helpers import stdout_by_hash_seed
from presence_adapters import cli
from presence_adapters.simulation import (
    SIM_CONFIG,
    Fault,
    FaultyNetwork,
    NetworkModel,
    Scenario,
    SimParams,
    SimResult,
    Simulation,
    TrackerFactory,
    Workload,
    run,
)
from presence_core import (
    Event,
    Message,
    PresenceDiff,
    ReplicaRef,
    Tracker,
    TrackerConfig,
    decode_message,
)

SEEDS = int(os.environ.get("PRESENCE_SIM_SEEDS", "40"))
"""Seeds per fault mix in the quick sweep; the sim-sweep tox environment raises it."""


def _sweep(mix: str, seeds: int) -> list[str]:
    failures = []
    for seed in range(1, seeds + 1):
        params = SimParams(seed=seed, faults=mix, nodes=3 + seed % 3, duration=20.0)
        result = Simulation(params.scenario(), stop_on_violation=True).run()
        if not result.ok:
            failures.append(f"{result.violations[0]}\n  replay: {params.replay_command()}")
    return failures


@pytest.mark.parametrize(
    "mix",
    [
        "none",
        "skew",
        "lossy",
        "partition",
        "crash",
        "pause",
        "all",
        "default",
    ],
)
def test_seed_sweep(mix: str) -> None:
    failures = _sweep(mix, SEEDS)
    assert not failures, f"{len(failures)} of {SEEDS} seeds failed; first:\n{failures[0]}"


SMALL_MESSAGE_SEEDS = max(4, SEEDS // 5)
"""Seeds per fault mix in the sweep with a small message limit."""


@pytest.mark.parametrize("mix", ["none", "skew", "lossy", "partition", "crash", "pause", "all"])
def test_transfers_in_parts_converge_under_every_fault_mix(mix: str) -> None:
    """With 1 KiB messages most deltas and every transfer travel in parts, lost and reordered."""
    failures = []
    split = 0
    for seed in range(1, SMALL_MESSAGE_SEEDS + 1):
        params = SimParams(
            seed=seed,
            faults=mix,
            nodes=3 + seed % 3,
            duration=20.0,
            rate=20.0,
            max_message_bytes=1024,
        )
        result = Simulation(params.scenario(), stop_on_violation=True, keep_trace=True).run()
        if not result.ok:
            failures.append(f"{result.violations[0]}\n  replay: {params.replay_command()}")
        split += sum(1 for line in result.trace if " part " in line)
        assert result.metrics.largest_transfer <= 1024
        assert result.metrics.unsendable == 0
    assert not failures, f"{len(failures)} seeds failed; first:\n{failures[0]}"
    assert split > 0  # messages did travel in parts


def test_the_message_limit_is_a_replayable_flag() -> None:
    params = SimParams(seed=2, max_message_bytes=2048)
    assert params.cli_args() == ["--seed", "2", "--max-message-bytes", "2048"]
    config = params.scenario().config
    assert config.max_message_bytes == 2048
    assert config.max_presence_bytes <= 1024
    for bad in (1023, 0, 2048.0, "2048"):
        with pytest.raises(ValueError, match="max_message_bytes must be an int >= 1024"):
            SimParams(max_message_bytes=bad)  # type: ignore[arg-type]


def test_the_default_run_converges() -> None:
    result = run()
    assert result.ok, result.violations
    causes = [sample.cause.split()[0] for sample in result.metrics.convergence]
    assert causes == ["heal", "crash", "restart", "settle"]
    assert all(s.seconds is not None for s in result.metrics.convergence)
    assert result.metrics.operations > 100
    assert result.metrics.largest_transfer > 0


def test_fifty_nodes() -> None:
    names = tuple(f"n{i}" for i in range(50))
    scenario = Scenario(nodes=names, seed=7, duration=5.0, workload=Workload(rate=10.0))
    result = Simulation(scenario, stop_on_violation=True).run()
    assert result.ok, result.violations
    assert len(result.metrics.messages) == 50


def test_one_node() -> None:
    result = run(SimParams(seed=3, nodes=1, duration=10.0, faults="crash"))
    assert result.ok, result.violations


# ----------------------------------------------------------------------------- determinism


def test_same_scenario_same_digest() -> None:
    params = SimParams(seed=11, nodes=4, duration=20.0, faults="all")
    first = run(params, keep_trace=True)
    second = run(params, keep_trace=True)
    assert first.digest == second.digest
    assert first.trace == second.trace
    assert first.metrics == second.metrics
    assert run(attrs.evolve(params, seed=12)).digest != first.digest


_DIGEST_SCRIPT = (
    "from presence_adapters.simulation import SimParams, run;"
    "print(run(SimParams(seed=5, nodes=4, duration=15.0, faults='all')).digest)"
)


def test_digest_is_independent_of_hash_seed() -> None:
    digests = set(stdout_by_hash_seed(_DIGEST_SCRIPT, ("1", "2", "random")).values())
    assert len(digests) == 1
    assert digests == {run(SimParams(seed=5, nodes=4, duration=15.0, faults="all")).digest}


def test_params_expand_deterministically() -> None:
    params = SimParams(seed=42, faults="all", nodes=6)
    assert params.scenario() == params.scenario()
    assert params.scenario().faults != attrs.evolve(params, seed=43).scenario().faults


# ----------------------------------------------------------------------------- broken clusters


def _kinds(result: SimResult) -> set[str]:
    return {v.kind for v in result.violations}


class _LeavesDropped(Tracker):
    """Broken: its diffs never report leaves."""

    def next_event(self) -> Event | None:
        event = super().next_event()
        if isinstance(event, PresenceDiff):
            return PresenceDiff(topic=event.topic, joins=event.joins)
        return event


class _DeafToN0(Tracker):
    """Broken: ignores every message from n0."""

    def receive(self, message: Message | bytes | bytearray | memoryview, *, now: float) -> None:
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = decode_message(message)
        if message.sender.name != "n0":
            super().receive(message, now=now)
        else:
            self.handle_timer(now=now)


def _factory(cls: type[Tracker]) -> TrackerFactory:
    def build(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        return cls(config=config, replica=replica, rng=rng)

    return build


def _scenario(**changes: Any) -> Scenario:
    base = Scenario(nodes=("n0", "n1", "n2"), seed=9, duration=15.0, workload=Workload(rate=6.0))
    return attrs.evolve(base, **changes)


def test_dropped_leaves_break_diff_replay() -> None:
    result = Simulation(_scenario(), tracker_factory=_factory(_LeavesDropped)).run()
    assert "diff_replay" in _kinds(result)
    first = result.violations[0]
    assert first.seed == 9
    assert first.step > 0
    assert "seed 9" in str(first)


def test_deaf_replicas_break_missing_and_convergence() -> None:
    result = Simulation(_scenario(), tracker_factory=_factory(_DeafToN0)).run()
    assert {"missing_presence", "convergence"} <= _kinds(result)
    assert all(v.node != "n0" for v in result.violations if v.kind == "missing_presence")


def test_slow_down_detection_breaks_crashed_presence() -> None:
    slow = TrackerConfig(
        broadcast_period=0.5, max_silent_periods=4, down_period=50.0, permdown_period=100.0
    )

    def build(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        return Tracker(config=slow, replica=replica, rng=rng)

    scenario = _scenario(faults=[Fault(at=5.0, kind="crash", nodes=["n1"])])
    result = Simulation(scenario, tracker_factory=build).run()
    assert "crashed_presence" in _kinds(result)
    assert Simulation(scenario).run().ok


def test_reused_incarnation_breaks_ref_uniqueness() -> None:
    def build(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        return Tracker(config=config, replica=ReplicaRef(replica.name, 1), rng=rng)

    faults = [
        Fault(at=4.0, kind="crash", nodes=["n1"]),
        Fault(at=6.0, kind="restart", nodes=["n1"]),
    ]
    scenario = _scenario(faults=faults, workload=Workload(rate=20.0))
    result = Simulation(scenario, tracker_factory=build).run()
    assert "duplicate_ref" in _kinds(result)


def test_a_core_exception_is_reported_not_raised() -> None:
    class Exploding(Tracker):
        def handle_timer(self, *, now: float) -> None:
            if now > 1005.0:
                raise RuntimeError("boom")
            super().handle_timer(now=now)

    result = Simulation(_scenario(), tracker_factory=_factory(Exploding)).run()
    assert _kinds(result) == {"error"}
    assert "boom" in result.violations[0].detail


# ----------------------------------------------------------------------------- network models


class _Blackhole(NetworkModel):
    """Custom model: n2 hears nothing; every other link is a perfect 10 ms wire."""

    max_latency = 0.01

    def plan(
        self, src: str, dst: str, message: Message, now: float, rng: random.Random
    ) -> list[float]:
        return [] if dst == "n2" else [0.01]

    def calm(self) -> NetworkModel:
        return self


def test_custom_network_model() -> None:
    result = Simulation(_scenario(network=_Blackhole())).run()
    # drops disturb n2 continuously, so only the final convergence check can catch it
    assert _kinds(result) == {"convergence"}
    assert all(v.node == "n2" for v in result.violations)
    assert result.metrics.dropped > 0


def test_partition_one_way_and_heal_converge() -> None:
    faults = [
        Fault(at=2.0, kind="partition", nodes=["n0"], others=["n1", "n2"], one_way=True),
        Fault(at=9.0, kind="heal"),
    ]
    result = Simulation(_scenario(faults=faults, network=FaultyNetwork())).run()
    assert result.ok, result.violations
    assert [s.cause for s in result.metrics.convergence] == ["heal", "settle"]


def test_invalid_scenarios() -> None:
    with pytest.raises(ValueError, match="unknown nodes"):
        _scenario(faults=[Fault(at=1.0, kind="crash", nodes=["zz"])])
    with pytest.raises(ValueError, match="probability"):
        FaultyNetwork(loss=2.0)
    with pytest.raises(ValueError, match="fault mix"):
        SimParams(faults="nope")


def test_bounds_follow_the_config() -> None:
    fast = _scenario().bounds()
    slow = _scenario(config=TrackerConfig(broadcast_period=1.5)).bounds()
    assert slow.join > fast.join
    assert slow.crash > fast.crash
    assert fast.crash == pytest.approx(
        (SIM_CONFIG.effective_down_period + 1.0) + FaultyNetwork().max_latency
    )


# ----------------------------------------------------------------------------- the command


def test_cli_default_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "CONVERGED" in out
    assert "worst convergence" in out
    assert "trace digest" in out


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.json"
    code = cli.main(
        ["simulate", "--nodes", "3", "--duration", "10", "--faults", "none", "--json", str(path)]
    )
    assert code == 0
    data = json.loads(path.read_text())
    assert data["ok"] is True
    assert data["params"]["nodes"] == 3
    capsys.readouterr()
    assert set(data["metrics"]) >= {
        "convergence",
        "messages_per_replica_second",
        "largest_transfer",
    }
    assert cli.main(["simulate", "--duration", "5", "--faults", "none", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_cli_topic_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--grace, --flaps and --large-rooms reach the scenario (the same run as SimParams with
    them), the JSON's params and the replay command."""
    path = tmp_path / "m.json"
    flags = ["--nodes", "3", "--duration", "12", "--faults", "none", "--seed", "3"]
    modes = ["--grace", "4", "--flaps", "0.5", "--large-rooms", "2"]
    assert cli.main(["simulate", "--quiet", *flags, *modes, "--json", str(path)]) == 0
    header = capsys.readouterr().err  # --quiet: the header goes to stderr
    assert "leave grace period 4s, 0.5 flap episodes per second, 2 large room(s)" in header
    data = json.loads(path.read_text())
    params = SimParams(
        seed=3, nodes=3, duration=12.0, faults="none", grace=4.0, flaps=0.5, large_rooms=2
    )
    assert data["ok"] is True
    assert {k: data["params"][k] for k in ("grace", "flaps", "large_rooms")} == {
        "grace": 4.0,
        "flaps": 0.5,
        "large_rooms": 2,
    }
    assert data["params"]["max_message_bytes"] is None
    assert data["replay"] == params.replay_command()
    assert "--grace 4.0 --flaps 0.5 --large-rooms 2" in data["replay"]
    assert data["digest"] == Simulation(params.scenario()).run().digest
    assert data["metrics"]["flaps"] > 0
    # Without them: Phoenix's behaviour, and the JSON says so.
    assert cli.main(["simulate", *flags, "--json", "-"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert (plain["params"]["grace"], plain["params"]["flaps"]) == (0.0, 0.0)
    assert plain["params"]["large_rooms"] == 0
    assert plain["digest"] != data["digest"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--flaps", "1"], "flaps need a leave grace period"),
        (["--grace", "-1"], "grace must be a number of seconds >= 0"),
        (["--grace", "nan"], "grace must be"),
        (["--large-rooms", "-1"], "large_rooms must be an int >= 0"),
        (["--flaps", "2e4", "--grace", "4"], "flaps must be from 0"),
        (["--grace", "1", "--flaps", "1"], "needs a workload topic whose leave grace period"),
    ],
)
def test_cli_topic_mode_usage_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "--quiet", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_failure_prints_replay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(Simulation):
        def __init__(self, scenario: Scenario, **kwargs: Any) -> None:
            super().__init__(scenario, tracker_factory=_factory(_LeavesDropped), **kwargs)

    monkeypatch.setattr(cli, "Simulation", Broken)
    assert cli.main(["simulate", "--quiet", "--seed", "4", "--duration", "10"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "replay with: presence simulate --seed 4 --duration 10.0" in out


def test_cli_plot(tmp_path: Path) -> None:
    # The dev extra (what CI installs) has matplotlib: there a missing one is a failure.
    if os.environ.get("CI") != "true":
        pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    assert (
        cli.main(
            ["simulate", "--quiet", "--faults", "none", "--duration", "10", "--plot", str(path)]
        )
        == 0
    )
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_cli_plot_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["simulate", "--quiet", "--plot", "x.png"]) == 2
    assert "presence-core[plot]" in capsys.readouterr().err


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "--nodes", "0"])
    assert exc.value.code == 2
