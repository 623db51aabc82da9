"""Authenticated replication: the seal, the replay window, keyrings and sealed trackers.

The seal is a pure function of the key and the bytes, so it is tested as one: every byte
altered, every wrong key, every truncation is refused, and nothing but AuthenticationError (for
bytes) or InvalidArgument (for a caller's mistake) ever escapes. Then trackers with keys: they
converge, refuse what they must (forged, altered, replayed, wrong-key), count it, and rotate keys
without a refused message.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import Cluster, drain, make_tracker, observe
from presence_core import (
    AuthenticationError,
    Heartbeat,
    InvalidArgument,
    Key,
    Keyring,
    MessageRejected,
    RejectReason,
    RemoteProtocolError,
    ReplayWindow,
    ReplicaRef,
    Sealed,
    Tracker,
    TrackerConfig,
    Unsendable,
    encode_message,
    seal,
    unseal,
)
from presence_core._security import MAGIC, REPLAY_WINDOW, seal_overhead

K1 = Key("k1", b"1" * 32)
K2 = Key("k2", b"2" * 32)
A = ReplicaRef("a", 7)
BODY = encode_message(Heartbeat(sender=A, clock={A: 3}))


# ---------------------------------------------------------------------------- the seal


def test_seal_and_unseal_round_trip() -> None:
    data = seal(BODY, key=K1, origin=A, counter=5)
    assert data.startswith(MAGIC)
    assert len(data) == len(BODY) + seal_overhead(A, K1)
    assert unseal(data, Keyring(K1)) == Sealed(key_id="k1", origin=A, counter=5, body=BODY)
    assert unseal(bytearray(data), Keyring(K2, accepted=(K1,))).body == BODY
    assert unseal(memoryview(data), Keyring(K1)).counter == 5


def test_every_altered_byte_is_refused() -> None:
    data = seal(BODY, key=K1, origin=A, counter=5)
    for i in range(len(data)):
        altered = bytearray(data)
        altered[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            unseal(bytes(altered), Keyring(K1))


def test_every_truncation_and_extension_is_refused() -> None:
    data = seal(BODY, key=K1, origin=A, counter=5)
    for end in range(len(data)):
        with pytest.raises(AuthenticationError):
            unseal(data[:end], Keyring(K1))
    with pytest.raises(AuthenticationError, match="wrong MAC"):
        unseal(data + b" ", Keyring(K1))


def test_a_wrong_secret_or_an_unknown_key_is_refused() -> None:
    data = seal(BODY, key=K1, origin=A, counter=5)
    with pytest.raises(AuthenticationError, match="wrong MAC") as info:
        unseal(data, Keyring(Key("k1", b"x" * 32)))
    assert info.value.replica == "a"  # the claimed origin, for the log
    with pytest.raises(AuthenticationError, match="unknown key id 'k1'"):
        unseal(data, Keyring(K2))
    with pytest.raises(AuthenticationError, match="no seal"):
        unseal(BODY, Keyring(K1))


def test_authentication_errors_are_remote_protocol_errors() -> None:
    assert issubclass(AuthenticationError, RemoteProtocolError)
    assert AuthenticationError.reason is RejectReason.UNAUTHENTICATED


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_fuzz_unseal_of_random_bytes(data: bytes) -> None:
    with pytest.raises(AuthenticationError):
        unseal(data, Keyring(K1))
    with pytest.raises(AuthenticationError):
        unseal(MAGIC + data, Keyring(K1))


@settings(max_examples=300)
@given(st.data())
def test_fuzz_unseal_of_mutated_seals(data: st.DataObject) -> None:
    sealed = bytearray(seal(BODY, key=K1, origin=A, counter=data.draw(st.integers(1, 2**63 - 1))))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        at = data.draw(st.integers(0, max(0, len(sealed) - 1)))
        if kind == "flip" and sealed:
            sealed[at] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            sealed[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and sealed:
            del sealed[at]
        else:
            del sealed[at:]
    try:
        found = unseal(bytes(sealed), Keyring(K1))
    except AuthenticationError:
        return
    # Only the unchanged frame may pass (a flip and its undoing, an insert then a cut...).
    assert found.body == BODY
    assert found.origin == A


def test_seal_refuses_a_callers_mistakes() -> None:
    bad: list[dict[str, Any]] = [
        {"body": "text"},
        {"key": "k1"},
        {"origin": ("a", 1)},
        {"counter": 0},
        {"counter": 2**63},
        {"counter": True},
        {"origin": ReplicaRef("a", 2**63)},
        {"origin": ReplicaRef("\ud800", 1)},
        {"origin": ReplicaRef("n" * 70_000, 1)},
    ]
    for change in bad:
        arguments: dict[str, Any] = {"body": BODY, "key": K1, "origin": A, "counter": 1, **change}
        body = arguments.pop("body")
        with pytest.raises(InvalidArgument):
            seal(body, **arguments)
    anything: Any = "nope"
    with pytest.raises(InvalidArgument):
        unseal(anything, Keyring(K1))
    with pytest.raises(InvalidArgument):
        unseal(BODY, anything)


def test_keys_and_keyrings_check_what_they_hold() -> None:
    wrong: Any
    for wrong in ("", "é", "a b\n", "x" * 65, 3):
        with pytest.raises(InvalidArgument):
            Key(wrong, b"s" * 16)
    for wrong in (b"short", "s" * 32, None):
        with pytest.raises(InvalidArgument):
            Key("k", wrong)
    for wrong in (None, "k1"):
        with pytest.raises(InvalidArgument):
            Keyring(wrong)
    for wrong in (K2, [K2, "k"], "k2"):
        with pytest.raises(InvalidArgument):
            Keyring(K1, accepted=wrong)
    with pytest.raises(InvalidArgument, match="different secrets"):
        Keyring(K1, accepted=(Key("k1", b"9" * 32),))
    assert Keyring(K1, accepted=[K2]).find("k2") == K2
    assert Keyring(K1).find("k2") is None
    assert "1111" not in repr(Keyring(K1, accepted=(K2,)))  # secrets never printed
    assert pickle.loads(pickle.dumps(Keyring(K1))) == Keyring(K1)


# ---------------------------------------------------------------------------- the replay window


def test_a_window_accepts_each_counter_once_in_any_order() -> None:
    window = ReplayWindow()
    order = list(range(1, 200))
    random.Random(3).shuffle(order)
    assert all(window.accept(c) for c in order)
    assert not any(window.accept(c) for c in order)
    assert window.highest == 199


def test_a_window_refuses_what_is_too_old_to_tell() -> None:
    window = ReplayWindow()
    assert window.accept(10 * REPLAY_WINDOW)
    assert not window.accept(9 * REPLAY_WINDOW)  # far below: cannot tell, refused
    assert window.accept(10 * REPLAY_WINDOW - REPLAY_WINDOW + 1)  # the oldest it tells apart
    assert not window.accept(10 * REPLAY_WINDOW - REPLAY_WINDOW)


@given(st.lists(st.integers(1, 3 * REPLAY_WINDOW), max_size=300))
def test_a_window_never_accepts_a_counter_twice(counters: list[int]) -> None:
    window = ReplayWindow()
    accepted: set[int] = set()
    for counter in counters:
        if window.accept(counter):
            assert counter not in accepted
            accepted.add(counter)
        else:
            assert counter in accepted or counter <= window.highest - REPLAY_WINDOW


# ---------------------------------------------------------------------------- sealed trackers


def test_sealed_trackers_converge_and_reject_nothing() -> None:
    cluster = Cluster(["a", "b", "c"], keyring=Keyring(K1))
    cluster.advance(1.0)
    for i, name in enumerate(["a", "b", "c"]):
        cluster.track(name, f"c{i}", "room", f"u{i}")
    cluster.advance(1.0)
    assert all(t.count("room") == 3 for t in cluster)
    assert all(s.data.startswith(MAGIC) for s in cluster.sent)
    assert all(t.stats().rejected == {} for t in cluster)


def test_a_sealed_message_respects_max_message_bytes() -> None:
    cluster = Cluster(
        ["a", "b"],
        keyring=Keyring(K1),
        max_message_bytes=4096,
        max_meta_bytes=512,
        max_conn_bytes=64,
        max_topic_bytes=64,
        max_key_bytes=64,
    )
    cluster.advance(1.0)
    for i in range(100):
        cluster.track("a", f"c{i}", "room", f"u{i}", {"pad": "x" * 400})
    cluster.advance(1.0)
    assert cluster["b"].count("room") == 100
    assert max(len(s.data) for s in cluster.sent) <= 4096


def test_an_unsealed_peer_and_a_sealed_one_refuse_each_other_loudly() -> None:
    sealed = make_tracker("a", keyring=Keyring(K1))
    plain = make_tracker("b")
    sealed.receive(encode_message(Heartbeat(sender=plain.replica, clock={})), now=0.0)
    assert sealed.stats().rejected == {RejectReason.UNAUTHENTICATED: 1}
    frame = seal(BODY, key=K1, origin=A, counter=1)
    with pytest.raises(RemoteProtocolError):
        plain.receive(frame, now=0.0)
    assert plain.stats().rejected == {RejectReason.MALFORMED: 1}


def test_replayed_altered_and_wrong_key_messages_change_nothing() -> None:
    cluster = Cluster(["a", "b"], keyring=Keyring(K1))
    cluster.advance(1.0)
    cluster.track("a", "c1", "room", "alice")
    cluster.advance(0.3)
    b = cluster["b"]
    drain(b)
    captured = [s.data for s in cluster.messages(sender="a")]
    before = observe(b)
    for data in captured:
        b.receive(data, now=cluster.now)  # replayed
        altered = bytearray(data)
        altered[-2] ^= 0x20
        b.receive(bytes(altered), now=cluster.now)  # altered
        resealed = seal(unseal(data, Keyring(K1)).body, key=K2, origin=A, counter=10**6)
        b.receive(resealed, now=cluster.now)  # sealed with a key b does not hold
    assert observe(b) == before
    n = len(captured)
    assert b.stats().rejected == {
        RejectReason.REPLAYED: n,
        RejectReason.UNAUTHENTICATED: 2 * n,
    }


def test_keys_rotate_in_two_rolls_without_a_refused_message() -> None:
    old, new = Keyring(K1), Keyring(K1, accepted=(K2,))
    cluster = Cluster(["a", "b", "c"], keyring=old)
    cluster.advance(1.0)
    cluster.track("a", "c1", "room", "alice")
    # Roll 1: every node learns the new key, still sealing with the old one.
    for tracker in cluster:
        tracker.set_keyring(new)
        cluster.advance(0.2)
    # Roll 2: every node seals with the new key, and still accepts the old one.
    for tracker in cluster:
        tracker.set_keyring(Keyring(K2, accepted=(K1,)))
        cluster.advance(0.2)
        cluster.track("b", f"x{tracker.replica.name}", "room", "bob")
    # Finally the old key goes.
    for tracker in cluster:
        tracker.set_keyring(Keyring(K2))
    cluster.advance(1.0)
    assert all(t.count("room") == 4 for t in cluster)
    assert all(t.stats().rejected == {} for t in cluster)
    assert cluster.sent[-1].data[5:7] == b"k2"


def test_sealing_with_a_key_peers_do_not_hold_yet_gets_refused() -> None:
    cluster = Cluster(["a", "b"], keyring=Keyring(K1))
    cluster.advance(1.0)
    cluster["a"].set_keyring(Keyring(K2, accepted=(K1,)))  # one roll too early
    cluster.advance(1.0)
    assert cluster["b"].stats().rejected[RejectReason.UNAUTHENTICATED] > 0


def test_set_keyring_refuses_what_it_cannot_do() -> None:
    plain = make_tracker("a")
    with pytest.raises(Exception, match="without a keyring"):
        plain.set_keyring(Keyring(K1))
    sealed = make_tracker("a", keyring=Keyring(K1))
    anything: Any = K1
    with pytest.raises(Exception, match="must be a Keyring"):
        sealed.set_keyring(anything)
    with pytest.raises(Exception, match="must be a Keyring"):
        Tracker(config=TrackerConfig(), replica=A, rng=random.Random(0), keyring=anything)
    assert sealed.keyring == Keyring(K1)


def test_the_seal_counts_toward_max_message_bytes() -> None:
    long = ReplicaRef("n" * 60, 1)  # every part repeats it five times
    key = Key("k" * 64, b"s" * 16)
    config = TrackerConfig(
        max_message_bytes=1024,
        max_meta_bytes=64,
        max_conn_bytes=16,
        max_topic_bytes=16,
        max_key_bytes=16,
    )
    tracker = Tracker(config=config, replica=long, rng=random.Random(0), keyring=Keyring(key))
    for i in range(40):
        tracker.track(conn=f"c{i}", topic="t", key="k", meta={"i": i}, now=0.0)
    for now in (0.1, 0.2, 1.0, 2.0):
        tracker.handle_timer(now=now)
    sent = tracker.messages_to_send()
    assert sum(o.message.parts > 1 for o in sent if isinstance(o.message, Heartbeat)) > 1
    assert all(len(o.data) <= 1024 for o in sent)
    assert seal_overhead(long, key) == 179
    assert not any(isinstance(e, Unsendable) for e in drain(tracker))


def test_a_node_restarted_with_its_old_vsn_is_refused_as_too_old_not_as_a_duplicate() -> None:
    receiver = make_tracker("b", keyring=Keyring(K1))
    for counter in range(1, REPLAY_WINDOW + 10):  # the old process sent this many
        data = seal(BODY, key=K1, origin=A, counter=counter)
        if counter > REPLAY_WINDOW:
            receiver.receive(data, now=0.0)
    drain(receiver)
    receiver.receive(seal(BODY, key=K1, origin=A, counter=1), now=0.0)  # restarted, same vsn
    (event,) = drain(receiver)
    assert isinstance(event, MessageRejected)
    assert event.reason is RejectReason.TOO_OLD
    assert not event.reason.normal
    assert "old vsn" in event.detail
    receiver.receive(seal(BODY, key=K1, origin=A, counter=REPLAY_WINDOW + 5), now=0.0)
    (event,) = drain(receiver)
    assert isinstance(event, MessageRejected)
    assert event.reason is RejectReason.REPLAYED
    assert event.reason.normal


def test_a_refused_seal_names_the_origin_it_claims() -> None:
    receiver = make_tracker("b", keyring=Keyring(K2))
    receiver.receive(seal(BODY, key=K1, origin=A, counter=1), now=0.0)
    (event,) = drain(receiver)
    assert isinstance(event, MessageRejected)
    assert event.sender is None  # unverified: not a ReplicaRef we could trust
    assert "claims to be 'a'" in event.detail


def test_a_node_without_keys_says_so_when_it_receives_a_sealed_message() -> None:
    plain = make_tracker("b")
    with pytest.raises(RemoteProtocolError, match="this tracker has no keyring"):
        plain.receive(seal(BODY, key=K1, origin=A, counter=1), now=0.0)


def test_an_oversized_frame_is_refused_before_its_mac_is_computed() -> None:
    receiver = make_tracker("b", keyring=Keyring(K1), max_message_bytes=70_000)
    receiver.receive(b"x" * 70_001, now=0.0)
    (event,) = drain(receiver)
    assert isinstance(event, MessageRejected)
    assert event.reason is RejectReason.UNAUTHENTICATED
    assert "over max_message_bytes=70000" in event.detail
    receiver.receive(memoryview(b"y" * 70_001), now=0.0)
    assert receiver.stats().rejected == {RejectReason.UNAUTHENTICATED: 2}


def test_an_authentic_frame_with_a_counter_out_of_range_is_refused() -> None:
    import hashlib
    import hmac

    name = b"a"
    header = MAGIC + bytes([2]) + b"k1" + len(name).to_bytes(2, "big") + name
    header += (7).to_bytes(8, "big") + (0).to_bytes(8, "big")  # counter 0: never sealed
    mac = hmac.new(K1.secret, header + BODY, hashlib.sha256).digest()
    with pytest.raises(AuthenticationError, match="vsn or counter out of range"):
        unseal(header + mac + BODY, Keyring(K1))


def test_a_frame_whose_key_id_or_name_is_not_text_is_refused() -> None:
    for kid, name in ((b"k\xff", b"a"), (b"k1", b"\xc3\x28")):
        header = MAGIC + bytes([len(kid)]) + kid + len(name).to_bytes(2, "big") + name
        frame = header + (1).to_bytes(8, "big") * 2 + bytes(32) + BODY
        with pytest.raises(AuthenticationError, match="key id or origin name is not text"):
            unseal(frame, Keyring(K1))
