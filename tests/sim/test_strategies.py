"""The shipped Hypothesis strategies: valid scenarios, deterministic runs, and shrinking."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, find, given, settings

from presence_adapters.simulation import Scenario, Simulation, TrackerFactory
from presence_adapters.testing.strategies import scenarios, sim_params
from presence_core import Event, PresenceDiff, ReplicaRef, Tracker, TrackerConfig


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_nodes=4, max_duration=10.0))
def test_generated_scenarios_run_deterministically(scenario: Scenario) -> None:
    first = Simulation(scenario).run()
    assert first.digest == Simulation(scenario).run().digest
    assert all(v.kind != "error" for v in first.violations), first.violations


@settings(max_examples=10, deadline=None)
@given(sim_params(max_nodes=3, max_duration=10.0))
def test_generated_params_replay(params: object) -> None:
    from presence_adapters.simulation import SimParams

    assert isinstance(params, SimParams)
    assert params.replay_command().startswith("presence simulate --seed ")
    assert params.scenario() == params.scenario()


class _LeavesDropped(Tracker):
    def next_event(self) -> Event | None:
        event = super().next_event()
        if isinstance(event, PresenceDiff):
            return PresenceDiff(topic=event.topic, joins=event.joins)
        return event


def _broken(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
    return _LeavesDropped(config=config, replica=replica, rng=rng)


BROKEN: TrackerFactory = _broken


def test_a_failing_schedule_shrinks() -> None:
    def fails(scenario: Scenario) -> bool:
        return not Simulation(scenario, tracker_factory=BROKEN, stop_on_violation=True).run().ok

    smallest = find(
        scenarios(max_nodes=4, max_duration=20.0),
        fails,
        settings=settings(max_examples=200, deadline=None, database=None),
    )
    assert len(smallest.nodes) == 1
    assert smallest.faults == ()
