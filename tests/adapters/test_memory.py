"""The memory hub's own features: bounded inboxes, fault injection, failure, names, namespaces.

What every transport must do is the conformance suite's business
(``test_transport_conformance.py``); this file covers what only the hub has. Every test runs on
asyncio (the standard-library runtime) and on trio (through anyio). Randomised faults use a
seeded ``random.Random``, so the same messages are lost or reordered on every run.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import anyio
import pytest
from waiting import DEADLINE, wait_until
from waiting import anyio_backend as anyio_backend  # the fixture, for the anyio marker

from presence_adapters import (
    LinkFaults,
    MemoryHub,
    MemoryTransport,
    TransportClosed,
    TransportError,
)

pytestmark = pytest.mark.anyio


async def receive(member: MemoryTransport) -> bytes:
    with anyio.fail_after(DEADLINE):
        return await member.receive()


async def receive_all(member: MemoryTransport, count: int) -> list[bytes]:
    return [await receive(member) for _ in range(count)]


def numbered(count: int) -> list[bytes]:
    return [f"m{index:03d}".encode() for index in range(count)]


# ---------------------------------------------------------------------- names and namespaces


async def test_names_are_unique_per_namespace_while_connected() -> None:
    hub = MemoryHub()
    a = hub.connect("a")
    with pytest.raises(ValueError, match="already connected"):
        hub.connect("a")
    other = hub.connect("a", namespace="other")  # another cluster: the name is free there
    assert hub.members() == ["a"]
    assert hub.members("other") == ["a"]
    await a.aclose()
    again = hub.connect("a")  # free once the holder left
    assert hub.members() == ["a"]
    for member in (again, other):
        await member.aclose()
    assert hub.members() == []
    assert repr(hub) == "<MemoryHub members=0>"


@pytest.mark.parametrize("bad", ["", 5, None, b"a"])
async def test_names_and_namespaces_must_be_non_empty_strings(bad: object) -> None:
    hub = MemoryHub()
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        hub.connect(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace must be a non-empty str"):
        hub.connect("a", namespace=bad)  # type: ignore[arg-type]
    assert hub.members() == []


@pytest.mark.parametrize(
    "options",
    [{"max_payload": 0}, {"inbox_messages": 0}, {"inbox_bytes": -1}, {"max_payload": 1.5}],
)
async def test_hub_limits_are_validated(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be an int >= 1"):
        MemoryHub(**options)  # type: ignore[arg-type]


async def test_members_are_listed_sorted() -> None:
    hub = MemoryHub()
    members = [hub.connect(name) for name in ("c", "a", "b")]
    assert hub.members() == ["a", "b", "c"]
    assert hub.members("nobody") == []
    assert repr(members[0]) == "<MemoryTransport default/c open inbox=0>"
    for member in members:
        await member.aclose()
    assert "closed" in repr(members[0])
    assert members[0].closed


# ---------------------------------------------------------------------- payloads


async def test_payloads_are_copied_and_type_checked() -> None:
    hub = MemoryHub()
    a, b = hub.connect("a"), hub.connect("b")
    buffer = bytearray(b"before")
    await a.send("b", buffer)  # type: ignore[arg-type]
    buffer[:] = b"after!"
    await a.broadcast(memoryview(b"view"))  # type: ignore[arg-type]
    assert await receive_all(b, 2) == [b"before", b"view"]
    with pytest.raises(TypeError, match="data must be bytes"):
        await a.send("b", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="to must be a str"):
        await a.send(b"b", b"data")  # type: ignore[arg-type]
    for member in (a, b):
        await member.aclose()


async def test_unknown_and_self_addressed_messages_are_dropped_and_counted() -> None:
    hub = MemoryHub()
    a, b = hub.connect("a"), hub.connect("b")
    await a.send("nobody", b"lost")
    await a.send("a", b"to myself")
    await a.send("b", b"kept")
    assert await receive(b) == b"kept"
    assert (hub.stats.dropped_unknown, hub.stats.delivered) == (2, 1)
    for member in (a, b):
        await member.aclose()


# ---------------------------------------------------------------------- bounded inboxes


async def test_a_full_inbox_drops_and_counts_per_receiver() -> None:
    hub = MemoryHub(inbox_messages=3)
    a, b, c = hub.connect("a"), hub.connect("b"), hub.connect("c")
    for data in numbered(5):
        await a.send("b", data)
    await a.broadcast(b"broadcast")  # b is full; c has room
    assert hub.stats.dropped_full == 3
    assert hub.stats.delivered == 4
    assert await receive_all(b, 3) == numbered(3)  # the oldest kept, in order
    assert await receive(c) == b"broadcast"
    await a.send("b", b"room again")
    assert await receive(b) == b"room again"
    for member in (a, b, c):
        await member.aclose()


async def test_the_inbox_is_bounded_in_bytes_too() -> None:
    hub = MemoryHub(inbox_bytes=10)
    a, b = hub.connect("a"), hub.connect("b")
    await a.send("b", b"123456")
    await a.send("b", b"12345")  # 11 bytes would be held: dropped
    await a.send("b", b"1234")  # exactly 10: kept
    assert hub.stats.dropped_full == 1
    assert await receive_all(b, 2) == [b"123456", b"1234"]
    await a.send("b", b"1234567890")  # the inbox is empty again
    assert await receive(b) == b"1234567890"
    for member in (a, b):
        await member.aclose()


# ---------------------------------------------------------------------- injected faults


async def lossy_run(seed: int) -> tuple[list[bytes], int]:
    hub = MemoryHub(rng=random.Random(seed))
    a, b = hub.connect("a"), hub.connect("b")
    hub.set_faults("a", "b", LinkFaults(loss=0.5))
    for data in numbered(100):
        await a.send("b", data)
    await a.aclose()  # nothing more will come: read what b holds
    got: list[bytes] = []
    while len(got) < hub.stats.delivered:
        got.append(await receive(b))
    await b.aclose()
    return got, hub.stats.dropped_faults


async def test_loss_is_reproducible_from_the_seed() -> None:
    first, dropped = await lossy_run(seed=7)
    assert (first, dropped) == await lossy_run(seed=7)
    assert first != (await lossy_run(seed=8))[0]
    assert 20 < dropped < 80
    assert len(first) + dropped == 100
    assert first == sorted(first)  # loss never reorders


async def test_delay_holds_messages_back() -> None:
    hub = MemoryHub()
    a, b = hub.connect("a"), hub.connect("b")
    hub.set_faults("a", "b", LinkFaults(delay=0.05))
    sent_at = anyio.current_time()
    await a.send("b", b"late")
    assert await receive(b) == b"late"
    assert anyio.current_time() - sent_at >= 0.05
    hub.set_faults("a", "b", None)  # cleared: at once again
    await a.send("b", b"now")
    assert await receive(b) == b"now"
    for member in (a, b):
        await member.aclose()


JITTER = 0.2
"""Seconds of jitter in the reordering test: far more than sending 20 messages takes."""

CLOCK_SLACK = 1e-3
"""Seconds between the test's clock reading before a send and the hub's reading in it."""


async def test_jitter_reorders_as_the_seeded_draws_say() -> None:
    hub = MemoryHub(rng=random.Random(3))
    a, b = hub.connect("a"), hub.connect("b")
    hub.set_faults("a", "b", LinkFaults(jitter=JITTER))
    draws = random.Random(3)  # the same draws as the hub's: one per message
    due: list[float] = []
    for data in numbered(20):
        due.append(anyio.current_time() + draws.uniform(0.0, JITTER))
        await a.send("b", data)
    got = await receive_all(b, 20)
    assert sorted(got) != got
    assert sorted(got) == numbered(20)
    order = [int(data[1:]) for data in got]
    for first, second in itertools.pairwise(order):
        assert due[first] <= due[second] + CLOCK_SLACK  # delivered when due, in that order
    for member in (a, b):
        await member.aclose()


async def test_a_delayed_message_is_overtaken_by_a_later_one_on_another_link() -> None:
    hub = MemoryHub()
    a, b, c = hub.connect("a"), hub.connect("b"), hub.connect("c")
    hub.set_faults("a", "c", LinkFaults(delay=0.05))
    await a.send("c", b"from a, delayed")
    await b.send("c", b"from b")
    assert await receive_all(c, 2) == [b"from b", b"from a, delayed"]
    for member in (a, b, c):
        await member.aclose()


async def test_partition_and_heal() -> None:
    hub = MemoryHub()
    a, b, c = hub.connect("a"), hub.connect("b"), hub.connect("c")
    hub.partition(["a"], ["b", "c"], one_way=True)  # a cannot reach them; they reach a
    await a.broadcast(b"lost")
    await b.send("a", b"b to a")
    assert await receive(a) == b"b to a"
    assert hub.stats.dropped_faults == 2
    hub.partition(["a"], ["b"])  # both ways now
    await b.send("a", b"lost too")
    await c.send("a", b"c to a")
    assert await receive(a) == b"c to a"
    hub.heal(namespace="other")  # another namespace's faults only: ours stay
    await a.send("b", b"still lost")
    assert hub.stats.dropped_faults == 4
    hub.heal()
    await a.broadcast(b"healed")
    assert await receive(b) == b"healed"
    assert await receive(c) == b"healed"
    for member in (a, b, c):
        await member.aclose()


async def test_faults_are_per_namespace() -> None:
    hub = MemoryHub()
    a1, b1 = hub.connect("a"), hub.connect("b")
    a2, b2 = hub.connect("a", namespace="two"), hub.connect("b", namespace="two")
    hub.partition(["a"], ["b"], namespace="two")
    await a1.send("b", b"one")
    await a2.send("b", b"two")
    assert await receive(b1) == b"one"
    assert hub.stats.dropped_faults == 1
    hub.heal(namespace="two")
    await a2.send("b", b"two again")
    assert await receive(b2) == b"two again"
    for member in (a1, b1, a2, b2):
        await member.aclose()


@pytest.mark.parametrize(
    "options",
    [{"loss": 1.5}, {"loss": -0.1}, {"delay": -1.0}, {"jitter": math.inf}, {"delay": math.nan}],
)
async def test_link_faults_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LinkFaults(**options)


# ---------------------------------------------------------------------- failure and closing


async def test_fail_wakes_a_pending_receive_and_fails_every_later_call() -> None:
    hub = MemoryHub()
    a, b = hub.connect("a"), hub.connect("b")
    await a.send("b", b"discarded with the inbox")
    errors: list[BaseException] = []

    async def receiver() -> None:
        try:
            while True:
                await b.receive()
        except TransportError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(receiver)
        await wait_until(lambda: not b._inbox, "b has read its inbox and waits")
        await anyio.wait_all_tasks_blocked()
        hub.fail("b")
    assert len(errors) == 1
    assert not isinstance(errors[0], TransportClosed)
    assert b.closed
    assert hub.members() == ["a"]
    for call in (lambda: b.send("a", b"x"), lambda: b.broadcast(b"x"), b.receive):
        with pytest.raises(TransportError):
            await call()
    await b.aclose()  # closing a failed transport is fine, and keeps the failure
    with pytest.raises(TransportError, match="was failed"):
        await b.receive()
    with pytest.raises(KeyError):
        hub.fail("b")  # no longer connected
    await a.aclose()


async def test_fail_with_a_chosen_error() -> None:
    hub = MemoryHub()
    a = hub.connect("a")
    broken = ConnectionResetError("reset by peer")
    hub.fail("a", broken)
    with pytest.raises(ConnectionResetError) as raised:
        await a.receive()
    assert raised.value is broken


async def test_close_discards_the_inbox_and_leaves_the_hub() -> None:
    hub = MemoryHub()
    a, b = hub.connect("a"), hub.connect("b")
    await a.send("b", b"never read")
    await b.aclose()
    with pytest.raises(TransportClosed):
        await b.receive()
    await a.send("b", b"to nobody")
    assert hub.stats.dropped_unknown == 1
    await a.aclose()
