"""Flap workloads in the simulator: keys that disconnect and reconnect within a leave grace
period, beyond it, and on another node, under every fault mix, with large rooms in the mix.

What subscribers see is judged by the ``flap_seen``, ``leave_lost`` and ``leave_repeated``
invariants, and by ``diff_replay``, exact with leaves held back and diffs batched (a node lists
what its subscribers were shown), with ``crashed_presence`` and ``missing_presence`` given the
time a topic's grace period and large-room tick add; each is shown to fire on a tracker broken
on purpose, so none of them can pass vacuously. Every run is seeded: a
failure replays from the scenario (or the ``presence simulate`` command) in its message.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Iterable
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import stdout_by_hash_seed
from presence_adapters.simulation import (
    FaultyNetwork,
    Scenario,
    SimParams,
    SimResult,
    Simulation,
    TrackerFactory,
    Workload,
)
from presence_core import (
    Event,
    PresenceDiff,
    PresenceMap,
    ReplicaRef,
    TopicOptions,
    Tracker,
    TrackerConfig,
    group,
)

MIXES = ["none", "skew", "lossy", "partition", "crash", "pause", "all", "default"]
GRACE = 4.0
SEEDS = (1, 5, 9)
"""Seeds per fault mix: between them, every fault kind of each mix (a one-way partition, a
graceful shutdown...) happens."""


def _params(seed: int, mix: str, **changes: Any) -> SimParams:
    base = SimParams(
        seed=seed,
        faults=mix,
        nodes=3 + seed % 3,
        duration=24.0,
        grace=GRACE,
        flaps=0.6,
        large_rooms=2,
    )
    return attrs.evolve(base, **changes)


def _failures(results: Iterable[tuple[SimParams | Scenario, SimResult]]) -> list[str]:
    failures = []
    for origin, result in results:
        if not result.ok:
            replay = (
                origin.replay_command() if isinstance(origin, SimParams) else repr(origin)[:300]
            )
            failures.append(f"{result.violations[0]}\n  replay: {replay}")
    return failures


def _kinds(result: SimResult) -> set[str]:
    return {v.kind for v in result.violations}


def _reconnects(result: SimResult) -> collections.Counter[str]:
    """The run's reconnects by kind, read from its trace: ``within`` or ``beyond`` the grace
    period (per :meth:`Scenario.flap_window`), ``handover`` (on another node), ``final`` (a
    leave for good, never followed by a reconnect)."""
    scenario = result.scenario
    left: dict[str, tuple[float, str]] = {}  # key -> (time, node) of its last leave
    topics: dict[str, str] = {}
    kinds: collections.Counter[str] = collections.Counter()
    for line in result.trace:
        _step, at, *words = line.split()
        if words[:2] == ["flap", "track"]:
            node, _conn, topic, key = words[2:6]
            topics[key] = topic
            if key in left:
                when, where = left.pop(key)
                within, beyond = scenario.flap_window(topic)
                gone = float(at) - when
                kinds["within" if gone < within else "beyond" if gone > beyond else "between"] += 1
                if node != where:
                    kinds["handover"] += 1
        elif words[:2] == ["flap", "leave"]:
            node, conn = words[2:4]
            left[conn.split(".")[0]] = (float(at), node)
    kinds["final"] = len(left)
    return kinds


# ----------------------------------------------------------------------------- every fault mix


@pytest.mark.parametrize("mix", MIXES)
def test_flaps_hold_under_every_fault_mix(mix: str) -> None:
    """Grace on, large rooms in the mix: no leave+join pair within the grace period reaches a
    subscriber, every real leave does, once, and every replayed view is its node's list at
    every check (held leaves and batches included), whatever the faults."""
    runs = []
    for seed in SEEDS:
        params = _params(seed, mix)
        runs.append((params, Simulation(params.scenario(), keep_trace=True).run()))
    failures = _failures(runs)
    assert not failures, f"{len(failures)} of {len(runs)} seeds failed; first:\n{failures[0]}"
    flaps = sum(result.metrics.flaps for _, result in runs)
    reconnects = sum((_reconnects(result) for _, result in runs), collections.Counter())
    assert flaps > 20
    assert min(reconnects[kind] for kind in ("within", "beyond", "handover", "final")) > 0
    assert reconnects["between"] == 0
    faults = collections.Counter(
        (fault.kind, fault.one_way) for _, result in runs for fault in result.scenario.faults
    )
    expected = {
        "partition": {("partition", True), ("partition", False), ("heal", False)},
        "crash": {("crash", False), ("shutdown", False), ("restart", False)},
        "pause": {("pause", False), ("resume", False)},
        "default": {("partition", False), ("crash", False), ("restart", False)},
        "all": {("partition", False), ("crash", False), ("pause", False)},
    }.get(mix, set())
    assert expected <= set(faults), faults
    if mix in ("lossy", "all"):
        network = runs[0][1].scenario.network
        assert isinstance(network, FaultyNetwork)
        assert min(network.loss, network.duplicate, network.reorder) > 0
        assert all(result.metrics.dropped for _, result in runs)
    if mix in ("none", "skew", "lossy", "crash", "pause"):
        # the timing checks did run (a partition or "all" may disturb every flap of a run)
        assert sum(result.metrics.flaps_judged for _, result in runs) > 20


def test_flaps_with_per_topic_options() -> None:
    """Grace periods and large rooms set per topic (TopicOptions) rather than for the whole
    tracker: flaps use only the topics with a long enough grace period; a restarted node gets
    its options back."""
    options = {
        "topic:0": TopicOptions(leave_grace_period=5.0, large_room=True),
        "topic:1": TopicOptions(leave_grace_period=3.5),
        "topic:2": TopicOptions(large_room=True),
        "topic:3": TopicOptions(leave_grace_period=0.5),  # too short for any flap
    }
    runs = []
    for seed in (1, 2):
        base = SimParams(seed=seed, faults="crash", nodes=4, duration=24.0, rate=8.0)
        scenario = attrs.evolve(
            base.scenario(),
            params=None,
            topic_options=options,
            workload=Workload(rate=8.0, flaps=0.8, handover=0.5, flap_beyond=0.4),
        )
        assert scenario.flap_topics() == ("topic:0", "topic:1")
        simulation = Simulation(scenario, keep_trace=True)
        result = simulation.run()
        runs.append((scenario, result))
        assert {line.split()[6] for line in result.trace if " flap track " in line} <= {
            "topic:0",
            "topic:1",
        }
        restarted = {f.nodes[0] for f in scenario.faults if f.kind == "restart"}
        trackers = simulation.trackers()
        assert restarted & set(trackers)
        for name in restarted & set(trackers):
            assert trackers[name].replica.vsn > 1
            for topic, topic_options in options.items():
                assert trackers[name].topic_options(topic) == topic_options
    failures = _failures(runs)
    assert not failures, failures[0]
    assert sum(result.metrics.flaps_judged for _, result in runs) > 20


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(1, 2**31),
    mix=st.sampled_from(MIXES),
    grace=st.sampled_from([4.0, 5.0, 6.5]),
    large_rooms=st.integers(0, 3),
)
def test_generated_flap_runs_hold(seed: int, mix: str, grace: float, large_rooms: int) -> None:
    params = SimParams(
        seed=seed,
        faults=mix,
        nodes=3 + seed % 3,
        duration=16.0,
        grace=grace,
        flaps=0.6,
        large_rooms=large_rooms,
    )
    result = Simulation(params.scenario()).run()
    assert result.ok, f"{result.violations[0]}\n  replay: {params.replay_command()}"


# ----------------------------------------------------------------------------- broken trackers


def _clean(seed: int = 1) -> SimParams:
    return _params(seed, "none", nodes=3, duration=30.0)


class _NoGrace(Tracker):
    """Broken: ignores every leave grace period (Phoenix's behaviour)."""

    def configure_topic(self, topic: str, options: TopicOptions) -> None:
        super().configure_topic(topic, attrs.evolve(options, leave_grace_period=0.0))


def _no_grace(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
    return _NoGrace(config=attrs.evolve(config, leave_grace_period=0.0), replica=replica, rng=rng)


def _flap_leave(event: Event) -> bool:
    """A diff that only leaves, flap keys among them: a held leave, delivered."""
    return (
        isinstance(event, PresenceDiff)
        and bool(event.leaves)
        and not event.joins
        and any(entry.key.startswith("flap") for entry in event.leaves)
    )


class _LeaveTwice(Tracker):
    """Broken: delivers every held leave of a flap key twice."""

    _again: Event | None = None

    def next_event(self) -> Event | None:
        again = self._again
        if again is not None:
            self._again = None
            return again
        event = super().next_event()
        if event is not None and _flap_leave(event):
            self._again = event
        return event


class _LeaveLost(Tracker):
    """Broken: never delivers the held leave of a flap key."""

    def next_event(self) -> Event | None:
        event = super().next_event()
        while event is not None and _flap_leave(event):
            event = super().next_event()
        return event


class _BatchLosesJoins(Tracker):
    """Broken: a large room's batches (topic:0) lose their joins."""

    def next_event(self) -> Event | None:
        event = super().next_event()
        if isinstance(event, PresenceDiff) and event.topic == "topic:0" and event.joins:
            return PresenceDiff(topic=event.topic, leaves=event.leaves)
        return event


def _factory(cls: type[Tracker]) -> TrackerFactory:
    def build(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        return cls(config=config, replica=replica, rng=rng)

    return build


def test_the_clean_run_judges_every_kind_of_reconnect() -> None:
    result = Simulation(_clean().scenario(), keep_trace=True).run()
    assert result.ok, result.violations
    reconnects = _reconnects(result)
    assert min(reconnects[k] for k in ("within", "beyond", "handover", "final")) >= 3
    assert result.metrics.flaps_judged > 50


def test_without_the_grace_period_flaps_are_seen() -> None:
    """The same flap workload on trackers with the grace period off: every reconnect within
    the period shows subscribers a leave then a join (``flap_seen``); leaves are still
    delivered, once."""
    scenario = _clean().scenario()
    result = Simulation(scenario, tracker_factory=_no_grace).run()
    assert _kinds(result) == {"flap_seen"}
    assert len(result.violations) > 5
    first = result.violations[0]
    assert "within its grace period" in first.detail
    assert "seed 1" in str(first)


def test_a_held_leave_delivered_twice_is_caught() -> None:
    result = Simulation(_clean().scenario(), tracker_factory=_factory(_LeaveTwice)).run()
    assert _kinds(result) == {"leave_repeated"}
    assert any("do not show" in v.detail for v in result.violations)


def test_a_held_leave_never_delivered_is_caught() -> None:
    result = Simulation(_clean().scenario(), tracker_factory=_factory(_LeaveLost)).run()
    kinds = _kinds(result)
    assert "leave_lost" in kinds
    assert kinds <= {"leave_lost", "diff_replay"}
    details = [v.detail for v in result.violations if v.kind == "leave_lost"]
    assert any("had not reached subscribers" in d for d in details)  # judged on its window
    assert any("at the end of the run" in d for d in details)  # and at the final check


def test_a_lost_leave_is_caught_under_faults() -> None:
    """Under every fault at once the timing checks stand down, but a leave that became final
    must still have reached every subscriber by the end."""
    params = _params(2, "all")
    assert Simulation(params.scenario()).run().ok
    result = Simulation(params.scenario(), tracker_factory=_factory(_LeaveLost)).run()
    assert "leave_lost" in _kinds(result)


class _ListsTheState(Tracker):
    """Broken: lists the replicated state rather than what subscribers were shown (the
    behaviour before the list answered from the room): a key whose leave is held is not
    listed, a join still in a large room's batch already is."""

    def presences(self, topic: str) -> PresenceMap:
        return group(self.state.get_by_topic(topic))


@pytest.mark.parametrize(
    "modes",
    [{"grace": GRACE}, {"large_rooms": 2}],
    ids=["grace", "large-rooms"],
)
def test_a_list_that_is_not_what_subscribers_saw_breaks_diff_replay(modes: dict[str, Any]) -> None:
    params = SimParams(seed=1, faults="none", nodes=3, duration=20.0, **modes)
    assert Simulation(params.scenario()).run().ok
    result = Simulation(params.scenario(), tracker_factory=_factory(_ListsTheState)).run()
    assert _kinds(result) == {"diff_replay"}
    assert any("but list() gives" in v.detail for v in result.violations)


def _holding(factor: float) -> TrackerFactory:
    """Broken: holds every leave ``factor`` times the grace period the scenario sets."""

    def build(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        longer = attrs.evolve(config, leave_grace_period=config.leave_grace_period * factor)
        return Tracker(config=longer, replica=replica, rng=rng)

    return build


def test_a_crashed_presence_held_too_long_breaks_crashed_presence() -> None:
    """A crashed node's presences may stay listed for their grace period (and a large room's
    tick) beyond Bounds.crash; twice the grace period is too long."""
    params = SimParams(seed=3, faults="crash", nodes=4, duration=24.0, grace=GRACE, large_rooms=2)
    assert Simulation(params.scenario()).run().ok
    result = Simulation(params.scenario(), tracker_factory=_holding(2.0)).run()
    assert "crashed_presence" in _kinds(result)
    bounds = params.scenario().bounds()
    crashed = [v.detail for v in result.violations if v.kind == "crashed_presence"]
    assert any(f"still listed after {bounds.crash_of('topic:0'):.3f}s" in d for d in crashed)
    assert any(f"still listed after {bounds.crash_of('topic:5'):.3f}s" in d for d in crashed)


def test_a_leave_still_held_at_the_end_is_lost() -> None:
    params = SimParams(seed=1, faults="none", nodes=3, duration=20.0, grace=GRACE)
    result = Simulation(params.scenario(), tracker_factory=_holding(1000.0)).run()
    assert "leave_lost" in _kinds(result)
    assert any("still held in their grace period" in v.detail for v in result.violations)


def test_a_broken_batch_breaks_diff_replay() -> None:
    result = Simulation(_clean().scenario(), tracker_factory=_factory(_BatchLosesJoins)).run()
    assert "diff_replay" in _kinds(result)
    assert any("'topic:0'" in v.detail for v in result.violations if v.kind == "diff_replay")


# ----------------------------------------------------------------------------- determinism


def test_same_flap_scenario_same_digest() -> None:
    params = _params(5, "all", duration=12.0)
    first = Simulation(params.scenario(), keep_trace=True).run()
    second = Simulation(params.scenario(), keep_trace=True).run()
    assert first.digest == second.digest
    assert first.trace == second.trace
    assert first.metrics == second.metrics
    assert any(" flap leave " in line for line in first.trace)
    assert Simulation(attrs.evolve(params, seed=6).scenario()).run().digest != first.digest
    no_flaps = attrs.evolve(params, flaps=0.0)
    assert Simulation(no_flaps.scenario()).run().digest != first.digest


_DIGEST_SCRIPT = (
    "from presence_adapters.simulation import SimParams, run;"
    "print(run(SimParams(seed=4, nodes=4, duration=12.0, faults='crash', grace=4.0, flaps=0.8,"
    " large_rooms=2)).digest)"
)


def test_flap_digest_is_independent_of_hash_seed() -> None:
    digests = set(stdout_by_hash_seed(_DIGEST_SCRIPT, ("1", "4242")).values())
    params = SimParams(
        seed=4, nodes=4, duration=12.0, faults="crash", grace=4.0, flaps=0.8, large_rooms=2
    )
    assert digests == {Simulation(params.scenario()).run().digest}


def test_new_fields_default_to_phoenix_behaviour() -> None:
    assert SimParams(grace=0.0, flaps=0.0, large_rooms=0) == SimParams()
    scenario = SimParams().scenario()
    assert scenario.topic_options == {}
    assert scenario.config.leave_grace_period == 0
    assert scenario.workload.flaps == 0
    bounds = scenario.bounds()
    assert bounds.grace == 0
    assert bounds.settle == bounds.join + bounds.crash


# ----------------------------------------------------------------------------- the knobs


def test_bounds_per_topic() -> None:
    """A topic's grace period and large-room mode add to how long its presences may take to
    show (a tick in a large room) and may stay listed after their node stopped (the grace
    period, and a tick in a large room with one)."""
    rate = 0.9
    scenario = Scenario(
        nodes=("n0", "n1"),
        config=attrs.evolve(SimParams().scenario().config, leave_grace_period=4.0),
        clock_rates={"n0": rate, "n1": 1.0},
        topic_options={
            "big": TopicOptions(large_room=True),
            "big-quick": TopicOptions(large_room=True, leave_grace_period=0.0),
            "long": TopicOptions(leave_grace_period=8.0),
        },
    )
    bounds = scenario.bounds()
    tick = scenario.config.broadcast_period / rate
    assert bounds.tick == pytest.approx(tick)
    assert bounds.large_rooms == {"big", "big-quick"}
    assert bounds.grace_of("topic:0") == bounds.grace_of("big") == pytest.approx(4.0 / rate)
    assert bounds.grace_of("long") == pytest.approx(8.0 / rate)
    assert bounds.grace_of("big-quick") == 0
    assert bounds.join_of("topic:0") == bounds.join_of("long") == bounds.join
    assert bounds.join_of("big") == bounds.join_of("big-quick") == pytest.approx(bounds.join + tick)
    assert bounds.crash_of("topic:0") == pytest.approx(bounds.crash + 4.0 / rate)
    assert bounds.crash_of("long") == pytest.approx(bounds.crash + 8.0 / rate)
    assert bounds.crash_of("big") == pytest.approx(bounds.crash + 4.0 / rate + tick)
    assert bounds.crash_of("big-quick") == bounds.crash  # its leave goes in the tick's batch
    plain = SimParams().scenario().bounds()
    assert (plain.tick, plain.default_grace, plain.graces) == (0, 0, {})
    assert plain.crash_of("topic:0") == plain.crash
    assert plain.join_of("topic:0") == plain.join


def test_flap_window_and_bounds() -> None:
    base = Scenario(
        nodes=("n0", "n1"),
        config=attrs.evolve(SimParams().scenario().config, leave_grace_period=4.0),
        network=FaultyNetwork(latency_max=0.05),
        clock_rates={"n0": 0.9, "n1": 1.1},
        topic_options={"topic:1": TopicOptions(leave_grace_period=8.0)},
    )
    bounds = base.bounds()
    slack = bounds.flap_slack
    assert slack == pytest.approx(2.25 * 0.5 / 0.9 + 2 * 0.05)
    assert bounds.grace == pytest.approx(8.0 / 0.9)
    assert bounds.settle == pytest.approx(bounds.join + bounds.crash + bounds.grace + slack)
    within, beyond = base.flap_window("topic:0")
    assert within == pytest.approx(4.0 / 1.1 - slack)
    assert beyond == pytest.approx(4.0 / 0.9 + slack)
    assert base.flap_window("topic:1")[0] > within
    assert base.grace_of("topic:1") == 8.0
    assert base.grace_of("topic:9") == 4.0


def test_invalid_flap_settings() -> None:
    with pytest.raises(ValueError, match="flaps must be from 0"):
        Workload(flaps=-1.0)
    with pytest.raises(ValueError, match="handover must be a share"):
        Workload(handover=1.5)
    with pytest.raises(ValueError, match="flap_cycles must be an int"):
        Workload(flap_cycles=0)
    with pytest.raises(ValueError, match="needs a workload topic whose leave grace period"):
        Scenario(nodes=("n0",), workload=Workload(flaps=1.0))
    short = TrackerConfig(broadcast_period=0.5, leave_grace_period=1.0)
    with pytest.raises(ValueError, match="needs a workload topic"):
        Scenario(nodes=("n0",), config=short, workload=Workload(flaps=1.0))
    with pytest.raises(ValueError, match="flaps need a leave grace period"):
        SimParams(flaps=1.0)
    with pytest.raises(ValueError, match="grace must be"):
        SimParams(grace=-1.0)
    with pytest.raises(ValueError, match="large_rooms must be an int"):
        SimParams(large_rooms=-1)
    with pytest.raises(TypeError, match="must be a TopicOptions"):
        Scenario(nodes=("n0",), topic_options={"t": "large"})  # type: ignore[dict-item]


def test_flap_params_replay() -> None:
    params = SimParams(seed=3, grace=4.0, flaps=0.5, large_rooms=2)
    assert params.cli_args() == [
        "--seed",
        "3",
        "--grace",
        "4.0",
        "--flaps",
        "0.5",
        "--large-rooms",
        "2",
    ]
    scenario = params.scenario()
    assert scenario.config.leave_grace_period == 4.0
    assert scenario.large_rooms() == {"topic:0", "topic:1"}
    assert scenario.workload.flaps == 0.5
