"""Soak: memory stays proportional to the live presences, not to the history behind them.

The issue's requirement ("Hardening", *Bounded memory in long runs*): a run with a million
track/untrack operations and a hundred node restarts ends with memory proportional to the live
presences only, the delta generations respect their caps, and memory is sampled along the way.
``python -m bench --soak`` runs that full version (``bench/_soak.py``, :data:`FULL_SOAK`); this
module runs :data:`CI_SOAK`, the same cluster and workload with 20,000 operations and 9
restarts, in the simulator on virtual time (deterministic: seed 1, no real time anywhere), once
for the whole module, and judges it with :func:`soak_problems`:

* every :class:`Footprint` count stays within a bound derived from the plan alone (live
  presences, nodes, topics, config, restart rhythm; never the number of operations or restarts),
  and at the end, with every retired incarnation forgotten, equals or stays within what the live
  presences and the running nodes account for;
* the memory the first node's tracker retains (the node never restarts: it lives through the
  whole history) and the traced memory of the whole process are, at the end, within
  ``GROWTH_LIMIT`` and ``TRACED_LIMIT`` of what they were at the first sample at the plateau of
  live presences (the same live presences, several times less history, no restart yet);
* the delta generations stay bounded, and (the issue's wording) within their caps.

A quantity that grows with history fails its own test below, with the samples that went over.
The last tests cover the simulator hooks the soak needs (``Simulation(checks=False)``,
``trackers()``, ``tracked()``, ``operations``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from presence_adapters.simulation import (
    Fault,
    Scenario,
    SimParams,
    SimResult,
    Simulation,
    TrackerFactory,
    Workload,
)
from presence_core import ReplicaRef, Tracker, TrackerConfig

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # plain `pytest` (tox) does not put the repository root on the path
    sys.path.insert(0, str(ROOT))

from bench._soak import (  # noqa: E402
    CI_SOAK,
    COUNTS,
    TRACED_LIMIT,
    FootprintError,
    SoakResult,
    footprint,
    render_soak,
    run_soak,
    soak_bounds,
    soak_problems,
    soak_scenario,
)


@pytest.fixture(scope="module")
def soak() -> SoakResult:
    return run_soak(CI_SOAK)


@pytest.fixture(scope="module")
def problems(soak: SoakResult) -> dict[str, list[str]]:
    return soak_problems(soak)


def _shown(problems: dict[str, list[str]], quantity: str, soak: SoakResult) -> str:
    found = problems.get(quantity, [])
    return (
        f"{quantity} grows with history ({len(found)} problems), first:\n  "
        + "\n  ".join(found[:5])
        + f"\n\n{render_soak(soak)}"
    )


# ----------------------------------------------------------------------------- the run itself


def test_the_soak_runs_its_workload_and_restarts(soak: SoakResult) -> None:
    plan = soak.plan
    assert soak.operations >= plan.operations
    assert soak.restarts == plan.restarts
    assert not soak.errors, soak.errors
    assert soak.converged, "after the settle phase a replica did not list the live presences"
    assert len(soak.samples) >= 40
    last = soak.samples[-1]
    assert sorted(last.footprints) == [f"n{i}" for i in range(plan.nodes)]
    # The first plateau comes before any restart, the end after all of them: far apart.
    first = soak.first_plateau()
    assert first.restarts == 0
    assert last.operations >= 5 * first.operations
    assert last.live >= 0.95 * plan.max_presences


def test_the_restarts_mix_crashes_and_graceful_stops() -> None:
    scenario = soak_scenario(CI_SOAK)
    kinds = [f.kind for f in scenario.faults]
    assert kinds.count("restart") == CI_SOAK.restarts
    assert kinds.count("shutdown") == round(CI_SOAK.graceful_share * CI_SOAK.restarts)
    assert kinds.count("crash") == CI_SOAK.restarts - kinds.count("shutdown")
    stops = [f for f in scenario.faults if f.kind != "restart"]
    assert {f.nodes[0] for f in stops} == set(scenario.nodes[1:])  # the first node survives
    down = CI_SOAK.config.effective_down_period
    assert min(f.at for f in stops) >= CI_SOAK.warmup
    assert max(f.at for f in scenario.faults) <= scenario.duration - CI_SOAK.tail + 3 * down


# ----------------------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("quantity", COUNTS)
def test_footprint_count_is_bounded_by_the_live_state(
    quantity: str, soak: SoakResult, problems: dict[str, list[str]]
) -> None:
    assert quantity not in problems, _shown(problems, quantity, soak)


def test_the_end_holds_what_the_first_plateau_held(soak: SoakResult) -> None:
    """Two points with the same live presences, far apart in history: the same footprint.

    At the first plateau the workload runs (the last tick's changes are on their way), at the
    end it has stopped and the cluster has settled: there the counts are exact.
    """
    first, last = soak.first_plateau(), soak.samples[-1]
    nodes = soak.plan.nodes
    window = soak_bounds(soak.plan).window
    for sample, slack in ((first, window), (last, 0)):
        for name, f in sample.footprints.items():
            where = f"{name} at t={sample.at:.0f}s ({sample.live} live): {f}"
            assert abs(f.entries - sample.live) <= slack, where
            assert abs(f.visible - sample.live) <= slack, where
            assert (f.replicas, f.down, f.records) == (nodes, 0, nodes - 1), where
            assert f.departed <= nodes - 1, where
    for name, f in last.footprints.items():
        before = first.footprints[name]
        assert f.cloud_dots <= before.cloud_dots + window, (name, before, f)
        assert f.cloud_replicas <= nodes - 1, (name, f)


def test_the_survivors_memory_ends_where_the_first_plateau_was(
    soak: SoakResult, problems: dict[str, list[str]]
) -> None:
    """The node that never restarts lived through all the history: its tracker, not the
    process around it (whose other trackers the restarts keep replacing), is where a leak of
    the core piles up."""
    assert "retained" not in problems, _shown(problems, "retained", soak)


def test_traced_memory_ends_where_the_first_plateau_was(
    soak: SoakResult, problems: dict[str, list[str]]
) -> None:
    assert "traced" not in problems, _shown(problems, "traced", soak)
    first, last = soak.first_plateau(), soak.samples[-1]
    assert last.traced <= TRACED_LIMIT * first.traced
    # nor did anything in between run away (the restarts retransfer whole states)
    assert max(s.traced for s in soak.samples) <= 2 * first.traced, render_soak(soak)


def test_delta_generations_stay_bounded(soak: SoakResult, problems: dict[str, list[str]]) -> None:
    assert "generations" not in problems, _shown(problems, "generations", soak)


def test_delta_generations_respect_their_caps(
    soak: SoakResult, problems: dict[str, list[str]]
) -> None:
    """No generation holds more than its cap (``config.max_delta_sizes``), not even for a
    window busier than the cap or a peer's whole generation received in a transfer reply
    (Phoenix's push keeps those whole)."""
    assert "generation_caps" not in problems, _shown(problems, "generation_caps", soak)


# ----------------------------------------------------------------------------- the probes


def test_footprint_names_the_attribute_it_misses() -> None:
    """When the core renames what the soak reads, the failure says what to adapt."""
    tracker = Tracker(config=CI_SOAK.config, replica=ReplicaRef("a", 1), rng=random.Random(1))
    empty = footprint(tracker, retained=True)
    assert (empty.entries, empty.records, empty.generations) == (0, 0, ())
    assert empty.retained is not None
    assert empty.retained > 0
    del tracker._requests
    with pytest.raises(FootprintError, match=r"no _requests .*transfer requests.*_soak\.py"):
        footprint(tracker)


# ----------------------------------------------------------------------------- simulator hooks

_NODES = ("n0", "n1", "n2")


def _scenario(**changes: Any) -> Scenario:
    faults = [
        Fault(at=4.0, kind="crash", nodes=["n1"]),
        Fault(at=6.0, kind="restart", nodes=["n1"]),
    ]
    base = Scenario(
        nodes=_NODES, seed=9, duration=12.0, workload=Workload(rate=20.0), faults=faults
    )
    return attrs.evolve(base, **changes)


def _reused_incarnation() -> TrackerFactory:
    """Broken: every incarnation of a node is incarnation 1, so refs repeat after a restart."""

    def build(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        return Tracker(config=config, replica=ReplicaRef(replica.name, 1), rng=rng)

    return build


def test_without_checks_nothing_is_checked_and_runs_replay() -> None:
    broken = _reused_incarnation()
    assert not Simulation(_scenario(), tracker_factory=broken).run().ok  # duplicate_ref
    unchecked = Simulation(_scenario(), tracker_factory=broken, checks=False).run()
    assert unchecked.ok
    assert unchecked.metrics.convergence == ()
    again = Simulation(_scenario(), tracker_factory=broken, checks=False).run()
    assert again.digest == unchecked.digest


def test_without_checks_the_run_is_the_same_run() -> None:
    """The same operations, faults and messages: only step numbers and convergence lines."""

    def lines(result: SimResult) -> list[str]:
        return [line.split(" ", 1)[1] for line in result.trace if " converged " not in line]

    scenario = SimParams(seed=3, faults="all").scenario()
    checked = Simulation(scenario, keep_trace=True).run()
    unchecked = Simulation(scenario, keep_trace=True, checks=False).run()
    assert checked.ok
    assert unchecked.ok
    assert any(" converged " in line for line in checked.trace)
    assert lines(checked) == lines(unchecked)


def test_inspection_follows_the_nodes_through_a_crash() -> None:
    seen: list[tuple[float, int, dict[str, int], dict[str, int]]] = []
    sim: Simulation | None = None

    def on_progress(now: float, end: float) -> None:
        assert sim is not None
        trackers = sim.trackers()
        owned = {
            name: sum(1 for e in t.state.entries() if e.owner == t.replica)
            for name, t in trackers.items()
        }
        tracked = {name: len(model) for name, model in sim.tracked().items()}
        seen.append((now, sim.operations, owned, tracked))

    sim = Simulation(_scenario(), checks=False, on_progress=on_progress)
    result = sim.run()
    assert result.ok
    during_crash = [entry for entry in seen if 4.0 < entry[0] < 6.0]
    assert during_crash
    assert all(sorted(entry[2]) == ["n0", "n2"] for entry in during_crash)
    for _now, _ops, owned, tracked in seen:
        assert owned == tracked
    operations = [entry[1] for entry in seen]
    assert operations == sorted(operations)
    assert sim.operations == result.metrics.operations > operations[0]
    trackers = sim.trackers()
    assert sorted(trackers) == list(_NODES)
    assert trackers["n1"].replica == ReplicaRef("n1", 2)


def test_inspection_after_the_run_reads_the_final_nodes() -> None:
    sim = Simulation(_scenario(faults=()), checks=False)
    sim.run()
    expected = sum(len(model) for model in sim.tracked().values())
    assert expected > 0
    assert [len(t.state) for t in sim.trackers().values()] == [expected] * len(_NODES)
