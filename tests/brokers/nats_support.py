"""What the NATS transport tests share: NATS servers, bounded waits, small clusters of nodes.

* :func:`nats_url` (a fixture, one per session): ``PRESENCE_NATS_URL`` when it is set, else a
  ``nats-server`` of the session's own on a free loopback port. With neither, the tests that need
  it are skipped, except under ``CI=true``, where they fail: CI must run them.
* :func:`nats_servers` (a fixture): starts servers of the test's own (to stop and restart them,
  or to give them a small ``max_payload``); needs the ``nats-server`` executable
  (``PRESENCE_NATS_SERVER``, else ``nats-server`` on the PATH, else ``/usr/sbin/nats-server``).
  Every server a test started is stopped when it ends.
* :func:`wait_until`, :func:`receive`: every wait has a deadline; nothing sleeps for a fixed time
  and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from presence_adapters import Presence, Transport
from presence_adapters.transports._broker import (
    Backoff,
    BrokerConnected,
    BrokerDisconnected,
    BrokerEvent,
)
from presence_adapters.transports.nats import NatsTransport
from presence_core import TrackerConfig

DEADLINE = 10.0
"""Seconds a test waits for something before it fails (the expected wait is milliseconds)."""

POLL_INTERVAL = 0.005
"""Seconds between two evaluations of a condition being waited for."""

SERVER_START_TIMEOUT = 10.0
"""Seconds a nats-server may take to accept connections, or to exit once told to."""

CONFIG = TrackerConfig(broadcast_period=0.05, max_silent_periods=2, permdown_period=2.0)
"""Short tracker periods: heartbeats every 0.15 s when idle, down after 0.2 s of silence."""

FAST_BACKOFF = Backoff(initial=0.02, maximum=0.2)
"""Reconnection delays for tests: a restarted server is found again within 0.2 s."""

DEFAULT_NATS_SERVER = "/usr/sbin/nats-server"


# ---------------------------------------------------------------------- availability


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing server is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(what: str) -> None:
    """Skip the test because ``what`` is missing, or fail it under CI."""
    if in_ci():
        pytest.fail(f"{what} is missing, and CI must run this test", pytrace=False)
    pytest.skip(f"{what} is missing")


def nats_server_binary() -> str | None:
    """The ``nats-server`` executable, if there is one."""
    explicit = os.environ.get("PRESENCE_NATS_SERVER", "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("nats-server")
    if found is not None:
        return found
    return DEFAULT_NATS_SERVER if os.access(DEFAULT_NATS_SERVER, os.X_OK) else None


def free_port() -> int:
    """A loopback TCP port nobody listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------- servers


class NatsServer:
    """A ``nats-server`` process on a loopback port (core NATS only, no JetStream).

    It keeps its port across :meth:`stop` and :meth:`start`, so clients find it again.
    """

    def __init__(self, binary: str, workdir: Path, *, max_payload: int | None = None) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._workdir = workdir
        self._config: Path | None = None
        if max_payload is not None:
            self._config = workdir / f"nats-{self.port}.conf"
            self._config.write_text(f"max_payload: {max_payload}\n", encoding="utf-8")
        self._log = workdir / f"nats-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<NatsServer {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        assert self._process is None, "the server is already running"
        command = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self._config is not None:
            command += ["-c", str(self._config)]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self._process.wait()
                self._process = None
                pytest.fail(f"nats-server exited at start:\n{self.log()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"nats-server did not accept connections within {SERVER_START_TIMEOUT} s:\n"
                    f"{self.log()}"
                )
            time.sleep(POLL_INTERVAL)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (``kill``: at once, as a crash would), and wait until it exited."""
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(SERVER_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log(self) -> str:
        try:
            return self._log.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server's URL: ``PRESENCE_NATS_URL``, or a server this session starts."""
    url = os.environ.get("PRESENCE_NATS_URL", "").strip()
    if url:
        yield url
        return
    binary = nats_server_binary()
    if binary is None:
        missing("a NATS server (set PRESENCE_NATS_URL, or install nats-server)")
    assert binary is not None
    server = NatsServer(binary, tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class ServerFactory:
    """Starts servers of the test's own; :meth:`stop_all` stops them."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._servers: list[NatsServer] = []

    def __call__(self, *, max_payload: int | None = None, start: bool = True) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            missing("the nats-server executable (set PRESENCE_NATS_SERVER)")
        assert binary is not None
        server = NatsServer(binary, self._workdir, max_payload=max_payload)
        self._servers.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        for server in self._servers:
            server.stop()


@pytest.fixture
def nats_servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """``nats_servers(max_payload=..., start=True)``: a server of the test's own."""
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


# ---------------------------------------------------------------------- waiting


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(POLL_INTERVAL)
        return
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")


async def receive(member: Transport, timeout: float = DEADLINE) -> bytes:
    """The next message of ``member``; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        return await member.receive()
    raise AssertionError(f"{member.name!r} received nothing within {timeout} s")


def tasks() -> set[asyncio.Task[Any]]:
    """The tasks alive on the running loop."""
    return set(asyncio.all_tasks())


# ---------------------------------------------------------------------- members and nodes


class StatusLog:
    """An ``on_status`` callback that keeps every event it is given, with the time."""

    def __init__(self) -> None:
        self.events: list[tuple[float, BrokerEvent]] = []

    def __call__(self, event: BrokerEvent) -> None:
        self.events.append((time.monotonic(), event))

    def count(self, kind: type[BrokerConnected] | type[BrokerDisconnected]) -> int:
        return sum(1 for _, event in self.events if isinstance(event, kind))


async def connect(
    url: str, name: str, namespace: str, **options: Any
) -> tuple[NatsTransport, StatusLog]:
    """A member with the test reconnection delays and a status log."""
    log = StatusLog()
    options.setdefault("backoff", FAST_BACKOFF)
    transport = await NatsTransport.connect(
        url, name=name, namespace=namespace, on_status=log, **options
    )
    return transport, log


NodeOpener = Callable[..., AbstractAsyncContextManager[Presence]]


@contextlib.asynccontextmanager
async def cluster(
    open_node: NodeOpener, url: str, names: Sequence[str], namespace: str, **options: Any
) -> AsyncIterator[list[tuple[Presence, NatsTransport, StatusLog]]]:
    """One node per name over NATS, each tracking ``user-<name>`` in ``room``."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for name in names:
            transport, log = await connect(url, name, namespace, **options)
            try:
                node = await stack.enter_async_context(open_node(transport, config=CONFIG))
            except BaseException:
                await transport.aclose()
                raise
            node.track("conn", "room", f"user-{name}", {"name": name})
            nodes.append((node, transport, log))
        yield nodes


async def converge(
    nodes: Sequence[Presence], keys: Sequence[str] | None = None, topic: str = "room"
) -> None:
    """Wait until every node lists exactly ``keys`` in ``topic`` (default: every node's
    ``user-<name>``)."""
    wanted = sorted(keys if keys is not None else [f"user-{node.name}" for node in nodes])

    def converged() -> bool:
        return all(sorted(node.list(topic)) == wanted for node in nodes)

    try:
        await wait_until(converged, f"{[node.name for node in nodes]} all list {wanted}")
    except AssertionError as exc:
        seen = {node.name: sorted(node.list(topic)) for node in nodes}
        raise AssertionError(f"{exc}; they list {seen}") from None
