"""Nodes in separate OS processes over Redis and NATS: crashes, restarts, departures, outages.

Every node here is a child process (:class:`~presence_adapters.testing.NodeProcess`): its own
interpreter, event loop and broker connection, as in production. Each test runs on Redis and on
NATS, in a namespace of its own, with short tracker periods (:data:`CONFIG`), so the whole file
takes seconds. Every wait has a deadline; no test sleeps for a fixed time.

The times measured (kill -9 to the leave, graceful stop to the leave, broker restart to
convergence) are printed (``pytest -s`` shows them) and, when ``PRESENCE_TIMINGS_FILE`` is set,
written there as JSON. They subtract the parent's :func:`time.monotonic` from the children's: on
one machine every process reads the same monotonic clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import pytest
from nats_support import ServerFactory
from nats_support import nats_servers as nats_servers  # the fixtures, for pytest
from nats_support import nats_url as nats_url
from redis_support import RedisServer
from redis_support import redis_server as redis_server
from redis_support import redis_url as redis_url

from presence_adapters import Backoff
from presence_adapters.testing import NodeProcess, NodeProcessError
from presence_adapters.testing.process import COMMAND_TIMEOUT
from presence_core import Key, Keyring, RejectReason, ReplicaRef, TrackerConfig

pytestmark = pytest.mark.anyio

TOPIC = "room"
NAMES = ("a", "b", "c")

BROADCAST_PERIOD = 0.05
DOWN_PERIOD = 0.5
PERMDOWN_PERIOD = 3.0
CONFIG = TrackerConfig(
    broadcast_period=BROADCAST_PERIOD,
    # An idle node heartbeats every (2 + 1) periods = 0.15 s, well inside the down period.
    max_silent_periods=2,
    down_period=DOWN_PERIOD,
    permdown_period=PERMDOWN_PERIOD,
)

FAST_BACKOFF = Backoff(initial=0.02, maximum=0.2)
"""Reconnection delays: a restarted broker is found again within 0.2 s of being back."""

SCHEDULING_SLACK = 0.25
"""Seconds allowed on top of the protocol's bound for a crash to be noticed.

A survivor marks the silent node down at its first tick (every broadcast period) after
``down_period`` of silence, and the silence began at the kill or earlier; so the bound is
``down_period + broadcast_period`` from the kill. The slack covers what the protocol does not
know about: three node processes, a broker and pytest share the machine's cores, so a survivor's
timer can fire late (a scheduler quantum, a garbage-collection pause, a core busy with another
child), and the diff then reaches the harness's subscription task one loop turn later. A quarter
second is five broadcast periods: far above what was measured (see the printed times), far below
what a broken failure detector would take (a full extra down period or more).
"""

KILL_BOUND = DOWN_PERIOD + BROADCAST_PERIOD + SCHEDULING_SLACK

TIMINGS_VARIABLE = "PRESENCE_TIMINGS_FILE"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the parent's loop hardly matters here: the nodes run in the children


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def url(broker: str, request: pytest.FixtureRequest) -> str:
    """A broker shared by the module's (or the session's) tests: ``redis_url`` or ``nats_url``."""
    found: str = request.getfixturevalue(f"{broker}_url")
    return found


class Restartable(Protocol):
    """A broker server of the test's own (``RedisServer`` or ``NatsServer``)."""

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...

    def start(self) -> None: ...


@pytest.fixture
def own_broker(broker: str, request: pytest.FixtureRequest) -> Restartable:
    """A broker server the test may stop and start again on the same port."""
    if broker == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server
    factory: ServerFactory = request.getfixturevalue("nats_servers")
    return factory()


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, Any]]:
    """What the tests measured; written as JSON to ``PRESENCE_TIMINGS_FILE`` at the end."""
    found: dict[str, Any] = {
        "config": {
            "broadcast_period": BROADCAST_PERIOD,
            "max_silent_periods": CONFIG.max_silent_periods,
            "down_period": DOWN_PERIOD,
            "permdown_period": PERMDOWN_PERIOD,
            "backoff": [FAST_BACKOFF.initial, FAST_BACKOFF.maximum],
            "kill_bound": KILL_BOUND,
        }
    }
    yield found
    path = os.environ.get(TIMINGS_VARIABLE, "").strip()
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(found, file, indent=2, sort_keys=True)
            file.write("\n")


def record(timings: dict[str, Any], what: str, broker: str, values: dict[str, float]) -> None:
    timings.setdefault(what, {})[broker] = values
    shown = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in values.items())
    print(f"\n[{broker}] {what}: {shown}")


# ---------------------------------------------------------------------- helpers


def namespace(what: str) -> str:
    """A namespace no other test (nor an earlier run on a shared broker) uses."""
    return f"proc-{what}-{secrets.token_hex(4)}"


def own_keys(name: str) -> set[str]:
    """The keys node ``name`` tracks (one connection each)."""
    return {f"{name}:1", f"{name}:2"}


def all_keys(names: Sequence[str]) -> set[str]:
    return set().union(*(own_keys(name) for name in names))


async def track_own(node: NodeProcess) -> None:
    for key in sorted(own_keys(node.name)):
        await node.track(f"conn-{key}", TOPIC, key, {"node": node.name})


async def converge(nodes: Sequence[NodeProcess], keys: set[str]) -> None:
    """Every node lists exactly ``keys`` (each wait bounded)."""
    for node in nodes:
        await node.wait_keys(TOPIC, keys)


def assert_reaped(nodes: Sequence[NodeProcess]) -> None:
    """Every child has exited and been waited for: no zombie, no orphan."""
    for node in nodes:
        assert node.returncode is not None, f"{node!r} was not reaped"


@contextlib.asynccontextmanager
async def cluster(
    url: str, ns: str, names: Sequence[str] = NAMES
) -> AsyncIterator[dict[str, NodeProcess]]:
    """One child process per name (started concurrently), each tracking its own keys, all
    converged."""
    nodes = {
        name: NodeProcess(
            url, name=name, namespace=ns, config=CONFIG, watch=[TOPIC], backoff=FAST_BACKOFF
        )
        for name in names
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            async with anyio.create_task_group() as group:
                for node in nodes.values():
                    group.start_soon(stack.enter_async_context, node)
            for node in nodes.values():
                await track_own(node)
            await converge(list(nodes.values()), all_keys(names))
            yield nodes
    finally:
        assert_reaped(list(nodes.values()))


def lost_broker(node: NodeProcess) -> Callable[[], bool]:
    """Whether the node's transport reported a disconnection (as far as the parent has read)."""
    return lambda: any(event.kind == "disconnected" for event in node.broker_events)


def owners(node: NodeProcess) -> dict[str, ReplicaRef]:
    return {seen.key: seen.owner for seen in node.presences(TOPIC)}


# ---------------------------------------------------------------------- the scenarios


async def test_three_processes_see_every_presence(url: str, broker: str) -> None:
    async with cluster(url, namespace("all")) as nodes:
        everything = all_keys(NAMES)
        for node in nodes.values():
            listed = await node.list(TOPIC)  # the node's own list, not only the mirror
            assert set(listed) == everything
            assert owners(node) == {
                key: nodes[key.split(":")[0]].replica for key in sorted(everything)
            }
        assert len({node.pid for node in nodes.values()} | {os.getpid()}) == 4


async def test_kill_9_removes_the_presences_within_the_down_period(
    url: str, broker: str, timings: dict[str, Any]
) -> None:
    async with cluster(url, namespace("kill")) as nodes:
        victim = nodes["c"]
        survivors = [nodes["a"], nodes["b"]]
        killed_at = victim.kill()
        assert await victim.wait_exit() == -signal.SIGKILL
        elapsed = {}
        for node in survivors:
            left_at = await node.wait_keys(TOPIC, all_keys(["a", "b"]))
            await node.wait_replica("down", "c", vsn=victim.vsn)
            elapsed[node.name] = left_at - killed_at
        record(timings, "kill -9 to leave", broker, elapsed)
        for name, seconds in elapsed.items():
            assert 0 < seconds <= KILL_BOUND, (
                f"{name} saw c's presences leave {seconds:.3f} s after the kill; the bound is "
                f"{KILL_BOUND:g} s (down {DOWN_PERIOD:g} + broadcast {BROADCAST_PERIOD:g} + "
                f"slack {SCHEDULING_SLACK:g})"
            )


async def test_restart_under_the_same_name_is_a_new_incarnation_without_ghosts(
    url: str, broker: str
) -> None:
    async with cluster(url, namespace("restart")) as nodes:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        old = c.replica
        c.kill()
        await c.wait_exit()
        for node in (a, b):
            await node.wait_keys(TOPIC, all_keys(["a", "b"]))  # the old c is down
        async with c.restarted() as again:
            assert again.name == "c"
            assert again.vsn != old.vsn
            assert again.vsn > old.vsn  # from the wall clock: a later start, a larger vsn
            await again.track("conn-c:new", TOPIC, "c:new", {"node": "c", "incarnation": 2})
            expected = all_keys(["a", "b"]) | {"c:new"}
            everyone = (a, b, again)
            await converge(everyone, expected)
            # The new incarnation's first heartbeat retires the old one for good, on each peer.
            for node in (a, b):
                await node.wait_replica("permdown", "c", vsn=old.vsn)
            # One more change travels everywhere after those permdowns; then nobody shows, or
            # ever showed since the restart, a presence of the old incarnation.
            await a.track("conn-marker", TOPIC, "marker", {"node": "a"})
            await converge(everyone, expected | {"marker"})
            for node in everyone:
                assert set(await node.list(TOPIC)) == expected | {"marker"}
                assert owners(node)["c:new"] == again.replica
                assert not [seen for seen in node.presences(TOPIC) if seen.owner == old]
                assert not [seen for seen in node.presences(TOPIC) if seen.conn == "conn-c:1"]
                ghosts = [
                    seen
                    for diff in node.diffs
                    if again.started_at is not None and diff.t >= again.started_at
                    for seen in diff.joins
                    if seen.owner == old
                ]
                assert not ghosts, f"{node.name} showed the old c's presences again: {ghosts}"
            assert "c" not in await again.replicas()  # a node does not list itself
        assert again.returncode is not None


async def test_graceful_stop_removes_the_presences_at_once(
    url: str, broker: str, timings: dict[str, Any]
) -> None:
    async with cluster(url, namespace("stop")) as nodes:
        leaving = nodes["c"]
        stopped_at = await leaving.stop()
        assert leaving.returncode == 0
        elapsed = {}
        for node in (nodes["a"], nodes["b"]):
            left_at = await node.wait_keys(TOPIC, all_keys(["a", "b"]))
            await node.wait_replica("permdown", "c", vsn=leaving.vsn)
            elapsed[node.name] = left_at - stopped_at
        record(timings, "graceful stop to leave", broker, elapsed)
        for name, seconds in elapsed.items():
            assert seconds < DOWN_PERIOD, (
                f"{name} dropped c's presences {seconds:.3f} s after the stop: not at once (the "
                f"down period is {DOWN_PERIOD:g} s)"
            )


async def test_every_process_converges_after_a_broker_restart(
    own_broker: Restartable, broker: str, timings: dict[str, Any]
) -> None:
    async with cluster(own_broker.url, namespace("outage")) as nodes:
        members = list(nodes.values())
        own_broker.stop()
        for node in members:
            await node.wait_until(lost_broker(node), "its transport lost the broker")
        # The outage: every node keeps serving its own connections, tracks more, and sees its
        # silent peers go down (their presences hidden).
        for node in members:
            await node.track(f"conn-{node.name}:outage", TOPIC, f"{node.name}:outage", {})
        for node in members:
            await node.wait_keys(TOPIC, own_keys(node.name) | {f"{node.name}:outage"})
        own_broker.start()
        restarted_at = time.monotonic()
        everything = all_keys(NAMES) | {f"{name}:outage" for name in NAMES}
        converged_at = {node.name: await node.wait_keys(TOPIC, everything) for node in members}
        for node in members:
            assert set(await node.list(TOPIC)) == everything
            assert sum(e.kind == "connected" for e in node.broker_events) >= 2
        elapsed = {name: at - restarted_at for name, at in converged_at.items()}
        elapsed["all"] = max(elapsed.values())
        record(timings, "broker restart to convergence", broker, elapsed)


async def refusals(node: NodeProcess, at_least: int) -> dict[RejectReason, int]:
    """The node's refusals by reason, once it refused ``at_least`` messages as unauthenticated
    (polled, within the deadline)."""
    with anyio.fail_after(COMMAND_TIMEOUT):
        while True:
            refused = (await node.stats()).pump.rejected_by_reason
            if refused.get(RejectReason.UNAUTHENTICATED, 0) >= at_least:
                return refused
            await anyio.sleep(BROADCAST_PERIOD)
    raise AssertionError("unreachable")  # pragma: no cover - fail_after raised


async def test_sealed_processes_refuse_another_key_and_rotate_keys(url: str, broker: str) -> None:
    old, new = Key("2026-06", secrets.token_bytes(32)), Key("2026-12", secrets.token_bytes(32))
    forged = Key("2026-06", secrets.token_bytes(32))  # the same id, another secret
    ns = namespace("sealed")

    def node(name: str, keyring: Keyring) -> NodeProcess:
        return NodeProcess(
            url,
            name=name,
            namespace=ns,
            config=CONFIG,
            watch=[TOPIC],
            backoff=FAST_BACKOFF,
            keyring=keyring,
        )

    async with node("a", Keyring(old)) as a, node("b", Keyring(old)) as b:
        for child in (a, b):
            # The child got its keyring on its standard input: no other user of the machine
            # can read it off its command line or its environment.
            assert "--keyring-stdin" in child.command_line()
            for where in ("cmdline", "environ"):
                exposed = Path(f"/proc/{child.pid}/{where}")
                if exposed.exists():
                    assert old.secret.hex().encode() not in exposed.read_bytes()
            assert child.restarted().keyring == Keyring(old)
        await track_own(a)
        await track_own(b)
        await converge([a, b], all_keys(["a", "b"]))
        async with node("mallory", Keyring(forged)) as mallory:
            await track_own(mallory)
            for sealed in (a, b):
                refused = await refusals(sealed, 3)
                assert {reason for reason in refused if not reason.normal} == {
                    RejectReason.UNAUTHENTICATED
                }
                assert sealed.keys(TOPIC) == all_keys(["a", "b"])  # none of mallory's applied
                assert "mallory" not in await sealed.replicas()
                tracker = (await sealed.stats()).tracker
                assert tracker.rejected[RejectReason.UNAUTHENTICATED] >= 3
            await mallory.wait_keys(TOPIC, own_keys("mallory"))
            await mallory.ping()  # everything it wrote so far is read: none of a's nor b's
            assert mallory.keys(TOPIC) == own_keys("mallory")
        # Rotate at runtime, in two rolls: nothing more is refused.
        before = {n.name: (await n.stats()).pump.rejected for n in (a, b)}
        for keyring in (Keyring(old, accepted=(new,)), Keyring(new, accepted=(old,))):
            for sealed in (a, b):
                await sealed.set_keyring(keyring)
                assert sealed.keyring == keyring
        await a.track("conn-marker", TOPIC, "marker", {"node": "a"})
        await converge([a, b], all_keys(["a", "b"]) | {"marker"})
        for sealed in (a, b):
            stats = await sealed.stats()
            abnormal = {r for r in stats.pump.rejected_by_reason if not r.normal}
            assert abnormal == {RejectReason.UNAUTHENTICATED}
            refused_since = stats.pump.rejected - before[sealed.name]
            # Only what mallory sent before it left can still have been in flight.
            assert refused_since <= 2, f"{sealed.name} refused {refused_since} more messages"


# ---------------------------------------------------------------------- the harness itself


async def test_leaving_the_block_kills_and_reaps_the_child(url: str) -> None:
    node = NodeProcess(url, name="solo", namespace=namespace("cleanup"), config=CONFIG)

    async def fail_inside() -> None:
        async with node:
            assert node.returncode is None
            raise KeyError("the body failed")

    with pytest.raises(KeyError):
        await fail_inside()
    assert node.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(node.pid, 0)  # reaped: no zombie left under that pid


async def test_a_child_that_dies_is_reported_with_its_stderr(url: str) -> None:
    node = NodeProcess(url, name="doomed", namespace=namespace("dies"), config=CONFIG)
    async with node:
        await node.watch(TOPIC)
        os.kill(node.pid, signal.SIGTERM)  # not through kill(): an unexpected death
        with pytest.raises(NodeProcessError, match="exited unexpectedly with code -15"):
            await node.wait_keys(TOPIC, {"never"})


class _Scripted(NodeProcess):
    """A "node" whose child runs ``script`` instead of the node (to misbehave on purpose)."""

    def __init__(self, script: str) -> None:
        super().__init__("redis://127.0.0.1:1", name="scripted", namespace="unused")
        self._script = script

    def command_line(self) -> list[str]:
        return [sys.executable, "-c", self._script]


async def test_a_child_that_writes_garbage_is_reported_with_its_stderr() -> None:
    node = _Scripted(
        "import sys; sys.stderr.write('about to misbehave\\n'); sys.stderr.flush(); "
        "print('this is not JSON', flush=True); sys.stdin.read()"
    )
    with pytest.raises(NodeProcessError) as raised:
        async with node:
            pass
    text = str(raised.value)
    assert "not the protocol" in text
    assert "this is not JSON" in text
    assert "about to misbehave" in text
    assert node.returncode == -signal.SIGKILL  # it waited on its stdin: killed and reaped


async def test_a_child_that_fails_to_start_is_reported_with_its_stderr() -> None:
    node = _Scripted("import sys; sys.stderr.write('cannot start: no broker\\n'); sys.exit(3)")
    with pytest.raises(NodeProcessError) as raised:
        async with node:
            pass
    assert "exited unexpectedly with code 3" in str(raised.value)
    assert "cannot start: no broker" in str(raised.value)
    assert node.returncode == 3
