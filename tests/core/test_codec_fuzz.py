"""Fuzzing the decoder and a tracker's ``receive`` with hostile bytes (the CI share of it).

Every input goes through one check (:func:`check`):

* :func:`~presence_core.decode_message` either returns a message or raises
  :class:`~presence_core.RemoteProtocolError`; any other exception fails the test;
* a :class:`~presence_core.Tracker` that is fed the same bytes changes nothing it lets one observe
  (``helpers.observe``) whenever they do not decode: the bytes are refused whole.

The inputs are random bytes, and valid encodings mutated at the byte level (bits flipped, bytes
inserted, deleted, repeated, the end cut off) and at the JSON level (a field replaced by random
JSON, dropped, added, a list item repeated, a value buried deep in brackets). The valid encodings
are random messages (the strategies of ``test_codec``) and the real traffic of a small cluster,
so that mutations also hit what a tracker would otherwise merge.

The number of inputs tried is printed when the module ends (``fuzz: N inputs ...``); longer runs
use the ``sim`` Hypothesis profile, and ``fuzz/fuzz_codec.py`` runs under atheris for hours.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec import at, interesting, json_paths, messages

from helpers import Cluster, make_tracker, observe
from presence_core import (
    WIRE_VERSION,
    Heartbeat,
    Key,
    Keyring,
    Message,
    RemoteProtocolError,
    ReplicaRef,
    ReplicaState,
    Tracker,
    TransferAck,
    decode_message,
    encode_message,
    encode_parts,
    unseal,
)

TRIED: Counter[str] = Counter()
"""Inputs checked, by test (printed at the end of the module)."""

EXAMPLES = max(settings().max_examples, 1200)
"""Inputs per property: at least 1200 (about 10 s for the module), more under a longer profile."""

NOW = 1.0


def recorded_traffic() -> list[bytes]:
    """What a small cluster sends: heartbeats with deltas, transfers, parts, a goodbye."""
    cluster = Cluster(["a", "b"])
    cluster.advance(0.5)
    for i in range(6):
        cluster["a"].track(
            conn=f"c{i}", topic="room", key=f"u{i}", meta={"n": i, "tags": ["x"]}, now=cluster.now
        )
    cluster["b"].track(conn="cb", topic="room", key="ub", meta={}, now=cluster.now)
    cluster.advance(0.3)
    cluster["a"].untrack(conn="c0", topic="room", key="u0", now=cluster.now)
    cluster.add("c")  # a newcomer: transfer requests and replies
    cluster.advance(1.0)
    cluster["b"].graceful_permdown(now=cluster.now)
    cluster.advance(0.2)
    traffic = [sent.data for sent in cluster.sent]
    # A full state in parts, as a large transfer would travel.
    state = ReplicaState(ReplicaRef("a", 1))
    for i in range(12):
        state.join(f"c{i}", "room", f"u{i}", {"pad": "x" * 40})
    reply = TransferAck(
        request_id=1, sender=state.replica, payload=state.extract(None, {state.replica: 0})
    )
    traffic += [data for _, data in encode_parts(reply, max_bytes=600)]
    return traffic


TRAFFIC = recorded_traffic()


def receiver() -> Tracker:
    """A tracker that knows replicas a and b, so that what they send means something to it."""
    tracker = make_tracker("z", seed=7)
    for data in TRAFFIC[:4]:
        tracker.receive(data, now=NOW)
    while tracker.next_event() is not None:
        pass
    tracker.messages_to_send()
    return tracker


def check(data: bytes, test: str) -> Message | None:
    """Decode ``data`` and feed it to a tracker: refused bytes change nothing."""
    TRIED[test] += 1
    try:
        message = decode_message(data)
    except RemoteProtocolError:
        message = None
    tracker = receiver()
    before = observe(tracker)
    try:
        tracker.receive(data, now=NOW)
    except RemoteProtocolError:
        assert observe(tracker) == before
    else:
        assert message is not None, "the tracker took bytes that do not decode"
    return message


slow = settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@slow
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check(data, "random bytes")


PLAUSIBLE_START = b'{"v":%d,"type":"heartbeat",' % WIRE_VERSION
"""The start of a heartbeat of this wire version (an older one is refused at once)."""


@slow
@given(st.binary(max_size=40).map(lambda tail: PLAUSIBLE_START + tail))
def test_random_bytes_after_a_plausible_start(data: bytes) -> None:
    check(data, "random tails")


def test_the_plausible_start_is_the_start_of_a_real_heartbeat() -> None:
    heartbeat = encode_message(Heartbeat(sender=ReplicaRef("a", 1), clock={}))
    document = json.loads(heartbeat)
    respelled = PLAUSIBLE_START + b'"sender":["a",1],"own":null,"clock":[],"delta":null}'
    assert json.loads(respelled) == document
    assert decode_message(respelled) == decode_message(heartbeat)


encodings = st.sampled_from(TRAFFIC) | messages.map(
    lambda message: encode_parts(message, max_bytes=1 << 20)[0][1]
)


@slow
@given(encodings, st.data())
def test_mutated_bytes(data: bytes, draw: st.DataObject) -> None:
    buffer = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4), label="mutations")):
        at_ = draw.draw(st.integers(0, max(len(buffer) - 1, 0)), label="position")
        action = draw.draw(
            st.sampled_from(
                ["flip", "insert", "delete", "repeat", "truncate", "bury", "structure"]
            ),
            label="action",
        )
        if action == "flip" and buffer:
            buffer[at_] ^= 1 << draw.draw(st.integers(0, 7))
        elif action == "insert":
            buffer[at_:at_] = draw.draw(
                st.binary(min_size=1, max_size=4)
                | st.sampled_from([b"[", b"]", b"{", b"}", b",", b'"', b"\\", b"-", b"1e999"])
            )
        elif action == "delete":
            del buffer[at_ : at_ + draw.draw(st.integers(1, 8))]
        elif action == "repeat":
            end = at_ + draw.draw(st.integers(1, 20))
            buffer[at_:at_] = buffer[at_:end] * draw.draw(st.integers(1, 50))
        elif action == "truncate":
            del buffer[at_:]
        elif action == "bury":  # brackets around a stretch: often deeper than MAX_NESTING
            levels = draw.draw(st.sampled_from([30, 60, 70, 5000]))
            end = draw.draw(st.integers(at_, len(buffer)))
            buffer[end:end] = b"]" * levels
            buffer[at_:at_] = b"[" * levels
        elif buffer:
            buffer[at_] = draw.draw(st.sampled_from(b'{}[],:"0123456789-tfn\\ue'))
    check(bytes(buffer), "mutated bytes")


def bury(value: object, levels: int) -> object:
    for _ in range(levels):
        value = [value]
    return value


@slow
@given(encodings, st.data())
def test_mutated_json(data: bytes, draw: st.DataObject) -> None:
    document: Any = json.loads(data)
    for _ in range(draw.draw(st.integers(1, 3), label="mutations")):
        path = draw.draw(st.sampled_from(json_paths(document)), label="path")
        target = at(document, path)
        action = draw.draw(
            st.sampled_from(["replace", "drop", "add", "duplicate", "bury"]), label="action"
        )
        # Drawn values are copied: sampled_from hands out the same list or dict every time.
        new = copy.deepcopy(draw.draw(interesting, label="new value"))
        if action == "bury":
            new = bury(target, draw.draw(st.sampled_from([1, 30, 60, 70])))
        if action == "drop" and path:
            del at(document, path[:-1])[path[-1]]
        elif action == "add" and isinstance(target, dict):
            target[draw.draw(st.sampled_from(["extra", "v", "kind", "type", "part"]))] = new
        elif action == "add" and isinstance(target, list):
            target.append(new)
        elif action == "duplicate" and isinstance(target, list) and target:
            target.append(copy.deepcopy(target[0]))
        elif path:
            at(document, path[:-1])[path[-1]] = new
        else:
            document = new
    text = json.dumps(document, ensure_ascii=draw.draw(st.booleans(), label="ascii"))
    # A lone surrogate in a string makes bytes that are not UTF-8: a fine input too.
    check(text.encode("utf-8", "surrogatepass"), "mutated JSON")


def test_every_recorded_message_is_valid_and_taken() -> None:
    """The base of the mutations: real messages, which decode and which a tracker takes."""
    kinds = set()
    for data in TRAFFIC:
        message = check(data, "recorded")
        assert message is not None
        kinds.add(type(message).__name__)
        if isinstance(message, (Heartbeat, TransferAck)) and message.parts > 1:
            kinds.add("part")
    assert kinds >= {
        "Heartbeat",
        "TransferRequest",
        "TransferAck",
        "GracefulPermdown",
        "part",
    }


FUZZ = Path(__file__).resolve().parents[2] / "fuzz"


def test_the_atheris_seeds_are_valid_messages_of_this_wire_version() -> None:
    """``fuzz/seeds`` and ``fuzz/sealed-seeds`` start the long runs from valid messages: seeds of
    an older wire version would only exercise its refusal (rewrite them with ``--write-seeds``,
    ``fuzz/README.md``)."""
    seeds = [path.read_bytes() for path in sorted((FUZZ / "seeds").glob("message-*.json"))]
    assert len(seeds) == 10
    kinds = set()
    for data in seeds:
        message = decode_message(data)
        assert encode_message(message) == data  # canonical: what the harness wrote
        assert json.loads(data)["v"] == WIRE_VERSION
        kinds.add(type(message).__name__)
        if isinstance(message, TransferAck):
            kinds.add(type(message.payload).__name__)
        if isinstance(message, (Heartbeat, TransferAck)):
            kinds.add("part" if message.parts > 1 else "whole")
        if isinstance(message, Heartbeat):
            kinds.add("idle" if message.delta is None else "with a delta")
    assert kinds == {
        "Heartbeat",
        "TransferRequest",
        "TransferAck",
        "GracefulPermdown",
        "Delta",
        "Snapshot",
        "SnapshotPart",
        "part",
        "whole",
        "idle",
        "with a delta",
    }
    keyring = Keyring(Key("fuzz", b"k" * 32))  # fuzz/fuzz_seal.py's
    frames = [path.read_bytes() for path in sorted((FUZZ / "sealed-seeds").glob("sealed-*.bin"))]
    sealed = [unseal(frame, keyring) for frame in frames]
    assert [frame.body for frame in sealed] == seeds
    assert [frame.counter for frame in sealed] == list(range(1, len(seeds) + 1))
    assert [frame.origin for frame in sealed] == [decode_message(data).sender for data in seeds]


def test_zz_count_the_inputs_tried(capsys: pytest.CaptureFixture[str]) -> None:
    """Last in the module: how many inputs the properties above tried (shown even with -q)."""
    total = sum(TRIED.values())
    with capsys.disabled():
        print(f"\nfuzz: {total} inputs through decode_message and Tracker.receive {dict(TRIED)}")
    if TRIED["random bytes"]:  # the whole module ran, not one test picked with -k
        assert total >= 4 * EXAMPLES
