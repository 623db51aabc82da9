"""The shipped Hypothesis strategies: valid scenarios, deterministic runs, and shrinking."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, find, given, settings

from presence_adapters import cli
from presence_adapters.simulation import Scenario, SimParams, Simulation, TrackerFactory
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
    assert isinstance(params, SimParams)
    assert params.replay_command().startswith("presence simulate --seed ")
    assert params.scenario() == params.scenario()
    # The command line the replay prints gives these very params back.
    parsed = cli._parser().parse_args(["simulate", *params.cli_args()])
    assert cli._sim_params(parsed) == params


@settings(max_examples=100, deadline=None)
@given(scenarios(max_nodes=4, max_duration=10.0), sim_params(max_nodes=3, max_duration=10.0))
def test_the_topic_modes_are_generated_valid(scenario: Scenario, params: SimParams) -> None:
    """Grace periods, per-topic options and flaps come only in valid combinations: a flap
    workload only where a topic's grace period makes room for it."""
    assert all(topic.startswith("topic:") for topic in scenario.topic_options)
    if scenario.workload.flaps:
        assert scenario.flap_topics()
    if params.flaps:
        assert params.grace > 0
        assert params.scenario().flap_topics()
    assert scenario.bounds().grace >= scenario.config.leave_grace_period


def test_the_topic_modes_are_all_generated() -> None:
    """Each mode shows up in some example (so the properties above are not vacuous)."""
    find(scenarios(max_nodes=2, max_duration=10.0), lambda s: s.workload.flaps > 0)
    find(scenarios(max_nodes=2, max_duration=10.0), lambda s: bool(s.large_rooms()))
    find(scenarios(max_nodes=2, max_duration=10.0), lambda s: s.config.leave_grace_period > 0)
    find(sim_params(max_nodes=2, max_duration=10.0), lambda p: p.flaps > 0 and p.large_rooms > 0)
    plain = find(scenarios(max_nodes=2, max_duration=10.0, modes=False), lambda s: True)
    assert (plain.topic_options, plain.config.leave_grace_period) == ({}, 0.0)
    assert find(sim_params(modes=False), lambda p: True) == find(sim_params(), lambda p: True)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_nodes=3, max_duration=10.0))
def test_generated_scenarios_hold_every_invariant(scenario: Scenario) -> None:
    """The stock tracker passes every generated scenario, topic modes included."""
    result = Simulation(scenario).run()
    assert result.ok, result.violations[0]


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
    assert smallest.topic_options == {}
    assert smallest.config.leave_grace_period == 0
    assert smallest.workload.flaps == 0
