"""Fuzz the wire decoder and a tracker's ``receive`` with atheris (coverage-guided libFuzzer).

Every input is fed to :func:`presence_core.decode_message` and to a fresh
:class:`presence_core.Tracker` that already knows two replicas. The run fails (and libFuzzer
writes the input to a ``crash-*`` file) on:

* any exception other than :class:`presence_core.RemoteProtocolError`, from either;
* a tracker whose observable state changed although it refused the bytes;
* a tracker that took bytes :func:`decode_message` refuses.

Run it through tox (``tox -e fuzz``, ten minutes by default, ``tox -e fuzz -- -max_total_time=3600``
for an hour), or by hand with atheris installed::

    python fuzz/fuzz_codec.py CORPUS_DIR fuzz/seeds -dict=fuzz/json.dict -max_total_time=600

libFuzzer adds what it finds to the first directory; ``fuzz/seeds`` holds valid messages to start
from (``python fuzz/fuzz_codec.py --write-seeds fuzz/seeds`` writes them again).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["presence_core", "json"]):
    from presence_core import (
        Delta,
        GracefulPermdown,
        Heartbeat,
        RemoteProtocolError,
        ReplicaRef,
        ReplicaState,
        Tracker,
        TrackerConfig,
        TransferAck,
        TransferRequest,
        decode_message,
        encode_message,
        encode_parts,
    )

A = ReplicaRef("node-a", 1)
B = ReplicaRef("node-b", 7)
NOW = 1.0
CONFIG = TrackerConfig(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5)


def sample_messages() -> list[bytes]:
    """Valid encodings of every kind of message: the seeds, and what the tracker first hears."""
    a, b = ReplicaState(A), ReplicaState(B)
    a.replica_up(B)
    b.replica_up(A)
    a.join("c1", "room:lobby", "alice", {"status": "online", "phx_ref": "F1"})
    a.join("c2", "room:lobby", "bob", {"status": "away", "phx_ref": "F2", "tags": [1, 2.5]})
    b.merge(a.take_delta())
    a.join("c3", "room:lobby", "carol", {"status": "online", "phx_ref": "F3", "x": {"y": None}})
    a.leave("c2", "room:lobby", "bob")
    delta = a.take_delta()
    messages = [
        Heartbeat(sender=A, clock=a.clocks()[1]),
        Heartbeat(sender=B, clock=b.clocks()[1]),
        Heartbeat(sender=A, clock=a.clocks()[1], delta=delta),
        TransferRequest(request_id=1, sender=B, clock={A: 2, B: 0}),
        TransferAck(request_id=1, sender=A, payload=delta.extract(B, {A: 2, B: 0})),
        TransferAck(request_id=2, sender=A, payload=a.extract(B, {A: 0, B: 0})),
        GracefulPermdown(sender=A),
    ]
    encoded = [encode_message(message) for message in messages]
    whole = TransferAck(request_id=3, sender=A, payload=a.extract(B, {A: 0, B: 0}))
    encoded += [data for _, data in encode_parts(whole, max_bytes=len(encoded[-2]) - 1)]
    window = Delta(replica=A, values={}, clouds={A: frozenset(range(1, 100))}, start={}, end={})
    encoded.append(encode_message(Heartbeat(sender=A, clock={A: 99}, delta=window)))
    return encoded


SAMPLES = sample_messages()


def receiver() -> Tracker:
    """A tracker that knows node-a and node-b (it heard their idle heartbeats)."""
    tracker = Tracker(config=CONFIG, replica=ReplicaRef("node-z", 1), rng=random.Random(0))
    for data in SAMPLES[:2]:
        tracker.receive(data, now=NOW)
    while tracker.next_event() is not None:
        pass
    tracker.messages_to_send()
    return tracker


def observed(tracker: Tracker) -> dict[str, Any]:
    """What one can query of a tracker, comparable with ``==``."""
    state = tracker.state
    return {
        "entries": sorted(
            (e.owner, e.clock, e.topic, e.key, e.conn, repr(e.meta)) for e in state.entries()
        ),
        "context": dict(state.context),
        "clouds": {ref: sorted(dots) for ref, dots in state.clouds.items()},
        "replicas": {
            name: (info.ref, info.status, info.last_heard)
            for name, info in tracker.replicas().items()
        },
        "next_deadline": tracker.next_deadline(),
        "topics": tracker.topics(),
    }


def one_input(data: bytes) -> None:
    try:
        decode_message(data)
        valid = True
    except RemoteProtocolError:
        valid = False
    tracker = receiver()
    before = observed(tracker)
    try:
        tracker.receive(data, now=NOW)
    except RemoteProtocolError:
        if observed(tracker) != before:
            raise AssertionError("a refused message changed the tracker") from None
        return
    if not valid:
        raise AssertionError("the tracker took bytes that decode_message refuses")


def run(one_input: Callable[[bytes], None], seeds: list[bytes], file_name: str) -> None:
    """The harnesses' command line: ``--write-seeds DIR``, or libFuzzer's own arguments.

    ``file_name`` names seed ``i`` with ``file_name.format(i)``.
    """
    if sys.argv[1:2] == ["--write-seeds"]:
        directory = Path(sys.argv[2])
        directory.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(seeds):
            (directory / file_name.format(index)).write_bytes(data)
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    run(one_input, SAMPLES, "message-{:02d}.json")
