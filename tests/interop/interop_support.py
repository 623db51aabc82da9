"""What the interop tests share: Node.js and its packages, servers on loopback ports, a route.

* :func:`node_packages` (a fixture): the ``node`` executable, with this folder's Node packages
  installed from ``package-lock.json`` (``npm ci`` when ``node_modules`` is missing or does not
  match the lock file). Without Node.js the test is skipped, except under ``CI=true``, where it
  fails: CI must run it.
* :func:`serving`: an ASGI app served by uvicorn in this event loop, on a free loopback port.
* :class:`WithListRoute`: wraps an endpoint app with the test-only ``GET /list?topic=T`` route,
  which answers the JSON of the node's ``presence.list(T)``.
* :func:`run_node`: a Node script as a subprocess, with a deadline, and its JSON lines.
* :class:`WebSocketClient`: a small blocking websocket client (wsproto), to speak the Phoenix
  protocol by hand.

Every wait here has a deadline; nothing sleeps for a fixed time and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from presence_adapters.phoenix import PhoenixApp

HERE = Path(__file__).resolve().parent
"""tests/interop: the Node scripts, package.json and package-lock.json."""

NPM_CI_TIMEOUT = 300.0
"""Seconds ``npm ci`` may take (it takes a few on a warm cache)."""

SERVER_START_TIMEOUT = 10.0
"""Seconds a uvicorn server may take to start or to stop."""

POLL_INTERVAL = 0.01
"""Seconds between two checks of a condition being waited for (always with a deadline)."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(what: str) -> None:
    """Skip the test because ``what`` is missing, or fail it under CI."""
    if in_ci():
        pytest.fail(f"{what} is missing, and CI must run this test", pytrace=False)
    pytest.skip(f"{what} is missing")


def _locked_packages() -> dict[str, str]:
    lock = json.loads((HERE / "package-lock.json").read_text(encoding="utf-8"))
    packages: dict[str, Any] = lock["packages"]
    return {path: entry["version"] for path, entry in packages.items() if path}


def _installed_matches_lock() -> bool:
    for path, version in _locked_packages().items():
        manifest = HERE / path / "package.json"
        try:
            installed = json.loads(manifest.read_text(encoding="utf-8")).get("version")
        except (OSError, ValueError):
            return False
        if installed != version:
            return False
    return True


def ensure_node_packages() -> str:
    """The ``node`` executable, with this folder's packages installed as the lock file says."""
    node = shutil.which("node")
    if node is None:
        missing("Node.js (node)")
    assert node is not None
    if not _installed_matches_lock():
        npm = shutil.which("npm")
        if npm is None:
            missing("npm")
        assert npm is not None
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {HERE} took more than {NPM_CI_TIMEOUT} s")
        if done.returncode != 0 or not _installed_matches_lock():
            pytest.fail(f"npm ci in {HERE} failed:\n{done.stdout}\n{done.stderr}")
    return node


@pytest.fixture(scope="session")
def node_packages() -> str:
    """The ``node`` executable, with tests/interop's Node packages installed (see the module)."""
    return ensure_node_packages()


class _Server(uvicorn.Server):
    """uvicorn's server, leaving the process's signal handlers alone (several run at once)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port while the block runs; yields its base URL.

    The port is bound here, before uvicorn starts, so no other process can take it meanwhile.
    Leaving the block shuts the server down (lifespan included) and waits for it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVER_START_TIMEOUT
        while not server.started:
            if task.done():
                task.result()  # raises what made it stop
                raise AssertionError("the server stopped before it started (see the log)")
            if loop.time() > deadline:
                raise AssertionError(f"the server did not start in {SERVER_START_TIMEOUT} s")
            await asyncio.sleep(POLL_INTERVAL)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, SERVER_START_TIMEOUT)
        finally:
            sock.close()


class WithListRoute:
    """An endpoint app plus the test-only route ``GET /list?topic=T``: the JSON of the running
    node's ``presence.list(T)``. Everything else goes to the app, lifespan included."""

    def __init__(self, app: PhoenixApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/list":
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        presence = self.app.presence
        topic = query.get("topic", [""])[0]
        if presence is None or not topic:
            status, body = 503, b'{"error": "no node, or no topic"}'
        else:
            status, body = 200, json.dumps(presence.list(topic)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def run_node(
    node: str,
    script: str,
    args: list[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> tuple[int, list[dict[str, Any]], str, str]:
    """Run ``node script args`` in tests/interop with a deadline.

    Returns:
        The exit status, the JSON lines it printed (other lines are left out), and its whole
        stdout and stderr.
    """
    process = await asyncio.create_subprocess_exec(
        node,
        str(HERE / script),
        *args,
        cwd=HERE,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        out, err = await process.communicate()
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        raise AssertionError(
            f"node {script} did not finish in {timeout} s\n--- stdout\n{stdout}\n"
            f"--- stderr\n{stderr}"
        ) from None
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    lines: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                lines.append(value)
    assert process.returncode is not None
    return process.returncode, lines, stdout, stderr


class WebSocketClient:
    """A blocking websocket client for text frames, with a deadline on every read (on wsproto).

    Enough to speak the Phoenix protocol by hand: :meth:`send_json` and :meth:`receive_json`.
    """

    def __init__(self, host: str, port: int, target: str, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._texts: list[str] = []
        self._partial: list[str] = []
        self._accepted = False
        self._closed = False
        self._sock.sendall(self._ws.send(Request(host=f"{host}:{port}", target=target)))
        self._pump_until(lambda: self._accepted, "the websocket handshake")

    def _pump_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            if self._closed:
                raise AssertionError(f"the websocket closed while waiting for {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {self.timeout} s waiting for {what}")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            self._ws.receive_data(data or None)
            for event in self._ws.events():
                if isinstance(event, AcceptConnection):
                    self._accepted = True
                elif isinstance(event, RejectConnection):
                    raise AssertionError(f"the websocket was refused: {event.status_code}")
                elif isinstance(event, TextMessage):
                    self._partial.append(event.data)
                    if event.message_finished:
                        self._texts.append("".join(self._partial))
                        self._partial = []
                elif isinstance(event, Ping):
                    self._sock.sendall(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(LocalProtocolError, OSError):
                        self._sock.sendall(self._ws.send(event.response()))
                    self._closed = True
            if not data:
                self._closed = True

    def send_json(self, value: object) -> None:
        """Send ``value`` as one text frame of JSON."""
        self._sock.sendall(self._ws.send(TextMessage(data=json.dumps(value))))

    def receive_json(self) -> Any:
        """The next text frame, parsed (waits up to the timeout)."""
        self._pump_until(lambda: bool(self._texts), "a frame")
        return json.loads(self._texts.pop(0))

    def close(self) -> None:
        """Close the websocket (politely if it is still open) and the TCP connection."""
        with contextlib.suppress(LocalProtocolError, OSError):
            if not self._closed:
                self._sock.sendall(self._ws.send(CloseConnection(code=1000)))
        self._sock.close()
