"""Bad input to the simulator and to ``presence simulate`` is refused before anything runs.

A value that would make a run meaningless (NaN, a negative rate, zero topics) or endless (an
infinite duration or rate, a tick or check interval of almost nothing) is a ``ValueError`` from
the Python API and a usage error (exit status 2) from the command. A Simulation runs once. The
command ends quietly when its reader goes away, and tells its version.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import pytest

from presence_adapters import cli
from presence_adapters.simulation import (
    MAX_RATE,
    MIN_PERIOD,
    Fault,
    FaultyNetwork,
    NetworkModel,
    Scenario,
    SimParams,
    Simulation,
    Workload,
    run,
)
from presence_core import Message, TrackerConfig, __version__

NAN = float("nan")
INF = float("inf")


def _id(value: object) -> str:
    """A test id: the repr, cut short (some values are ints of hundreds of digits)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


class _MustNotRun(Simulation):
    """Stands in for the Simulation in the command: building one means a run started."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the command started a run with values it should have refused")


# ----------------------------------------------------------------------------- the command


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--duration", "nan"], "duration must be a finite number"),
        (["--duration", "inf"], "duration must be a finite number"),
        (["--duration", "1e400"], "duration must be a finite number"),
        (["--duration", "0"], "duration must be a positive number"),
        (["--duration", "-5"], "duration must be a positive number"),
        (["--rate", "inf"], "rate must be a finite number"),
        (["--rate", "nan"], "rate must be a finite number"),
        (["--rate", "-1"], "rate must be from 0 (no workload)"),
        (["--rate", "1e9"], "rate must be from 0 (no workload)"),
        (["--broadcast-period", "1e-300"], "broadcast_period must be at least 0.001"),
        (["--broadcast-period", "0"], "broadcast_period must be at least 0.001"),
        (["--broadcast-period", "-1"], "broadcast_period must be at least 0.001"),
        (["--broadcast-period", "inf"], "broadcast_period must be a finite number"),
        (["--broadcast-period", "nan"], "broadcast_period must be a finite number"),
        (["--topics", "0"], "topics must be an int >= 1, not 0"),
        (["--keys", "0"], "keys must be an int >= 1, not 0"),
        (["--topics", "-3"], "topics must be an int >= 1, not -3"),
        (["--nodes", "0"], "nodes must be an int from 1 to 1000"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_the_command_refuses_bad_values_before_running(
    flags: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "Simulation", _MustNotRun)
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "--quiet", *flags])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: presence simulate")
    assert f"presence simulate: error: {message}" in captured.err


def test_the_command_help_states_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "from 0 (no workload: faults and heartbeats only) to 10000" in text
    assert "at least 0.001" in text
    assert "topics, >= 1" in text


def test_a_zero_rate_is_a_run_with_no_workload(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", "--quiet", "--rate", "0", "--duration", "5"]) == 0
    out = capsys.readouterr().out
    assert "CONVERGED" in out
    assert " 0 client operations, 0 diffs emitted" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"presence {__version__}\n"


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "presence_adapters.cli", *args]


def _env(*, unbuffered: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--duration", "2", "--faults", "none"],
        ["simulate", "--duration", "2", "--faults", "none", "--json", "-"],
        ["--version"],
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_closed_stdout_ends_the_command_quietly(args: list[str], unbuffered: bool) -> None:
    # A pipe whose reading end is closed before the command starts: its first write fails, every
    # time, as it does under `presence simulate | head -1` once head has exited.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            _command(*args),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(unbuffered=unbuffered),
            timeout=300,
            check=False,
        )
    finally:
        os.close(write_end)
    # argparse itself ignores a failed write of --version's text (when unbuffered).
    expected = {0, cli.EXIT_BROKEN_PIPE} if args == ["--version"] else {cli.EXIT_BROKEN_PIPE}
    assert done.returncode in expected, done.stderr
    for noise in ("Traceback", "BrokenPipeError", "Exception ignored", "Errno"):
        assert noise not in done.stderr
    if "--json" not in args:  # with --json - the header line goes to stderr
        assert done.stderr == ""


def test_a_pipe_into_head_ends_quietly() -> None:
    """``presence simulate | head -1``: head prints the first line and exits; the command then
    ends without a traceback, with 141 if it wrote after head left (0 if everything it wrote fit
    in the pipe before that)."""
    with subprocess.Popen(
        _command("simulate", "--duration", "5", "--faults", "none"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(unbuffered=True),
    ) as command:
        assert command.stdout is not None
        assert command.stderr is not None
        head = subprocess.run(
            ["head", "-1"], stdin=command.stdout, capture_output=True, timeout=300, check=True
        )
        command.stdout.close()  # head has the only reading end left, and it is gone
        errors = command.stderr.read().decode()
        status = command.wait(timeout=300)
    assert head.stdout.decode().startswith("simulating 5 nodes, seed 1")
    assert status in (0, cli.EXIT_BROKEN_PIPE), errors
    assert errors == ""


# ----------------------------------------------------------------------------- the Python API


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duration": NAN}, "duration must be a finite number"),
        ({"duration": INF}, "duration must be a finite number"),
        ({"duration": 10**400}, "duration must be a finite number"),
        ({"duration": 0.0}, "duration must be a positive number"),
        ({"rate": -1.0}, "rate must be from 0"),
        ({"rate": NAN}, "rate must be a finite number"),
        ({"rate": INF}, "rate must be a finite number"),
        ({"rate": MAX_RATE * 2}, "rate must be from 0"),
        ({"rate": "4"}, "rate must be a number"),
        ({"topics": 0}, "topics must be an int >= 1"),
        ({"keys": 0}, "keys must be an int >= 1"),
        ({"keys": 2.0}, "keys must be an int >= 1"),
        ({"broadcast_period": 1e-300}, "broadcast_period must be at least 0.001"),
        ({"broadcast_period": INF}, "broadcast_period must be a finite number"),
        ({"nodes": 2.0}, "nodes must be an int from 1 to 1000"),
        ({"seed": "1"}, "seed must be an int"),
    ],
    ids=_id,
)
def test_sim_params_refuse_bad_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SimParams(**changes)


def test_the_bounds_themselves_are_accepted() -> None:
    assert SimParams(rate=0.0).scenario().workload.rate == 0.0
    assert SimParams(rate=MAX_RATE).rate == MAX_RATE
    params = SimParams(broadcast_period=MIN_PERIOD)
    assert params.scenario().config.broadcast_period == MIN_PERIOD
    _scenario(check_interval=MIN_PERIOD)


def test_a_zero_rate_runs_no_operation() -> None:
    result = run(SimParams(rate=0.0, duration=5.0, faults="crash"))
    assert result.ok, result.violations
    assert result.metrics.operations == 0
    assert result.metrics.diffs == 0


def _scenario(**changes: Any) -> Scenario:
    fields: dict[str, Any] = {"nodes": ("n0", "n1"), "seed": 3, "duration": 5.0, **changes}
    return Scenario(**fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"check_interval": 0.0}, "check_interval must be at least 0.001"),
        ({"check_interval": -0.25}, "check_interval must be at least 0.001"),
        ({"check_interval": 1e-300}, "check_interval must be at least 0.001"),
        ({"check_interval": NAN}, "check_interval must be a finite number"),
        ({"check_interval": INF}, "check_interval must be a finite number"),
        ({"duration": NAN}, "duration must be a finite number"),
        ({"duration": -1.0}, "duration must be a positive number"),
        (
            {"config": TrackerConfig(broadcast_period=1e-300, permdown_period=60.0)},
            "config.broadcast_period must be at least 0.001",
        ),
        ({"clock_rates": {"n0": NAN}}, "a clock rate must be a finite number"),
        ({"clock_rates": {"n0": 3.0}}, "clock rates must be within"),
        ({"clock_rates": {"n0": "fast"}}, "a clock rate must be a number"),
    ],
    ids=_id,
)
def test_scenarios_refuse_bad_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _scenario(**changes)


@pytest.mark.parametrize(
    "changes",
    [{"config": "fast"}, {"network": None}, {"workload": {"rate": 1.0}}],
    ids=_id,
)
def test_scenarios_refuse_parts_of_the_wrong_class(changes: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="must be a"):
        _scenario(**changes)


class _Endless(NetworkModel):
    """A model whose bounds, and so the run, would never end."""

    max_latency = INF

    def plan(
        self, src: str, dst: str, message: Message, now: float, rng: random.Random
    ) -> list[float]:
        return [0.0]


def test_a_network_model_must_bound_its_latency() -> None:
    with pytest.raises(ValueError, match=r"network\.max_latency must be a finite number"):
        _scenario(network=_Endless())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rate": -1.0}, "rate must be from 0"),
        ({"rate": NAN}, "rate must be a finite number"),
        ({"rate": INF}, "rate must be a finite number"),
        ({"topics": 0}, "topics must be an int >= 1"),
        ({"keys": 0}, "keys must be an int >= 1"),
        ({"conns_per_key": 0}, "conns_per_key must be an int >= 1"),
        ({"hot_topics": -1}, "hot_topics must be an int >= 0"),
        ({"hot_share": 1.5}, "hot_share must be a share from 0 to 1"),
        ({"max_presences": 0}, "max_presences must be an int >= 1"),
        ({"join": -0.1}, "join must be a weight >= 0"),
        ({"update": NAN}, "update must be a finite number"),
        ({"join": 0, "update": 0, "leave": 0, "disconnect": 0}, "at least one of join"),
        ({"unique_conns": 1}, "unique_conns must be a bool"),
    ],
    ids=_id,
)
def test_workloads_refuse_bad_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Workload(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"at": NAN}, "at must be a finite number"),
        ({"at": INF}, "at must be a finite number"),
        ({"at": -1.0}, "a fault's time must be >= 0"),
        ({"kind": "crahs"}, "unknown fault kind 'crahs'"),
    ],
    ids=_id,
)
def test_faults_refuse_bad_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault(**{"at": 1.0, "kind": "crash", "nodes": ["n0"], **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"latency_max": INF},
        {"latency_min": NAN},
        {"reorder_delay": INF},
        {"reorder_delay": NAN},
        {"loss": NAN},
        {"latency_max": 10**400},
        {"duplicate": True},
    ],
    ids=_id,
)
def test_networks_refuse_values_that_are_not_finite_numbers(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be a (finite )?number"):
        FaultyNetwork(**changes)


# ----------------------------------------------------------------------------- single use


def test_a_simulation_runs_once() -> None:
    scenario = _scenario(workload=Workload(rate=5.0))
    simulation = Simulation(scenario)
    first = simulation.run()
    with pytest.raises(RuntimeError, match="already ran; a Simulation runs once"):
        simulation.run()
    # The way to run it again: a new Simulation of the same scenario, which replays it exactly.
    assert Simulation(scenario).run().digest == first.digest


def test_a_simulation_needs_a_scenario() -> None:
    with pytest.raises(TypeError, match="scenario must be a Scenario"):
        Simulation(SimParams())  # type: ignore[arg-type]
