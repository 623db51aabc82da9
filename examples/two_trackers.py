"""Two Trackers driven by hand: the sans-IO loop, with time advanced by the caller.

Run it with ``python examples/two_trackers.py``. Nothing here sleeps or opens a socket: the
"network" is a function that hands each outbound message to the other tracker, and time is a
number we advance ourselves.
"""

from __future__ import annotations

import random

from presence_core import (
    PresenceDiff,
    ReplicaDown,
    ReplicaPermdown,
    ReplicaRef,
    ReplicaUp,
    Tracker,
    TrackerConfig,
)

# Short periods so the story fits in a few simulated seconds (Phoenix's own clustered tests use
# the same values): a tick every 100 ms, down after 400 ms of silence, permdown after 1.5 s.
config = TrackerConfig(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5)
a = Tracker(config=config, replica=ReplicaRef("node-a", 1), rng=random.Random(1))
b = Tracker(config=config, replica=ReplicaRef("node-b", 1), rng=random.Random(2))
connected = True


def show_events(tracker: Tracker, now: float) -> None:
    while (event := tracker.next_event()) is not None:
        name = tracker.replica.name
        if isinstance(event, PresenceDiff):
            joins = [entry.key for entry in event.joins]
            leaves = [entry.key for entry in event.leaves]
            print(f"{now:5.2f}s {name}: diff on {event.topic}: joins={joins} leaves={leaves}")
        elif isinstance(event, (ReplicaUp, ReplicaDown, ReplicaPermdown)):
            print(f"{now:5.2f}s {name}: {type(event).__name__} {event.replica.name}")


def deliver(now: float) -> None:
    """Hand every queued message to the other tracker, until nothing is left to send."""
    pending = True
    while pending:
        pending = False
        for sender, receiver in ((a, b), (b, a)):
            for outbound in sender.messages_to_send():
                pending = True
                if connected and outbound.to in (None, receiver.replica.name):
                    receiver.receive(outbound.message, now=now)


def run_until(end: float, now: float) -> float:
    """Advance time tick by tick: fire due timers, deliver messages, print events."""
    while now < end:
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        now = min([*deadlines, end])
        for tracker in (a, b):
            tracker.handle_timer(now=now)
        deliver(now)
        for tracker in (a, b):
            show_events(tracker, now)
    return now


now = 0.0
for tracker in (a, b):
    tracker.handle_timer(now=now)  # starts each tracker's clock
a.track(conn="ws-1", topic="room:lobby", key="alice", meta={"status": "online"}, now=now)
b.track(conn="ws-7", topic="room:lobby", key="bob", meta={"status": "online"}, now=now)
now = run_until(0.5, now)
print("node-a lists:", a.list("room:lobby"))

a.update(conn="ws-1", topic="room:lobby", key="alice", meta={"status": "away"}, now=now)
now = run_until(0.8, now)

print("-- the link breaks: each side marks the other down after 0.4 s of silence")
connected = False
now = run_until(1.5, now)
print("node-a lists:", a.list("room:lobby"))

print("-- the link heals: heartbeats bring the replicas back up, joins are re-emitted")
connected = True
now = run_until(2.0, now)
print("node-a lists:", a.list("room:lobby"))
