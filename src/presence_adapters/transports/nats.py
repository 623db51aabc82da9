"""The NATS transport: a cluster over NATS core pub/sub, with nats-py (asyncio only).

.. code-block:: python

    transport = await NatsTransport.connect("nats://127.0.0.1:4222", name="web-1")
    async with open_node(transport) as presence:   # the node owns it and closes it
        ...

Addresses
=========

A cluster is a *namespace* under a *subject prefix*. Each member subscribes to two subjects::

    <prefix>.<namespace>.all          every broadcast of the namespace
    <prefix>.<namespace>.to.<name>    what is sent to this member

The namespace and the name go through :func:`~presence_adapters.transports.address_segment`
(``.``, ``*``, ``>``, whitespace and ``%`` become ``%XX``), so a name cannot split into several
tokens, become a wildcard or collide with another name, and clusters under one prefix never
hear each other. A member must not hear its own broadcasts: the connection is made with
``no_echo`` (the server does not deliver a connection's own messages back to it).

Order
=====

nats-py hands each subscription's messages to its own task, so two subscriptions lose the order
between them (a broadcast could overtake a direct message sent before it by the same member).
The transport stamps every message as the client parses it (in the order the server sent them),
collects what both subscriptions' tasks deliver, and releases it in stamp order as soon as
neither subscription holds an undelivered message (then no earlier message can still come).

Outages
=======

nats-py reconnects by itself (forever, with :class:`~presence_adapters.Backoff`
delays) and subscribes again. Meanwhile the node keeps serving its local presences: ``receive``
waits, and sends are dropped and counted (``stats.dropped_while_disconnected``) instead of being
buffered: the replication protocol repairs what was lost once the broker is back, and stale
heartbeats replayed after an outage would only be work. Every change is reported as a
:data:`~presence_adapters.BrokerEvent`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import attrs

try:
    import nats.errors
    from nats.aio.client import Client, Server
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "presence_adapters.transports.nats needs nats-py; install the 'nats' extra: "
        "pip install 'presence-core[nats]'"
    ) from _exc

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

__all__ = ["MAX_SUBJECT_LENGTH", "NatsStats", "NatsTransport"]

logger = logging.getLogger("presence_adapters.transports")

MAX_SUBJECT_LENGTH = 1024
"""The longest subject the transport uses, in characters. A member's direct subject must fit (a
NATS server refuses protocol lines over 4096 bytes by default, and closes the connection)."""

_ATTEMPT_TIMEOUT = 2.0
"""Seconds one connection attempt may take (nats-py's ``connect_timeout``), by default."""

_WRITE_TIMEOUT = 2.0
"""Seconds a publish waits for nats-py to write out its full buffer before going on."""

_LOG_INTERVAL = 10.0
"""Seconds between two warnings about dropped messages of the same kind."""

_RESERVED_OPTIONS = frozenset(
    {
        "servers",
        "name",
        "no_echo",
        "allow_reconnect",
        "max_reconnect_attempts",
        "reconnect_time_wait",
        "reconnect_to_server_handler",
        "error_cb",
        "disconnected_cb",
        "reconnected_cb",
        "closed_cb",
        "ping_interval",
        "max_outstanding_pings",
        "flush_timeout",
    }
)
"""nats-py connect options the transport sets itself (the others may be passed in ``options``)."""

_arrivals = itertools.count()


@dataclasses.dataclass
class _StampedMsg(Msg):
    """A message stamped in the order the client parsed it (across all subscriptions)."""

    arrival: int = dataclasses.field(default=0, init=False)

    def __post_init__(self) -> None:
        self.arrival = next(_arrivals)


class _Client(Client):
    """nats-py's client, building stamped messages."""

    msg_class = _StampedMsg


@attrs.define(kw_only=True)
class NatsStats(BrokerStats):
    """The counters of a :class:`NatsTransport` (they only grow): :class:`BrokerStats`, plus:

    Attributes:
        dropped_inbox_full: messages received but dropped because the node did not read them
            fast enough (its inbox was full, or nats-py reported a slow consumer).
        dropped_refused: messages nats-py refused to publish while connected (a server reconnected
            to has a smaller ``max_payload`` than the one the transport was connected with).
    """

    dropped_inbox_full: int = 0
    dropped_refused: int = 0


def _check_prefix(prefix: object) -> str:
    if type(prefix) is not str or not prefix:
        raise ValueError(f"subject_prefix must be a non-empty str, not {prefix!r}")
    for token in prefix.split("."):
        if not token or any(char in "*>" or char.isspace() for char in token):
            raise ValueError(
                f"subject_prefix must be a NATS subject without wildcards, empty tokens or "
                f"whitespace, not {prefix!r}"
            )
    return prefix


def _seconds(what: str, value: object) -> float:
    if not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


def _count(what: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be an int >= 1, not {value!r}")
    return value


class NatsTransport:
    """One member of a cluster on NATS (made by :meth:`connect`; see the module docs).

    Attributes:
        stats: the transport's counters.
        namespace: the cluster's namespace.
        broadcast_subject: the subject of the namespace's broadcasts.
        direct_subject: the subject of what is sent to this member.
    """

    requires_asyncio = True
    """The anyio driver refuses this transport on trio, since nats-py runs on asyncio only."""

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        subject_prefix: str,
        on_status: StatusCallback | None,
        backoff: Backoff,
        inbox_messages: int,
        inbox_bytes: int,
        close_timeout: float,
        rng: random.Random,
    ) -> None:
        self._name = name
        self.namespace = namespace
        self._prefix = f"{subject_prefix}.{address_segment(namespace)}"
        self.broadcast_subject = f"{self._prefix}.all"
        self.direct_subject = self.subject_for(name)
        if len(self.direct_subject) > MAX_SUBJECT_LENGTH:
            raise ValueError(
                f"the name {name!r} and namespace {namespace!r} make a subject longer than "
                f"{MAX_SUBJECT_LENGTH} characters"
            )
        self.stats = NatsStats()
        self._on_status = on_status
        self._backoff = backoff
        self._rng = rng
        self._max_inbox_messages = inbox_messages
        self._max_inbox_bytes = inbox_bytes
        self._close_timeout = close_timeout
        self._client = _Client()
        self._subscriptions: list[Subscription] = []
        self._max_payload = 0
        # Delivered by the subscriptions' tasks, waiting for the order to be known: (stamp, data).
        self._arrived: list[tuple[int, bytes]] = []
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: TransportError | None = None
        self._connected = False
        self._failed_first = 0
        self._first_deadline = math.inf
        self._attempts = 0
        self._down_since = 0.0
        self._last_error: BaseException | None = None
        self._closing = False
        self._shutdown: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._warned_at: dict[str, float] = {}

    def __repr__(self) -> str:
        if self._error is not None:
            state = "closed"
        else:
            state = "connected" if self._connected else "disconnected"
        return f"<NatsTransport {self.namespace}/{self._name} {state} inbox={len(self._inbox)}>"

    # ------------------------------------------------------------------ connecting

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        name: str,
        namespace: str = "presence",
        subject_prefix: str = "presence",
        on_status: StatusCallback | None = None,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
        inbox_messages: int = 10_000,
        inbox_bytes: int = 64 * 1024 * 1024,
        ping_interval: float = 5.0,
        close_timeout: float = 1.0,
        options: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
    ) -> NatsTransport:
        """Connect to NATS and subscribe, as the member ``name`` of the cluster ``namespace``.

        When it returns, the transport is connected and subscribed: it receives everything sent
        to it from then on. The node it is given to owns it (and closes it).

        Args:
            servers: the server URL, or several (nats-py picks one, and moves to another when
                the connection is lost).
            name: this member's name (the node's name).
            namespace: the cluster: members of different namespaces never hear each other.
            subject_prefix: the first tokens of every subject (``a`` or ``a.b``; no wildcards).
                Clusters whose prefixes differ are isolated as long as neither prefix is a
                prefix of the other made of whole tokens.
            on_status: called with every :data:`~presence_adapters.BrokerEvent`
                (synchronously, from nats-py's task; an exception it raises is logged).
            connect_timeout: the most seconds the first connection may take, attempts included.
            backoff: the delays between reconnection attempts (default: ``Backoff()``, 50 ms
                growing to 2 s, with full jitter).
            inbox_messages: the most messages received and not yet read (by ``receive``)
                before further ones are dropped, and counted in ``stats.dropped_inbox_full``.
            inbox_bytes: the same, in bytes (one message always fits).
            ping_interval: seconds between two pings to the server; a connection that answers
                none of two is taken for lost (a silent network failure is noticed after about
                three intervals).
            close_timeout: the most seconds :meth:`aclose` waits for the server to confirm that
                it got everything sent.
            options: more keyword arguments for nats-py's ``connect`` (``tls``, ``user``,
                ``password``, ``token``, ``user_credentials``, ``pending_size``; nats-py's
                ``connect_timeout`` there bounds each attempt), except those the transport sets
                itself (callbacks, ``no_echo``, reconnection, pings).
            rng: the randomness of the reconnection delays.

        Raises:
            ValueError: an argument is invalid (a name that is not a non-empty str, a prefix with
                wildcards, a reserved option...).
            TransportError: the first connection, or the subscriptions, could not be made
                within ``connect_timeout`` (saying why).
        """
        for what, value in (("name", name), ("namespace", namespace)):
            if type(value) is not str or not value:
                raise ValueError(f"{what} must be a non-empty str, not {value!r}")
        prefix = _check_prefix(subject_prefix)
        connect_timeout = _seconds("connect_timeout", connect_timeout)
        ping_interval = _seconds("ping_interval", ping_interval)
        close_timeout = _seconds("close_timeout", close_timeout)
        inbox_messages = _count("inbox_messages", inbox_messages)
        inbox_bytes = _count("inbox_bytes", inbox_bytes)
        extra = dict(options or {})
        reserved = sorted(_RESERVED_OPTIONS & set(extra))
        if reserved:
            raise ValueError(f"the NATS transport sets these options itself: {reserved}")
        if isinstance(servers, str):
            server_list: str | list[str] = servers
        else:
            server_list = list(servers)
            if not server_list or not all(isinstance(url, str) for url in server_list):
                raise ValueError(f"servers must be a URL or a non-empty list of URLs: {servers!r}")
        self = cls(
            name=name,
            namespace=namespace,
            subject_prefix=prefix,
            on_status=on_status,
            backoff=backoff if backoff is not None else Backoff(),
            inbox_messages=inbox_messages,
            inbox_bytes=inbox_bytes,
            close_timeout=close_timeout,
            rng=rng if rng is not None else random.Random(),
        )
        await self._start(server_list, connect_timeout, ping_interval, extra)
        return self

    async def _start(
        self,
        servers: str | list[str],
        connect_timeout: float,
        ping_interval: float,
        extra: dict[str, Any],
    ) -> None:
        options: dict[str, Any] = {
            "connect_timeout": min(_ATTEMPT_TIMEOUT, connect_timeout),  # per attempt
            "pending_size": 2 * 1024 * 1024,
            **extra,
            "servers": servers,
            "name": f"presence {self.namespace}/{self._name}",
            "no_echo": True,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # forever: the node keeps serving meanwhile
            # Paces the first connection's attempts (nats-py's own loop; connect_timeout bounds
            # it), and bounds how long closing waits for a reconnection attempt to stop.
            "reconnect_time_wait": min(self._backoff.maximum, 0.5),
            "reconnect_to_server_handler": self._next_server,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
            "ping_interval": ping_interval,
            "max_outstanding_pings": 2,
            # How long a publish waits when nats-py's write buffer is full (back-pressure).
            "flush_timeout": _WRITE_TIMEOUT,
        }
        where = servers if isinstance(servers, str) else ", ".join(servers)
        self._first_deadline = asyncio.get_running_loop().time() + connect_timeout
        try:
            await asyncio.wait_for(self._connect_and_subscribe(options), connect_timeout)
        except BaseException as exc:
            self._closing = True
            self._fail(TransportClosed(f"{self._name!r} could not connect"))
            await _run_to_completion(self._close_client())
            if isinstance(exc, (asyncio.TimeoutError, nats.errors.Error, OSError)):
                why = self._last_error if isinstance(exc, asyncio.TimeoutError) else exc
                raise TransportError(
                    f"{self._name!r} could not connect to NATS at {where} within "
                    f"{connect_timeout:g} s: {why or 'no answer'}"
                ) from exc
            raise
        self._connected = True
        self._last_error = None
        event = BrokerConnected(attempts=self._failed_first + 1, downtime=0.0)
        report(self._name, event, self.stats, self._on_status)

    async def _connect_and_subscribe(self, options: dict[str, Any]) -> None:
        client = self._client
        await client.connect(**options)
        self._max_payload = client.max_payload
        # One message of max_payload bytes always fits (nats-py drops a message that reaches
        # the limit); the transport's own inbox enforces inbox_bytes.
        limit = max(self._max_inbox_bytes, self._max_payload + 1)
        for subject in (self.broadcast_subject, self.direct_subject):
            subscription = await client.subscribe(
                subject,
                cb=self._on_message,
                pending_msgs_limit=self._max_inbox_messages,
                pending_bytes_limit=limit,
            )
            self._subscriptions.append(subscription)
        # The server has the subscriptions once it answers a ping sent after them.
        await _round_trip(client)

    # ------------------------------------------------------------------ the Transport protocol

    @property
    def name(self) -> str:
        """This member's name (the node's name)."""
        return self._name

    @property
    def max_payload(self) -> int:
        """The server's ``max_payload`` when the transport connected (1 MiB by default)."""
        return self._max_payload

    @property
    def connected(self) -> bool:
        """True while the connection to the server is up."""
        return self._connected and self._error is None

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called (or the connection was closed for good)."""
        return self._error is not None

    def subject_for(self, name: str) -> str:
        """The subject of what is sent to the member ``name`` of this namespace.

        Raises:
            ValueError: ``name`` is not a non-empty str of valid Unicode.
        """
        return f"{self._prefix}.to.{address_segment(name)}"

    async def broadcast(self, data: bytes) -> None:
        """Publish ``data`` to the other members of the namespace (dropped and counted while
        disconnected).

        Raises:
            PayloadTooLarge: ``len(data) > max_payload``; nothing was sent.
            TransportClosed: the transport is closed.
            TransportError: the connection was closed for good.
        """
        data = self._check(data)
        await self._publish(self.broadcast_subject, data)

    async def send(self, to: str, data: bytes) -> None:
        """Publish ``data`` to the member ``to`` (dropped silently if nobody holds that name;
        dropped and counted while disconnected).

        Raises:
            PayloadTooLarge: ``len(data) > max_payload``; nothing was sent.
            TransportClosed: the transport is closed.
            TransportError: the connection was closed for good.
        """
        if type(to) is not str:
            raise TypeError(f"to must be a str, not {type(to).__name__}")
        data = self._check(data)
        try:
            subject = self.subject_for(to)
        except ValueError:
            subject = ""
        if not subject or len(subject) > MAX_SUBJECT_LENGTH:
            # Nobody can hold that name (connect refuses it): dropped, as on any pub/sub bus.
            await asyncio.sleep(0)
            return
        await self._publish(subject, data)

    async def receive(self) -> bytes:
        """The next message for this member: a broadcast of another member, or one sent to it.
        Waits across outages.

        Raises:
            TransportClosed: the transport was closed.
            TransportError: the connection was closed for good (nats-py gave up on it).
        """
        while True:
            error = self._error
            if error is not None:
                raise type(error)(str(error))  # a fresh one each time: no traceback pile-up
            if self._inbox:
                data = self._inbox.popleft()
                self._inbox_bytes -= len(data)
                return data
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def aclose(self) -> None:
        """Leave the cluster: stop receiving, wait (at most ``close_timeout``) until the server
        has everything sent, and close the connection. Idempotent; a ``receive`` waiting is
        woken with :exc:`~presence_adapters.TransportClosed`.

        Cancelled, it skips the wait but still closes the connection before it returns.
        """
        if self._shutdown is None:
            self._closing = True
            self._fail(TransportClosed(f"{self._name!r} is closed"))
            self._shutdown = asyncio.get_running_loop().create_task(
                self._shut_down(), name=f"closing the NATS transport {self._name!r}"
            )
        await _run_to_completion(self._shutdown, on_cancel=self._skip_flush)

    # ------------------------------------------------------------------ sending

    def _check(self, data: bytes) -> bytes:
        error = self._error
        if error is not None:
            raise type(error)(str(error))
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) > self._max_payload:
            raise PayloadTooLarge(len(data), self._max_payload)
        return data

    async def _publish(self, subject: str, data: bytes) -> None:
        client = self._client
        if not client.is_connected:
            self._dropped_while_disconnected()
            await asyncio.sleep(0)
            return
        try:
            await client.publish(subject, data)
        except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError):
            # The connection went down during the call, and nats-py's buffer is full.
            self._dropped_while_disconnected()
            return
        except nats.errors.MaxPayloadError:
            self.stats.dropped_refused += 1
            self._warn(
                "refused",
                "%s: a message of %d bytes is over the max_payload of the server reconnected to",
                self._name,
                len(data),
            )
            return
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            error = self._error
            if error is not None:
                raise type(error)(str(error)) from None
            raise TransportError(f"{self._name!r}: the NATS connection is closed") from None
        self.stats.sent += 1

    def _dropped_while_disconnected(self) -> None:
        self.stats.dropped_while_disconnected += 1
        self._warn(
            "disconnected",
            "%s: not connected to NATS, dropping what it sends (%d dropped so far)",
            self._name,
            self.stats.dropped_while_disconnected,
        )

    # ------------------------------------------------------------------ receiving

    async def _on_message(self, msg: Msg) -> None:
        """Both subscriptions' callback, on their own tasks: put ``msg`` in order."""
        if self._error is not None:
            return
        arrival = msg.arrival if isinstance(msg, _StampedMsg) else next(_arrivals)
        heapq.heappush(self._arrived, (arrival, msg.data))
        # A message still queued in a subscription may be older than the ones collected here:
        # wait for its task to deliver it. Once every queue is empty, everything the client has
        # parsed so far is here, and what it parses later is newer.
        if len(self._arrived) <= self._max_inbox_messages and any(
            subscription.pending_msgs for subscription in self._subscriptions
        ):
            return
        arrived = self._arrived
        while arrived:
            self._accept(heapq.heappop(arrived)[1])

    def _accept(self, data: bytes) -> None:
        inbox = self._inbox
        if inbox and (
            len(inbox) >= self._max_inbox_messages
            or self._inbox_bytes + len(data) > self._max_inbox_bytes
        ):
            self.stats.dropped_inbox_full += 1
            self._warn_slow_consumer()
            return
        inbox.append(data)
        self._inbox_bytes += len(data)
        self.stats.received += 1
        self._wake()

    def _warn_slow_consumer(self) -> None:
        self._warn(
            "slow",
            "%s reads too slowly: dropping received messages (%d dropped so far)",
            self._name,
            self.stats.dropped_inbox_full,
        )

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: TransportError) -> None:
        if self._error is None or isinstance(error, TransportClosed):
            self._error = error
        self._arrived.clear()
        self._inbox.clear()
        self._inbox_bytes = 0
        self._wake()

    # ------------------------------------------------------------------ nats-py's callbacks

    def _next_server(self, servers: list[Server], _info: dict[str, Any]) -> tuple[Server, float]:
        """Which server the next reconnection attempt goes to, and after what delay."""
        if self._closing:
            # A reconnection going on after aclose (see _close_client): cancel it again, where
            # nats-py handles it (in the delay's sleep).
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
            return servers[0], 1.0
        self._attempts += 1
        server = servers[(self._attempts - 1) % len(servers)]
        return server, self._backoff.delay(self._attempts, self._rng)

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            self.stats.dropped_inbox_full += 1
            self._warn_slow_consumer()
            return
        self._last_error = error
        if self._closing:
            return
        if not self._connected:
            if self.stats.connects == 0:
                self._failed_first += 1
                if asyncio.get_running_loop().time() >= self._first_deadline:
                    # The first connection's time is up, and its cancellation was lost (see
                    # _close_client): cancel it again, from the task making the attempts.
                    task = asyncio.current_task()
                    if task is not None:
                        task.cancel()
            logger.debug("%s: NATS connection attempt failed: %r", self._name, error)
        elif isinstance(error, (OSError, asyncio.TimeoutError, nats.errors.StaleConnectionError)):
            # The connection is lost: BrokerDisconnected follows, and says so.
            logger.debug("%s: NATS connection error: %r", self._name, error)
        else:
            logger.warning("%s: NATS error: %s", self._name, error)

    async def _on_disconnected(self) -> None:
        if self._closing or not self._connected:
            return
        self._connected = False
        self._attempts = 0
        self._down_since = time.monotonic()
        error = self._last_error
        reason = str(error) if error is not None and str(error) else "the connection was lost"
        report(self._name, BrokerDisconnected(error=reason), self.stats, self._on_status)

    async def _on_reconnected(self) -> None:
        if self._closing:
            return
        self._connected = True
        self._last_error = None
        downtime = time.monotonic() - self._down_since
        event = BrokerConnected(attempts=max(1, self._attempts), downtime=downtime)
        self._attempts = 0
        report(self._name, event, self.stats, self._on_status)

    async def _on_closed(self) -> None:
        if self._closing:
            return
        # nats-py gave up on the connection (the server refused us for good, say).
        self._connected = False
        error = self._last_error
        self._fail(
            TransportError(
                f"{self._name!r}: the NATS connection was closed"
                + (f": {error}" if error is not None else "")
            )
        )

    # ------------------------------------------------------------------ closing

    async def _shut_down(self) -> None:
        client = self._client
        if client.is_connected:
            # Wait until the server has handled what was sent, the node's goodbye above all: a
            # socket closed right after the write can be reset, and what it carried lost.
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.wait([self._flushing])
        await self._close_client()

    async def _flush(self) -> None:
        try:
            await asyncio.wait_for(_round_trip(self._client), self._close_timeout)
        except (asyncio.TimeoutError, nats.errors.Error, OSError) as exc:
            logger.debug("%s: NATS flush while closing failed: %r", self._name, exc)

    def _skip_flush(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()

    async def _close_client(self) -> None:
        self._connected = False
        client = self._client
        for _ in range(3):
            try:
                await client.close()
            except Exception as exc:  # closing must not fail the node's shutdown
                logger.warning("%s: closing the NATS connection failed: %r", self._name, exc)
            # nats-py cancels its reconnection task, but before Python 3.12 a cancellation that
            # meets a connection attempt just ending is lost (asyncio.wait_for returns the
            # attempt's outcome instead), and the task carries on: wait until it ends (its next
            # attempt cancels itself, see _next_server), and close again if it connected.
            task: asyncio.Task[None] | None = getattr(client, "_reconnection_task", None)
            if task is None or task.done():
                return
            task.cancel()
            await asyncio.wait([task], timeout=_ATTEMPT_TIMEOUT + 1.0)
            if client.is_closed:
                return

    # ------------------------------------------------------------------ logging

    def _warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._warned_at.get(kind)
        if last is None or now - last >= _LOG_INTERVAL:
            self._warned_at[kind] = now
            logger.warning(message, *args)


async def _round_trip(client: Client) -> None:
    """Return once the server has handled everything ``client`` sent before the call.

    ``client.flush()`` alone does not say so: nats-py writes its PING straight to the socket,
    ahead of the commands still in its write buffer (subscriptions, publishes), so the first PONG
    can come back before the server saw them. The client's flusher task writes that buffer while
    the PING travels, so the PONG of a second PING, written after it, does.
    """
    await client.flush()
    await client.flush()


async def _run_to_completion(
    work: Coroutine[Any, Any, None] | asyncio.Task[None],
    on_cancel: Callable[[], None] | None = None,
) -> None:
    """Run ``work`` to its end even if we are cancelled meanwhile (``on_cancel()`` is called
    then, to hurry it along), so that nothing is left running; then re-raise the cancellation.
    """
    task = work if isinstance(work, asyncio.Task) else asyncio.get_running_loop().create_task(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
            if on_cancel is not None:
                on_cancel()
    if cancelled:
        raise asyncio.CancelledError
    task.result()
