"""What the Redis transport's tests need: a Redis to talk to, and bounded waits.

A test gets Redis from one of two fixtures:

* :func:`redis_url`: any Redis. ``PRESENCE_REDIS_URL`` when it is set (a Redis of yours, which
  the tests share with whatever else uses it: every test works in namespaces of its own), else a
  ``redis-server`` this module starts for the test module, on a free loopback port.
* :func:`redis_server`: a ``redis-server`` of the test's own, which the test may stop and start
  again on the same port (a broker restart).

When neither is possible (no ``PRESENCE_REDIS_URL``, no ``redis-server`` on ``PATH``), the tests
are skipped with the reason, except under ``CI=true``, where they fail: CI must run them.

The servers keep nothing on disk (``--save '' --appendonly no``) and run in a temporary directory;
every wait for one is bounded, and a server that does not come up fails the test with its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

__all__ = [
    "DEADLINE",
    "URL_VARIABLE",
    "RedisServer",
    "anyio_backend",
    "free_port",
    "redis_server",
    "redis_url",
    "wait_until",
]

URL_VARIABLE = "PRESENCE_REDIS_URL"
"""The environment variable naming a Redis to use instead of starting one."""

DEADLINE = 10.0
"""Seconds a test waits for something before it fails (expected: milliseconds)."""

POLL_INTERVAL = 0.005
"""Seconds between two evaluations of a condition being waited for."""

READY_TIMEOUT = 10.0
"""Seconds a starting redis-server has to answer PING."""

SIGNAL_POLL_INTERVAL = 0.001
"""Seconds between two looks at /proc while a signal is being delivered (a deadline bounds it)."""

STOP_TIMEOUT = 10.0
"""Seconds a stopping redis-server has to exit after SIGTERM (then it is killed)."""


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait until ``condition()`` is true, polling; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(POLL_INTERVAL)
        return
    raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The loops an ``anyio``-marked test runs on: import this into the test module."""
    backend: str = request.param
    return backend


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI (where every test must run)."""
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the Redis tests must run in CI)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    """Whether a Redis answers PING on the loopback port (bounded by a short timeout)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` on a loopback port, in a directory of its own, that keeps no data.

    :meth:`stop` and :meth:`start` again keep the port: clients reconnect to the same URL.
    """

    def __init__(self, executable: str, directory: Path) -> None:
        self._executable = executable
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        """Start the server (on a free port the first time, on the same one after) and wait
        until it answers PING.

        Raises:
            AssertionError: it exited or did not answer within :data:`READY_TIMEOUT` seconds.
        """
        assert self._process is None, "the server is already running"
        tries = 3 if self.port == 0 else 1  # a free port may be taken before the server binds it
        for attempt in range(1, tries + 1):
            if self.starts == 0:
                self.port = _free_port()
            try:
                self._start_once()
                self.starts += 1
                return
            except AssertionError:
                if attempt == tries:
                    raise

    def _start_once(self) -> None:
        log = self._directory / "redis.log"
        process = subprocess.Popen(
            [
                self._executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
                "--logfile",
                str(log),
            ],
            cwd=self._directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._process = process
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _pong(self.port):
                return
            time.sleep(POLL_INTERVAL)
        self.stop()
        text = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise AssertionError(
            f"redis-server on port {self.port} did not answer PING within {READY_TIMEOUT:g} s "
            f"(exit code {process.returncode}); its log ends with:\n{text}"
        )

    def freeze(self) -> None:
        """Suspend the server (SIGSTOP): its connections stay open, but nothing answers.

        Returns once the process is stopped (where ``/proc`` tells: a signal is delivered
        asynchronously, and a command sent right after ``kill`` could still be answered).
        """
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self._process.pid}/stat")
        deadline = time.monotonic() + READY_TIMEOUT
        while stat.exists() and time.monotonic() < deadline:
            # The state follows the command name, which is in parentheses.
            if stat.read_text().rsplit(")", 1)[1].split()[0] in {"T", "t"}:
                return
            time.sleep(SIGNAL_POLL_INTERVAL)

    def thaw(self) -> None:
        """Resume a suspended server (SIGCONT)."""
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT` s) and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a frozen server would not act on SIGTERM
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)


def _executable() -> str | None:
    return shutil.which("redis-server")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis for the module's tests: ``PRESENCE_REDIS_URL``, or a server of its own."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if url:
        yield url
        return
    executable = _executable()
    if executable is None:
        _unavailable(f"no Redis: set {URL_VARIABLE}, or put redis-server on PATH")
        return  # pragma: no cover - skip and fail raise
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (running), which the test may stop and start again."""
    executable = _executable()
    if executable is None:
        _unavailable(
            "this test needs a redis-server of its own (it stops, freezes or reconfigures it): "
            "put redis-server on PATH"
        )
        return  # pragma: no cover - skip and fail raise
    server = RedisServer(executable, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A loopback port nobody listens on (for connection failures)."""
    return _free_port()
