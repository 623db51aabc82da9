"""Every error a caller can cause is a PresenceError, and the call changed nothing.

Arguments that used to escape as a bare OverflowError, ValueError, UnicodeEncodeError, TypeError
or AttributeError from inside the core: times too large for a float, ints too long for JSON,
replica identities no message could carry, malformed fields of the value classes. Each is now the
named :class:`~presence_core.PresenceError` subclass; the value classes raise
:class:`~presence_core.InvalidArgument`, which is also a ``ValueError`` and a ``TypeError`` (what
they raised before), so old handlers still catch it.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import drain, make_config, make_tracker, observe
from presence_core import (
    ConfigurationError,
    Delta,
    DeltaGenerations,
    Entry,
    GracefulPermdown,
    Heartbeat,
    InvalidArgument,
    LocalProtocolError,
    PresenceError,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    SnapshotPart,
    Tracker,
    TrackerConfig,
    TransferAck,
    TransferRequest,
    decode_message,
    encode_message,
    presence_diff_payload,
)

A1 = ReplicaRef("a", 1)
B1 = ReplicaRef("b", 1)
# Arguments of the wrong type, past mypy.
ANY: Any = None
ANY_LIST: Any = [Entry("t", "k", "c", {}, A1, 1)]
ANY_INT: Any = 3
ANY_NESTED: Any = [[1]]
ANY_TRIPLE: Any = [0, 1, 2]
ANY_PAIR: Any = [0, 2]


def _raises_exactly(error: type[PresenceError], call: Callable[[], object], match: str) -> None:
    with pytest.raises(error, match=match) as info:
        call()
    assert type(info.value) is error


def _busy_tracker() -> Tracker:
    """A tracker with a presence, a known peer and a running clock; its queues drained."""
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={"n": 1}, now=1.0)
    tracker.receive(Heartbeat(sender=B1, clock={B1: 0}), now=1.0)
    drain(tracker)
    tracker.messages_to_send()
    return tracker


def _unchanged(tracker: Tracker, before: dict[str, Any]) -> None:
    assert observe(tracker) == before
    assert drain(tracker) == []
    assert tracker.messages_to_send() == []
    tracker.handle_timer(now=1.0)  # the clock did not move: the last good time still works


# ----------------------------------------------------------------------------- time


def _timed_calls(tracker: Tracker, now: Any) -> list[Callable[[], object]]:
    message = encode_message(Heartbeat(sender=B1, clock={B1: 0}))
    return [
        lambda: tracker.track(conn="c2", topic="lobby", key="u2", meta={}, now=now),
        lambda: tracker.update(conn="c1", topic="lobby", key="u1", meta={}, now=now),
        lambda: tracker.untrack(conn="c1", topic="lobby", key="u1", now=now),
        lambda: tracker.untrack_conn(conn="c1", now=now),
        lambda: tracker.receive(message, now=now),
        lambda: tracker.handle_timer(now=now),
        lambda: tracker.graceful_permdown(now=now),
    ]


@pytest.mark.parametrize("now", [10**400, -(10**400), 10**5000], ids=["1e400", "-1e400", "1e5000"])
def test_a_time_too_large_for_a_float_is_refused(now: int) -> None:
    # Before: OverflowError (int too large to convert to float), or ValueError from its repr.
    tracker = _busy_tracker()
    before = observe(tracker)
    for call in _timed_calls(tracker, now):
        _raises_exactly(LocalProtocolError, call, "now must be a finite number of seconds")
    _unchanged(tracker, before)


def test_a_time_too_large_is_described_by_its_size() -> None:
    with pytest.raises(LocalProtocolError) as info:
        make_tracker("a").handle_timer(now=10**5000)
    assert str(info.value) == "now must be a finite number of seconds, not an int of 16610 bits"


def test_a_large_int_time_that_fits_a_float_is_a_time() -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=10**300)
    assert tracker.next_deadline() is not None


# ----------------------------------------------------------------------------- metas


@pytest.fixture
def digit_limit() -> Iterator[int]:
    """Python's default limit on int-to-str conversion (4300 digits), whatever the environment
    set (``PYTHONINTMAXSTRDIGITS``)."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    try:
        yield 4300
    finally:
        sys.set_int_max_str_digits(old)


@pytest.mark.parametrize("where", ["top", "nested", "list"])
def test_an_int_too_long_for_json_in_a_meta_is_refused(digit_limit: int, where: str) -> None:
    # Before: ValueError ("Exceeds the limit (4300 digits) for integer string conversion").
    huge = 10**digit_limit  # one digit over the limit
    meta: dict[str, Any] = {
        "top": {"n": huge},
        "nested": {"a": {"b": huge}},
        "list": {"l": [1, huge]},
    }[where]
    tracker = _busy_tracker()
    before = observe(tracker)
    for call in (
        lambda: tracker.track(conn="c2", topic="lobby", key="u2", meta=meta, now=2.0),
        lambda: tracker.update(conn="c1", topic="lobby", key="u1", meta=meta, now=2.0),
        lambda: tracker.update(conn="c1", topic="lobby", key="u1", meta=lambda _: meta, now=2.0),
    ):
        _raises_exactly(LocalProtocolError, call, "meta cannot be written as JSON")
    _unchanged(tracker, before)


def test_an_int_just_within_the_digit_limit_is_a_meta(digit_limit: int) -> None:
    tracker = make_tracker("a")
    big = 10 ** (digit_limit - 1)  # exactly digit_limit digits
    tracker.track(conn="c1", topic="lobby", key="u1", meta={"n": big}, now=1.0)
    assert tracker.list("lobby")["u1"]["metas"][0]["n"] == big


# ----------------------------------------------------------------------------- identities


def _tracker_of(replica: ReplicaRef) -> Tracker:
    return Tracker(config=make_config(), replica=replica, rng=random.Random(0))


@pytest.mark.parametrize("name", ["a\ud800", "\udfff", "node-\udc80-1"], ids=ascii)
def test_a_replica_name_no_message_can_carry_is_refused(name: str) -> None:
    # Before: UnicodeEncodeError from Tracker(...); ReplicaState(...) accepted it.
    ref = ReplicaRef(name, 1)
    _raises_exactly(LocalProtocolError, lambda: _tracker_of(ref), "not valid Unicode")
    _raises_exactly(LocalProtocolError, lambda: ReplicaState(ref), "not valid Unicode")


def test_a_non_ascii_replica_name_is_fine() -> None:
    ref = ReplicaRef("nœud-东", 1)
    tracker = _tracker_of(ref)
    tracker.track(conn="c", topic="t", key="k", meta={}, now=0.0)
    tracker.handle_timer(now=10.0)
    (sent,) = tracker.messages_to_send()
    assert decode_message(sent.data).sender == ref
    assert ReplicaState(ref).replica == ref


@pytest.mark.parametrize("vsn", [2**63, 2**64, 10**5000], ids=["2**63", "2**64", "1e5000"])
def test_an_incarnation_beyond_the_wire_is_refused(vsn: int) -> None:
    # Before: accepted; its first tick then raised from inside handle_timer.
    _raises_exactly(
        LocalProtocolError, lambda: _tracker_of(ReplicaRef("a", vsn)), "above 2\\*\\*63 - 1"
    )


def test_the_largest_incarnation_the_wire_carries_works() -> None:
    ref = ReplicaRef("a", 2**63 - 1)
    tracker = _tracker_of(ref)
    tracker.track(conn="c", topic="t", key="k", meta={}, now=0.0)
    tracker.handle_timer(now=10.0)
    (sent,) = tracker.messages_to_send()
    assert decode_message(sent.data).sender == ref


# ----------------------------------------------------------------------------- value classes

ENTRY = Entry("t", "k", "c", {}, A1, 1)
DELTA = Delta(replica=A1, values={}, clouds={}, start={}, end={})
SNAPSHOT = Snapshot(replica=A1, context={}, clouds={}, values={})
PART = SnapshotPart(replica=A1, context={A1: 2}, ranges={A1: (0, 2)}, clouds={}, values={})

BAD_VALUES: list[tuple[str, Callable[[], object], str]] = [
    ("ReplicaRef name type", lambda: ReplicaRef(ANY, 1), "name must be a str"),
    ("ReplicaRef empty name", lambda: ReplicaRef("", 1), "must not be empty"),
    ("ReplicaRef vsn type", lambda: ReplicaRef("a", ANY), "vsn must be an int"),
    ("ReplicaRef negative vsn", lambda: ReplicaRef("a", -1), "vsn must be >= 0, not -1"),
    (
        "ReplicaRef huge negative vsn",
        lambda: ReplicaRef("a", -(10**5000)),
        "not an int of 16610 bits",
    ),
    (
        "TransferRequest request_id -1",
        lambda: TransferRequest(request_id=-1, sender=B1, clock={}),
        "request_id must be an int >= 0, not -1",
    ),
    (
        "TransferRequest request_id bool",
        lambda: TransferRequest(request_id=True, sender=B1, clock={}),
        "request_id",
    ),
    (
        "TransferRequest sender",
        lambda: TransferRequest(request_id=1, sender=ANY, clock={}),
        "sender must be a ReplicaRef, not NoneType",
    ),
    (
        "TransferRequest clock not a mapping",
        lambda: TransferRequest(request_id=1, sender=B1, clock=ANY),
        "clock must be a mapping",
    ),
    (
        "Heartbeat clock key",
        lambda: Heartbeat(sender=B1, clock={ANY: 1}),
        "clock keys must be ReplicaRef",
    ),
    ("Heartbeat clock value", lambda: Heartbeat(sender=B1, clock={B1: -1}), "must be an int >= 0"),
    (
        "Heartbeat delta",
        lambda: Heartbeat(sender=B1, clock={}, delta=SNAPSHOT),  # type: ignore[arg-type]
        "delta must be a Delta or None",
    ),
    (
        "Heartbeat part",
        lambda: Heartbeat(sender=B1, clock={}, part=3),
        "part must be an int from 0 to parts - 1",
    ),
    ("Heartbeat parts", lambda: Heartbeat(sender=B1, clock={}, parts=0), "parts must be an int"),
    (
        "TransferAck payload",
        lambda: TransferAck(request_id=1, sender=B1, payload=ANY),
        "payload must be a Delta, a Snapshot or a SnapshotPart",
    ),
    (
        "TransferAck snapshot in parts",
        lambda: TransferAck(request_id=1, sender=B1, payload=SNAPSHOT, parts=2),
        "a Snapshot is sent whole",
    ),
    ("GracefulPermdown sender", lambda: GracefulPermdown(sender=ANY), "sender must be a"),
    (
        "Delta replica",
        lambda: Delta(replica=ANY, values={}, clouds={}, start={}, end={}),
        "replica must be a ReplicaRef",
    ),
    (
        "Delta values not a mapping",
        lambda: Delta(replica=A1, values=ANY, clouds={}, start={}, end={}),
        "values must be a mapping",
    ),
    (
        "Delta rows not a mapping",
        lambda: Delta(replica=A1, values={A1: ANY_LIST}, clouds={}, start={}, end={}),
        "values\\[ReplicaRef\\('a', 1\\)\\] must be a mapping",
    ),
    (
        "Delta clouds not a mapping",
        lambda: Delta(replica=A1, values={}, clouds=ANY, start={}, end={}),
        "clouds must be a mapping",
    ),
    (
        "Delta cloud not a set",
        lambda: Delta(replica=A1, values={}, clouds={A1: ANY_INT}, start={}, end={}),
        "must be a set of ints",
    ),
    (
        "Delta cloud of lists",
        lambda: Delta(replica=A1, values={}, clouds={A1: ANY_NESTED}, start={}, end={}),
        "must be a set of ints",
    ),
    (
        "Delta start not a mapping",
        lambda: Delta(replica=A1, values={}, clouds={}, start=ANY, end={}),
        "a context must be a mapping",
    ),
    (
        "Delta misfiled entry",
        lambda: Delta(replica=A1, values={A1: {2: ENTRY}}, clouds={}, start={}, end={}),
        "filed under",
    ),
    (
        "Snapshot context value",
        lambda: Snapshot(replica=A1, context={A1: -(10**5000)}, clouds={}, values={}),
        "not an int of 16610 bits",
    ),
    (
        "SnapshotPart range not a pair",
        lambda: SnapshotPart(
            replica=A1, context={A1: 2}, ranges={A1: ANY_TRIPLE}, clouds={}, values={}
        ),
        "must be a pair \\(first, last\\), not \\[0, 1, 2\\]",
    ),
    (
        "SnapshotPart ranges not a mapping",
        lambda: SnapshotPart(replica=A1, context={A1: 2}, ranges=ANY, clouds={}, values={}),
        "ranges must be a mapping",
    ),
    (
        "SnapshotPart range out of the context",
        lambda: SnapshotPart(
            replica=A1, context={A1: 2}, ranges={A1: (0, 3)}, clouds={}, values={}
        ),
        "first < last <= 2",
    ),
    (
        "DeltaGenerations sizes not a sequence",
        lambda: DeltaGenerations(ANY),
        "max_sizes and generations must be sequences",
    ),
    (
        "DeltaGenerations size",
        lambda: DeltaGenerations((-(10**400),)),
        "got \\(an int of 1329 bits,\\)",
    ),
    (
        "DeltaGenerations push of a non-delta",
        lambda: DeltaGenerations((10,)).push(ANY, pending=DELTA),
        "push takes a Delta",
    ),
    (
        "DeltaGenerations pending not a delta",
        lambda: DeltaGenerations((10,)).push(DELTA, pending=SNAPSHOT),  # type: ignore[arg-type]
        "push takes a Delta",
    ),
    ("presence_diff_payload(None)", lambda: presence_diff_payload(ANY), "must be a PresenceDiff"),
]


@pytest.mark.parametrize(
    ("build", "match"), [case[1:] for case in BAD_VALUES], ids=[case[0] for case in BAD_VALUES]
)
def test_value_classes_refuse_bad_fields_with_invalid_argument(
    build: Callable[[], object], match: str
) -> None:
    # Before: ValueError, TypeError or AttributeError; now InvalidArgument, which is also both.
    _raises_exactly(InvalidArgument, build, match)


def test_invalid_argument_is_a_local_protocol_error_value_error_and_type_error() -> None:
    error = InvalidArgument("x")
    assert isinstance(error, LocalProtocolError)
    assert isinstance(error, ValueError)
    assert isinstance(error, TypeError)
    with pytest.raises(ValueError, match="request_id"):  # an old handler still catches it
        TransferRequest(request_id=-1, sender=B1, clock={})


def test_a_snapshot_part_whose_range_is_a_list_is_accepted() -> None:
    part = SnapshotPart(replica=A1, context={A1: 2}, ranges={A1: ANY_PAIR}, clouds={}, values={})
    assert part == PART


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"broadcast_period": 10**400}, "broadcast_period must be positive and finite, not an int"),
        ({"permdown_period": 10**400}, "permdown_period must be positive and finite"),
        ({"max_meta_bytes": -(10**5000)}, "max_meta_bytes must be an int >= 1, not an int of"),
        ({"max_delta_sizes": (1, -(10**400))}, "not \\(1, an int of 1329 bits\\)"),
        ({"max_delta_sizes": 5}, "max_delta_sizes must be a sequence of ints, not 5"),
    ],
    ids=["period", "permdown", "meta bytes", "delta sizes", "delta sizes type"],
)
def test_config_values_too_large_for_a_float_are_configuration_errors(
    options: dict[str, Any], match: str
) -> None:
    # Before: OverflowError from math.isfinite, or ValueError from the message's repr.
    _raises_exactly(ConfigurationError, lambda: TrackerConfig(**options), match)


def test_extract_refuses_a_context_that_is_not_a_mapping() -> None:
    # Before: TypeError ('NoneType' object is not iterable).
    state = ReplicaState(A1)
    state.join("c", "t", "k", {})
    _raises_exactly(
        LocalProtocolError, lambda: state.extract(B1, ANY), "remote_context must be a mapping"
    )
    assert state.extract(B1, {A1: 1}).values == {A1: {1: next(state.entries())}}
