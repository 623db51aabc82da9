"""Two Trackers, each run by a Pump, over a pretend transport: what a driver does, by hand.

Run it with ``python examples/two_trackers.py``. A driver (asyncio, anyio, the simulator, or
yours for another event loop or bus) does four things with a
:class:`~presence_adapters.drivers.Pump`, and this script does them synchronously, with time
advanced by the caller:

1. on each wake-up, read the clock once and pass the reading through ``pump.now``;
2. feed the pump what woke it: bytes from the transport (``pump.receive``), the timer
   (``pump.wake``) or a local command such as a track (``pump.command``);
3. put ``pump.take_transmissions()`` on the transport: encoded bytes, for one replica or (``to``
   is ``None``) for every other one;
4. sleep until ``pump.deadline``.

The pump ticks the tracker on every wake-up, hands its events to ``on_event`` and encodes each
outbound message once. Nothing here sleeps or opens a socket: the "transport" is a queue of bytes
in flight, and time is a number we advance ourselves.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from presence_adapters.drivers import Pump
from presence_core import (
    Event,
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
TOPIC = "room:lobby"
clock = 0.0  # the one clock both nodes read
connected = True
in_flight: deque[tuple[str, bytes]] = deque()  # (recipient, encoded message)


def show_events(name: str) -> Callable[[Event], None]:
    """The ``on_event`` callback of node ``name``: print each event as it happens."""

    def show(event: Event) -> None:
        if isinstance(event, PresenceDiff):
            joins = [entry.key for entry in event.joins]
            leaves = [entry.key for entry in event.leaves]
            print(f"{clock:5.2f}s {name}: diff on {event.topic}: joins={joins} leaves={leaves}")
        elif isinstance(event, (ReplicaUp, ReplicaDown, ReplicaPermdown)):
            print(f"{clock:5.2f}s {name}: {type(event).__name__} {event.replica.name}")

    return show


def start(name: str, seed: int) -> Pump:
    tracker = Tracker(config=config, replica=ReplicaRef(name, 1), rng=random.Random(seed))
    return Pump(tracker, on_event=show_events(name))


pumps = {"node-a": start("node-a", 1), "node-b": start("node-b", 2)}


def transmit(sender: str) -> None:
    """Put everything the sender's pump encoded on the transport (a broken link loses it)."""
    for transmission in pumps[sender].take_transmissions():
        for name in pumps:
            if name != sender and transmission.to in (None, name) and connected:
                in_flight.append((name, transmission.data))


def deliver() -> None:
    """The transport delivers the bytes in flight, replies included, until it is quiet."""
    while in_flight:
        name, data = in_flight.popleft()
        pump = pumps[name]
        pump.receive(data, now=pump.now(clock))  # decodes, ticks, drains; never raises on junk
        transmit(name)


def wake_all() -> None:
    """A wake-up of every node at ``clock``: tick, then move the bytes."""
    for name, pump in pumps.items():
        pump.wake(now=pump.now(clock))
        transmit(name)
    deliver()


def run_until(end: float) -> None:
    """Advance the clock from deadline to deadline (each node sleeps until its own), to ``end``."""
    global clock
    while clock < end:
        deadlines = [pump.deadline for pump in pumps.values() if pump.deadline is not None]
        clock = min([*deadlines, end])
        wake_all()


def track(name: str, conn: str, key: str, status: str) -> None:
    """A client joins the lobby on node ``name``: a local command, run through the pump."""
    pump = pumps[name]
    meta = {"status": status}
    pump.command(
        lambda now: pump.tracker.track(conn=conn, topic=TOPIC, key=key, meta=meta, now=now),
        now=pump.now(clock),
    )
    transmit(name)  # a change goes out with the next tick, but a driver always sends what's there


def update(name: str, conn: str, key: str, status: str) -> None:
    """The client changes its meta: another local command."""
    pump = pumps[name]
    meta = {"status": status}
    pump.command(
        lambda now: pump.tracker.update(conn=conn, topic=TOPIC, key=key, meta=meta, now=now),
        now=pump.now(clock),
    )
    transmit(name)


node_a = pumps["node-a"].tracker
wake_all()  # the first wake-up starts each tracker's clock
track("node-a", "ws-1", "alice", "online")
track("node-b", "ws-7", "bob", "online")
run_until(0.5)
print("node-a lists:", node_a.presences(TOPIC))

update("node-a", "ws-1", "alice", "away")
run_until(0.8)

print("-- the link breaks: each side marks the other down after 0.4 s of silence")
connected = False
run_until(1.5)
print("node-a lists:", node_a.presences(TOPIC))

print("-- the link heals: heartbeats bring the replicas back up, joins are re-emitted")
connected = True
run_until(2.0)
print("node-a lists:", node_a.presences(TOPIC))
