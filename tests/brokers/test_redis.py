"""The Redis transport: the Transport conformance suite, nodes converging over Redis on every
driver and loop, echo suppression, namespaces, hostile names, bounds, and broker outages.

Redis comes from ``PRESENCE_REDIS_URL`` or a ``redis-server`` the tests start themselves
(:mod:`redis_support`); the outage tests always stop and restart a server of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import anyio
import coredis
import pytest
from redis_support import DEADLINE, RedisServer, free_port, wait_until
from redis_support import anyio_backend as anyio_backend  # the fixtures, for pytest
from redis_support import redis_server as redis_server
from redis_support import redis_url as redis_url

from presence_adapters import Presence, Transport, TransportClosed, TransportError
from presence_adapters.drivers import anyio as anyio_driver
from presence_adapters.drivers import asyncio as asyncio_driver
from presence_adapters.testing import QUIET_PERIOD, TRANSPORT_CHECKS, NodeOpener, TransportCheck
from presence_adapters.testing import transport as transport_suite
from presence_adapters.testing._support import LeakWatch
from presence_adapters.transports._broker import (
    Backoff,
    BrokerConnected,
    BrokerDisconnected,
    BrokerEvent,
)
from presence_adapters.transports.redis import (
    DEFAULT_MAX_PAYLOAD,
    ID_BYTES,
    MAX_WIRE_MESSAGE,
    RedisTransport,
)
from presence_core import Key, Keyring, RejectReason, TrackerConfig

PREFIX = "presence-test"
"""The channel prefix of every transport here (a shared Redis may carry other applications)."""

CONFIG = TrackerConfig(broadcast_period=0.05, max_silent_periods=2, permdown_period=2.0)
"""Short tracker periods: a heartbeat every 0.15 s, down after 0.2 s of silence."""

FAST_BACKOFF = Backoff(initial=0.02, maximum=0.2)
"""Reconnection delays for the outage tests (the default caps at 2 s)."""


def namespace(what: str) -> str:
    """A namespace no other test (nor an earlier run on a shared Redis) uses."""
    return f"{what}-{secrets.token_hex(4)}"


async def connect(url: str, ns: str, name: str, **options: Any) -> RedisTransport:
    return await RedisTransport.connect(
        url, name=name, namespace=ns, channel_prefix=PREFIX, **options
    )


async def receive(member: Transport, what: str) -> bytes:
    with anyio.move_on_after(DEADLINE):
        return await member.receive()
    raise AssertionError(f"{member.name!r} received nothing within {DEADLINE:g} s; expected {what}")


async def nothing_more(member: Transport, why: str) -> None:
    """Nothing arrives at ``member`` for a tenth of a second (proving an absence)."""
    with anyio.move_on_after(QUIET_PERIOD):
        data = await member.receive()
        raise AssertionError(f"{member.name!r} received {data[:40]!r}, but {why}")


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain coredis client, to do what no transport does (publish junk, configure Redis)."""
    async with coredis.Redis.from_url(url) as client:
        yield client


@contextlib.asynccontextmanager
async def members(
    url: str, ns: str, names: Sequence[str], **options: Any
) -> AsyncIterator[list[RedisTransport]]:
    async with contextlib.AsyncExitStack() as stack:
        connected = []
        for name in names:
            member = await connect(url, ns, name, **options)
            stack.push_async_callback(member.aclose)
            connected.append(member)
        yield connected


# ---------------------------------------------------------------------- the conformance suite


@pytest.mark.anyio
@pytest.mark.parametrize("check", TRANSPORT_CHECKS, ids=lambda check: check.__name__)
async def test_conformance(check: TransportCheck, redis_url: str) -> None:
    async def factory(ns: str, name: str) -> Transport:
        return await connect(redis_url, ns, name)

    with LeakWatch() as watch:  # every member closed: no task, no unclosed stream left
        await check(factory)
    watch.check(check.__name__)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "check",
    [transport_suite.check_max_payload, transport_suite.check_oversized_payload_is_refused],
    ids=lambda check: check.__name__,
)
async def test_conformance_with_a_small_limit(check: TransportCheck, redis_url: str) -> None:
    async def factory(ns: str, name: str) -> Transport:
        return await connect(redis_url, ns, name, max_payload=1000)

    await check(factory)


def test_the_default_max_payload_fits_the_pubsub_buffer_limits() -> None:
    # Redis's default: client-output-buffer-limit pubsub 32mb 8mb 60. A message of max_payload
    # bytes (with its id) is at most the soft limit, and four of them fit under the hard limit.
    assert DEFAULT_MAX_PAYLOAD + ID_BYTES == MAX_WIRE_MESSAGE == 8 * 1024 * 1024
    assert 4 * MAX_WIRE_MESSAGE <= 32 * 1024 * 1024


# ---------------------------------------------------------------------- nodes over Redis

Runner = Callable[[Callable[[NodeOpener], Coroutine[Any, Any, None]]], None]


def on_asyncio_driver(scenario: Callable[[NodeOpener], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario(asyncio_driver.open_node))


def on_anyio_asyncio(scenario: Callable[[NodeOpener], Coroutine[Any, Any, None]]) -> None:
    anyio.run(scenario, anyio_driver.open_node, backend="asyncio")


def on_anyio_trio(scenario: Callable[[NodeOpener], Coroutine[Any, Any, None]]) -> None:
    anyio.run(scenario, anyio_driver.open_node, backend="trio")


RUNNERS: dict[str, Runner] = {
    "asyncio-driver": on_asyncio_driver,
    "anyio-driver-on-asyncio": on_anyio_asyncio,
    "anyio-driver-on-trio": on_anyio_trio,
}

runners = pytest.mark.parametrize("runner", list(RUNNERS.values()), ids=list(RUNNERS))


def leak_free(
    scenario: Callable[[NodeOpener], Coroutine[Any, Any, None]],
) -> Callable[[NodeOpener], Coroutine[Any, Any, None]]:
    """``scenario``, failing if it leaves a task, a warning or an unraisable exception behind."""

    async def guarded(open_node: NodeOpener) -> None:
        with LeakWatch() as watch:
            await scenario(open_node)
        watch.check(scenario.__name__)

    guarded.__name__ = scenario.__name__
    return guarded


def listed(nodes: Sequence[Presence], topic: str, keys: Sequence[str]) -> Callable[[], bool]:
    """Whether every node lists exactly ``keys`` in ``topic``."""
    return lambda: all(sorted(node.list(topic)) == sorted(keys) for node in nodes)


async def converge(nodes: Sequence[Presence], topic: str, keys: Sequence[str]) -> None:
    try:
        await wait_until(listed(nodes, topic, keys), f"every node lists {sorted(keys)}")
    except AssertionError as exc:
        seen = {node.name: sorted(node.list(topic)) for node in nodes}
        raise AssertionError(f"{exc}; they list {seen}") from None


@runners
def test_two_nodes_converge(runner: Runner, redis_url: str) -> None:
    @leak_free
    async def scenario(open_node: NodeOpener) -> None:
        ns = namespace("two")
        async with (
            open_node(await connect(redis_url, ns, "a"), config=CONFIG) as a,
            open_node(await connect(redis_url, ns, "b"), config=CONFIG) as b,
        ):
            a.track("conn-a", "room", "alice", {"status": "online"})
            b.track("conn-b", "room", "bob", {"status": "away"})
            await converge([a, b], "room", ["alice", "bob"])
            a.update("conn-a", "room", "alice", {"status": "busy"})
            await wait_until(
                lambda: b.get_by_key("room", "alice")["metas"][0].get("status") == "busy",
                "b sees alice's update",
            )
            a.untrack("conn-a", "room", "alice")
            b.untrack_conn("conn-b")
            await converge([a, b], "room", [])

    runner(scenario)


@runners
def test_three_nodes_converge(runner: Runner, redis_url: str) -> None:
    @leak_free
    async def scenario(open_node: NodeOpener) -> None:
        ns = namespace("three")
        async with (
            open_node(await connect(redis_url, ns, "a"), config=CONFIG) as a,
            open_node(await connect(redis_url, ns, "b"), config=CONFIG) as b,
        ):
            a.track("conn-a", "room", "alice", {})
            b.track("conn-b", "room", "bob", {})
            await converge([a, b], "room", ["alice", "bob"])
            async with open_node(await connect(redis_url, ns, "c"), config=CONFIG) as c:
                await converge([a, b, c], "room", ["alice", "bob"])  # the late joiner catches up
                c.track("conn-c", "room", "carol", {})
                await converge([a, b, c], "room", ["alice", "bob", "carol"])
            await converge([a, b], "room", ["alice", "bob"])  # c left, with its presences

    runner(scenario)


def test_two_clusters_share_one_redis(redis_url: str) -> None:
    # Same node names, same topic, two namespaces: each cluster sees only its own presences and
    # replicas, even after many heartbeats went by on the same Redis.
    @leak_free
    async def scenario(open_node: NodeOpener) -> None:
        first, second = namespace("cluster-1"), namespace("cluster-2")
        async with contextlib.AsyncExitStack() as stack:
            clusters: dict[str, list[Presence]] = {}
            for ns in (first, second):
                clusters[ns] = [
                    await stack.enter_async_context(
                        open_node(await connect(redis_url, ns, name), config=CONFIG)
                    )
                    for name in ("n1", "n2")
                ]
            for ns, nodes in clusters.items():
                for node in nodes:
                    node.track("conn", "room", f"{ns}/{node.name}", {})
            for ns, nodes in clusters.items():
                await converge(nodes, "room", [f"{ns}/n1", f"{ns}/n2"])
            everyone = [node for nodes in clusters.values() for node in nodes]
            heard = {id(node): node.stats.received for node in everyone}
            await wait_until(
                lambda: all(node.stats.received >= heard[id(node)] + 6 for node in everyone),
                "every node received a few more heartbeats",
            )
            for ns, nodes in clusters.items():
                for node in nodes:
                    assert sorted(node.list("room")) == [f"{ns}/n1", f"{ns}/n2"]
                    assert list(node.replicas()) == [n for n in ("n1", "n2") if n != node.name]

    anyio.run(scenario, anyio_driver.open_node, backend="asyncio")


@runners
def test_a_sealed_cluster_converges_and_refuses_another_key(runner: Runner, redis_url: str) -> None:
    # Authenticated replication over Redis: the nodes of one keyring replicate, a node sealing
    # with another secret under the same key id is refused by each of them (counted, never
    # applied), and the cluster carries on.
    @leak_free
    async def scenario(open_node: NodeOpener) -> None:
        ns = namespace("sealed")
        keyring = Keyring(Key("2026-12", secrets.token_bytes(32)))
        forged = Keyring(Key("2026-12", secrets.token_bytes(32)))
        async with (
            open_node(await connect(redis_url, ns, "a"), config=CONFIG, keyring=keyring) as a,
            open_node(await connect(redis_url, ns, "b"), config=CONFIG, keyring=keyring) as b,
        ):
            a.track("conn-a", "room", "alice", {})
            b.track("conn-b", "room", "bob", {})
            await converge([a, b], "room", ["alice", "bob"])
            transport = await connect(redis_url, ns, "mallory")
            async with open_node(transport, config=CONFIG, keyring=forged) as mallory:
                mallory.track("conn-m", "room", "mallory", {})
                await wait_until(
                    lambda: all(refused(node) >= 3 for node in (a, b)),
                    "a and b refuse several of mallory's messages",
                )
                for node in (a, b):
                    assert sorted(node.list("room")) == ["alice", "bob"]
                    assert "mallory" not in node.replicas()
                    assert node.tracker_stats().rejected == node.stats.rejected_by_reason
                assert sorted(mallory.list("room")) == ["mallory"]
            a.untrack_conn("conn-a")
            await converge([a, b], "room", ["bob"])
            for node in (a, b):
                abnormal = {r for r in node.stats.rejected_by_reason if not r.normal}
                assert abnormal == {RejectReason.UNAUTHENTICATED}
                assert node.stats.malformed == 0

    runner(scenario)


def refused(node: Presence) -> int:
    """The messages ``node`` refused as not sealed by a key of its keyring."""
    return node.stats.rejected_by_reason.get(RejectReason.UNAUTHENTICATED, 0)


# ---------------------------------------------------------------------- echo suppression


@pytest.mark.anyio
async def test_no_own_message_ever_reaches_receive(redis_url: str) -> None:
    async with members(redis_url, namespace("echo"), ["a", "b"]) as (a, b):
        for index in range(20):
            await a.broadcast(f"broadcast {index}".encode())
        for index in range(5):
            await a.send("a", f"to myself {index}".encode())  # Redis delivers these to a, too
        for index in range(20):
            assert await receive(b, "a's broadcasts") == f"broadcast {index}".encode()
        await b.send("a", b"marker")
        # Redis echoed a's 25 messages to a before b even heard the first broadcast, on the same
        # connection as b's marker: had one of them reached receive(), it would come first.
        assert await receive(a, "b's marker") == b"marker"
        assert a.stats.ignored_own == 25
        assert a.stats.received == 1
        assert b.stats.ignored_own == 0  # a direct send only reaches its addressee
        assert b.stats.received == 20
        await nothing_more(a, "a must not hear its own messages")


@pytest.mark.anyio
async def test_a_restarted_replica_hears_its_predecessor(redis_url: str) -> None:
    # The id is per transport instance, not per name: a replica that reconnects under the same
    # name is another sender (an old incarnation's last broadcasts are news to the new one).
    ns = namespace("successor")
    async with members(redis_url, ns, ["a"]) as (old,), members(redis_url, ns, ["a"]) as (new,):
        await old.broadcast(b"from the old a")
        assert await receive(new, "the old a's broadcast") == b"from the old a"
        # The echo to the old a travels on its own connection: it may come a moment later.
        await wait_until(lambda: old.stats.ignored_own == 1, "the old a to drop its own echo")


@pytest.mark.anyio
async def test_junk_on_our_channels_is_counted(redis_url: str) -> None:
    # Someone else writes to our inbox or our broadcast channel: a message too short to carry an
    # id is dropped and counted; a longer one loses its first 8 bytes (the node then drops it as
    # malformed).
    async with (
        members(redis_url, namespace("junk"), ["b"]) as (b,),
        redis_client(redis_url) as client,
    ):
        await client.rpush(b.inbox_for("b"), [b"short", b"12345678junk"])
        assert await receive(b, "the junk, without its first 8 bytes") == b"junk"
        await client.publish(b.broadcast_channel, b"short")
        await client.publish(b.broadcast_channel, b"12345678more junk")
        assert await receive(b, "the broadcast junk") == b"more junk"
        assert b.stats.malformed == 2
        assert b.stats.received == 2


# ---------------------------------------------------------------------- addresses


HOSTILE_NAMES = [
    "a.b",
    "a%2Eb",  # what "a.b" would be, escaped: still another name
    "*",
    ">",
    "a.*",
    "a:b",
    "replica:a",
    "broadcast",
    "with space",
    "tab\tand\nnewline",
    "100%",
    "%",
    "ünïcødé ☃ 名前",
    "🙂",
    "-",
    "_",
]


@pytest.mark.anyio
async def test_hostile_names(redis_url: str) -> None:
    ns = namespace("hostile .*>:% ☃")
    # A cluster whose namespace extends ours, as a name would: it must not hear ours.
    neighbour = f"{ns}:replica"
    async with (
        members(redis_url, ns, HOSTILE_NAMES) as crowd,
        members(redis_url, neighbour, ["a", "*"]) as outsiders,
    ):
        channels = {member.inbox_for(member.name) for member in crowd}
        assert len(channels) == len(HOSTILE_NAMES)
        for channel in channels | {crowd[0].broadcast_channel}:
            assert channel.isascii()
            assert not set(channel) & set(" \t\n*>.")
        # Everyone sends everyone else a message, then broadcasts an end marker.
        for sender in crowd:
            for receiver in crowd:
                if receiver is not sender:
                    await sender.send(receiver.name, f"{sender.name}->{receiver.name}".encode())
            await sender.broadcast(f"end of {sender.name}".encode())
        for outsider in outsiders:
            await outsider.broadcast(f"outsider {outsider.name}".encode())
        for receiver in crowd:
            got: list[bytes] = []
            ends = 0
            while ends < len(crowd) - 1:
                data = await receive(receiver, f"the messages to {receiver.name!r}")
                if data.startswith(b"end of "):
                    ends += 1
                else:
                    got.append(data)
            expected = sorted(
                f"{sender.name}->{receiver.name}".encode()
                for sender in crowd
                if sender is not receiver
            )
            assert sorted(got) == expected, receiver.name
        first, second = outsiders
        assert await receive(first, "the other outsider's broadcast") == b"outsider *"
        assert await receive(second, "the other outsider's broadcast") == b"outsider a"
        async with anyio.create_task_group() as group:  # one quiet period for everybody
            for member in (*crowd, *outsiders):
                group.start_soon(nothing_more, member, "every message to it has arrived")


@pytest.mark.anyio
async def test_invalid_names(redis_url: str) -> None:
    ns = namespace("invalid")
    for bad in ("", "\ud800"):
        with pytest.raises(ValueError, match="name must be a non-empty str"):
            await connect(redis_url, ns, bad)
        with pytest.raises(ValueError, match="namespace must be a non-empty str"):
            await connect(redis_url, bad, "a")
    async with members(redis_url, ns, ["a", "b"]) as (a, b):
        # Nobody can hold such a name (a peer could send us one): dropped silently.
        await a.send("\ud800", b"lost")
        await a.send("", b"lost")
        with pytest.raises(TypeError):
            await a.send(b"b", b"lost")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await a.broadcast("text")  # type: ignore[arg-type]
        await a.send("b", b"marker")
        assert await receive(b, "a's marker") == b"marker"


@pytest.mark.anyio
async def test_invalid_arguments() -> None:
    url = "redis://127.0.0.1:1"
    for bad_url in ("localhost:6379", "http://localhost", "redis://"):
        with pytest.raises(ValueError, match=r"url|Redis"):
            await RedisTransport.connect(bad_url, name="a")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_payload": 0}, "max_payload"),
        ({"max_payload": 512 * 1024 * 1024}, "max_payload"),
        ({"inbox_messages": 0}, "inbox_messages"),
        ({"inbox_bytes": 100, "max_payload": 1000}, "inbox_bytes"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"command_timeout": float("inf")}, "command_timeout"),
        ({"ping_interval": -1}, "ping_interval"),
        ({"channel_prefix": ""}, "channel_prefix"),
        ({"backoff": 1.0}, "backoff"),
        ({"on_status": 1}, "on_status"),
    ]
    for options, match in cases:
        with pytest.raises(ValueError, match=match):
            await RedisTransport.connect(url, name="a", **options)


# ---------------------------------------------------------------------- bounds


@pytest.mark.anyio
async def test_broadcasts_beyond_the_inbox_bound_are_dropped(redis_url: str) -> None:
    ns = namespace("inbox")
    async with (
        members(redis_url, ns, ["a"]) as (a,),
        members(redis_url, ns, ["b"], inbox_messages=5) as (b,),
    ):
        for index in range(20):
            await a.broadcast(f"{index}".encode())
        await wait_until(lambda: b.stats.received == 20, "b heard all 20 broadcasts")
        assert b.stats.dropped_inbox_full == 15
        for index in range(5):
            assert await receive(b, "the first five") == f"{index}".encode()
        await a.broadcast(b"room again")
        assert await receive(b, "a broadcast once there is room") == b"room again"


@pytest.mark.anyio
async def test_direct_messages_wait_in_redis_until_there_is_room(redis_url: str) -> None:
    ns = namespace("inbox-bytes")
    async with (
        members(redis_url, ns, ["a", "b"], max_payload=100, inbox_bytes=250) as (a, b),
        redis_client(redis_url) as client,
    ):
        for index in range(6):
            await a.send("b", bytes([index]) * 100)
        # b pops only while its inbox has room for one more message: two, the rest waits.
        await wait_until(lambda: b.stats.received == 2, "b took in two messages")
        assert await client.llen(b.inbox_for("b")) == 4  # b pops no more until there is room
        for index in range(6):
            assert await receive(b, f"message {index}") == bytes([index]) * 100
        assert b.stats.dropped_inbox_full == 0
        assert await client.llen(b.inbox_for("b")) == 0


@pytest.mark.anyio
async def test_an_inbox_keeps_its_newest_messages_and_expires(redis_url: str) -> None:
    ns = namespace("inbox-trim")
    async with (
        members(redis_url, ns, ["a"], inbox_messages=5, direct_ttl=30.0) as (a,),
        redis_client(redis_url) as client,
    ):
        for index in range(8):  # to a name nobody holds: nobody pops
            await a.send("gone", f"{index}".encode())
        inbox = a.inbox_for("gone")
        kept = await client.lrange(inbox, 0, -1)
        assert [item[8:] for item in kept] == [f"{index}".encode() for index in range(3, 8)]
        assert 0 < await client.pttl(inbox) <= 30_000


# ---------------------------------------------------------------------- connection trouble


@pytest.mark.anyio
async def test_connect_fails_within_its_timeout() -> None:
    port = free_port()
    with LeakWatch() as watch:
        started = time.monotonic()
        with pytest.raises(TransportError, match=rf"127\.0\.0\.1:{port} within 0\.5 s") as raised:
            await RedisTransport.connect(f"redis://127.0.0.1:{port}", name="a", connect_timeout=0.5)
        elapsed = time.monotonic() - started
        assert "Connection" in str(raised.value)  # says why: the connection was refused
    watch.check("a failed connect")
    assert 0.4 < elapsed < 3.0


@pytest.mark.anyio
async def test_a_cancelled_connect_leaves_nothing_running() -> None:
    with LeakWatch() as watch:
        with anyio.move_on_after(0.2) as scope:
            await RedisTransport.connect(f"redis://127.0.0.1:{free_port()}", name="a")
        assert scope.cancelled_caught
    watch.check("a cancelled connect")


async def outage_members(
    server: RedisServer, ns: str, names: Sequence[str]
) -> tuple[list[RedisTransport], dict[str, list[BrokerEvent]]]:
    events: dict[str, list[BrokerEvent]] = {name: [] for name in names}
    transports = [
        await connect(server.url, ns, name, backoff=FAST_BACKOFF, on_status=events[name].append)
        for name in names
    ]
    return transports, events


def last_is(
    events: dict[str, list[BrokerEvent]], kind: type, count: int, *, at_least: bool = False
) -> Callable[[], bool]:
    """Whether every transport reported ``count`` events of ``kind`` (or more, ``at_least``),
    the last one last."""

    def counted(got: list[BrokerEvent]) -> bool:
        seen = sum(isinstance(event, kind) for event in got)
        return seen >= count if at_least else seen == count

    return lambda: all(counted(got) and isinstance(got[-1], kind) for got in events.values())


@runners
def test_nodes_ride_out_a_broker_restart(
    runner: Runner, redis_server: RedisServer, record_property: Callable[[str, object], None]
) -> None:
    @leak_free
    async def scenario(open_node: NodeOpener) -> None:
        (ta, tb), events = await outage_members(redis_server, namespace("restart"), ["a", "b"])
        async with open_node(ta, config=CONFIG) as a, open_node(tb, config=CONFIG) as b:
            a.track("conn-a", "room", "alice", {})
            b.track("conn-b", "room", "bob", {})
            await converge([a, b], "room", ["alice", "bob"])
            assert [type(event) for event in events["a"]] == [BrokerConnected]
            # The broker goes away: each transport says so, and the nodes carry on locally.
            await anyio.to_thread.run_sync(redis_server.stop)
            await wait_until(last_is(events, BrokerDisconnected, 1), "both report the loss")
            assert not ta.connected
            assert not tb.connected
            a.track("conn-a", "room", "carol", {})
            b.track("conn-b", "room", "dave", {})
            dropped = ta.stats.dropped_while_disconnected, tb.stats.dropped_while_disconnected
            await wait_until(
                lambda: (
                    ta.stats.dropped_while_disconnected > dropped[0]
                    and tb.stats.dropped_while_disconnected > dropped[1]
                ),
                "both nodes' sends are dropped (and counted) while disconnected",
            )
            assert {"alice", "carol"} <= set(a.list("room"))
            assert {"bob", "dave"} <= set(b.list("room"))
            # The broker comes back on the same port: the transports reconnect on their own.
            await anyio.to_thread.run_sync(redis_server.start)
            restarted = time.monotonic()
            await wait_until(last_is(events, BrokerConnected, 2), "both report the reconnection")
            reconnected = time.monotonic() - restarted
            await converge([a, b], "room", ["alice", "bob", "carol", "dave"])
            converged = time.monotonic() - restarted
            for name, got in events.items():
                again = got[-1]
                assert isinstance(again, BrokerConnected)
                assert again.attempts >= 1, (name, again)
                assert again.downtime > 0, (name, again)
            assert (ta.stats.connects, ta.stats.disconnects) == (2, 1)
            record_property("reconnected_after_s", round(reconnected, 3))
            record_property("converged_after_s", round(converged, 3))
            print(
                f"restart: reconnected after {reconnected:.3f} s, converged after {converged:.3f} s"
            )

    runner(scenario)


@pytest.mark.anyio
async def test_aclose_during_an_outage(redis_server: RedisServer) -> None:
    with LeakWatch() as watch:
        (a, b), events = await outage_members(redis_server, namespace("outage"), ["a", "b"])
        outcome: list[BaseException | bytes] = []

        async def receive_into_outcome() -> None:
            try:
                outcome.append(await a.receive())
            except Exception as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(receive_into_outcome)
            await anyio.to_thread.run_sync(redis_server.stop)
            await wait_until(last_is(events, BrokerDisconnected, 1), "both report the loss")
            await a.broadcast(b"into the void")  # no error: dropped and counted
            await a.send("b", b"into the void")
            assert a.stats.dropped_while_disconnected == 2
            assert outcome == []  # receive() waits across the outage
            started = time.monotonic()
            await a.aclose()  # while it is reconnecting
            await b.aclose()
            assert time.monotonic() - started < 1.0
        assert len(outcome) == 1, outcome
        assert isinstance(outcome[0], TransportClosed), outcome
        assert a.closed
        assert "closed" in repr(a)
        with pytest.raises(TransportClosed):
            await a.broadcast(b"late")
        await a.aclose()
    watch.check("closing during an outage")


@pytest.mark.anyio
async def test_a_frozen_broker_is_noticed(redis_server: RedisServer) -> None:
    # A broker that stops answering without closing anything (a frozen process, a network
    # partition): a ping that goes unanswered, or a publish that does, ends the connection.
    events: dict[str, list[BrokerEvent]] = {"pinger": [], "sender": []}
    ns = namespace("frozen")
    common: dict[str, Any] = {"backoff": FAST_BACKOFF, "connect_timeout": 0.5}
    pinger = await connect(
        redis_server.url,
        ns,
        "pinger",
        ping_interval=0.25,
        on_status=events["pinger"].append,
        **common,
    )
    sender = await connect(
        redis_server.url,
        ns,
        "sender",
        command_timeout=0.2,
        on_status=events["sender"].append,
        **common,
    )
    try:
        redis_server.freeze()
        started = time.monotonic()
        await sender.broadcast(b"into a frozen broker")  # no error, after command_timeout
        assert time.monotonic() - started >= 0.15
        assert sender.stats.dropped_while_disconnected == 1
        # (at_least: on a loaded machine, a ping may also have been late before the freeze)
        await wait_until(
            last_is(events, BrokerDisconnected, 1, at_least=True), "both report the loss"
        )
        lost = events["pinger"][-1]
        assert isinstance(lost, BrokerDisconnected)
        assert "PING timed out" in lost.error, lost
        redis_server.thaw()
        await wait_until(
            last_is(events, BrokerConnected, 2, at_least=True), "both report the reconnection"
        )
        await sender.broadcast(b"thawed")
        assert await receive(pinger, "the broadcast after the thaw") == b"thawed"
    finally:
        redis_server.thaw()
        await pinger.aclose()
        await sender.aclose()


@pytest.mark.anyio
async def test_a_subscriber_redis_cuts_off_comes_back(redis_server: RedisServer) -> None:
    # Redis disconnects a subscriber whose output buffer passes the pubsub hard limit (by
    # default 32 MiB; 256 KiB here). The transport reports it and reconnects; only the broadcast
    # that was too big is lost. (Its sender is a subscriber too, and is cut off as well.)
    (a, b), events = await outage_members(redis_server, namespace("cut-off"), ["a", "b"])
    try:
        async with redis_client(redis_server.url) as client:
            await client.config_set({"client-output-buffer-limit": "pubsub 256kb 128kb 60"})
        await a.broadcast(bytes(300 * 1024))
        cut_off = [BrokerConnected, BrokerDisconnected, BrokerConnected]
        await wait_until(
            lambda: all([type(event) for event in events[n]] == cut_off for n in "ab"),
            "a and b report being cut off, then reconnected",
        )
        await a.broadcast(b"after")
        assert await receive(b, "the message after the one that was too big") == b"after"
        await a.send("b", bytes(300 * 1024))  # a direct message of the same size is no trouble
        assert await receive(b, "a large direct message") == bytes(300 * 1024)
        assert [type(event) for event in events["b"]] == cut_off
        assert b.stats.received == 2
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_a_refused_publish_is_raised(redis_server: RedisServer) -> None:
    # Not an outage: Redis answers, and says no. That is raised (the node then stops), instead
    # of being dropped like the messages of a lost connection.
    async with redis_client(redis_server.url) as client:
        await client.acl_setuser(
            "listener", "on", ">secret", "~*", "&*", "+@all", "-publish", "-rpush"
        )
    url = f"redis://listener:secret@127.0.0.1:{redis_server.port}"
    async with members(url, namespace("acl"), ["a"]) as (a,):
        with pytest.raises(
            TransportError, match=r"Redis refused PUBLISH: AuthorizationError: .*permissions"
        ):
            await a.broadcast(b"forbidden")
        with pytest.raises(
            TransportError, match=r"Redis refused RPUSH: AuthorizationError: .*permissions"
        ):
            await a.send("b", b"forbidden")
        assert a.connected
        assert a.stats.dropped_while_disconnected == 0


@pytest.mark.anyio
async def test_a_failing_status_callback_is_logged(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(event: BrokerEvent) -> None:
        raise RuntimeError("the callback broke")

    with caplog.at_level(logging.ERROR, logger="presence_adapters.transports"):
        async with members(redis_url, namespace("callback"), ["a", "b"], on_status=fails) as (
            a,
            b,
        ):
            await a.send("b", b"still working")
            assert await receive(b, "a's message") == b"still working"
    assert "on_status callback failed" in caplog.text


# ---------------------------------------------------------------------- packaging


def test_importing_without_coredis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "presence_adapters.transports.redis")
    monkeypatch.setitem(sys.modules, "coredis", None)  # what an uninstalled module looks like
    with pytest.raises(ImportError, match=r"pip install 'presence-core\[redis\]'"):
        importlib.import_module("presence_adapters.transports.redis")


def test_the_core_and_the_memory_transport_do_not_import_coredis() -> None:
    code = (
        "import sys, presence_core, presence_adapters, presence_adapters.transports\n"
        "from presence_adapters.drivers import anyio, asyncio\n"
        "assert 'coredis' not in sys.modules, 'coredis was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
