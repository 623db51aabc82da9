"""The application API: one :class:`Presence` object, whichever driver runs the node.

A driver (:func:`presence_adapters.drivers.asyncio.open_node`,
:func:`presence_adapters.drivers.anyio.open_node`) builds the tracker and the transport and hands
the application a :class:`Presence`, which feeds the tracker through its :class:`Pump
<presence_adapters.Pump>`. Everything here is runtime-free: it waits only through the
driver's runtime primitives.

* Commands (:meth:`~Presence.track`, :meth:`~Presence.update`, :meth:`~Presence.untrack`,
  :meth:`~Presence.untrack_conn`) and queries (:meth:`~Presence.list`, ...) are synchronous, as the
  core is: no ``await``, so nothing can happen between two of them.
* Diffs reach the application through subscriptions (:meth:`~Presence.subscribe`), async
  iterators of :class:`TopicDiff` that never drop or reorder a diff. Each buffers at most
  ``max_buffered`` presences; a subscriber that falls further behind loses its buffer at once and
  its next read raises :class:`~presence_adapters.SubscriptionOverflow`, after which it
  resynchronises from :meth:`~Presence.list`. So a slow consumer can neither grow memory without
  bound nor stall the node.
* Two subscriptions follow a topic in less detail: :meth:`~Presence.users` yields
  :class:`~presence_core.UserJoined` and :class:`~presence_core.UserLeft` (a key's first
  connection and its last, ``docs/per-user.rst``), bounded like diffs; and
  :meth:`~Presence.watch_occupancy` yields the topic's counts, an
  :class:`~presence_core.Occupancy`, when they change (``docs/large-rooms.rst``): it holds only the
  latest value, so it is bounded by construction and never overflows.
* The optional fetch hook (SPEC §5.2) enriches presences in one call per batch: on
  :meth:`~Presence.fetched_list`, :meth:`~Presence.fetched_get_by_key` and on every diff a
  subscription yields. Each diff is fetched once, whatever the number of subscribers, and
  subscribers still see diffs in order. When the hook raises (or the read is cancelled), the read
  raises and the diff stays first in line: the next read fetches it again.
* :meth:`~Presence.connection` opens a scope that untracks everything its connection tracked
  when it exits, for any reason, cancellation included.
* The tracker's events that are not news for the application (a message refused,
  :class:`~presence_core.MessageRejected`; one that could not be sent,
  :class:`~presence_core.Unsendable`) never reach a subscription: the pump counts them in
  :attr:`~Presence.stats` and logs them, and :meth:`~Presence.tracker_stats` has the tracker's
  own counters. A node opened with a keyring rotates its keys with :meth:`~Presence.set_keyring`.
"""

from __future__ import annotations

import builtins
import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, Union

import attrs

from presence_core import (
    Event,
    JSONValue,
    Keyring,
    LocalProtocolError,
    MessageRejected,
    Meta,
    MetaUpdater,
    Occupancy,
    PresenceDiff,
    PresenceMap,
    PresencePage,
    ReplicaDown,
    ReplicaInfo,
    ReplicaPermdown,
    ReplicaRef,
    ReplicaUp,
    TopicOptions,
    Tracker,
    TrackerStats,
    Unsendable,
    UserEvent,
    UserView,
    group,
)

from ._errors import FetchHookError, NodeClosed, SubscriptionOverflow
from ._runtime import AsyncEvent, AsyncLock, Runtime
from .drivers._pump import Pump, PumpStats

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "ConnectionScope",
    "FetchHook",
    "OccupancySubscription",
    "Presence",
    "PresenceView",
    "ReplicaEvent",
    "Subscription",
    "TopicDiff",
    "UserSubscription",
]

T = TypeVar("T")
_S = TypeVar("_S", bound="Subscription[Any]")

_Fetched = dict[str, dict[str, Any]]
# Presences as the fetch hook returns them: Phoenix's shape, plus whatever fields the hook added
# next to "metas" (so not a PresenceMap, whose values hold nothing but the metas list).

FetchHook = Callable[[str, PresenceMap], Awaitable[dict[str, dict[str, Any]]]]
"""``async fetch(topic, presences) -> presences``: enrich a batch of presences in one call.

It receives ``{key: {"metas": [...]}}`` and returns the same keys, each still holding its
``"metas"``; it may add fields next to ``"metas"`` (a user's name from a database, say). It must
not change the metas: they are the replicated state. What it raises is raised by the read that
called it (a :class:`~presence_adapters.FetchHookError` if it broke this contract), and the next
read calls it again.
"""

ReplicaEvent = Union[ReplicaUp, ReplicaDown, ReplicaPermdown]  # noqa: UP007
"""What :meth:`Presence.replica_events` yields."""

DEFAULT_MAX_BUFFERED = 10_000
"""A subscription's default buffer, in presences (for replica events: in events)."""


@attrs.frozen(kw_only=True)
class TopicDiff:
    """The presences that joined and left one topic, grouped by key (Phoenix's shape).

    An update is a join of the new meta and a leave of the old one in the same diff (the new
    meta's ``phx_ref_prev`` names the old ``phx_ref``).

    Attributes:
        topic: the topic.
        joins: ``{key: {"metas": [...]}}`` that joined (with the fields the fetch hook added, if
            any: without a hook this is a :data:`~presence_core.PresenceMap`).
        leaves: ``{key: {"metas": [...]}}`` that left (likewise).
        event: the core's event, with each entry's connection and owning replica.
    """

    topic: str
    joins: dict[str, dict[str, Any]]
    leaves: dict[str, dict[str, Any]]
    event: PresenceDiff

    @property
    def payload(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{"joins": ..., "leaves": ...}``: the payload of Phoenix's ``presence_diff`` push."""
        return {"joins": self.joins, "leaves": self.leaves}


class _NodeControl(Protocol):
    """What the driver does for the :class:`Presence` it hands out."""

    def poke(self) -> None:
        """The pump has something to send, or a new deadline: wake the sending loop."""

    async def abandon(self) -> None:
        """Stop at once, without a word to the peers."""


def _check_fetched(topic: str, given: PresenceMap, fetched: object) -> _Fetched:
    if not isinstance(fetched, dict):
        raise FetchHookError(
            f"the fetch hook returned a {type(fetched).__name__} for topic {topic!r}, not a dict"
        )
    for key in given:
        value = fetched.get(key)
        if not isinstance(value, dict) or not isinstance(value.get("metas"), list):
            raise FetchHookError(
                f"the fetch hook dropped key {key!r} of topic {topic!r}, or its 'metas' list"
            )
    return fetched


class _DiffCell:
    """One emitted diff, shared by every subscription of its topic: grouped once, fetched once."""

    __slots__ = ("_fetched", "_grouped", "_lock", "event", "occupancy", "weight")

    def __init__(self, event: PresenceDiff) -> None:
        self.event = event
        self.weight = len(event.joins) + len(event.leaves)
        self.occupancy: Occupancy | None = None  # read once, for the occupancy subscriptions
        self._grouped: TopicDiff | None = None
        self._fetched: TopicDiff | None = None
        self._lock: AsyncLock | None = None

    def grouped(self) -> TopicDiff:
        if self._grouped is None:
            event = self.event
            self._grouped = TopicDiff(
                topic=event.topic, joins=group(event.joins), leaves=group(event.leaves), event=event
            )
        return self._grouped

    async def fetched(self, fetch: FetchHook, runtime: Runtime) -> TopicDiff:
        # The first subscriber to read the diff fetches it under the lock; the others wait and
        # reuse the result. A fetch that raises or is cancelled leaves no result, so the next
        # reader fetches again: nobody waits for a result that will never come, and a passing
        # failure (a database timeout) does not wedge every subscription at this diff.
        if self._lock is None:
            self._lock = runtime.lock()
        async with self._lock:
            if self._fetched is None:
                grouped = self.grouped()
                topic = grouped.topic
                joins = grouped.joins
                if joins:
                    joins = _check_fetched(topic, joins, await fetch(topic, joins))
                leaves = grouped.leaves
                if leaves:
                    leaves = _check_fetched(topic, leaves, await fetch(topic, leaves))
                self._fetched = attrs.evolve(grouped, joins=joins, leaves=leaves)
            return self._fetched


class Subscription(Generic[T]):
    """An async iterator over what one topic (or the replica liveness) emits, in order.

    Use it as ``async with presence.subscribe(topic) as diffs: async for diff in diffs: ...``; the
    ``async with`` ends the subscription on exit. Iteration ends when the subscription is closed
    or the node stops (after every buffered item was read). If the subscriber falls more than
    :attr:`max_buffered` presences behind, the buffer is discarded at once and the next read
    raises :class:`~presence_adapters.SubscriptionOverflow` (the subscription is then over).

    A subscription has one reader: a read while another task's read is under way raises
    :class:`~presence_core.LocalProtocolError`. Subscribe once per consumer instead.
    """

    def __init__(
        self,
        presence: Presence,
        topic: str | None,
        max_buffered: int,
        convert: Callable[[Any], Awaitable[T]],
    ) -> None:
        self._presence = presence
        self.topic = topic
        self.max_buffered = max_buffered
        self._convert = convert
        self._buffer: deque[tuple[Any, int]] = deque()
        self._held = 0
        self._waiter: AsyncEvent | None = None
        self._ended = False
        self._overflowed = False
        self._reading = False

    def __repr__(self) -> str:
        what = repr(self.topic) if self.topic is not None else "replica events"
        return f"<Subscription {what} buffered={self._held}/{self.max_buffered}>"

    @property
    def buffered(self) -> int:
        """Presences (or replica events) waiting to be read."""
        return self._held

    @property
    def closed(self) -> bool:
        """True once nothing more will be added (closed, node stopped, or overflowed)."""
        return self._ended

    def close(self) -> None:
        """Stop receiving; items already buffered can still be read. Idempotent."""
        if not self._ended:
            self._ended = True
            self._presence._unsubscribe(self)
            self._wake()

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._reading:
            raise LocalProtocolError("another task is reading this subscription: one reader each")
        self._reading = True
        try:
            return await self._next()
        finally:
            self._reading = False

    async def _next(self) -> T:
        while not self._buffer:
            if self._overflowed:
                self._overflowed = False
                raise SubscriptionOverflow(self.topic, self.max_buffered)
            if self._ended:
                raise StopAsyncIteration
            waiter = self._waiter = self._presence._runtime.event()
            await waiter.wait()
        head = self._buffer[0]
        # Convert before removing the item: a fetch that fails or is cancelled loses nothing.
        result = await self._convert(head[0])
        if self._buffer and self._buffer[0] is head:
            self._buffer.popleft()
            self._held -= head[1]
            self._delivered(head[0])
        else:  # the buffer overflowed while we were fetching: only the reader pops
            self._overflowed = False
            raise SubscriptionOverflow(self.topic, self.max_buffered)
        return result

    def _delivered(self, item: Any) -> None:
        """Called once per item handed to the consumer, in order (for views)."""

    def _receive(self, cell: _DiffCell) -> None:
        """One diff of the topic, as the node emits it (synchronously, in order)."""
        self._push(cell, cell.weight)

    def _push(self, item: Any, weight: int) -> None:
        if self._ended:
            return
        if self._buffer and self._held + weight > self.max_buffered:
            # The consumer is too far behind: free the memory now and tell it on its next read.
            self._buffer.clear()
            self._held = 0
            self._overflowed = True
            self._ended = True
            self._presence._unsubscribe(self)
        else:
            self._buffer.append((item, weight))
            self._held += weight
        self._wake()

    def _push_all(self, items: builtins.list[Any]) -> None:
        """Push ``items`` (each of weight 1) as one: all of them fit, or the buffer overflows."""
        if self._ended:
            return
        if self._buffer and self._held + len(items) > self.max_buffered:
            self._buffer.clear()
            self._held = 0
            self._overflowed = True
            self._ended = True
            self._presence._unsubscribe(self)
        else:
            self._buffer.extend((item, 1) for item in items)
            self._held += len(items)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None


class PresenceView(Subscription[TopicDiff]):
    """A topic subscription that also keeps the topic's presences, for ``handle_metas`` code.

    :attr:`presences` (``{key: [meta, ...]}``, without fetched extras) starts as the topic's
    presences when the view is made, and each diff is applied to it just before the diff is
    yielded (joins first, then leaves, metas matched by equality, empty keys removed: Phoenix's
    ``handle_metas`` mirror, SPEC §5.2). So inside ``async for diff in view`` the mirror is the
    state right after ``diff``.
    """

    def __init__(self, presence: Presence, topic: str, max_buffered: int) -> None:
        super().__init__(presence, topic, max_buffered, presence._convert_diff)
        self.presences: dict[str, list[Mapping[str, JSONValue]]] = {
            key: list(value["metas"]) for key, value in presence.list(topic).items()
        }

    def _delivered(self, item: Any) -> None:
        assert isinstance(item, _DiffCell)
        grouped = item.grouped()
        presences = self.presences
        for key, value in grouped.joins.items():
            metas = presences.setdefault(key, [])
            metas.extend(meta for meta in value["metas"] if meta not in metas)
        for key, value in grouped.leaves.items():
            held = presences.get(key)
            if held is None:
                continue
            gone = value["metas"]
            held[:] = [meta for meta in held if meta not in gone]
            if not held:
                del presences[key]


class UserSubscription(Subscription[UserEvent]):
    """A topic's users: a :class:`~presence_core.UserJoined` when a key's first connection joins,
    a :class:`~presence_core.UserLeft` when its last one leaves, nothing in between
    (``docs/per-user.rst``). Made by :meth:`Presence.users`.

    It follows the topic with a :class:`~presence_core.UserView` started from the topic's
    presences when it was made, as subscribers were shown them (those of :meth:`Presence.list`:
    a key in its leave grace period is still among them, a join still in a large room's batch
    not yet), and fed every diff of the topic as the node emits it: so its counts are right
    whenever it starts. Each event weighs 1
    in the buffer, and the events of one diff enter it together: a subscriber more than
    :attr:`~Subscription.max_buffered` events behind overflows, as a diff subscription does.
    Events come without the fetch hook (they carry no metas).

    :meth:`connections` and :attr:`counts` read the view: they are up to date with every diff
    the node emitted while the subscription ran, so they may be ahead of the events not read
    yet; they stop changing once the subscription is closed, overflowed or the node stopped.
    """

    def __init__(self, presence: Presence, topic: str, max_buffered: int) -> None:
        super().__init__(presence, topic, max_buffered, _identity)
        self._view = UserView(topic, presence._tracker.entries(topic))

    def connections(self, key: str) -> int:
        """How many connections ``key`` has in the topic (``0``: absent).

        Raises:
            LocalProtocolError: ``key`` is not a ``str``.
        """
        if type(key) is not str:
            raise LocalProtocolError(f"key must be a str, not {type(key).__name__}")
        return self._view.connections(key)

    @property
    def counts(self) -> Mapping[str, int]:
        """Every present key with its number of connections (a new dict, keys sorted)."""
        return self._view.counts

    @property
    def users(self) -> int:
        """How many keys have at least one connection."""
        return len(self._view)

    def _receive(self, cell: _DiffCell) -> None:
        events = self._view.apply(cell.event)
        if events:
            self._push_all(events)


class OccupancySubscription(Subscription[Occupancy]):
    """A topic's counts, an :class:`~presence_core.Occupancy`, each time they change; made by
    :meth:`Presence.watch_occupancy`.

    The first value is the occupancy when the subscription was made; after that a value comes
    only when the counts differ from the last value read. It holds at most one value, the latest:
    a change replaces a value not read yet, and a change back to the last value read cancels it.
    So it is bounded by construction (:attr:`~Subscription.max_buffered` is 1) and never
    overflows: a slow reader skips values, it never falls behind. The counts are read from the
    tracker (:meth:`Presence.occupancy`: keys in their grace period count) each time the node
    emits a diff of the topic: once per tick in a large room, whose counts come from its index
    at no cost, once per change otherwise (and counted over the topic's presences).
    """

    def __init__(self, presence: Presence, topic: str) -> None:
        super().__init__(presence, topic, 1, _identity)
        self._last: Occupancy | None = None
        if not presence.closed:  # a stopped node's subscriptions end at once, empty
            self._offer(presence._tracker.occupancy(topic))

    def _delivered(self, item: Any) -> None:
        self._last = item

    def _receive(self, cell: _DiffCell) -> None:
        self._offer(self._presence._occupancy_of(cell))

    def _offer(self, value: Occupancy) -> None:
        if self._ended:
            return
        buffer = self._buffer
        if value == self._last:  # back to what the reader has: nothing to tell
            buffer.clear()
            self._held = 0
            return
        if buffer and buffer[0][0] == value:
            return
        buffer.clear()
        buffer.append((value, 1))
        self._held = 1
        self._wake()


class ConnectionScope:
    """Presences of one connection, untracked together when the scope exits (for any reason).

    Made by :meth:`Presence.connection`; use it as ``async with``. Its commands are those of
    :class:`Presence` with the connection filled in. Exiting after the node stopped does nothing.

    Attributes:
        conn: the connection id.
    """

    def __init__(self, presence: Presence, conn: str) -> None:
        self._presence = presence
        self.conn = conn

    def __repr__(self) -> str:
        return f"<ConnectionScope {self.conn!r}>"

    def track(self, topic: str, key: str, meta: Meta) -> str:
        """:meth:`Presence.track` for this connection."""
        return self._presence.track(self.conn, topic, key, meta)

    def update(self, topic: str, key: str, meta: Meta | MetaUpdater) -> str:
        """:meth:`Presence.update` for this connection."""
        return self._presence.update(self.conn, topic, key, meta)

    def untrack(self, topic: str, key: str) -> None:
        """:meth:`Presence.untrack` for this connection."""
        self._presence.untrack(self.conn, topic, key)

    async def __aenter__(self) -> ConnectionScope:
        self._presence._open_scope(self.conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Synchronous on purpose: a cancellation cannot interrupt the cleanup half-way.
        self._presence._close_scope(self.conn)


class Presence:
    """A running presence node, as the application sees it (made by a driver's ``open_node``).

    Attributes:
        replica: this node's replica (name and incarnation).
        name: this node's name (``replica.name``).
    """

    def __init__(
        self,
        tracker: Tracker,
        runtime: Runtime,
        control: _NodeControl,
        *,
        fetch: FetchHook | None = None,
    ) -> None:
        self._pump = Pump(tracker, on_event=self._on_event)
        self._tracker = tracker
        self._runtime = runtime
        self._control = control
        self._fetch = fetch
        self.replica: ReplicaRef = tracker.replica
        self.name: str = self.replica.name
        self._closed = False
        self._topic_subscriptions: dict[str, dict[Subscription[Any], None]] = {}
        self._replica_subscriptions: dict[Subscription[Any], None] = {}
        self._scopes: set[str] = set()
        self._conn_ids = itertools.count(1)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<Presence {self.replica.name}.{self.replica.vsn} {state}>"

    @property
    def closed(self) -> bool:
        """True once the node left the cluster (commands raise :class:`NodeClosed` then)."""
        return self._closed

    @property
    def pump(self) -> Pump:
        """The node's pump, for the driver that runs it (applications do not need it)."""
        return self._pump

    @property
    def stats(self) -> PumpStats:
        """The node's traffic counters (live; they only grow): messages sent and received,
        malformed, unsendable, and refused by the tracker (``rejected``, also by reason)."""
        return self._pump.stats

    def tracker_stats(self) -> TrackerStats:
        """The tracker's counters and gauges, read now (see :class:`~presence_core.TrackerStats`):
        messages received and rejected by reason (malformed ones included), claims cut,
        transfers, and the replicas up and down, presences and parked dots."""
        return self._tracker.stats()

    @property
    def keyring(self) -> Keyring | None:
        """The keys replication is sealed and checked with (``None``: unsealed)."""
        return self._tracker.keyring

    def set_keyring(self, keyring: Keyring) -> None:
        """Replace the node's keyring while it runs: a key rotation without a restart.

        Messages sent from now on are sealed with ``keyring.current``; messages received are
        checked against its keys. Rotate the whole cluster in two rolls, never one, or its
        messages are refused in between: first give every node the new key as an accepted one
        (``Keyring(old, accepted=(new,))``), then, once every node holds it, make it current
        (``Keyring(new, accepted=(old,))``); the old key can go once every node seals with the
        new one (see :class:`~presence_core.Keyring`).

        Raises:
            LocalProtocolError: ``keyring`` is not a :class:`~presence_core.Keyring`, or the node
                was opened without one (replication cannot start being sealed on one node while
                it runs: its peers would refuse it, or it them; open every node with a keyring).
            NodeClosed: the node has stopped.
        """
        if self._closed:
            raise NodeClosed(f"node {self.name!r} has stopped")
        self._tracker.set_keyring(keyring)

    # ------------------------------------------------------------------ commands

    def _command(self, call: Callable[[float], T]) -> T:
        if self._closed:
            raise NodeClosed(f"node {self.name!r} has stopped")
        pump = self._pump
        result = pump.command(call, now=pump.now(self._runtime.clock()))
        self._control.poke()
        return result

    def track(self, conn: str, topic: str, key: str, meta: Meta) -> str:
        """Track connection ``conn`` as present under ``key`` in ``topic``; see
        :meth:`Tracker.track <presence_core.Tracker.track>`.

        Returns:
            The new ``phx_ref``.

        Raises:
            AlreadyTracked, LimitExceeded, LocalProtocolError: as the tracker raises them.
            NodeClosed: the node has stopped.
        """
        tracker = self._tracker
        return self._command(
            lambda now: tracker.track(conn=conn, topic=topic, key=key, meta=meta, now=now)
        )

    def update(self, conn: str, topic: str, key: str, meta: Meta | MetaUpdater) -> str:
        """Replace a tracked presence's meta (or apply a function to it); see
        :meth:`Tracker.update <presence_core.Tracker.update>`.

        Returns:
            The new ``phx_ref``.

        Raises:
            NoPresence, LimitExceeded, LocalProtocolError: as the tracker raises them.
            NodeClosed: the node has stopped.
        """
        tracker = self._tracker
        return self._command(
            lambda now: tracker.update(conn=conn, topic=topic, key=key, meta=meta, now=now)
        )

    def untrack(self, conn: str, topic: str, key: str) -> None:
        """Stop tracking ``(conn, topic, key)``; a no-op when it is not tracked.

        Raises:
            LocalProtocolError: a wrong argument type.
            NodeClosed: the node has stopped.
        """
        tracker = self._tracker
        self._command(lambda now: tracker.untrack(conn=conn, topic=topic, key=key, now=now))

    def untrack_conn(self, conn: str) -> None:
        """Stop tracking every presence of connection ``conn``.

        Raises:
            LocalProtocolError: a wrong argument type.
            NodeClosed: the node has stopped.
        """
        tracker = self._tracker
        self._command(lambda now: tracker.untrack_conn(conn=conn, now=now))

    def connection(self, conn: str | None = None) -> ConnectionScope:
        """A scope for one connection: ``async with presence.connection() as conn: ...``.

        Everything tracked through the scope (or under its connection id) is untracked when the
        ``async with`` exits, for any reason. Only one scope may be open per connection id.

        Args:
            conn: the connection id; by default a new one, unique on this node.
        """
        if conn is None:
            conn = f"conn-{next(self._conn_ids)}"
        elif type(conn) is not str:
            raise LocalProtocolError(f"conn must be a str, not {type(conn).__name__}")
        return ConnectionScope(self, conn)

    def _open_scope(self, conn: str) -> None:
        if self._closed:
            raise NodeClosed(f"node {self.name!r} has stopped")
        if conn in self._scopes:
            raise LocalProtocolError(f"a connection scope for {conn!r} is already open")
        self._scopes.add(conn)

    def _close_scope(self, conn: str) -> None:
        self._scopes.discard(conn)
        if not self._closed:
            self.untrack_conn(conn)

    async def abandon(self) -> None:
        """Stop this node at once without telling the peers (for tests and crash drills).

        The peers see it as silent: down after their down period, then permanently down. Leaving
        the ``async with`` afterwards sends nothing.
        """
        await self._control.abandon()

    def configure_topic(self, topic: str, options: TopicOptions) -> None:
        """Set how ``topic``'s diffs reach subscribers: a leave grace period
        (``docs/grace-period.rst``), large-room batching (``docs/large-rooms.rst``); see
        :meth:`Tracker.configure_topic <presence_core.Tracker.configure_topic>`. Diffs it
        releases go to subscribers at once.

        Raises:
            LocalProtocolError: a wrong argument type.
            NodeClosed: the node has stopped.
        """
        tracker = self._tracker
        self._command(lambda _now: tracker.configure_topic(topic, options))

    def topic_options(self, topic: str) -> TopicOptions:
        """The options set for ``topic`` (``TopicOptions()`` if none)."""
        return self._tracker.topic_options(topic)

    # ------------------------------------------------------------------ queries

    def list(self, topic: str) -> PresenceMap:
        """The presences of ``topic``: ``{key: {"metas": [...]}}`` (keys sorted), as subscribers
        were shown them (see :meth:`Tracker.entries <presence_core.Tracker.entries>`): in a topic
        with options, a join still in a large room's batch is not listed yet and a key in its
        leave grace period still is. So the list, then every diff that follows, is exactly the
        topic, whenever a subscriber starts."""
        return self._tracker.presences(topic)

    def get_by_key(self, topic: str, key: str) -> dict[str, builtins.list[Mapping[str, JSONValue]]]:
        """The presence of ``key`` in ``topic``: ``{"metas": [...]}`` (empty metas if absent), as
        :meth:`list` has it."""
        return self._tracker.get_by_key(topic, key)

    def count(self, topic: str) -> int:
        """How many presences (metas) ``topic`` holds, as :meth:`list` has them, without building
        the list."""
        return self._tracker.count(topic)

    def occupancy(self, topic: str) -> Occupancy:
        """How many keys and presences ``topic`` holds, the counts of :meth:`list`; see
        :meth:`Tracker.occupancy <presence_core.Tracker.occupancy>` (keys in their grace period
        count, a large room's batch not yet)."""
        return self._tracker.occupancy(topic)

    def page(self, topic: str, *, after: str | None = None, limit: int = 100) -> PresencePage:
        """Up to ``limit`` keys of ``topic`` after ``after``, in sorted order, as :meth:`list`
        has them; see :meth:`Tracker.page <presence_core.Tracker.page>`."""
        return self._tracker.page(topic, after=after, limit=limit)

    def topics(self) -> builtins.list[str]:
        """Every topic with at least one presence, sorted."""
        return self._tracker.topics()

    def replicas(self) -> dict[str, ReplicaInfo]:
        """The other replicas this node knows, by name."""
        return self._tracker.replicas()

    async def fetched_list(self, topic: str) -> dict[str, dict[str, Any]]:
        """:meth:`list`, passed through the fetch hook (the same as :meth:`list` without one).

        The presences are read before the first ``await``, so subscribing and then awaiting this
        leaves no gap: every diff the subscription yields happened after the presences were read.
        """
        presences = self.list(topic)
        if self._fetch is None or not presences:
            return presences
        return _check_fetched(topic, presences, await self._fetch(topic, presences))

    async def fetched_get_by_key(self, topic: str, key: str) -> dict[str, Any]:
        """:meth:`get_by_key`, passed through the fetch hook."""
        presence = self.get_by_key(topic, key)
        if self._fetch is None or not presence["metas"]:
            return presence
        given: PresenceMap = {key: presence}
        return _check_fetched(topic, given, await self._fetch(topic, given))[key]

    # ------------------------------------------------------------------ subscriptions

    def subscribe(
        self, topic: str, *, max_buffered: int = DEFAULT_MAX_BUFFERED
    ) -> Subscription[TopicDiff]:
        """Every diff of ``topic`` from now on, in order, through the fetch hook.

        To start from the current state, read :meth:`list` right after subscribing, with no
        ``await`` in between: nothing can happen between the two, and the list holds what the
        diffs before it brought (in every topic: batched and held diffs included).

        Args:
            topic: the topic.
            max_buffered: the most presences held for a subscriber that is behind (see
                :class:`Subscription`).
        """
        return self._add_topic_subscription(
            Subscription(self, topic, _check_buffer(max_buffered), self._convert_diff)
        )

    def view(self, topic: str, *, max_buffered: int = DEFAULT_MAX_BUFFERED) -> PresenceView:
        """Like :meth:`subscribe`, and also keep the presences (see :class:`PresenceView`)."""
        view = PresenceView(self, topic, _check_buffer(max_buffered))
        self._add_topic_subscription(view)
        return view

    def users(self, topic: str, *, max_buffered: int = DEFAULT_MAX_BUFFERED) -> UserSubscription:
        """The users of ``topic`` from now on: an event when a key's first connection joins and
        when its last leaves, with each key's connection count (see :class:`UserSubscription`).

        Args:
            topic: the topic.
            max_buffered: the most events held for a subscriber that is behind.

        Raises:
            LocalProtocolError: ``topic`` is not a ``str``, or ``max_buffered`` not an
                ``int >= 1``.
        """
        _check_topic(topic)
        subscription = UserSubscription(self, topic, _check_buffer(max_buffered))
        self._add_topic_subscription(subscription)
        return subscription

    def watch_occupancy(self, topic: str) -> OccupancySubscription:
        """The counts of ``topic`` (keys and presences), now and each time they change, without
        the presences (see :class:`OccupancySubscription`).

        Raises:
            LocalProtocolError: ``topic`` is not a ``str``.
        """
        _check_topic(topic)
        subscription = OccupancySubscription(self, topic)
        self._add_topic_subscription(subscription)
        return subscription

    def replica_events(
        self, *, max_buffered: int = DEFAULT_MAX_BUFFERED
    ) -> Subscription[ReplicaEvent]:
        """Every replica going up, down or permanently down from now on, in order."""
        subscription: Subscription[ReplicaEvent] = Subscription(
            self, None, _check_buffer(max_buffered), _identity
        )
        if self._closed:
            subscription._end()
        else:
            self._replica_subscriptions[subscription] = None
        return subscription

    def _add_topic_subscription(self, subscription: Subscription[T]) -> Subscription[T]:
        if type(subscription.topic) is not str:
            raise LocalProtocolError(
                f"topic must be a str, not {type(subscription.topic).__name__}"
            )
        if self._closed:
            subscription._end()
        else:
            self._topic_subscriptions.setdefault(subscription.topic, {})[subscription] = None
        return subscription

    def _unsubscribe(self, subscription: Subscription[Any]) -> None:
        if subscription.topic is None:
            self._replica_subscriptions.pop(subscription, None)
            return
        subscriptions = self._topic_subscriptions.get(subscription.topic)
        if subscriptions is not None:
            subscriptions.pop(subscription, None)
            if not subscriptions:
                del self._topic_subscriptions[subscription.topic]

    def _occupancy_of(self, cell: _DiffCell) -> Occupancy:
        """The occupancy of the topic of ``cell`` right after it was emitted (read once)."""
        if cell.occupancy is None:
            cell.occupancy = self._tracker.occupancy(cell.event.topic)
        return cell.occupancy

    async def _convert_diff(self, cell: _DiffCell) -> TopicDiff:
        if self._fetch is None:
            return cell.grouped()
        return await cell.fetched(self._fetch, self._runtime)

    # ------------------------------------------------------------------ driver side

    def _on_event(self, event: Event) -> None:
        """The pump's ``on_event``: hand one event to its subscribers."""
        if isinstance(event, PresenceDiff):
            subscriptions = self._topic_subscriptions.get(event.topic)
            if subscriptions:
                cell = _DiffCell(event)
                for subscription in list(subscriptions):
                    subscription._receive(cell)
        elif isinstance(event, (ReplicaUp, ReplicaDown, ReplicaPermdown)):
            for subscription in list(self._replica_subscriptions):
                subscription._push(event, 1)
        else:
            # Counted in stats (unsendable, rejected) and logged by the pump. (Typed so that an
            # event added to the core's union fails type-checking here until it is handled.)
            _not_news: Unsendable | MessageRejected = event
            del _not_news

    def _close(self) -> None:
        """The node stopped: refuse commands, end every subscription (after its buffer)."""
        self._closed = True
        for subscriptions in self._topic_subscriptions.values():
            for subscription in subscriptions:
                subscription._end()
        for subscription in self._replica_subscriptions:
            subscription._end()
        self._topic_subscriptions = {}
        self._replica_subscriptions = {}


async def _identity(item: T) -> T:
    return item


def _check_topic(topic: object) -> None:
    if type(topic) is not str:
        raise LocalProtocolError(f"topic must be a str, not {type(topic).__name__}")


def _check_buffer(max_buffered: object) -> int:
    if type(max_buffered) is not int or max_buffered < 1:
        raise LocalProtocolError(f"max_buffered must be an int >= 1, not {max_buffered!r}")
    return max_buffered
