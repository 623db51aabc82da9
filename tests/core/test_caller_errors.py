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
from typing import Any, NoReturn

import pytest

from helpers import drain, make_config, make_tracker, observe
from presence_core import (
    ClientView,
    ConfigurationError,
    Delta,
    DeltaGenerations,
    Entry,
    GracefulPermdown,
    Heartbeat,
    InvalidArgument,
    LocalProtocolError,
    Outbound,
    PresenceDiff,
    PresenceError,
    RemoteProtocolError,
    ReplicaDown,
    ReplicaPermdown,
    ReplicaRef,
    ReplicaState,
    ReplicaUp,
    Snapshot,
    SnapshotPart,
    Tracker,
    TrackerConfig,
    TransferAck,
    TransferRequest,
    Unsendable,
    append_clock,
    classify_diff,
    decode_message,
    dominates,
    dominates_or_equal,
    encode_message,
    group,
    list_presences,
    lowerbound,
    merge_deltas,
    presence_diff_payload,
    sync_diff,
    upperbound,
)
from presence_core._vclock import compact_cloud, filter_replicas

A1 = ReplicaRef("a", 1)
B1 = ReplicaRef("b", 1)
# Arguments of the wrong type, past mypy.
ANY: Any = None
ANY_STR: Any = "abc"
ANY_BYTES: Any = b"c"
ANY_TRUE: Any = True
ANY_SET: Any = {1}
ANY_REF: Any = ReplicaRef("b", 1)
ANY_PAIRS: Any = [(ReplicaRef("a", 1), 1)]
ANY_INT_KEYS: Any = {1: {"metas": []}}
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
    assert tracker.presences("lobby")["u1"]["metas"][0]["n"] == big


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
ANY_TUPLE: Any = tuple(ENTRY)  # an entry's fields, not an Entry
HEARTBEAT = Heartbeat(sender=A1, clock={})
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
    # Events. Before: accepted whatever they were given (a diff of non-entries failed later, in
    # group or in the endpoint, with an AttributeError).
    ("PresenceDiff topic", lambda: PresenceDiff(topic=ANY), "topic must be a str, not NoneType"),
    ("PresenceDiff joins None", lambda: PresenceDiff(topic="t", joins=ANY), "iterables of Entry"),
    ("PresenceDiff joins str", lambda: PresenceDiff(topic="t", joins=ANY_STR), "not str"),
    (
        "PresenceDiff joins of non-entries",
        lambda: PresenceDiff(topic="t", joins=[ENTRY, ANY]),
        "must hold Entry, not NoneType \\(item 1\\)",
    ),
    (
        "PresenceDiff leaves of tuples",
        lambda: PresenceDiff(topic="t", leaves=[ANY_TUPLE]),
        "must hold Entry, not tuple",
    ),
    ("ReplicaUp replica", lambda: ReplicaUp(replica=ANY_STR), "replica must be a ReplicaRef"),
    ("ReplicaDown replica", lambda: ReplicaDown(replica=ANY), "replica must be a ReplicaRef"),
    (
        "ReplicaPermdown replica",
        lambda: ReplicaPermdown(replica=ANY_PAIR),
        "replica must be a ReplicaRef, not list",
    ),
    (
        "Unsendable message",
        lambda: Unsendable(message=ANY, to=None, reason="r"),
        "message must be a Heartbeat, a TransferRequest, a TransferAck or a GracefulPermdown",
    ),
    (
        "Unsendable to",
        lambda: Unsendable(message=HEARTBEAT, to=ANY_INT, reason="r"),
        "to must be a replica name \\(a non-empty str\\) or None, not int",
    ),
    (
        "Unsendable empty to",
        lambda: Unsendable(message=HEARTBEAT, to="", reason="r"),
        "or None, not ''",
    ),
    (
        "Unsendable reason",
        lambda: Unsendable(message=HEARTBEAT, to=None, reason=ANY),
        "reason must be a str",
    ),
    # Outbound. Before: accepted anything; a driver then failed sending it.
    (
        "Outbound message",
        lambda: Outbound(message=ANY, data=b"x"),
        "message must be a Heartbeat",
    ),
    ("Outbound data", lambda: Outbound(message=HEARTBEAT, data=ANY_STR), "data must be bytes"),
    (
        "Outbound to",
        lambda: Outbound(message=HEARTBEAT, data=b"x", to=ANY_REF),
        "to must be a replica name \\(a non-empty str\\) or None, not ReplicaRef",
    ),
    # Entry built by hand. Before: anything went in, and failed later in a merge or the codec.
    ("Entry topic", lambda: Entry(ANY_INT, "k", "c", {}, A1, 1), "Entry.topic must be a str"),
    ("Entry key", lambda: Entry("t", ANY, "c", {}, A1, 1), "Entry.key must be a str"),
    ("Entry conn", lambda: Entry("t", "k", ANY_BYTES, {}, A1, 1), "Entry.conn must be a str"),
    ("Entry meta", lambda: Entry("t", "k", "c", ANY, A1, 1), "Entry.meta must be a mapping"),
    (
        "Entry meta content",
        lambda: Entry("t", "k", "c", {"x": ANY_SET}, A1, 1),
        "Entry.meta\\['x'\\] is not JSON-compatible: set",
    ),
    ("Entry owner", lambda: Entry("t", "k", "c", {}, ANY_PAIR, 1), "Entry.owner must be a"),
    ("Entry clock 0", lambda: Entry("t", "k", "c", {}, A1, 0), "Entry.clock must be an int >= 1"),
    ("Entry clock bool", lambda: Entry("t", "k", "c", {}, A1, ANY_TRUE), "not True"),
    ("Entry clock str", lambda: Entry("t", "k", "c", {}, A1, ANY_STR), "not 'abc'"),
    # Free functions. Before: TypeError or AttributeError from inside, or a wrong answer.
    ("group(None)", lambda: group(ANY), "entries must be an iterable of Entry, not NoneType"),
    ("group(str)", lambda: group(ANY_STR), "entries must be an iterable of Entry, not str"),
    ("group of tuples", lambda: group([ANY_TUPLE]), "must hold Entry, not tuple \\(item 0\\)"),
    (
        "group of a generator of non-entries",
        lambda: group(x for x in ANY_TRIPLE),
        "must hold Entry, not int",
    ),
    ("merge_deltas(None, d)", lambda: merge_deltas(ANY, DELTA), "a must be a Delta, not NoneType"),
    (
        "merge_deltas(d, snapshot)",
        lambda: merge_deltas(DELTA, SNAPSHOT),  # type: ignore[arg-type]
        "b must be a Delta, not Snapshot",
    ),
    ("dominates(None, {})", lambda: dominates(ANY, {}), "a must be a context mapping"),
    ("dominates({}, list)", lambda: dominates({}, ANY_LIST), "b must be a context mapping"),
    ("dominates_or_equal", lambda: dominates_or_equal(ANY_INT, {}), "a must be a context mapping"),
    # upperbound and lowerbound took a list of pairs and answered as if it were a context.
    ("upperbound", lambda: upperbound({}, ANY_PAIRS), "b must be a context mapping, not list"),
    ("lowerbound", lambda: lowerbound(ANY_PAIRS, {}), "a must be a context mapping, not list"),
    ("filter_replicas context", lambda: filter_replicas(ANY, []), "context must be a mapping"),
    ("filter_replicas replicas", lambda: filter_replicas({}, ANY_INT), "replicas must be an"),
    ("compact_cloud base", lambda: compact_cloud(ANY_STR, {1}), "base must be an int or None"),
    ("compact_cloud cloud", lambda: compact_cloud(1, ANY_INT), "cloud must be an iterable"),
    (
        "append_clock clockset",
        lambda: append_clock(ANY, (A1, {A1: 1})),
        "clockset must be a sequence of clocks, not NoneType",
    ),
    (
        "append_clock clock",
        lambda: append_clock([], ANY),
        "clock must be a pair \\(ReplicaRef, context mapping\\), not NoneType",
    ),
    (
        "append_clock clock of a list",
        lambda: append_clock([], (A1, ANY_PAIR)),
        "clock must be a pair \\(ReplicaRef, context mapping\\), not \\(ReplicaRef, list\\)",
    ),
    (
        "append_clock clockset item",
        lambda: append_clock([ANY_PAIR], (A1, {A1: 1})),
        "clockset item must be a pair",
    ),
    ("list_presences(None)", lambda: list_presences(ANY), "presences must be a mapping"),
    (
        "list_presences chooser",
        lambda: list_presences({}, chooser=ANY_INT),
        "chooser must be callable or None, not int",
    ),
    (
        "list_presences keys",
        lambda: list_presences(ANY_INT_KEYS),
        "presences keys must be str, not int",
    ),
    ("ClientView max_pending", lambda: ClientView(max_pending=0), "max_pending must be an int"),
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


class _TaggedEntry(Entry):
    """An Entry still, though not exactly one."""

    __slots__ = ()


def test_entries_of_an_entry_subclass_are_accepted() -> None:
    # They fail the fast check (every item exactly an Entry) and pass the item by item one.
    tagged = _TaggedEntry("t", "k", "c2", {"n": 2}, B1, 1)
    diff = PresenceDiff(topic="t", joins=[tagged, ENTRY], leaves=(tagged,))
    assert diff.joins == (tagged, ENTRY)
    assert type(diff.joins[0]) is _TaggedEntry
    assert diff.leaves == (tagged,)
    assert group([tagged, ENTRY]) == {"k": {"metas": [{}, {"n": 2}]}}
    assert presence_diff_payload(diff) == {
        "joins": {"k": {"metas": [{}, {"n": 2}]}},
        "leaves": {"k": {"metas": [{"n": 2}]}},
    }


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


# ----------------------------------------------------------------------------- client side


def _view() -> ClientView:
    view = ClientView()
    view.on_state({"u1": {"metas": [{"phx_ref": "1"}]}}, join_ref="j1")
    return view


@pytest.mark.parametrize("join_ref", [None, 1.5, ["j2"]], ids=["None", "float", "list"])
def test_a_state_push_needs_a_join_ref_and_changes_nothing_without_one(join_ref: Any) -> None:
    # Before: None was taken, and the view then waited for a state forever, holding every diff.
    view = _view()
    _raises_exactly(
        InvalidArgument,
        lambda: view.on_state({"u2": {"metas": [{"phx_ref": "2"}]}}, join_ref=join_ref),
        "join_ref must be a str or an int, not",
    )
    assert view.state == {"u1": {"metas": [{"phx_ref": "1"}]}}
    assert view.join_ref == "j1"


def test_a_diff_push_with_a_join_ref_of_the_wrong_type_changes_nothing() -> None:
    view = _view()
    _raises_exactly(
        InvalidArgument,
        lambda: view.on_diff({"joins": {"u2": {"metas": [{}]}}}, join_ref=ANY_PAIR),
        "join_ref must be a str, an int or None, not list",
    )
    assert view.state == {"u1": {"metas": [{"phx_ref": "1"}]}}
    assert view.pending == 0


def test_refs_that_are_objects_or_arrays_match_nothing_as_in_phoenix_js() -> None:
    # Before: TypeError (unhashable type: 'list') from inside sync_diff and classify_diff. A
    # server never sends such refs; phoenix.js compares refs with ===, so they match no other.
    current = {"u1": {"metas": [{"phx_ref": ["r"]}, {"phx_ref": "s"}]}}
    result = sync_diff(current, {"joins": {"u1": {"metas": [{"phx_ref": ["r"]}]}}})
    assert result.state["u1"]["metas"] == [{"phx_ref": ["r"]}, {"phx_ref": "s"}, {"phx_ref": ["r"]}]
    result = sync_diff(current, {"leaves": {"u1": {"metas": [{"phx_ref": {"r": 1}}]}}})
    assert result.state == current
    classified = classify_diff(
        {
            "joins": {"u1": {"metas": [{"phx_ref": "2", "phx_ref_prev": ["1"]}]}},
            "leaves": {"u1": {"metas": [{"phx_ref": ["1"]}]}},
        }
    )
    assert classified.updates == ()
    assert classified.joined_keys == classified.left_keys == ["u1"]


def test_a_state_holding_values_no_copy_can_take_is_refused() -> None:
    # Before: TypeError (cannot pickle ...) from copy.deepcopy inside sync_diff.
    class Uncopyable:
        def __deepcopy__(self, memo: object) -> NoReturn:
            raise TypeError("no copies")

    with pytest.raises(RemoteProtocolError, match="holds a value that cannot be copied"):
        sync_diff({"u1": {"metas": [{"x": Uncopyable()}]}}, {})


# ---------------------------------------------------------------------------- re-entrant calls


@pytest.mark.parametrize(
    "reenter",
    [
        lambda t: t.untrack(conn="c1", topic="room", key="alice", now=1.0),
        lambda t: t.update(conn="c1", topic="room", key="alice", meta={}, now=1.0),
        lambda t: t.track(conn="c2", topic="room", key="bob", meta={}, now=1.0),
        lambda t: t.untrack_conn(conn="c1", now=1.0),
        lambda t: t.graceful_permdown(now=1.0),
        lambda t: t.handle_timer(now=1.0),
        lambda t: t.receive(b"{}", now=1.0),
    ],
    ids=[
        "untrack",
        "update",
        "track",
        "untrack_conn",
        "graceful_permdown",
        "handle_timer",
        "receive",
    ],
)
def test_a_reentrant_call_from_an_update_callback_is_refused(
    reenter: Callable[[Tracker], object],
) -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="room", key="alice", meta={"n": 1}, now=0.0)
    drain(tracker)
    before = observe(tracker)
    seen: list[BaseException] = []

    def callback(meta: dict[str, Any]) -> dict[str, Any]:
        try:
            reenter(tracker)
        except PresenceError as exc:
            seen.append(exc)
            raise
        return {"n": 2}

    with pytest.raises(LocalProtocolError, match="re-entrant call"):
        tracker.update(conn="c1", topic="room", key="alice", meta=callback, now=0.5)
    assert len(seen) == 1
    assert observe(tracker) == before
    assert drain(tracker) == []
    # and the tracker still works afterwards
    tracker.update(conn="c1", topic="room", key="alice", meta=lambda m: {"n": 3}, now=0.6)
    assert tracker.get_by_key("room", "alice")["metas"][0]["n"] == 3
