"""The wire codec (DESIGN §3.3, docs/wire.rst): round trips, canonical bytes, strict decoding.

Three layers:

* properties: every message Hypothesis can build round-trips, encodes deterministically, and
  encodes to the same bytes whatever the order of the dicts it was built from;
* fuzzing: random bytes, byte-level mutations and JSON-level mutations of valid encodings either
  decode to a valid message or raise RemoteProtocolError, never anything else;
* one example per validation rule, checking that the error names the field.
"""

from __future__ import annotations

import copy
import gc
import json
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_tracker, observe
from presence_core import (
    ConfigurationError,
    Delta,
    Entry,
    JSONValue,
    LimitExceeded,
    LocalProtocolError,
    RemoteProtocolError,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    SnapshotPart,
)
from presence_core._codec import (
    _LONG_RUNS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DOTS,
    MAX_NESTING,
    MAX_WIRE_INT,
    WIRE_VERSION,
    DecodeLimits,
    _neutral,
    _scalar_bounds,
    decode_message,
    encode_message,
)
from presence_core._config import TrackerConfig
from presence_core._messages import (
    GracefulPermdown,
    Heartbeat,
    Message,
    TransferAck,
    TransferRequest,
)
from presence_core._meta import MAX_DEPTH, FrozenDict, copy_meta
from presence_core._parts import encode_parts
from presence_core._payloads import _trusted

A = ReplicaRef("node-a", 1)
B = ReplicaRef("node-b", 7)
WIRE_RST = Path(__file__).resolve().parents[2] / "docs" / "wire.rst"

# ------------------------------------------------------------------------------- strategies

wire_ints = st.integers(0, 20) | st.integers(0, MAX_WIRE_INT)
dots = st.integers(1, 30) | st.integers(1, MAX_WIRE_INT)
names = st.text(min_size=1, max_size=6)
refs = st.builds(ReplicaRef, st.sampled_from(["a", "b", "node-c", "ü"]) | names, wire_ints)
contexts = st.dictionaries(refs, wire_ints, max_size=4)
dot_sets = st.frozensets(dots, max_size=8)
clouds_st = st.dictionaries(refs, dot_sets, max_size=3)
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
metas = st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(copy_meta)
texts = st.text(max_size=8)

Values = dict[ReplicaRef, dict[int, Entry]]
Payload = Delta | Snapshot | SnapshotPart


M = TypeVar("M")


def unchecked(cls: type[M], **fields: object) -> M:
    """A message built past its constructor's checks, to prove the encoder guards too."""
    message = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(message, name, value)
    return message


def unchecked_entry(*fields: Any) -> Entry:
    """An entry built past its constructor's checks (as the state and the codec build them)."""
    return tuple.__new__(Entry, fields)


@st.composite
def values_of(draw: st.DrawFn, owners: list[ReplicaRef]) -> Values:
    """Entries for each owner, each filed under its own owner and clock."""
    result: Values = {}
    for owner in owners:
        clocks = draw(st.lists(dots, max_size=4, unique=True))
        result[owner] = {
            clock: Entry(draw(texts), draw(texts), draw(texts), draw(metas), owner, clock)
            for clock in clocks
        }
    return result


@st.composite
def deltas(draw: st.DrawFn) -> Delta:
    """A delta whose clouds hold the dots of its values and whose end is not below its start."""
    values = draw(values_of(draw(st.lists(refs, max_size=3, unique=True))))
    clouds = draw(clouds_st)
    for owner, rows in values.items():
        clouds[owner] = clouds.get(owner, frozenset()) | rows.keys()
    end = draw(contexts)
    start = {ref: min(clock, end.get(ref, clock)) for ref, clock in draw(contexts).items()}
    return Delta(replica=draw(refs), values=values, clouds=clouds, start=start, end=end)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """A snapshot whose context knows every owner and whose context or clouds cover each entry."""
    context = draw(contexts)
    owners = draw(st.lists(st.sampled_from(sorted(context)), unique=True)) if context else []
    values = draw(values_of(owners))
    clouds = draw(clouds_st)
    for owner, rows in values.items():
        beyond = {clock for clock in rows if clock > context[owner]}
        if beyond:
            clouds[owner] = clouds.get(owner, frozenset()) | beyond
    return Snapshot(replica=draw(refs), context=context, clouds=clouds, values=values)


@st.composite
def snapshot_parts(draw: st.DrawFn) -> SnapshotPart:
    """A part whose ranges lie within its context and whose ranges or clouds cover each entry."""
    context = draw(contexts)
    ranges: dict[ReplicaRef, tuple[int, int]] = {}
    for owner, upto in context.items():
        if upto and draw(st.booleans()):
            first = draw(st.integers(0, upto - 1))
            ranges[owner] = (first, draw(st.integers(first + 1, upto)))
    clouds = draw(clouds_st)
    values: Values = {}
    for owner, rows in draw(values_of(sorted(context))).items():
        first, last = ranges.get(owner, (0, 0))
        kept = {clock: entry for clock, entry in rows.items() if first < clock <= last}
        beyond = {clock: entry for clock, entry in rows.items() if clock > context[owner]}
        if beyond:
            clouds[owner] = clouds.get(owner, frozenset()) | beyond.keys()
        if kept or beyond:
            values[owner] = {**kept, **beyond}
    return SnapshotPart(
        replica=draw(refs), context=context, ranges=ranges, clouds=clouds, values=values
    )


@st.composite
def part_numbers(draw: st.DrawFn) -> dict[str, int]:
    """``part`` and ``parts`` of a whole message (0 of 1) or of one of its parts."""
    parts = draw(st.sampled_from([1, 2, 3]) | st.integers(2, MAX_WIRE_INT))
    return {"part": draw(st.integers(0, parts - 1)), "parts": parts}


@st.composite
def heartbeats(draw: st.DrawFn) -> Heartbeat:
    """A heartbeat whose clock holds the sender (sent as ``own``) or not (``own`` is null)."""
    sender = draw(refs)
    clock = draw(contexts)
    if draw(st.booleans()):
        clock[sender] = draw(wire_ints)
    return Heartbeat(
        sender=sender, clock=clock, delta=draw(st.none() | deltas()), **draw(part_numbers())
    )


@st.composite
def transfer_acks(draw: st.DrawFn) -> TransferAck:
    """A reply sent whole, or one part of a delta or a full state (a Snapshot is only whole)."""
    payload = draw(deltas() | snapshots() | snapshot_parts())
    numbers = {} if isinstance(payload, Snapshot) else draw(part_numbers())
    return TransferAck(request_id=draw(wire_ints), sender=draw(refs), payload=payload, **numbers)


transfer_requests = st.builds(TransferRequest, request_id=wire_ints, sender=refs, clock=contexts)
permdowns = st.builds(GracefulPermdown, sender=refs)
messages: st.SearchStrategy[Message] = st.one_of(
    heartbeats(), transfer_requests, transfer_acks(), permdowns
)

# ------------------------------------------------------------------------------- helpers


def reverse_json(value: object) -> object:
    """The same JSON value with every object's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {key: reverse_json(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reverse_json(item) for item in value]
    return value


def reversed_dict(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    return {key: mapping[key] for key in reversed(list(mapping))}


def reversed_values(values: Mapping[ReplicaRef, Mapping[int, Entry]]) -> Values:
    return {
        owner: {
            clock: rows[clock]._replace(
                meta=cast(dict[str, JSONValue], reverse_json(rows[clock].meta))
            )
            for clock in reversed(list(rows))
        }
        for owner, rows in reversed_dict(values).items()
    }


def reversed_payload(payload: Payload) -> Payload:
    clouds = {
        ref: frozenset(sorted(d, reverse=True)) for ref, d in reversed_dict(payload.clouds).items()
    }
    if isinstance(payload, SnapshotPart):
        return SnapshotPart(
            replica=payload.replica,
            context=reversed_dict(payload.context),
            ranges=reversed_dict(payload.ranges),
            clouds=clouds,
            values=reversed_values(payload.values),
        )
    if isinstance(payload, Delta):
        return Delta(
            replica=payload.replica,
            values=reversed_values(payload.values),
            clouds=clouds,
            start=reversed_dict(payload.start),
            end=reversed_dict(payload.end),
        )
    return Snapshot(
        replica=payload.replica,
        context=reversed_dict(payload.context),
        clouds=clouds,
        values=reversed_values(payload.values),
    )


def reordered(message: Message) -> Message:
    """An equal message built from dicts in another order."""
    if isinstance(message, Heartbeat):
        delta = message.delta
        return Heartbeat(
            sender=message.sender,
            clock=reversed_dict(message.clock),
            delta=None if delta is None else cast(Delta, reversed_payload(delta)),
            part=message.part,
            parts=message.parts,
        )
    if isinstance(message, TransferRequest):
        return TransferRequest(
            request_id=message.request_id, sender=message.sender, clock=reversed_dict(message.clock)
        )
    if isinstance(message, TransferAck):
        return TransferAck(
            request_id=message.request_id,
            sender=message.sender,
            payload=reversed_payload(message.payload),
            part=message.part,
            parts=message.parts,
        )
    return GracefulPermdown(sender=message.sender)


def check_real_classes(message: Message) -> None:
    """Decoded values are the library's classes, not look-alike tuples, lists or sets."""
    assert type(message.sender) is ReplicaRef
    contexts: list[Mapping[ReplicaRef, int]] = []
    payload: Payload | None = None
    if isinstance(message, (Heartbeat, TransferRequest)):
        contexts.append(message.clock)
    if isinstance(message, Heartbeat):
        payload = message.delta
    if isinstance(message, TransferAck):
        payload = message.payload
    if isinstance(payload, Delta):
        contexts += [payload.start, payload.end]
    if isinstance(payload, (Snapshot, SnapshotPart)):
        contexts.append(payload.context)
    for context in contexts:
        assert all(type(ref) is ReplicaRef and type(c) is int for ref, c in context.items())
    if payload is not None:
        assert type(payload.replica) is ReplicaRef
        assert all(
            type(ref) is ReplicaRef and type(cloud) is frozenset
            for ref, cloud in payload.clouds.items()
        )
        for owner, rows in payload.values.items():
            assert type(owner) is ReplicaRef
            for entry in rows.values():
                assert type(entry) is Entry
                # Stored as a plain dict (its fourth item); handed out as a frozen copy.
                assert type(entry[3]) is dict
                assert type(entry.meta) is FrozenDict
                assert entry.meta == entry[3]


def decodes_or_rejects(data: bytes) -> Message | None:
    """Decode ``data``: a RemoteProtocolError is fine, any other exception fails the test.

    A message that decodes must be a valid one: it encodes, and decodes back to itself.
    """
    try:
        message = decode_message(data)
    except RemoteProtocolError as exc:
        error = exc
    else:
        assert isinstance(message, (Heartbeat, TransferRequest, TransferAck, GracefulPermdown))
        assert decode_message(encode_message(message)) == message
        return message
    assert error.message.startswith(("message", *PREFIXES))
    assert ": " in error.message
    return None


PREFIXES = ("heartbeat", "transfer_request", "transfer_ack", "graceful_permdown")


def raw(document: object) -> bytes:
    return json.dumps(document).encode()


def rejected(
    data: bytes | dict[str, Any], *, max_dots: int = DEFAULT_MAX_DOTS
) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(data if isinstance(data, bytes) else raw(data), max_dots=max_dots)
    return info.value


def doc(message: Message) -> dict[str, Any]:
    """The JSON document of a valid message, to break in one place."""
    document = json.loads(encode_message(message))
    assert isinstance(document, dict)
    return document


def sample_state() -> tuple[ReplicaState, Delta]:
    """node-a tracked alice and bob, broadcast, tracked carol and untracked bob (docs/wire.rst)."""
    a, b = ReplicaState(A), ReplicaState(B)
    a.replica_up(B)
    b.replica_up(A)
    a.join("c1", "room:lobby", "alice", {"status": "online", "phx_ref": "F1"})
    a.join("c2", "room:lobby", "bob", {"status": "away", "phx_ref": "F2"})
    b.merge(a.take_delta())
    a.join("c3", "room:lobby", "carol", {"status": "online", "phx_ref": "F3"})
    a.leave("c2", "room:lobby", "bob")
    return a, a.take_delta()


def heartbeat_doc() -> dict[str, Any]:
    state, delta = sample_state()
    return doc(Heartbeat(sender=A, clock=state.clocks()[1], delta=delta))


def snapshot_doc() -> dict[str, Any]:
    state, _ = sample_state()
    return doc(TransferAck(request_id=2, sender=A, payload=state.extract(B, {A: 0, B: 0})))


def ack_delta_doc() -> dict[str, Any]:
    _, delta = sample_state()
    return doc(TransferAck(request_id=1, sender=A, payload=delta))


# ------------------------------------------------------------------------------- properties


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages)
def test_round_trip(message: Message) -> None:
    data = encode_message(message)
    decoded = decode_message(data)
    assert decoded == message
    assert type(decoded) is type(message)
    check_real_classes(decoded)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages)
def test_encoding_is_canonical(message: Message) -> None:
    data = encode_message(message)
    assert encode_message(message) == data
    other = reordered(message)
    assert other == message
    assert encode_message(other) == data
    # Canonical means compact, sorted JSON: re-serialising the document changes nothing.
    document = json.loads(data)
    assert (
        json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        == data
    )
    # And decoding a non-canonical spelling of it (indented, ASCII escapes) gives the same message.
    assert decode_message(json.dumps(document, indent=2).encode()) == message


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    decodes_or_rejects(data)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages, st.data())
def test_mutated_bytes_never_raise_anything_else(message: Message, data: st.DataObject) -> None:
    buffer = bytearray(encode_message(message))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        position = data.draw(st.integers(0, max(len(buffer) - 1, 0)), label="position")
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "replace"]), label="action")
        if action == "flip" and buffer:
            buffer[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "insert":
            buffer[position:position] = data.draw(
                st.binary(min_size=1, max_size=3)
                | st.sampled_from([b"[", b"]", b",", b'"', b"0", b"-"])
            )
        elif action == "delete":
            del buffer[position : position + data.draw(st.integers(1, 5))]
        elif buffer:
            buffer[position] = data.draw(st.sampled_from(b'{}[],:"0123456789-tfn\\ue'))
    decodes_or_rejects(bytes(buffer))


Path_ = tuple[str | int, ...]


def json_paths(value: object, path: Path_ = ()) -> list[Path_]:
    """Every path of a JSON document, the root included."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += json_paths(item, (*path, index))
    return found


def at(document: object, path: Path_) -> Any:
    for step in path:
        document = document[step]  # type: ignore[index]
    return document


interesting: st.SearchStrategy[object] = (
    st.sampled_from(
        [None, True, False, 0, -1, 1, 1.0, 1.5, "", "x", [], {}, [0, 0], [1, 0], 2**63, 2**64]
    )
    | json_values
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages, st.data())
def test_mutated_json_never_raises_anything_else(message: Message, data: st.DataObject) -> None:
    document: Any = json.loads(encode_message(message))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(json_paths(document)), label="path")
        target = at(document, path)
        action = data.draw(st.sampled_from(["replace", "drop", "add", "duplicate"]), label="action")
        # Drawn values are copied: sampled_from hands out the same list or dict every time.
        new = copy.deepcopy(data.draw(interesting, label="new value"))
        if action == "drop" and path:
            del at(document, path[:-1])[path[-1]]
        elif action == "add" and isinstance(target, dict):
            target[data.draw(st.sampled_from(["extra", "v", "kind", "type"]))] = new
        elif action == "add" and isinstance(target, list):
            target.append(new)
        elif action == "duplicate" and isinstance(target, list) and target:
            target.append(copy.deepcopy(target[0]))
        elif path:
            at(document, path[:-1])[path[-1]] = new
        else:
            document = new
    # ensure_ascii=True (the default) also exercises \u escapes and surrogate pairs.
    decodes_or_rejects(json.dumps(document).encode())


# ---------------------------------------------------------------------- exact bytes and sizes


def exact(message: Message, data: bytes) -> None:
    """``message`` encodes to exactly ``data`` (written by hand), which decodes back to it."""
    assert encode_message(message) == data
    assert decode_message(data) == message


def test_exact_bytes_of_an_idle_heartbeat() -> None:
    exact(
        Heartbeat(sender=A, clock={B: 3, A: 5}),
        b'{"clock":[["node-b",7,3]],"delta":null,"own":5,'
        b'"sender":["node-a",1],"type":"heartbeat","v":2}',
    )
    exact(
        Heartbeat(sender=A, clock={}),
        b'{"clock":[],"delta":null,"own":null,"sender":["node-a",1],"type":"heartbeat","v":2}',
    )
    # Another incarnation of the sender's name is another replica: it stays in the clock.
    other_a = ReplicaRef("node-a", 2)
    exact(
        Heartbeat(sender=A, clock={other_a: 2, A: 0}),
        b'{"clock":[["node-a",2,2]],"delta":null,"own":0,'
        b'"sender":["node-a",1],"type":"heartbeat","v":2}',
    )


def test_exact_bytes_of_a_delta_and_non_ascii_text() -> None:
    delta = Delta(
        replica=A,
        values={A: {3: Entry("salle:é", "zoë", "c3", {"b": 1.5, "a": [True, None]}, A, 3)}},
        clouds={A: frozenset({1, 2, 3, 5, 7, 8})},
        start={A: 0},
        end={A: 8},
    )
    # The entry is five items in a row in its owner's array: clock, conn, topic, key, meta.
    exact(
        Heartbeat(sender=A, clock={A: 8}, delta=delta),
        (
            '{"clock":[],"delta":{"clouds":[["node-a",1,[[1,3],[5,5],[7,8]]]],'
            '"end":[["node-a",1,8]],"replica":["node-a",1],"start":[["node-a",1,0]],'
            '"values":[["node-a",1,[3,"c3","salle:é","zoë",{"a":[true,null],"b":1.5}]]]},'
            '"own":8,"sender":["node-a",1],"type":"heartbeat","v":2}'
        ).encode(),
    )


def test_exact_bytes_of_entries_of_several_owners() -> None:
    """Each owner's entries are one flat array, five items per entry, in clock order."""
    snapshot = Snapshot(
        replica=A,
        context={B: 2, A: 5},
        clouds={},
        values={
            B: {2: Entry("t", "k2", "c2", {}, B, 2)},
            A: {5: Entry("t", "k5", "c5", {"n": 5}, A, 5), 1: Entry("t", "k1", "c1", {}, A, 1)},
        },
    )
    exact(
        TransferAck(request_id=9, sender=A, payload=snapshot),
        b'{"payload":{"clouds":[],"context":[["node-a",1,5],["node-b",7,2]],"kind":"snapshot",'
        b'"replica":["node-a",1],"values":[["node-a",1,[1,"c1","t","k1",{},5,"c5","t","k5",'
        b'{"n":5}]],["node-b",7,[2,"c2","t","k2",{}]]]},"request_id":9,"sender":["node-a",1],'
        b'"type":"transfer_ack","v":2}',
    )
    # An owner without entries has an empty array (zero entries of five items).
    exact(
        Heartbeat(
            sender=A,
            clock={},
            delta=Delta(replica=A, values={B: {}}, clouds={}, start={}, end={}),
        ),
        b'{"clock":[],"delta":{"clouds":[],"end":[],"replica":["node-a",1],"start":[],'
        b'"values":[["node-b",7,[]]]},"own":null,"sender":["node-a",1],"type":"heartbeat",'
        b'"v":2}',
    )


def test_idle_heartbeat_with_ten_replicas_is_small() -> None:
    known = {ReplicaRef(f"node-{i}", 1_700_000_000 + i): 100_000 + i for i in range(10)}
    data = encode_message(Heartbeat(sender=ReplicaRef("node-0", 1_700_000_000), clock=known))
    assert len(data) < 400
    assert len(data) == 354  # the size docs/wire.rst quotes
    # The sender's name is written once: its clock travels as "own", not in "clock".
    assert data.count(b'"node-0"') == 1
    assert b'"own":100000,' in data


def test_delta_of_contiguous_dots_is_one_run() -> None:
    state = ReplicaState(A)
    for i in range(1000):
        state.join(f"c{i}", "t", "k", {})
    for i in range(1000):
        state.leave_conn(f"c{i}")
    delta = state.take_delta()
    assert len(delta.clouds[A]) == 2000
    data = encode_message(Heartbeat(sender=A, clock=state.clocks()[1], delta=delta))
    assert b"[[1,2000]]" in data
    assert len(data) < 250


def test_documented_examples_are_exact_encodings() -> None:
    text = WIRE_RST.read_text(encoding="utf-8")
    blocks = re.findall(r"\.\. code-block:: json\n\n((?:    .*\n|\n)+)", text)
    one_liners = [b.strip() for b in blocks if b.strip().count("\n") == 0]
    assert len(blocks) >= 7
    assert len(one_liners) >= 6
    for block in blocks:
        decode_message(block.encode())
    for line in one_liners:
        assert encode_message(decode_message(line.encode())).decode() == line
    state, delta = sample_state()
    snapshot = TransferAck(request_id=2, sender=A, payload=state.extract(B, {A: 2, B: 0}))
    in_parts = encode_parts(snapshot, max_bytes=len(encode_message(snapshot)) - 1)
    expected = [
        Heartbeat(sender=A, clock=state.clocks()[1]),
        Heartbeat(sender=A, clock=state.clocks()[1], delta=delta),
        TransferRequest(request_id=1, sender=B, clock={A: 2, B: 0}),
        TransferAck(request_id=1, sender=A, payload=delta.extract(B, {A: 2, B: 0})),
        snapshot,
        *(part for part, _ in in_parts),
        GracefulPermdown(sender=A),
    ]
    assert [decode_message(line.encode()) for line in one_liners] == expected


def test_large_snapshot_round_trips() -> None:
    state = ReplicaState(A)
    for i in range(10_000):
        state.join(f"conn-{i}", f"room:{i % 10}", f"user-{i}", {"n": i, "tags": ["x"]})
    message = TransferAck(request_id=1, sender=A, payload=state.extract(B, {A: 0, B: 0}))
    assert decode_message(encode_message(message)) == message


def test_defaults() -> None:
    assert WIRE_VERSION == 2
    assert TrackerConfig().max_message_bytes == DEFAULT_MAX_BYTES
    assert MAX_WIRE_INT == 2**63 - 1


def test_accepts_bytearray_and_memoryview() -> None:
    data = encode_message(GracefulPermdown(sender=A))
    assert decode_message(bytearray(data)) == GracefulPermdown(sender=A)
    assert decode_message(memoryview(b"xx" + data)[2:]) == GracefulPermdown(sender=A)


def test_accepts_non_canonical_spellings() -> None:
    text = (
        ' { "v" : 2 , "type" : "heartbeat" , "delta" : { "start" : [], "end" : [], '
        '"replica" : [ "\\u006eode-a" , 1 ] , "values" : [ ["b", 1, [ 2, "c", "t", "k", {} ]] ], '
        '"clouds" : [ ["b", 1, [[1, 2], [3, 3]]], ["a", 1, []] ] } , '
        '"sender" : ["node-a", 1], "clock" : [["b", 1, 0], ["a", 1, 2]] , "own" : 5 } '
    )
    message = decode_message(text.encode())
    b = ReplicaRef("b", 1)
    assert message == Heartbeat(
        sender=A,
        clock={b: 0, ReplicaRef("a", 1): 2, A: 5},
        delta=Delta(
            replica=A,
            values={b: {2: Entry("t", "k", "c", {}, b, 2)}},
            clouds={b: frozenset({1, 2, 3}), ReplicaRef("a", 1): frozenset()},
            start={},
            end={},
        ),
    )
    assert b"[[1,3]]" in encode_message(message)


# ------------------------------------------------------------------------ the caller's errors


@pytest.mark.parametrize("data", ["{}", None, 42, [1, 2], bytes])
def test_decode_wants_bytes(data: object) -> None:
    with pytest.raises(LocalProtocolError, match="data must be bytes"):
        decode_message(data)  # type: ignore[arg-type]


def test_decode_released_memoryview_is_the_callers_error() -> None:
    view = memoryview(b"{}")
    view.release()
    with pytest.raises(LocalProtocolError, match="cannot read"):
        decode_message(view)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": True}, "max_bytes"),
        ({"max_bytes": 1.5}, "max_bytes"),
        ({"max_dots": -1}, "max_dots"),
        ({"max_dots": "3"}, "max_dots"),
    ],
)
def test_decode_limits_must_be_ints(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        decode_message(b"{}", **kwargs)


def test_encode_over_max_bytes_is_limit_exceeded() -> None:
    message = Heartbeat(sender=A, clock={A: 5, B: 3})
    size = len(encode_message(message))
    assert len(encode_message(message, max_bytes=size)) == size
    with pytest.raises(LimitExceeded, match=f"{size} bytes, over max_bytes={size - 1}"):
        encode_message(message, max_bytes=size - 1)
    with pytest.raises(LocalProtocolError, match="max_bytes"):
        encode_message(message, max_bytes=0)


def entry_delta(
    entry: Entry, clouds: Mapping[ReplicaRef, frozenset[int]] | None = None
) -> Heartbeat:
    return Heartbeat(
        sender=A,
        clock={},
        delta=Delta(
            replica=A,
            values={entry.owner: {entry.clock: entry}},
            clouds={entry.owner: frozenset({entry.clock})} if clouds is None else clouds,
            start={},
            end={},
        ),
    )


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (Heartbeat(sender=ReplicaRef("a", 2**63), clock={}), r"heartbeat\.sender\.vsn"),
        (unchecked(Heartbeat, sender=A, clock={B: -1}, delta=None), r"heartbeat\.clock"),
        (unchecked(Heartbeat, sender=A, clock={B: True}, delta=None), r"heartbeat\.clock"),
        (
            unchecked(Heartbeat, sender=A, clock={A: -1}, delta=None),
            r"heartbeat\.own: the wire carries ints from 0 to 2\*\*63 - 1, not -1",
        ),
        (
            unchecked(Heartbeat, sender=A, clock={A: True}, delta=None),
            r"heartbeat\.own: the wire carries ints from 0 to 2\*\*63 - 1, not True",
        ),
        (
            unchecked(Heartbeat, sender=A, clock={A: 2**63}, delta=None),
            r"heartbeat\.own: the wire carries ints",
        ),
        (
            unchecked(Heartbeat, sender=A, clock={("a", 1): 1}, delta=None),
            "keys must be ReplicaRefs",
        ),
        (
            unchecked(TransferRequest, request_id=-1, sender=A, clock={}),
            r"transfer_request\.request_id",
        ),
        (
            unchecked(TransferRequest, request_id=True, sender=A, clock={}),
            r"transfer_request\.request_id",
        ),
        (
            TransferAck(
                request_id=1,
                sender=A,
                # Built past the constructor's own check, to prove the encoder guards too.
                payload=_trusted(
                    Delta, replica=A, values={}, clouds={A: frozenset({0})}, start={}, end={}
                ),
            ),
            r"transfer_ack\.payload\.clouds: dots are ints from 1",
        ),
        (
            entry_delta(unchecked_entry("t", "k", "c", {}, A, 0), {A: frozenset({1})}),
            "cannot be sent",
        ),
        (
            entry_delta(Entry("t", "k", "c", {}, A, 2), {A: frozenset({1})}),
            "must have seen its dot",
        ),
        (entry_delta(unchecked_entry("t", 5, "c", {}, A, 1)), "conn, topic and key are str"),
        (
            entry_delta(unchecked_entry("t", "k", "c", {"x": float("nan")}, A, 1)),
            "not JSON-compatible",
        ),
        (entry_delta(unchecked_entry("t", "k", "c", {"x": {1, 2}}, A, 1)), "not JSON-compatible"),
        (entry_delta(Entry("t", "\ud800", "c", {}, A, 1)), "not valid Unicode"),
        (entry_delta(Entry("t", "k", "c", {"\udfff": 1}, A, 1)), "not valid Unicode"),
        (
            TransferAck(
                request_id=1,
                sender=A,
                payload=Snapshot(
                    replica=A,
                    context={},
                    clouds={},
                    values={B: {1: Entry("t", "k", "c", {}, B, 1)}},
                ),
            ),
            r"owner \['node-b', 7\] is not in the context",
        ),
        (
            Heartbeat(
                sender=A,
                clock={},
                delta=Delta(replica=A, values={}, clouds={}, start={A: 5}, end={A: 4}),
            ),
            "end clock 4 .* below its start clock 5",
        ),
        (
            Heartbeat(
                sender=A,
                clock={},
                delta=_trusted(Delta, replica=("a", 1), values={}, clouds={}, start={}, end={}),
            ),
            r"heartbeat\.delta\.replica: expected a ReplicaRef, not tuple",
        ),
        ("not a message", "cannot encode a str"),
    ],
)
def test_encode_refuses_what_the_wire_cannot_carry(message: Message, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        encode_message(message)


# ------------------------------------------------------------------------------- one test per rule


def test_oversize_is_refused_before_parsing() -> None:
    garbage = b"\xff" * 101
    with pytest.raises(RemoteProtocolError, match=r"^message: 101 bytes, over max_bytes=100$"):
        decode_message(garbage, max_bytes=100)
    with pytest.raises(RemoteProtocolError, match="over max_bytes=100"):
        decode_message(memoryview(garbage), max_bytes=100)
    data = encode_message(GracefulPermdown(sender=A))
    assert decode_message(data, max_bytes=len(data)) == GracefulPermdown(sender=A)


@pytest.mark.parametrize(
    "data",
    [b"\xff", b'{"v":2,"type":"\xc3"}', b'{"v":2,"type":"\xed\xa0\x80"}', b"\xfe\xff\x00{"],
)
def test_invalid_utf8(data: bytes) -> None:
    assert rejected(data).message.startswith("message: not valid UTF-8")


def test_utf8_byte_order_mark() -> None:
    data = "\ufeff".encode() + encode_message(GracefulPermdown(sender=A))
    assert rejected(data).message.startswith("message: not valid JSON")


@pytest.mark.parametrize("data", [b"", b"{", b'{"v":2,', b"{'v':2}", b'{"v":2}x', b'"\x01"', b"01"])
def test_invalid_json(data: bytes) -> None:
    assert rejected(data).message.startswith("message: not valid JSON: ")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_constants(constant: str) -> None:
    data = f'{{"v":2,"type":"heartbeat","sender":["a",1],"own":null,"clock":[],"delta":{constant}}}'
    assert (
        rejected(data.encode()).message
        == f"message: not valid JSON: {constant} is not a JSON number"
    )


def test_numbers_that_overflow_a_float() -> None:
    state, _ = sample_state()
    message = TransferAck(request_id=1, sender=A, payload=state.extract(B, {A: 0}))
    data = encode_message(message).replace(b'"F1"', b"-1e400")
    assert rejected(data).message == "message: not valid JSON: the number -1e400 is out of range"


def test_duplicate_object_keys() -> None:
    data = b'{"v":2,"type":"graceful_permdown","sender":["a",1],"sender":["b",1]}'
    assert rejected(data).message == "message: not valid JSON: duplicate key 'sender' in an object"


def test_deep_nesting() -> None:
    data = b"[" * 100_000 + b"]" * 100_000
    assert rejected(data).message == DEEP
    data = b'{"v":2,"a":' * 50_000 + b"1" + b"}" * 50_000
    assert rejected(data).message == DEEP


def test_huge_integers() -> None:
    document = heartbeat_doc()
    for old, new in [
        (b'"clock": [["node-b", 7, 0]', b'"clock": [["node-b", 7, ' + b"9" * 5000 + b"]"),
        (b'"own": 4,', b'"own": ' + b"9" * 5000 + b","),
    ]:
        data = raw(document).replace(old, new)
        assert data != raw(document)
        error = rejected(data)
        assert error.message.startswith("message: not valid JSON: ")
        assert "digits" in error.message
    document["clock"][0][2] = 2**63
    assert rejected(document).message == (
        "heartbeat.clock[0].clock: 9223372036854775808 is above the wire's limit of 2**63 - 1"
    )
    document["clock"][0][2] = 2**63 - 1
    assert decode_message(raw(document)).clock[B] == 2**63 - 1  # type: ignore[union-attr]
    document["own"] = 2**63
    assert rejected(document).message == (
        "heartbeat.own: 9223372036854775808 is above the wire's limit of 2**63 - 1"
    )
    document["own"] = 2**63 - 1
    assert decode_message(raw(document)).clock[A] == 2**63 - 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (1, "message.v: unsupported wire version 1 (this codec speaks 2)"),
        (3, "message.v: unsupported wire version 3 (this codec speaks 2)"),
        (0, "message.v: unsupported wire version 0 (this codec speaks 2)"),
        ("2", "message.v: expected the wire version 2, got '2'"),
        ("1", "message.v: expected the wire version 2, got '1'"),
        (True, "message.v: expected the wire version 2, got true"),
        (2.0, "message.v: expected the wire version 2, got 2.0"),
        (1.0, "message.v: expected the wire version 2, got 1.0"),
        (None, "message.v: expected the wire version 2, got null"),
    ],
)
def test_wire_version(version: object, message: str) -> None:
    document = doc(GracefulPermdown(sender=A))
    document["v"] = version
    error = rejected(document)
    assert error.message == message
    assert error.replica is None
    del document["v"]
    assert rejected(document).message == "message.v: missing field (the wire version)"


V1_HEARTBEAT = (
    b'{"clock":[["node-b",7,0]],"delta":{"clouds":[["node-a",1,[[2,4]]]],'
    b'"end":[["node-a",1,4]],"replica":["node-a",1],"start":[["node-a",1,2]],'
    b'"values":[["node-a",1,[[3,"c3","room:lobby","carol",{"phx_ref":"F3","status":"online"}]]]]},'
    b'"own":4,"sender":["node-a",1],"type":"heartbeat","v":1}'
)
"""The heartbeat of :func:`heartbeat_doc` as wire version 1 wrote it: one array per entry."""

V1_MESSAGES = [
    b'{"clock":[["node-b",7,3]],"delta":null,"own":5,"sender":["node-a",1],"type":"heartbeat",'
    b'"v":1}',
    V1_HEARTBEAT,
    b'{"clock":[["node-a",1,2],["node-b",7,0]],"request_id":1,"sender":["node-b",7],'
    b'"type":"transfer_request","v":1}',
    b'{"payload":{"clouds":[],"context":[["node-a",1,4],["node-b",7,0]],"kind":"snapshot",'
    b'"replica":["node-a",1],"values":[["node-a",1,[[1,"c1","room:lobby","alice",'
    b'{"phx_ref":"F1","status":"online"}],[3,"c3","room:lobby","carol",'
    b'{"phx_ref":"F3","status":"online"}]]]]},"request_id":2,"sender":["node-a",1],'
    b'"type":"transfer_ack","v":1}',
    b'{"sender":["node-a",1],"type":"graceful_permdown","v":1}',
]
"""Messages recorded from wire version 1, by hand: an idle heartbeat, one with a delta, a
transfer request, a full state and a goodbye."""


@pytest.mark.parametrize(
    "data", V1_MESSAGES, ids=["idle heartbeat", "heartbeat", "request", "snapshot", "goodbye"]
)
def test_wire_version_1_is_refused(data: bytes) -> None:
    """Never guessed at, even when the body would read the same in version 2."""
    json.loads(data)  # well-formed: refused for its version alone
    error = rejected(data)
    assert error.message == "message.v: unsupported wire version 1 (this codec speaks 2)"
    assert error.replica is None
    # A tracker that knows both senders (it heard their version 2 heartbeats) takes nothing.
    tracker = make_tracker("z")
    for sender in (A, B):
        tracker.receive(encode_message(Heartbeat(sender=sender, clock={sender: 0})), now=0.0)
    before = observe(tracker)
    with pytest.raises(RemoteProtocolError, match="unsupported wire version 1"):
        tracker.receive(data, now=0.0)
    assert observe(tracker) == before


def test_a_version_1_body_cannot_pass_for_version_2() -> None:
    # Relabelled, the version 1 layout of entries (an array per entry) is refused by its shape.
    relabelled = V1_HEARTBEAT.replace(b'"v":1}', b'"v":2}')
    assert rejected(relabelled).message == (
        "heartbeat.delta.values[0].entries: expected an array of five items per entry: clock, "
        "conn, topic, key, meta, got an array of 1 item"
    )
    # The same heartbeat in version 2, the entry flattened by hand, is the documented one.
    flattened = relabelled.replace(
        b'[[3,"c3","room:lobby","carol",{"phx_ref":"F3","status":"online"}]]',
        b'[3,"c3","room:lobby","carol",{"phx_ref":"F3","status":"online"}]',
    )
    assert flattened != relabelled
    state, delta = sample_state()
    expected = Heartbeat(sender=A, clock=state.clocks()[1], delta=delta)
    assert decode_message(flattened) == expected
    assert encode_message(expected) == flattened
    assert raw(heartbeat_doc()) == json.dumps(json.loads(flattened)).encode()


@pytest.mark.parametrize("value", [[], "x", 1, None, True])
def test_top_level_must_be_an_object(value: object) -> None:
    assert rejected(raw(value)).message.startswith("message: expected a JSON object, got ")


@pytest.mark.parametrize("kind", ["hello", "Heartbeat", "", 1, None, ["heartbeat"]])
def test_unknown_type(kind: object) -> None:
    document = doc(GracefulPermdown(sender=A))
    document["type"] = kind
    error = rejected(document)
    assert error.message.startswith(
        "message.type: expected one of heartbeat, transfer_request, transfer_ack, "
        "graceful_permdown, got "
    )
    del document["type"]
    assert rejected(document).message == "message.type: missing field"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (heartbeat_doc, "sender"),
        (heartbeat_doc, "own"),
        (heartbeat_doc, "clock"),
        (heartbeat_doc, "delta"),
        (snapshot_doc, "request_id"),
        (snapshot_doc, "payload"),
        (lambda: doc(TransferRequest(request_id=1, sender=A, clock={})), "clock"),
        (lambda: doc(TransferRequest(request_id=1, sender=A, clock={})), "request_id"),
        (lambda: doc(GracefulPermdown(sender=A)), "sender"),
    ],
)
def test_missing_field(make: Callable[[], dict[str, Any]], field: str) -> None:
    document = make()
    del document[field]
    assert rejected(document).message == f"{document['type']}.{field}: missing field"


@pytest.mark.parametrize(
    ("make", "container", "field", "path"),
    [
        (heartbeat_doc, ("delta",), "values", "heartbeat.delta.values"),
        (heartbeat_doc, ("delta",), "end", "heartbeat.delta.end"),
        (snapshot_doc, ("payload",), "context", "transfer_ack.payload.context"),
        (snapshot_doc, ("payload",), "kind", "transfer_ack.payload.kind"),
        (ack_delta_doc, ("payload",), "start", "transfer_ack.payload.start"),
    ],
)
def test_missing_inner_field(
    make: Callable[[], dict[str, Any]], container: Path_, field: str, path: str
) -> None:
    document = make()
    del at(document, container)[field]
    assert rejected(document).message == f"{path}: missing field"


@pytest.mark.parametrize(
    ("make", "container", "path"),
    [
        (heartbeat_doc, (), "heartbeat"),
        (heartbeat_doc, ("delta",), "heartbeat.delta"),
        (snapshot_doc, ("payload",), "transfer_ack.payload"),
        (ack_delta_doc, ("payload",), "transfer_ack.payload"),
        (lambda: doc(GracefulPermdown(sender=A)), (), "graceful_permdown"),
    ],
)
def test_unknown_field(make: Callable[[], dict[str, Any]], container: Path_, path: str) -> None:
    document = make()
    at(document, container)["hmac"] = "x"
    error = rejected(document)
    assert error.message == f"{path}: unknown field 'hmac'"
    assert error.replica == "node-a"


def test_snapshot_fields_are_not_delta_fields() -> None:
    document = snapshot_doc()
    document["payload"]["kind"] = "delta"
    assert rejected(document).message == "transfer_ack.payload.start: missing field"
    document["payload"]["kind"] = "full"
    assert rejected(document).message == (
        "transfer_ack.payload.kind: expected 'delta', 'snapshot' or 'snapshot_part', got 'full'"
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("sender", 1), "heartbeat.sender.vsn: expected a non-negative int, got true"),
        (("clock", 0, 1), "heartbeat.clock[0].vsn: expected a non-negative int, got true"),
        (("clock", 0, 2), "heartbeat.clock[0].clock: expected a non-negative int, got true"),
        (("own",), "heartbeat.own: expected a non-negative int, got true"),
        (
            ("delta", "clouds", 0, 2, 0, 0),
            "heartbeat.delta.clouds[0].runs[0].first: expected a positive int, got true",
        ),
        (
            ("delta", "clouds", 0, 2, 0, 1),
            "heartbeat.delta.clouds[0].runs[0].last: expected a positive int, got true",
        ),
        (
            ("delta", "values", 0, 2, 0),
            "heartbeat.delta.values[0].entries[0].clock: expected a positive int, got true",
        ),
    ],
)
def test_bools_are_not_ints(path: Path_, message: str) -> None:
    document = heartbeat_doc()
    at(document, path[:-1])[path[-1]] = True
    assert rejected(document).message == message


def test_request_id() -> None:
    document = snapshot_doc()
    for value, shown in [
        (-1, "-1"),
        (True, "true"),
        (False, "false"),
        (1.0, "1.0"),
        ("1", "'1'"),
        (None, "null"),
    ]:
        document["request_id"] = value
        error = rejected(document)
        assert error.message == f"transfer_ack.request_id: expected a non-negative int, got {shown}"
        assert error.replica == "node-a"
    document = doc(TransferRequest(request_id=0, sender=A, clock={}))
    document["request_id"] = -5
    assert (
        rejected(document).message
        == "transfer_request.request_id: expected a non-negative int, got -5"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["node-a"], "heartbeat.sender: expected [name, vsn], got an array of 1 item"),
        (["node-a", 1, 2], "heartbeat.sender: expected [name, vsn], got an array of 3 items"),
        (
            {"name": "a", "vsn": 1},
            "heartbeat.sender: expected [name, vsn], got an object of 2 fields",
        ),
        (["", 1], "heartbeat.sender.name: expected a non-empty string, got ''"),
        ([1, 1], "heartbeat.sender.name: expected a non-empty string, got 1"),
        (["a", -1], "heartbeat.sender.vsn: expected a non-negative int, got -1"),
        (
            ["a", "x" * 50],
            "heartbeat.sender.vsn: expected a non-negative int, got '" + "x" * 40 + "'...",
        ),
    ],
)
def test_sender(value: object, message: str) -> None:
    document = heartbeat_doc()
    document["sender"] = value
    error = rejected(document)
    assert error.message == message
    assert error.replica is None


def test_errors_name_the_sender_once_read() -> None:
    document = heartbeat_doc()
    document["clock"].append(["node-c", "x", 1])
    error = rejected(document)
    assert error.message == "heartbeat.clock[1].vsn: expected a non-negative int, got 'x'"
    assert error.replica == "node-a"
    assert isinstance(error, RemoteProtocolError)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("clock",), {}, "heartbeat.clock: expected an array, got an object of 0 fields"),
        (
            ("clock", 0),
            ["a", 1],
            "heartbeat.clock[0]: expected [name, vsn, clock], got an array of 2 items",
        ),
        (("clock", 0, 2), -1, "heartbeat.clock[0].clock: expected a non-negative int, got -1"),
        (("clock", 0, 2), 1.5, "heartbeat.clock[0].clock: expected a non-negative int, got 1.5"),
        (
            ("delta", "start", 0, 2),
            -3,
            "heartbeat.delta.start[0].clock: expected a non-negative int, got -3",
        ),
        (
            ("delta", "end", 0, 0),
            "",
            "heartbeat.delta.end[0].name: expected a non-empty string, got ''",
        ),
    ],
)
def test_context_items(path: Path_, value: object, message: str) -> None:
    document = heartbeat_doc()
    at(document, path[:-1])[path[-1]] = value
    assert rejected(document).message == message


def test_context_clock_zero_is_fine() -> None:
    document = heartbeat_doc()
    assert document["clock"] == [["node-b", 7, 0]]
    document["own"] = 0
    message = decodes_or_rejects(raw(document))
    assert isinstance(message, Heartbeat)
    assert message.clock == {A: 0, B: 0}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "-1"),
        (True, "true"),
        (False, "false"),
        (4.0, "4.0"),
        ("4", "'4'"),
        ([4], "an array of 1 item"),
        ({}, "an object of 0 fields"),
    ],
)
def test_own_must_be_null_or_a_non_negative_int(value: object, shown: str) -> None:
    document = heartbeat_doc()
    document["own"] = value
    error = rejected(document)
    assert error.message == f"heartbeat.own: expected a non-negative int, got {shown}"
    assert error.replica == "node-a"


@pytest.mark.parametrize("own", [4, None])
@pytest.mark.parametrize("first", [True, False])
def test_the_senders_clock_is_not_in_clock(own: int | None, first: bool) -> None:
    document = heartbeat_doc()
    document["own"] = own
    document["clock"].insert(0 if first else 1, ["node-a", 1, 4])
    error = rejected(document)
    assert error.message == "heartbeat.clock: the sender's own clock belongs in heartbeat.own"
    assert error.replica == "node-a"


def test_own_null_means_the_clock_has_no_entry_for_the_sender() -> None:
    document = heartbeat_doc()
    document["own"] = None
    message = decodes_or_rejects(raw(document))
    assert isinstance(message, Heartbeat)
    assert message.sender == A
    assert message.clock == {B: 0}
    assert A not in message.clock
    assert encode_message(message) == (
        json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert b'"own":null' in encode_message(message)


@pytest.mark.parametrize(
    "clock",
    [{A: 5, B: 3}, {A: 0}, {A: MAX_WIRE_INT, ReplicaRef("node-a", 2): 1}, {B: 3}, {}],
)
def test_round_trip_keeps_the_senders_clock(clock: dict[ReplicaRef, int]) -> None:
    message = Heartbeat(sender=A, clock=clock)
    data = encode_message(message)
    decoded = decode_message(data)
    assert decoded == message
    assert isinstance(decoded, Heartbeat)
    assert decoded.clock == clock
    assert decoded.clock.get(A) == clock.get(A)
    document = json.loads(data)
    assert document["own"] == clock.get(A)
    assert ["node-a", 1] not in [item[:2] for item in document["clock"]]


def test_the_documented_heartbeat_carries_own() -> None:
    # node-a's own clock, 4, travels as "own"; "clock" holds node-b only.
    state, delta = sample_state()
    assert heartbeat_doc()["clock"] == [["node-b", 7, 0]]
    assert heartbeat_doc()["own"] == state.clocks()[1][A] == 4
    assert decode_message(raw(heartbeat_doc())) == Heartbeat(
        sender=A, clock=state.clocks()[1], delta=delta
    )


@pytest.mark.parametrize(
    ("make", "path", "message"),
    [
        (heartbeat_doc, ("clock",), "heartbeat.clock[1]: duplicate replica ['node-b', 7]"),
        (
            heartbeat_doc,
            ("delta", "start"),
            "heartbeat.delta.start[1]: duplicate replica ['node-a', 1]",
        ),
        (
            heartbeat_doc,
            ("delta", "clouds"),
            "heartbeat.delta.clouds[1]: duplicate replica ['node-a', 1]",
        ),
        (
            heartbeat_doc,
            ("delta", "values"),
            "heartbeat.delta.values[1]: duplicate owner ['node-a', 1]",
        ),
        (
            snapshot_doc,
            ("payload", "context"),
            "transfer_ack.payload.context[2]: duplicate replica ['node-a', 1]",
        ),
    ],
)
def test_duplicate_replicas(make: Callable[[], dict[str, Any]], path: Path_, message: str) -> None:
    document = make()
    items = at(document, path)
    items.append(json.loads(json.dumps(items[0])))
    assert rejected(document).message == message


def test_same_name_other_incarnation_is_not_a_duplicate() -> None:
    document = heartbeat_doc()
    document["clock"].append(["node-b", 8, 9])
    # Nor is it the sender: another incarnation of the sender's name belongs in the clock.
    document["clock"].append(["node-a", 2, 9])
    message = decodes_or_rejects(raw(document))
    assert isinstance(message, Heartbeat)
    assert message.clock == {A: 4, B: 0, ReplicaRef("node-b", 8): 9, ReplicaRef("node-a", 2): 9}


ASCEND = " (runs ascend without overlap)"


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        (
            {},
            "runs: expected an array of [first, last] runs, got an object of 0 fields",
        ),
        ([[0, 4]], "runs[0].first: expected a positive int, got 0"),
        ([[-2, 4]], "runs[0].first: expected a positive int, got -2"),
        ([[2, 0]], "runs[0].last: expected a positive int, got 0"),
        ([[4, 2]], "runs[0]: first 4 is above last 2"),
        (
            [[2, 4], [4, 4]],
            "runs[1]: run [4, 4] overlaps or precedes the previous run, which ends at 4" + ASCEND,
        ),
        (
            [[2, 4], [3, 9]],
            "runs[1]: run [3, 9] overlaps or precedes the previous run, which ends at 4" + ASCEND,
        ),
        (
            [[6, 7], [2, 4]],
            "runs[1]: run [2, 4] overlaps or precedes the previous run, which ends at 7" + ASCEND,
        ),
        ([[2, 4], 5], "runs[1]: expected a run [first, last], got 5"),
        (
            [[2, 4, 5]],
            "runs[0]: expected a run [first, last], got an array of 3 items",
        ),
        (
            [[2, 2**63]],
            "runs[0].last: 9223372036854775808 is above the wire's limit of 2**63 - 1",
        ),
    ],
)
def test_runs(runs: object, message: str) -> None:
    document = heartbeat_doc()
    document["delta"]["clouds"][0][2] = runs
    assert rejected(document).message == f"heartbeat.delta.clouds[0].{message}"


def test_adjacent_runs_and_empty_clouds_are_fine() -> None:
    document = heartbeat_doc()
    document["delta"]["clouds"][0][2] = [[2, 2], [3, 4]]
    document["delta"]["clouds"].append(["node-b", 7, []])
    message = decodes_or_rejects(raw(document))
    assert isinstance(message, Heartbeat)
    assert message.delta is not None
    assert message.delta.clouds == {A: frozenset({2, 3, 4}), B: frozenset()}


def test_max_dots() -> None:
    document = heartbeat_doc()
    document["delta"]["clouds"][0][2] = [[1, 9_000_000_000_000_000_000]]
    error = rejected(document)
    assert error.message == (
        "heartbeat.delta.clouds[0].runs[0]: the message holds more than max_dots=65536 dots"
    )
    assert error.replica == "node-a"
    # The limit is on the whole message, summed over runs and replicas.
    document["delta"]["clouds"] = [["node-a", 1, [[2, 4]]], ["node-b", 7, [[1, 1], [5, 6]]]]
    assert isinstance(decode_message(raw(document), max_dots=6), Heartbeat)
    assert rejected(document, max_dots=5).message == (
        "heartbeat.delta.clouds[1].runs[1]: the message holds more than max_dots=5 dots"
    )
    document = snapshot_doc()
    document["payload"]["clouds"] = [["node-b", 7, [[5, 10]]]]
    assert rejected(document, max_dots=5).message == (
        "transfer_ack.payload.clouds[0].runs[0]: the message holds more than max_dots=5 dots"
    )


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, 0, "clock: expected a positive int, got 0"),
        (0, -1, "clock: expected a positive int, got -1"),
        (0, "3", "clock: expected a positive int, got '3'"),
        (1, 7, "conn: expected a string, got 7"),
        (2, None, "topic: expected a string, got null"),
        (3, ["k"], "key: expected a string, got an array of 1 item"),
        (4, [], "meta: expected an object, got an array of 0 items"),
        (4, "online", "meta: expected an object, got 'online'"),
        (4, None, "meta: expected an object, got null"),
    ],
)
def test_entry_fields(index: int, value: object, message: str) -> None:
    document = heartbeat_doc()
    document["delta"]["values"][0][2][index] = value  # the first entry: items 0 to 4
    error = rejected(document)
    assert error.message == f"heartbeat.delta.values[0].entries[0].{message}"
    assert error.replica == "node-a"
    # The second entry of a full state is items 5 to 9, named by its entry index.
    document = snapshot_doc()
    entries = document["payload"]["values"][0][2]
    assert len(entries) == 10
    entries[5 + index] = value
    error = rejected(document)
    assert error.message == f"transfer_ack.payload.values[0].entries[1].{message}"


def test_an_error_names_the_entry_by_its_index_not_its_items() -> None:
    state = ReplicaState(A)
    for i in range(6):
        state.join(f"c{i}", "room", f"k{i}", {"n": i})
    document = doc(TransferAck(request_id=1, sender=A, payload=state.extract(B, {A: 0})))
    entries = document["payload"]["values"][0][2]
    assert len(entries) == 30
    assert entries[15:20] == [4, "c3", "room", "k3", {"n": 3}]
    entries[15] = "4"  # the 4th entry's clock
    assert rejected(document).message == (
        "transfer_ack.payload.values[0].entries[3].clock: expected a positive int, got '4'"
    )
    entries[15] = 4
    entries[29] = []  # the 6th entry's meta, the last item
    assert rejected(document).message == (
        "transfer_ack.payload.values[0].entries[5].meta: expected an object, got an array of 0 "
        "items"
    )


FIVE = "expected an array of five items per entry: clock, conn, topic, key, meta"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, ": expected [name, vsn, entries], got an object of 0 fields"),
        (["node-a", 1], ": expected [name, vsn, entries], got an array of 2 items"),
        (
            ["node-a", 1, {}],
            ".entries: expected an array, got an object of 0 fields",
        ),
        (["node-a", 1, "x"], ".entries: expected an array, got 'x'"),
        (["node-a", 1, None], ".entries: expected an array, got null"),
        (["node-a", 1, 5], ".entries: expected an array, got 5"),
        (["node-a", 1, [3, "c", "t", "k"]], f".entries: {FIVE}, got an array of 4 items"),
        (["node-a", 1, ["x"]], f".entries: {FIVE}, got an array of 1 item"),
        # An array per entry, as wire version 1 had them:
        (["node-a", 1, [[3, "c", "t", "k", {}]]], f".entries: {FIVE}, got an array of 1 item"),
        (
            ["node-a", 1, [[3, "c", "t", "k", {}], [4, "c", "t", "k", {}]]],
            f".entries: {FIVE}, got an array of 2 items",
        ),
    ],
)
def test_value_groups(value: object, message: str) -> None:
    document = heartbeat_doc()
    document["delta"]["values"][0] = value
    assert rejected(document).message == f"heartbeat.delta.values[0]{message}"


@pytest.mark.parametrize("length", [1, 4, 6, 9, 11, 14, 16])
def test_entries_must_be_five_items_each(length: int) -> None:
    """Refused by its length alone, before any item is looked at, in every kind of payload."""
    items: list[object] = [3, "c3", "room:lobby", "carol", {"status": "online"}] * 4
    for make, payload in [
        (heartbeat_doc, "delta"),
        (ack_delta_doc, "payload"),
        (snapshot_doc, "payload"),
    ]:
        document = make()
        document[payload]["values"][0][2] = items[:length]
        assert rejected(document).message == (
            f"{document['type']}.{payload}.values[0].entries: {FIVE}, got an array of {length} "
            f"item{'' if length == 1 else 's'}"
        )
    # The same in a part of a full state, and for an owner after the first.
    document = doc(
        TransferAck(
            request_id=1,
            sender=A,
            payload=SnapshotPart(
                replica=A,
                context={A: 4, B: 2},
                ranges={A: (0, 4), B: (0, 2)},
                clouds={},
                values={A: {}, B: {1: Entry("t", "k", "c", {}, B, 1)}},
            ),
            part=0,
            parts=2,
        )
    )
    assert document["payload"]["values"][1] == ["node-b", 7, [1, "c", "t", "k", {}]]
    document["payload"]["values"][1][2] = ["x"] * length
    assert rejected(document).message == (
        f"transfer_ack.payload.values[1].entries: {FIVE}, got an array of {length} "
        f"item{'' if length == 1 else 's'}"
    )


@pytest.mark.parametrize("entries", [0, 1, 2, 3])
def test_any_multiple_of_five_items_is_that_many_entries(entries: int) -> None:
    """Zero items is an owner without entries; each five more is one more entry."""
    document = snapshot_doc()
    document["payload"]["context"][0][2] = 10
    document["payload"]["values"][0][2] = [
        item
        for clock in range(1, entries + 1)
        for item in (clock, f"c{clock}", "t", f"k{clock}", {"n": clock})
    ]
    message = decodes_or_rejects(raw(document))
    assert isinstance(message, TransferAck)
    assert message.payload.values == {
        A: {
            clock: Entry("t", f"k{clock}", f"c{clock}", {"n": clock}, A, clock)
            for clock in range(1, entries + 1)
        }
    }


def test_empty_strings_in_entries_are_fine() -> None:
    document = heartbeat_doc()
    document["delta"]["values"][0][2][1:4] = ["", "", ""]
    message = decodes_or_rejects(raw(document))
    assert isinstance(message, Heartbeat)
    assert message.delta is not None
    ((entry,),) = [rows.values() for rows in message.delta.values.values()]
    assert (entry.conn, entry.topic, entry.key) == ("", "", "")


def test_duplicate_dots_in_entries() -> None:
    document = heartbeat_doc()
    entries = document["delta"]["values"][0][2]
    entries.extend([3, "c9", "t", "k", {}])
    assert rejected(document).message == (
        "heartbeat.delta.values[0].entries[1].clock: duplicate dot 3 of ['node-a', 1]"
    )


def nested(levels: int, key: str = "level") -> dict[str, Any]:
    """A JSON object ``levels`` objects deep (``{}`` is one level)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {key: value}
    return value


def test_meta_deeper_than_copy_meta_allows() -> None:
    document = heartbeat_doc()
    document["delta"]["values"][0][2][4] = nested(MAX_DEPTH + 1)
    error = rejected(document)
    assert error.message.startswith("heartbeat.delta.values[0].entries[0].meta: meta['level']")
    assert error.message.endswith("nests deeper than 32 levels")
    assert len(error.message) < 300
    assert isinstance(error.__cause__, LocalProtocolError)
    document["delta"]["values"][0][2][4] = nested(MAX_DEPTH + 1, key="")
    assert rejected(document).message == (
        "heartbeat.delta.values[0].entries[0].meta: meta"
        + "['']" * MAX_DEPTH
        + " nests deeper than 32 levels"
    )
    # As deep as copy_meta allows is fine, and nested metas come back intact.
    document["delta"]["values"][0][2][4] = nested(MAX_DEPTH)
    message = decodes_or_rejects(raw(document))
    assert isinstance(message, Heartbeat)
    assert message.delta is not None
    assert next(message.delta.entries()).meta == nested(MAX_DEPTH)


def test_delta_entry_outside_its_clouds() -> None:
    document = heartbeat_doc()
    document["delta"]["values"][0][2][0] = 9
    error = rejected(document)
    assert error.message == (
        "heartbeat.delta.values[0].entries[0].clock: dot 9 of ['node-a', 1] is outside what the "
        "payload has seen (context 0, clouds without it)"
    )
    document["delta"]["values"].append(["node-b", 7, [1, "c", "t", "k", {}]])
    document["delta"]["values"][0][2][0] = 3
    assert rejected(document).message == (
        "heartbeat.delta.values[1].entries[0].clock: dot 1 of ['node-b', 7] is outside what the "
        "payload has seen (context 0, clouds empty)"
    )


def test_snapshot_entry_outside_its_context_and_clouds() -> None:
    document = snapshot_doc()
    document["payload"]["values"][0][2][5] = 5  # the second entry's clock
    assert rejected(document).message == (
        "transfer_ack.payload.values[0].entries[1].clock: dot 5 of ['node-a', 1] is outside what "
        "the payload has seen (context 4, clouds empty)"
    )
    document["payload"]["clouds"] = [["node-a", 1, [[5, 5]]]]
    assert decodes_or_rejects(raw(document)) is not None


def test_snapshot_owner_outside_its_context() -> None:
    document = snapshot_doc()
    document["payload"]["values"].append(["node-z", 1, []])
    assert rejected(document).message == (
        "transfer_ack.payload.values[1]: owner ['node-z', 1] is not in the payload's context"
    )


def test_delta_end_below_start() -> None:
    document = heartbeat_doc()
    document["delta"]["end"] = [["node-a", 1, 1]]
    assert rejected(document).message == (
        "heartbeat.delta.end[0].clock: 1 is below the start clock 2 of ['node-a', 1]"
    )


def test_delta_must_be_null_or_an_object() -> None:
    document = heartbeat_doc()
    document["delta"] = []
    assert (
        rejected(document).message
        == "heartbeat.delta: expected null or an object, got an array of 0 items"
    )
    document = snapshot_doc()
    document["payload"] = None
    assert rejected(document).message == "transfer_ack.payload: expected an object, got null"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            b'"alice"',
            b'"al\\udce9"',
            # Lone surrogates are named by their place in the JSON: the 4th item of the
            # entries, the first entry's key.
            "transfer_ack.payload.values[0][2][3]: a string holds a lone surrogate",
        ),
        (
            b'"status"',
            b'"\\ud800s"',
            "transfer_ack.payload.values[0][2][4]: a key holds a lone surrogate",
        ),
        (
            b'"F3"',
            b'["\\udbff"]',
            "transfer_ack.payload.values[0][2][9].phx_ref[0]: a string holds",
        ),
        (
            b'"replica":["node-a"',
            b'"replica":["\\ud83d"',
            "transfer_ack.payload.replica[0]: a string holds",
        ),
        (
            b'"sender":["node-a"',
            b'"sender":["node-\\udc00"',
            "transfer_ack.sender.name: a string holds",
        ),
    ],
)
def test_lone_surrogates(old: bytes, new: bytes, message: str) -> None:
    data = encode_message(
        TransferAck(request_id=2, sender=A, payload=sample_state()[0].extract(B, {A: 0, B: 0}))
    )
    assert old in data
    error = rejected(data.replace(old, new, 1))
    assert error.message.startswith(message)
    assert error.message.endswith("it is not valid Unicode")


def test_escaped_surrogate_pairs_are_fine() -> None:
    data = encode_message(GracefulPermdown(sender=ReplicaRef("node-😀", 1)))
    escaped = data.replace("😀".encode(), b"\\ud83d\\ude00")
    assert escaped != data
    assert decode_message(escaped) == GracefulPermdown(sender=ReplicaRef("node-😀", 1))
    assert decode_message(data.replace(b"node-", b"\\\\ud800-")) == GracefulPermdown(
        sender=ReplicaRef("\\ud800-😀", 1)
    )


def test_error_messages_stay_short() -> None:
    document = heartbeat_doc()
    document["sender"] = ["x" * 100_000, 1]
    document["clock"] = "y" * 100_000
    assert len(rejected(document).message) < 200
    document = heartbeat_doc()
    document["zzz" * 10_000] = 1
    assert len(rejected(document).message) < 200


# ------------------------------------------------------------------------------------ nesting

DEEP = f"message: not valid JSON: it nests deeper than {MAX_NESTING} levels"

QUOTE, BACKSLASH = ord('"'), ord("\\")


def parser_depth(data: bytes) -> int:
    """The deepest a JSON parser can get in ``data`` before it must stop: an upper bound.

    Brackets outside strings, as a parser lexes them (a backslash in a string escapes the next
    byte), up to where no JSON parser goes on: a backslash outside a string, or a bracket that
    closes nothing.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == BACKSLASH:
                escaped = True
            elif byte == QUOTE:
                in_string = False
        elif byte == QUOTE:
            in_string = True
        elif byte == BACKSLASH:
            break
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            if depth == 0:
                break
            depth -= 1
    return deepest


def json_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    return 0


def too_deep(data: bytes) -> bool:
    """Whether decoding ``data`` stops at the nesting scan, before the parser."""
    try:
        decode_message(data)
    except RemoteProtocolError as exc:
        return exc.message == DEEP
    return False


@pytest.mark.parametrize("levels", [1, MAX_NESTING - 1, MAX_NESTING])
@pytest.mark.parametrize(("open_", "close"), [("[", "]"), ('{"a":', "}")])
def test_nesting_up_to_the_limit_reaches_the_parser(levels: int, open_: str, close: str) -> None:
    inner = "[]" if open_ == "[" else "{}"
    data = (open_ * (levels - 1) + inner + close * (levels - 1)).encode()
    assert json_depth(json.loads(data)) == levels
    assert not too_deep(data)
    assert rejected(data).message != DEEP
    deeper = open_.encode() + data + close.encode()
    assert json_depth(json.loads(deeper)) == levels + 1
    assert too_deep(deeper) is (levels + 1 > MAX_NESTING)


def stack_depth() -> int:
    frame, depth = sys._getframe(), 1
    while frame.f_back is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


@pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="from 3.12 the C parser has a recursion limit of its own"
)
def test_a_caller_deep_in_its_stack_gets_a_remote_protocol_error() -> None:
    """Up to 3.11 the parser's levels count against the Python recursion limit: a document that
    passes the nesting scan can still exhaust what is left of it."""
    data = b"[" * (MAX_NESTING - 4) + b"]" * (MAX_NESTING - 4)
    assert not too_deep(data)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(stack_depth() + 30)
    try:
        with pytest.raises(RemoteProtocolError) as info:
            decode_message(data)
    finally:
        sys.setrecursionlimit(old)
    assert info.value.message == "message: not valid JSON: it nests too deeply"
    assert isinstance(info.value.__cause__, RecursionError)


def test_a_recursion_error_in_the_parser_is_a_remote_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same on every version (from 3.12, no document the nesting scan lets through gets the
    parser anywhere near its own limit, so the parser is made to raise)."""

    class Exhausted:
        def decode(self, text: str) -> object:
            raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("presence_core._codec._DECODER", Exhausted())
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(b"[[]]")
    assert info.value.message == "message: not valid JSON: it nests too deeply"
    assert isinstance(info.value.__cause__, RecursionError)


def test_a_valid_message_nests_well_within_the_limit() -> None:
    # The envelope puts a meta 5 levels down (message, payload, values, owner, entries); a
    # meta nests MAX_DEPTH levels at most.
    for document, path in [
        (heartbeat_doc(), ("delta", "values", 0, 2, 4)),
        (snapshot_doc(), ("payload", "values", 0, 2, 9)),
    ]:
        at(document, path[:-1])[path[-1]] = nested(MAX_DEPTH)
        assert json_depth(document) == 5 + MAX_DEPTH < MAX_NESTING
        assert isinstance(decode_message(raw(document)), (Heartbeat, TransferAck))
        # A meta as deep as the nesting scan allows is still refused by its path.
        at(document, path[:-1])[path[-1]] = nested(MAX_NESTING - 5)
        assert json_depth(document) == MAX_NESTING
        assert "].meta: meta['level']" in rejected(document).message
        assert rejected(document).message != DEEP


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ('["' + "[" * 1000 + '"]', False),  # brackets in a string are text
        ('{"' + "{" * 1000 + '":1}', False),  # in a key too
        ('["\\"' + "[" * 1000 + '"]', False),  # an escaped quote does not end the string
        ('["\\\\\\"' + "[" * 1000 + '"]', False),  # nor one after an escaped backslash
        ('["\\\\",' + "[" * 100 + "]" * 100 + "]", True),  # an escaped backslash does not escape
        ('["\\u005c",' + "[" * 100 + "]" * 100 + "]", True),  # nor does \u005c (a backslash)
        ("[" * 40 + '"' + "[" * 100, False),  # unterminated: the rest is in the string
        ("[" * 100 + "}" * 100, True),  # wrong closing brackets past the limit: refused anyway
        ("]" * 100 + "[" * 65, True),  # a closing bracket first: not JSON, refused anyway
        ("[[]" * 100 + "]" * 100, True),  # no run of 65 "[", but 101 levels
        ("[" + "[]," * 100_000 + "[]]", False),  # wide, not deep
        ('["[",' * 100 + "0" + "]" * 100, True),  # strings with brackets between real ones
        ('["]",' * 100 + "0" + "]" * 100, True),
        ('{"":' * 65 + "0" + "}" * 65, True),
    ],
)
def test_the_nesting_scan_reads_strings_as_the_parser_does(text: str, deep: bool) -> None:
    data = text.encode()
    assert too_deep(data) is deep
    if not deep:
        assert parser_depth(data) <= MAX_NESTING


scan_pieces = st.sampled_from(
    ["[", "]", "{", "}", '"', "\\", "\\\\", '\\"', "a", ",", "[" * 30, "]" * 30, '"[[[["', "]]]]"]
)


@given(st.lists(scan_pieces, max_size=60).map("".join))
def test_the_nesting_scan_never_lets_a_deep_text_through(text: str) -> None:
    data = text.encode()
    if not too_deep(data):
        assert parser_depth(data) <= MAX_NESTING


json_texts = st.text(st.sampled_from([*'[]{}"\\/ab', "\n", "é", "\u2028", "😀"]), max_size=6)
shallow_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.integers() | json_texts,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(json_texts, children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def deep_json(draw: st.DrawFn) -> Any:
    """A JSON value wrapped in about MAX_NESTING levels of arrays and objects."""
    value = draw(shallow_json)
    for _ in range(draw(st.integers(MAX_NESTING - 8, MAX_NESTING + 2))):
        if draw(st.booleans()):
            value = [draw(shallow_json), value] if draw(st.booleans()) else [value]
        else:
            value = {draw(json_texts): value}
    return value


@given(deep_json(), st.booleans(), st.sampled_from([None, 1]))
def test_the_nesting_scan_is_exact_on_json(
    value: Any, ascii_only: bool, indent: int | None
) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode()
    assert too_deep(data) is (json_depth(value) > MAX_NESTING)


CHILD = """
import resource, sys, threading
from presence_core import RemoteProtocolError, decode_message

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.setrecursionlimit(10**6)
threading.stack_size(256 * 1024)
half = 512 * 1024
documents = [
    b"[" * half + b"]" * half,
    b"[" * (2 * half),
    b'{"a":' * (2 * half // 5),
    (b'["x",{"k":' * (2 * half // 10))[: 2 * half],
]
outcomes = []


def decode_all():
    for data in documents:
        assert len(data) <= 2 * half
        try:
            decode_message(data)
        except RemoteProtocolError as exc:
            outcomes.append(exc.message)


thread = threading.Thread(target=decode_all)
thread.start()
thread.join()
print("\\n".join(outcomes))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the resource module is Unix only")
def test_deep_nesting_cannot_crash_the_process() -> None:
    """With the recursion limit raised and a small stack, the JSON parser alone segfaults."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [DEEP] * 4


# ---------------------------------------------------------------------------- rejection cost

COST_MULTIPLE = 50
"""Refusing a message never takes more traced memory than this many times its size."""


def _filled(head: bytes, item: bytes, tail: bytes) -> bytes:
    """``head``, ``item`` repeated (with commas) and ``tail``, up to DEFAULT_MAX_BYTES."""
    count = (DEFAULT_MAX_BYTES - len(head) - len(tail) + 1) // (len(item) + 1)
    return head + b",".join([item] * count) + tail


def _refused_delta(clouds: bytes, values: bytes = b"") -> bytes:
    """A heartbeat with these clouds and values, refused at its last entry (a topic of 0)."""
    bad = b'["b",1,[1,"c",0,"k",{}]]'
    return (
        b'{"v":2,"type":"heartbeat","sender":["a",1],"own":1,"clock":[],"delta":{'
        b'"replica":["a",1],"start":[],"end":[],"clouds":'
        + clouds
        + b',"values":['
        + (values + b"," if values else b"")
        + bad
        + b"]}}"
    )


def _entries(count: int) -> bytes:
    return (
        b'["a",1,['
        + b",".join(
            b'%d,"c%d","room","k%d",{"phx_ref":"F%d","n":1}' % (i, i, i, i)
            for i in range(1, count + 1)
        )
        + b"]]"
    )


def _one_dot_runs(count: int) -> bytes:
    return b'[["a",1,[' + b",".join(b"[%d,%d]" % (i, i) for i in range(1, 2 * count, 2)) + b"]]]"


WORST: dict[str, Callable[[], bytes]] = {
    "deep brackets": lambda: b"[" * (DEFAULT_MAX_BYTES // 2) + b"]" * (DEFAULT_MAX_BYTES // 2),
    "deep, interleaved": lambda: (
        b"[[]" * (DEFAULT_MAX_BYTES // 4) + b"]" * (DEFAULT_MAX_BYTES // 4)
    ),
    "as deep as allowed": lambda: _filled(
        b"[", b"[" * (MAX_NESTING - 1) + b"]" * (MAX_NESTING - 1), b"]"
    ),
    "tiny arrays": lambda: _filled(b"[", b"[]", b"]"),
    "tiny objects": lambda: _filled(b"[", b"{}", b"]"),
    "small nested arrays": lambda: _filled(b"[", b"[[[[]]]]", b"]"),
    "objects of one key": lambda: _filled(b"[", b'{"a":0}', b"]"),
    "short strings": lambda: _filled(b"[", b'"ab"', b"]"),
    "floats": lambda: _filled(b"[", b"1.5", b"]"),
    "ints near the digit limit": lambda: _filled(b"[", b"9" * 4300, b"]"),
    "distinct keys": lambda: (
        b"{" + b",".join(b'"k%d":0' % i for i in range(DEFAULT_MAX_BYTES // 12)) + b"}"
    ),
    "duplicate keys": lambda: _filled(b"{", b'"a":1', b"}"),
    "escapes": lambda: b'["' + b"\\u0041" * ((DEFAULT_MAX_BYTES - 4) // 6) + b'"]',
    "escaped backslashes": lambda: b'["' + b"\\\\" * ((DEFAULT_MAX_BYTES - 4) // 2) + b'"]',
    "lone surrogates": lambda: b'["' + b"\\ud800" * ((DEFAULT_MAX_BYTES - 4) // 6) + b'"]',
    "max_dots in one run": lambda: _refused_delta(b'[["a",1,[[1,%d]]]]' % DEFAULT_MAX_DOTS),
    "max_dots in runs of one": lambda: _refused_delta(_one_dot_runs(DEFAULT_MAX_DOTS)),
    "runs past max_dots": lambda: _refused_delta(_one_dot_runs(70_000)),
    "replicas past max_replicas": lambda: (
        b'{"v":2,"type":"transfer_request","request_id":1,"sender":["a",1],"clock":['
        + b",".join(b'["n%d",0,0]' % i for i in range(60_000))
        + b"]}"
    ),
    "entries, the last one wrong": lambda: _refused_delta(
        b'[["a",1,[[1,15000]]]]', _entries(15_000)
    ),
}


WORST_REFUSAL: dict[str, str] = {
    "max_dots in one run": "heartbeat.delta.values[0].entries[0].topic: expected a string",
    "max_dots in runs of one": "heartbeat.delta.values[0].entries[0].topic: expected a string",
    "runs past max_dots": "heartbeat.delta.clouds[0].runs[65536]: the message holds more than "
    "max_dots=65536 dots",
    "replicas past max_replicas": "transfer_request.clock: 60000 replicas, over max_replicas=",
    "entries, the last one wrong": "heartbeat.delta.values[1].entries[0].topic: expected a string",
}
"""Why the inputs written as messages are refused: where the test means them to be (their
work done), not earlier (at the wire version, say)."""


@pytest.mark.parametrize("name", sorted(WORST_REFUSAL))
def test_the_worst_messages_are_refused_where_meant(name: str) -> None:
    assert rejected(WORST[name]()).message.startswith(WORST_REFUSAL[name])


def test_the_worst_entries_are_valid_but_for_the_last() -> None:
    """The 15,000 entries decode when the last, wrong one is left out."""
    data = WORST["entries, the last one wrong"]()
    valid = data.replace(b',["b",1,[1,"c",0,"k",{}]]', b"")
    assert valid != data
    message = decode_message(valid)
    assert isinstance(message, Heartbeat)
    assert message.delta is not None
    rows = message.delta.values[ReplicaRef("a", 1)]
    assert len(rows) == 15_000
    owner = ReplicaRef("a", 1)
    for clock in (1, 15_000):
        meta: dict[str, JSONValue] = {"phx_ref": f"F{clock}", "n": 1}
        assert rows[clock] == Entry("room", f"k{clock}", f"c{clock}", meta, owner, clock)


@pytest.mark.parametrize("name", sorted(WORST))
def test_refusing_the_worst_inputs_costs_a_bounded_multiple_of_their_size(name: str) -> None:
    data = WORST[name]()
    assert len(data) <= DEFAULT_MAX_BYTES
    # Whitespace after the document is JSON: every input is exactly as large as allowed.
    data += b" " * (DEFAULT_MAX_BYTES - len(data))
    gc.collect()
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError):
            decode_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < COST_MULTIPLE * len(data), f"{name}: {peak / len(data):.1f} times its size"


# ------------------------------------------------------------------------------ remote limits


def compact_size(meta: Mapping[str, Any]) -> int:
    """A meta's size as ``Tracker.track`` measures it."""
    return len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())


def test_decode_limits_are_the_trackers_own() -> None:
    limits, config = DecodeLimits(), TrackerConfig()
    assert limits.max_meta_bytes == config.max_meta_bytes
    assert limits.max_conn_bytes == config.max_conn_bytes
    assert limits.max_topic_bytes == config.max_topic_bytes
    assert limits.max_key_bytes == config.max_key_bytes


@pytest.mark.parametrize("field", [field.name for field in attrs.fields(DecodeLimits)])
@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3", None])
def test_decode_limits_are_ints_of_at_least_one(field: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=f"^{field} must be an int >= 1, not "):
        DecodeLimits(**{field: bad})  # type: ignore[arg-type]
    assert getattr(DecodeLimits(**{field: 1}), field) == 1


def test_limits_must_be_decode_limits() -> None:
    with pytest.raises(LocalProtocolError, match="limits must be a DecodeLimits, not dict"):
        decode_message(b"{}", limits={"max_meta_bytes": 1})  # type: ignore[arg-type]


def entries_heartbeat(*metas: str, topic: str = "t") -> bytes:
    """A heartbeat whose delta holds one entry per meta, each written as the JSON text given."""
    entries = ",".join(
        f'{i},"c{i}",{json.dumps(topic)},"k",{meta}' for i, meta in enumerate(metas, 1)
    )
    return (
        '{"v":2,"type":"heartbeat","sender":["a",1],"own":null,"clock":[],"delta":{'
        f'"replica":["a",1],"start":[],"end":[],"clouds":[["a",1,[[1,{len(metas)}]]]],'
        f'"values":[["a",1,[{entries}]]]}}}}'
    ).encode()


def test_entries_heartbeat_holds_the_entries_it_says() -> None:
    a = ReplicaRef("a", 1)
    data = entries_heartbeat('{"x":[1]}', "{}", topic="room")
    assert b'"values":[["a",1,[1,"c1","room","k",{"x":[1]},2,"c2","room","k",{}]]]' in data
    assert decode_message(data) == Heartbeat(
        sender=a,
        clock={},
        delta=Delta(
            replica=a,
            values={
                a: {
                    1: Entry("room", "k", "c1", {"x": [1]}, a, 1),
                    2: Entry("room", "k", "c2", {}, a, 2),
                }
            },
            clouds={a: frozenset({1, 2})},
            start={},
            end={},
        ),
    )


def meta_text(size: int) -> str:
    """A flat meta that is ``size`` bytes as compact JSON."""
    text = '{"phx_ref":"F1","pad":"' + "x" * (size - 25) + '"}'
    assert compact_size(json.loads(text)) == size
    return text


@pytest.mark.parametrize("limit", [30, 100, 1000, DecodeLimits().max_meta_bytes])
@pytest.mark.parametrize("others", [0, 1, 300])
def test_a_meta_over_max_meta_bytes_is_refused(limit: int, others: int) -> None:
    """At the limit is fine and one byte over is not, in small messages and in large ones."""
    limits = DecodeLimits(max_meta_bytes=limit)
    small = ['{"phx_ref":"F1"}'] * others
    message = decode_message(entries_heartbeat(*small, meta_text(limit)), limits=limits)
    assert isinstance(message, Heartbeat)
    assert message.delta is not None
    assert compact_size(message.delta.values[ReplicaRef("a", 1)][others + 1].meta) == limit
    error = rejected_with(entries_heartbeat(*small, meta_text(limit + 1)), limits)
    assert error.message == (
        f"heartbeat.delta.values[0].entries[{others}].meta: {limit + 1} bytes as compact JSON, "
        f"over max_meta_bytes={limit}"
    )


def test_past_so_many_long_strings_every_meta_and_identity_is_measured() -> None:
    """Over _LONG_RUNS strings of 64 bytes or more, the scan stops listing them and bounds
    nothing: no meta is taken unmeasured, no identity string cleared at once."""
    limit = 300
    limits = DecodeLimits(max_meta_bytes=limit)
    long_metas = [meta_text(100)] * _LONG_RUNS  # a string of 75 bytes each
    data = entries_heartbeat(*long_metas, meta_text(limit))
    assert len(data) * 4 > limit  # too large to skip the scan
    assert _scalar_bounds(_neutral(data), limit) == (-1, None)
    message = decode_message(data, limits=limits)
    assert isinstance(message, Heartbeat)
    assert message.delta is not None
    metas = [entry.meta for entry in message.delta.values[ReplicaRef("a", 1)].values()]
    assert [compact_size(meta) for meta in metas] == [100] * _LONG_RUNS + [limit]
    error = rejected_with(entries_heartbeat(*long_metas, meta_text(limit + 1)), limits)
    assert error.message == (
        f"heartbeat.delta.values[0].entries[{_LONG_RUNS}].meta: {limit + 1} bytes as compact "
        f"JSON, over max_meta_bytes={limit}"
    )
    error = rejected_with(entries_heartbeat(*long_metas, topic="t" * 1025), DecodeLimits())
    assert error.message == (
        "heartbeat.delta.values[0].entries[0].topic: 1025 bytes of UTF-8, over max_topic_bytes=1024"
    )


def rejected_with(data: bytes, limits: DecodeLimits) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(data, limits=limits)
    return info.value


@pytest.mark.parametrize(
    "text",
    [
        '{"f":[' + ",".join(["1e15"] * 60) + "]}",  # nested: always measured
        "{" + ",".join(f'"k{i}":1e15' for i in range(50)) + "}",  # flat, with many items
    ],
)
def test_a_meta_growing_as_compact_json_is_measured(text: str) -> None:
    """Floats written short come back long: ``1e15,`` is 5 bytes, and 19 as compact JSON."""
    meta = json.loads(text)
    assert len(text) < 1000 < compact_size(meta)
    error = rejected_with(entries_heartbeat(text), DecodeLimits(max_meta_bytes=1000))
    assert error.message.endswith(
        f"{compact_size(meta)} bytes as compact JSON, over max_meta_bytes=1000"
    )


short_floats = st.sampled_from([1e15, -1e15, 1.5e15, 1e16, 1e22, 1e-7, 0.5, 1e300, 1234.5])
meta_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | short_floats
    | st.text(st.sampled_from([*'ab"\\/', "\n", "\x01", "é", "😀", "\u2028"]), max_size=12)
)
meta_values = st.recursive(
    meta_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)
metas_to_spell = st.dictionaries(st.text(max_size=4), meta_values, max_size=6)


def spelled(value: Any, draw: st.DrawFn) -> str:
    """``value`` as JSON, written one of several ways: floats short, strings escaped or not."""
    space = draw(st.sampled_from(["", " ", "\n  "]))
    if isinstance(value, dict):
        items = [
            f"{spelled(key, draw)}:{space}{spelled(item, draw)}" for key, item in value.items()
        ]
        return "{" + f",{space}".join(items) + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(spelled(item, draw) for item in value) + "]"
    if isinstance(value, float):
        short = f"{value:g}".replace("e+", "e")
        return short if float(short) == value and draw(st.booleans()) else repr(value)
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


@st.composite
def spelled_metas(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    meta = draw(metas_to_spell)
    return meta, spelled(meta, draw)


@given(
    st.lists(spelled_metas(), min_size=1, max_size=4),
    st.integers(0, 3),
    st.integers(-2, 2),
    st.sampled_from([1, 100, 300, 2000, 5000]),
)
def test_metas_are_refused_exactly_when_over_max_meta_bytes(
    metas: list[tuple[dict[str, Any], str]], pick: int, delta: int, topic: int
) -> None:
    """Whatever the spelling: the cheap bounds never let an oversized meta through."""
    sizes = [compact_size(meta) for meta, _ in metas]
    limit = max(1, sizes[pick % len(sizes)] + delta)
    limits = DecodeLimits(max_meta_bytes=limit, max_topic_bytes=10_000)
    data = entries_heartbeat(*(text for _, text in metas), topic="t" * topic)
    over = [i for i, size in enumerate(sizes) if size > limit]
    outcome = decoded_or_refused(data, limits)
    if over:
        assert isinstance(outcome, RemoteProtocolError)
        assert outcome.message == (
            f"heartbeat.delta.values[0].entries[{over[0]}].meta: {sizes[over[0]]} bytes as "
            f"compact JSON, over max_meta_bytes={limit}"
        )
    else:
        assert isinstance(outcome, Heartbeat), outcome


def decoded_or_refused(data: bytes, limits: DecodeLimits) -> Message | RemoteProtocolError:
    try:
        return decode_message(data, limits=limits)
    except RemoteProtocolError as exc:
        return exc


@given(st.lists(spelled_metas(), min_size=1, max_size=3))
def test_a_meta_grows_at_most_four_times_as_compact_json(
    metas: list[tuple[dict[str, Any], str]],
) -> None:
    """Why a message of a quarter of max_meta_bytes is never measured."""
    for meta, text in metas:
        assert compact_size(meta) <= 4 * len(text.encode())


IDENTITY = ["conn", "topic", "key"]


@pytest.mark.parametrize("field", IDENTITY)
@pytest.mark.parametrize(
    ("value", "fits"),
    [
        ("x" * 256, True),  # a quarter of the limit in characters: never measured
        ("x" * 1024, True),
        ("x" * 1025, False),
        ("é" * 512, True),
        ("é" * 512 + "x", False),
        ("😀" * 256, True),
        ("😀" * 256 + "x", False),
        ("é" * 1000, False),
    ],
)
@pytest.mark.parametrize("others", [0, 200])
def test_identity_strings_are_limited_in_utf8_bytes(
    field: str, value: str, fits: bool, others: int
) -> None:
    """In small messages, and in large ones (where one scan may clear every string at once)."""
    document = heartbeat_doc()
    document["delta"]["values"][0][2][1 + IDENTITY.index(field)] = value
    document["delta"]["values"].append(["node-b", 7, []])
    for dot in range(1, others + 1):  # more entries, of short strings
        document["delta"]["values"][1][2].extend([dot, f"c{dot}", "room", f"k{dot}", {"n": dot}])
    document["delta"]["clouds"].append(
        ["node-b", 7, [[1, others]]] if others else ["node-b", 7, []]
    )
    if others:  # too large to skip the scan
        assert len(raw(document)) * 4 > DecodeLimits().max_meta_bytes
    if fits:
        assert isinstance(decode_message(raw(document)), Heartbeat)
        return
    size = len(value.encode())
    assert rejected(document).message == (
        f"heartbeat.delta.values[0].entries[0].{field}: {size} bytes of UTF-8, "
        f"over max_{field}_bytes=1024"
    )


def in_every_list(name: str) -> list[tuple[Message, str]]:
    """Messages naming a replica ``name`` in each kind of place, and the path of the first."""
    r = ReplicaRef(name, 1)
    nothing: dict[ReplicaRef, Any] = {}
    delta = Delta(replica=A, values={}, clouds=nothing, start=nothing, end=nothing)
    return [
        (GracefulPermdown(sender=r), "graceful_permdown.sender.name"),
        (Heartbeat(sender=A, clock={r: 0}), "heartbeat.clock[0].name"),
        (TransferRequest(request_id=1, sender=A, clock={r: 0}), "transfer_request.clock[0].name"),
        (
            Heartbeat(sender=A, clock={}, delta=attrs.evolve(delta, replica=r)),
            "heartbeat.delta.replica.name",
        ),
        (
            Heartbeat(sender=A, clock={}, delta=attrs.evolve(delta, clouds={r: {1}})),
            "heartbeat.delta.clouds[0].name",
        ),
        (
            TransferAck(request_id=1, sender=A, payload=attrs.evolve(delta, start={r: 0})),
            "transfer_ack.payload.start[0].name",
        ),
        (
            TransferAck(
                request_id=1,
                sender=A,
                payload=Snapshot(replica=A, context={r: 1}, clouds={}, values={}),
            ),
            "transfer_ack.payload.context[0].name",
        ),
    ]


@pytest.mark.parametrize("index", range(7))
def test_replica_names_are_limited_in_utf8_bytes(index: int) -> None:
    fits, _ = in_every_list("é" * 127 + "x")[index]  # 255 bytes
    assert decode_message(encode_message(fits)) == fits
    over, path = in_every_list("é" * 128)[index]  # 256 bytes
    assert rejected(encode_message(over)).message == (
        f"{path}: 256 bytes of UTF-8, over max_name_bytes=255"
    )
    assert decode_message(encode_message(over), limits=DecodeLimits(max_name_bytes=256)) == over


@pytest.mark.parametrize(
    ("max_name_bytes", "name"),
    [
        # At most a quarter of the limit in characters: taken at a glance, whatever they are.
        (255, "n" * 63),
        (255, "😀" * 63),  # 252 bytes
        (8, "ab"),
        (8, "😀😀"),  # 8 bytes
        # More characters: measured in UTF-8 bytes, within the limit or not.
        (255, "n" * 64),
        (255, "n" * 255),
        (255, "n" * 256),
        (255, "😀" * 64),  # 256 bytes
        (255, "é" * 127 + "x"),  # 255 bytes
        (8, "abc"),
        (8, "é" * 4),  # 8 bytes
        (8, "é" * 4 + "x"),  # 9 bytes
        (8, "n" * 9),
    ],
)
@pytest.mark.parametrize("index", range(7))
def test_a_name_too_long_to_pass_at_a_glance_is_measured(
    max_name_bytes: int, name: str, index: int
) -> None:
    """Replica names, in every list, fit exactly when their UTF-8 bytes fit the limit, however
    many characters they have: taken at a glance or measured."""
    limits = DecodeLimits(max_name_bytes=max_name_bytes)
    message, path = in_every_list(name)[index]
    data = encode_message(message)
    size = len(name.encode())
    if size <= max_name_bytes:
        decoded = decode_message(data, limits=limits)
        assert decoded == message
        check_real_classes(decoded)
    else:
        assert rejected_with(data, limits).message == (
            f"{path}: {size} bytes of UTF-8, over max_name_bytes={max_name_bytes}"
        )


@pytest.mark.parametrize("name", ["n", "n" * 64, "é" * 127 + "x"])
def test_a_duplicate_replica_is_refused_however_long_its_name(name: str) -> None:
    ref = ReplicaRef(name, 3)
    document = doc(TransferRequest(request_id=1, sender=A, clock={ref: 1, B: 2}))
    assert [item[0] for item in document["clock"]] == sorted([name, "node-b"])
    first = document["clock"].index([name, 3, 1])
    document["clock"].append([name, 3, 5])
    assert rejected(document).message == (
        f"transfer_request.clock[2]: duplicate replica [{name!r}, 3]"
    )
    document["clock"][2] = [name, 4, 5]  # another incarnation: fine
    message = decode_message(raw(document))
    assert isinstance(message, TransferRequest)
    assert message.clock == {ref: 1, B: 2, ReplicaRef(name, 4): 5}
    document["clock"][first][2] = -1
    assert rejected(document).message == (
        f"transfer_request.clock[{first}].clock: expected a non-negative int, got -1"
    )


@pytest.mark.parametrize(
    ("vsn", "problem"),
    [
        (MAX_WIRE_INT, None),
        (0, None),
        (MAX_WIRE_INT + 1, "9223372036854775808 is above the wire's limit of 2**63 - 1"),
        (-1, "expected a non-negative int, got -1"),
        (True, "expected a non-negative int, got true"),
        (1.0, "expected a non-negative int, got 1.0"),
    ],
)
@pytest.mark.parametrize("name", ["n", "n" * 64])
def test_a_context_vsn_is_checked_at_a_glance_or_in_full(
    vsn: object, problem: str | None, name: str
) -> None:
    document = heartbeat_doc()
    document["clock"].append([name, vsn, 1])
    if problem is None:
        message = decode_message(raw(document))
        assert isinstance(message, Heartbeat)
        assert message.clock[ReplicaRef(name, cast(int, vsn))] == 1
    else:
        assert rejected(document).message == f"heartbeat.clock[1].vsn: {problem}"


def replicas(count: int) -> list[ReplicaRef]:
    return [ReplicaRef(f"r{i}", 1) for i in range(count)]


def listing(count: int) -> list[tuple[Message, str]]:
    """Messages with ``count`` replicas in each kind of list, and the path of that list.

    The owners of values and the replicas of ranges are checked too, but cannot be the first
    list over the limit: every owner is in the clouds or the context, every range's replica in
    the context, and those are read first.
    """
    refs = replicas(count)
    context = dict.fromkeys(refs, 2)
    delta = Delta(replica=A, values={}, clouds={}, start={}, end={})
    full = Snapshot(replica=A, context=context, clouds={}, values={})
    part = SnapshotPart(replica=A, context=context, ranges={}, clouds={}, values={})
    return [
        (Heartbeat(sender=A, clock=context), "heartbeat.clock"),
        (TransferRequest(request_id=1, sender=A, clock=context), "transfer_request.clock"),
        (
            Heartbeat(sender=A, clock={}, delta=attrs.evolve(delta, clouds={r: {1} for r in refs})),
            "heartbeat.delta.clouds",
        ),
        (
            TransferAck(request_id=1, sender=A, payload=attrs.evolve(delta, start=context)),
            "transfer_ack.payload.start",
        ),
        (
            TransferAck(request_id=1, sender=A, payload=attrs.evolve(delta, end=context)),
            "transfer_ack.payload.end",
        ),
        (TransferAck(request_id=1, sender=A, payload=full), "transfer_ack.payload.context"),
        (
            TransferAck(request_id=1, sender=A, payload=part, part=0, parts=2),
            "transfer_ack.payload.context",
        ),
    ]


@pytest.mark.parametrize("index", range(7))
def test_each_list_names_at_most_max_replicas(index: int) -> None:
    limits = DecodeLimits(max_replicas=4)
    fits, _ = listing(4)[index]
    assert decode_message(encode_message(fits), limits=limits) == fits
    over, path = listing(5)[index]
    assert rejected_with(encode_message(over), limits).message == (
        f"{path}: 5 replicas, over max_replicas=4"
    )


def test_a_heartbeat_clock_counts_without_its_sender() -> None:
    """The sender's own clock travels apart, in ``own``: the list holds the other replicas."""
    clock = dict.fromkeys(replicas(4), 1)
    message = Heartbeat(sender=A, clock={**clock, A: 3})
    assert decode_message(encode_message(message), limits=DecodeLimits(max_replicas=4)) == message


def test_what_a_tracker_sends_at_its_limits_is_accepted_and_one_byte_less_refuses_it() -> None:
    tracker = make_tracker("a")
    config = tracker.config
    conn = "é" * (config.max_conn_bytes // 2)
    topic = "😀" * (config.max_topic_bytes // 4)
    key = "k" * config.max_key_bytes
    pad = config.max_meta_bytes
    while True:  # the largest meta track takes: exactly max_meta_bytes, phx_ref included
        try:
            tracker.track(conn=conn, topic=topic, key=key, meta={"pad": "x" * pad}, now=0.0)
            break
        except LimitExceeded:
            pad -= 1
    deadline = tracker.next_deadline()
    assert deadline is not None
    tracker.handle_timer(now=deadline)
    (sent,) = [out for out in tracker.messages_to_send() if isinstance(out.message, Heartbeat)]
    assert isinstance(sent.message, Heartbeat)
    assert sent.message.delta is not None
    (entry,) = sent.message.delta.entries()
    assert compact_size(entry.meta) == config.max_meta_bytes
    assert decode_message(sent.data) == sent.message
    defaults = attrs.asdict(DecodeLimits())
    for field in ("max_meta_bytes", "max_conn_bytes", "max_topic_bytes", "max_key_bytes"):
        tighter = DecodeLimits(**{**defaults, field: defaults[field] - 1})
        assert f"over {field}=" in rejected_with(sent.data, tighter).message


long_texts = st.text(st.sampled_from([*'ab"\\', "\n", "é", "😀"]), max_size=5000)
long_scalars = long_texts | st.integers(-(10**300), 10**300) | short_floats


@st.composite
def flat_metas_spelled(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A flat meta, now and then with a long string or number, written one of several ways."""
    meta = draw(st.dictionaries(st.text(max_size=4), meta_scalars | long_scalars, max_size=40))
    return meta, spelled(meta, draw)


@given(
    st.lists(flat_metas_spelled(), min_size=1, max_size=4),
    st.lists(spelled_metas() | flat_metas_spelled(), max_size=3),
    st.integers(1, 20_000),
)
def test_a_flat_meta_with_few_enough_items_always_fits(
    flat: list[tuple[dict[str, Any], str]], others: list[tuple[dict[str, Any], str]], limit: int
) -> None:
    """The bounds that let a flat meta of few items and short strings go unmeasured are sound."""
    data = ("[" + ",".join(text for _, text in [*flat, *others]) + "]").encode()
    items, longest = _scalar_bounds(_neutral(data), limit)
    for meta, _ in flat:
        if len(meta) <= items:
            assert compact_size(meta) <= limit
    if longest is not None:
        for meta, _ in [*flat, *others]:
            for scalar in scalars(meta):
                assert len(json.dumps(scalar, ensure_ascii=False).encode()) <= longest


def scalars(value: Any) -> list[Any]:
    """Every string (keys included), number and literal of a JSON value."""
    if isinstance(value, dict):
        return [*value, *(s for item in value.values() for s in scalars(item))]
    if isinstance(value, list):
        return [s for item in value for s in scalars(item)]
    return [value]


def test_the_refs_decoded_lately_are_reused_and_their_memory_stays_bounded() -> None:
    from presence_core import _codec

    def clock_of(name: str, vsn: int) -> ReplicaRef:
        data = encode_message(Heartbeat(sender=ReplicaRef(name, vsn), clock={}))
        message = decode_message(data)
        assert isinstance(message, Heartbeat)
        return message.sender

    first = clock_of("reused", 1)
    assert clock_of("reused", 1) is first  # the same object, not made again
    restarted = clock_of("reused", 2)  # same name, new incarnation: a new ref, never the old one
    assert restarted == ReplicaRef("reused", 2)
    assert restarted is not first
    for i in range(_codec._RECENT_REFS_MAX + 10):
        assert clock_of(f"name-{i}", i) == ReplicaRef(f"name-{i}", i)
        assert len(_codec._RECENT_REFS) <= _codec._RECENT_REFS_MAX
    assert len(_codec._RECENT_REFS) < _codec._RECENT_REFS_MAX  # it was emptied on the way
