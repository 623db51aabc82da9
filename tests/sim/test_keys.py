"""Authenticated replication in the simulator: sealed clusters under every fault mix, a key
rotation across two rolling restarts, and the one-roll rotation the ``rejected`` invariant
catches.

A sealed run seals every message with its node's keyring and checks every delivery against the
receiver's; a tracker refusing a message for a reason that is not ``normal`` in this honest
cluster is a ``rejected`` violation. Restarts with a ``keyring`` (a :class:`Fault` field) model
the rolls of a rotation: the new incarnation comes up with the new configuration.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import attrs
import pytest

from presence_adapters import cli
from presence_adapters.simulation import (
    FAULT_MIXES,
    Fault,
    Scenario,
    SimParams,
    SimResult,
    Simulation,
)
from presence_core import Key, Keyring, RejectReason, ReplicaRef, Tracker, TrackerConfig

SEEDS = int(os.environ.get("PRESENCE_SIM_SEEDS", "40"))
SEALED_SEEDS = max(3, SEEDS // 8)
"""Seeds per fault mix in the sealed sweep (five by default: about a second per mix)."""

OLD = Key("2026-06", b"o" * 32)
NEW = Key("2026-12", b"n" * 32)

NAMES = ("n0", "n1", "n2", "n3", "n4")

ROLL_START = 2.0
ROLL_STEP = 2.4
"""The rolls happen early in the 60-second default run: the first from t=2, the second from
t=14, both over by t=26, before the default mix's crash (t=30 at the earliest) and within its
partition (from t=9 to t=23 at the latest): rolling through a partition is part of the test."""


def rejected_reasons(result: SimResult) -> set[RejectReason]:
    return {RejectReason(reason) for reason in result.metrics.rejected}


def roll(start: float, keyring: Keyring) -> list[Fault]:
    """Restart every node in turn, gracefully, with ``keyring``: one roll of the cluster."""
    faults = []
    for index, name in enumerate(NAMES):
        at = start + index * ROLL_STEP
        faults.append(Fault(at=at, kind="shutdown", nodes=(name,)))
        faults.append(Fault(at=at + 1.0, kind="restart", nodes=(name,), keyring=keyring))
    return faults


def rotated(params: SimParams, *rolls: list[Fault]) -> Scenario:
    """``params``'s scenario (its network, workload and faults), sealed with ``OLD``, plus the
    restarts of ``rolls``."""
    base = params.scenario()
    faults = sorted([*base.faults, *(f for faults in rolls for f in faults)], key=lambda f: f.at)
    return attrs.evolve(base, keyring=Keyring(OLD), faults=faults, params=None)


# ----------------------------------------------------------------------------- sealed clusters


@pytest.mark.parametrize("mix", sorted(FAULT_MIXES))
def test_sealed_clusters_converge_under_every_fault_mix(mix: str) -> None:
    failures = []
    sealed = 0
    for seed in range(1, SEALED_SEEDS + 1):
        params = SimParams(seed=seed, faults=mix, nodes=3 + seed % 3, duration=20.0, sealed=True)
        simulation = Simulation(params.scenario(), stop_on_violation=True)
        result = simulation.run()
        if not result.ok:
            failures.append(f"{result.violations[0]}\n  replay: {params.replay_command()}")
        assert all(reason.normal for reason in rejected_reasons(result)), result.metrics.rejected
        sealed += sum(t.keyring is not None for t in simulation.trackers().values())
    assert not failures, f"{len(failures)} seeds failed; first:\n{failures[0]}"
    assert sealed > 0


def test_a_sealed_run_is_deterministic_and_differs_from_an_unsealed_one() -> None:
    params = SimParams(seed=6, nodes=4, duration=15.0, faults="all", sealed=True)
    first = Simulation(params.scenario(), keep_trace=True).run()
    second = Simulation(params.scenario(), keep_trace=True).run()
    assert first.ok, first.violations
    assert first.digest == second.digest
    assert first.trace == second.trace
    unsealed = Simulation(attrs.evolve(params, sealed=False).scenario()).run()
    assert unsealed.digest != first.digest
    # Every message carries its seal: the same run moves more bytes.
    assert first.metrics.encoded_bytes > unsealed.metrics.encoded_bytes


def test_sealed_is_a_replayable_flag() -> None:
    params = SimParams(seed=3, sealed=True)
    assert params.cli_args() == ["--seed", "3", "--sealed"]
    assert params.replay_command() == "presence simulate --seed 3 --sealed"
    keyring = params.scenario().keyring
    assert keyring is not None
    assert keyring == SimParams(seed=3, sealed=True).scenario().keyring
    assert keyring != SimParams(seed=4, sealed=True).scenario().keyring
    assert SimParams(seed=3).scenario().keyring is None
    with pytest.raises(ValueError, match="sealed must be a bool"):
        SimParams(sealed=1)  # type: ignore[arg-type]


def test_the_command_runs_sealed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.json"
    args = ["simulate", "--sealed", "--nodes", "3", "--duration", "10", "--faults", "lossy"]
    assert cli.main([*args, "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["ok"] is True
    assert data["params"]["sealed"] is True
    assert data["replay"].endswith("--sealed")
    assert all(RejectReason(reason).normal for reason in data["metrics"]["rejected"])
    assert "CONVERGED" in capsys.readouterr().out


# ----------------------------------------------------------------------------- key rotation


def test_key_rotation_across_a_rolling_restart() -> None:
    """Two rolls under the default fault mix: first every node accepts the new key while it
    still seals with the old one, then every node seals with the new one and still accepts the
    old. No message is refused for a reason an honest cluster never gives, and it converges."""
    params = SimParams(seed=7, nodes=len(NAMES), duration=60.0, faults="default")
    scenario = rotated(
        params,
        roll(ROLL_START, Keyring(OLD, accepted=(NEW,))),
        roll(ROLL_START + 12.0, Keyring(NEW, accepted=(OLD,))),
    )
    simulation = Simulation(scenario, keep_trace=True)
    result = simulation.run()
    assert result.ok, "\n".join(map(str, result.violations))
    assert all(reason.normal for reason in rejected_reasons(result)), result.metrics.rejected
    assert RejectReason.UNAUTHENTICATED not in rejected_reasons(result)
    keyrings = sum(line.split(" ", 2)[2].startswith("keyring ") for line in result.trace)
    assert keyrings == 2 * len(NAMES)  # every restart of both rolls took its keyring
    for name, tracker in simulation.trackers().items():
        assert tracker.keyring == Keyring(NEW, accepted=(OLD,)), name
        assert tracker.replica.vsn >= 3, name  # the first incarnation, then one per roll
    assert [s.seconds is not None for s in result.metrics.convergence].count(False) == 0


def test_a_one_roll_rotation_refuses_messages() -> None:
    """Sealing with the new key while the others do not accept it yet: the others refuse every
    message of each restarted node (``unauthenticated``), a ``rejected`` violation."""
    params = SimParams(seed=7, nodes=len(NAMES), duration=30.0, faults="none")
    scenario = rotated(params, roll(ROLL_START, Keyring(NEW, accepted=(OLD,))))
    result = Simulation(scenario).run()
    assert RejectReason.UNAUTHENTICATED in rejected_reasons(result)
    rejected = [v for v in result.violations if v.kind == "rejected"]
    assert rejected
    assert "unauthenticated" in rejected[0].detail
    assert "2026-12" in rejected[0].detail  # the key id the others do not hold, never a secret
    shown = "\n".join(map(str, result.violations))
    assert NEW.secret.hex() not in shown
    assert "nnnn" not in shown


def test_a_node_with_another_key_is_refused_by_an_honest_cluster() -> None:
    def intruder(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        key = Key("2026-06", b"x" * 32) if replica.name == "n2" else OLD  # same id, other secret
        return Tracker(config=config, replica=replica, rng=rng, keyring=Keyring(key))

    scenario = Scenario(nodes=("n0", "n1", "n2"), seed=2, duration=10.0, keyring=Keyring(OLD))
    simulation = Simulation(scenario, tracker_factory=intruder)
    result = simulation.run()
    assert {v.kind for v in result.violations} >= {"rejected"}
    trackers = simulation.trackers()
    for name in ("n0", "n1"):
        stats = trackers[name].stats()
        assert stats.rejected[RejectReason.UNAUTHENTICATED] > 0
        assert "n2" not in trackers[name].replicas()  # never applied, not even its heartbeat


def test_faults_and_scenarios_check_their_keyrings() -> None:
    with pytest.raises(ValueError, match="only a restart takes a keyring, not a crash"):
        Fault(at=1.0, kind="crash", nodes=("n0",), keyring=Keyring(OLD))
    with pytest.raises(TypeError, match="keyring must be a Keyring or None, not Key"):
        Fault(at=1.0, kind="restart", nodes=("n0",), keyring=OLD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keyring must be a Keyring or None, not bytes"):
        Scenario(nodes=("n0",), keyring=b"secret" * 4)  # type: ignore[arg-type]
    fault = Fault(at=1.0, kind="restart", nodes=("n0",), keyring=Keyring(NEW, accepted=(OLD,)))
    assert fault.describe() == "restart n0 with keyring 2026-12 +2026-06"
    assert "nnnn" not in repr(fault)  # a Key's repr never shows its secret
