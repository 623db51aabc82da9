"""The Transport conformance suite: what every :class:`~presence_adapters.Transport` must do.

Give the suite a factory that connects a new member of your transport::

    async def connect(namespace: str, name: str) -> Transport:
        ...  # a connected transport: receive() already gets what is sent to it from now on

    await check_transport(connect)          # every check, in order
    await check_per_sender_fifo(connect)    # or one of them (see TRANSPORT_CHECKS)

Each check connects its own members under namespaces no other check uses (with a random suffix,
so leftovers of an earlier run on a shared broker do not interfere), closes every member it
connected, and raises :class:`AssertionError` saying what went wrong. Every wait is bounded by
:data:`~presence_adapters.testing.DEADLINE`.

Ordering assumptions
====================

The suite relies on, and checks, one ordering guarantee only: the messages one member sends
another (by :meth:`~presence_adapters.Transport.send` or
:meth:`~presence_adapters.Transport.broadcast`, mixed) arrive in the order they were sent. To
prove that a message was *not* delivered, a check therefore sends a marker from the same sender
afterwards: once the marker arrived, the message would have arrived before it. Where no such
marker exists (a member must not hear its own broadcast), the check waits
:data:`~presence_adapters.testing.QUIET_PERIOD` for nothing to come. Nothing is assumed
about the order of messages from different senders.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

import anyio

from presence_adapters._errors import PayloadTooLarge, TransportClosed
from presence_adapters.transports._base import Transport

from ._support import DEADLINE, QUIET_PERIOD, failing_after, run_checks

__all__ = [
    "TRANSPORT_CHECKS",
    "TransportCheck",
    "TransportFactory",
    "check_binary_payloads",
    "check_broadcast_reaches_every_other_member",
    "check_cancelled_receive_loses_nothing",
    "check_close_is_idempotent",
    "check_close_wakes_a_pending_receive",
    "check_closed_member_drops_out",
    "check_empty_payload",
    "check_max_payload",
    "check_namespaces_are_isolated",
    "check_oversized_payload_is_refused",
    "check_per_sender_fifo",
    "check_properties",
    "check_send_reaches_only_the_named_member",
    "check_send_to_an_unknown_name_is_dropped",
    "check_transport",
    "check_use_after_close_raises",
]

TransportFactory = Callable[[str, str], Awaitable[Transport]]
"""``await connect(namespace, name)``: a new, connected member of the transport under test.

Members of one namespace form one cluster; members of different namespaces must never hear each
other, even under the same names.
"""

TransportCheck = Callable[[TransportFactory], Coroutine[Any, Any, None]]
"""One check of the suite: ``await check(connect)`` raises :class:`AssertionError` on failure."""

FIFO_MESSAGES = 200
"""How many messages the ordering check sends from one member to another."""


# ---------------------------------------------------------------------- helpers


def _namespace(check: str) -> str:
    return f"conformance-{check}-{secrets.token_hex(4)}"


@contextlib.asynccontextmanager
async def _members(
    connect: TransportFactory, namespace: str, names: Sequence[str]
) -> AsyncIterator[list[Transport]]:
    """Connect ``names`` in ``namespace``; close them all on exit (whatever happened)."""
    async with contextlib.AsyncExitStack() as stack:
        members: list[Transport] = []
        for name in names:
            with failing_after(DEADLINE, f"connecting {name!r} to namespace {namespace!r}"):
                member = await connect(namespace, name)
            stack.push_async_callback(_close_quietly, member)
            members.append(member)
        yield members


async def _close_quietly(member: Transport) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(DEADLINE):
        await member.aclose()


async def _receive(member: Transport, expected: str) -> bytes:
    """The next message of ``member``, within the deadline."""
    with anyio.move_on_after(DEADLINE):
        data = await member.receive()
        if type(data) is not bytes:
            raise AssertionError(
                f"{member.name!r} received a {type(data).__name__}, not bytes, waiting for "
                f"{expected}"
            )
        return data
    raise AssertionError(
        f"{member.name!r} received nothing within {DEADLINE:g} s; expected {expected}"
    )


async def _expect(member: Transport, expected: bytes, what: str) -> None:
    data = await _receive(member, what)
    if data != expected:
        raise AssertionError(
            f"{member.name!r} expected {what} ({_show(expected)}), but received {_show(data)}"
        )


async def _expect_quiet(member: Transport, why: str) -> None:
    """Nothing arrives at ``member`` for :data:`QUIET_PERIOD` seconds."""
    with anyio.move_on_after(QUIET_PERIOD):
        data = await member.receive()
        raise AssertionError(f"{member.name!r} received {_show(data)}, but {why}")


def _show(data: bytes) -> str:
    if len(data) <= 40:
        return repr(data)
    return f"{len(data)} bytes starting {data[:24]!r}"


def _pattern(size: int) -> bytes:
    """``size`` bytes in which a shifted, truncated or corrupted run is visible."""
    period = bytes(range(251))  # a prime period: no power-of-two chunking lines up with it
    return (period * (size // len(period) + 1))[:size]


def _check_properties(member: Transport, name: str) -> None:
    if not isinstance(member, Transport):
        raise AssertionError(
            f"{type(member).__name__} does not implement the Transport protocol "
            "(name, max_payload, broadcast, send, receive, aclose)"
        )
    if member.name != name:
        raise AssertionError(
            f"the transport connected as {name!r} says its name is {member.name!r}"
        )
    limit = member.max_payload
    if type(limit) is not int or limit < 1:
        raise AssertionError(f"max_payload must be an int >= 1, not {limit!r}")


# ---------------------------------------------------------------------- checks


async def check_properties(connect: TransportFactory) -> None:
    """A connected member implements the protocol, has the name it was given and a sane
    ``max_payload``."""
    async with _members(connect, _namespace("properties"), ["alpha"]) as (alpha,):
        _check_properties(alpha, "alpha")


async def check_broadcast_reaches_every_other_member(connect: TransportFactory) -> None:
    """A broadcast reaches every other member of the namespace, once, and never the sender."""
    async with _members(connect, _namespace("broadcast"), ["a", "b", "c"]) as (a, b, c):
        await a.broadcast(b"hello from a")
        await _expect(b, b"hello from a", "a's broadcast")
        await _expect(c, b"hello from a", "a's broadcast")
        # b heard the broadcast before it replied, so a's own copy (if the bus wrongly loops it
        # back) would be in a's inbox by now or very soon.
        await b.send("a", b"reply from b")
        await _expect(a, b"reply from b", "b's reply (its own broadcast must not come back)")
        await _expect_quiet(a, "a sender must not receive its own broadcast")
        await c.broadcast(b"end from c")
        await _expect(b, b"end from c", "c's broadcast, after a's broadcast and nothing else")


async def check_send_reaches_only_the_named_member(connect: TransportFactory) -> None:
    """A message sent to one member reaches that member and nobody else."""
    async with _members(connect, _namespace("send"), ["a", "b", "c"]) as (a, b, c):
        await a.send("b", b"for b only")
        await a.broadcast(b"marker")
        await _expect(b, b"for b only", "the message a sent to b")
        await _expect(b, b"marker", "a's marker broadcast")
        # c heard the marker, which a sent after the message to b: that message is not coming.
        await _expect(c, b"marker", "a's marker broadcast (and not the message a sent to b)")


async def check_send_to_an_unknown_name_is_dropped(connect: TransportFactory) -> None:
    """A message to a name nobody holds is dropped silently: no error, nobody receives it."""
    async with _members(connect, _namespace("unknown"), ["a", "b"]) as (a, b):
        try:
            await a.send("nobody-has-this-name", b"lost")
        except Exception as exc:
            raise AssertionError(
                f"sending to a name nobody holds must be dropped silently, but raised {exc!r}"
            ) from exc
        await a.broadcast(b"marker")
        await _expect(b, b"marker", "a's marker (the message to an unknown name is dropped)")


async def check_per_sender_fifo(connect: TransportFactory) -> None:
    """Messages from one sender to one receiver arrive in the order they were sent, whether sent
    or broadcast, while another sender interleaves its own."""
    async with _members(connect, _namespace("fifo"), ["a", "b", "c"]) as (a, b, c):
        expected: dict[str, list[bytes]] = {"a": [], "c": []}
        for index in range(FIFO_MESSAGES):
            for sender in (a, c):
                data = f"{sender.name}:{index}".encode()
                if index % 3 == 0:
                    await sender.broadcast(data)
                else:
                    await sender.send("b", data)
                expected[sender.name].append(data)
        got: dict[str, list[bytes]] = {"a": [], "c": []}
        missing = ""
        try:
            for _ in range(2 * FIFO_MESSAGES):
                data = await _receive(b, "the messages of a and c")
                sender_name = data.split(b":", 1)[0].decode("ascii", "replace")
                if sender_name not in got:
                    raise AssertionError(f"b received a message nobody sent: {_show(data)}")
                got[sender_name].append(data)
        except AssertionError as exc:
            missing = f" ({exc})"  # report the order first: it says more than the loss
        for sender_name, sent in expected.items():
            received = got[sender_name]
            first = next(
                (i for i, (x, y) in enumerate(zip(received, sent, strict=False)) if x != y), None
            )
            if first is not None:
                raise AssertionError(
                    f"the messages {sender_name} sent to b arrived out of order: message "
                    f"{first} was {received[first]!r}, expected {sent[first]!r}{missing}"
                )
        if missing:
            raise AssertionError(f"b did not receive every message, in order so far{missing}")
        # a's broadcasts also reached c, in order.
        for index in range(0, FIFO_MESSAGES, 3):
            await _expect(c, f"a:{index}".encode(), f"a's broadcast number {index}")


async def check_max_payload(connect: TransportFactory) -> None:
    """A payload of exactly ``max_payload`` bytes is carried intact, sent or broadcast."""
    async with _members(connect, _namespace("max-payload"), ["a", "b"]) as (a, b):
        data = _pattern(a.max_payload)
        await a.send("b", data)
        await _expect(b, data, f"the {len(data)}-byte payload sent")
        await a.broadcast(data)
        await _expect(b, data, f"the {len(data)}-byte payload broadcast")


async def check_oversized_payload_is_refused(connect: TransportFactory) -> None:
    """A payload of ``max_payload + 1`` bytes raises PayloadTooLarge and nothing is sent."""
    async with _members(connect, _namespace("oversized"), ["a", "b"]) as (a, b):
        limit = a.max_payload
        data = _pattern(limit + 1)
        calls: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("send", lambda: a.send("b", data)),
            ("broadcast", lambda: a.broadcast(data)),
        ]
        for how, call in calls:
            try:
                await call()
            except PayloadTooLarge as exc:
                if (exc.size, exc.limit) != (limit + 1, limit):
                    raise AssertionError(
                        f"PayloadTooLarge from {how} says size={exc.size}, limit={exc.limit}; "
                        f"expected size={limit + 1}, limit={limit}"
                    ) from exc
            else:
                raise AssertionError(
                    f"{how} of max_payload + 1 bytes did not raise PayloadTooLarge"
                )
        await a.send("b", b"marker")
        await _expect(b, b"marker", "a's marker (the oversized payloads are not sent)")


async def check_empty_payload(connect: TransportFactory) -> None:
    """An empty payload is a message like any other, sent or broadcast."""
    async with _members(connect, _namespace("empty"), ["a", "b"]) as (a, b):
        await a.send("b", b"")
        await a.broadcast(b"")
        await a.send("b", b"after")
        await _expect(b, b"", "the empty message sent")
        await _expect(b, b"", "the empty message broadcast")
        await _expect(b, b"after", "the message after the empty ones")


async def check_binary_payloads(connect: TransportFactory) -> None:
    """Payloads are opaque bytes: every byte value, and bytes that look like framing, arrive
    intact, one message per payload."""
    payloads = [
        bytes(range(256)),
        bytes(range(255, -1, -1)),
        b"\x00",
        b"\n",
        b"\r\n\r\n",
        b"\x00" * 17,
        b"$-1\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"PUB subject 5\r\nhello\r\n",
        b'{"v": 1}\n{"v": 2}',
        "h\u00e9llo \u2603".encode(),
        b"\xff\xfe\xfd",
    ]
    payloads += [bytes([value]) for value in range(256)]
    async with _members(connect, _namespace("binary"), ["a", "b"]) as (a, b):
        for index, data in enumerate(payloads):
            if index % 2:
                await a.broadcast(data)
            else:
                await a.send("b", data)
        for data in payloads:
            await _expect(b, data, "the binary payloads, each intact and in order")


async def check_namespaces_are_isolated(connect: TransportFactory) -> None:
    """Two clusters on one bus (two namespaces, the same member names) never hear each other."""
    first, second = _namespace("isolated-1"), _namespace("isolated-2")
    async with (
        _members(connect, first, ["a", "b"]) as (a1, b1),
        _members(connect, second, ["a", "b"]) as (a2, b2),
    ):
        await a1.broadcast(b"one: broadcast")
        await a1.send("b", b"one: sent")
        await a2.broadcast(b"two: broadcast")
        await a2.send("b", b"two: sent")
        await b1.send("a", b"one: reply")
        await b2.send("a", b"two: reply")
        await _expect(b1, b"one: broadcast", "the broadcast of its own namespace")
        await _expect(b1, b"one: sent", "the message of its own namespace")
        await _expect(b2, b"two: broadcast", "the broadcast of its own namespace")
        await _expect(b2, b"two: sent", "the message of its own namespace")
        await _expect(a1, b"one: reply", "the reply of its own namespace")
        await _expect(a2, b"two: reply", "the reply of its own namespace")
        heard: list[str] = []

        async def quiet(member: Transport, namespace: str) -> None:
            try:
                await _expect_quiet(member, f"it is in {namespace!r}")
            except AssertionError as exc:
                heard.append(str(exc))

        async with anyio.create_task_group() as group:  # one quiet period for all four
            for member, namespace in ((a1, first), (b1, first), (a2, second), (b2, second)):
                group.start_soon(quiet, member, namespace)
        if heard:
            raise AssertionError(
                "a member must only hear members of its own namespace: " + "; ".join(heard)
            )


async def check_close_is_idempotent(connect: TransportFactory) -> None:
    """``aclose`` can be called again (and again) without an error."""
    async with _members(connect, _namespace("close-twice"), ["a"]) as (a,):
        with failing_after(DEADLINE, "closing a transport"):
            await a.aclose()
            await a.aclose()
            await a.aclose()


async def check_use_after_close_raises(connect: TransportFactory) -> None:
    """After ``aclose``, send, broadcast and receive raise TransportClosed."""
    async with _members(connect, _namespace("after-close"), ["a", "b"]) as (a, _b):
        await a.aclose()
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("send", lambda: a.send("b", b"late")),
            ("broadcast", lambda: a.broadcast(b"late")),
            ("receive", a.receive),
        ]
        for how, call in calls:
            try:
                with failing_after(DEADLINE, f"{how} on a closed transport"):
                    await call()
            except TransportClosed:
                pass
            else:
                raise AssertionError(f"{how} on a closed transport did not raise TransportClosed")


async def check_close_wakes_a_pending_receive(connect: TransportFactory) -> None:
    """A receive waiting when the transport is closed wakes up with TransportClosed."""
    async with _members(connect, _namespace("close-wakes"), ["a"]) as (a,):
        outcome: list[BaseException | bytes] = []
        receiving = anyio.Event()

        async def receive() -> None:
            receiving.set()
            try:
                outcome.append(await a.receive())
            except Exception as exc:
                outcome.append(exc)

        with failing_after(DEADLINE, "a pending receive woken by aclose"):
            async with anyio.create_task_group() as group:
                group.start_soon(receive)
                await receiving.wait()
                await anyio.wait_all_tasks_blocked()
                await a.aclose()
        if len(outcome) != 1 or not isinstance(outcome[0], TransportClosed):
            raise AssertionError(
                f"a receive pending during aclose must raise TransportClosed, got {outcome!r}"
            )


async def check_cancelled_receive_loses_nothing(connect: TransportFactory) -> None:
    """Cancelling a waiting receive loses no message: the next receive gets the next message."""
    async with _members(connect, _namespace("cancel-receive"), ["a", "b"]) as (a, b):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(b.receive)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        await a.send("b", b"after the cancelled receive")
        await _expect(b, b"after the cancelled receive", "the message after a cancelled receive")


async def check_closed_member_drops_out(connect: TransportFactory) -> None:
    """A member that closed receives nothing more; sending to its name is dropped silently and
    the others carry on."""
    async with _members(connect, _namespace("drop-out"), ["a", "b", "c"]) as (a, b, c):
        await b.aclose()
        try:
            await a.send("b", b"to a closed member")
            await a.broadcast(b"after b left")
        except Exception as exc:
            raise AssertionError(
                f"sending while another member is closed must not raise, but raised {exc!r}"
            ) from exc
        await _expect(c, b"after b left", "a's broadcast after b closed")


TRANSPORT_CHECKS: tuple[TransportCheck, ...] = (
    check_properties,
    check_broadcast_reaches_every_other_member,
    check_send_reaches_only_the_named_member,
    check_send_to_an_unknown_name_is_dropped,
    check_per_sender_fifo,
    check_max_payload,
    check_oversized_payload_is_refused,
    check_empty_payload,
    check_binary_payloads,
    check_namespaces_are_isolated,
    check_close_is_idempotent,
    check_use_after_close_raises,
    check_close_wakes_a_pending_receive,
    check_cancelled_receive_loses_nothing,
    check_closed_member_drops_out,
)
"""Every transport check, in the order :func:`check_transport` runs them."""


async def check_transport(connect: TransportFactory) -> None:
    """Run every check of :data:`TRANSPORT_CHECKS` on the transport ``connect`` makes.

    Args:
        connect: ``await connect(namespace, name)`` returns a new connected member.

    Raises:
        AssertionError: the first check that failed, saying what went wrong.
    """
    await run_checks(TRANSPORT_CHECKS, connect)
