"""The pump, unit by unit: a real tracker, a scripted ``now``, no event loop.

The pump is every decision a driver makes (DESIGN §4, STYLE §3.9); these tests pin them: time
never goes backwards and is never clamped up to the deadline, the tracker ticks on *every*
wake-up (a message, junk included, is a wake-up), events and transmissions are drained after
every call, junk and unsendable messages are dropped, counted and logged at a bounded rate, and
messages the tracker refuses are counted by reason and logged by how alarming their reason is.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from helpers import make_tracker
from presence_adapters import Pump
from presence_adapters.drivers import LOG_INTERVAL
from presence_core import (
    Event,
    Heartbeat,
    Key,
    Keyring,
    LocalProtocolError,
    MessageRejected,
    NoPresence,
    PresenceDiff,
    RejectReason,
    ReplicaRef,
    ReplicaUp,
    TransferAck,
    TransferRequest,
    Unsendable,
    encode_message,
    seal,
)

JUNK = b"not a message"


def make_pump(name: str = "a", *, seed: int = 0, **config: Any) -> tuple[Pump, list[Event]]:
    """A pump over a fresh tracker (the FAST timings of ``helpers``), and the events it emits."""
    events: list[Event] = []
    tracker = make_tracker(name, seed=seed, **config)
    return Pump(tracker, on_event=events.append), events


def track(pump: Pump, key: str, now: float, conn: str = "conn") -> str:
    tracker = pump.tracker
    return pump.command(
        lambda at: tracker.track(conn=conn, topic="room", key=key, meta={}, now=at), now=now
    )


# ---------------------------------------------------------------------- time


def test_now_never_goes_backwards() -> None:
    pump, _ = make_pump()
    assert pump.now(5.0) == 5.0
    assert pump.now(4.0) == 5.0  # the clock stepped back: keep the last now
    assert pump.now(5.5) == 5.5
    assert pump.now(5.5) == 5.5


def test_a_clock_going_backwards_never_reaches_the_tracker() -> None:
    pump, _ = make_pump()
    pump.wake(now=pump.now(10.0))
    # Fed the clamped value, the tracker never sees time going backwards (which would raise).
    pump.wake(now=pump.now(9.0))
    pump.receive(JUNK, now=pump.now(8.0))
    track(pump, "alice", pump.now(7.0))
    with pytest.raises(LocalProtocolError):
        pump.wake(now=9.0)  # unclamped, it would


def test_now_is_not_clamped_up_to_the_deadline() -> None:
    pump, _ = make_pump()
    pump.wake(now=pump.now(0.0))
    deadline = pump.deadline
    assert deadline is not None
    assert deadline > 0.0
    # Woken early (a message): now is the clock, not the deadline.
    assert pump.now(deadline / 2) == deadline / 2
    pump.receive(JUNK, now=deadline / 2)
    assert pump.deadline == deadline  # nothing was due yet


# ---------------------------------------------------------------------- ticking and draining


def test_every_message_ticks_the_tracker() -> None:
    pump, _ = make_pump()
    pump.wake(now=0.0)
    track(pump, "alice", 0.0)
    deadline = pump.deadline
    assert deadline is not None
    assert pump.pending == 0
    # Junk arriving after the deadline is a wake-up: the tick runs (the delta goes out) although
    # the timer itself never fired.
    pump.receive(JUNK, now=deadline + 0.001)
    transmissions = pump.take_transmissions()
    assert [type(t.message) for t in transmissions] == [Heartbeat]
    assert transmissions[0].to is None
    new_deadline = pump.deadline
    assert new_deadline is not None
    assert new_deadline > deadline


def test_a_steady_stream_of_junk_keeps_the_heartbeats_going() -> None:
    pump, _ = make_pump(max_silent_periods=1)
    now = 0.0
    pump.wake(now=now)
    heartbeats = 0
    while now < 2.0:  # junk every 10 ms for 2 s; the timer never fires on its own
        now += 0.01
        pump.receive(JUNK, now=now)
        heartbeats += sum(isinstance(t.message, Heartbeat) for t in pump.take_transmissions())
    period = pump.tracker.config.broadcast_period
    assert heartbeats >= 2.0 / ((1 + 1) * period) - 1  # an empty heartbeat every 2 periods
    assert pump.stats.malformed == pump.stats.received == 200


def test_events_are_drained_after_every_command() -> None:
    pump, events = make_pump()
    ref = track(pump, "alice", 0.0)
    assert len(events) == 1
    assert isinstance(events[0], PresenceDiff)
    assert [entry.meta["phx_ref"] for entry in events[0].joins] == [ref]
    tracker = pump.tracker
    pump.command(lambda now: tracker.untrack_conn(conn="conn", now=now), now=0.1)
    assert len(events) == 2
    assert isinstance(events[1], PresenceDiff)
    assert [e.key for e in events[1].leaves] == ["alice"]
    assert tracker.next_event() is None


def test_a_failing_command_raises_and_changes_nothing() -> None:
    pump, events = make_pump()
    tracker = pump.tracker
    with pytest.raises(NoPresence):
        pump.command(
            lambda now: tracker.update(conn="c", topic="room", key="nobody", meta={}, now=now),
            now=0.0,
        )
    assert events == []
    assert pump.pending == 0
    assert tracker.presences("room") == {}


def test_directed_messages_name_their_replica() -> None:
    a, _ = make_pump("a", seed=1)
    b, b_events = make_pump("b", seed=2)
    track(a, "alice", 0.0)
    now = 0.0
    while now < 0.5:  # a alone: its delta is lost, so b will have to ask for a transfer
        now += 0.01
        a.wake(now=now)
        a.take_transmissions()
    directed: list[tuple[str, str, type]] = []
    while now < 2.0 and "alice" not in b.tracker.presences("room"):
        now += 0.01
        for src, dst in ((a, b), (b, a)):
            src.wake(now=now)
            for transmission in src.take_transmissions():
                if transmission.to is not None:
                    directed.append(
                        (src.tracker.replica.name, transmission.to, type(transmission.message))
                    )
                dst.receive(transmission.data, now=now)
    assert "alice" in b.tracker.presences("room")
    assert any(isinstance(event, ReplicaUp) for event in b_events)
    assert ("b", "a", TransferRequest) in directed
    assert ("a", "b", TransferAck) in directed
    assert {(src, to) for src, to, _ in directed} <= {("a", "b"), ("b", "a")}
    assert a.stats.sent >= len(directed)
    assert a.stats.sent_bytes > 0
    assert b.stats.received > 0
    assert b.stats.malformed == 0


# ---------------------------------------------------------------------- junk and limits


def test_malformed_messages_are_dropped_counted_and_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pump, events = make_pump()
    track(pump, "alice", 0.0)
    before = pump.tracker.presences("room")
    caplog.set_level(logging.WARNING, logger="presence_adapters")
    pump.receive(JUNK, now=0.0)
    for index in range(50):
        pump.receive(b"{}" * index, now=0.001 * index)
    assert len(caplog.records) == 1
    assert "a dropped a malformed message" in caplog.records[0].getMessage()
    pump.receive(JUNK, now=LOG_INTERVAL)  # one interval later: one more warning
    assert len(caplog.records) == 2
    assert "50 warnings suppressed" in caplog.records[1].getMessage()
    assert pump.stats.malformed == pump.stats.received == 52
    assert pump.stats.received_bytes == len(JUNK) * 2 + sum(2 * i for i in range(50))
    assert pump.tracker.presences("room") == before
    assert len(events) == 1


SMALL: dict[str, Any] = {
    "max_meta_bytes": 100,
    "max_conn_bytes": 10,
    "max_topic_bytes": 10,
    "max_key_bytes": 10,
    "max_message_bytes": 700,
}
"""Limits where one presence fits a message but the clock of ten long-named peers does not."""


def test_unsendable_messages_are_reported_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pump, events = make_pump(**SMALL)
    caplog.set_level(logging.WARNING, logger="presence_adapters")
    # Ten replicas whose names alone outgrow a heartbeat's clock. Peers cannot do this (the
    # tracker refuses replicas whose clocks would not fit), so the state is filled directly.
    for i in range(10):
        pump.tracker.state.replica_up(ReplicaRef(f"{'p' * 100}{i}", 1))
    pump.take_transmissions()
    now = 0.0
    for user in ("alice", "bob", "carol"):  # three ticks with a delta, before the peers go down
        track(pump, user, now)
        deadline = pump.deadline
        assert deadline is not None
        now = deadline
        pump.wake(now=now)
    assert pump.stats.unsendable == 3
    assert {type(t.message) for t in pump.take_transmissions()} <= {TransferRequest}
    unsendable = [event for event in events if isinstance(event, Unsendable)]
    assert len(unsendable) == 3
    assert all(isinstance(event.message, Heartbeat) for event in unsendable)
    assert all(event.to is None and "over max_bytes=700" in event.reason for event in unsendable)
    assert len(caplog.records) == 1
    assert "could not send a Heartbeat" in caplog.records[0].getMessage()


def test_transmissions_carry_the_bytes_the_tracker_encoded() -> None:
    pump, _ = make_pump()
    track(pump, "alice", 0.0)
    deadline = pump.deadline
    assert deadline is not None
    pump.wake(now=deadline)
    (transmission,) = pump.take_transmissions()
    assert transmission.to is None
    assert transmission.data == encode_message(transmission.message)
    assert pump.stats.sent_bytes == len(transmission.data)
    assert pump.stats.unsendable == 0


# ---------------------------------------------------------------------- should_wake


def test_should_wake() -> None:
    pump, _ = make_pump()
    pump.wake(now=0.0)
    armed = pump.deadline
    assert not pump.should_wake(armed)  # nothing to send, the timer is right
    assert pump.should_wake(None)  # the driver armed no timer, but one is due
    assert pump.should_wake(armed + 1.0 if armed is not None else 1.0)  # the deadline moved
    track(pump, "alice", 0.0)
    assert not pump.should_wake(armed)  # a track waits for the tick: nothing to send yet
    assert armed is not None
    pump.wake(now=armed)
    assert pump.pending == 1
    assert pump.should_wake(pump.deadline)  # something to send
    pump.take_transmissions()
    assert not pump.should_wake(pump.deadline)
    tracker = pump.tracker
    pump.command(lambda now: tracker.graceful_permdown(now=now), now=armed)
    assert pump.deadline is None
    assert pump.should_wake(None)
    pump.take_transmissions()
    assert not pump.should_wake(None)


# ---------------------------------------------------------------------- refused messages

KEY = Key("key-1", bytes(range(32)))


def sealed_heartbeat(name: str, key: Key, *, now: float = 10.0) -> bytes:
    """A heartbeat of a fresh tracker ``name`` sealed with ``key``: its first message."""
    peer = make_tracker(name, keyring=Keyring(key))
    peer.handle_timer(now=0.0)
    peer.handle_timer(now=now)
    (heartbeat,) = peer.messages_to_send()
    return heartbeat.data


def test_refused_messages_are_counted_by_reason_logged_and_passed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Event] = []
    pump = Pump(make_tracker("a", keyring=Keyring(KEY)), on_event=events.append)
    caplog.set_level(logging.DEBUG, logger="presence_adapters")
    forged = sealed_heartbeat("x", Key("key-1", b"another secret!!"))
    unsealed = encode_message(Heartbeat(sender=ReplicaRef("y", 1), clock={}))
    for index in range(5):
        pump.receive(forged, now=0.001 * index)
    pump.receive(unsealed, now=0.01)
    honest = sealed_heartbeat("b", KEY)
    pump.receive(honest, now=0.02)
    pump.receive(honest, now=0.03)  # the network delivered it twice: a replay, normal
    stats = pump.stats
    assert stats.rejected == 7
    assert stats.rejected_by_reason == {
        RejectReason.UNAUTHENTICATED: 6,
        RejectReason.REPLAYED: 1,
    }
    assert stats.malformed == 0
    assert pump.tracker.stats().rejected == stats.rejected_by_reason
    rejected = [event for event in events if isinstance(event, MessageRejected)]
    assert [event.reason for event in rejected] == [RejectReason.UNAUTHENTICATED] * 6 + [
        RejectReason.REPLAYED
    ]
    assert sorted(pump.tracker.replicas()) == ["b"]  # the refused ones changed nothing
    # One line per reason and interval: a warning for the forgeries, a debug line for the
    # replay (an honest network duplicates now and then).
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(records) == 2, records
    (warning_level, warning), (debug_level, debug) = records
    assert warning_level == logging.WARNING
    assert warning.startswith("a rejected a message from an unknown sender: unauthenticated")
    assert "wrong MAC under key 'key-1'" in warning
    assert debug_level == logging.DEBUG
    assert debug.startswith("a rejected a message from b.1: replayed (1 replayed so far")
    pump.receive(forged, now=LOG_INTERVAL)  # one interval later: one more warning
    assert len(caplog.records) == 3
    assert "(7 unauthenticated so far, 5 logs suppressed)" in caplog.records[2].getMessage()
    assert "another secret" not in caplog.text
    assert KEY.secret.hex() not in caplog.text


def test_a_claimed_sender_is_said_to_be_a_claim(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="presence_adapters")
    sealed = make_tracker("a", keyring=Keyring(KEY))
    pump = Pump(sealed, on_event=lambda event: None)
    # A message sealed by b, claiming to come from c: refused, and the log does not take the
    # claim at face value.
    body = encode_message(Heartbeat(sender=ReplicaRef("c", 1), clock={}))
    frame = seal(body, key=KEY, origin=ReplicaRef("b", 1), counter=1)
    pump.receive(frame, now=0.0)
    assert pump.stats.rejected_by_reason == {RejectReason.UNAUTHENTICATED: 1}
    assert "from c.1 (so it claims): unauthenticated" in caplog.records[0].getMessage()
