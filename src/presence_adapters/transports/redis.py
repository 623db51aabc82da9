"""The Redis transport: a cluster over Redis pub/sub, with coredis (on asyncio and on trio).

.. code-block:: python

    transport = await RedisTransport.connect("redis://127.0.0.1:6379", name="web-1")
    async with open_node(transport) as presence:      # the node closes the transport
        ...

Addresses
=========

Each cluster (``namespace``) gets one *broadcast* channel (pub/sub), and each replica one
*inbox*, a Redis list::

    {prefix}:{namespace}:broadcast
    {prefix}:{namespace}:inbox:{name}

where every part went through :func:`~presence_adapters.transports.address_segment`
(``[A-Za-z0-9_-]`` kept, anything else ``%XX``-escaped), so no part holds a ``:``: two different
``(prefix, namespace, name)`` never share a channel or an inbox, and a name cannot reach another
cluster's nor pose as the broadcast channel. Several clusters share one Redis by namespace (and
several applications by prefix). Names must be unique within a namespace; Redis cannot enforce it
(two replicas of one name share one inbox).

Why direct messages go through a list
=====================================

Heartbeats are broadcast on pub/sub; what one replica sends another (transfer requests and
replies) is pushed on the addressee's inbox, which the addressee pops one message at a time, only
when its own inbox has room. That is flow control: a transfer reply of many parts (a 100,000
presence state is about 68 MB) waits in Redis until the receiver has taken in the previous parts.
On pub/sub, Redis would queue all of it in the receiver's output buffer at once, and its default
``client-output-buffer-limit pubsub 32mb 8mb 60`` disconnects a subscriber whose buffer reaches
32 MiB: the receiver would be cut off in the middle of every large transfer, for good. Each push
also trims the inbox to ``inbox_messages`` messages and gives it ``direct_ttl`` seconds to live,
so messages to a replica that is gone do not stay in Redis.

Echo suppression
================

Redis delivers a broadcast to every subscriber of its channel, the publisher included, so a node
would hear its own broadcasts (and decode them for nothing: 0.13 s for a 13 MB state). Every
payload goes out behind a random 8-byte id drawn for this transport instance; a message carrying
our own id is dropped unread (counted in :attr:`RedisStats.ignored_own`), the others lose the id
and reach :meth:`RedisTransport.receive` exactly as they were sent. A restarted replica draws a
new id, so it hears its predecessor's last messages like anyone else's.

Outages
=======

Two connections serve a transport: one subscribes to the broadcast channel and carries every
command the transport sends (RESP3 lets a subscribed connection publish and push), the other
pops the inbox (a blocking ``BLPOP`` would hold up the first). They live in a *host task* the
transport starts in :meth:`RedisTransport.connect` and joins in :meth:`RedisTransport.aclose`: it
connects both, subscribes, reads into a bounded inbox, pings the server every ``ping_interval``
seconds (a silently dead link is noticed within two intervals), and when a connection is lost
reconnects both with :class:`~presence_adapters.Backoff` and subscribes again, for as long as the
transport is open. Meanwhile sends are dropped and counted (what was already pushed to our inbox
waits there, for ``direct_ttl`` seconds), :meth:`~RedisTransport.receive` waits, and every change
is reported as a :data:`~presence_adapters.BrokerEvent`. Nothing about an outage is raised to
the node: it keeps serving its local presences, and the replication protocol repairs what was
lost once the broker is back, as it repairs any lost message.

Why a host task and not a task group entered in ``connect`` and exited in ``aclose``: a task
group (a cancel scope) must be exited in the task that entered it, innermost first, and nodes
close transports in any order and from other tasks (the conformance suite closes one member while
a later one is open; the asyncio driver stops a node, and closes its transport, in a task of its
own). anyio refuses that ("Attempted to exit a cancel scope that
isn't the current task's current cancel scope"; trio: "Nursery misnesting detected"). So
everything coredis needs (its connection runs its reader and writer in a task group) is nested
inside one task the transport owns: an asyncio task on asyncio, a trio system task on trio.
``aclose`` cancels it and waits until it has ended, so nothing is left running.

coredis's own :class:`coredis.commands.PubSub` reconnects and resubscribes too, but silently (no
hook to report or count an outage) and into an unbounded buffer, so it is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import random
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from presence_adapters._errors import PayloadTooLarge, TransportClosed, TransportError

from ._broker import (
    Backoff,
    BrokerConnected,
    BrokerDisconnected,
    BrokerStats,
    StatusCallback,
    address_segment,
    report,
)

try:
    import anyio
    import anyio.lowlevel
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from coredis import ConnectionPool
    from coredis.connection import BaseConnection, Location
    from coredis.exceptions import ConnectionError as RedisConnectionError
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "presence_adapters.transports.redis needs coredis; install the 'redis' extra: "
        "pip install 'presence-core[redis]'"
    ) from _exc

if sys.version_info < (3, 11):  # pragma: no cover - depends on the interpreter
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "DEFAULT_DIRECT_TTL",
    "DEFAULT_MAX_PAYLOAD",
    "ID_BYTES",
    "MAX_WIRE_MESSAGE",
    "PULL_WAIT",
    "RedisStats",
    "RedisTransport",
]

logger = logging.getLogger("presence_adapters.transports")

ID_BYTES = 8
"""Length of the per-instance id every payload carries on the wire (for echo suppression)."""

MAX_WIRE_MESSAGE = 8 * 1024 * 1024
"""The largest message the transport sends by default (id and payload), 8 MiB.

Redis queues each broadcast for each subscriber in that subscriber's output buffer, and by
default (``client-output-buffer-limit pubsub 32mb 8mb 60``) disconnects a subscriber whose buffer
reaches 32 MiB at once, or stays above 8 MiB for 60 s. A broadcast of 8 MiB stays at the soft
limit on its own, and the hard limit still holds four of them waiting for a subscriber at once: a
larger default would let a burst of heartbeat parts cut subscribers off. (Direct messages wait in
the receiver's inbox list instead, at no subscriber's expense.) Raise ``max_payload`` only
together with the server's pubsub limit (a message of 32 MiB or more disconnects every subscriber
it is queued for, always).
"""

DEFAULT_MAX_PAYLOAD = MAX_WIRE_MESSAGE - ID_BYTES
"""The default ``max_payload`` (8 MiB - 8 bytes), so that id and payload fit
:data:`MAX_WIRE_MESSAGE`."""

DEFAULT_DIRECT_TTL = 60.0
"""Seconds an inbox lives in Redis after the last message pushed on it (see ``direct_ttl``)."""

PULL_WAIT = 1.0
"""Seconds one ``BLPOP`` of the inbox blocks before it is issued again (it returns at once when a
message is there; the bound keeps the pulling connection from looking idle to proxies)."""

_REDIS_MAX_BULK = 512 * 1024 * 1024
"""Redis's ``proto-max-bulk-len`` default: no single argument (our message) may be larger."""

_CONNECTION_ERRORS = (
    RedisConnectionError,
    TimeoutError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)
"""What a command on a connection that is going away raises (the message is lost, not refused)."""


@attrs.define(kw_only=True)
class RedisStats(BrokerStats):
    """Counters of a :class:`RedisTransport` (they only grow): those of every broker transport,
    and two more.

    Attributes:
        dropped_inbox_full: messages from other replicas dropped because the inbox was full
            (``received`` counts them too).
        malformed: messages on our channels too short to carry an id (not sent by a transport:
            someone else published there), dropped.
    """

    dropped_inbox_full: int = 0
    malformed: int = 0


def _positive_int(what: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be an int >= 1, not {value!r}")
    return value


def _seconds(what: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what} must be a positive, finite number of seconds, not {value!r}")
    return float(value)


def _leaf(error: BaseException) -> BaseException:
    """The first error of a group (a task group wraps errors in one), or ``error`` itself."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _describe(error: BaseException) -> str:
    """``error`` in words."""
    error = _leaf(error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def _within(seconds: float, what: str) -> Iterator[None]:
    """Like :func:`anyio.fail_after`, with a TimeoutError that says what took too long."""
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        raise TimeoutError(f"{what} took longer than {seconds:.3g} s") from None


def _close_streams(connection: BaseConnection) -> None:
    """Close the memory streams of a coredis connection that has stopped.

    coredis 6.9 closes them only when the connection got as far as connecting: a connection whose
    connect failed (what every attempt during an outage is) would warn ``ResourceWarning:
    Unclosed <MemoryObjectSendStream>`` when collected. Closing twice is harmless.
    """
    for value in list(vars(connection).values()):
        if isinstance(value, (MemoryObjectSendStream, MemoryObjectReceiveStream)):
            value.close()


class RedisTransport:
    """One replica's connection to its cluster over Redis pub/sub (made by :meth:`connect`).

    See the module documentation (:doc:`transports`) for the channels, echo suppression and
    outages. A node takes ownership of the transport it is given and closes it when it stops.

    Attributes:
        namespace: the cluster this replica belongs to.
        stats: the transport's counters.
    """

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        channel_prefix: str,
        location: Location,
        connection_factory: Callable[[], BaseConnection],
        max_payload: int,
        inbox_messages: int,
        inbox_bytes: int,
        direct_ttl: float,
        backoff: Backoff,
        connect_timeout: float,
        command_timeout: float,
        ping_interval: float,
        on_status: StatusCallback | None,
        rng: random.Random,
    ) -> None:
        # Private: use connect(), which validates the arguments and starts the transport.
        self._name = name
        self.namespace = namespace
        self.stats = RedisStats()
        self._location = location
        self._connection_factory = connection_factory
        self._max_payload = max_payload
        self._inbox_messages = inbox_messages
        self._inbox_bytes_limit = inbox_bytes
        self._direct_ttl_ms = max(1, round(direct_ttl * 1000))
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._ping_interval = ping_interval
        self._on_status = on_status
        self._rng = rng
        self._id = os.urandom(ID_BYTES)  # never from rng: two seeded transports must differ
        prefix = f"{address_segment(channel_prefix)}:{address_segment(namespace)}"
        self._inbox_prefix = f"{prefix}:inbox:"
        self._broadcast_channel = f"{prefix}:broadcast".encode()
        self._own_inbox = self.inbox_for(name).encode()

        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._arrival: anyio.Event | None = None
        self._room: anyio.Event | None = None
        self._connection: BaseConnection | None = None
        self._closed = False
        self._failure: BaseException | None = None
        self._ever_connected = False
        self._up = False  # the current session got as far as subscribing
        self._startup_error: BaseException | None = None
        self._startup = anyio.Event()
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    async def connect(
        cls,
        url: str = "redis://127.0.0.1:6379",
        *,
        name: str,
        namespace: str = "presence",
        channel_prefix: str = "presence",
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        inbox_messages: int = 10_000,
        inbox_bytes: int = 64 * 1024 * 1024,
        direct_ttl: float = DEFAULT_DIRECT_TTL,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen, so one shared default is fine
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        ping_interval: float = 5.0,
        on_status: StatusCallback | None = None,
        rng: random.Random | None = None,
    ) -> RedisTransport:
        """Connect to Redis and subscribe as replica ``name`` of cluster ``namespace``.

        When this returns, the transport is connected and subscribed: :meth:`receive` gets every
        message sent to this replica from now on.

        Args:
            url: where Redis is: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
                for TLS, or ``unix://[[user]:password@]/path/to/socket``.
            name: this replica's name (any non-empty string; unique in its namespace).
            namespace: the cluster (clusters sharing one Redis never hear each other).
            channel_prefix: the first part of every channel name.
            max_payload: the largest payload :meth:`broadcast` and :meth:`send` carry, in bytes
                (the 8-byte id comes on top). See :data:`DEFAULT_MAX_PAYLOAD`.
            inbox_messages: received messages held for :meth:`receive` at most; more broadcasts
                are dropped (and counted in :attr:`RedisStats.dropped_inbox_full`), while
                direct messages wait in Redis. Also the most messages an inbox list in Redis
                keeps (the oldest are trimmed).
            inbox_bytes: received bytes held at most (at least ``max_payload``).
            direct_ttl: seconds an inbox list lives in Redis after the last push to it (what
                is sent to a replica that is gone expires then).
            backoff: the delays between reconnection attempts.
            connect_timeout: seconds the first connection may take (attempts are repeated with
                ``backoff`` until then), and then the bound of each reconnection attempt.
            command_timeout: seconds a publish may wait for Redis's answer; past it the
                connection is taken as lost (the message counts as dropped) and renewed.
            ping_interval: seconds between two pings of the server, and the time a ping may
                take before the connection is taken as lost (so a link that died silently is
                noticed within two intervals).
            on_status: called with every :data:`~presence_adapters.BrokerEvent`
                (from the transport's task; an exception it raises is logged).
            rng: randomness for the backoff's jitter (the wire id never comes from it).

        Raises:
            ValueError: an argument is invalid (a name or namespace that is not a non-empty
                str of valid Unicode, a URL that is not a Redis URL, a limit out of range).
            TransportError: no connection could be made within ``connect_timeout`` seconds.
        """
        for what, value in (
            ("name", name),
            ("namespace", namespace),
            ("channel_prefix", channel_prefix),
        ):
            try:
                address_segment(value)
            except ValueError:
                raise ValueError(
                    f"{what} must be a non-empty str of valid Unicode, not {value!r}"
                ) from None
        _positive_int("max_payload", max_payload)
        if max_payload > _REDIS_MAX_BULK - ID_BYTES:
            raise ValueError(
                f"max_payload must be at most {_REDIS_MAX_BULK - ID_BYTES} (Redis's largest "
                f"argument, proto-max-bulk-len, less the id), not {max_payload}"
            )
        _positive_int("inbox_messages", inbox_messages)
        _positive_int("inbox_bytes", inbox_bytes)
        if inbox_bytes < max_payload:
            raise ValueError(
                f"inbox_bytes ({inbox_bytes}) must be at least max_payload ({max_payload})"
            )
        direct_ttl = _seconds("direct_ttl", direct_ttl)
        if not isinstance(backoff, Backoff):
            raise ValueError(f"backoff must be a Backoff, not {backoff!r}")
        if on_status is not None and not callable(on_status):
            raise ValueError(f"on_status must be callable or None, not {on_status!r}")
        location, factory = _connection_factory(url, connect_timeout)
        transport = cls(
            name=name,
            namespace=namespace,
            channel_prefix=channel_prefix,
            location=location,
            connection_factory=factory,
            max_payload=max_payload,
            inbox_messages=inbox_messages,
            inbox_bytes=inbox_bytes,
            direct_ttl=direct_ttl,
            backoff=backoff,
            connect_timeout=_seconds("connect_timeout", connect_timeout),
            command_timeout=_seconds("command_timeout", command_timeout),
            ping_interval=_seconds("ping_interval", ping_interval),
            on_status=on_status,
            rng=rng if rng is not None else random.Random(),
        )
        transport._start()
        try:
            await transport._startup.wait()
        except BaseException:  # cancelled while connecting: leave nothing running
            with anyio.CancelScope(shield=True):
                await transport.aclose()
            raise
        error = transport._startup_error or transport._failure
        if error is not None or not transport._ever_connected:
            await transport.aclose()
            raise TransportError(
                f"could not connect to Redis at {location} within {connect_timeout:g} s"
                + (f": {_describe(error)}" if error is not None else "")
            ) from error
        return transport

    def _start(self) -> None:
        """Start the host task, on the event loop that is running (asyncio or trio)."""
        task_name = f"presence redis transport {self._name!r}"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self._task = loop.create_task(self._host(), name=task_name)
            return
        if "trio" in sys.modules:
            import trio

            try:
                trio.lowlevel.current_task()
            except RuntimeError:
                pass
            else:
                # A system task: it belongs to no nursery of the caller's, so the transport may be
                # closed from any task, in any order. It is cancelled if the run ends before that.
                trio.lowlevel.spawn_system_task(
                    self._host, name=task_name, context=contextvars.copy_context()
                )
                return
        raise RuntimeError("RedisTransport runs on asyncio or trio (directly or through anyio)")

    # ------------------------------------------------------------------ the Transport protocol

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        else:
            state = "connected" if self._connection is not None else "disconnected"
        return (
            f"<RedisTransport {self.namespace}/{self._name} at {self._location} {state} "
            f"inbox={len(self._inbox)}>"
        )

    @property
    def name(self) -> str:
        """The replica name this transport receives for (the node takes it as its own)."""
        return self._name

    @property
    def max_payload(self) -> int:
        """The largest payload, in bytes, that :meth:`broadcast` and :meth:`send` carry."""
        return self._max_payload

    @property
    def connected(self) -> bool:
        """True while connected and subscribed (sends are dropped while it is False)."""
        return self._connection is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    @property
    def broadcast_channel(self) -> str:
        """The Redis channel of this cluster's broadcasts."""
        return self._broadcast_channel.decode()

    def inbox_for(self, name: str) -> str:
        """The Redis key of the list that holds the messages sent to replica ``name``.

        Raises:
            ValueError: ``name`` is not a non-empty str of valid Unicode.
        """
        return f"{self._inbox_prefix}{address_segment(name)}"

    async def broadcast(self, data: bytes) -> None:
        """Send ``data`` to every other replica of the cluster (dropped while disconnected).

        Raises:
            PayloadTooLarge: ``len(data) > max_payload``; nothing was sent.
            TransportClosed: the transport is closed.
            TransportError: Redis refused the message for a reason other than a lost connection
                (an ACL that forbids publishing, say).
        """
        await self._publish(self._broadcast_channel, self._check(data))

    async def send(self, to: str, data: bytes) -> None:
        """Send ``data`` to replica ``to``: push it on its inbox (dropped while disconnected; kept
        for ``direct_ttl`` seconds if nobody holds that name, and never received).

        Raises:
            PayloadTooLarge: ``len(data) > max_payload``; nothing was sent.
            TransportClosed: the transport is closed.
            TransportError: as for :meth:`broadcast`.
        """
        if type(to) is not str:
            raise TypeError(f"to must be a str, not {type(to).__name__}")
        data = self._check(data)
        try:
            inbox = self.inbox_for(to).encode()
        except ValueError:  # nobody can hold a name that is not valid Unicode (or empty)
            await anyio.lowlevel.checkpoint()
            return
        await self._push(inbox, data)

    async def receive(self) -> bytes:
        """The next message for this replica; waits (across outages) until one comes.

        Raises:
            TransportClosed: the transport was closed.
            TransportError: the transport's task failed unexpectedly (a bug: outages are not
                raised).
        """
        while True:
            if self._closed:
                raise TransportClosed(f"{self._name!r} is closed")
            if self._inbox:
                data = self._inbox.popleft()
                self._inbox_bytes -= len(data)
                if self._room is not None:
                    self._room.set()
                    self._room = None
                return data
            if self._failure is not None:
                raise TransportError(
                    f"the Redis transport of {self._name!r} failed: {_describe(self._failure)}"
                ) from self._failure
            if self._arrival is None:
                self._arrival = anyio.Event()
            await self._arrival.wait()

    async def aclose(self) -> None:
        """Unsubscribe, disconnect and stop the transport's task. Idempotent.

        A :meth:`receive` waiting is woken with :exc:`~presence_adapters.TransportClosed`, and
        the messages not yet received are discarded.
        """
        if not self._closed:
            self._closed = True
            self._connection = None
            self._inbox.clear()
            self._inbox_bytes = 0
            self._wake()
            if self._room is not None:
                self._room.set()
            self._scope.cancel()
        # The task ends as soon as it runs again (closing a socket takes no round trip); the bound
        # is only there so that a bug cannot hang the caller.
        with anyio.move_on_after(self._connect_timeout + 5.0):
            await self._done.wait()

    # ------------------------------------------------------------------ sending

    def _check(self, data: bytes) -> bytes:
        if self._closed:
            raise TransportClosed(f"{self._name!r} is closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)  # our own copy: the caller may reuse a bytearray
        if len(data) > self._max_payload:
            raise PayloadTooLarge(len(data), self._max_payload)
        return data

    async def _publish(self, channel: bytes, data: bytes) -> None:
        await self._commands([(b"PUBLISH", channel, self._id + data)])

    async def _push(self, inbox: bytes, data: bytes) -> None:
        # Push, keep the newest inbox_messages, and let an inbox nobody reads expire.
        await self._commands(
            [
                (b"RPUSH", inbox, self._id + data),
                (b"LTRIM", inbox, b"%d" % -self._inbox_messages, b"-1"),
                (b"PEXPIRE", inbox, b"%d" % self._direct_ttl_ms),
            ]
        )

    async def _commands(self, commands: Sequence[tuple[bytes, ...]]) -> None:
        """Send one message as ``commands`` on the connection, counted as sent or dropped."""
        connection = self._connection
        if connection is None:
            self.stats.dropped_while_disconnected += 1
            await anyio.lowlevel.checkpoint()
            return
        try:
            for command in commands:
                await connection.create_request(
                    *command, decode=False, timeout=self._command_timeout
                )
        except Exception as exc:
            verb = commands[0][0].decode()
            if not (isinstance(exc, _CONNECTION_ERRORS) or not connection.usable):
                raise TransportError(f"Redis refused {verb}: {_describe(exc)}") from exc
            # Lost with the connection: the node carries on and the protocol repairs the loss.
            self.stats.dropped_while_disconnected += 1
            if isinstance(exc, TimeoutError) and connection is self._connection:
                # No answer in time: whatever state this connection is in, it cannot be trusted.
                connection.invalidate(f"{verb} timed out")
            return
        self.stats.sent += 1

    # ------------------------------------------------------------------ receiving

    def _wake(self) -> None:
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    def _on_push(self, response: Sequence[Any], pending: set[bytes] | None) -> None:
        """Handle one push message of the connection (a message, or a subscription's ack)."""
        if len(response) < 3:
            return
        kind = response[0]
        if kind == b"message":
            data = response[2]
            if isinstance(data, bytes):
                self._deliver(data)
        elif kind == b"subscribe" and pending is not None:
            pending.discard(response[1])

    def _deliver(self, data: bytes) -> None:
        if len(data) < ID_BYTES:
            self.stats.malformed += 1
            return
        if data.startswith(self._id):
            self.stats.ignored_own += 1  # our own broadcast, echoed by Redis: dropped unread
            return
        self.stats.received += 1
        payload = data[ID_BYTES:]
        if not self._has_room(len(payload)):
            self.stats.dropped_inbox_full += 1
            return
        self._inbox.append(payload)
        self._inbox_bytes += len(payload)
        self._wake()

    def _has_room(self, size: int) -> bool:
        return (
            len(self._inbox) < self._inbox_messages
            and self._inbox_bytes + size <= self._inbox_bytes_limit
        )

    async def _pull(self, connection: BaseConnection) -> None:
        """Pop our inbox list into the inbox, one message at a time, only while there is room
        for the largest message (the rest waits in Redis: flow control for direct messages)."""
        wait = b"%g" % PULL_WAIT
        while True:
            while not self._has_room(self._max_payload + ID_BYTES):
                if self._room is None:
                    self._room = anyio.Event()
                await self._room.wait()
            response = await connection.create_request(
                b"BLPOP",
                self._own_inbox,
                wait,
                decode=False,
                timeout=PULL_WAIT + self._command_timeout,
            )
            if isinstance(response, (list, tuple)) and len(response) == 2:
                data = response[1]
                if isinstance(data, bytes):
                    self._deliver(data)

    # ------------------------------------------------------------------ the host task

    async def _host(self) -> None:
        try:
            with self._scope:
                await self._maintain()
        except Exception as exc:
            # Outages are handled in _maintain: this is a bug. Say it through receive() rather
            # than let it escape (on trio, an error out of a system task crashes the whole run).
            if not self._closed:
                logger.exception("the Redis transport of %r failed", self._name)
                self._failure = exc
        finally:
            self._connection = None
            self._startup.set()
            self._wake()
            self._done.set()

    async def _maintain(self) -> None:
        """Connect, serve the connection until it is lost, and again, until the scope ends."""
        started = anyio.current_time()
        attempts = 0
        down_since: float | None = None
        telling: BaseException | None = None  # the last error that was not a timeout
        while True:
            attempts += 1
            if self._ever_connected:
                bound = self._connect_timeout
            else:
                bound = max(0.001, started + self._connect_timeout - anyio.current_time())
            error: BaseException
            try:
                await self._session(bound, attempts, down_since)
                error = RedisConnectionError("the connection ended")  # pragma: no cover
            except Exception as exc:
                error = exc
            if self._up:
                self._up = False
                attempts = 0
                down_since = anyio.current_time()
                report(
                    self._name,
                    BrokerDisconnected(error=_describe(error)),
                    self.stats,
                    self._on_status,
                )
            else:
                if telling is None or not isinstance(_leaf(error), TimeoutError):
                    telling = error  # "refused" says more than the cut-short last attempt
                # Each failed attempt at debug level; a warning now and then (after 8, 16, 32...
                # attempts) says why the broker is not coming back, without flooding the log.
                level = logging.DEBUG
                if self._ever_connected and attempts >= 8 and attempts & (attempts - 1) == 0:
                    level = logging.WARNING
                logger.log(
                    level,
                    "%s: connection attempt %d to Redis at %s failed: %s",
                    self._name,
                    attempts,
                    self._location,
                    _describe(error),
                )
                if not self._ever_connected and anyio.current_time() >= started + (
                    self._connect_timeout
                ):
                    self._startup_error = telling
                    self._startup.set()
                    return
            delay = self._backoff.delay(max(attempts, 1), self._rng)
            if not self._ever_connected:
                delay = min(delay, max(0.0, started + self._connect_timeout - anyio.current_time()))
            await anyio.sleep(delay)

    async def _session(self, bound: float, attempts: int, down_since: float | None) -> None:
        """One session: connect both connections and subscribe within ``bound`` seconds, then
        read and pull until a connection is lost (raising what ended it)."""
        connection = self._connection_factory()
        puller = self._connection_factory()
        try:
            async with anyio.create_task_group() as group:
                try:
                    deadline = anyio.current_time() + bound
                    with _within(bound, "connecting"):
                        await group.start(connection.run)
                        await group.start(puller.run)
                    async with contextlib.aclosing(connection.push_messages) as messages:
                        pending = {self._broadcast_channel}
                        connection.send_command(b"SUBSCRIBE", *sorted(pending))
                        with _within(max(0.0, deadline - anyio.current_time()), "subscribing"):
                            while pending:
                                self._on_push(await messages.__anext__(), pending)
                        self._connected(connection, attempts, down_since)
                        group.start_soon(self._keepalive, connection)
                        group.start_soon(self._pull, puller)
                        async for response in messages:
                            self._on_push(response, None)
                        raise RedisConnectionError("the connection ended")  # pragma: no cover
                finally:
                    if self._connection is connection:
                        self._connection = None
                    group.cancel_scope.cancel()
        finally:
            _close_streams(connection)
            _close_streams(puller)

    def _connected(
        self, connection: BaseConnection, attempts: int, down_since: float | None
    ) -> None:
        now = anyio.current_time()
        self._connection = connection
        self._up = True
        self._ever_connected = True
        downtime = 0.0 if down_since is None else now - down_since
        report(
            self._name,
            BrokerConnected(attempts=attempts, downtime=downtime),
            self.stats,
            self._on_status,
        )
        self._startup.set()

    async def _keepalive(self, connection: BaseConnection) -> None:
        """Ping the server now and then: a link that died silently (no FIN, no RST) is noticed
        when a ping goes unanswered, instead of never."""
        while True:
            await anyio.sleep(self._ping_interval)
            await connection.create_request(b"PING", decode=False, timeout=self._ping_interval)


def _connection_factory(
    url: str, connect_timeout: float
) -> tuple[Location, Callable[[], BaseConnection]]:
    """Parse ``url`` with coredis's own parser: where it points, and how to connect there."""
    if type(url) is not str or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, not {url!r}")
    timeout = _seconds("connect_timeout", connect_timeout)
    # The pool is only used to parse the URL (host, port, TLS, credentials, db) the way coredis
    # does; the transport runs its connections itself, one at a time.
    pool = ConnectionPool.from_url(url, connect_timeout=timeout, decode_responses=False)
    location = pool.location
    if location is None:
        raise ValueError(f"{url!r} names no Redis server")
    # The class goes with the location from_url made (TCP, or a unix socket).
    connection_class: Callable[..., BaseConnection] = pool.connection_class
    kwargs = pool.connection_kwargs

    def factory() -> BaseConnection:
        return connection_class(location, **kwargs)

    return location, factory
