"""Replica liveness and the tracker's options: SPEC §3.6, §2.1, and §7.4/§7.5 rewritten.

* the liveness table, exhaustively: every ``ReplicaStatus`` x every ``LivenessInput``; legal pairs
  give the table's result, illegal ones raise ``LocalProtocolError`` naming both (h2's
  ``test_state_machines.py`` style), checked once with Hypothesis and once with a plain loop
  against the exact set of legal pairs written out here from the SPEC;
* ``replica_test.exs`` (§7.4) through the Tracker: a heartbeat creates or refreshes an UP record,
  silence longer than ``down_period`` marks it DOWN (kept), longer than ``permdown_period``
  removes it; the comparisons are strict;
* ``shard_test.exs`` (§7.5) and §2.1: ``TrackerConfig`` defaults are Phoenix's, the two Phoenix
  error messages, and wrong types.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import drain, make_tracker, summarize
from presence_core import (
    TRANSITIONS,
    ConfigurationError,
    Heartbeat,
    LivenessAction,
    LivenessInput,
    LocalProtocolError,
    ReplicaRef,
    ReplicaStatus,
    Tracker,
    TrackerConfig,
)
from presence_core._liveness import transition

S = ReplicaStatus
I = LivenessInput  # noqa: E741
A = LivenessAction

# Written from SPEC §3.6, independently of the table in the code.
EXPECTED: dict[
    tuple[ReplicaStatus, LivenessInput], tuple[ReplicaStatus, tuple[LivenessAction, ...]]
]
EXPECTED = {
    # first heartbeat of a replica: up (and join its retained entries, normally none)
    (S.UNKNOWN, I.HEARTBEAT): (S.UP, (A.UP,)),
    # same vsn, up: refresh only
    (S.UP, I.HEARTBEAT): (S.UP, ()),
    (S.UP, I.SILENCE_DOWN_PERIOD): (S.DOWN, (A.DOWN,)),
    # silent past permdown while up: down first, then permdown
    (S.UP, I.SILENCE_PERMDOWN_PERIOD): (S.UNKNOWN, (A.DOWN, A.PERMDOWN)),
    # different vsn, old up: down(old) then permdown(old); the new one then gets a HEARTBEAT
    (S.UP, I.NEW_INCARNATION): (S.UNKNOWN, (A.DOWN, A.PERMDOWN)),
    (S.UP, I.GRACEFUL_PERMDOWN): (S.UNKNOWN, (A.DOWN, A.PERMDOWN)),
    # netsplit heal
    (S.DOWN, I.HEARTBEAT): (S.UP, (A.UP,)),
    # repeated ticks while down emit nothing
    (S.DOWN, I.SILENCE_DOWN_PERIOD): (S.DOWN, ()),
    (S.DOWN, I.SILENCE_PERMDOWN_PERIOD): (S.UNKNOWN, (A.PERMDOWN,)),
    (S.DOWN, I.NEW_INCARNATION): (S.UNKNOWN, (A.PERMDOWN,)),
    (S.DOWN, I.GRACEFUL_PERMDOWN): (S.UNKNOWN, (A.PERMDOWN,)),
}

LEGAL = {
    (S.UNKNOWN, I.HEARTBEAT),
    (S.UP, I.HEARTBEAT),
    (S.UP, I.SILENCE_DOWN_PERIOD),
    (S.UP, I.SILENCE_PERMDOWN_PERIOD),
    (S.UP, I.NEW_INCARNATION),
    (S.UP, I.GRACEFUL_PERMDOWN),
    (S.DOWN, I.HEARTBEAT),
    (S.DOWN, I.SILENCE_DOWN_PERIOD),
    (S.DOWN, I.SILENCE_PERMDOWN_PERIOD),
    (S.DOWN, I.NEW_INCARNATION),
    (S.DOWN, I.GRACEFUL_PERMDOWN),
}


# ---------------------------------------------------------------------------- the table


def test_the_enums_are_the_specified_ones() -> None:
    assert [s.name for s in ReplicaStatus] == ["UNKNOWN", "UP", "DOWN"]
    assert [i.name for i in LivenessInput] == [
        "HEARTBEAT",
        "SILENCE_DOWN_PERIOD",
        "SILENCE_PERMDOWN_PERIOD",
        "NEW_INCARNATION",
        "GRACEFUL_PERMDOWN",
    ]
    assert [a.name for a in LivenessAction] == ["UP", "DOWN", "PERMDOWN"]


@given(st.sampled_from(ReplicaStatus), st.sampled_from(LivenessInput))
def test_every_pair_is_legal_with_the_table_result_or_refused(
    status: ReplicaStatus, event: LivenessInput
) -> None:
    if (status, event) in LEGAL:
        assert transition(status, event) == EXPECTED[(status, event)]
        assert TRANSITIONS[(status, event)] == EXPECTED[(status, event)]
    else:
        with pytest.raises(LocalProtocolError) as info:
            transition(status, event)
        assert status.name in str(info.value)
        assert event.name in str(info.value)
        assert (status, event) not in TRANSITIONS


def test_the_legal_pairs_are_exactly_these() -> None:
    legal: set[tuple[ReplicaStatus, LivenessInput]] = set()
    illegal: set[tuple[ReplicaStatus, LivenessInput]] = set()
    for status in ReplicaStatus:
        for event in LivenessInput:
            if (status, event) in TRANSITIONS:
                assert transition(status, event) == EXPECTED[(status, event)]
                legal.add((status, event))
                continue
            with pytest.raises(LocalProtocolError) as info:
                transition(status, event)
            assert str(info.value) == (
                f"no liveness transition for input {event.name} in state {status.name}"
            )
            illegal.add((status, event))
    assert legal == LEGAL
    assert set(TRANSITIONS) == LEGAL
    assert illegal == {
        (S.UNKNOWN, I.SILENCE_DOWN_PERIOD),
        (S.UNKNOWN, I.SILENCE_PERMDOWN_PERIOD),
        (S.UNKNOWN, I.NEW_INCARNATION),
        (S.UNKNOWN, I.GRACEFUL_PERMDOWN),
    }
    assert len(legal) + len(illegal) == len(ReplicaStatus) * len(LivenessInput)


def test_the_new_status_agrees_with_the_last_action() -> None:
    expected_status = {A.UP: S.UP, A.DOWN: S.DOWN, A.PERMDOWN: S.UNKNOWN}
    for (status, _), (new_status, actions) in TRANSITIONS.items():
        if actions:
            assert new_status is expected_status[actions[-1]]
            assert len(set(actions)) == len(actions)
            # PERMDOWN always comes last; a replica that was up goes down before it
            if A.PERMDOWN in actions:
                assert actions[-1] is A.PERMDOWN
                assert (A.DOWN in actions) == (status is S.UP)
        else:
            assert new_status is status


# ---------------------------------------------------------------- replica_test.exs (§7.4)

B1 = ReplicaRef("b", 1)
B2 = ReplicaRef("b", 2)


def record(tracker: Tracker, name: str = "b") -> tuple[ReplicaRef, ReplicaStatus, float] | None:
    info = tracker.replicas().get(name)
    return None if info is None else (info.ref, info.status, info.last_heard)


def test_replica_refs_are_name_and_incarnation() -> None:
    assert (B1.name, B1.vsn) == ("b", 1)
    assert ReplicaRef("b", 1) == B1
    assert B1 != B2
    assert B1 < B2 < ReplicaRef("c", 0)
    assert repr(B1) == "ReplicaRef('b', 1)"


def test_a_heartbeat_creates_then_refreshes_an_up_record() -> None:
    tracker = make_tracker("a", down_period=0.5, permdown_period=1.0)
    assert record(tracker) is None
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.0)
    assert record(tracker) == (B1, S.UP, 0.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.3)
    assert record(tracker) == (B1, S.UP, 0.3)
    assert summarize(drain(tracker)) == [("up", "b", 1)]


def test_detect_down_and_permdown_with_strict_comparisons() -> None:
    tracker = make_tracker("a", down_period=0.5, permdown_period=1.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.0)
    drain(tracker)
    tracker.handle_timer(now=0.0)
    tracker.handle_timer(now=0.5)  # silent for exactly down_period: unchanged
    assert record(tracker) == (B1, S.UP, 0.0)
    tracker.handle_timer(now=0.6)
    assert record(tracker) == (B1, S.DOWN, 0.0)  # kept in the map
    assert summarize(drain(tracker)) == [("down", "b", 1)]
    tracker.handle_timer(now=1.0)  # exactly permdown_period: still down, nothing new
    assert record(tracker) == (B1, S.DOWN, 0.0)
    assert drain(tracker) == []
    tracker.handle_timer(now=1.1)
    assert record(tracker) is None  # removed from the map
    assert summarize(drain(tracker)) == [("permdown", "b", 1)]


def test_a_heartbeat_while_down_brings_the_replica_back_up() -> None:
    tracker = make_tracker("a", down_period=0.5, permdown_period=1.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.0)
    tracker.handle_timer(now=0.6)
    assert record(tracker) == (B1, S.DOWN, 0.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.7)
    assert record(tracker) == (B1, S.UP, 0.7)
    tracker.handle_timer(now=1.1)  # measured from the new heartbeat: not down
    assert record(tracker) == (B1, S.UP, 0.7)
    assert summarize(drain(tracker)) == [("up", "b", 1), ("down", "b", 1), ("up", "b", 1)]


@pytest.mark.parametrize("down_first", [False, True], ids=["old-up", "old-down"])
def test_a_new_incarnation_retires_the_old_one(down_first: bool) -> None:
    tracker = make_tracker("a", down_period=0.5, permdown_period=1.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.0)
    if down_first:
        tracker.handle_timer(now=0.6)
    drain(tracker)
    tracker.receive(Heartbeat(sender=B2, clock={B2: 0}), now=0.7)
    assert record(tracker) == (B2, S.UP, 0.7)
    expected = [("permdown", "b", 1), ("up", "b", 2)]
    assert summarize(drain(tracker)) == (expected if down_first else [("down", "b", 1), *expected])


def test_a_permdowned_replica_heard_again_is_a_new_replica() -> None:
    tracker = make_tracker("a", down_period=0.5, permdown_period=1.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=0.0)
    tracker.handle_timer(now=1.1)
    assert record(tracker) is None
    tracker.receive(Heartbeat(sender=B1, clock={B1: 3}), now=1.2)
    assert record(tracker) == (B1, S.UP, 1.2)
    assert tracker.state.context[B1] == 0  # back at clock 0: its entries come by transfer
    assert summarize(drain(tracker)) == [
        ("up", "b", 1),
        ("down", "b", 1),
        ("permdown", "b", 1),
        ("up", "b", 1),
    ]


# ---------------------------------------------------------------- TrackerConfig (§2.1, §7.5)


def test_defaults_are_phoenix_defaults() -> None:
    config = TrackerConfig()
    assert config.broadcast_period == 1.5
    assert config.max_silent_periods == 10
    assert config.down_period is None
    assert config.effective_down_period == 30.0
    assert config.permdown_period == 1200.0
    assert config.clock_sample_periods == 2
    assert config.max_delta_sizes == (100, 1000, 10000)


def test_the_down_period_is_derived_unless_given() -> None:
    assert TrackerConfig(broadcast_period=0.1, max_silent_periods=2).effective_down_period == 0.4
    assert TrackerConfig(broadcast_period=1.0, max_silent_periods=3).effective_down_period == 6.0
    given_down = TrackerConfig(down_period=45)
    assert given_down.effective_down_period == 45.0
    assert type(given_down.effective_down_period) is float


def test_max_delta_sizes_accepts_any_iterable_of_ints() -> None:
    assert TrackerConfig(max_delta_sizes=[1, 2]).max_delta_sizes == (1, 2)
    assert TrackerConfig(max_delta_sizes=iter([5])).max_delta_sizes == (5,)


DOWN_MESSAGE = "down_period must be at least twice as large as the broadcast_period"
PERMDOWN_MESSAGE = "permdown_period must be at least larger than the down_period"


def test_down_period_below_twice_the_broadcast_period_is_refused() -> None:
    # shard_test.exs: down_period 1 ms with the default 1500 ms broadcast period
    with pytest.raises(ConfigurationError) as info:
        TrackerConfig(down_period=0.001)
    assert str(info.value) == DOWN_MESSAGE
    with pytest.raises(ConfigurationError, match=DOWN_MESSAGE):
        TrackerConfig(broadcast_period=1.0, down_period=1.999)
    assert TrackerConfig(broadcast_period=1.0, down_period=2.0).effective_down_period == 2.0


def test_permdown_period_not_above_down_period_is_refused() -> None:
    # shard_test.exs: permdown 120 s with down 1200 s
    with pytest.raises(ConfigurationError) as info:
        TrackerConfig(permdown_period=120.0, down_period=1200.0)
    assert str(info.value) == PERMDOWN_MESSAGE
    with pytest.raises(ConfigurationError, match=PERMDOWN_MESSAGE):
        TrackerConfig(permdown_period=30.0)  # equal to the derived down period
    # a derived down period above the permdown period trips the same rule
    with pytest.raises(ConfigurationError, match=PERMDOWN_MESSAGE):
        TrackerConfig(broadcast_period=100.0)
    assert TrackerConfig(permdown_period=30.5).permdown_period == 30.5


def test_configuration_errors_are_value_errors_and_local_protocol_errors() -> None:
    with pytest.raises(ValueError, match=DOWN_MESSAGE):
        TrackerConfig(down_period=0.001)
    with pytest.raises(LocalProtocolError, match=DOWN_MESSAGE):
        TrackerConfig(down_period=0.001)


BAD_OPTIONS: list[dict[str, Any]] = [
    {"broadcast_period": "1.5"},
    {"broadcast_period": None},
    {"broadcast_period": True},
    {"broadcast_period": 0},
    {"broadcast_period": -1.0},
    {"broadcast_period": math.nan},
    {"broadcast_period": math.inf},
    {"max_silent_periods": 1.5},
    {"max_silent_periods": 0},
    {"max_silent_periods": True},
    {"max_silent_periods": "10"},
    {"down_period": "30"},
    {"down_period": False},
    {"down_period": -30.0},
    {"down_period": math.inf},
    {"permdown_period": None},
    {"permdown_period": "1200"},
    {"permdown_period": math.nan},
    {"clock_sample_periods": 0},
    {"clock_sample_periods": 2.0},
    {"max_delta_sizes": ()},
    {"max_delta_sizes": (100, 0)},
    {"max_delta_sizes": (100, 1.5)},
    {"max_delta_sizes": (True,)},
    {"max_delta_sizes": "abc"},
    {"max_delta_sizes": 5},
    {"max_delta_sizes": None},
    {"max_meta_bytes": 0},
    {"max_meta_bytes": 1.0},
    {"max_message_bytes": -1},
    {"max_message_bytes": None},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=repr)
def test_wrong_types_and_ranges_are_configuration_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        TrackerConfig(**options)
    (name,) = options
    assert name in str(info.value)


def test_unknown_options_are_refused() -> None:
    with pytest.raises(TypeError):
        TrackerConfig(pool_size=2)  # type: ignore[call-arg]


def test_the_config_is_frozen() -> None:
    config = TrackerConfig()
    with pytest.raises(AttributeError):
        config.broadcast_period = 0.1  # type: ignore[misc]
