"""A hostile or broken peer changes nothing it should not (the hardening issue, attack by attack).

Each test replays one attack that worked against the tracker before it was hardened, with the
message the attacker would send, and shows what stops it now:

* without a key, the checks that need none: transfer replies only for our outstanding request,
  transfer requests only from known replicas at a bounded rate, claims about third replicas cut
  at what those announced, bounded replicas, cloud dots and parts, sampling that stays cheap;
* with a key (``docs/security.rst``), what no check of content can stop: a forged message in
  another replica's name, and a captured one replayed later.

Every refused message is counted in ``Tracker.stats().rejected`` and reported as a
``MessageRejected`` event; the state is unchanged.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import Cluster, drain, make_tracker, observe, summarize
from presence_core import (
    ConfigurationError,
    Delta,
    Entry,
    GracefulPermdown,
    Heartbeat,
    Key,
    Keyring,
    LimitExceeded,
    LocalProtocolError,
    MessageRejected,
    RejectReason,
    RemoteProtocolError,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    SnapshotPart,
    Tracker,
    TrackerConfig,
    TransferAck,
    TransferRequest,
    Unsendable,
    _tracker,
    dominates,
    encode_message,
    seal,
)
from presence_core._claims import clamp_clock, clamp_payload

KEY = Keyring(Key("k1", b"s" * 32))
OUTSIDER = Keyring(Key("k1", b"x" * 32))  # the right id, the wrong secret


def rejected(tracker: Tracker) -> list[tuple[Any, ...]]:
    """The rejections among the tracker's pending events (the others are dropped)."""
    return [s for s in summarize(drain(tracker)) if s[0] == "rejected"]


def three(**config: Any) -> Cluster:
    """Nodes a, b and c that know each other, c with two presences."""
    cluster = Cluster(["a", "b", "c"], **config)
    cluster.advance(1.0)
    cluster.track("c", "c1", "room", "carol")
    cluster.track("c", "c2", "room", "dave")
    cluster.advance(0.5)
    assert cluster["a"].count("room") == 2
    cluster.events()
    return cluster


def forged_removal(c: ReplicaRef, sender: ReplicaRef, upto: int) -> Heartbeat:
    """A heartbeat of ``sender`` whose delta says it saw c's dots 1..upto, and no entry of c."""
    delta = Delta(
        replica=sender,
        values={},
        clouds={c: frozenset(range(1, upto + 1))},
        start={sender: 0},
        end={sender: 0},
    )
    return Heartbeat(sender=sender, clock={sender: 0}, delta=delta)


# ------------------------------------------------------------------- delete others' presences


def test_a_forged_removal_in_c_s_name_is_refused_with_a_key() -> None:
    cluster = three(keyring=KEY)
    a = cluster["a"]
    c = cluster["c"].replica
    attacker = ReplicaRef("x", 1)
    forged = encode_message(forged_removal(c, attacker, a.state.context[c]))  # 174 bytes
    before = observe(a)
    a.receive(forged, now=cluster.now)  # not sealed
    a.receive(seal(forged, key=OUTSIDER.current, origin=attacker, counter=1), now=cluster.now)
    assert observe(a) == before
    assert a.count("room") == 2
    assert rejected(a) == [("rejected", "unauthenticated", None)] * 2
    assert a.stats().rejected == {RejectReason.UNAUTHENTICATED: 2}


def test_a_removal_in_c_s_name_without_a_key_still_works_the_threat_model_says_so() -> None:
    # Documented, not a bug: without a key anything on the bus is a member, and a member may
    # gossip c's removals. (docs/security.rst, "Without a key".)
    cluster = three()
    a = cluster["a"]
    c = cluster["c"].replica
    a.receive(forged_removal(c, ReplicaRef("x", 1), a.state.context[c]), now=cluster.now)
    assert a.count("room") == 0


def test_claims_beyond_what_c_announced_are_cut() -> None:
    cluster = three()
    a = cluster["a"]
    c = cluster["c"].replica
    held = a.state.context[c]
    # dots above c's own clock cannot be genuine: they are forgotten, not parked
    a.receive(forged_removal(c, ReplicaRef("x", 1), held + 1000), now=cluster.now)
    assert a.state.context[c] == held
    assert a.state.clouds.get(c, frozenset()) == frozenset()
    assert a.stats().claims_cut == 1
    # so c's next joins are not mistaken for dots already seen
    cluster.track("c", "c3", "room", "erin")
    cluster.advance(0.5)
    assert "erin" in a.presences("room")


def test_an_unsolicited_reply_cannot_push_c_to_the_end_of_time() -> None:
    cluster = three()
    a = cluster["a"]
    b, c = cluster["b"].replica, cluster["c"].replica
    forged = Snapshot(replica=b, context={c: 2**63 - 1}, clouds={}, values={})
    before = observe(a)
    a.receive(encode_message(TransferAck(request_id=1, sender=b, payload=forged)), now=cluster.now)
    assert observe(a) == before
    assert rejected(a) == [("rejected", "unsolicited", "b")]


def test_a_solicited_reply_cannot_push_c_to_the_end_of_time_either() -> None:
    cluster = three()
    a = cluster["a"]
    b, c = cluster["b"].replica, cluster["c"].replica
    a._request_transfer(b)  # a waits for b's reply
    pending = a._requests["b"].request_id
    forged = Snapshot(replica=b, context={c: 2**63 - 1, b: 0}, clouds={}, values={})
    a.receive(TransferAck(request_id=pending, sender=b, payload=forged), now=cluster.now)
    assert a.state.context[c] == cluster["c"].state.clock  # cut at what c announced
    cluster.track("c", "c3", "room", "erin")
    cluster.advance(0.5)
    assert "erin" in a.presences("room")  # c's later joins still land


def test_a_forged_graceful_permdown_is_refused_with_a_key() -> None:
    cluster = three(keyring=KEY)
    a = cluster["a"]
    c = cluster["c"].replica
    before = observe(a)
    a.receive(encode_message(GracefulPermdown(sender=c)), now=cluster.now)  # 57 bytes, no seal
    assert observe(a) == before
    cluster.advance(0.5)
    assert a.replicas()["c"].status.name == "UP"
    assert a.count("room") == 2


def test_a_forged_new_incarnation_of_c_is_refused_with_a_key() -> None:
    cluster = three(keyring=KEY)
    a = cluster["a"]
    impostor = ReplicaRef("c", 2**63 - 1)
    forged = Heartbeat(sender=impostor, clock={impostor: 0})
    a.receive(encode_message(forged), now=cluster.now)
    assert a.replicas()["c"].ref == cluster["c"].replica
    assert a.count("room") == 2


def test_a_member_cannot_seal_in_another_members_name() -> None:
    cluster = three(keyring=KEY)
    a, b = cluster["a"], cluster["b"]
    c = cluster["c"].replica
    # b holds the key, but a message that says it is c's is refused when b sealed it
    data = seal(
        encode_message(GracefulPermdown(sender=c)), key=KEY.current, origin=b.replica, counter=999
    )
    a.receive(data, now=cluster.now)
    assert a.count("room") == 2
    assert rejected(a) == [("rejected", "unauthenticated", "c")]


# ------------------------------------------------------------------- inject presences


def test_an_unsolicited_reply_from_a_stranger_injects_nothing() -> None:
    cluster = three()
    a = cluster["a"]
    stranger = ReplicaRef("z", 1)
    owner = cluster["c"].replica
    ghost = Entry("room", "ghost", "g1", {"phx_ref": "x"}, owner, a.state.context[owner] + 1)
    payload = Snapshot(
        replica=stranger,
        context={owner: ghost.clock},
        clouds={},
        values={owner: {ghost.clock: ghost}},
    )
    before = observe(a)
    a.receive(TransferAck(request_id=7, sender=stranger, payload=payload), now=cluster.now)
    assert observe(a) == before
    assert "ghost" not in a.presences("room")


# ------------------------------------------------------------------- memory and CPU


def test_replicas_beyond_max_replicas_are_refused_while_all_are_up() -> None:
    tracker = make_tracker("a", max_replicas=3)
    tracker.handle_timer(now=0.0)
    fakes = [ReplicaRef(f"f{i}", 1) for i in range(5)]
    for fake in fakes:
        tracker.receive(Heartbeat(sender=fake, clock={fake: 0}), now=0.01)
    assert sorted(tracker.replicas()) == ["f0", "f1", "f2"]
    assert tracker.stats().rejected == {RejectReason.TOO_MANY_REPLICAS: 2}


def test_a_new_replica_takes_the_place_of_the_one_down_for_longest() -> None:
    tracker = make_tracker("a", max_replicas=2)
    tracker.handle_timer(now=0.0)
    old, older = ReplicaRef("old", 1), ReplicaRef("older", 1)
    tracker.receive(Heartbeat(sender=older, clock={older: 0}), now=0.01)
    tracker.receive(Heartbeat(sender=old, clock={old: 0}), now=0.02)
    tracker.handle_timer(now=1.0)  # both silent past the down period
    assert {r.status.name for r in tracker.replicas().values()} == {"DOWN"}
    drain(tracker)
    new = ReplicaRef("new", 1)
    tracker.receive(Heartbeat(sender=new, clock={new: 0}), now=1.1)
    assert sorted(tracker.replicas()) == ["new", "old"]
    assert ("permdown", "older", 1) in summarize(drain(tracker))


def test_cloud_dots_are_bounded() -> None:
    tracker = make_tracker("a", max_cloud_dots=1000)
    s = ReplicaRef("s", 1)
    tracker.receive(Heartbeat(sender=s, clock={s: 0}), now=0.0)
    drain(tracker)
    for i in range(5):  # each parks 400 dots of s beyond a gap (dot 1 never comes)
        first = 2 + 400 * i
        delta = Delta(
            replica=s,
            values={},
            clouds={s: frozenset(range(first, first + 400))},
            start={s: first - 1},
            end={s: first + 399},
        )
        tracker.receive(Heartbeat(sender=s, clock={s: first + 399}, delta=delta), now=0.01)
    assert tracker.state.cloud_dots == 800
    assert tracker.stats().rejected == {RejectReason.OVER_LIMIT: 3}
    assert tracker.stats().cloud_dots == 800


def test_a_tick_does_not_recompact_parked_clouds(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = make_tracker("a")
    s = ReplicaRef("s", 1)
    tracker.receive(Heartbeat(sender=s, clock={s: 0}), now=0.0)
    delta = Delta(
        replica=s,
        values={},
        clouds={s: frozenset(range(3, 60_003))},
        start={s: 2},
        end={s: 60_002},
    )
    tracker.receive(Heartbeat(sender=s, clock={s: 60_002}, delta=delta), now=0.01)
    assert tracker.state.cloud_dots == 60_000

    def no_sorting(*args: object) -> object:
        raise AssertionError("a tick sorted a cloud")

    from presence_core import _state

    monkeypatch.setattr(_state, "compact_cloud", no_sorting)
    for i in range(20):  # ticks within the down period: s stays up
        tracker.track(conn=f"c{i}", topic="t", key="k", meta={}, now=0.02 + i * 0.015)
        tracker.handle_timer(now=0.03 + i * 0.015)
    assert tracker.state.cloud_dots == 60_000


def test_clock_sampling_asks_a_bounded_few_of_many_incomparable_peers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracker = make_tracker("a")
    tracker.handle_timer(now=0.0)
    tracker.messages_to_send()
    peers = [ReplicaRef(f"p{i:03}", 1) for i in range(300)]
    for i, peer in enumerate(peers):  # each knows one dot of its own: pairwise incomparable
        tracker.receive(Heartbeat(sender=peer, clock={peer: i + 1}), now=0.01)
    calls = 0
    real = dominates

    def counting(a: Any, b: Any) -> bool:
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(_tracker, "dominates", counting)
    for now in (0.1, 0.2, 0.3):
        tracker.handle_timer(now=now)
    requests = [o for o in tracker.messages_to_send() if isinstance(o.message, TransferRequest)]
    assert len(requests) == _tracker.MAX_TRANSFER_REQUESTS
    # the peers that know the most are asked first
    assert sorted(str(o.to) for o in requests) == [f"p{i:03}" for i in range(292, 300)]
    assert calls <= len(peers) + _tracker.MAX_TRANSFER_REQUESTS**2


def test_remote_metas_and_identities_obey_the_local_limits() -> None:
    tracker = make_tracker("a", max_meta_bytes=100)
    s = ReplicaRef("s", 1)
    tracker.receive(Heartbeat(sender=s, clock={s: 0}), now=0.0)
    drain(tracker)
    big = Entry("t", "k", "c", {"x": "y" * 200}, s, 1)
    delta = Delta(
        replica=s, values={s: {1: big}}, clouds={s: frozenset({1})}, start={s: 0}, end={s: 1}
    )
    before = observe(tracker)
    with pytest.raises(RemoteProtocolError, match="meta"):
        tracker.receive(encode_message(Heartbeat(sender=s, clock={s: 1}, delta=delta)), now=0.1)
    assert observe(tracker) == before
    assert tracker.stats().rejected == {RejectReason.MALFORMED: 1}


def test_replica_names_longer_than_the_limit_are_refused() -> None:
    tracker = make_tracker("a")
    long = ReplicaRef("n" * 256, 1)
    before = observe(tracker)
    with pytest.raises(RemoteProtocolError):
        tracker.receive(encode_message(Heartbeat(sender=long, clock={long: 0})), now=0.0)
    assert observe(tracker) == before
    assert tracker.replicas() == {}


# ------------------------------------------------------------------- amplification


def test_a_transfer_request_from_a_stranger_gets_no_reply() -> None:
    cluster = three()
    a = cluster["a"]
    a.messages_to_send()
    stranger = ReplicaRef("victim", 1)
    a.receive(encode_message(TransferRequest(request_id=1, sender=stranger, clock={})), now=1.6)
    assert a.messages_to_send() == []
    assert rejected(a) == [("rejected", "unknown_requester", "victim")]


def test_transfer_requests_are_answered_at_most_once_per_period() -> None:
    cluster = three()
    a = cluster["a"]
    b = cluster["b"].replica
    a.messages_to_send()
    now = cluster.now
    for i in range(5):
        a.receive(TransferRequest(request_id=i + 1, sender=b, clock={}), now=now + 0.01 * i)
    replies = [o for o in a.messages_to_send() if isinstance(o.message, TransferAck)]
    assert len(replies) == 1
    assert a.stats().rejected == {RejectReason.RATE_LIMITED: 4}
    a.receive(TransferRequest(request_id=9, sender=b, clock={}), now=now + 0.2)
    (reply,) = [o.message for o in a.messages_to_send() if o.to == "b"]
    assert isinstance(reply, TransferAck)
    assert reply.request_id == 9
    assert a.stats().transfer_requests_answered == 2


# ------------------------------------------------------------------- resurrection


def test_a_replayed_heartbeat_cannot_bring_a_dead_replica_back() -> None:
    cluster = three(keyring=KEY)
    a = cluster["a"]
    captured = [s.data for s in cluster.messages(Heartbeat, sender="c")]
    assert captured
    cluster.kill("c")
    cluster.advance(2.0)  # past the permdown period
    assert "c" not in a.replicas()
    assert a.count("room") == 0
    drain(a)
    for data in captured:
        a.receive(data, now=cluster.now)
    assert "c" not in a.replicas()
    assert a.count("room") == 0
    assert {r[1] for r in rejected(a)} == {"replayed"}


def test_strangers_cannot_flush_the_memory_of_departures_with_a_key() -> None:
    # Without a key, a member that invents _RETIRED_MEMORY names can (docs/security.rst).
    cluster = three(keyring=KEY)
    a = cluster["a"]
    departed = cluster["c"]
    captured = [s.data for s in cluster.messages(Heartbeat, sender="c")]
    cluster.pumps["c"].command(lambda now: departed.graceful_permdown(now=now), now=cluster.now)
    cluster.pump()
    assert "c" not in a.replicas()
    flush = _tracker._RETIRED_MEMORY + 1  # names enough to push c out, were they accepted
    for i in range(flush):
        fake = ReplicaRef(f"f{i}", 1)
        a.receive(encode_message(Heartbeat(sender=fake, clock={fake: 0})), now=cluster.now)
        a.receive(encode_message(GracefulPermdown(sender=fake)), now=cluster.now)
    assert a.stats().rejected[RejectReason.UNAUTHENTICATED] == 2 * flush
    for data in captured:
        a.receive(data, now=cluster.now)
    assert "c" not in a.replicas()


def test_a_message_object_cannot_bypass_the_key() -> None:
    tracker = make_tracker("a", keyring=KEY)
    s = ReplicaRef("s", 1)
    with pytest.raises(Exception, match="sealed bytes"):
        tracker.receive(Heartbeat(sender=s, clock={s: 0}), now=0.0)
    assert tracker.replicas() == {}


def test_rejections_are_events_with_the_sender_and_a_reason() -> None:
    tracker = make_tracker("a")
    tracker.receive(TransferRequest(request_id=1, sender=ReplicaRef("q", 1), clock={}), now=0.0)
    (event,) = drain(tracker)
    assert isinstance(event, MessageRejected)
    assert event.reason is RejectReason.UNKNOWN_REQUESTER
    assert event.reason.normal
    assert event.sender == ReplicaRef("q", 1)
    assert "do not know" in event.detail


def test_replica_state_is_unchanged_by_every_refusal_above() -> None:
    # A guard for the helpers: ReplicaState alone still merges what it is given (the checks
    # live in the tracker, which knows who sent what).
    state = ReplicaState(ReplicaRef("a", 1))
    c = ReplicaRef("c", 1)
    state.replica_up(c)
    state.merge(Snapshot(replica=c, context={c: 5}, clouds={}, values={}))
    assert state.context[c] == 5


# ------------------------------------------------------------------- the cut, as properties

REFS = [ReplicaRef("a", 1), ReplicaRef("b", 1), ReplicaRef("c", 1)]


@st.composite
def payloads(draw: st.DrawFn) -> tuple[Delta | Snapshot | SnapshotPart, ReplicaRef]:
    """A delta, a full extract or a part of one from b, who knows a and c."""
    states = {ref: ReplicaState(ref) for ref in REFS}
    for state in states.values():
        for ref in REFS:
            if ref != state.replica:
                state.replica_up(ref)
    for step in range(draw(st.integers(0, 30))):
        actor = states[draw(st.sampled_from(REFS))]
        if draw(st.booleans()) or not len(actor):
            actor.join(f"c{step}", "t", f"k{step % 4}", {})
        else:
            entry = draw(st.sampled_from(sorted(actor.entries(), key=lambda e: e.clock)))
            actor.leave(entry.conn, entry.topic, entry.key)
        if draw(st.booleans()):  # gossip: b hears from the others now and then
            for other in states.values():
                if other.replica != REFS[1] and draw(st.booleans()):
                    states[REFS[1]].merge(other.take_delta())
    b = states[REFS[1]]
    kind = draw(st.sampled_from(["delta", "snapshot", "part"]))
    if kind == "delta":
        return b.take_delta(), REFS[1]
    snapshot = b.extract(None, {ref: 0 for ref in REFS})
    if kind == "snapshot":
        return snapshot, REFS[1]
    owner = draw(st.sampled_from(REFS))
    upto = snapshot.context.get(owner, 0)
    if upto == 0:
        return snapshot, REFS[1]
    first = draw(st.integers(0, upto - 1))
    last = draw(st.integers(first + 1, upto))
    rows = {c: e for c, e in snapshot.values.get(owner, {}).items() if first < c <= last}
    part = SnapshotPart(
        replica=REFS[1],
        context=snapshot.context,
        ranges={owner: (first, last)},
        clouds={},
        values={owner: rows} if rows else {},
    )
    return part, REFS[1]


def claims(payload: Delta | Snapshot | SnapshotPart) -> dict[ReplicaRef, int]:
    """The highest clock claimed per replica, anywhere in the payload."""
    found: dict[ReplicaRef, int] = {}
    contexts = [payload.end, payload.start] if isinstance(payload, Delta) else [payload.context]
    if isinstance(payload, SnapshotPart):
        contexts.append({r: last for r, (_, last) in payload.ranges.items()})
    contexts.append({r: max(d) for r, d in payload.clouds.items() if d})
    contexts.append({r: max(rows) for r, rows in payload.values.items() if rows})
    for context in contexts:
        for replica, value in context.items():
            found[replica] = max(found.get(replica, 0), value)
    return found


@given(payloads(), st.dictionaries(st.sampled_from(REFS), st.integers(0, 20)))
def test_a_cut_payload_claims_nothing_beyond_the_bounds(
    drawn: tuple[Delta | Snapshot | SnapshotPart, ReplicaRef], bounds: dict[ReplicaRef, int]
) -> None:
    payload, sender = drawn
    cut = clamp_payload(payload, sender, bounds)
    result = payload if cut is None else cut
    for replica, value in claims(result).items():
        if replica != sender and replica in bounds:
            assert value <= bounds[replica]
    # the sender's own claims are never touched
    assert claims(result).get(sender) == claims(payload).get(sender)
    if cut is not None:
        # a cut payload is one the public constructors accept (no hidden inconsistency)
        fields = attrs.asdict(cut, recurse=False)
        type(cut)(**fields)
        assert any(
            value > bounds[replica]
            for replica, value in claims(payload).items()
            if replica != sender and replica in bounds
        )


@given(payloads())
def test_bounds_at_the_truth_cut_nothing(
    drawn: tuple[Delta | Snapshot | SnapshotPart, ReplicaRef],
) -> None:
    payload, sender = drawn
    truth = claims(payload)
    assert clamp_payload(payload, sender, truth) is None


# ------------------------------------------------------------------- limits at their boundary


def test_our_own_replica_name_at_and_over_its_limit() -> None:
    config = TrackerConfig(max_replica_name_bytes=8)
    Tracker(config=config, replica=ReplicaRef("é" * 4, 1), rng=random.Random(0))  # 8 bytes
    with pytest.raises(LimitExceeded, match="9 bytes, over max_replica_name_bytes=8"):
        Tracker(config=config, replica=ReplicaRef("é" * 4 + "x", 1), rng=random.Random(0))


def test_a_remote_name_at_and_over_its_limit() -> None:
    tracker = make_tracker("a", max_replica_name_bytes=8)
    at, over = ReplicaRef("n" * 8, 1), ReplicaRef("n" * 9, 1)
    tracker.receive(encode_message(Heartbeat(sender=at, clock={at: 0})), now=0.0)
    before = observe(tracker)
    with pytest.raises(RemoteProtocolError):
        tracker.receive(encode_message(Heartbeat(sender=over, clock={over: 0})), now=0.0)
    assert observe(tracker) == before
    assert sorted(tracker.replicas()) == ["n" * 8]


def test_cloud_dots_at_and_over_their_limit() -> None:
    tracker = make_tracker("a", max_cloud_dots=100)
    s = ReplicaRef("s", 1)
    tracker.receive(Heartbeat(sender=s, clock={s: 0}), now=0.0)

    def parked(first: int, count: int) -> Heartbeat:
        dots = frozenset(range(first, first + count))
        delta = Delta(
            replica=s, values={}, clouds={s: dots}, start={s: first - 1}, end={s: max(dots)}
        )
        return Heartbeat(sender=s, clock={s: max(dots)}, delta=delta)

    tracker.receive(parked(10, 100), now=0.01)  # exactly the limit
    assert tracker.state.cloud_dots == 100
    before = observe(tracker)
    tracker.receive(parked(200, 1), now=0.02)  # one more
    assert observe(tracker) == before
    assert tracker.stats().rejected == {RejectReason.OVER_LIMIT: 1}


def test_replicas_at_and_over_their_limit() -> None:
    tracker = make_tracker("a", max_replicas=2)
    for i in range(2):
        peer = ReplicaRef(f"p{i}", 1)
        tracker.receive(Heartbeat(sender=peer, clock={peer: 0}), now=0.0)
    assert len(tracker.replicas()) == 2
    extra = ReplicaRef("p2", 1)
    before = observe(tracker)
    tracker.receive(Heartbeat(sender=extra, clock={extra: 0}), now=0.0)
    assert observe(tracker) == before
    # a known replica's heartbeat is never refused by the limit
    known = ReplicaRef("p0", 1)
    tracker.receive(Heartbeat(sender=known, clock={known: 0}), now=0.1)
    assert tracker.stats().rejected == {RejectReason.TOO_MANY_REPLICAS: 1}


def test_the_new_limits_are_validated() -> None:
    for field in ("max_replica_name_bytes", "max_replicas", "max_cloud_dots"):
        for wrong in (0, -1, 1.5, True, None):
            options: dict[str, Any] = {field: wrong}
            with pytest.raises(ConfigurationError, match=field):
                TrackerConfig(**options)


# ------------------------------------------------------------------- every refusal, one by one


def test_entries_beyond_a_bound_are_cut_even_when_the_context_is_not() -> None:
    c, s = ReplicaRef("c", 1), ReplicaRef("s", 1)
    ghost = Entry("t", "k", "g", {}, c, 5)
    lying = Delta(replica=s, values={c: {5: ghost}}, clouds={}, start={}, end={c: 1})
    cut = clamp_payload(lying, s, {c: 1})
    assert cut is not None
    assert cut.values == {}
    snapshot = Snapshot(replica=s, context={c: 9}, clouds={}, values={c: {5: ghost}})
    cut_snapshot = clamp_payload(snapshot, s, {c: 3})
    assert cut_snapshot is not None
    assert (cut_snapshot.context, cut_snapshot.values) == ({c: 3}, {})


def test_a_cut_keeps_the_entries_within_the_bound_and_every_one_of_the_senders() -> None:
    c, s = ReplicaRef("c", 1), ReplicaRef("s", 1)
    kept, ghost = Entry("t", "k", "a", {}, c, 2), Entry("t", "k", "g", {}, c, 5)
    own = Entry("t", "k", "o", {}, s, 7)
    delta = Delta(
        replica=s,
        values={c: {2: kept, 5: ghost}, s: {7: own}},
        clouds={},
        start={c: 1, s: 6},
        end={c: 5, s: 7},
    )
    cut = clamp_payload(delta, s, {c: 3, s: 1})
    assert cut is not None
    assert cut.values == {c: {2: kept}, s: {7: own}}
    assert (cut.start, cut.end) == ({c: 1, s: 6}, {c: 3, s: 7})


def test_a_part_whose_range_lies_beyond_the_bound_loses_it() -> None:
    c, s = ReplicaRef("c", 1), ReplicaRef("s", 1)
    part = SnapshotPart(
        replica=s, context={c: 10, s: 4}, ranges={c: (5, 10), s: (0, 4)}, clouds={}, values={}
    )
    cut = clamp_payload(part, s, {c: 5})
    assert cut is not None
    assert cut.ranges == {s: (0, 4)}
    assert cut.context == {c: 5, s: 4}


def test_a_tracker_refuses_a_name_with_a_control_character() -> None:
    with pytest.raises(LocalProtocolError, match="control character"):
        Tracker(config=TrackerConfig(), replica=ReplicaRef("a\nb", 1), rng=random.Random(0))


def test_rejections_are_totalled() -> None:
    tracker = make_tracker("a")
    stranger = ReplicaRef("q", 1)
    for request_id in (1, 2):
        tracker.receive(TransferRequest(request_id=request_id, sender=stranger, clock={}), now=0.0)
    tracker.receive(
        TransferAck(
            request_id=1,
            sender=stranger,
            payload=Snapshot(replica=stranger, context={}, clouds={}, values={}),
        ),
        now=0.0,
    )
    stats = tracker.stats()
    assert stats.rejected_total == 3
    assert stats.rejected == {RejectReason.UNKNOWN_REQUESTER: 2, RejectReason.UNSOLICITED: 1}
    assert stats.received == 3


def test_set_keyring_from_an_update_callback_is_refused() -> None:
    tracker = make_tracker("a", keyring=KEY)
    tracker.track(conn="c", topic="t", key="k", meta={}, now=0.0)

    def callback(meta: dict[str, Any]) -> dict[str, Any]:
        tracker.set_keyring(KEY)
        return meta

    with pytest.raises(LocalProtocolError, match="re-entrant"):
        tracker.update(conn="c", topic="t", key="k", meta=callback, now=0.1)


def test_replay_windows_are_remembered_for_a_bounded_number_of_origins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_tracker, "REPLAY_MEMORY", 2)
    tracker = make_tracker("z", keyring=KEY)
    frames = []
    for name in ("p", "q", "r"):
        ref = ReplicaRef(name, 1)
        data = seal(
            encode_message(Heartbeat(sender=ref, clock={ref: 0})),
            key=KEY.current,
            origin=ref,
            counter=1,
        )
        frames.append(data)
        tracker.receive(data, now=0.0)
    assert list(tracker._windows) == [ReplicaRef("q", 1), ReplicaRef("r", 1)]
    drain(tracker)
    tracker.receive(frames[1], now=0.0)  # q is remembered: a replay
    tracker.receive(frames[0], now=0.0)  # p was forgotten: accepted again (the documented bound)
    assert tracker.stats().rejected == {RejectReason.REPLAYED: 1}


def test_a_seal_that_leaves_no_room_makes_messages_unsendable() -> None:
    config = TrackerConfig(
        max_message_bytes=200,
        max_meta_bytes=1,
        max_conn_bytes=1,
        max_topic_bytes=1,
        max_key_bytes=1,
    )
    tracker = Tracker(
        config=config, replica=ReplicaRef("n" * 200, 1), rng=random.Random(0), keyring=KEY
    )
    tracker.handle_timer(now=0.0)
    tracker.handle_timer(now=100.0)
    (event,) = [e for e in drain(tracker) if isinstance(e, Unsendable)]
    assert "no room for the seal" in event.reason
    assert tracker.messages_to_send() == []
    assert tracker.stats().unsendable == 1


def test_parts_over_the_cloud_limit_are_refused_and_never_complete() -> None:
    a = ReplicaRef("a", 1)
    tracker = make_tracker("b", max_cloud_dots=100)
    tracker.receive(Heartbeat(sender=a, clock={a: 0}), now=0.0)
    start = {a: 0}

    def part(i: int, first: int) -> Heartbeat:
        delta = Delta(
            replica=a,
            values={},
            clouds={a: frozenset(range(first, first + 60))},
            start=start,
            end={a: 400},
        )
        return Heartbeat(sender=a, clock={a: 400}, delta=delta, part=i, parts=3)

    tracker.receive(part(0, 2), now=0.01)
    tracker.receive(part(1, 100), now=0.02)  # 60 + 60 > 100: refused
    assert tracker.stats().rejected == {RejectReason.OVER_LIMIT: 1}
    assert tracker._heartbeat_parts["a"].dots == 60


def test_a_reply_claiming_too_many_parts_or_clouds_is_refused() -> None:
    a = ReplicaRef("a", 1)
    tracker = make_tracker("b", max_cloud_dots=10)
    tracker.receive(Heartbeat(sender=a, clock={a: 50}), now=0.0)
    tracker._request_transfer(a)
    request_id = tracker._requests["a"].request_id
    part = SnapshotPart(replica=a, context={a: 50}, ranges={a: (0, 1)}, clouds={}, values={})
    too_many = TransferAck(
        request_id=request_id, sender=a, payload=part, part=0, parts=_tracker.MAX_PARTS + 1
    )
    tracker.receive(too_many, now=0.1)
    parked = Snapshot(replica=a, context={a: 50}, clouds={a: frozenset(range(60, 80))}, values={})
    tracker.receive(TransferAck(request_id=request_id, sender=a, payload=parked), now=0.1)
    assert tracker.stats().rejected == {RejectReason.OVER_LIMIT: 2}
    assert tracker.state.context[a] == 0
    assert "a" in tracker._requests  # still waiting: nothing was taken


def test_a_pending_request_is_not_repeated_while_its_reply_streams_in() -> None:
    a = ReplicaRef("a", 1)
    tracker = make_tracker("b")
    tracker.handle_timer(now=0.0)
    tracker.receive(Heartbeat(sender=a, clock={a: 5}), now=0.0)
    tracker._request_transfer(a)
    tracker.messages_to_send()
    for now in (0.1, 0.2, 0.3):
        tracker.receive(Heartbeat(sender=a, clock={a: 6}), now=now)  # a still leads
        tracker.handle_timer(now=now)
    assert not [o for o in tracker.messages_to_send() if isinstance(o.message, TransferRequest)]


def test_a_heartbeat_claiming_too_many_parts_is_refused() -> None:
    tracker = make_tracker("b")
    a = ReplicaRef("a", 1)
    delta = Delta(replica=a, values={}, clouds={a: frozenset({1})}, start={a: 0}, end={a: 1})
    parts = _tracker.MAX_PARTS + 1
    tracker.receive(Heartbeat(sender=a, clock={a: 1}, delta=delta, part=0, parts=parts), now=0.0)
    assert tracker.replicas() == {}
    assert tracker.stats().rejected == {RejectReason.OVER_LIMIT: 1}


def test_a_clock_is_cut_at_the_bounds_and_the_sender_kept_whatever_it_claims() -> None:
    sender, third, stranger = ReplicaRef("s", 1), ReplicaRef("c", 1), ReplicaRef("x", 1)
    bounds = {third: 5}  # the sender has no bound; the stranger is unknown
    assert clamp_clock({sender: 99, third: 9, stranger: 3}, sender, bounds) == {
        sender: 99,
        third: 5,
    }
    assert clamp_clock({third: 4}, sender, bounds) == {third: 4}  # no clock of its own: none added


@pytest.mark.parametrize("claim", ["third", "own"])
def test_a_sampled_clock_is_cut_at_what_third_replicas_announced(claim: str) -> None:
    # b's heartbeat claims c is far ahead of what c itself announced: that claim is cut when the
    # clock is sampled, so it draws no transfer request. A claim about b itself is not cut.
    a = make_tracker("a")
    b, c = ReplicaRef("b", 1), ReplicaRef("c", 1)
    a.receive(Heartbeat(sender=c, clock={c: 0, a.replica: 0}), now=0.0)
    clock = {b: 0, c: 10**9, a.replica: 0} if claim == "third" else {b: 5, c: 0, a.replica: 0}
    a.receive(Heartbeat(sender=b, clock=clock), now=0.0)
    asked = set()
    now = 0.0
    while now < 1.0:  # several clock samples
        now += 0.05
        a.handle_timer(now=now)
        asked |= {o.to for o in a.messages_to_send() if isinstance(o.message, TransferRequest)}
    assert asked == ({"b"} if claim == "own" else set())
