"""The Transport conformance suite: the memory hub passes it, and broken transports fail it.

Every check runs as its own test, on asyncio and on trio, against a hub with the default
``max_payload`` and against one with a small limit. Then deliberately broken transports (each a
thin wrapper that breaks one rule) show that the suite notices, with a message naming the rule.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator

import pytest
from waiting import anyio_backend as anyio_backend  # the fixture, for the anyio marker

import presence_adapters.testing._support as support
import presence_adapters.testing.transport as transport_suite
from presence_adapters import MemoryHub, MemoryTransport, PayloadTooLarge, Transport
from presence_adapters.testing import (
    TRANSPORT_CHECKS,
    TransportCheck,
    TransportFactory,
    check_transport,
)

pytestmark = pytest.mark.anyio


def memory_factory(hub: MemoryHub) -> TransportFactory:
    async def connect(namespace: str, name: str) -> Transport:
        return hub.connect(name, namespace=namespace)

    return connect


@pytest.fixture(params=[None, 1024], ids=["default-limit", "small-limit"])
def hub(request: pytest.FixtureRequest) -> Iterator[MemoryHub]:
    limit: int | None = request.param
    hub = MemoryHub() if limit is None else MemoryHub(max_payload=limit)
    yield hub
    assert repr(hub) == "<MemoryHub members=0>", "a check left a member connected"


@pytest.mark.parametrize("check", TRANSPORT_CHECKS, ids=lambda check: check.__name__)
async def test_memory_transport(check: TransportCheck, hub: MemoryHub) -> None:
    await check(memory_factory(hub))


async def test_check_transport_runs_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def recorder(name: str) -> TransportCheck:
        async def check(connect: TransportFactory) -> None:
            ran.append(name)
            if name == "second":
                raise AssertionError("it broke")

        check.__name__ = name
        return check

    checks = (recorder("first"), recorder("second"), recorder("third"))
    monkeypatch.setattr(transport_suite, "TRANSPORT_CHECKS", checks)
    with pytest.raises(AssertionError, match=r"^second: it broke$"):
        await check_transport(memory_factory(MemoryHub()))
    assert ran == ["first", "second"]
    monkeypatch.setattr(transport_suite, "TRANSPORT_CHECKS", checks[:1])
    await check_transport(memory_factory(MemoryHub()))


def test_the_suite_needs_anyio(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "presence_adapters.testing" or name.startswith("presence_adapters.testing."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "anyio", None)  # what an uninstalled module looks like
    with pytest.raises(ImportError, match=r"pip install 'presence-core\[anyio\]'"):
        importlib.import_module("presence_adapters.testing")


# ---------------------------------------------------------------------- broken transports


class Wrapper(support.DelegatingTransport):
    """A member of a memory hub that breaks one rule (subclasses override one method)."""

    inner: MemoryTransport

    def __init__(self, inner: MemoryTransport) -> None:
        super().__init__(inner)


class HearsItself(Wrapper):
    async def broadcast(self, data: bytes) -> None:
        await self.inner.broadcast(data)
        self.inner._accept(data, -float("inf"))


class SwapsPairs(Wrapper):
    """Holds each message sent back until the next one has gone out (so swaps neighbours)."""

    held: tuple[str, bytes] | None = None

    async def send(self, to: str, data: bytes) -> None:
        if self.held is None:
            self.held = (to, data)
            return
        await self.inner.send(to, data)
        await self._release()

    async def broadcast(self, data: bytes) -> None:
        await self.inner.broadcast(data)
        await self._release()

    async def _release(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            await self.inner.send(*held)


class Truncates(Wrapper):
    async def send(self, to: str, data: bytes) -> None:
        await self.inner.send(to, data[:1000])


class NoLimit(Wrapper):
    @property
    def max_payload(self) -> int:
        return self.inner.max_payload - 1  # claims less than it carries, so never refuses


class SendsAfterClose(Wrapper):
    async def send(self, to: str, data: bytes) -> None:
        if not self.inner.closed:
            await self.inner.send(to, data)


class WrongName(Wrapper):
    @property
    def name(self) -> str:
        return "someone-else"


class Deaf(Wrapper):
    """Loses every message sent to one name (so, to everybody but broadcasts)."""

    async def send(self, to: str, data: bytes) -> None:
        if len(data) > 2000:
            return
        await self.inner.send(to, data)


def broken_factory(hub: MemoryHub, wrapper: type[Wrapper]) -> TransportFactory:
    async def connect(namespace: str, name: str) -> Transport:
        return wrapper(hub.connect(name, namespace=namespace))

    return connect


@pytest.mark.parametrize(
    ("wrapper", "check", "message"),
    [
        (HearsItself, "check_broadcast_reaches_every_other_member", "own broadcast"),
        (SwapsPairs, "check_per_sender_fifo", "out of order"),
        (SwapsPairs, "check_send_reaches_only_the_named_member", "marker"),
        (Truncates, "check_max_payload", "payload sent"),
        (Deaf, "check_max_payload", "received nothing"),
        (NoLimit, "check_oversized_payload_is_refused", "did not raise PayloadTooLarge"),
        (SendsAfterClose, "check_use_after_close_raises", "send on a closed transport"),
        (WrongName, "check_properties", "says its name is 'someone-else'"),
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
async def test_broken_transports_fail(
    wrapper: type[Wrapper], check: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_suite, "DEADLINE", 0.2)  # a lost message fails fast
    hub = MemoryHub(max_payload=4096)
    with pytest.raises(AssertionError, match=message):
        await getattr(transport_suite, check)(broken_factory(hub, wrapper))


async def test_a_leaky_bus_fails_the_namespace_check() -> None:
    hub = MemoryHub()

    async def connect(namespace: str, name: str) -> Transport:
        # One cluster for everybody: the second "a" gets another name, but hears the first.
        suffix = "" if name not in hub.members() else "-again"
        return hub.connect(name + suffix)

    with pytest.raises(AssertionError, match=r"only hear members of its namespace|expected"):
        await transport_suite.check_namespaces_are_isolated(connect)


async def test_payload_too_large_reports_size_and_limit() -> None:
    hub = MemoryHub(max_payload=3)
    member = hub.connect("a")
    with pytest.raises(PayloadTooLarge) as raised:
        await member.broadcast(b"four")
    assert (raised.value.size, raised.value.limit) == (4, 3)
    await member.aclose()
