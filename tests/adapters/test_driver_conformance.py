"""The driver conformance suite on every driver and loop, and proof that it catches broken ones.

Each check of :data:`~presence_adapters.testing.DRIVER_CHECKS` runs as its own test, three
times: the asyncio driver under plain :func:`asyncio.run` (no anyio runner involved), and the
anyio driver under :func:`anyio.run` on asyncio and on trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import pytest
from waiting import wait_until

import presence_adapters.testing._support as support
import presence_adapters.testing.driver as driver_suite
from presence_adapters import MemoryHub, MemoryTransport, Presence, Transport, TransportError
from presence_adapters.drivers import anyio as anyio_driver
from presence_adapters.drivers import asyncio as asyncio_driver
from presence_adapters.drivers._node import MAX_PENDING
from presence_adapters.testing import DEADLINE, DRIVER_CHECKS, DriverCheck, NodeOpener, check_driver
from presence_core import (
    Heartbeat,
    ReplicaRef,
    TrackerConfig,
    TransferAck,
    TransferRequest,
    decode_message,
    encode_message,
)

Runner = Callable[[DriverCheck], None]


def on_asyncio(check: DriverCheck) -> None:
    asyncio.run(check(asyncio_driver.open_node))


def on_anyio_asyncio(check: DriverCheck) -> None:
    anyio.run(check, anyio_driver.open_node, backend="asyncio")


def on_anyio_trio(check: DriverCheck) -> None:
    anyio.run(check, anyio_driver.open_node, backend="trio")


RUNNERS: dict[str, Runner] = {
    "asyncio-driver": on_asyncio,
    "anyio-driver-on-asyncio": on_anyio_asyncio,
    "anyio-driver-on-trio": on_anyio_trio,
}


@pytest.mark.parametrize("runner", list(RUNNERS.values()), ids=list(RUNNERS))
@pytest.mark.parametrize("check", DRIVER_CHECKS, ids=lambda check: check.__name__)
def test_driver(check: DriverCheck, runner: Runner) -> None:
    runner(check)


def test_check_driver_runs_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def recorder(name: str) -> DriverCheck:
        async def check(open_node: NodeOpener) -> None:
            ran.append(name)
            if name == "second":
                raise AssertionError("it broke")

        check.__name__ = name
        return check

    checks = (recorder("first"), recorder("second"), recorder("third"))
    monkeypatch.setattr(driver_suite, "DRIVER_CHECKS", checks)
    with pytest.raises(AssertionError, match=r"^second: it broke$"):
        asyncio.run(check_driver(asyncio_driver.open_node))
    assert ran == ["first", "second"]


# ---------------------------------------------------------------------- broken drivers


def mute_on_exit(open_node: NodeOpener) -> NodeOpener:
    """A driver that leaves without a word (it abandons the node instead of saying goodbye)."""

    def broken(transport: Transport | None = None, **options: Any) -> Any:
        @contextlib.asynccontextmanager
        async def run() -> AsyncIterator[Presence]:
            async with open_node(transport, **options) as presence:
                try:
                    yield presence
                finally:
                    await presence.abandon()

        return run()

    return broken


def leaks_a_task(open_node: NodeOpener) -> NodeOpener:
    """A driver that leaves a task running after its ``async with``."""

    def broken(transport: Transport | None = None, **options: Any) -> Any:
        @contextlib.asynccontextmanager
        async def run() -> AsyncIterator[Presence]:
            async with open_node(transport, **options) as presence:
                yield presence
            forever: Coroutine[Any, Any, object] = asyncio.Event().wait()
            asyncio.get_running_loop().create_task(forever)

        return run()

    return broken


class _Litter:
    """Something a sloppy driver drops: it warns and fails when collected."""

    def __del__(self) -> None:
        warnings.warn("an unclosed stream", ResourceWarning, stacklevel=1)
        raise RuntimeError("a failure nobody can catch")


def drops_litter(open_node: NodeOpener) -> NodeOpener:
    """A driver that leaves an unclosed resource behind (a warning and an unraisable error)."""

    def broken(transport: Transport | None = None, **options: Any) -> Any:
        @contextlib.asynccontextmanager
        async def run() -> AsyncIterator[Presence]:
            litter: list[object] = [_Litter()]
            litter.append(litter)  # a cycle: only the garbage collector frees it
            async with open_node(transport, **options) as presence:
                yield presence
            del litter

        return run()

    return broken


class Unclosable:
    """A transport whose ``aclose`` does nothing."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_payload = inner.max_payload

    async def broadcast(self, data: bytes) -> None:
        await self.inner.broadcast(data)

    async def send(self, to: str, data: bytes) -> None:
        await self.inner.send(to, data)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    async def aclose(self) -> None:
        pass


def never_closes(open_node: NodeOpener) -> NodeOpener:
    """A driver that forgets to close its transport."""

    def broken(transport: Transport | None = None, **options: Any) -> Any:
        assert transport is not None
        return open_node(Unclosable(transport), **options)

    return broken


@pytest.mark.parametrize(
    ("breakage", "check", "message"),
    [
        (mute_on_exit, "check_graceful_shutdown", "must announce its departure"),
        (mute_on_exit, "check_cancelled_node_leaves_gracefully", "must announce its departure"),
        (leaks_a_task, "check_two_nodes_converge", "left behind a task still running"),
        (never_closes, "check_two_nodes_converge", "transports still connected"),
        (drops_litter, "check_two_nodes_converge", "ResourceWarning: an unclosed stream"),
        (drops_litter, "check_two_nodes_converge", "unraisable exception: RuntimeError"),
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_broken_drivers_fail(
    breakage: Callable[[NodeOpener], NodeOpener],
    check: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A departure that is never announced fails after the deadline: make that short.
    monkeypatch.setattr(driver_suite, "DEADLINE", 0.3)
    monkeypatch.setattr(support, "DEADLINE", 0.3)
    broken = breakage(asyncio_driver.open_node)
    with pytest.raises(AssertionError, match=message):
        asyncio.run(getattr(driver_suite, check)(broken))


def test_fast_configs_are_valid() -> None:
    # The suite's configs keep idle heartbeats well inside the down period (no false downs).
    for config in (driver_suite.FAST, driver_suite.CALM, driver_suite.FLOOD_CONFIG):
        assert isinstance(config, TrackerConfig)
        heartbeat = (config.max_silent_periods + 1) * config.broadcast_period
        assert config.effective_down_period >= 2.5 * heartbeat


# ---------------------------------------------------------------------- beyond the suite
#
# What the two drivers built on NodeLoops do beyond the public suite: back-pressure onto the
# transport, a failed goodbye or close, entering twice. Each runs on the three runners.


class Gated(support.DelegatingTransport):
    """A transport whose sends wait until :attr:`open` is set, and can be made to fail."""

    inner: MemoryTransport

    def __init__(self, inner: MemoryTransport) -> None:
        super().__init__(inner)
        self.open = anyio.Event()
        self.open.set()
        self.fail_sends = False
        self.fail_close = False

    async def _pass(self) -> None:
        if self.fail_sends:
            raise TransportError("the broker went away")
        await self.open.wait()

    async def broadcast(self, data: bytes) -> None:
        await self._pass()
        await self.inner.broadcast(data)

    async def send(self, to: str, data: bytes) -> None:
        await self._pass()
        await self.inner.send(to, data)

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self.fail_close:
            raise TransportError("the broker did not say goodbye")


REQUESTS = 3 * MAX_PENDING


async def back_pressure(open_node: NodeOpener) -> None:
    hub = MemoryHub()
    gated = Gated(hub.connect("a"))
    # a answers transfer requests only from replicas it knows, one per broadcast period each:
    # many askers, each introduced by a heartbeat (which makes a send nothing).
    askers = {ReplicaRef(f"b{i}", 1): hub.connect(f"b{i}") for i in range(REQUESTS)}
    async with open_node(gated, config=driver_suite.CALM) as a:
        for ref, asker in askers.items():
            await asker.send("a", encode_message(Heartbeat(sender=ref, clock={ref: 0})))
        await wait_until(lambda: len(a.pump.tracker.replicas()) == REQUESTS, "a to know them")
        introduced = a.stats.received
        gated.open = anyio.Event()  # the transport stops taking messages
        for ref, asker in askers.items():
            request = TransferRequest(request_id=1, sender=ref, clock={})
            await asker.send("a", encode_message(request))  # each asks a for a reply
        await wait_until(lambda: a.pump.pending >= MAX_PENDING, "a's replies to pile up")
        await anyio.wait_all_tasks_blocked()
        # a stopped reading: the rest of the requests wait in the transport, not in memory
        # At most MAX_PENDING replies wait, plus the batch the send loop holds (no more than
        # MAX_PENDING either).
        received = a.stats.received - introduced
        assert received <= 2 * MAX_PENDING < REQUESTS
        await anyio.wait_all_tasks_blocked()
        assert a.stats.received - introduced == received
        gated.open.set()
        with anyio.fail_after(DEADLINE):
            for asker in askers.values():
                while not isinstance(decode_message(await asker.receive()), TransferAck):
                    pass
        assert a.stats.received - introduced == REQUESTS
    for asker in askers.values():
        await asker.aclose()


async def failed_goodbye_and_close(open_node: NodeOpener) -> None:
    hub = MemoryHub()
    gated = Gated(hub.connect("a"))
    async with open_node(gated, config=driver_suite.CALM) as a:
        a.track("conn", "room", "alice", {})
        gated.fail_sends = gated.fail_close = True
        # Leaving at once: the loops never see the broken transport, the goodbye does.
    assert a.closed
    assert gated.inner.closed


class FirstTickNow(random.Random):
    """Jitter of zero: the first tick is due as soon as the node starts."""

    def random(self) -> float:
        return 0.0


async def stopping_with_a_tick_due_and_a_broken_transport(open_node: NodeOpener) -> None:
    hub = MemoryHub()
    gated = Gated(hub.connect("a"))
    async with open_node(gated, config=driver_suite.CALM, rng=FirstTickNow()) as a:
        a.track("conn", "room", "alice", {})
        gated.fail_sends = True
        # Leaving before the loops ever ran: on anyio they still run until their first await,
        # so the send loop ticks and its broadcast fails while the node is already stopping.
    assert a.closed
    assert gated.inner.closed


async def entered_twice(open_node: NodeOpener) -> None:
    node = open_node(config=driver_suite.FAST)
    async with node:
        pass
    with pytest.raises(RuntimeError):
        async with node:
            pass


async def failure_during_a_failing_body(open_node: NodeOpener) -> None:
    hub = MemoryHub()

    async def body() -> None:
        async with open_node(hub.connect("a"), config=driver_suite.FAST):
            hub.fail("a")
            try:
                await anyio.sleep_forever()
            finally:
                raise ValueError("the cleanup failed too")

    with pytest.raises(TransportError) as raised:
        await body()
    assert isinstance(raised.value.__context__, ValueError)


@pytest.mark.parametrize("runner", list(RUNNERS.values()), ids=list(RUNNERS))
def test_back_pressure_onto_the_transport(runner: Runner) -> None:
    runner(back_pressure)


@pytest.mark.parametrize("runner", list(RUNNERS.values()), ids=list(RUNNERS))
def test_a_failed_goodbye_and_close_are_logged(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="presence_adapters")
    runner(failed_goodbye_and_close)
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not announce its departure" in message for message in messages)
    assert any("could not close its transport cleanly" in message for message in messages)


@pytest.mark.parametrize("runner", list(RUNNERS.values()), ids=list(RUNNERS))
def test_a_loop_failing_while_the_node_stops_does_not_escape(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="presence_adapters")
    runner(stopping_with_a_tick_due_and_a_broken_transport)
    messages = [record.getMessage() for record in caplog.records]
    assert any("could not announce its departure" in message for message in messages)


@pytest.mark.parametrize("runner", list(RUNNERS.values()), ids=list(RUNNERS))
def test_a_node_is_entered_once(runner: Runner) -> None:
    runner(entered_twice)


@pytest.mark.parametrize("runner", list(RUNNERS.values()), ids=list(RUNNERS))
def test_the_failure_wins_over_the_body_error_it_caused(runner: Runner) -> None:
    runner(failure_during_a_failing_body)
