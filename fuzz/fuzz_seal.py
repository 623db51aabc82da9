"""Fuzz the seal (authenticated replication) with atheris: forged frames never get in.

Every input is fed to :func:`presence_core.unseal` and to a fresh sealed
:class:`presence_core.Tracker` that already knows two replicas. The seeds are sealed frames of
every kind of message, so the fuzzer starts from authentic frames and mutates them. The run fails
(and libFuzzer writes the input to a ``crash-*`` file) on:

* any exception other than :class:`presence_core.AuthenticationError` from ``unseal``, or other
  than :class:`presence_core.RemoteProtocolError` from ``receive``;
* a frame ``unseal`` accepts that is not one of the seeds (a forgery: it would take breaking
  HMAC-SHA256, so this guards the framing code, not the hash);
* a tracker whose observable state changed although it refused the frame.

Run it through tox (``tox -e fuzz``), or by hand with atheris installed::

    python fuzz/fuzz_seal.py CORPUS_DIR fuzz/sealed-seeds -max_total_time=600

(``python fuzz/fuzz_seal.py --write-seeds fuzz/sealed-seeds`` writes the seeds again).
"""

from __future__ import annotations

import contextlib
import random

import atheris

with atheris.instrument_imports(include=["presence_core"]):
    from presence_core import (
        AuthenticationError,
        Key,
        Keyring,
        RemoteProtocolError,
        ReplicaRef,
        Tracker,
        decode_message,
        seal,
        unseal,
    )

from fuzz_codec import CONFIG, NOW, SAMPLES, observed, run

KEYRING = Keyring(Key("fuzz", b"k" * 32))


def sealed_samples() -> list[bytes]:
    """Every sample message, sealed by the replica that sends it, counters from 1."""
    frames = []
    for counter, data in enumerate(SAMPLES, start=1):
        sender = decode_message(data).sender
        frames.append(seal(data, key=KEYRING.current, origin=sender, counter=counter))
    return frames


FRAMES = sealed_samples()
AUTHENTIC = set(FRAMES)


def receiver() -> Tracker:
    """A sealed tracker that knows node-a and node-b (it heard their sealed idle heartbeats)."""
    tracker = Tracker(
        config=CONFIG, replica=ReplicaRef("node-z", 1), rng=random.Random(0), keyring=KEYRING
    )
    for data in FRAMES[:2]:
        tracker.receive(data, now=NOW)
    while tracker.next_event() is not None:
        pass
    tracker.messages_to_send()
    return tracker


def one_input(data: bytes) -> None:
    try:
        unseal(data, KEYRING)
        authentic = True
    except AuthenticationError:
        authentic = False
    if authentic and data not in AUTHENTIC:
        raise AssertionError("unseal accepted a frame nobody sealed")
    tracker = receiver()
    before = observed(tracker)
    with contextlib.suppress(RemoteProtocolError):  # the documented refusal of bad bytes
        tracker.receive(data, now=NOW)
    if not authentic and observed(tracker) != before:
        raise AssertionError("a frame that is not authentic changed the tracker")


if __name__ == "__main__":
    run(one_input, FRAMES, "sealed-{:02d}.bin")
