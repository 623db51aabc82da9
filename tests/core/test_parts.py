"""Messages too large for one transmission travel in parts (``encode_parts``, ``SnapshotPart``).

Every part fits the limit and decodes on its own. Parts merge in any order, twice or not at
all: a part adds and removes only among the dots it covers, so a partial transfer never drops
a presence another part carries, and the receiver's context only moves once every part of a
full-state reply has arrived (a lost part is asked for again by the normal transfer rules).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import Cluster, drain, make_tracker, observe
from presence_core import (
    ConfigurationError,
    Delta,
    GracefulPermdown,
    Heartbeat,
    InvalidArgument,
    LimitExceeded,
    LocalProtocolError,
    Message,
    RejectReason,
    RemoteProtocolError,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    SnapshotPart,
    TrackerConfig,
    TransferAck,
    TransferRequest,
    Unsendable,
    _tracker,
    decode_message,
    encode_message,
    encode_parts,
)
from presence_core._codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_DOTS

A = ReplicaRef("a", 1)
B = ReplicaRef("b", 1)
C = ReplicaRef("c", 1)

LIMIT = 2000
"""The message limit of these tests: a few presences per part."""

SMALL: dict[str, Any] = {
    "max_meta_bytes": 200,
    "max_conn_bytes": 20,
    "max_topic_bytes": 20,
    "max_key_bytes": 20,
    "max_message_bytes": LIMIT,
}
"""Limits under which one presence fits half of ``LIMIT``."""

PAD = {"pad": "x" * 100}


# ---------------------------------------------------------------------------- helpers


def sender_state(live: int, dead: int = 0, *, seed: int = 0) -> ReplicaState:
    """Replica ``a`` holding ``live`` presences of its own and of ``c`` (merged), with gaps.

    ``dead`` presences of each owner were added then removed, at random points, so the dots of
    both owners hold holes that only the context speaks for.
    """
    rng = random.Random(seed)
    c = ReplicaState(C)
    a = ReplicaState(A)
    for owner in (c, a):
        conns = [f"{owner.replica.name}{i}" for i in range(live + dead)]
        for conn in conns:
            owner.join(conn, "room", conn, PAD)
        for conn in rng.sample(conns, dead):
            owner.leave(conn, "room", conn)
    a.replica_up(C)
    a.merge(c.extract(A, a.context))
    return a


def rows(state: ReplicaState) -> list[tuple[Any, ...]]:
    return sorted((e.owner, e.clock, e.conn, e.topic, e.key, repr(e.meta)) for e in state.entries())


def receiver(*known: ReplicaRef) -> ReplicaState:
    state = ReplicaState(B)
    for replica in known:
        state.replica_up(replica)
    return state


def snapshot_parts(source: ReplicaState, into: ReplicaState) -> list[TransferAck]:
    reply = TransferAck(
        request_id=1, sender=source.replica, payload=source.extract(None, into.context)
    )
    parts = [message for message, _ in encode_parts(reply, max_bytes=LIMIT)]
    assert all(isinstance(part, TransferAck) for part in parts)
    return parts  # type: ignore[return-value]


def payload_of(message: Message) -> Delta | Snapshot | SnapshotPart:
    if isinstance(message, Heartbeat):
        assert message.delta is not None
        return message.delta
    assert isinstance(message, TransferAck)
    return message.payload


def merge_all(into: ReplicaState, parts: Sequence[Message]) -> None:
    """Merge each part as a receiver does (a message sent whole is merged whole)."""
    for message in parts:
        payload = payload_of(message)
        if isinstance(payload, Snapshot):
            into.merge(payload)
        else:
            into.merge_part(payload)


def complete(into: ReplicaState, parts: Sequence[Message]) -> None:
    """What the receiver does once every part is in: see the dots they covered."""
    context: Mapping[ReplicaRef, int] = {}
    clouds: dict[ReplicaRef, set[int]] = {}
    for message in parts:
        payload = payload_of(message)
        assert not isinstance(payload, Snapshot)
        if isinstance(payload, SnapshotPart):
            context = payload.context
        for owner, dots in payload.clouds.items():
            clouds.setdefault(owner, set()).update(dots)
    into.complete_parts(context, clouds)


def assert_equal_states(left: ReplicaState, right: ReplicaState) -> None:
    assert rows(left) == rows(right)
    assert dict(left.context) == dict(right.context)
    assert dict(left.clouds) == dict(right.clouds)


# ---------------------------------------------------------------------------- encode_parts


def test_a_message_that_fits_is_sent_whole() -> None:
    message = Heartbeat(sender=A, clock={A: 0})
    assert encode_parts(message, max_bytes=LIMIT) == [(message, encode_message(message))]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_max_bytes_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(LocalProtocolError, match="max_bytes"):
        encode_parts(Heartbeat(sender=A, clock={A: 0}), max_bytes=bad)


def test_every_part_fits_is_numbered_and_decodes_to_itself() -> None:
    source = sender_state(40, 10)
    into = receiver(A, C)
    parts = snapshot_parts(source, into)
    assert len(parts) > 3
    for index, part in enumerate(parts):
        data = encode_message(part, max_bytes=LIMIT)
        assert (part.part, part.parts) == (index, len(parts))
        assert decode_message(data) == part
        assert isinstance(part.payload, SnapshotPart)
        assert part.payload.context == source.extract(None, into.context).context


def test_each_entry_travels_once_and_every_dot_is_covered_once() -> None:
    source = sender_state(30, 30, seed=3)
    whole = source.extract(None, receiver(A, C).context)
    parts = [p.payload for p in snapshot_parts(source, receiver(A, C))]
    assert all(isinstance(p, SnapshotPart) for p in parts)
    carried = [entry for part in parts for entry in part.entries()]
    assert sorted(carried) == sorted(whole.entries())
    for owner, upto in whole.context.items():
        covered: list[int] = []
        for part in parts:
            assert isinstance(part, SnapshotPart)
            first, last = part.ranges.get(owner, (0, 0))
            covered.extend(range(first + 1, last + 1))
        assert sorted(covered) == list(range(1, upto + 1))


def test_a_heartbeat_delta_is_split_into_deltas_with_the_same_clock() -> None:
    state = ReplicaState(A)
    for i in range(40):
        state.join(f"c{i}", "room", f"u{i}", PAD)
    for i in range(0, 40, 3):
        state.leave(f"c{i}", "room", f"u{i}")
    delta = state.take_delta()
    message = Heartbeat(sender=A, clock={A: state.clock}, delta=delta)
    parts = encode_parts(message, max_bytes=LIMIT)
    assert len(parts) > 1
    clouds: set[int] = set()
    for part, data in parts:
        assert isinstance(part, Heartbeat)
        assert part.delta is not None
        assert len(data) <= LIMIT
        assert part.clock == message.clock
        assert (part.delta.start, part.delta.end) == (delta.start, delta.end)
        assert not clouds & part.delta.clouds[A]
        clouds |= part.delta.clouds[A]
    assert clouds == delta.clouds[A]
    whole = receiver(A)
    whole.merge(delta)
    pieces = receiver(A)
    in_parts = [part for part, _ in reversed(parts)]
    merge_all(pieces, in_parts)
    assert rows(pieces) == rows(whole)
    complete(pieces, in_parts)
    assert_equal_states(pieces, whole)


def test_uneven_entries_are_cut_again_until_every_part_fits() -> None:
    state = ReplicaState(A)
    for i in range(25):
        state.join(f"c{i}", "room", f"u{i}", {"pad": "y" * (1500 if i == 5 else 10)})
    message = Heartbeat(sender=A, clock={A: state.clock}, delta=state.take_delta())
    size = len(encode_message(message))
    assert LIMIT < size < 2 * LIMIT  # the first cut is in two, and the big entry unbalances it
    parts = encode_parts(message, max_bytes=LIMIT)
    assert len(parts) >= 3
    assert all(len(data) <= LIMIT for _, data in parts)
    assert [(p.part, p.parts) for p, _ in parts if isinstance(p, Heartbeat)] == [
        (i, len(parts)) for i in range(len(parts))
    ]


def test_a_single_entry_that_does_not_fit_cannot_be_split() -> None:
    state = ReplicaState(A)
    state.join("c", "room", "u", {"pad": "z" * 3000})
    message = Heartbeat(sender=A, clock={A: 1}, delta=state.take_delta())
    with pytest.raises(LimitExceeded, match="cannot be split further"):
        encode_parts(message, max_bytes=LIMIT)


def test_an_uneven_cut_down_to_one_oversized_entry_is_refused() -> None:
    state = ReplicaState(A)
    for i in range(6):
        state.join(f"c{i}", "room", f"u{i}", {"pad": "y" * (3000 if i == 3 else 10)})
    message = Heartbeat(sender=A, clock={A: state.clock}, delta=state.take_delta())
    with pytest.raises(LimitExceeded, match="cannot be split further"):
        encode_parts(message, max_bytes=LIMIT)


@pytest.mark.parametrize(
    "message",
    [
        GracefulPermdown(sender=ReplicaRef("n" * 3000, 1)),
        TransferRequest(request_id=1, sender=A, clock={ReplicaRef("n" * 3000, 1): 1}),
        Heartbeat(sender=A, clock={ReplicaRef("n" * 3000, 1): 1}),
    ],
)
def test_messages_without_entries_are_never_split(message: Message) -> None:
    with pytest.raises(LimitExceeded, match="cannot be split further"):
        encode_parts(message, max_bytes=LIMIT)


def test_owners_with_only_a_context_ride_whole_with_the_first_part() -> None:
    source = sender_state(20)
    idle = ReplicaRef("idle", 1)
    source.replica_up(idle)
    source.merge(
        Delta(replica=idle, values={}, clouds={idle: {1, 2}}, start={idle: 0}, end={idle: 2})
    )
    into = receiver(A, C, idle)
    parts = [p.payload for p in snapshot_parts(source, into)]
    first = parts[0]
    assert isinstance(first, SnapshotPart)
    assert first.ranges[idle] == (0, 2)
    assert all(idle not in p.ranges for p in parts[1:] if isinstance(p, SnapshotPart))


def test_scattered_tombstones_are_cut_between_their_runs() -> None:
    """A delta gossiping many removals of another owner's entries: dots, not entries, to cut."""
    c = ReplicaState(C)
    for i in range(400):
        c.join(f"c{i}", "room", f"c{i}", {})
    relay = ReplicaState(A)
    relay.replica_up(C)
    relay.merge(c.extract(A, relay.context))
    relay.take_delta()
    for i in range(0, 400, 2):  # every other one leaves: 200 runs of one dot
        c.leave(f"c{i}", "room", f"c{i}")
    relay.merge(c.take_delta())
    relay.join("mine", "room", "me", PAD)
    delta = relay.take_delta()
    assert len(delta.clouds[C]) >= 200
    message = Heartbeat(sender=A, clock=relay.clocks()[1], delta=delta)
    assert len(encode_message(message)) > LIMIT
    parts = encode_parts(message, max_bytes=LIMIT)
    assert len(parts) > 1
    assert all(len(data) <= LIMIT for _, data in parts)
    whole = receiver(A, C)
    whole.merge(c.extract(B, whole.context))
    pieces = receiver(A, C)
    pieces.merge(c.extract(B, pieces.context))
    whole.merge(delta)
    in_parts = [part for part, _ in parts]
    merge_all(pieces, in_parts)
    complete(pieces, in_parts)
    assert_equal_states(pieces, whole)


def test_entries_beyond_a_gap_travel_with_their_cloud_dots() -> None:
    c = ReplicaState(C)
    for i in range(40):
        c.join(f"c{i}", "room", f"c{i}", PAD)
    window = c.take_delta()
    source = ReplicaState(A)
    source.replica_up(C)
    lost = {1, 2, 3}  # dots 1 and 2 arrive, 3 is lost: 4..40 stay in the clouds
    source.merge(
        Delta(
            replica=C,
            values={C: {k: e for k, e in window.values[C].items() if k not in lost or k < 3}},
            clouds={C: window.clouds[C] - {3}},
            start={C: 0},
            end={C: 40},
        )
    )
    assert source.context[C] == 2
    assert len(source.clouds[C]) == 37
    into = receiver(A, C)
    parts = snapshot_parts(source, into)
    assert len(parts) > 2
    later = [p.payload for p in parts[1:]]
    assert all(isinstance(p, SnapshotPart) and C not in p.ranges for p in later)
    merge_all(into, parts)
    complete(into, parts)
    whole = receiver(A, C)
    whole.merge(source.extract(None, whole.context))
    assert_equal_states(into, whole)


def test_a_generation_delta_reply_is_split_into_deltas() -> None:
    source = sender_state(0)
    for i in range(30):
        source.join(f"x{i}", "room", f"x{i}", PAD)
    reply = TransferAck(request_id=7, sender=A, payload=source.take_delta())
    parts = encode_parts(reply, max_bytes=LIMIT)
    assert len(parts) > 1
    assert all(isinstance(p, TransferAck) and isinstance(p.payload, Delta) for p, _ in parts)


# ---------------------------------------------------------------------------- merging parts


@given(
    live=st.integers(0, 25),
    dead=st.integers(0, 25),
    seed=st.integers(0, 2**16),
    order=st.randoms(use_true_random=False),
    repeats=st.integers(0, 3),
)
def test_parts_in_any_order_and_repeated_equal_the_whole(
    live: int, dead: int, seed: int, order: random.Random, repeats: int
) -> None:
    source = sender_state(live, dead, seed=seed)
    whole = receiver(A, C)
    whole.merge(source.extract(None, whole.context))
    pieces = receiver(A, C)
    parts = snapshot_parts(source, pieces)
    shuffled = parts + [order.choice(parts) for _ in range(repeats)]
    order.shuffle(shuffled)
    merge_all(pieces, shuffled)
    if isinstance(parts[0].payload, SnapshotPart):
        assert rows(pieces) == rows(whole)
        complete(pieces, parts)
    else:  # it fitted one message: a plain snapshot
        assert len(parts) == 1
    assert_equal_states(pieces, whole)


@given(seed=st.integers(0, 2**16), lost=st.integers(0, 100))
def test_a_lost_part_drops_nothing_another_part_carries(seed: int, lost: int) -> None:
    # The receiver already holds an older state of a and c; the source moved on since.
    source = sender_state(20, 5, seed=seed)
    into = receiver(A, C)
    into.merge(source.extract(None, into.context))
    before = {(e.owner, e.clock) for e in into.entries()}
    rng = random.Random(seed)
    for conn in rng.sample([e.conn for e in source.entries() if e.owner == A], 5):
        source.leave(conn, "room", conn)
    for i in range(5):
        source.join(f"new{i}", "room", f"new{i}", PAD)
    parts = snapshot_parts(source, into)
    missing = parts.pop(lost % len(parts))
    merge_all(into, parts)
    now_live = {(e.owner, e.clock) for e in source.entries()}
    held = {(e.owner, e.clock) for e in into.entries()}
    missing_dots = {(e.owner, e.clock) for e in missing.payload.entries()}
    # Nothing still live at the source was removed; what the lost part carried may be missing.
    assert now_live - missing_dots <= held
    assert held <= now_live | before
    # The context did not move: the receiver still asks for what it lacks.
    assert into.context[A] < source.context[A]


def test_a_part_removes_only_what_it_covers() -> None:
    source = sender_state(30)
    into = receiver(A, C)
    into.merge(source.extract(None, into.context))
    gone = [e for e in source.entries() if e.owner == A][:3]
    for entry in gone:
        source.leave(entry.conn, entry.topic, entry.key)
    parts = snapshot_parts(source, into)
    covering = [p for p in parts if any(e.clock in _range_of(p, A) for e in gone)]
    others = [p for p in parts if p not in covering]
    merge_all(into, others)
    assert {e.clock for e in into.entries() if e.owner == A} >= {e.clock for e in gone}
    merge_all(into, covering)
    assert not {e.clock for e in into.entries() if e.owner == A} & {e.clock for e in gone}


def _range_of(part: TransferAck, owner: ReplicaRef) -> range:
    payload = part.payload
    assert isinstance(payload, SnapshotPart)
    first, last = payload.ranges.get(owner, (0, 0))
    return range(first + 1, last + 1)


def test_completing_parts_skips_ourselves_and_unknown_replicas() -> None:
    into = receiver(A)
    into.join("mine", "room", "me", {})
    into.complete_parts({A: 9, B: 50, C: 4}, {A: [11, 12], B: [70], C: [1]})
    assert dict(into.context) == {A: 9, B: 1}
    assert dict(into.clouds) == {A: {11, 12}}


def test_a_remove_seen_before_its_tombstone_part_keeps_the_clock_behind() -> None:
    """The ghost a careless part merge makes: a remove seen, the removed entry still held."""
    sender = ReplicaState(A)
    sender.join("x", "room", "x", PAD)
    into = receiver(A)
    into.merge(sender.take_delta())
    for i in range(30):  # a big window: many adds, and the removal of x (dot 1)
        sender.join(f"c{i}", "room", f"c{i}", PAD)
    sender.leave("x", "room", "x")
    delta = sender.take_delta()
    message = Heartbeat(sender=A, clock={A: sender.clock}, delta=delta)
    parts = [part for part, _ in encode_parts(message, max_bytes=LIMIT)]
    holding_the_tombstone = [p for p in parts if 1 in payload_of(p).clouds.get(A, ())]
    assert len(holding_the_tombstone) == 1
    merge_all(into, [p for p in parts if p not in holding_the_tombstone])
    assert into.get("x", "room", "x", owner=A) is not None  # its removal was in the lost part
    assert into.context[A] < sender.clock  # so the clock stays behind: a transfer will come
    into.merge(sender.extract(None, into.context))
    assert into.get("x", "room", "x", owner=A) is None
    assert into.context[A] == sender.clock


def test_only_parts_go_to_merge_part() -> None:
    state = receiver(A)
    with pytest.raises(LocalProtocolError, match="a part goes to merge_part"):
        state.merge(SnapshotPart(replica=A, context={}, ranges={}, clouds={}, values={}))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="as a part, not Snapshot"):
        state.merge_part(Snapshot(replica=A, context={}, clouds={}, values={}))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- SnapshotPart


def test_snapshot_part_checks_its_ranges_and_what_it_carries() -> None:
    entry = ReplicaState(A).join("c", "room", "u", {})
    fine = SnapshotPart(
        replica=A, context={A: 5}, ranges={A: (0, 3)}, clouds={}, values={A: {1: entry}}
    )
    assert list(fine.entries()) == [entry]
    with pytest.raises(InvalidArgument, match="not in the context"):
        SnapshotPart(replica=A, context={}, ranges={A: (0, 3)}, clouds={}, values={})
    with pytest.raises(InvalidArgument, match="first < last"):
        SnapshotPart(replica=A, context={A: 5}, ranges={A: (3, 3)}, clouds={}, values={})
    with pytest.raises(InvalidArgument, match="first < last"):
        SnapshotPart(replica=A, context={A: 5}, ranges={A: (0, 6)}, clouds={}, values={})
    with pytest.raises(InvalidArgument, match="outside what the part covers"):
        SnapshotPart(
            replica=A, context={A: 5}, ranges={A: (1, 3)}, clouds={}, values={A: {1: entry}}
        )


# ---------------------------------------------------------------------------- the wire


def _mutated_part(mutate: Callable[[dict[str, Any]], object]) -> bytes:
    """The first part of a transfer, as the JSON document ``mutate`` changed in place."""
    (part, *_) = snapshot_parts(sender_state(10, 3), receiver(A, C))
    document = json.loads(encode_message(part))
    mutate(document)
    return json.dumps(document, separators=(",", ":")).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Sets ``document[a][b]...`` for a ``path`` of keys and indexes like ``payload.ranges.0``."""

    def mutate(document: dict[str, Any]) -> None:
        *parents, last = (int(step) if step.isdigit() else step for step in path.split("."))
        target: Any = document
        for step in parents:
            target = target[step]
        target[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_set("part.0", 9), "transfer_ack.part.index: 9 is not below the count"),
        (_set("part.0", -1), "transfer_ack.part.index: expected a non-negative int"),
        (_set("part.1", 1), "transfer_ack.part.count: 1: a message in parts has at least 2"),
        (_set("part", [0]), "transfer_ack.part: expected [index, count]"),
        (_set("payload.ranges", {}), "transfer_ack.payload.ranges: expected an array"),
        (_set("payload.ranges.0", ["a", 1, 0]), "expected [name, vsn, first, last]"),
        (_set("payload.ranges.0.2", 10**6), "is empty or beyond the context"),
        (_set("payload.ranges.0.3", 10**6), "is empty or beyond the context"),
        (_set("payload.ranges.0.3", 0), "ranges[0].last: expected a positive int, got 0"),
        (_set("payload.ranges.0.0", "zz"), "is not in the payload's context"),
        (
            lambda d: d["payload"]["ranges"].append(d["payload"]["ranges"][0]),
            "duplicate replica",
        ),
        (
            _set("payload.ranges", []),
            "is outside what the payload has seen (context 0, clouds empty)",
        ),
        (_set("payload.ranges.0.2", 1), "is outside what the payload has seen (range (1, "),
    ],
)
def test_malformed_parts_are_refused(
    mutate: Callable[[dict[str, Any]], object], problem: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=re.escape(problem)):
        decode_message(_mutated_part(mutate))


def test_only_heartbeats_and_transfer_acks_come_in_parts() -> None:
    whole = encode_message(Heartbeat(sender=A, clock={A: 0}))
    with pytest.raises(
        RemoteProtocolError, match=re.escape("heartbeat.part.count: 0: a message in parts")
    ):
        decode_message(whole.replace(b'"own"', b'"part":[0,0],"own"'))
    goodbye = encode_message(GracefulPermdown(sender=A))
    with pytest.raises(RemoteProtocolError, match="unknown field 'part'"):
        decode_message(goodbye.replace(b'"sender"', b'"part":[0,2],"sender"'))


def test_a_part_number_must_be_below_the_count() -> None:
    with pytest.raises(InvalidArgument, match="part must be an int from 0 to parts - 1"):
        Heartbeat(sender=A, clock={}, part=2, parts=2)
    with pytest.raises(InvalidArgument, match="parts must be an int >= 1"):
        Heartbeat(sender=A, clock={}, part=0, parts=0)


# ---------------------------------------------------------------------------- the tracker


def big_cluster(presences: int, *names: str, delta_sizes: tuple[int, ...] = (10,)) -> Cluster:
    """``a`` with ``presences`` (a third of them gone again), then ``names`` join.

    Delta generations of ``delta_sizes`` (tiny by default, so that transfers are full states).
    """
    cluster = Cluster(["a"], **SMALL, max_delta_sizes=delta_sizes)
    for i in range(presences):
        cluster["a"].track(conn=f"c{i}", topic="room", key=f"u{i}", meta=PAD, now=cluster.now)
    for i in range(0, presences, 3):
        cluster["a"].untrack(conn=f"c{i}", topic="room", key=f"u{i}", now=cluster.now)
    cluster.advance(0.5)
    # One more window, of two events: the first generation now starts after the big window.
    cluster["a"].track(conn="extra", topic="room", key="extra", meta={}, now=cluster.now)
    cluster["a"].untrack(conn="extra", topic="room", key="extra", now=cluster.now)
    cluster.advance(0.5)
    for name in names:
        cluster.add(name)
    return cluster


def live(presences: int) -> int:
    return presences - len(range(0, presences, 3))


def test_a_new_node_gets_a_large_state_in_parts_and_asks_once() -> None:
    cluster = big_cluster(300, "b")
    cluster.advance(2.0)
    assert cluster["b"].count("room") == live(300)
    assert cluster["b"].state.context[cluster["a"].replica] == cluster["a"].state.clock
    assert not cluster["b"].state.clouds
    acks = cluster.messages(TransferAck)
    assert len(acks) > 10
    assert all(len(s.data) <= LIMIT for s in cluster.sent)
    assert all(
        isinstance(s.message, TransferAck) and isinstance(s.message.payload, SnapshotPart)
        for s in acks
    )
    requests = [s for s in cluster.sent if isinstance(s.message, TransferRequest)]
    assert len(requests) == 1


def test_a_lost_part_is_asked_for_again_once_the_reply_goes_quiet() -> None:
    cluster = big_cluster(200)
    a = cluster["a"]

    def lose_the_second_part(sender: str, message: Message) -> bool:
        return isinstance(message, TransferAck) and message.part == 1 and message.request_id == 1

    cluster.lose = lose_the_second_part
    b = cluster.add("b")
    cluster.advance(0.3)
    first = cluster.messages(TransferAck, sender="a")
    assert first
    assert {s.message.request_id for s in first if isinstance(s.message, TransferAck)} == {1}
    assert b.count("room") < live(200)
    assert b.state.context[a.replica] < a.state.clock  # the context waits for every part
    cluster.advance(2.0)
    requests = cluster.messages(TransferRequest, sender="b")
    assert len(requests) == 2  # once, then again after a sampling period without a part
    assert b.count("room") == live(200)
    assert b.state.context[a.replica] == a.state.clock


def test_a_large_delta_generation_reply_arrives_in_parts() -> None:
    cluster = big_cluster(150, "b", delta_sizes=(100, 1000))
    cluster.advance(2.0)
    acks = [s.message for s in cluster.messages(TransferAck)]
    assert len(acks) > 3
    assert all(isinstance(ack, TransferAck) and isinstance(ack.payload, Delta) for ack in acks)
    assert cluster["b"].count("room") == live(150)
    assert cluster["b"].state.context[cluster["a"].replica] == cluster["a"].state.clock


def test_a_request_to_a_replica_that_goes_down_is_forgotten() -> None:
    cluster = big_cluster(100)
    a = cluster["a"]
    cluster.cut.add(("a", "b"))  # b hears of a once, by hand, then nothing
    b = cluster.add("b")
    b.receive(Heartbeat(sender=a.replica, clock={a.replica: a.state.clock}), now=cluster.now)
    cluster.advance(0.3)
    assert "a" in b._requests
    cluster.advance(0.5)  # past the down period
    assert b.replicas()["a"].status.name == "DOWN"
    assert "a" not in b._requests
    cluster.cut.clear()
    cluster.advance(2.0)
    assert b.count("room") == live(100)


def test_a_reply_to_no_request_of_ours_is_refused_part_by_part() -> None:
    source = sender_state(40, 10)
    tracker = make_tracker("b", **SMALL)
    tracker.receive(Heartbeat(sender=A, clock={A: source.clock}), now=0.0)
    tracker.receive(Heartbeat(sender=C, clock={C: 0}), now=0.0)
    drain(tracker)
    before = observe(tracker)
    parts = snapshot_parts(source, tracker.state)
    for part in parts:  # never asked for: request id 1 was not sent
        tracker.receive(part, now=0.0)
    assert observe(tracker) == before
    assert tracker.stats().rejected == {RejectReason.UNSOLICITED: len(parts)}


def test_heartbeat_deltas_in_parts_reach_every_peer() -> None:
    cluster = Cluster(["a", "b", "c"], **SMALL)
    cluster.advance(1.0)
    for i in range(100):
        cluster["a"].track(conn=f"c{i}", topic="room", key=f"u{i}", meta=PAD, now=cluster.now)
    cluster.advance(0.3)
    split = [s for s in cluster.sent if isinstance(s.message, Heartbeat) and s.message.parts > 1]
    assert split
    assert cluster["b"].count("room") == cluster["c"].count("room") == 100
    assert all(len(s.data) <= LIMIT for s in cluster.sent)


def test_delta_parts_restart_the_delta_generations() -> None:
    cluster = Cluster(["a", "b"], **SMALL)
    cluster.advance(1.0)
    cluster["a"].track(conn="x", topic="room", key="x", meta={}, now=cluster.now)
    cluster.advance(0.3)
    b = cluster["b"]
    assert len(b._generations) > 0  # a's small delta came whole and was kept
    since = len(cluster.sent)
    for i in range(50):
        cluster["a"].track(conn=f"c{i}", topic="room", key=f"u{i}", meta=PAD, now=cluster.now)
    cluster.advance(0.3)
    heartbeats = cluster.messages(Heartbeat, sender="a", since=since)
    assert any(s.message.parts > 1 for s in heartbeats if isinstance(s.message, Heartbeat))
    assert b.count("room") == 51
    assert len(b._generations) == 0  # a part is not a window: the generations start again


def test_a_transfer_reply_that_cannot_fit_is_reported_not_sent() -> None:
    tracker = make_tracker("a", **SMALL)
    asking = ReplicaRef("b", 1)
    tracker.receive(Heartbeat(sender=asking, clock={asking: 0}), now=0.0)
    # Peers cannot make a tracker know this many long names (see the next test): the state is
    # filled directly, to reach the one case left that parts cannot fix.
    peers = [ReplicaRef(f"{'n' * 100}{i}", 1) for i in range(20)]  # a context of 2,000+ bytes
    for peer in peers:
        tracker.state.replica_up(peer)
    tracker.messages_to_send()
    clock = {peer: 0 for peer in [asking, *peers]}
    tracker.receive(TransferRequest(request_id=3, sender=asking, clock=clock), now=0.0)
    (event,) = [e for e in _events(tracker) if isinstance(e, Unsendable)]
    assert isinstance(event.message, TransferAck)
    assert event.to == asking.name
    assert "cannot be split further" in event.reason
    assert tracker.messages_to_send() == []


def test_peers_cannot_make_our_clocks_too_large_to_send() -> None:
    tracker = make_tracker("a", **SMALL)
    peers = [ReplicaRef(f"{'n' * 100}{i}", 1) for i in range(20)]
    for peer in peers:
        tracker.receive(Heartbeat(sender=peer, clock={peer: 0}), now=0.0)
    known = tracker.replicas()
    assert 0 < len(known) < len(peers)  # refused once their clocks would pass LIMIT / 4
    assert tracker.stats().rejected == {RejectReason.TOO_MANY_REPLICAS: len(peers) - len(known)}
    tracker.messages_to_send()
    asking = peers[0]
    clock = {peer: 0 for peer in peers}
    tracker.receive(TransferRequest(request_id=3, sender=asking, clock=clock), now=0.0)
    assert not [e for e in _events(tracker) if isinstance(e, Unsendable)]
    replies = tracker.messages_to_send()
    assert replies
    assert all(len(o.data) <= LIMIT for o in replies)


def _events(tracker: Any) -> list[Any]:
    events = []
    while (event := tracker.next_event()) is not None:
        events.append(event)
    return events


# ---------------------------------------------------------------------------- identity limits


@pytest.mark.parametrize("field", ["conn", "topic", "key"])
def test_identity_fields_are_limited_in_utf8_bytes(field: str) -> None:
    tracker = make_tracker("a", **SMALL)
    fields = {"conn": "c", "topic": "t", "key": "k"}
    tracker.track(**{**fields, field: "é" * 10}, meta={}, now=0.0)  # 20 bytes: at the limit
    with pytest.raises(LimitExceeded, match=f"{field} is 21 bytes, over max_{field}_bytes=20"):
        tracker.track(**{**fields, field: "é" * 10 + "x"}, meta={}, now=0.0)
    with pytest.raises(LimitExceeded, match=f"max_{field}_bytes=20"):
        tracker.track(**{**fields, field: "x" * 21}, meta={}, now=0.0)
    assert tracker.count("t") + tracker.count("é" * 10) == 1


def test_the_config_refuses_limits_where_one_presence_would_not_fit() -> None:
    config = TrackerConfig(**SMALL)
    assert config.max_presence_bytes == 200 + 6 * 60 + 64 <= LIMIT // 2
    with pytest.raises(ConfigurationError, match="more than half of max_message_bytes=1000"):
        TrackerConfig(**{**SMALL, "max_message_bytes": 1000})
    with pytest.raises(ConfigurationError, match="max_key_bytes must be an int >= 1"):
        TrackerConfig(max_key_bytes=0)
    defaults = TrackerConfig()
    assert defaults.max_presence_bytes <= 1024 * 1024 // 2  # NATS's default payload fits


# ---------------------------------------------------------------------------- counting parts


def heartbeat_in_parts(presences: int) -> tuple[Any, list[Heartbeat]]:
    """A tracker ``a`` that tracked ``presences``, and its next heartbeat's parts."""
    a = make_tracker("a", **SMALL)
    for i in range(presences):
        a.track(conn=f"c{i}", topic="room", key=f"u{i}", meta=PAD, now=0.0)
    deadline = a.next_deadline()
    assert deadline is not None
    a.handle_timer(now=deadline)
    parts = [o.message for o in a.messages_to_send()]
    assert all(isinstance(p, Heartbeat) for p in parts)
    assert len(parts) > 2
    return a, parts  # type: ignore[return-value]


def test_a_part_counted_twice_completes_its_message_once() -> None:
    a, parts = heartbeat_in_parts(40)
    b = make_tracker("b", **SMALL)
    b.receive(parts[0], now=0.0)
    b.receive(parts[0], now=0.0)
    for part in parts[1:-1]:
        b.receive(part, now=0.0)
    assert b.state.context[a.replica] < a.state.clock  # one part short: not complete
    b.receive(parts[-1], now=0.0)
    b.receive(parts[-1], now=0.0)
    assert b.state.context[a.replica] == a.state.clock
    assert b.count("room") == 40


def test_a_newer_heartbeat_in_parts_replaces_an_unfinished_one() -> None:
    a, first = heartbeat_in_parts(40)
    for i in range(40, 80):
        a.track(conn=f"c{i}", topic="room", key=f"u{i}", meta=PAD, now=0.2)
    a.handle_timer(now=0.2)
    second = [o.message for o in a.messages_to_send()]
    b = make_tracker("b", **SMALL)
    for part in first[:-1] + second:  # the first window's last part is lost
        b.receive(part, now=0.0)
    assert b.count("room") < 80
    assert b.state.context[a.replica] < a.state.clock  # the clock waits for a transfer


def test_a_replica_that_goes_down_mid_message_is_not_waited_for() -> None:
    _, parts = heartbeat_in_parts(40)
    b = make_tracker("b", **SMALL)
    b.receive(parts[0], now=0.0)
    assert "a" in b._heartbeat_parts
    b.handle_timer(now=0.0)
    b.handle_timer(now=1.0)  # silent past the down period
    assert b.replicas()["a"].status.name == "DOWN"
    assert "a" not in b._heartbeat_parts


def test_a_reply_to_an_earlier_request_still_counts_and_completes_it() -> None:
    # A large state takes the holder seconds to encode: the newcomer asks again meanwhile, and
    # the reply to its first request must not be thrown away (it would start over for ever).
    cluster = big_cluster(60)
    a = cluster["a"]

    def lose_replies(sender: str, message: Message) -> bool:
        return isinstance(message, TransferAck)

    cluster.lose = lose_replies
    b = cluster.add("b")
    while len(cluster.messages(TransferRequest, sender="b")) < 2:  # asked, quiet, asked again
        cluster.advance(0.1)
        assert cluster.now < 5.0
    replies = [s.message for s in cluster.messages(TransferAck, sender="a")]
    older = [m for m in replies if isinstance(m, TransferAck) and m.request_id == 1]
    assert len(older) > 1
    assert b._requests["a"].request_id == 2
    for message in older:  # the first reply arrives late, whole
        b.receive(message, now=cluster.now)
    assert b.count("room") == live(60)
    assert "a" not in b._requests  # complete: no more waiting for the second one
    assert b.state.context[a.replica] == a.state.clock
    assert b.stats().rejected == {}


def test_a_reply_to_a_request_long_superseded_is_refused() -> None:
    tracker = make_tracker("b", **SMALL)
    tracker.receive(Heartbeat(sender=A, clock={A: 3}), now=0.0)
    for _ in range(_tracker.MAX_ASKED + 1):
        tracker._request_transfer(A)
    oldest, latest = 1, tracker._requests["a"].request_id
    assert latest == _tracker.MAX_ASKED + 1
    empty = Snapshot(replica=A, context={A: 3}, clouds={}, values={})
    tracker.receive(TransferAck(request_id=oldest, sender=A, payload=empty), now=0.0)
    assert tracker.stats().rejected == {RejectReason.UNSOLICITED: 1}
    assert "a" in tracker._requests
    tracker.receive(TransferAck(request_id=latest - 1, sender=A, payload=empty), now=0.0)
    assert "a" not in tracker._requests
    assert tracker.state.context[A] == 3


def test_a_snapshot_never_comes_in_parts() -> None:
    snapshot = Snapshot(replica=A, context={}, clouds={}, values={})
    with pytest.raises(InvalidArgument, match="a Snapshot is sent whole"):
        TransferAck(request_id=1, sender=A, payload=snapshot, part=0, parts=2)
    data = encode_message(TransferAck(request_id=1, sender=A, payload=snapshot))
    forged = data.replace(b'"payload"', b'"part":[0,2],"payload"')
    with pytest.raises(RemoteProtocolError, match="a snapshot is sent whole"):
        decode_message(forged)


# ---------------------------------------------------------------------------- dots per part


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_max_dots_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(LocalProtocolError, match="max_dots must be an int >= 1"):
        encode_parts(Heartbeat(sender=A, clock={A: 0}), max_bytes=LIMIT, max_dots=bad)


def churned(joins: int, leaves: int) -> tuple[ReplicaState, Delta]:
    """``a`` after a window of ``joins`` joins, the first ``leaves`` of them leaving again."""
    state = ReplicaState(A)
    for i in range(joins):
        state.join(f"c{i}", "room", f"u{i}", {})
    for i in range(leaves):
        state.leave(f"c{i}", "room", f"u{i}")
    return state, state.take_delta()


def test_a_window_of_many_dots_in_few_bytes_is_cut_by_its_dots() -> None:
    state, delta = churned(1000, 1000)
    message = Heartbeat(sender=A, clock={A: state.clock}, delta=delta)
    assert b"[[1,2000]]" in encode_message(message)  # one run: 2,000 dots in a few bytes
    assert encode_parts(message, max_bytes=LIMIT) == [(message, encode_message(message))]
    parts = encode_parts(message, max_bytes=LIMIT, max_dots=300)
    assert len(parts) == 7  # the run, cut in runs of 300 dots
    for part, data in parts:
        assert len(payload_of(part).clouds[A]) <= 300
        assert decode_message(data, max_dots=300) == part
    with pytest.raises(RemoteProtocolError, match="more than max_dots=300"):
        decode_message(encode_message(message), max_dots=300)
    whole, pieces = receiver(A), receiver(A)
    whole.merge(delta)
    in_parts = [part for part, _ in parts]
    merge_all(pieces, in_parts)
    complete(pieces, in_parts)
    assert_equal_states(pieces, whole)


@given(
    joins=st.integers(1, 60),
    leaves=st.integers(0, 60),
    max_dots=st.integers(1, 40),
    order=st.randoms(use_true_random=False),
)
def test_every_part_holds_at_most_max_dots_and_they_add_up_to_the_whole(
    joins: int, leaves: int, max_dots: int, order: random.Random
) -> None:
    state, delta = churned(joins, min(joins, leaves))
    message = Heartbeat(sender=A, clock={A: state.clock}, delta=delta)
    parts = encode_parts(message, max_bytes=LIMIT, max_dots=max_dots)
    dots = [len(dots) for part, _ in parts for dots in payload_of(part).clouds.values()]
    assert sum(dots) == len(delta.clouds[A])
    assert all(count <= max_dots for count in dots)
    assert all(len(data) <= LIMIT for _, data in parts)
    whole, pieces = receiver(A), receiver(A)
    whole.merge(delta)
    in_parts = [part for part, _ in parts]
    order.shuffle(in_parts)
    if len(parts) > 1:
        merge_all(pieces, in_parts)
        complete(pieces, in_parts)
    else:  # it fitted one message: merged whole
        pieces.merge(delta)
    assert_equal_states(pieces, whole)


def test_a_window_of_100000_joins_and_100000_leaves_travels_in_parts_and_converges() -> None:
    """Honest churn: more dots than one message may hold, and more bytes too."""
    a, b = make_tracker("a", seed=1), make_tracker("b", seed=2)
    assert a.config.max_message_bytes == DEFAULT_MAX_BYTES

    def exchange(now: float) -> list[Any]:
        sent = []
        for tracker in (a, b):
            tracker.handle_timer(now=now)
        for sender, target in ((a, b), (b, a)):
            for out in sender.messages_to_send():
                sent.append(out)
                target.receive(out.data, now=now)
        drain(a)
        drain(b)
        return sent

    now = 0.0
    for _ in range(3):  # the two meet
        now += 0.1
        exchange(now)
    old = 20_000  # tracked and sent in an earlier window
    for i in range(old):
        a.track(conn=f"old{i}", topic="room", key=f"old{i}", meta={"n": i}, now=now)
    now += 0.1
    exchange(now)
    assert b.count("room") == old
    # The window: 100,000 joins, and 100,000 leaves (the 20,000 older presences, and 80,000 of
    # the new ones): 220,000 dots, in runs of up to 80,000, and 20,000 presences (about 1.2 MB).
    # A receiver holds the dots of a message in parts until its last part is in, so the window
    # must also fit its max_cloud_dots (1,048,576 by default).
    for i in range(100_000):
        a.track(conn=f"c{i}", topic="room", key=f"u{i}", meta={"n": i}, now=now)
    for i in range(old):
        a.untrack(conn=f"old{i}", topic="room", key=f"old{i}", now=now)
    for i in range(100_000 - old):
        a.untrack(conn=f"c{i}", topic="room", key=f"u{i}", now=now)
    now += 0.1
    sent = [out for out in exchange(now) if isinstance(out.message, Heartbeat)]
    parts = [out for out in sent if out.message.delta is not None and out.message.parts > 1]
    assert len(parts) == parts[0].message.parts > 220_000 // DEFAULT_MAX_DOTS
    assert sum(len(out.data) for out in parts) > DEFAULT_MAX_BYTES
    for out in parts:
        assert len(out.data) <= DEFAULT_MAX_BYTES
        assert sum(map(len, payload_of(out.message).clouds.values())) <= DEFAULT_MAX_DOTS
    assert sum(len(payload_of(out.message).clouds[a.replica]) for out in parts) == 220_000
    assert b.stats().rejected == {}
    assert b.count("room") == a.count("room") == 20_000
    assert sorted((e.clock, e.conn) for e in b.state.entries()) == sorted(
        (e.clock, e.conn) for e in a.state.entries()
    )
    assert b.state.context[a.replica] == a.state.clock == old + 200_000
    assert not b.state.clouds


def test_a_request_no_longer_needed_is_dropped_once_its_reply_goes_quiet() -> None:
    b = make_tracker("b", **SMALL)
    b.handle_timer(now=0.0)
    b.receive(Heartbeat(sender=A, clock={A: 0}), now=0.0)
    b._request_transfer(A)  # a reply in parts lost one part, say; a's clock leads no more
    b.messages_to_send()
    now = 0.0
    while "a" in b._requests:
        now = round(now + 0.05, 2)
        assert now < 1.0, "the request is waited for for ever"
        b.receive(Heartbeat(sender=A, clock={A: 0}), now=now)
        b.handle_timer(now=now)
    assert now >= 0.2  # not before a whole sampling period went quiet
    assert not [o for o in b.messages_to_send() if isinstance(o.message, TransferRequest)]


def test_an_assembly_sees_only_what_every_part_could_speak_for() -> None:
    # A part is cut at the bounds of its moment, and entries of an owner unknown then are not
    # taken: the whole context is held to the lowest bound of any part, per owner.
    context = {A: 30, C: 20}

    def part(i: int, clouds: dict[ReplicaRef, frozenset[int]]) -> SnapshotPart:
        return SnapshotPart(replica=A, context=context, ranges={}, clouds=clouds, values={})

    assembly = _tracker._Assembly(A, 1, 3)
    assembly.add(0, part(0, {C: frozenset({25})}), {A: 2**63 - 1, C: 12})
    assembly.add(1, part(1, {}), {A: 2**63 - 1})  # c was unknown when this one came
    assembly.add(2, part(2, {C: frozenset({26})}), {A: 2**63 - 1, C: 20})
    assert assembly.complete
    assert assembly.seen_context() == {A: 30, C: 0}
    assert assembly.clouds == {C: {25, 26}}
    late = _tracker._Assembly(A, 2, 2)
    late.add(0, part(0, {C: frozenset({25})}), {A: 2**63 - 1})  # unknown: its dots not kept
    late.add(1, part(1, {}), {A: 2**63 - 1, C: 12})
    assert late.seen_context() == {A: 30, C: 0}
    assert late.clouds == {}
    assert late.dots == 0


def test_a_replica_busy_encoding_a_large_reply_is_waited_for() -> None:
    # The holder of a large state sends nothing for seconds while it encodes the reply: its
    # silence is not a reason to stop waiting (only a clock that no longer leads is).
    b = make_tracker("b", **SMALL)
    b.handle_timer(now=0.0)
    b.receive(Heartbeat(sender=A, clock={A: 3}), now=0.0)
    b._request_transfer(A)
    request_id = b._requests["a"].request_id
    for i in range(1, 4):  # 0.3 s of samples without a clock from a (down period: 0.4 s)
        b.handle_timer(now=i * 0.1)
    assert b._requests["a"].request_id == request_id
    reply = Snapshot(replica=A, context={A: 3}, clouds={}, values={})
    b.receive(TransferAck(request_id=request_id, sender=A, payload=reply), now=0.35)
    assert "a" not in b._requests
    assert b.state.context[A] == 3
    assert b.stats().rejected == {}
