"""A state far larger than one broker message reaches a new node, in parts.

100,000 presences with 600-byte metas are about 68 MB on the wire: the NATS server's default
``max_payload`` is 1 MiB, and the Redis transport's default is 8 MiB. The node that holds them
sends its transfer reply in parts that each fit (``presence_core.encode_parts``); the new node
merges them as they come and must end up listing every presence.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from nats_support import nats_url as nats_url  # the fixture
from redis_support import redis_url as redis_url  # the fixture
from redis_support import wait_until

from presence_adapters import Transport
from presence_adapters.drivers.asyncio import open_node
from presence_adapters.transports.nats import NatsTransport
from presence_adapters.transports.redis import RedisTransport
from presence_core import TrackerConfig

pytestmark = pytest.mark.anyio

PRESENCES = 100_000
META = {"bio": "x" * 561}  # with the phx_ref the tracker adds: 600 bytes of JSON
TOPIC = "room:huge"
CONFIG = TrackerConfig(broadcast_period=0.2, down_period=30.0, permdown_period=120.0)
"""Quick ticks, and a down period no stall of a busy test machine comes near (encoding the
reply takes the holder a second or two, during which it sends no heartbeat)."""

TRANSFER_DEADLINE = 120.0
"""Seconds the whole state may take to arrive (measured: a few seconds; CI machines are slow)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only


Connect = Callable[[str, str], AbstractAsyncContextManager[Transport]]


def connector(kind: str, url: str) -> Connect:
    @asynccontextmanager
    async def connect(namespace: str, name: str) -> AsyncIterator[Transport]:
        transport: Transport
        if kind == "nats":
            transport = await NatsTransport.connect(url, name=name, namespace=namespace)
        else:
            transport = await RedisTransport.connect(url, name=name, namespace=namespace)
        try:
            yield transport
        finally:
            await transport.aclose()

    return connect


async def a_huge_state_reaches_a_new_node(connect: Connect, max_payload: int) -> float:
    namespace = f"test-huge-{secrets.token_hex(4)}"
    async with connect(namespace, "holder") as first, open_node(first, config=CONFIG) as holder:
        assert first.max_payload == max_payload
        for i in range(PRESENCES):
            holder.track(f"c{i}", TOPIC, f"user-{i}", META)
        assert holder.count(TOPIC) == PRESENCES
        meta = holder.list(TOPIC)["user-0"]["metas"][0]
        assert len(json.dumps(meta, separators=(",", ":"))) == 600
        started = time.monotonic()
        async with (
            connect(namespace, "newcomer") as second,
            open_node(second, config=CONFIG) as newcomer,
        ):
            await wait_until(
                lambda: newcomer.count(TOPIC) == PRESENCES,
                f"the newcomer lists all {PRESENCES} presences",
                timeout=TRANSFER_DEADLINE,
            )
            elapsed = time.monotonic() - started
            assert newcomer.stats.malformed == 0
            assert holder.stats.unsendable == 0
            # Every message fitted: a transport refuses larger ones (PayloadTooLarge would have
            # failed the node), and the state crossed in many of them.
            assert newcomer.stats.received_bytes > PRESENCES * 600
            assert newcomer.stats.received > PRESENCES * 600 // max_payload
            print(f"\n{PRESENCES} presences reached a new node in {elapsed:.2f} s")
            return elapsed


async def test_a_100000_presence_state_reaches_a_new_node_over_nats(nats_url: str) -> None:
    await a_huge_state_reaches_a_new_node(connector("nats", nats_url), 1024 * 1024)


async def test_a_100000_presence_state_reaches_a_new_node_over_redis(redis_url: str) -> None:
    await a_huge_state_reaches_a_new_node(connector("redis", redis_url), 8 * 1024 * 1024 - 8)
