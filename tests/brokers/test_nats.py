"""The NATS transport against real nats-servers: conformance, clusters of nodes, outages.

Every test runs on asyncio (nats-py is asyncio-only); the anyio driver runs on asyncio, and on
trio it must refuse the transport. The server comes from ``PRESENCE_NATS_URL`` or is started by
the session (see ``nats_support``); the tests that stop, restart or configure a server start
their own. Every wait has a deadline: no test sleeps for a fixed time and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import secrets
import subprocess
import sys
import threading
import time

import anyio
import anyio.to_thread
import pytest
from nats_support import (
    CONFIG,
    DEADLINE,
    ServerFactory,
    cluster,
    connect,
    converge,
    free_port,
    receive,
    tasks,
    wait_until,
)
from nats_support import nats_servers as nats_servers  # the fixture
from nats_support import nats_url as nats_url  # the fixture

from presence_adapters import PayloadTooLarge, Presence, Transport, TransportClosed, TransportError
from presence_adapters.drivers.anyio import open_node as anyio_open_node
from presence_adapters.drivers.asyncio import open_node as asyncio_open_node
from presence_adapters.testing import QUIET_PERIOD, TRANSPORT_CHECKS, TransportCheck
from presence_adapters.testing.transport import (
    check_max_payload,
    check_oversized_payload_is_refused,
)
from presence_adapters.transports._broker import BrokerConnected, BrokerDisconnected
from presence_adapters.transports.nats import NatsTransport
from presence_core import Key, Keyring, LocalProtocolError, RejectReason, ReplicaStatus

pytestmark = pytest.mark.anyio

DRIVERS = {"asyncio": asyncio_open_node, "anyio": anyio_open_node}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only (trio is refused: see test_trio_is_refused)


def namespace(what: str) -> str:
    """A namespace no other test (nor an earlier run on a shared server) uses."""
    return f"test-{what}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------- conformance


@pytest.mark.parametrize("check", TRANSPORT_CHECKS, ids=lambda check: check.__name__)
async def test_conformance(check: TransportCheck, nats_url: str) -> None:
    before = tasks()

    async def connect_member(namespace: str, name: str) -> Transport:
        return await NatsTransport.connect(nats_url, name=name, namespace=namespace)

    await check(connect_member)
    await wait_until(lambda: not tasks() - before, "every task of the members ended")


async def test_the_servers_max_payload_is_respected(nats_servers: ServerFactory) -> None:
    server = nats_servers(max_payload=4096)

    async def connect_member(namespace: str, name: str) -> Transport:
        return await NatsTransport.connect(server.url, name=name, namespace=namespace)

    member = await NatsTransport.connect(server.url, name="a", namespace=namespace("payload"))
    try:
        assert member.max_payload == 4096
        with pytest.raises(PayloadTooLarge) as raised:
            await member.broadcast(bytes(4097))
        assert (raised.value.size, raised.value.limit) == (4097, 4096)
        assert member.stats.sent == 0
    finally:
        await member.aclose()
    await check_max_payload(connect_member)
    await check_oversized_payload_is_refused(connect_member)


# ---------------------------------------------------------------------- nodes


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("driver", ["asyncio", "anyio"])
async def test_nodes_converge(driver: str, count: int, nats_url: str) -> None:
    names = [f"node-{index}" for index in range(count)]
    async with cluster(DRIVERS[driver], nats_url, names, namespace("converge")) as members:
        nodes = [node for node, _, _ in members]
        await converge(nodes)
        for node in nodes:
            replicas = node.replicas()
            assert sorted(replicas) == sorted(name for name in names if name != node.name)
            assert all(info.status is ReplicaStatus.UP for info in replicas.values())
        nodes[0].untrack("conn", "room", f"user-{nodes[0].name}")
        nodes[-1].track("conn", "room", "late", {"n": 1})
        await converge(nodes, [f"user-{name}" for name in names[1:]] + ["late"])


@pytest.mark.parametrize("driver", ["asyncio", "anyio"])
async def test_a_sealed_cluster_converges_and_refuses_another_key(
    driver: str, nats_url: str
) -> None:
    """Authenticated replication over NATS: the nodes of one keyring replicate; a node sealing
    with another secret under the same key id is refused by each (counted, never applied), and
    one with no keyring too."""
    open_node, ns = DRIVERS[driver], namespace("sealed")
    keyring = Keyring(Key("2026-12", secrets.token_bytes(32)))
    forged = Keyring(Key("2026-12", secrets.token_bytes(32)))
    async with contextlib.AsyncExitStack() as stack:

        async def node(name: str, keys: Keyring | None) -> Presence:
            transport, _ = await connect(nats_url, name, ns)
            try:
                opened = await stack.enter_async_context(
                    open_node(transport, config=CONFIG, keyring=keys)
                )
            except BaseException:
                await transport.aclose()
                raise
            opened.track("conn", "room", f"user-{name}", {})
            return opened

        a, b = await node("a", keyring), await node("b", keyring)
        await converge([a, b])
        mallory, plain = await node("mallory", forged), await node("plain", None)

        def refused(node: Presence) -> int:
            return node.stats.rejected_by_reason.get(RejectReason.UNAUTHENTICATED, 0)

        await wait_until(
            lambda: all(refused(node) >= 6 for node in (a, b)),
            "a and b refuse several messages of mallory and plain",
        )
        await wait_until(lambda: plain.stats.malformed > 0, "plain drops the sealed messages")
        for sealed in (a, b):
            assert sorted(sealed.list("room")) == ["user-a", "user-b"]
            assert sorted(sealed.replicas()) == sorted({"a", "b"} - {sealed.name})
            assert sealed.tracker_stats().rejected == sealed.stats.rejected_by_reason
            assert {r for r in sealed.stats.rejected_by_reason if not r.normal} == {
                RejectReason.UNAUTHENTICATED
            }
        assert sorted(mallory.list("room")) == ["user-mallory"]
        b.untrack_conn("conn")
        await converge([a, b], ["user-a"])  # the cluster carries on


def test_trio_is_refused(nats_url: str) -> None:
    """The anyio driver on trio refuses the transport (connected on an asyncio loop of its own,
    in a thread) with a clear error, and leaves it open for its owner to close."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="asyncio for the NATS transport")
    thread.start()
    try:
        transport = asyncio.run_coroutine_threadsafe(
            NatsTransport.connect(nats_url, name="a", namespace=namespace("trio")), loop
        ).result(DEADLINE)
        try:

            async def open_on_trio() -> None:
                with pytest.raises(LocalProtocolError, match=r"needs asyncio.*running on trio"):
                    async with anyio_open_node(transport, config=CONFIG):
                        pass

            anyio.run(open_on_trio, backend="trio")
            assert not transport.closed
        finally:
            asyncio.run_coroutine_threadsafe(transport.aclose(), loop).result(DEADLINE)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DEADLINE)
        loop.close()


async def test_clusters_sharing_a_server_are_isolated(nats_url: str) -> None:
    """Three clusters with the same node names: two namespaces under one prefix, and the first
    namespace again under another prefix."""
    one, two = namespace("one"), namespace("two")
    async with (
        cluster(asyncio_open_node, nats_url, ["a", "b"], one) as first,
        cluster(asyncio_open_node, nats_url, ["a", "b"], two) as second,
        cluster(asyncio_open_node, nats_url, ["a", "b"], one, subject_prefix="other") as third,
    ):
        groups = {"first": first, "second": second, "third": third}
        for label, members in groups.items():
            members[0][0].track("conn", "room", f"only-{label}", {})
        for label, members in groups.items():
            await converge([node for node, _, _ in members], ["user-a", "user-b", f"only-{label}"])
        # A second round of changes, after which any leak would have shown up.
        for label, members in groups.items():
            members[1][0].track("conn", "room", f"again-{label}", {})
        for label, members in groups.items():
            keys = ["user-a", "user-b", f"only-{label}", f"again-{label}"]
            await converge([node for node, _, _ in members], keys)
            for node, _, _ in members:
                assert sorted(node.replicas()) == sorted({"a", "b"} - {node.name})


# ---------------------------------------------------------------------- names and subjects

HOSTILE_NAMES = [
    "a",
    "a.b",
    "a%2Eb",
    "*",
    ">",
    "a.*",
    "a.>",
    "*.>",
    "a b",
    "tab\there",
    "new\nline",
    "100%",
    "%",
    "%25",
    "\u00fcn\u00efc\u00f8de \u2603",
    "\U0001f600",
    "-",
    "_",
]


async def test_hostile_names_get_exactly_their_messages(nats_url: str) -> None:
    """Names with ``.``, ``*``, ``>``, whitespace, ``%`` and unicode (in a namespace made of
    them too) each get exactly what is sent to them, and every broadcast once."""
    ns = "hostile *.> %2E " + namespace("names")
    members: list[NatsTransport] = []
    try:
        for name in HOSTILE_NAMES:
            member, _ = await connect(nats_url, name, ns)
            members.append(member)
        for member in members:
            tokens = member.direct_subject.split(".")
            assert len(tokens) == 4, member.direct_subject
            assert not any(char in "*> \t\n" for char in member.direct_subject)
        for sender in members:
            for receiver in members:
                if receiver is not sender:
                    await sender.send(receiver.name, f"{sender.name}->{receiver.name}".encode())
            # After its sends: a message a member got by mistake arrives before this broadcast.
            await sender.broadcast(f"{sender.name}->all".encode())
        for member in members:
            others = [other.name for other in members if other is not member]
            expected = sorted(
                [f"{name}->{member.name}".encode() for name in others]
                + [f"{name}->all".encode() for name in others]
            )
            got = sorted([await receive(member) for _ in range(len(expected))])
            assert got == expected, member.name
    finally:
        for member in members:
            await member.aclose()


async def test_wildcard_namespaces_are_isolated(nats_url: str) -> None:
    prefix = namespace("wildcards")  # a prefix of its own: "*" and ">" are nobody else's
    namespaces = ["*", ">", "x", "x.y", "x.*", "x.>", "x y"]
    pairs: list[tuple[str, NatsTransport, NatsTransport]] = []
    try:
        for ns in namespaces:
            a, _ = await connect(nats_url, "a", ns, subject_prefix=prefix)
            b, _ = await connect(nats_url, "b", ns, subject_prefix=prefix)
            pairs.append((ns, a, b))
        for ns, a, b in pairs:
            await a.broadcast(f"{ns}: broadcast".encode())
            await a.send("b", f"{ns}: sent".encode())
            await b.send("a", f"{ns}: reply".encode())
        for ns, a, b in pairs:
            assert await receive(b) == f"{ns}: broadcast".encode()
            assert await receive(b) == f"{ns}: sent".encode()
            assert await receive(a) == f"{ns}: reply".encode()
        heard: list[str] = []

        async def quiet(member: NatsTransport, ns: str) -> None:
            with anyio.move_on_after(QUIET_PERIOD):
                heard.append(f"{member.name} in {ns!r} heard {await member.receive()!r}")

        async with anyio.create_task_group() as group:  # nothing more comes, to anybody
            for ns, a, b in pairs:
                group.start_soon(quiet, a, ns)
                group.start_soon(quiet, b, ns)
        assert not heard
    finally:
        for _, a, b in pairs:
            await a.aclose()
            await b.aclose()


async def test_subjects_and_impossible_names(nats_url: str) -> None:
    a, _ = await connect(nats_url, "a", "chat.*", subject_prefix="acme.presence")
    ns = namespace("impossible")
    b, _ = await connect(nats_url, "b", ns)
    c, _ = await connect(nats_url, "c", ns)
    try:
        assert a.broadcast_subject == "acme.presence.chat%2E%2A.all"
        assert a.direct_subject == "acme.presence.chat%2E%2A.to.a"
        assert a.subject_for("web.1 >") == "acme.presence.chat%2E%2A.to.web%2E1%20%3E"
        assert a.subject_for("\u00fcn\u00ef") == "acme.presence.chat%2E%2A.to.%C3%BCn%C3%AF"
        for impossible in ["", "\ud800", "x" * 2000]:  # nobody can hold these names
            await b.send(impossible, b"lost")
        await b.send("c", b"marker")
        assert await receive(c) == b"marker"
        assert b.stats.sent == 1
    finally:
        for member in (a, b, c):
            await member.aclose()


async def test_no_echo(nats_url: str) -> None:
    ns = namespace("echo")
    a, log = await connect(nats_url, "a", ns)
    b, _ = await connect(nats_url, "b", ns)
    try:
        assert [event for _, event in log.events] == [BrokerConnected(attempts=1, downtime=0.0)]
        sent = [f"broadcast {index}".encode() for index in range(50)]
        for data in sent:
            await a.broadcast(data)
        assert [await receive(b) for _ in sent] == sent
        # The server handled a's broadcasts before b's reply: an echo would arrive first.
        await b.send("a", b"reply")
        assert await receive(a) == b"reply"
        assert (a.stats.sent, a.stats.received, a.stats.ignored_own) == (50, 1, 0)
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize(
    ("limits", "fits"),
    [({"inbox_messages": 10}, 10), ({"inbox_bytes": 100}, 10)],
    ids=["messages", "bytes"],
)
async def test_a_slow_consumer_drops_and_counts(
    limits: dict[str, int],
    fits: int,
    nats_url: str,
) -> None:
    ns = namespace("slow")
    a, _ = await connect(nats_url, "a", ns)
    b, _ = await connect(nats_url, "b", ns, **limits)
    try:
        sent = [f"m{index:09d}".encode() for index in range(50)]  # 10 bytes each
        for data in sent:
            await a.send("b", data)
        stats = b.stats
        await wait_until(
            lambda: stats.received + stats.dropped_inbox_full == len(sent),
            f"b received or dropped every message ({stats})",
        )
        assert (stats.received, stats.dropped_inbox_full) == (fits, len(sent) - fits)
        assert [await receive(b) for _ in range(fits)] == sent[:fits]
        await a.send("b", b"after")
        assert await receive(b) == b"after"
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": ""}, "name must be a non-empty str"),
        ({"name": "a", "namespace": ""}, "namespace must be a non-empty str"),
        ({"name": "\ud800"}, "not valid Unicode"),
        ({"name": "x" * 1100}, "longer than 1024"),
        ({"name": "a", "subject_prefix": "a.*"}, "subject_prefix"),
        ({"name": "a", "subject_prefix": "a..b"}, "subject_prefix"),
        ({"name": "a", "subject_prefix": "a b"}, "subject_prefix"),
        ({"name": "a", "options": {"no_echo": False}}, r"sets these options itself: \['no_echo'\]"),
        ({"name": "a", "inbox_messages": 0}, "inbox_messages"),
        ({"name": "a", "connect_timeout": 0}, "connect_timeout"),
        ({"name": "a", "connect_timeout": float("inf")}, "connect_timeout"),
    ],
)
async def test_invalid_arguments(arguments: dict[str, object], message: str) -> None:
    before = tasks()
    with pytest.raises(ValueError, match=message):
        await NatsTransport.connect("nats://127.0.0.1:1", **arguments)  # type: ignore[arg-type]
    assert not tasks() - before


# ---------------------------------------------------------------------- connecting and closing


async def test_the_first_connection_is_bounded() -> None:
    before = tasks()
    url = f"nats://127.0.0.1:{free_port()}"  # nobody listens there
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"could not connect to NATS at .* within 0.5 s"):
        await NatsTransport.connect(url, name="a", connect_timeout=0.5)
    assert time.monotonic() - started < 0.5 + 2.0
    await wait_until(lambda: not tasks() - before, "every task of the failed connection ended")


async def test_the_first_connection_waits_for_a_starting_server(
    nats_servers: ServerFactory,
) -> None:
    server = nats_servers(start=False)
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.to_thread.run_sync, server.start)
        member, log = await connect(
            server.url, "a", namespace("starting"), connect_timeout=DEADLINE
        )
    try:
        ((_, event),) = log.events
        assert isinstance(event, BrokerConnected)
        assert event.attempts >= 1
        assert member.connected
    finally:
        await member.aclose()


async def test_closing_during_an_outage(nats_servers: ServerFactory) -> None:
    server = nats_servers()
    before = tasks()
    member, log = await connect(server.url, "a", namespace("outage-close"))
    outcome: list[bytes | BaseException] = []

    async def receiving() -> None:
        try:
            outcome.append(await member.receive())
        except Exception as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(receiving)
        server.stop(kill=True)
        await wait_until(lambda: log.count(BrokerDisconnected) == 1, "the member saw the outage")
        assert not member.connected
        await member.broadcast(b"dropped")  # neither raises: dropped and counted
        await member.send("b", b"dropped")
        assert member.stats.dropped_while_disconnected == 2
        started = time.monotonic()
        with anyio.fail_after(DEADLINE):
            await member.aclose()
        assert time.monotonic() - started < 2.0
    assert not tasks() - before  # nothing left running, nats-py's reconnection included
    assert len(outcome) == 1
    assert isinstance(outcome[0], TransportClosed)
    await member.aclose()  # again: nothing happens
    with pytest.raises(TransportClosed):
        await member.broadcast(b"late")
    assert log.count(BrokerDisconnected) == 1
    assert log.count(BrokerConnected) == 1


async def test_a_node_stops_during_an_outage(nats_servers: ServerFactory) -> None:
    server = nats_servers()
    before = tasks()
    with anyio.fail_after(DEADLINE):
        async with cluster(asyncio_open_node, server.url, ["a", "b"], namespace("stop")) as members:
            await converge([node for node, _, _ in members])
            server.stop(kill=True)
            await wait_until(
                lambda: all(log.count(BrokerDisconnected) for _, _, log in members),
                "both nodes saw the outage",
            )
    for _, transport, _ in members:
        assert transport.closed
    await wait_until(lambda: not tasks() - before, "every task of the nodes ended")


async def test_a_connection_closed_for_good_stops_the_node(nats_url: str) -> None:
    transport, _ = await connect(nats_url, "a", namespace("closed"))

    async def run_node() -> None:
        with anyio.fail_after(DEADLINE):
            async with asyncio_open_node(transport, config=CONFIG):
                # What nats-py does when the server refuses the connection for good.
                await transport._client.close()
                await anyio.Event().wait()

    with pytest.raises(TransportError, match="the NATS connection was closed"):
        await run_node()
    assert transport.closed


@pytest.mark.parametrize(
    ("driver", "outage"),
    [("asyncio", "down"), ("anyio", "permdown")],
    ids=["asyncio-driver-peers-down", "anyio-driver-peers-permdown"],
)
async def test_a_broker_restart(
    driver: str,
    outage: str,
    nats_servers: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The broker goes away in the middle of a run, for long enough that the nodes see each
    other down (or permanently down), and comes back on the same port: the nodes keep serving
    their local presences meanwhile, then reconnect and converge again by themselves."""
    server = nats_servers()
    names = ["a", "b", "c"]
    async with cluster(DRIVERS[driver], server.url, names, namespace("restart")) as members:
        nodes = [node for node, _, _ in members]
        await converge(nodes)
        server.stop(kill=True)
        await wait_until(
            lambda: all(log.count(BrokerDisconnected) == 1 for _, _, log in members),
            "every node saw the broker go",
        )
        for node in nodes:
            node.track("conn", "room", f"meanwhile-{node.name}", {})

        def peers_gone() -> bool:
            for node in nodes:
                replicas = node.replicas()
                if outage == "permdown" and replicas:
                    return False
                if any(info.status is not ReplicaStatus.DOWN for info in replicas.values()):
                    return False
            return True

        await wait_until(peers_gone, f"every node saw its peers {outage}")
        for node in nodes:  # each still serves its own presences, and only those
            assert sorted(node.list("room")) == [f"meanwhile-{node.name}", f"user-{node.name}"]
        for _, transport, _ in members:  # every send was dropped and counted, none raised
            assert transport.stats.dropped_while_disconnected > 0
            assert not transport.connected
        await anyio.to_thread.run_sync(server.start)
        restarted = time.monotonic()
        await wait_until(
            lambda: all(log.count(BrokerConnected) == 2 for _, _, log in members),
            "every node reconnected",
        )
        reconnected = time.monotonic()
        keys = [f"user-{name}" for name in names] + [f"meanwhile-{name}" for name in names]
        await converge(nodes, keys)
        converged = time.monotonic()
        for _, transport, log in members:
            _, event = log.events[-1]
            assert isinstance(event, BrokerConnected)
            assert event.attempts >= 1
            assert event.downtime > 0
            assert (transport.stats.connects, transport.stats.disconnects) == (2, 1)
    with capsys.disabled():
        print(
            f"\n[{driver} driver, peers {outage}] broker restart: reconnected after "
            f"{reconnected - restarted:.3f} s, converged after {converged - restarted:.3f} s"
        )


# ---------------------------------------------------------------------- packaging


def test_importing_needs_nats_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "presence_adapters.transports.nats")
    monkeypatch.setitem(sys.modules, "nats", None)  # what an uninstalled package looks like
    with pytest.raises(ImportError, match=r"pip install 'presence-core\[nats\]'"):
        importlib.import_module("presence_adapters.transports.nats")


def test_the_package_imports_without_nats_py() -> None:
    code = (
        "import sys\n"
        "sys.modules['nats'] = None\n"
        "import presence_adapters, presence_adapters.transports\n"
        "import presence_adapters.drivers.asyncio, presence_adapters.drivers.anyio\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
