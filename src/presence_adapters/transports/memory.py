"""An in-process pub/sub hub: the transport for nodes that share one Python process.

:class:`MemoryHub` is a real transport, not only a test double: several trackers in one process
(one per worker of an in-process cluster, or one per tenant) talk through it, and a single node
with no broker uses a private hub. It is bounded everywhere: each member's inbox holds at most
``inbox_messages`` messages and ``inbox_bytes`` bytes, and a message that does not fit is dropped
for that member (counted in :attr:`MemoryHub.stats`), as a broker drops a slow subscriber's
messages. The replication protocol repairs lost messages by itself, so a slow node catches up
instead of stalling the others.

For tests it injects faults per link (one direction of one pair of members): loss, delay with
jitter (which reorders), and partitions. Randomness comes from the ``rng`` the hub is given, so a
seeded hub drops the same messages every run.

Several clusters can share one hub: members only hear members of their own ``namespace``.

The hub works on every event loop the drivers support (asyncio with the standard library only,
anyio on asyncio or trio): it never imports one, and all its members must live on one loop.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable

import attrs

from presence_adapters._errors import PayloadTooLarge, TransportClosed, TransportError
from presence_adapters._runtime import AsyncEvent, Runtime, current_runtime
from presence_core import TrackerConfig

__all__ = ["HubStats", "LinkFaults", "MemoryHub", "MemoryTransport"]

DEFAULT_MAX_PAYLOAD = TrackerConfig().max_message_bytes
"""The hub's default ``max_payload``: the core's default ``max_message_bytes`` (1 MiB)."""


def _probability(_instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], not {value!r}")


def _seconds(_instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class LinkFaults:
    """What happens to messages on one link (one direction between two members).

    Attributes:
        loss: probability that a message is lost.
        delay: seconds every message is held back.
        jitter: up to this many more seconds, drawn per message (so messages overtake each other).
        blocked: every message is lost (a partition).
    """

    loss: float = attrs.field(default=0.0, validator=_probability)
    delay: float = attrs.field(default=0.0, validator=_seconds)
    jitter: float = attrs.field(default=0.0, validator=_seconds)
    blocked: bool = False


@attrs.define(kw_only=True)
class HubStats:
    """Counters of a hub (they only grow).

    Attributes:
        delivered: messages put in a member's inbox.
        dropped_full: messages dropped because the receiver's inbox was full.
        dropped_faults: messages dropped by injected loss or a partition.
        dropped_unknown: messages sent to a name no member holds.
    """

    delivered: int = 0
    dropped_full: int = 0
    dropped_faults: int = 0
    dropped_unknown: int = 0


def _positive_int(what: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be an int >= 1, not {value!r}")
    return value


class MemoryHub:
    """The bus that :class:`MemoryTransport` members of one process share.

    Args:
        max_payload: the largest message, in bytes.
        inbox_messages: how many undelivered messages one member may hold.
        inbox_bytes: how many undelivered bytes one member may hold.
        rng: the randomness of injected loss and jitter (seed it for reproducible faults).
    """

    def __init__(
        self,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        inbox_messages: int = 10_000,
        inbox_bytes: int = 256 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        self.max_payload = _positive_int("max_payload", max_payload)
        self.inbox_messages = _positive_int("inbox_messages", inbox_messages)
        self.inbox_bytes = _positive_int("inbox_bytes", inbox_bytes)
        self.stats = HubStats()
        self._rng = rng if rng is not None else random.Random()
        self._members: dict[tuple[str, str], MemoryTransport] = {}
        self._faults: dict[tuple[str, str, str], LinkFaults] = {}

    def __repr__(self) -> str:
        return f"<MemoryHub members={len(self._members)}>"

    def connect(self, name: str, *, namespace: str = "default") -> MemoryTransport:
        """Join the cluster ``namespace`` as ``name``.

        Raises:
            ValueError: ``name`` or ``namespace`` is not a non-empty str, or the name is taken
                in that namespace by a member still connected.
        """
        for what, value in (("name", name), ("namespace", namespace)):
            if type(value) is not str or not value:
                raise ValueError(f"{what} must be a non-empty str, not {value!r}")
        if (namespace, name) in self._members:
            raise ValueError(f"{name!r} is already connected to namespace {namespace!r}")
        member = MemoryTransport(self, name, namespace)
        self._members[namespace, name] = member
        return member

    def members(self, namespace: str = "default") -> list[str]:
        """The names connected to ``namespace``, sorted."""
        return sorted(name for ns, name in self._members if ns == namespace)

    # ------------------------------------------------------------------ fault injection

    def set_faults(
        self, src: str, dst: str, faults: LinkFaults | None, *, namespace: str = "default"
    ) -> None:
        """Apply ``faults`` to messages from ``src`` to ``dst`` (``None`` clears them)."""
        if faults is None:
            self._faults.pop((namespace, src, dst), None)
        else:
            self._faults[namespace, src, dst] = faults

    def partition(
        self,
        side: Iterable[str],
        other: Iterable[str],
        *,
        one_way: bool = False,
        namespace: str = "default",
    ) -> None:
        """Block every link from ``side`` to ``other`` (and back, unless ``one_way``)."""
        side, other = list(side), list(other)
        blocked = LinkFaults(blocked=True)
        for a in side:
            for b in other:
                self.set_faults(a, b, blocked, namespace=namespace)
                if not one_way:
                    self.set_faults(b, a, blocked, namespace=namespace)

    def heal(self, *, namespace: str | None = None) -> None:
        """Clear every injected fault (of one namespace, or of all)."""
        for link in list(self._faults):
            if namespace is None or link[0] == namespace:
                del self._faults[link]

    def fail(
        self, name: str, error: BaseException | None = None, *, namespace: str = "default"
    ) -> None:
        """Make a member's transport fail, as a broken connection would: its waiting and later
        calls raise ``error`` (default: :class:`~presence_adapters.TransportError`).

        Raises:
            KeyError: no member of that name is connected.
        """
        member = self._members[namespace, name]
        member._fail(error if error is not None else TransportError(f"{name!r} was failed"))

    # ------------------------------------------------------------------ delivery

    def _send(self, src: MemoryTransport, dst_name: str, data: bytes, now: float) -> None:
        dst = self._members.get((src.namespace, dst_name))
        if dst is None or dst is src:
            self.stats.dropped_unknown += 1
            return
        self._deliver(src, dst, data, now)

    def _broadcast(self, src: MemoryTransport, data: bytes, now: float) -> None:
        for (namespace, _name), dst in sorted(self._members.items()):
            if namespace == src.namespace and dst is not src:
                self._deliver(src, dst, data, now)

    def _deliver(self, src: MemoryTransport, dst: MemoryTransport, data: bytes, now: float) -> None:
        at = -math.inf  # deliver at once
        faults = self._faults.get((src.namespace, src.name, dst.name))
        if faults is not None:
            if faults.blocked or (faults.loss and self._rng.random() < faults.loss):
                self.stats.dropped_faults += 1
                return
            if faults.delay or faults.jitter:
                at = now + faults.delay + self._rng.uniform(0.0, faults.jitter)
        if dst._accept(data, at):
            self.stats.delivered += 1
        else:
            self.stats.dropped_full += 1

    def _leave(self, member: MemoryTransport) -> None:
        if self._members.get((member.namespace, member.name)) is member:
            del self._members[member.namespace, member.name]


class MemoryTransport:
    """One member of a :class:`MemoryHub` (made by :meth:`MemoryHub.connect`)."""

    def __init__(self, hub: MemoryHub, name: str, namespace: str) -> None:
        self._hub = hub
        self._name = name
        self.namespace = namespace
        # (deliver at, sequence, data): a heap, so delayed messages wait while others overtake
        # them; with no delay every entry has ``at == -inf`` and the sequence keeps arrival order.
        self._inbox: list[tuple[float, int, bytes]] = []
        self._inbox_bytes = 0
        self._sequence = 0
        self._waiter: AsyncEvent | None = None
        self._runtime: Runtime | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "closed" if self._error is not None else "open"
        return f"<MemoryTransport {self.namespace}/{self._name} {state} inbox={len(self._inbox)}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_payload(self) -> int:
        return self._hub.max_payload

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called (or the hub failed this member)."""
        return self._error is not None

    def _rt(self) -> Runtime:
        if self._runtime is None:
            self._runtime = current_runtime()
        return self._runtime

    def _raise_error(self) -> None:
        error = self._error
        if isinstance(error, TransportClosed):
            raise TransportClosed(str(error))  # a fresh one each time: no traceback pile-up
        if error is not None:
            raise error

    def _check(self, data: bytes) -> bytes:
        self._raise_error()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)  # our own copy: the caller may reuse a bytearray
        if len(data) > self._hub.max_payload:
            raise PayloadTooLarge(len(data), self._hub.max_payload)
        return data

    async def broadcast(self, data: bytes) -> None:
        data = self._check(data)
        runtime = self._rt()
        self._hub._broadcast(self, data, runtime.clock())
        await runtime.checkpoint()

    async def send(self, to: str, data: bytes) -> None:
        if type(to) is not str:
            raise TypeError(f"to must be a str, not {type(to).__name__}")
        data = self._check(data)
        runtime = self._rt()
        self._hub._send(self, to, data, runtime.clock())
        await runtime.checkpoint()

    async def receive(self) -> bytes:
        runtime = self._rt()
        while True:
            self._raise_error()
            deadline = None
            if self._inbox:
                at = self._inbox[0][0]
                if at == -math.inf or at <= runtime.clock():
                    _, _, data = heapq.heappop(self._inbox)
                    self._inbox_bytes -= len(data)
                    return data
                deadline = at
            waiter = self._waiter = runtime.event()
            await runtime.wait(waiter, deadline)

    async def aclose(self) -> None:
        if self._error is None:
            self._fail(TransportClosed(f"{self._name!r} is closed"))
        await self._rt().checkpoint()

    def _accept(self, data: bytes, at: float) -> bool:
        hub = self._hub
        if (
            len(self._inbox) >= hub.inbox_messages
            or self._inbox_bytes + len(data) > hub.inbox_bytes
        ):
            return False
        self._sequence += 1
        heapq.heappush(self._inbox, (at, self._sequence, data))
        self._inbox_bytes += len(data)
        self._wake()
        return True

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._inbox.clear()
        self._inbox_bytes = 0
        self._hub._leave(self)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None
