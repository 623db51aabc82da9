"""Small contracts at the edges of the core API: refusals, reprs, bounded memories."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import drain, make_tracker
from presence_core import (
    Delta,
    DeltaGenerations,
    GracefulPermdown,
    Heartbeat,
    InvalidArgument,
    LocalProtocolError,
    Outbound,
    PresenceError,
    RefGenerator,
    ReplicaInfo,
    ReplicaRef,
    ReplicaState,
    ReplicaStatus,
    Tracker,
    TrackerConfig,
    _tracker,
    encode_message,
)

A = ReplicaRef("a", 1)
NOT_A_DELTA: Any = "delta"


def test_presence_error_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        PresenceError("boom")


def test_generations_refuse_what_is_not_a_delta() -> None:
    with pytest.raises(InvalidArgument, match="Delta instances"):
        DeltaGenerations((1,), [NOT_A_DELTA])


def test_the_first_push_needs_the_pending_delta() -> None:
    state = ReplicaState(A)
    state.join("c", "t", "k", {})
    with pytest.raises(InvalidArgument, match="pending delta"):
        DeltaGenerations((10,)).push(state.take_delta())


def test_outbound_says_whether_it_is_a_broadcast() -> None:
    message = GracefulPermdown(sender=A)
    data = encode_message(message)
    assert Outbound(message=message, data=data).is_broadcast
    assert not Outbound(message=message, data=data, to="b").is_broadcast


def test_lists_nested_too_deep_are_refused() -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(LocalProtocolError, match="deeper"):
        ReplicaState(A).join("c", "t", "k", {"x": deep})


def test_ref_generator_counts_and_peeks_without_advancing() -> None:
    refs = RefGenerator(A)
    assert refs.count == 0
    assert refs.peek() == refs.peek()
    first = refs.advance()
    assert refs.count == 1
    assert refs.advance() != first
    assert len(first) >= 16


def test_delta_refuses_a_context_key_that_is_not_a_replica() -> None:
    with pytest.raises(InvalidArgument, match="start keys"):
        Delta(replica=A, values={}, clouds={}, start={NOT_A_DELTA: 0}, end={})


def test_reprs_name_the_replica() -> None:
    state = ReplicaState(A)
    state.join("c", "t", "k", {})
    assert repr(state) == "<ReplicaState ReplicaRef('a', 1) clock=1 entries=1>"
    tracker = make_tracker("a")
    assert repr(tracker) == "<Tracker ReplicaRef('a', 1) presences=0 peers=0>"


def test_replica_info_compares_by_value_only_with_its_kind() -> None:
    info = ReplicaInfo(A, 1.0, ReplicaStatus.UP)
    assert info == ReplicaInfo(A, 1.0, ReplicaStatus.UP)
    assert info != ReplicaInfo(A, 2.0, ReplicaStatus.UP)
    assert info != (A, 1.0, ReplicaStatus.UP)


@pytest.mark.parametrize(
    "arguments",
    [
        {"config": "config"},
        {"replica": ("a", 1)},
        {"rng": 42},
    ],
    ids=repr,
)
def test_tracker_refuses_wrong_argument_types(arguments: dict[str, Any]) -> None:
    import random

    call: dict[str, Any] = {
        "config": TrackerConfig(),
        "replica": A,
        "rng": random.Random(0),
        **arguments,
    }
    with pytest.raises(LocalProtocolError):
        Tracker(**call)


def test_retired_incarnations_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_tracker, "_RETIRED_MEMORY", 2)
    tracker = make_tracker("a")
    tracker.handle_timer(now=0.0)
    peers = [ReplicaRef(f"p{i}", 1) for i in range(3)]
    for i, peer in enumerate(peers):
        tracker.receive(Heartbeat(sender=peer, clock={peer: 0}), now=0.1 + i)
        tracker.receive(GracefulPermdown(sender=peer), now=0.2 + i)
    drain(tracker)
    # The oldest departure was forgotten: its late heartbeat is a new replica again.
    tracker.receive(Heartbeat(sender=peers[0], clock={peers[0]: 0}), now=5.0)
    tracker.receive(Heartbeat(sender=peers[2], clock={peers[2]: 0}), now=5.0)
    assert sorted(tracker.replicas()) == ["p0"]


WRONG: Any = ["not", "a", "str"]


@pytest.mark.parametrize(
    "query",
    [
        lambda s: s.get_by_topic(WRONG),
        lambda s: s.count(WRONG),
        lambda s: s.get_by_key("t", WRONG),
        lambda s: s.get_by_key(WRONG, "k"),
        lambda s: s.get_by_conn(WRONG),
        lambda s: s.get_by_conn("c", owner=WRONG),
        lambda s: s.get("c", "t", WRONG),
        lambda s: s.get("c", "t", "k", owner=WRONG),
    ],
)
def test_queries_refuse_wrong_types(query: Any) -> None:
    state = ReplicaState(A)
    state.join("c", "t", "k", {})
    with pytest.raises(LocalProtocolError):
        query(state)


def test_tracker_queries_refuse_wrong_types() -> None:
    tracker = make_tracker("a")
    for query in (tracker.presences, tracker.count):
        with pytest.raises(LocalProtocolError):
            query(WRONG)
    with pytest.raises(LocalProtocolError):
        tracker.get_by_key("t", WRONG)


class Seconds(float):
    """A float subclass, as numpy.float64 is."""


def test_time_may_be_a_float_subclass() -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=Seconds(1.5))
    assert tracker.next_deadline() is not None
    with pytest.raises(LocalProtocolError):
        tracker.handle_timer(now=True)
