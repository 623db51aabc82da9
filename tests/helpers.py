"""Shared helpers for the core tests: trackers on scripted time, and a zero-latency cluster.

Nothing here reads a clock or draws unseeded randomness: ``now`` is always a number the test
chose (a literal, or :attr:`Cluster.now`), and every tracker gets a seeded ``random.Random``.

* :func:`make_tracker` builds one tracker with the small periods of Phoenix's clustered tests
  (``broadcast_period=0.1``, ``max_silent_periods=2``, ``permdown_period=1.5``; the down period
  is then derived: 0.4) unless the test overrides them.
* :class:`Cluster` holds N trackers, an explicit ``now`` and an in-memory network that delivers
  instantly; it can make a tracker deaf or mute, cut one direction of a link, kill a tracker
  (it just stops: no graceful permdown), restart it as a new incarnation, and it records every
  message sent. Each tracker runs in a :class:`~presence_adapters.drivers.Pump`, as under a real
  driver: what travels is the bytes the sender's pump encoded, and the receiver decodes them.
* :func:`drain` empties a tracker's event queue (events a cluster's pump already took from it
  first); :func:`summarize` turns events into tuples that are easy to compare exactly;
  :func:`observe` snapshots everything a tracker lets you query, for "a failing call changes
  nothing" assertions.
* :func:`client_command` plays one generated client command, refused or not;
  :func:`stdout_by_hash_seed` runs a script under several ``PYTHONHASHSEED`` values.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs

from presence_adapters.drivers import Pump, Transmission
from presence_core import (
    AlreadyTracked,
    Entry,
    Event,
    Keyring,
    Message,
    MessageRejected,
    NoPresence,
    PresenceDiff,
    ReplicaDown,
    ReplicaPermdown,
    ReplicaRef,
    ReplicaState,
    ReplicaUp,
    Tracker,
    TrackerConfig,
)

FAST: Mapping[str, Any] = {"broadcast_period": 0.1, "max_silent_periods": 2, "permdown_period": 1.5}
"""The timings of phoenix_pubsub's clustered tests (SPEC §7.6), in seconds."""

PERIOD = 0.1
DOWN = 0.4  # derived: broadcast_period * max_silent_periods * 2
PERMDOWN = 1.5

MAX_DELIVERIES = 100_000
"""A pump that delivers more than this many messages in one go is looping: fail loudly."""


def client_command(
    tracker: Tracker, kind: str, conn: str, topic: str, key: str, *, now: float
) -> str:
    """Play a generated ``track``, ``update`` or ``untrack`` (meta ``{"at": now}``); return
    ``"ok"``, or the name of the refusal (a track of what is tracked, an update of what is not).
    """
    try:
        if kind == "track":
            tracker.track(conn=conn, topic=topic, key=key, meta={"at": now}, now=now)
        elif kind == "update":
            tracker.update(conn=conn, topic=topic, key=key, meta={"at": now}, now=now)
        else:
            tracker.untrack(conn=conn, topic=topic, key=key, now=now)
    except (AlreadyTracked, NoPresence) as exc:
        return type(exc).__name__
    return "ok"


def stdout_by_hash_seed(code: str, hash_seeds: Iterable[str]) -> dict[str, str]:
    """What ``python -c code`` prints (stripped) under each ``PYTHONHASHSEED``; fails on an error
    exit, showing its stderr."""
    outputs = {}
    for hash_seed in hash_seeds:
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"PYTHONHASHSEED={hash_seed}: {result.stderr}"
        outputs[hash_seed] = result.stdout.strip()
    return outputs


def make_config(**overrides: Any) -> TrackerConfig:
    """A TrackerConfig with the :data:`FAST` timings, overridden by ``overrides``."""
    options: dict[str, Any] = {**FAST, **overrides}
    return TrackerConfig(**options)


def make_tracker(
    name: str, seed: int = 0, vsn: int = 1, *, keyring: Keyring | None = None, **config: Any
) -> Tracker:
    """A tracker named ``name`` (incarnation ``vsn``) with ``random.Random(seed)``.

    ``config`` overrides the :data:`FAST` timings; ``keyring`` makes it seal its messages.
    """
    return Tracker(
        config=make_config(**config),
        replica=ReplicaRef(name, vsn),
        rng=random.Random(seed),
        keyring=keyring,
    )


_TAKEN: weakref.WeakKeyDictionary[Tracker, list[Event]] = weakref.WeakKeyDictionary()
"""Events a :class:`Cluster`'s pump took from a tracker that no :func:`drain` has returned yet."""


def drain(tracker: Tracker) -> list[Event]:
    """Every pending event of ``tracker``, oldest first (the queue is emptied).

    When the tracker runs in a :class:`Cluster`, its pump hands the events over as they happen;
    they are returned first, then whatever the tracker still holds (from calls made on it
    directly since).
    """
    taken = _TAKEN.get(tracker)
    events: list[Event] = []
    if taken:
        events += taken
        taken.clear()
    while (event := tracker.next_event()) is not None:
        events.append(event)
    return events


def entry_id(entry: Any) -> str:
    """``owner/conn/key`` of an entry: short, unique within a topic, easy to read in asserts."""
    return f"{entry.owner.name}/{entry.conn}/{entry.key}"


Summary = tuple[Any, ...]


def summarize(events: Iterable[Event]) -> list[Summary]:
    """Events as plain tuples.

    * ``("up" | "down" | "permdown", name, vsn)`` for liveness events;
    * ``("rejected", reason, sender name or None)`` for a :class:`MessageRejected`;
    * ``("diff", topic, joins, leaves)`` for a diff, where joins and leaves are tuples of
      :func:`entry_id` strings in the order the event lists them.
    """
    result: list[Summary] = []
    for event in events:
        if isinstance(event, PresenceDiff):
            result.append(
                (
                    "diff",
                    event.topic,
                    tuple(entry_id(e) for e in event.joins),
                    tuple(entry_id(e) for e in event.leaves),
                )
            )
        elif isinstance(event, ReplicaUp):
            result.append(("up", event.replica.name, event.replica.vsn))
        elif isinstance(event, ReplicaDown):
            result.append(("down", event.replica.name, event.replica.vsn))
        elif isinstance(event, MessageRejected):
            sender = event.sender.name if event.sender is not None else None
            result.append(("rejected", event.reason.value, sender))
        else:
            assert isinstance(event, ReplicaPermdown)
            result.append(("permdown", event.replica.name, event.replica.vsn))
    return result


def observe(tracker: Tracker) -> dict[str, Any]:
    """Everything a tracker lets one query without consuming it (events and messages excluded).

    Compare two snapshots with ``==`` to show that a call changed nothing.
    """
    state = tracker.state
    stored = sorted(
        (e.owner, e.clock, e.topic, e.key, e.conn, repr(e.meta)) for e in state.entries()
    )
    all_topics = sorted({e.topic for e in state.entries()})
    return {
        "replica": tracker.replica,
        "stopped": tracker.stopped,
        "next_deadline": tracker.next_deadline(),
        "topics": tracker.topics(),
        "lists": {topic: tracker.presences(topic) for topic in all_topics},
        "counts": {topic: tracker.count(topic) for topic in all_topics},
        "entries": stored,
        "context": dict(state.context),
        "clouds": dict(state.clouds),
        "down": state.down_replicas(),
        "pending_delta": state.pending_delta,
        "replicas": {
            name: (info.ref, info.status, info.last_heard)
            for name, info in tracker.replicas().items()
        },
    }


@attrs.frozen
class Sent:
    """One message a tracker sent, as the cluster's network saw it.

    Attributes:
        at: cluster time of the send.
        sender: the sender's name.
        message: the message (what the sender's tracker produced; receivers decode ``data``).
        to: the addressee (``None`` for a broadcast).
        delivered_to: the trackers that received it (after deaf/mute/dead/cut filtering).
        data: the bytes that travelled, as the sender's pump encoded them.
    """

    at: float
    sender: str
    message: Message
    to: str | None
    delivered_to: tuple[str, ...]
    data: bytes


def _nothing(now: float) -> None:
    """A command that does nothing: running it makes a pump drain its tracker."""


class Cluster:
    """N trackers on one explicit clock, joined by an instant, lossless (unless told) network.

    Args:
        names: the trackers to start, in this order (which is also the delivery order).
        seed: the base seed; tracker ``i`` of incarnation ``vsn`` gets
            ``random.Random(seed * 1000 + 10 * i + vsn)``.
        start: the initial cluster time.
        keyring: the keyring of every tracker (``None``: unsealed messages); :attr:`keyrings`
            sets one per name for the trackers started from then on.
        config: overrides of the :data:`FAST` timings, for every tracker.

    Every tracker runs in a :class:`~presence_adapters.drivers.Pump` (:attr:`pumps`), started at
    :attr:`now` when it is added (a wake-up), as a driver would do on start-up. Tests may still
    call a tracker directly: :meth:`pump` picks up what such calls left behind. Events go through
    the pump too; :func:`drain` returns them.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        seed: int = 0,
        start: float = 0.0,
        keyring: Keyring | None = None,
        **config: Any,
    ) -> None:
        self.now: float = start
        self.seed = seed
        self.keyring = keyring
        self.keyrings: dict[str, Keyring] = {}
        self.config: dict[str, Any] = dict(config)
        self.trackers: dict[str, Tracker] = {}
        self.pumps: dict[str, Pump] = {}
        self.order: list[str] = []
        self.deaf: set[str] = set()
        self.mute: set[str] = set()
        self.dead: set[str] = set()
        self.cut: set[tuple[str, str]] = set()
        self.lose: Callable[[str, Message], bool] | None = None
        """When set, ``lose(sender, message)`` says whether to lose one message on the way."""
        self.sent: list[Sent] = []
        for name in names:
            self.add(name)

    def __getitem__(self, name: str) -> Tracker:
        return self.trackers[name]

    def __iter__(self) -> Iterator[Tracker]:
        return iter(self.trackers.values())

    # -------------------------------------------------------------- membership

    def _seed_for(self, name: str, vsn: int) -> int:
        return self.seed * 1000 + 10 * self.order.index(name) + vsn

    def add(self, name: str, *, vsn: int = 1) -> Tracker:
        """Start a new tracker ``name`` at :attr:`now` and pump."""
        if name not in self.order:
            self.order.append(name)
        tracker = make_tracker(
            name,
            seed=self._seed_for(name, vsn),
            vsn=vsn,
            keyring=self.keyrings.get(name, self.keyring),
            **self.config,
        )
        taken: list[Event] = []
        _TAKEN[tracker] = taken
        pump = Pump(tracker, on_event=taken.append)
        self.trackers[name] = tracker
        self.pumps[name] = pump
        self.dead.discard(name)
        pump.wake(now=pump.now(self.now))
        self.pump()
        return tracker

    def kill(self, name: str) -> None:
        """Stop ``name`` abruptly: no more timers, nothing delivered to or from it."""
        self.dead.add(name)

    def restart(self, name: str) -> Tracker:
        """Replace ``name`` by a new incarnation (``vsn + 1``) started at :attr:`now`."""
        old = self.trackers[name]
        return self.add(name, vsn=old.replica.vsn + 1)

    def alive(self) -> list[Tracker]:
        return [t for name, t in self.trackers.items() if name not in self.dead]

    def _live_pumps(self) -> list[Pump]:
        return [pump for name, pump in self.pumps.items() if name not in self.dead]

    # -------------------------------------------------------------- time

    def advance(self, dt: float) -> None:
        """Move time forward by ``dt``, running every tracker deadline that falls in between.

        At each deadline (in time order) every live tracker's pump wakes at that time (spurious
        wake-ups are harmless by contract) and the network is pumped until quiet; finally every
        live pump wakes at the new time and the network is pumped again.
        """
        assert dt >= 0
        target = round(self.now + dt, 9)
        while True:
            due = [
                deadline
                for pump in self._live_pumps()
                if (deadline := pump.deadline) is not None and deadline <= target
            ]
            if not due:
                break
            self.now = max(self.now, min(due))
            self._tick_all()
        self.now = target
        self._tick_all()

    def _tick_all(self) -> None:
        for pump in self._live_pumps():
            pump.wake(now=pump.now(self.now))
        self.pump()

    # -------------------------------------------------------------- network

    def _recipients(self, sender: str, to: str | None) -> tuple[str, ...]:
        if sender in self.mute or sender in self.dead:
            return ()
        if to is None:
            candidates = [name for name in self.trackers if name != sender]
        else:
            candidates = [to] if to in self.trackers else []
        return tuple(
            name
            for name in candidates
            if name not in self.dead and name not in self.deaf and (sender, name) not in self.cut
        )

    def pump(self) -> None:
        """Deliver queued messages (FIFO, replies go to the back) until no tracker has any.

        Every live tracker is drained first (a direct call may have left messages in it). Each
        message travels as the bytes its sender's pump encoded, and its receipt is a wake-up of
        the receiver's pump (which also ticks a tracker whose deadline has come). A receiver that
        rejects the bytes as malformed fails the test: the codec or this helper is broken.
        """
        queue: deque[tuple[str, Transmission]] = deque()

        def collect() -> None:
            for name, pump in self.pumps.items():
                if name not in self.dead:
                    queue.extend((name, sent) for sent in pump.take_transmissions())

        for pump in self._live_pumps():
            pump.command(_nothing, now=pump.now(self.now))
        collect()
        deliveries = 0
        while queue:
            sender, transmission = queue.popleft()
            recipients = self._recipients(sender, transmission.to)
            if self.lose is not None and self.lose(sender, transmission.message):
                recipients = ()
            self.sent.append(
                Sent(
                    self.now,
                    sender,
                    transmission.message,
                    transmission.to,
                    recipients,
                    transmission.data,
                )
            )
            for name in recipients:
                deliveries += 1
                assert deliveries < MAX_DELIVERIES, "the cluster never goes quiet"
                receiver = self.pumps[name]
                receiver.receive(transmission.data, now=receiver.now(self.now))
                assert receiver.stats.malformed == 0, (
                    f"{name} rejected {transmission.message!r} from {sender} as malformed"
                )
            collect()

    def messages(
        self,
        kind: type[Any] | tuple[type[Any], ...] | None = None,
        *,
        sender: str | None = None,
        to: str | None = None,
        since: int = 0,
    ) -> list[Sent]:
        """Recorded messages (from index ``since``), filtered by type, sender and addressee."""
        return [
            sent
            for sent in self.sent[since:]
            if (kind is None or isinstance(sent.message, kind))
            and (sender is None or sent.sender == sender)
            and (to is None or sent.to == to)
        ]

    # -------------------------------------------------------------- shortcuts

    def events(self) -> dict[str, list[Event]]:
        """:func:`drain` every tracker (dead ones too), by name."""
        return {name: drain(tracker) for name, tracker in self.trackers.items()}

    def track(self, name: str, conn: str, topic: str, key: str, meta: Any = None) -> str:
        """``trackers[name].track(...)`` at :attr:`now` (meta defaults to ``{}``), through its
        pump."""
        tracker = self.trackers[name]
        pump = self.pumps[name]
        return pump.command(
            lambda now: tracker.track(
                conn=conn, topic=topic, key=key, meta={} if meta is None else meta, now=now
            ),
            now=pump.now(self.now),
        )


# ---------------------------------------------------------------------------- ReplicaState


def state_cluster(*refs: ReplicaRef) -> list[ReplicaState]:
    """One state per ref, every one marking every other one up."""
    states = [ReplicaState(ref) for ref in refs]
    for state in states:
        for ref in refs:
            if ref != state.replica:
                state.replica_up(ref)
    return states


def by_dot(entries: Iterable[Entry]) -> list[Entry]:
    """Entries in dot order (entries hold dicts, so they cannot go into sets)."""
    return sorted(entries, key=lambda entry: entry.dot)


def observe_state(state: ReplicaState) -> dict[str, Any]:
    """Everything a caller can see of a state, in a comparable form."""
    return {
        "entries": by_dot(state.entries()),
        "visible": by_dot(state.visible_entries()),
        "len": len(state),
        "clock": state.clock,
        "context": dict(state.context),
        "clouds": dict(state.clouds),
        "clocks": state.clocks(),
        "pending_delta": state.pending_delta,
        "has_delta": state.has_delta(),
        "down": state.down_replicas(),
        "replicas": dict(state.replicas()),
        "topics": state.topics(),
    }
