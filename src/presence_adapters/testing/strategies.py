"""Hypothesis strategies for the simulator: generate, and shrink, whole cluster schedules.

Use them in your own tests to search for a schedule that breaks your code, and let Hypothesis
shrink a failure to a small one (fewer faults, fewer nodes, a shorter run)::

    from hypothesis import given, settings
    from presence_adapters.simulation import Simulation
    from presence_adapters.testing.strategies import scenarios

    @settings(max_examples=50, deadline=None)
    @given(scenarios(max_nodes=4))
    def test_presence_survives_anything(scenario):
        result = Simulation(scenario).run()
        assert result.ok, result.violations[0]

Needs Hypothesis, which the ``test`` extra installs (``pip install 'presence-core[test]'``):
without it, importing this module raises :exc:`ModuleNotFoundError` saying so. Neither
:mod:`presence_adapters.simulation` nor the rest of :mod:`presence_adapters.testing` needs it.
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as _exc:
    if _exc.name is None or _exc.name.partition(".")[0] != "hypothesis":
        raise  # Hypothesis is there, and something it imports is not: its own error says what
    raise ModuleNotFoundError(
        "presence_adapters.testing.strategies needs Hypothesis, which the 'test' extra installs: "
        "pip install 'presence-core[test]'",
        name=_exc.name,
    ) from _exc

import attrs

from presence_adapters.simulation import (
    FAULT_MIXES,
    SIM_CONFIG,
    Fault,
    FaultyNetwork,
    Scenario,
    SimParams,
    Workload,
)
from presence_core import TopicOptions

__all__ = [
    "fault_schedules",
    "network_models",
    "scenarios",
    "sim_params",
    "topic_options",
    "workloads",
]

_GRACE_PERIODS = (0.0, 1.0, 5.0)
"""Leave grace periods drawn, in seconds: none, one too short for a flap workload with the
simulator's config, and one long enough (see :meth:`Scenario.flap_window
<presence_adapters.simulation.Scenario.flap_window>`)."""

_FLAP_RATES = (0.0, 0.3, 1.0)
"""Flap episodes per virtual second drawn, where a topic's grace period allows them."""


def network_models(*, max_loss: float = 0.1) -> st.SearchStrategy[FaultyNetwork]:
    """Stock networks: latency up to 0.1 s, loss up to ``max_loss``, duplication, reordering.

    Shrinks towards a perfect 1 ms network.
    """
    probability = st.sampled_from([0.0, 0.01, 0.05, 0.1])
    return st.builds(
        lambda low, spread, loss, dup, reorder: FaultyNetwork(
            latency_min=low,
            latency_max=low + spread,
            loss=min(loss, max_loss),
            duplicate=dup,
            reorder=reorder,
        ),
        st.sampled_from([0.001, 0.005, 0.02]),
        st.sampled_from([0.0, 0.01, 0.05, 0.1]),
        probability,
        probability,
        probability,
    )


def workloads() -> st.SearchStrategy[Workload]:
    """Client workloads: rates, topic counts, keys and connections per key. Shrinks to a small,
    slow one."""
    return st.builds(
        Workload,
        rate=st.sampled_from([0.5, 2.0, 4.0, 10.0]),
        topics=st.integers(1, 10),
        hot_topics=st.integers(0, 2),
        keys=st.integers(1, 20),
        conns_per_key=st.integers(1, 3),
    )


@st.composite
def fault_schedules(draw: st.DrawFn, nodes: tuple[str, ...], duration: float) -> tuple[Fault, ...]:
    """A list of faults over ``nodes`` within ``[0, duration]``; shrinks towards no faults.

    Every kind appears: symmetric and one-way partitions, heals, crashes, graceful shutdowns,
    restarts, pauses and resumes. Faults that do not apply when they fire (restarting a running
    node, resuming one that is not paused) are skipped by the simulation, so any list is valid.
    """
    kinds = ["partition", "heal", "crash", "restart", "shutdown", "pause", "resume"]
    count = draw(st.integers(0, 8))
    faults = []
    for _ in range(count):
        kind = draw(st.sampled_from(kinds))
        at = draw(st.floats(0.0, duration, allow_nan=False, allow_infinity=False))
        at = round(at, 3)
        if kind == "partition":
            if len(nodes) < 2:
                continue
            side = draw(st.lists(st.sampled_from(nodes), min_size=1, unique=True))
            others = [n for n in nodes if n not in side]
            if not others:
                continue
            one_way = draw(st.booleans())
            faults.append(
                Fault(at=at, kind="partition", nodes=sorted(side), others=others, one_way=one_way)
            )
        elif kind == "heal":
            faults.append(Fault(at=at, kind="heal"))
        else:
            node = draw(st.sampled_from(nodes))
            faults.append(Fault(at=at, kind=kind, nodes=(node,)))  # type: ignore[arg-type]
    return tuple(sorted(faults, key=lambda f: f.at))


@st.composite
def topic_options(draw: st.DrawFn, topics: int) -> dict[str, TopicOptions]:
    """Per-topic :class:`~presence_core.TopicOptions` for up to three of the workload's
    ``topics`` (``topic:0``, ``topic:1``...): a leave grace period (the tracker's, none, short
    or long) and large-room mode. Shrinks towards no options at all."""
    chosen = draw(st.lists(st.integers(0, topics - 1), unique=True, max_size=min(topics, 3)))
    options = st.builds(
        TopicOptions,
        leave_grace_period=st.sampled_from([None, *_GRACE_PERIODS]),
        large_room=st.booleans(),
    )
    return {f"topic:{index}": draw(options) for index in sorted(chosen)}


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    min_nodes: int = 1,
    max_nodes: int = 5,
    max_duration: float = 40.0,
    networks: st.SearchStrategy[FaultyNetwork] | None = None,
    skew: bool = True,
    modes: bool = True,
) -> Scenario:
    """Whole scenarios: nodes, seed, network, workload, fault schedule and clock rates, and
    (``modes``) the topic modes beyond Phoenix: a leave grace period for every topic, per-topic
    options (:func:`topic_options`), and flap episodes when a topic's grace period is long
    enough for them (:meth:`Scenario.flap_topics
    <presence_adapters.simulation.Scenario.flap_topics>`).

    Shrinks towards one node, a short run, a perfect network, no faults, true clocks and
    Phoenix's behaviour (no grace period, no options, no flaps), with the seed shrinking
    towards 0.
    """
    count = draw(st.integers(min_nodes, max_nodes))
    names = tuple(f"n{i}" for i in range(count))
    duration = draw(st.sampled_from([5.0, 10.0, 20.0, max_duration]))
    duration = min(duration, max_duration)
    rates: dict[str, float] = {}
    if skew and draw(st.booleans()):
        rates = {name: draw(st.sampled_from([1.0, 0.95, 1.05, 0.9, 1.1])) for name in names}
    workload = draw(workloads())
    config = SIM_CONFIG
    options: dict[str, TopicOptions] = {}
    if modes:
        grace = draw(st.sampled_from(_GRACE_PERIODS))
        config = attrs.evolve(SIM_CONFIG, leave_grace_period=grace)
        options = draw(topic_options(workload.topics))
    scenario = Scenario(
        nodes=names,
        seed=draw(st.integers(0, 2**32 - 1)),
        duration=duration,
        config=config,
        network=draw(networks if networks is not None else network_models()),
        workload=workload,
        faults=draw(fault_schedules(names, duration)),
        clock_rates=rates,
        topic_options=options,
    )
    if modes and scenario.flap_topics():
        flaps = draw(st.sampled_from(_FLAP_RATES))
        if flaps:
            flapping = attrs.evolve(
                workload,
                flaps=flaps,
                flap_beyond=draw(st.sampled_from([0.3, 0.0, 1.0])),
                handover=draw(st.sampled_from([0.3, 0.0, 1.0])),
                flap_cycles=draw(st.integers(1, 3)),
            )
            scenario = attrs.evolve(scenario, workload=flapping)
    return scenario


@st.composite
def sim_params(
    draw: st.DrawFn,
    *,
    mixes: list[str] | None = None,
    max_nodes: int = 6,
    max_duration: float = 40.0,
    modes: bool = True,
) -> SimParams:
    """:class:`SimParams` (what ``presence simulate`` takes): replay a failure with its
    ``replay_command()``. With ``modes``, also a leave grace period (``--grace``), large rooms
    (``--large-rooms``) and, when the grace period allows them, flaps (``--flaps``); shrinks
    towards none of them."""
    params = SimParams(
        seed=draw(st.integers(0, 2**32 - 1)),
        nodes=draw(st.integers(1, max_nodes)),
        duration=draw(st.sampled_from([10.0, 20.0, max_duration])),
        faults=draw(st.sampled_from(mixes if mixes is not None else sorted(FAULT_MIXES))),
    )
    if not modes:
        return params
    grace = draw(st.sampled_from(_GRACE_PERIODS))
    params = attrs.evolve(params, grace=grace, large_rooms=draw(st.integers(0, 3)))
    if grace and params.scenario().flap_topics():
        params = attrs.evolve(params, flaps=draw(st.sampled_from(_FLAP_RATES)))
    return params
