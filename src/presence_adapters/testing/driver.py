"""The driver conformance suite: what every driver's ``open_node`` must do.

Give the suite a driver's ``open_node`` (:data:`NodeOpener`) and run it on the event loop that
driver supports::

    from presence_adapters.drivers.anyio import open_node
    from presence_adapters.testing import check_driver

    anyio.run(check_driver, open_node, backend="trio")

Each check builds its own :class:`~presence_adapters.MemoryHub`, opens the nodes it needs with
liveness periods of tenths of a second (:data:`FAST`) or with a down period no check outlives
(:data:`CALM`: any departure a peer sees was announced), and raises :class:`AssertionError`
saying what went wrong. Every wait is bounded by a deadline; none sleeps for a fixed time and
hopes. Every check also fails if it leaves behind a running task (listed on asyncio and trio), a
warning (an unclosed stream's :class:`ResourceWarning` among them) or an unraisable exception, or
a transport still connected to its hub.

The authentication checks open nodes with a ``keyring``: a cluster sealed with one keyring
converges, a node with another secret (or none) is refused, every refusal counted and none
applied, and keys rotate at runtime in two rolls (:meth:`Presence.set_keyring
<presence_adapters.Presence.set_keyring>`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import anyio
import anyio.lowlevel

from presence_adapters._errors import NodeClosed, SubscriptionOverflow, TransportError
from presence_adapters.presence import FetchHook, Presence, ReplicaEvent, Subscription
from presence_adapters.transports._base import Transport
from presence_adapters.transports.memory import MemoryHub
from presence_core import (
    JSONValue,
    Key,
    Keyring,
    LocalProtocolError,
    PresenceMap,
    RejectReason,
    ReplicaDown,
    ReplicaPermdown,
    ReplicaStatus,
    ReplicaUp,
    TrackerConfig,
)

from ._support import (
    DEADLINE,
    DelegatingTransport,
    LeakWatch,
    failing_after,
    run_checks,
    wait_until,
)

__all__ = [
    "CALM",
    "DRIVER_CHECKS",
    "FAST",
    "DriverCheck",
    "NodeOpener",
    "check_a_swallowed_cancellation_still_stops_the_node",
    "check_abandoned_node_goes_down_then_permdown",
    "check_body_exception_propagates",
    "check_cancellation_at_any_point",
    "check_cancelled_node_leaves_gracefully",
    "check_closed_node",
    "check_connection_scopes",
    "check_default_name_and_incarnation",
    "check_down_then_permdown",
    "check_driver",
    "check_fetch_hook",
    "check_graceful_shutdown",
    "check_junk_flood_does_not_starve_the_timer",
    "check_keys_rotate_at_runtime",
    "check_leaving_node_refuses_commands",
    "check_malformed_messages_are_counted",
    "check_nodes_with_another_key_are_refused",
    "check_sealed_nodes_converge",
    "check_shutdown_is_bounded",
    "check_slow_subscriber",
    "check_three_nodes_converge",
    "check_transport_failure_surfaces",
    "check_two_nodes_converge",
]

T = TypeVar("T")


class NodeOpener(Protocol):
    """A driver's ``open_node``: ``async with open_node(transport, config=...) as presence``."""

    def __call__(
        self,
        transport: Transport | None = None,
        *,
        name: str | None = None,
        vsn: int | None = None,
        config: TrackerConfig | None = None,
        fetch: FetchHook | None = None,
        rng: random.Random | None = None,
        shutdown_timeout: float = ...,
        keyring: Keyring | None = None,
    ) -> AbstractAsyncContextManager[Presence]: ...


DriverCheck = Callable[[NodeOpener], Coroutine[Any, Any, None]]
"""One check of the suite: ``await check(open_node)`` raises :class:`AssertionError` on failure."""

FAST = TrackerConfig(
    broadcast_period=0.02, max_silent_periods=2, down_period=0.15, permdown_period=1.0
)
"""Liveness in tenths of a second: a silent node is down after 0.15 s and gone after 1 s. Idle
heartbeats go out every 0.06 s, so a busy test machine does not see a false down."""

CALM = TrackerConfig(
    broadcast_period=0.02, max_silent_periods=2, down_period=30.0, permdown_period=60.0
)
"""No node is marked down within a check's deadline: every departure a peer sees was announced."""

FLOOD_CONFIG = TrackerConfig(
    broadcast_period=0.02, max_silent_periods=2, down_period=0.2, permdown_period=5.0
)
"""The junk-flood check's liveness: a node starved for longer than 0.2 s is seen down."""

FLOOD_SPAN = 0.6
"""Seconds the junk flood lasts: three down periods of :data:`FLOOD_CONFIG`."""

SHORT_SHUTDOWN = 0.1
"""The ``shutdown_timeout`` of :func:`check_shutdown_is_bounded`, in seconds."""

CANCEL_POINTS = 12
"""How many different moments :func:`check_cancellation_at_any_point` cancels a node at."""

JUNK: tuple[bytes, ...] = (
    b"",
    b"junk",
    b"\xff\xfe\x00",
    b"{}",
    b"[]",
    b"null",
    b'{"v": 1}',
    b'{"v": 999, "type": "heartbeat"}',
    b'{"v": 1, "type": "heartbeat", "sender": ',
)
"""Messages no correct replica sends."""

KEY_1 = Key("key-1", bytes(range(32)))
KEY_2 = Key("key-2", bytes(range(32, 64)))
OTHER_KEY_1 = Key("key-1", bytes(range(64, 96)))
"""The keys of the authentication checks; the last one has the first one's id, another secret."""


class _BodyError(Exception):
    """Raised by a check inside an ``async with`` to see what comes out."""


class _BrokenPipe(OSError):
    """The error a check makes a transport fail with, as a broken socket would."""


# ---------------------------------------------------------------------- helpers


def _driver_check(check: DriverCheck) -> DriverCheck:
    """Run ``check`` under a :class:`LeakWatch`: it fails if anything is left behind."""

    @functools.wraps(check)
    async def guarded(open_node: NodeOpener) -> None:
        with LeakWatch() as watch:
            await check(open_node)
        watch.check(check.__name__)

    return guarded


@contextlib.asynccontextmanager
async def _cluster(
    open_node: NodeOpener,
    hub: MemoryHub,
    names: Sequence[str],
    config: TrackerConfig = FAST,
    keyring: Keyring | None = None,
) -> AsyncIterator[list[Presence]]:
    """Open one node per name on ``hub``; wait until all see each other up; close them on exit
    and check that every transport left the hub."""
    async with contextlib.AsyncExitStack() as stack:
        options: dict[str, Any] = {} if keyring is None else {"keyring": keyring}
        nodes = [
            await stack.enter_async_context(open_node(hub.connect(name), config=config, **options))
            for name in names
        ]
        await _all_up(nodes)
        yield nodes
    _all_closed(hub)


def _as_any(value: object) -> Any:
    """``value``, typed as anything: to pass a wrong type on purpose."""
    return value


def _all_closed(hub: MemoryHub) -> None:
    left = hub.members()
    if left:
        raise AssertionError(f"transports still connected after their nodes stopped: {left}")


async def _all_up(nodes: Sequence[Presence]) -> None:
    def all_up() -> bool:
        for node in nodes:
            replicas = node.replicas()
            for other in nodes:
                if other is node:
                    continue
                info = replicas.get(other.name)
                if info is None or info.status is not ReplicaStatus.UP:
                    return False
        return True

    await wait_until(all_up, f"the nodes {[node.name for node in nodes]} see each other up")


def _metas(node: Presence, topic: str, key: str) -> list[dict[str, JSONValue]]:
    """The metas of ``key`` in ``topic`` without the refs the tracker added."""
    return [
        {name: value for name, value in meta.items() if not name.startswith("phx_ref")}
        for meta in node.get_by_key(topic, key)["metas"]
    ]


async def _converge(nodes: Sequence[Presence], topic: str, keys: Sequence[str]) -> None:
    """Wait until every node lists exactly ``keys`` in ``topic``, with the same metas."""
    wanted = sorted(keys)

    def converged() -> bool:
        first = nodes[0].list(topic)
        return sorted(first) == wanted and all(node.list(topic) == first for node in nodes[1:])

    try:
        await wait_until(converged, f"{[n.name for n in nodes]} all list {wanted} in {topic!r}")
    except AssertionError as exc:
        seen = {node.name: sorted(node.list(topic)) for node in nodes}
        raise AssertionError(f"{exc}; they list {seen}") from None


async def _has(node: Presence, topic: str, key: str) -> None:
    await wait_until(lambda: key in node.list(topic), f"{node.name} lists {key!r} in {topic!r}")


async def _next(subscription: Subscription[T], what: str) -> T:
    """The subscription's next item, within the deadline."""
    with anyio.move_on_after(DEADLINE):
        try:
            return await subscription.__anext__()
        except StopAsyncIteration:
            raise AssertionError(f"the subscription ended while waiting for {what}") from None
    raise AssertionError(f"timed out after {DEADLINE:g} s waiting for {what}")


async def _next_about(events: Subscription[ReplicaEvent], name: str, what: str) -> ReplicaEvent:
    """The next replica event about the replica ``name`` (others are skipped)."""
    with failing_after(DEADLINE, f"waiting for {what}"):
        while True:
            event = await _next(events, what)
            if event.replica.name == name:
                return event
    raise AssertionError("unreachable")  # pragma: no cover - failing_after raised


async def _departure(events: Subscription[ReplicaEvent], name: str) -> ReplicaEvent:
    """The first event about ``name`` that is not a ReplicaUp."""
    while True:
        event = await _next_about(events, name, f"{name!r} leaving")
        if not isinstance(event, ReplicaUp):
            return event


async def _expect_announced_departure(
    events: Subscription[ReplicaEvent], node: Presence, how: str
) -> None:
    """The peer whose ``events`` these are sees ``node`` permanently down (run with :data:`CALM`:
    only an announced departure is seen within the deadline; as in Phoenix, the announcement
    reads as ReplicaDown and ReplicaPermdown at once)."""
    try:
        with failing_after(DEADLINE, f"{node.name!r} to be permanently down"):
            while not isinstance(
                event := await _next_about(events, node.name, f"{node.name!r} leaving"),
                ReplicaPermdown,
            ):
                pass
    except AssertionError as exc:
        raise AssertionError(
            f"a node that {how} must announce its departure, so that its peers drop it at once: "
            f"{exc}"
        ) from None
    if event.replica != node.replica:
        raise AssertionError(f"the departure must be the node's own incarnation, not {event!r}")


async def _buffered(subscription: Subscription[T]) -> list[T]:
    """Close ``subscription`` and return what it had buffered."""
    subscription.close()
    with failing_after(DEADLINE, "reading what a closed subscription buffered"):
        return [item async for item in subscription]
    raise AssertionError("unreachable")  # pragma: no cover - failing_after raised


class _HangingTransport(DelegatingTransport):
    """A transport wrapper that can hang: its sends (and, separately, its ``aclose``) then wait
    until :meth:`release` (forever, if nobody calls it), as a broker that stopped answering."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.hang_sends = False
        self.hang_close = False
        self._released = anyio.Event()

    def release(self) -> None:
        self._released.set()

    async def broadcast(self, data: bytes) -> None:
        if self.hang_sends:
            await self._released.wait()
        await self.inner.broadcast(data)

    async def send(self, to: str, data: bytes) -> None:
        if self.hang_sends:
            await self._released.wait()
        await self.inner.send(to, data)

    async def aclose(self) -> None:
        if self.hang_close:
            await self._released.wait()
        await self.inner.aclose()


class _SwallowingTransport(DelegatingTransport):
    """A transport wrapper whose next broadcast, once armed, waits and swallows the cancellation
    that ends the wait, then carries on: what nats-py's publish does while its buffer flushes."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.armed = False
        self.entered = anyio.Event()
        self.swallowed = 0

    async def broadcast(self, data: bytes) -> None:
        if self.armed:
            self.armed = False
            self.entered.set()
            try:
                await anyio.sleep(2 * DEADLINE)
            except anyio.get_cancelled_exc_class():
                self.swallowed += 1  # and carry on, as if nothing had happened
        await self.inner.broadcast(data)


class _JunkFirehose(DelegatingTransport):
    """A transport wrapper that, while a flood is on, returns junk from ``receive`` at once and
    without yielding, as a broker transport with a full socket buffer does."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.flood_until = -math.inf
        self.served = 0

    async def receive(self) -> bytes:
        if anyio.current_time() < self.flood_until:
            self.served += 1
            return b"junk addressed to one node"
        return await self.inner.receive()


# ---------------------------------------------------------------------- convergence


@_driver_check
async def check_two_nodes_converge(open_node: NodeOpener) -> None:
    """Two nodes on the memory bus see each other's tracks, updates and untracks."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"]) as (a, b):
        a.track("conn-a", "room", "alice", {"status": "online"})
        b.track("conn-b", "room", "bob", {"status": "away"})
        await _converge([a, b], "room", ["alice", "bob"])
        a.update("conn-a", "room", "alice", {"status": "busy"})
        await wait_until(
            lambda: _metas(b, "room", "alice") == [{"status": "busy"}], "b sees alice's update"
        )
        a.untrack("conn-a", "room", "alice")
        b.untrack_conn("conn-b")
        await _converge([a, b], "room", [])


@_driver_check
async def check_three_nodes_converge(open_node: NodeOpener) -> None:
    """Three nodes converge, a node joining late receives the existing state, and a node that
    leaves takes its presences with it."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"]) as (a, b):
        a.track("conn-a", "room", "alice", {})
        b.track("conn-b", "room", "bob", {})
        await _converge([a, b], "room", ["alice", "bob"])
        async with open_node(hub.connect("c"), config=FAST) as c:
            await _all_up([a, b, c])
            await _converge([a, b, c], "room", ["alice", "bob"])
            c.track("conn-c", "room", "carol", {})
            c.track("conn-c", "lobby", "carol", {})
            await _converge([a, b, c], "room", ["alice", "bob", "carol"])
            await _converge([a, b, c], "lobby", ["carol"])
        await _converge([a, b], "room", ["alice", "bob"])
        await _converge([a, b], "lobby", [])


# ---------------------------------------------------------------------- authentication


def _rejected(node: Presence, reason: RejectReason) -> int:
    """How many messages ``node`` refused for ``reason``, checking that its pump and its tracker
    agree (the pump counts the tracker's events, so they must)."""
    counted = node.stats.rejected_by_reason.get(reason, 0)
    tracked = node.tracker_stats().rejected.get(reason, 0)
    if counted != tracked:
        raise AssertionError(
            f"{node.name}'s pump counted {counted} {reason.value} rejections, its tracker "
            f"{tracked}: every MessageRejected event must reach the pump's stats"
        )
    return counted


def _abnormal(node: Presence) -> dict[str, int]:
    """What ``node`` refused for reasons an honest cluster never gives, by reason."""
    return {
        reason.value: count
        for reason, count in node.stats.rejected_by_reason.items()
        if not reason.normal
    }


def _nothing_refused(nodes: Sequence[Presence]) -> None:
    """No node refused a message for a reason an honest cluster never gives (a transfer request
    that overtook its sender's first heartbeat, say, is normal), nor dropped one as malformed."""
    for node in nodes:
        if _abnormal(node) or node.stats.malformed:
            raise AssertionError(
                f"{node.name} refused messages ({_abnormal(node)}) and dropped "
                f"{node.stats.malformed} malformed ones, in a cluster whose nodes all hold the "
                "same keys"
            )


@_driver_check
async def check_sealed_nodes_converge(open_node: NodeOpener) -> None:
    """Nodes opened with the same keyring replicate as unsealed ones do, and refuse nothing."""
    hub = MemoryHub()
    keyring = Keyring(KEY_1)
    async with _cluster(open_node, hub, ["a", "b"], keyring=keyring) as (a, b):
        if a.keyring != keyring or b.keyring != keyring:
            raise AssertionError(f"open_node(keyring=...) must reach the tracker: {a.keyring!r}")
        a.track("conn-a", "room", "alice", {"status": "online"})
        b.track("conn-b", "room", "bob", {"status": "away"})
        await _converge([a, b], "room", ["alice", "bob"])
        async with open_node(hub.connect("c"), config=FAST, keyring=keyring) as c:
            await _all_up([a, b, c])
            await _converge([a, b, c], "room", ["alice", "bob"])  # a transfer, sealed
            c.track("conn-c", "room", "carol", {})
            await _converge([a, b, c], "room", ["alice", "bob", "carol"])
            _nothing_refused([a, b, c])
        await _converge([a, b], "room", ["alice", "bob"])
        _nothing_refused([a, b])


@_driver_check
async def check_nodes_with_another_key_are_refused(open_node: NodeOpener) -> None:
    """A node sealing with another secret (under the same key id), or not at all, is refused by
    a sealed cluster: none of its messages is applied (its presences and the node itself stay
    unknown), and every refusal is counted, as ``unauthenticated``. The unsealed node drops the
    sealed messages as malformed; the cluster carries on."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"], keyring=Keyring(KEY_1)) as (a, b):
        a.track("conn-a", "room", "alice", {})
        await _converge([a, b], "room", ["alice"])
        async with (
            open_node(hub.connect("forger"), config=FAST, keyring=Keyring(OTHER_KEY_1)) as forger,
            open_node(hub.connect("plain"), config=FAST) as plain,
        ):
            forger.track("conn-f", "room", "mallory", {})
            plain.track("conn-p", "room", "eve", {})
            # Each outsider broadcasts every few periods: several of each are refused.
            await wait_until(
                lambda: min(_rejected(n, RejectReason.UNAUTHENTICATED) for n in (a, b)) >= 6,
                "a and b refuse the outsiders' messages",
            )
            await wait_until(lambda: plain.stats.malformed >= 2, "plain drops sealed messages")
            for node in (a, b):
                peers = {"a", "b"} - {node.name}
                if sorted(node.list("room")) != ["alice"] or set(node.replicas()) != peers:
                    raise AssertionError(
                        f"{node.name} applied a refused message: it lists "
                        f"{sorted(node.list('room'))} and knows {sorted(node.replicas())}"
                    )
                if set(_abnormal(node)) != {RejectReason.UNAUTHENTICATED.value}:
                    raise AssertionError(
                        f"{node.name} refused messages for other reasons too: {_abnormal(node)}"
                    )
            if sorted(forger.list("room")) != ["mallory"]:
                raise AssertionError(
                    f"the forger applied the cluster's messages: {forger.list('room')}"
                )
            b.track("conn-b", "room", "bob", {})
            await _converge([a, b], "room", ["alice", "bob"])  # the cluster carries on


@_driver_check
async def check_keys_rotate_at_runtime(open_node: NodeOpener) -> None:
    """Keys rotate without a restart and without a refusal in two rolls of
    :meth:`Presence.set_keyring`: first every node accepts the new key, then every node seals
    with it. Making a key current before the peers accept it (one roll) gets the node's
    messages refused, and counted."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"], keyring=Keyring(KEY_1)) as (a, b):
        step = 0

        async def replicated() -> None:
            # Each node's newest message reached the other: nothing sealed before is in flight
            # (the hub delivers in order), so a key dropped now refuses nothing.
            nonlocal step
            step += 1
            a.track("conn-a", "room", f"a{step}", {})
            b.track("conn-b", "room", f"b{step}", {})
            await _has(b, "room", f"a{step}")
            await _has(a, "room", f"b{step}")

        rolls = (
            Keyring(KEY_1, accepted=(KEY_2,)),  # 1: accept the new key, still seal with the old
            Keyring(KEY_2, accepted=(KEY_1,)),  # 2: seal with the new key, accept the old
            Keyring(KEY_2),  # then the old key goes
        )
        for keyring in rolls:
            for node in (a, b):
                node.set_keyring(keyring)
                await replicated()  # a cluster half-way through a roll works too
            if a.keyring != keyring:
                raise AssertionError(f"set_keyring must replace the keyring: {a.keyring!r}")
        _nothing_refused([a, b])
        a.set_keyring(Keyring(KEY_1))  # a one-roll rotation: b does not hold KEY_1 any more
        a.track("conn-a", "room", "unseen", {})
        await wait_until(
            lambda: _rejected(b, RejectReason.UNAUTHENTICATED) > 0, "b refuses a's messages"
        )
        if "unseen" in b.list("room"):
            raise AssertionError("b applied a message sealed with a key it does not hold")
    async with open_node(hub.connect("plain"), config=FAST) as plain:
        wrong: tuple[tuple[Any, str], ...] = (
            (Keyring(KEY_1), "a keyring on a node opened without one"),
            (KEY_1, "a Key instead of a Keyring"),
        )
        for keyring, what in wrong:
            try:
                plain.set_keyring(keyring)
            except LocalProtocolError:
                pass
            else:
                raise AssertionError(f"set_keyring must refuse {what}")
    _all_closed(hub)


# ---------------------------------------------------------------------- liveness


@_driver_check
async def check_down_then_permdown(open_node: NodeOpener) -> None:
    """A node cut off is seen down (its presences hidden), up again after the partition heals,
    and permanently down (its presences deleted) when the partition lasts."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"]) as (a, b), b.replica_events() as events:
        a.track("conn-a", "room", "alice", {})
        await _has(b, "room", "alice")
        hub.partition(["a"], ["b"])
        event = await _departure(events, "a")
        if not (isinstance(event, ReplicaDown) and event.replica == a.replica):
            raise AssertionError(f"a node cut off must be seen down first, not {event!r}")
        if b.list("room") or b.replicas()["a"].status is not ReplicaStatus.DOWN:
            raise AssertionError("a node seen down must be DOWN with its presences hidden")
        hub.heal()
        event = await _next_about(events, "a", "a coming back up")
        if not isinstance(event, ReplicaUp):
            raise AssertionError(f"a node heard again must come back up, not {event!r}")
        await _has(b, "room", "alice")
        hub.partition(["a"], ["b"])
        event = await _departure(events, "a")
        if not isinstance(event, ReplicaDown):
            raise AssertionError(f"a node cut off again must be seen down, not {event!r}")
        event = await _next_about(events, "a", "a permanently down")
        if not (isinstance(event, ReplicaPermdown) and event.replica == a.replica):
            raise AssertionError(f"a node silent for the permdown period must go, not {event!r}")
        if "a" in b.replicas() or b.list("room"):
            raise AssertionError("a permanently down node must be forgotten with its presences")


@_driver_check
async def check_graceful_shutdown(open_node: NodeOpener) -> None:
    """A node leaving its ``async with`` announces it: peers drop it and its presences at once
    (long before any down period), and the node takes no more commands."""
    hub = MemoryHub()
    async with (
        open_node(hub.connect("b"), config=CALM) as b,
        b.replica_events() as events,
    ):
        async with open_node(hub.connect("a"), config=CALM) as a:
            a.track("conn-a", "room", "alice", {})
            await _has(b, "room", "alice")
        if not a.closed:
            raise AssertionError("a node must say it is closed after its async with")
        await _expect_announced_departure(events, a, "left its async with")
        if b.list("room") or "a" in b.replicas():
            raise AssertionError("a gracefully departed node's presences must be gone at once")
        try:
            a.track("conn-a", "room", "alice", {})
        except NodeClosed:
            pass
        else:
            raise AssertionError("a closed node must refuse commands with NodeClosed")
    _all_closed(hub)


@_driver_check
async def check_abandoned_node_goes_down_then_permdown(open_node: NodeOpener) -> None:
    """``presence.abandon()`` stops a node without a word: peers see it down, then permanently
    down; leaving the ``async with`` afterwards sends nothing and raises nothing."""
    hub = MemoryHub()
    async with (
        open_node(hub.connect("b"), config=FAST) as b,
        b.replica_events() as events,
        open_node(hub.connect("a"), config=FAST) as a,
    ):
        a.track("conn-a", "room", "alice", {})
        await _has(b, "room", "alice")
        await a.abandon()
        if not a.closed or "a" in hub.members():
            raise AssertionError("an abandoned node must be closed, its transport too")
        try:
            a.track("conn-a", "room", "bob", {})
        except NodeClosed:
            pass
        else:
            raise AssertionError("an abandoned node must refuse commands with NodeClosed")
        await a.abandon()  # a second time: nothing happens
        # Silent, a is down after the down period and permanently down only after the permdown
        # period; an announced departure would be both at once (nothing would stay DOWN).
        event = await _departure(events, "a")
        if not isinstance(event, ReplicaDown) or "a" not in b.replicas():
            raise AssertionError(
                "an abandoned node says nothing: its peer must see it down and keep it DOWN until "
                f"the permdown period, but saw {event!r} and knows {b.replicas()}"
            )
        if b.list("room"):
            raise AssertionError("a node seen down must have its presences hidden")
        event = await _next_about(events, "a", "the abandoned a to be permanently down")
        if not isinstance(event, ReplicaPermdown):
            raise AssertionError(f"a node down for the permdown period must go, not {event!r}")
        if b.list("room") or "a" in b.replicas():
            raise AssertionError("a permanently down node must be forgotten with its presences")
    _all_closed(hub)


@_driver_check
async def check_cancelled_node_leaves_gracefully(open_node: NodeOpener) -> None:
    """A node whose task is cancelled from outside still announces its departure (shielded):
    peers see it leave at once, not after a down period."""
    hub = MemoryHub()
    async with open_node(hub.connect("b"), config=CALM) as b, b.replica_events() as events:
        opened: list[Presence] = []
        started = anyio.Event()

        async def run_a() -> None:
            async with open_node(hub.connect("a"), config=CALM) as a:
                opened.append(a)
                a.track("conn-a", "room", "alice", {})
                started.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as group:
            group.start_soon(run_a)
            with failing_after(DEADLINE, "node a to start"):
                await started.wait()
            await _has(b, "room", "alice")
            group.cancel_scope.cancel()
        (a,) = opened
        if not a.closed:
            raise AssertionError("a cancelled node must be closed")
        await _expect_announced_departure(events, a, "was cancelled")
        if b.list("room"):
            raise AssertionError("a cancelled node's presences must be gone at once")
    _all_closed(hub)


@_driver_check
async def check_body_exception_propagates(open_node: NodeOpener) -> None:
    """An exception in the body comes out of the ``async with`` as itself (not wrapped in a
    group, its own context kept), and the node still announces its departure."""
    hub = MemoryHub()
    async with open_node(hub.connect("b"), config=CALM) as b, b.replica_events() as events:
        caught: _BodyError | None = None
        opened: list[Presence] = []
        try:
            async with open_node(hub.connect("a"), config=CALM) as a:
                opened.append(a)
                a.track("conn-a", "room", "alice", {})
                await _has(b, "room", "alice")
                try:
                    raise KeyError("the cause")
                except KeyError:
                    raise _BodyError("the body failed")  # noqa: B904 - the context is the point
        except _BodyError as exc:
            caught = exc
        except Exception as exc:
            raise AssertionError(
                f"the body's exception must come out as itself, not as {exc!r}"
            ) from exc
        if caught is None:
            raise AssertionError("the body's exception was swallowed")
        if not isinstance(caught.__context__, KeyError) or caught.__suppress_context__:
            raise AssertionError(
                "the body's exception must keep its own context, shown; it has "
                f"{caught.__context__!r} (suppressed: {caught.__suppress_context__})"
            )
        await _expect_announced_departure(events, opened[0], "exited with an exception")
    _all_closed(hub)


@_driver_check
async def check_cancellation_at_any_point(open_node: NodeOpener) -> None:
    """Cancelled at any moment (in the body or while shutting down), a node ends whole: closed,
    its transport closed, its departure announced, nothing left running."""
    hub = MemoryHub()

    async def cancel_after(scope: anyio.CancelScope, checkpoints: int) -> None:
        for _ in range(checkpoints):
            await anyio.lowlevel.checkpoint()
        scope.cancel()

    async with open_node(hub.connect("b"), config=CALM) as b:
        opened: list[Presence] = []
        for point in range(CANCEL_POINTS):
            name = f"n{point}"
            async with anyio.create_task_group() as group:
                with anyio.CancelScope() as scope:
                    group.start_soon(cancel_after, scope, point)
                    async with open_node(hub.connect(name), config=CALM) as node:
                        opened.append(node)
                        node.track(f"conn-{point}", "room", name, {})
                        # Leave on our own after a few checkpoints, so that later points cancel
                        # the shutdown instead of the body.
                        for _ in range(point % 4):
                            await anyio.lowlevel.checkpoint()
            if not opened[-1].closed or name in hub.members():
                raise AssertionError(
                    f"a node cancelled after {point} checkpoints must be closed with its transport"
                )
        names = [node.name for node in opened]
        await wait_until(
            lambda: not b.list("room") and not set(names) & set(b.replicas()),
            f"b has forgotten every cancelled node ({names}); it still lists "
            f"{sorted(b.list('room'))} and knows {sorted(b.replicas())}",
        )
    _all_closed(hub)


# ---------------------------------------------------------------------- application API


@_driver_check
async def check_connection_scopes(open_node: NodeOpener) -> None:
    """A connection scope untracks its connection on exit, on an exception and on cancellation;
    one scope per connection id; a scope exiting after its node closed is a no-op."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"]) as (a, b):
        try:
            async with a.connection() as conn:
                conn.track("room", "alice", {})
                a.track(conn.conn, "lobby", "alice", {})  # under the scope's id: untracked too
                await _has(b, "room", "alice")
                await _has(b, "lobby", "alice")
                raise _BodyError("the connection failed")
        except _BodyError:
            pass
        if a.list("room") or a.list("lobby"):
            raise AssertionError("a scope exiting with an exception must untrack its connection")
        await _converge([a, b], "room", [])
        await _converge([a, b], "lobby", [])

        with anyio.CancelScope() as scope:
            async with a.connection("conn-cancelled") as conn:
                conn.track("room", "bob", {})
                await _has(b, "room", "bob")
                scope.cancel()
                await anyio.sleep_forever()
        if a.list("room"):
            raise AssertionError("a cancelled scope must untrack its connection")
        await _converge([a, b], "room", [])

        async with a.connection("conn-carol") as conn:
            conn.track("room", "carol", {"v": 1})
            conn.update("room", "carol", {"v": 2})
            await wait_until(lambda: _metas(b, "room", "carol") == [{"v": 2}], "b sees the update")
            try:
                async with a.connection("conn-carol"):
                    raise AssertionError("a second scope for one connection id was opened")
            except LocalProtocolError:
                pass
            conn.untrack("room", "carol")
            conn.track("room", "carol", {"v": 3})
        await _converge([a, b], "room", [])
        async with a.connection("conn-carol"):  # the id is free again
            pass

    # The node exits first; the scope, kept by the exit stack, exits after it: late, a no-op.
    async with (
        contextlib.AsyncExitStack() as late_exits,
        open_node(hub.connect("c"), config=FAST) as c,
    ):
        conn = await late_exits.enter_async_context(c.connection("conn-late"))
        conn.track("room", "dave", {})
    try:
        async with c.connection():
            raise AssertionError("a connection scope opened on a closed node")
    except NodeClosed:
        pass
    _all_closed(hub)


@_driver_check
async def check_fetch_hook(open_node: NodeOpener) -> None:
    """The fetch hook enriches every diff once, whatever the number of subscribers, and the
    fetched queries; without a presence it is not called."""
    hub = MemoryHub()
    calls: list[tuple[str, list[str]]] = []

    async def fetch(topic: str, presences: PresenceMap) -> dict[str, dict[str, Any]]:
        calls.append((topic, sorted(presences)))
        await anyio.lowlevel.checkpoint()  # a real hook awaits a database
        return {key: {**value, "name": key.upper()} for key, value in presences.items()}

    async with (
        open_node(hub.connect("a"), config=FAST) as a,
        open_node(hub.connect("b"), config=FAST, fetch=fetch) as b,
    ):
        await _all_up([a, b])
        async with b.subscribe("room") as first, b.subscribe("room") as second:
            a.track("conn-a", "room", "alice", {"s": 1})
            for subscription in (first, second):
                diff = await _next(subscription, "the join of alice")
                joined: Mapping[str, Any] = diff.joins.get("alice", {})
                if joined.get("name") != "ALICE" or len(joined.get("metas", ())) != 1:
                    raise AssertionError(f"the fetch hook's fields must be in the diff: {diff}")
            a.untrack("conn-a", "room", "alice")
            for subscription in (first, second):
                diff = await _next(subscription, "the leave of alice")
                if diff.leaves.get("alice", {}).get("name") != "ALICE":
                    raise AssertionError(f"the fetch hook must enrich leaves too: {diff}")
        if calls != [("room", ["alice"]), ("room", ["alice"])]:
            raise AssertionError(
                f"two subscribers read two diffs: the hook must run once per diff, ran {calls}"
            )
        calls.clear()
        a.track("conn-a", "room", "bob", {})
        await _has(b, "room", "bob")
        listed = await b.fetched_list("room")
        got = await b.fetched_get_by_key("room", "bob")
        if listed["bob"].get("name") != "BOB" or got.get("name") != "BOB":
            raise AssertionError(f"fetched queries must go through the hook: {listed}, {got}")
        if await b.fetched_list("empty") != {} or calls != [("room", ["bob"])] * 2:
            raise AssertionError(f"the hook must not be called for nothing: calls {calls}")
    _all_closed(hub)


@_driver_check
async def check_slow_subscriber(open_node: NodeOpener) -> None:
    """A subscriber that falls more presences behind than its buffer loses the buffer at once
    and reads SubscriptionOverflow; the node, its other subscribers and the cluster carry on,
    and subscribing again plus ``list()`` resynchronises."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"]) as (a, b):
        async with b.subscribe("room", max_buffered=3) as slow, b.subscribe("room") as steady:
            for index in range(5):
                b.track(f"conn-{index}", "room", f"local-{index}", {})
            if not slow.closed or slow.buffered:
                raise AssertionError("an overflowing subscription must drop its buffer at once")
            try:
                await _next(slow, "the overflow signal")
            except SubscriptionOverflow as exc:
                if (exc.topic, exc.limit) != ("room", 3):
                    raise AssertionError(
                        f"the overflow must name topic and limit: {exc!r}"
                    ) from exc
            else:
                raise AssertionError("a subscriber 5 presences behind its 3 must overflow")
            for index in range(5):
                diff = await _next(steady, f"the join of local-{index}")
                if list(diff.joins) != [f"local-{index}"]:
                    raise AssertionError(f"diffs must come in order: {diff.joins}")
            await _converge([a, b], "room", [f"local-{index}" for index in range(5)])

        async with b.subscribe("room", max_buffered=2) as slow:
            for index in range(3):
                a.track("conn-a", "room", f"remote-{index}", {})
                await _has(b, "room", f"remote-{index}")
            if not slow.closed or slow.buffered:
                raise AssertionError("remote diffs must overflow a slow subscriber the same way")

        async with b.subscribe("room", max_buffered=3) as again:
            state = {key: value["metas"] for key, value in b.list("room").items()}
            a.track("conn-a", "room", "remote", {})
            diff = await _next(again, "the join of remote after the resync")
            for key, value in diff.joins.items():
                state.setdefault(key, []).extend(value["metas"])
            if state != {key: value["metas"] for key, value in b.list("room").items()}:
                raise AssertionError("subscribe + list() must resynchronise a subscriber")
    _all_closed(hub)


@_driver_check
async def check_closed_node(open_node: NodeOpener) -> None:
    """After its ``async with``, a node refuses commands, still answers queries, ends its
    subscriptions after their buffered items, and abandoning it does nothing."""
    hub = MemoryHub()
    async with open_node(hub.connect("a"), config=FAST) as a:
        a.track("conn-a", "room", "alice", {})
        diffs = a.subscribe("room")
        events = a.replica_events()
        a.track("conn-a", "room", "bob", {})
    commands: list[tuple[str, Callable[[], object]]] = [
        ("track", lambda: a.track("conn-a", "room", "carol", {})),
        ("update", lambda: a.update("conn-a", "room", "alice", {})),
        ("untrack", lambda: a.untrack("conn-a", "room", "alice")),
        ("untrack_conn", lambda: a.untrack_conn("conn-a")),
    ]
    for what, command in commands:
        try:
            command()
        except NodeClosed:
            pass
        else:
            raise AssertionError(f"{what} on a closed node must raise NodeClosed")
    if sorted(a.list("room")) != ["alice", "bob"] or a.count("room") != 2:
        raise AssertionError("a closed node must still answer queries from its last state")
    diff = await _next(diffs, "the diff buffered before the node closed")
    if list(diff.joins) != ["bob"]:
        raise AssertionError(f"a subscription must yield what it buffered first: {diff}")
    subscriptions: list[Subscription[Any]] = [
        diffs,
        events,
        a.subscribe("room"),
        a.replica_events(),
    ]
    for subscription in subscriptions:
        with failing_after(DEADLINE, "a subscription of a closed node to end"):
            try:
                item = await subscription.__anext__()
            except StopAsyncIteration:
                continue
            raise AssertionError(f"a subscription of a closed node must end, but yielded {item!r}")
    await a.abandon()
    _all_closed(hub)


# ---------------------------------------------------------------------- robustness


@_driver_check
async def check_malformed_messages_are_counted(open_node: NodeOpener) -> None:
    """Junk on the bus changes nothing: every malformed message is dropped and counted, and the
    node keeps working."""
    hub = MemoryHub()
    async with _cluster(open_node, hub, ["a", "b"]) as (a, b):
        a.track("conn-a", "room", "alice", {})
        await _has(b, "room", "alice")
        listed, known = b.list("room"), sorted(b.replicas())
        before = b.stats.malformed
        intruder = hub.connect("intruder")
        try:
            for junk in JUNK:
                await intruder.send("b", junk)
            await intruder.broadcast(b"junk for everybody")
        finally:
            await intruder.aclose()
        expected = before + len(JUNK) + 1
        await wait_until(
            lambda: b.stats.malformed >= expected, f"b counts {expected} malformed messages"
        )
        if b.stats.malformed != expected:
            raise AssertionError(
                f"b counted {b.stats.malformed} malformed messages, not {expected}"
            )
        if b.list("room") != listed or sorted(b.replicas()) != known:
            raise AssertionError("a malformed message must change nothing")
        a.track("conn-a", "room", "bob", {})
        await _has(b, "room", "bob")


@_driver_check
async def check_junk_flood_does_not_starve_the_timer(open_node: NodeOpener) -> None:
    """A node flooded with junk (a transport that hands it over without ever waiting) keeps
    ticking: its peer keeps seeing it up and its presences replicate during the flood."""
    hub = MemoryHub()
    firehose = _JunkFirehose(hub.connect("b"))
    async with (
        open_node(hub.connect("a"), config=FLOOD_CONFIG) as a,
        open_node(firehose, config=FLOOD_CONFIG) as b,
        a.replica_events() as events,
    ):
        await _all_up([a, b])
        firehose.flood_until = anyio.current_time() + FLOOD_SPAN
        await wait_until(lambda: firehose.served > 0, "the flood reaches b")
        b.track("conn-b", "room", "bob", {})
        await _has(a, "room", "bob")
        if anyio.current_time() >= firehose.flood_until:
            raise AssertionError(
                "a flooded node's presence replicated only after the flood: the flood starved it"
            )
        await wait_until(
            lambda: anyio.current_time() >= firehose.flood_until, "the flood has lasted its span"
        )
        downs = [event for event in await _buffered(events) if isinstance(event, ReplicaDown)]
        if downs or a.replicas()["b"].status is not ReplicaStatus.UP:
            raise AssertionError(f"a flooded node must still be seen up; its peer saw {downs}")
        if b.stats.malformed != firehose.served:
            raise AssertionError(
                f"b was served {firehose.served} junk messages but counted {b.stats.malformed}"
            )
    _all_closed(hub)


@_driver_check
async def check_transport_failure_surfaces(open_node: NodeOpener) -> None:
    """A transport that fails ends the node: the body is cancelled and the failure comes out of
    the ``async with`` as itself, never as a silent dead task."""
    hub = MemoryHub()
    broken = _BrokenPipe("connection reset by peer")
    for name, error, expected in (
        ("a", None, TransportError),
        ("b", broken, _BrokenPipe),
    ):
        body_ended = False
        caught: BaseException | None = None
        opened: list[Presence] = []
        try:
            with failing_after(DEADLINE, f"the failure of {name}'s transport to end the node"):
                async with open_node(hub.connect(name), config=FAST) as node:
                    opened.append(node)
                    async with node.connection() as conn:
                        conn.track("room", "alice", {})
                        hub.fail(name, error)
                        try:
                            await anyio.sleep_forever()
                        finally:
                            body_ended = True
        except Exception as exc:
            caught = exc
        if not isinstance(caught, expected) or (error is not None and caught is not error):
            raise AssertionError(
                f"a failed transport must come out of the async with as {expected.__name__}, "
                f"got {caught!r}"
            )
        if not body_ended or not opened[0].closed or name in hub.members():
            raise AssertionError("a failed transport must cancel the body and close the node")
    _all_closed(hub)


@_driver_check
async def check_leaving_node_refuses_commands(open_node: NodeOpener) -> None:
    """While a node is leaving (its goodbye on the way), other tasks' commands get NodeClosed
    and their connection scopes exit quietly."""
    hub = MemoryHub()
    hanging = _HangingTransport(hub.connect("a"))
    outcomes: list[object] = []
    tracked = anyio.Event()
    async with anyio.create_task_group() as group, open_node(hanging, config=CALM) as node:

        async def connection() -> None:
            try:
                async with node.connection("conn-1") as conn:
                    conn.track("room", "alice", {})
                    tracked.set()
                    await wait_until(lambda: node.pump.tracker.stopped, "a leaving")
                    try:
                        node.track("conn-2", "room", "bob", {})
                    except NodeClosed:
                        outcomes.append("refused")
                outcomes.append("exited")
            except Exception as exc:
                outcomes.append(exc)
            finally:
                hanging.release()

        group.start_soon(connection)
        with failing_after(DEADLINE, "the connection to track"):
            await tracked.wait()
        hanging.hang_sends = True  # the goodbye waits until the connection is done
    if outcomes != ["refused", "exited"]:
        raise AssertionError(
            "while a node leaves, commands must raise NodeClosed and scopes exit quietly; got "
            f"{outcomes}"
        )
    _all_closed(hub)


@_driver_check
async def check_shutdown_is_bounded(open_node: NodeOpener) -> None:
    """A node whose transport hangs still stops, within its ``shutdown_timeout`` (twice: once
    for the goodbye, once for closing), whether it leaves normally or is cancelled."""
    hub = MemoryHub()
    for name, cancelled in (("a", False), ("b", True)):
        hanging = _HangingTransport(hub.connect(name))
        opened: list[Presence] = []
        with (
            failing_after(DEADLINE, f"{name}, whose transport hangs, to stop"),
            anyio.CancelScope() as scope,
        ):
            async with open_node(hanging, config=CALM, shutdown_timeout=SHORT_SHUTDOWN) as node:
                opened.append(node)
                node.track("conn", "room", "alice", {})
                hanging.hang_sends = hanging.hang_close = True
                if cancelled:
                    scope.cancel()
                    await anyio.sleep_forever()
        if not opened[0].closed:
            raise AssertionError("a node whose transport hangs must still end up closed")
        await hanging.inner.aclose()  # the node gave up on closing it
    _all_closed(hub)


@_driver_check
async def check_a_swallowed_cancellation_still_stops_the_node(open_node: NodeOpener) -> None:
    """A transport that swallows the cancellation of a send (nats-py does) does not keep the
    node running: it is cancelled again until it stops."""
    hub = MemoryHub()
    swallowing = _SwallowingTransport(hub.connect("a"))
    with failing_after(DEADLINE, "a node whose transport swallowed a cancellation to stop"):
        async with open_node(swallowing, config=FAST) as node:
            swallowing.armed = True
            node.track("conn", "room", "alice", {})  # the next tick broadcasts it
            await swallowing.entered.wait()
    if swallowing.swallowed != 1:
        raise AssertionError(
            "the send loop must have been cancelled inside the transport's broadcast "
            f"(swallowed {swallowing.swallowed} cancellations)"
        )
    if not node.closed:
        raise AssertionError("the node must be closed")
    _all_closed(hub)


@_driver_check
async def check_default_name_and_incarnation(open_node: NodeOpener) -> None:
    """Every node has a default name; the incarnation comes from the wall clock (growing across
    restarts) unless given; invalid options are refused before anything starts."""
    earliest = time.time_ns() // 1000
    async with open_node(config=FAST) as first:
        first.track("conn", "room", "alice", {})
        if first.list("room") == {}:
            raise AssertionError("a node on its default transport must work on its own")
    async with open_node(config=FAST) as second:
        pass
    latest = time.time_ns() // 1000
    for node in (first, second):
        if type(node.name) is not str or not node.name:
            raise AssertionError(f"a node must have a default name, not {node.name!r}")
        if not earliest <= node.replica.vsn <= latest:
            raise AssertionError(
                f"the default incarnation must be the wall clock in microseconds "
                f"({earliest}..{latest}), not {node.replica.vsn}"
            )
    if first.name == second.name or second.replica.vsn <= first.replica.vsn:
        raise AssertionError(
            f"two nodes must get distinct names and growing incarnations: {first.replica}, "
            f"{second.replica}"
        )
    hub = MemoryHub()
    async with open_node(hub.connect("n"), vsn=42, config=FAST) as chosen:
        if (chosen.name, chosen.replica.vsn) != ("n", 42):
            raise AssertionError(f"the given incarnation must be used: {chosen.replica}")
    async with open_node(name="solo", config=FAST) as solo:
        if solo.name != "solo":
            raise AssertionError(f"the given name must be used: {solo.name!r}")
    transport = hub.connect("x")
    invalid: list[tuple[str, Callable[[], object]]] = [
        ("a name that is not the transport's", lambda: open_node(transport, name="y")),
        ("a negative incarnation", lambda: open_node(transport, vsn=-1)),
        ("a shutdown timeout of 0", lambda: open_node(transport, shutdown_timeout=0)),
        ("a Key instead of a Keyring", lambda: open_node(transport, keyring=_as_any(KEY_1))),
        ("a secret instead of a Keyring", lambda: open_node(transport, keyring=_as_any(b"s"))),
    ]
    try:
        for what, call in invalid:
            try:
                call()
            except LocalProtocolError:
                pass
            else:
                raise AssertionError(f"open_node must refuse {what} at once")
    finally:
        await transport.aclose()
    _all_closed(hub)


DRIVER_CHECKS: tuple[DriverCheck, ...] = (
    check_two_nodes_converge,
    check_three_nodes_converge,
    check_down_then_permdown,
    check_graceful_shutdown,
    check_abandoned_node_goes_down_then_permdown,
    check_cancelled_node_leaves_gracefully,
    check_body_exception_propagates,
    check_cancellation_at_any_point,
    check_connection_scopes,
    check_fetch_hook,
    check_slow_subscriber,
    check_closed_node,
    check_malformed_messages_are_counted,
    check_junk_flood_does_not_starve_the_timer,
    check_sealed_nodes_converge,
    check_nodes_with_another_key_are_refused,
    check_keys_rotate_at_runtime,
    check_transport_failure_surfaces,
    check_leaving_node_refuses_commands,
    check_shutdown_is_bounded,
    check_a_swallowed_cancellation_still_stops_the_node,
    check_default_name_and_incarnation,
)
"""Every driver check, in the order :func:`check_driver` runs them."""


async def check_driver(open_node: NodeOpener) -> None:
    """Run every check of :data:`DRIVER_CHECKS` on a driver.

    Args:
        open_node: the driver's ``open_node``; run this on an event loop the driver supports.

    Raises:
        AssertionError: the first check that failed, saying what went wrong.
    """
    await run_checks(DRIVER_CHECKS, open_node)
