"""One presence node per OS process: test a real multi-process cluster over Redis or NATS.

:class:`~presence_adapters.testing.NodeProcess` starts ``python -m
presence_adapters.testing.process ...``, a child process running ONE node (the asyncio driver's
:func:`~presence_adapters.drivers.asyncio.open_node`) on a Redis or NATS transport, and controls it
over the child's standard input and output:

.. code-block:: python

    config = TrackerConfig(broadcast_period=0.05, max_silent_periods=2, down_period=0.5)
    async with (
        NodeProcess(url, name="a", namespace=ns, config=config, watch=["room"]) as a,
        NodeProcess(url, name="b", namespace=ns, config=config, watch=["room"]) as b,
    ):
        await a.track("conn-a", "room", "alice", {"status": "online"})
        await b.wait_keys("room", {"alice"})          # b's node lists alice (bounded wait)
        killed_at = a.kill()                          # SIGKILL: no goodbye
        left_at = await b.wait_keys("room", set())    # the child's clock when alice left
        print(f"down after {left_at - killed_at:.3f} s")

Leaving the ``async with`` kills the child (SIGKILL) if it is still running and reaps it,
whatever happened in the body, so no process is left behind, as a zombie or an orphan. A child
whose standard input closes (its parent died) leaves the cluster gracefully and exits. The
harness is POSIX-only (it sends signals) and runs on anyio (asyncio or trio) in the parent.

**What the parent sees.** The child streams what its node sees, each line stamped with the
child's :func:`time.monotonic` (on one machine every process reads the same monotonic clock, so
the parent can subtract its own readings from them): the presences of each *watched* topic (the
state when the watch began, then every diff), every replica event (up, down, permdown) and every
broker connection change. The parent keeps a mirror of each watched topic (``presences``,
``keys``, ``refs``) and logs of the events (``diffs``, ``replica_events``, ``broker_events``).

The parent reads the child's output when it awaits something of that node (a command, or a
wait): the mirror and the logs are as of the last such await. The child never waits for the
parent: its output is buffered on its side, so a parent busy elsewhere cannot stall the child's
node (which would make it look dead to its peers). ``ping()`` reads everything the child wrote up
to now.

Every wait has a deadline; a child that dies unexpectedly, writes something that is not the
protocol, or fails a command, raises :class:`~presence_adapters.testing.NodeProcessError` with
the end of its standard error; a wait that times out raises :class:`AssertionError` (as the
conformance suites' waits do) saying what it waited for and what the node saw instead.

**Authenticated replication.** ``NodeProcess(..., keyring=Keyring(...))`` opens the child's node
with that keyring (see :func:`~presence_adapters.drivers.asyncio.open_node`). The secrets never
appear on the child's command line, which every user of the machine can read (``ps``,
``/proc/PID/cmdline``), nor in its environment (``ps e``, ``/proc/PID/environ``): the command
line only says ``--keyring-stdin``, and the parent writes the keyring as the first line of the
child's standard input, a pipe only the two processes hold (``{"keyring": TEXT}``, ``TEXT`` in
the format of :func:`~presence_adapters.parse_keyring`). The child reads it before it opens its
node. :meth:`NodeProcess.set_keyring` rotates the keys of the running node the same way, and
:meth:`NodeProcess.restarted` takes the keyring of the next incarnation (a roll of a rotation).

**The protocol.** One JSON object per line. The parent sends commands ``{"id": N, "op": NAME,
...arguments}``; the child answers each with ``{"reply": N, "ok": true, "value": ..., "t": T}``
(``T``: when the child ran it) or ``{"reply": N, "ok": false, "error": "Type: message", "t": T}``.
Commands: ``ping``, ``track``, ``update``, ``untrack``, ``untrack_conn``, ``track_many``,
``list``, ``count``, ``replicas``, ``stats``, ``watch``, ``set_keyring`` (``keyring``: its text)
and ``stop`` (the node leaves gracefully; the reply comes once it has left, and the child
exits). Unasked, the child writes
events ``{"event": KIND, "t": T, ...}``: ``ready`` (once, when the node runs), ``watch`` (a
topic's presences when its watch began), ``diff`` (``topic``, ``joins``, ``leaves``),
``replica`` (``kind``: ``up``, ``down`` or ``permdown``; ``name``, ``vsn``) and ``broker``
(``kind``: ``connected`` or ``disconnected``). A presence travels as ``[key, conn, owner name,
owner vsn, phx_ref, meta or null]``.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from types import EllipsisType, TracebackType
from typing import IO, Any, Literal

import anyio
import attrs
from anyio.abc import Process

from presence_adapters._keyfile import format_keyring, parse_keyring
from presence_adapters.drivers import PumpStats
from presence_adapters.presence import Presence, Subscription, TopicDiff
from presence_adapters.transports._base import Transport
from presence_adapters.transports._broker import Backoff, BrokerConnected, BrokerEvent
from presence_core import (
    Entry,
    JSONValue,
    Keyring,
    Meta,
    PresenceMap,
    RejectReason,
    ReplicaDown,
    ReplicaRef,
    ReplicaUp,
    TrackerConfig,
    TrackerStats,
)

__all__ = [
    "EXIT_TIMEOUT",
    "START_TIMEOUT",
    "BrokerRecord",
    "DiffRecord",
    "NodeProcess",
    "NodeProcessError",
    "NodeStats",
    "ReplicaRecord",
    "Reply",
    "SeenPresence",
    "main",
]

START_TIMEOUT = 30.0
"""Seconds a child may take to start: the interpreter, the imports, connecting to the broker."""

COMMAND_TIMEOUT = 10.0
"""Seconds a command's reply, or a wait, may take by default (expected: milliseconds)."""

EXIT_TIMEOUT = 10.0
"""Seconds a child may take to exit once stopped, or to be reaped once killed."""

STDERR_TAIL = 4000
"""Characters of a child's standard error quoted in a :class:`NodeProcessError`."""

MAX_LINE = 512 * 1024 * 1024
"""The longest line either side accepts (a diff of a large transfer is one line)."""

_CHUNK = 1024 * 1024
_SUBSCRIPTION_BUFFER = 1 << 40
"""The child's subscriptions: it forwards every diff at once, so they never hold much; the
parent, not a buffer limit, is what must keep up (see the module's docstring)."""

_MODULE = "presence_adapters.testing.process"
"""This module's name, also when it runs as ``__main__`` (the child)."""

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
_NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})

logger = logging.getLogger("presence_adapters.testing")


def broker_of(url: str) -> Literal["redis", "nats"]:
    """Which transport a URL is for, by its scheme: ``redis``, ``rediss`` and ``unix`` are Redis;
    ``nats``, ``tls``, ``ws`` and ``wss`` are NATS.

    Raises:
        ValueError: another scheme.
    """
    scheme = url.partition("://")[0].lower()
    if scheme in _REDIS_SCHEMES:
        return "redis"
    if scheme in _NATS_SCHEMES:
        return "nats"
    raise ValueError(f"not a Redis or NATS URL: {url!r}")


# ---------------------------------------------------------------------------- records


class NodeProcessError(Exception):
    """A child process failed: it died unexpectedly, wrote something that is not the protocol,
    could not start, or a command failed. The message ends with its standard error's tail."""


@attrs.frozen(kw_only=True)
class SeenPresence:
    """One presence in a child's mirror of a watched topic.

    Attributes:
        topic: its topic.
        key: its key.
        conn: the connection that tracked it (on its owner).
        owner: the replica incarnation that owns it.
        phx_ref: its ``phx_ref`` (unique in the cluster).
        meta: its meta (with ``phx_ref``), or ``None`` when the topic is watched without metas.
        seen_at: the child's monotonic clock when its node showed the presence.
    """

    topic: str
    key: str
    conn: str
    owner: ReplicaRef
    phx_ref: str
    meta: Mapping[str, JSONValue] | None
    seen_at: float


@attrs.frozen(kw_only=True)
class DiffRecord:
    """One diff of a watched topic, as the child's node emitted it.

    Attributes:
        topic: the topic.
        t: the child's monotonic clock when the node emitted it.
        joins: the presences that joined.
        leaves: the presences that left.
    """

    topic: str
    t: float
    joins: tuple[SeenPresence, ...]
    leaves: tuple[SeenPresence, ...]


@attrs.frozen(kw_only=True)
class ReplicaRecord:
    """A replica going up, down or permanently down, as the child's node saw it.

    Attributes:
        kind: ``"up"``, ``"down"`` or ``"permdown"``.
        replica: the replica incarnation.
        t: the child's monotonic clock when its node emitted the event.
    """

    kind: str
    replica: ReplicaRef
    t: float


@attrs.frozen(kw_only=True)
class BrokerRecord:
    """A change of the child's broker connection (a :data:`~presence_adapters.BrokerEvent`).

    Attributes:
        kind: ``"connected"`` or ``"disconnected"``.
        t: the child's monotonic clock when its transport reported it.
        detail: the attempts and downtime of a connection, the error of a disconnection.
    """

    kind: str
    t: float
    detail: str


@attrs.frozen(kw_only=True)
class Reply:
    """A child's answer to a command.

    Attributes:
        value: what the command returned, as JSON.
        t: the child's monotonic clock when it ran the command.
    """

    value: JSONValue
    t: float


@attrs.frozen(kw_only=True)
class NodeStats:
    """A child's counters (:meth:`NodeProcess.stats`).

    Attributes:
        pump: the node's traffic (:attr:`Presence.stats <presence_adapters.Presence.stats>`),
            refused messages included.
        tracker: the tracker's counters and gauges (:meth:`Presence.tracker_stats
            <presence_adapters.Presence.tracker_stats>`).
        transport: the transport's counters (:class:`~presence_adapters.BrokerStats` and the
            transport's own), by name.
        max_payload: the transport's ``max_payload``.
        cpu: the child's CPU time so far (:func:`time.process_time`: user and system, in
            seconds; it includes the harness's own work, reading commands and writing lines).
        t: the child's monotonic clock when the counters were read.
    """

    pump: PumpStats
    tracker: TrackerStats
    transport: Mapping[str, int]
    max_payload: int
    cpu: float
    t: float


# ---------------------------------------------------------------------------- the parent


class NodeProcess:
    """A presence node in a child process on Redis or NATS: ``async with NodeProcess(...) as n``.

    Entering starts the child and waits until its node runs (and has joined the broker); leaving
    kills it (SIGKILL) if it still runs, and reaps it. A :class:`NodeProcess` runs one child, once;
    :meth:`restarted` gives a new one with the same options (a new incarnation of the same name).

    Args:
        url: the broker: a Redis URL (``redis://``, ``rediss://``, ``unix://``) or a NATS one
            (``nats://``, ``tls://``, ``ws://``, ``wss://``).
        name: the node's name (unique in the namespace while it runs).
        namespace: the cluster on the broker.
        config: the tracker's options (short periods make tests quick).
        watch: topics the child watches from its start (:meth:`watch` adds more later).
        metas: whether the topics in ``watch`` carry their metas to the parent (leave them out
            for very large topics).
        prefix: the transport's channel (Redis) or subject (NATS) prefix.
        backoff: the transport's reconnection delays (its default when ``None``).
        vsn: the incarnation; by default the driver picks it from the wall clock (microseconds),
            so a restarted node gets a new, larger one.
        shutdown_timeout: the most seconds a stopping node spends leaving the cluster.
        start_timeout: the most seconds to wait until the child's node runs.
        env: variables added to the child's environment.
        keyring: authenticate the node's replication with this keyring; it reaches the child
            through its standard input, never its command line or environment (see the
            module's docstring).

    Attributes:
        url: the broker's URL.
        name: the node's name.
        namespace: the cluster.
        config: the tracker's options.
        started_at: the parent's :func:`time.monotonic` just before the child was started
            (``None`` before).
        ready_at: the child's monotonic clock when its node ran (``None`` before).
        killed_at: the parent's monotonic clock just before :meth:`kill` sent SIGKILL.
        diffs: every diff of the watched topics, in order.
        replica_events: every replica event, in order.
        broker_events: every broker connection change, in order (the first connection included).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        namespace: str,
        config: TrackerConfig | None = None,
        watch: Iterable[str] = (),
        metas: bool = True,
        prefix: str = "presence",
        backoff: Backoff | None = None,
        vsn: int | None = None,
        shutdown_timeout: float = 2.0,
        start_timeout: float = START_TIMEOUT,
        env: Mapping[str, str] | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        broker_of(url)  # refuse a URL of no known broker before anything starts
        # Written out now: a keyring the format cannot carry is refused before anything starts.
        self._keyring_text = None if keyring is None else format_keyring(keyring)
        for what, value in (("name", name), ("namespace", namespace), ("prefix", prefix)):
            if type(value) is not str or not value:
                raise ValueError(f"{what} must be a non-empty str, not {value!r}")
        self.url = url
        self.name = name
        self.namespace = namespace
        self.config = config if config is not None else TrackerConfig()
        self._watch = tuple(watch)
        self._metas = metas
        self._prefix = prefix
        self._backoff = backoff
        self._vsn = vsn
        self._shutdown_timeout = shutdown_timeout
        self._start_timeout = start_timeout
        self._env = dict(env or {})
        self._keyring = keyring

        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.killed_at: float | None = None
        self.diffs: list[DiffRecord] = []
        self.replica_events: list[ReplicaRecord] = []
        self.broker_events: list[BrokerRecord] = []

        self._process: Process | None = None
        self._stderr: IO[bytes] | None = None
        self._stderr_final = ""
        self._entered = False
        self._replica: ReplicaRef | None = None
        self._pid: int | None = None
        self._buffer = bytearray()
        self._scanned = 0
        self._reading = False
        self._changed = anyio.Event()
        self._send_lock = anyio.Lock()
        self._eof = False
        self._failure: NodeProcessError | None = None
        self._failure_raised = False
        self._exiting: str | None = None  # why an exit is expected: "killed", "stopped"
        self._ids = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._topics: dict[str, dict[str, SeenPresence]] = {}
        self._changed_at: dict[str, float] = {}
        self._last_t = 0.0

    def __repr__(self) -> str:
        return f"<NodeProcess {self.name!r} pid={self._pid} {self._state()}>"

    def _state(self) -> str:
        if self._process is None:
            return "not started"
        code = self._process.returncode
        if code is not None:
            return f"exited ({code})"
        return "running" if self._replica is not None else "starting"

    # ------------------------------------------------------------------ identity

    @property
    def pid(self) -> int:
        """The child's process id.

        Raises:
            NodeProcessError: the child has not been started.
        """
        if self._pid is None:
            raise NodeProcessError(f"node {self.name!r} has not been started")
        return self._pid

    @property
    def replica(self) -> ReplicaRef:
        """The child's node: its name and incarnation.

        Raises:
            NodeProcessError: the node has not run yet.
        """
        if self._replica is None:
            raise NodeProcessError(f"node {self.name!r} has not run yet")
        return self._replica

    @property
    def vsn(self) -> int:
        """The child's incarnation (``replica.vsn``)."""
        return self.replica.vsn

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has been reaped (``-9`` after :meth:`kill`)."""
        return None if self._process is None else self._process.returncode

    def command_line(self) -> list[str]:
        """The command that starts the child."""
        command = [
            sys.executable,
            # The package re-exports this module, so it is imported before runpy runs it as
            # __main__; runpy warns about that, harmlessly (and fatally under -W error).
            "-W",
            f"ignore:{_MODULE!r} found in sys.modules:RuntimeWarning",
            "-m",
            _MODULE,
            "--url",
            self.url,
            "--name",
            self.name,
            "--namespace",
            self.namespace,
            "--prefix",
            self._prefix,
            "--config",
            json.dumps(attrs.asdict(self.config)),
            "--shutdown-timeout",
            repr(self._shutdown_timeout),
        ]
        if self._backoff is not None:
            backoff = self._backoff
            command += ["--backoff", f"{backoff.initial!r},{backoff.maximum!r},{backoff.factor!r}"]
        if self._vsn is not None:
            command += ["--vsn", str(self._vsn)]
        if not self._metas:
            command.append("--no-metas")
        for topic in self._watch:
            command += ["--watch", topic]
        if self._keyring_text is not None:
            command.append("--keyring-stdin")  # the keyring itself travels on standard input
        return command

    @property
    def keyring(self) -> Keyring | None:
        """The keyring the node was started with, or last given by :meth:`set_keyring`."""
        return self._keyring

    def restarted(
        self, *, vsn: int | None = None, keyring: Keyring | EllipsisType | None = ...
    ) -> NodeProcess:
        """A new :class:`NodeProcess` with the same options, not started: the same node name,
        a new incarnation (``vsn``, or by default one the driver picks from the clock), and
        ``keyring`` (by default the same one: pass another for a roll of a key rotation)."""
        return NodeProcess(
            self.url,
            name=self.name,
            namespace=self.namespace,
            config=self.config,
            watch=self._watch,
            metas=self._metas,
            prefix=self._prefix,
            backoff=self._backoff,
            vsn=vsn,
            shutdown_timeout=self._shutdown_timeout,
            start_timeout=self._start_timeout,
            env=self._env,
            keyring=self._keyring if isinstance(keyring, EllipsisType) else keyring,
        )

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> NodeProcess:
        if self._entered:
            raise RuntimeError("a NodeProcess runs once: use restarted() for another incarnation")
        self._entered = True
        # It lives as long as the child (closed in _finish), so no `with` can hold it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.started_at = time.monotonic()
        try:
            self._process = await anyio.open_process(
                self.command_line(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env={**os.environ, **self._env},
                # Its own session: a Ctrl-C meant for the test runner does not reach the child
                # (the parent kills it on the way out instead).
                start_new_session=True,
            )
            self._pid = self._process.pid
            if self._keyring_text is not None:
                await self._send_line(
                    {"keyring": self._keyring_text}, "its keyring", COMMAND_TIMEOUT
                )
            await self._wait(
                lambda: self._replica is not None,
                "its node runs",
                self._start_timeout,
                lambda: "it has not started",
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._finish()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        crashed = (
            process is not None
            and process.returncode is not None
            and self._exiting is None
            and self._failure is None
        )
        with anyio.CancelScope(shield=True):
            await self._finish()
        if exc is not None:
            return
        if crashed:
            assert process is not None
            self._failure = self._error(
                f"exited unexpectedly with code {process.returncode} during the test"
            )
        if self._failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self._failure

    async def _finish(self) -> None:
        """Kill the child if it runs, reap it, close everything (shield this from cancellation)."""
        process = self._process
        try:
            if process is not None:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                with anyio.move_on_after(EXIT_TIMEOUT) as scope:
                    await process.aclose()  # closes the pipes, then waits for the exit (reaps)
                if scope.cancelled_caught:
                    logger.error("%r: could not reap the child within %g s", self, EXIT_TIMEOUT)
        finally:
            if self._stderr is not None:
                self._stderr_final = self.stderr_tail()
                self._stderr.close()
                self._stderr = None

    def kill(self) -> float:
        """Kill the child at once (``os.kill(pid, SIGKILL)``): its node says no goodbye, so its
        peers notice only its silence.

        Returns:
            The parent's :func:`time.monotonic` just before the signal was sent (also kept in
            :attr:`killed_at`).

        Raises:
            NodeProcessError: the child was not started or has already been reaped.
        """
        process = self._process
        if process is None or process.returncode is not None:
            raise NodeProcessError(f"node {self.name!r} is not running ({self._state()})")
        self._exiting = "killed"
        self.killed_at = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        return self.killed_at

    async def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Wait until the child has exited, and reap it.

        Returns:
            Its exit status (negative: the signal that ended it).

        Raises:
            AssertionError: it still runs after ``timeout`` seconds.
        """
        process = self._require_process()
        with anyio.move_on_after(timeout):
            return await process.wait()
        raise AssertionError(f"node {self.name!r} did not exit within {timeout:g} s")

    async def stop(self, timeout: float = COMMAND_TIMEOUT) -> float:
        """Stop the node gracefully (its peers drop its presences at once), and wait until the
        child has exited.

        Returns:
            The parent's :func:`time.monotonic` just before the stop was sent.

        Raises:
            NodeProcessError: the child failed, or exited with a status other than 0.
            AssertionError: it did not stop within ``timeout`` seconds.
        """
        at = time.monotonic()
        await self.command("stop", timeout=timeout)
        self._exiting = "stopped"
        code = await self.wait_exit(timeout)
        if code != 0:
            raise self._error(f"exited with code {code} after a graceful stop")
        return at

    # ------------------------------------------------------------------ commands

    async def command(self, op: str, *, timeout: float = COMMAND_TIMEOUT, **args: Any) -> Reply:
        """Send one command and wait for its reply (the protocol's ``op`` and arguments).

        Raises:
            NodeProcessError: the command failed in the child (the message says why), or the
                child is gone.
            AssertionError: no reply within ``timeout`` seconds.
        """
        self._require_process()
        if self._exiting is not None:
            raise NodeProcessError(f"node {self.name!r} was {self._exiting}: it runs no {op!r}")
        self._ids += 1
        ident = self._ids
        await self._send_line({"id": ident, "op": op, **args}, f"the command {op!r}", timeout)
        await self._wait(
            lambda: ident in self._replies,
            f"it answers the command {op!r}",
            timeout,
            lambda: "no answer yet",
        )
        answer = self._replies.pop(ident)
        if not answer["ok"]:
            raise NodeProcessError(f"node {self.name!r}: {op} failed: {answer['error']}")
        return Reply(value=answer["value"], t=float(answer["t"]))

    async def _send_line(self, message: Mapping[str, Any], what: str, timeout: float) -> None:
        """Write one JSON line on the child's standard input (``what`` names it in errors: it
        may hold a secret, which no error message quotes)."""
        process = self._require_process()
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        assert process.stdin is not None
        try:
            with anyio.fail_after(timeout):
                async with self._send_lock:
                    await process.stdin.send(line)
        except TimeoutError:
            raise AssertionError(
                f"node {self.name!r} did not read {what} within {timeout:g} s"
            ) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise self._error(f"could not be sent {what} ({exc!r})") from exc

    async def set_keyring(self, keyring: Keyring) -> None:
        """Replace the running node's keyring (:meth:`Presence.set_keyring
        <presence_adapters.Presence.set_keyring>`): one node's step of a key rotation done
        without a restart. The keyring travels on the child's standard input.

        Raises:
            NodeProcessError: the child refused it (its node was started without a keyring).
        """
        await self.command("set_keyring", keyring=format_keyring(keyring))
        self._keyring = keyring

    async def ping(self) -> float:
        """Read everything the child wrote so far; returns the child's clock when it answered."""
        return (await self.command("ping")).t

    async def track(self, conn: str, topic: str, key: str, meta: Meta) -> str:
        """Track a presence on the child's node; returns its ``phx_ref``."""
        ref = (await self.command("track", conn=conn, topic=topic, key=key, meta=meta)).value
        assert isinstance(ref, str)
        return ref

    async def update(self, conn: str, topic: str, key: str, meta: Meta) -> str:
        """Replace a presence's meta on the child's node; returns the new ``phx_ref``."""
        ref = (await self.command("update", conn=conn, topic=topic, key=key, meta=meta)).value
        assert isinstance(ref, str)
        return ref

    async def untrack(self, conn: str, topic: str, key: str) -> None:
        """Untrack a presence on the child's node."""
        await self.command("untrack", conn=conn, topic=topic, key=key)

    async def untrack_conn(self, conn: str) -> None:
        """Untrack every presence of a connection on the child's node."""
        await self.command("untrack_conn", conn=conn)

    async def track_many(
        self,
        topic: str,
        count: int,
        meta: Meta,
        *,
        conn: str = "conn-{i}",
        key: str = "key-{i}",
        start: int = 0,
        timeout: float = 120.0,
    ) -> None:
        """Track ``count`` presences in one command: ``i`` runs from ``start``, and ``conn`` and
        ``key`` are :meth:`str.format` templates of ``i``; every presence gets ``meta``."""
        await self.command(
            "track_many",
            topic=topic,
            count=count,
            meta=meta,
            conn=conn,
            key=key,
            start=start,
            timeout=timeout,
        )

    async def list(self, topic: str) -> PresenceMap:
        """The child's ``presence.list(topic)``, as the node has it now."""
        value = (await self.command("list", topic=topic)).value
        assert isinstance(value, dict)
        return value

    async def count(self, topic: str) -> int:
        """The child's ``presence.count(topic)``."""
        value = (await self.command("count", topic=topic)).value
        assert isinstance(value, int)
        return value

    async def replicas(self) -> dict[str, tuple[int, str]]:
        """The replicas the child's node knows: ``{name: (vsn, status)}``, status ``"up"`` or
        ``"down"``."""
        value = (await self.command("replicas")).value
        assert isinstance(value, dict)
        return {name: (int(vsn), str(status)) for name, (vsn, status) in value.items()}

    async def stats(self) -> NodeStats:
        """The child's traffic counters and CPU time."""
        reply = await self.command("stats")
        value = reply.value
        assert isinstance(value, dict)
        pump = dict(value["pump"])
        pump["rejected_by_reason"] = _reasons(pump["rejected_by_reason"])
        tracker = dict(value["tracker"])
        tracker["rejected"] = _reasons(tracker["rejected"])
        return NodeStats(
            pump=PumpStats(**pump),
            tracker=TrackerStats(**tracker),
            transport=dict(value["transport"]),
            max_payload=int(value["max_payload"]),
            cpu=float(value["cpu"]),
            t=reply.t,
        )

    async def watch(self, topic: str, *, metas: bool = True) -> None:
        """Mirror ``topic`` from now on: its presences now, then every diff.

        Args:
            topic: the topic.
            metas: whether the metas travel too (leave them out for very large topics).
        """
        if topic in self._topics:
            return
        await self.command("watch", topic=topic, metas=metas)

    # ------------------------------------------------------------------ the mirror

    def _mirror(self, topic: str) -> dict[str, SeenPresence]:
        found = self._topics.get(topic)
        if found is None:
            raise ValueError(f"node {self.name!r} does not watch {topic!r}: call watch() first")
        return found

    def presences(self, topic: str) -> builtins.list[SeenPresence]:
        """The presences of a watched topic, as far as the parent has read (sorted by key, then
        owner and connection).

        Raises:
            ValueError: the topic is not watched.
        """
        return sorted(
            self._mirror(topic).values(),
            key=lambda seen: (seen.key, seen.owner.name, seen.owner.vsn, seen.conn),
        )

    def keys(self, topic: str) -> set[str]:
        """The keys of a watched topic's presences, as far as the parent has read.

        Raises:
            ValueError: the topic is not watched.
        """
        return {seen.key for seen in self._mirror(topic).values()}

    def refs(self, topic: str) -> Mapping[str, SeenPresence]:
        """The presences of a watched topic by ``phx_ref`` (a live, read-only view).

        Raises:
            ValueError: the topic is not watched.
        """
        return _ReadOnly(self._mirror(topic))

    def changed_at(self, topic: str) -> float:
        """The child's clock at the last change of a watched topic (or when its watch began).

        Raises:
            ValueError: the topic is not watched.
        """
        self._mirror(topic)
        return self._changed_at[topic]

    # ------------------------------------------------------------------ waiting

    async def wait_until(
        self, condition: Callable[[], bool], what: str, *, timeout: float = COMMAND_TIMEOUT
    ) -> float:
        """Wait until ``condition()`` holds, reading the child's output meanwhile.

        The condition is evaluated at once and after each batch of lines read; it should look at
        this object's mirror or logs.

        Returns:
            The child's clock of the last line read when the condition held.

        Raises:
            AssertionError: it did not hold within ``timeout`` seconds.
            NodeProcessError: the child is gone, or failed, before it held.
        """
        await self._wait(condition, what, timeout, lambda: "")
        return self._last_t

    async def wait_keys(
        self, topic: str, keys: Iterable[str], *, timeout: float = COMMAND_TIMEOUT
    ) -> float:
        """Wait until the watched ``topic`` holds exactly ``keys``.

        Returns:
            The child's clock when its node emitted the diff that made it so (or when the watch
            began, if it already held then).

        Raises:
            ValueError: the topic is not watched.
            AssertionError: it did not hold within ``timeout`` seconds.
            NodeProcessError: the child is gone, or failed, before it held.
        """
        wanted = set(keys)
        self._mirror(topic)
        await self._wait(
            lambda: self.keys(topic) == wanted,
            f"{topic!r} holds exactly the keys {sorted(wanted)}",
            timeout,
            lambda: f"it holds {sorted(self.keys(topic))}",
        )
        return self._changed_at[topic]

    async def wait_replica(
        self, kind: str, name: str, *, vsn: int | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> ReplicaRecord:
        """Wait for a replica event (``kind``: ``up``, ``down`` or ``permdown``) about replica
        ``name`` (and incarnation ``vsn``, if given); returns the first such event, even one
        that came before the call."""

        def find() -> ReplicaRecord | None:
            for record in self.replica_events:
                if (
                    record.kind == kind
                    and record.replica.name == name
                    and (vsn is None or record.replica.vsn == vsn)
                ):
                    return record
            return None

        about = name if vsn is None else f"{name}.{vsn}"
        await self._wait(
            lambda: find() is not None,
            f"it sees {about} {kind}",
            timeout,
            lambda: (
                "it saw "
                + (
                    ", ".join(
                        f"{r.replica.name}.{r.replica.vsn} {r.kind}" for r in self.replica_events
                    )
                    or "no replica event"
                )
            ),
        )
        found = find()
        assert found is not None
        return found

    async def _wait(
        self, condition: Callable[[], bool], what: str, timeout: float, seen: Callable[[], str]
    ) -> None:
        with anyio.move_on_after(timeout):
            while True:
                if condition():
                    return
                await self._raise_if_gone(what)
                await self._advance()
        instead = seen()
        raise AssertionError(
            f"node {self.name!r} (pid {self._pid}): timed out after {timeout:g} s waiting until "
            f"{what}" + (f"; {instead}" if instead else "") + self._tail_text()
        )

    async def _raise_if_gone(self, what: str) -> None:
        if self._failure is not None:
            self._failure_raised = True
            raise self._failure
        if not self._eof:
            return
        process = self._require_process()
        with anyio.move_on_after(EXIT_TIMEOUT):
            await process.wait()  # the output ended: the exit follows at once
        if self._exiting is None:
            self._failure = self._error(f"exited unexpectedly with code {process.returncode}")
            self._failure_raised = True
            raise self._failure
        raise NodeProcessError(
            f"node {self.name!r} was {self._exiting} (exit code {process.returncode}): it can "
            f"no longer see that {what}"
        )

    async def _advance(self) -> None:
        """Read and handle the child's next output; if another task is reading, wait for it."""
        if self._reading:
            await self._changed.wait()
            return
        stdout = self._require_process().stdout
        assert stdout is not None
        self._reading = True
        try:
            try:
                chunk = await stdout.receive(_CHUNK)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._eof = True
                return
            self._feed(chunk)
        finally:
            self._reading = False
            self._changed.set()
            self._changed = anyio.Event()

    def _feed(self, chunk: bytes) -> None:
        buffer = self._buffer
        buffer += chunk
        start = 0
        while self._failure is None:
            end = buffer.find(b"\n", max(start, self._scanned))
            if end < 0:
                break
            self._handle_line(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        self._scanned = len(buffer)
        if len(buffer) > MAX_LINE and self._failure is None:
            self._failure = self._error(f"wrote a line longer than {MAX_LINE} bytes")

    def _handle_line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise TypeError("not a JSON object")
            if "reply" in message:
                float(message["t"])
                ok = message["ok"]
                if ok is not True and ok is not False:
                    raise ValueError("a reply whose 'ok' is not a bool")
                if ("value" if ok else "error") not in message:
                    raise KeyError("value" if ok else "error")
                self._replies[int(message["reply"])] = message
                return
            kind = message["event"]
            t = float(message["t"])
            self._last_t = t
            if kind == "diff":
                self._apply_diff(message["topic"], t, message["joins"], message["leaves"])
            elif kind == "replica":
                self.replica_events.append(
                    ReplicaRecord(
                        kind=str(message["kind"]),
                        replica=ReplicaRef(str(message["name"]), int(message["vsn"])),
                        t=t,
                    )
                )
            elif kind == "broker":
                self.broker_events.append(
                    BrokerRecord(kind=str(message["kind"]), t=t, detail=str(message["detail"]))
                )
            elif kind == "watch":
                topic = str(message["topic"])
                self._topics[topic] = {
                    seen.phx_ref: seen for seen in _seen(topic, message["entries"], t)
                }
                self._changed_at[topic] = t
            elif kind == "ready":
                self.ready_at = t
                self._replica = ReplicaRef(str(message["name"]), int(message["vsn"]))
            else:
                raise ValueError(f"unknown event {kind!r}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            shown = line[:300].decode(errors="replace")
            self._failure = self._error(
                f"wrote something that is not the protocol ({exc}): {shown!r}"
            )

    def _apply_diff(self, topic: str, t: float, joins: Any, leaves: Any) -> None:
        joined = tuple(_seen(topic, joins, t))
        left = tuple(_seen(topic, leaves, t))
        self.diffs.append(DiffRecord(topic=topic, t=t, joins=joined, leaves=left))
        mirror = self._topics.get(topic)
        if mirror is None:
            raise ValueError(f"a diff of {topic!r}, which is not watched")
        for seen in joined:  # joins, then leaves: phoenix.js's syncDiff order
            mirror[seen.phx_ref] = seen
        for seen in left:
            mirror.pop(seen.phx_ref, None)
        self._changed_at[topic] = t

    # ------------------------------------------------------------------ errors

    def _require_process(self) -> Process:
        if self._process is None:
            raise NodeProcessError(f"node {self.name!r} has not been started")
        return self._process

    def stderr_tail(self, limit: int = STDERR_TAIL) -> str:
        """The last ``limit`` characters the child wrote to its standard error."""
        file = self._stderr
        if file is None:
            return self._stderr_final[-limit:]
        size = os.fstat(file.fileno()).st_size
        start = max(0, size - 4 * limit)
        # pread: the child shares the file offset, which a seek would move under its writes.
        data = os.pread(file.fileno(), size - start, start)
        return data.decode(errors="replace")[-limit:]

    def _tail_text(self) -> str:
        tail = self.stderr_tail().rstrip()
        return f"\n--- stderr of {self.name!r} ends with:\n{tail}" if tail else ""

    def _error(self, what: str) -> NodeProcessError:
        return NodeProcessError(f"node {self.name!r} (pid {self._pid}) {what}{self._tail_text()}")


class _ReadOnly(Mapping[str, SeenPresence]):
    """A read-only view of a mirror."""

    def __init__(self, inner: Mapping[str, SeenPresence]) -> None:
        self._inner = inner

    def __getitem__(self, key: str) -> SeenPresence:
        return self._inner[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)


def _reasons(counts: Mapping[str, int]) -> dict[RejectReason, int]:
    """Counts by reason, from JSON (keyed by the reasons' values)."""
    return {RejectReason(reason): int(count) for reason, count in counts.items()}


def _by_value(counts: Mapping[RejectReason, int]) -> dict[str, int]:
    """Counts by reason, for JSON."""
    return {reason.value: count for reason, count in counts.items()}


def _seen(topic: str, rows: Any, t: float) -> list[SeenPresence]:
    return [
        SeenPresence(
            topic=topic,
            key=str(key),
            conn=str(conn),
            owner=ReplicaRef(str(owner), int(vsn)),
            phx_ref=str(ref),
            meta=meta,
            seen_at=t,
        )
        for key, conn, owner, vsn, ref, meta in rows
    ]


# ---------------------------------------------------------------------------- the child


def main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point: ``python -m presence_adapters.testing.process --url URL --name
    NAME --namespace NS [--config JSON] [--watch TOPIC]... [--keyring-stdin]`` (what
    :class:`NodeProcess` runs). With ``--keyring-stdin`` the first line of standard input is
    the keyring, ``{"keyring": TEXT}``.

    Returns:
        The exit status: 0 after a graceful stop (or when standard input closed).
    """
    parser = argparse.ArgumentParser(
        prog="python -m presence_adapters.testing.process",
        description="Run one presence node on Redis or NATS, controlled over stdin/stdout "
        "with JSON lines (see presence_adapters.testing.process).",
    )
    parser.add_argument("--url", required=True, help="the broker: redis://... or nats://...")
    parser.add_argument("--name", required=True, help="the node's name")
    parser.add_argument("--namespace", required=True, help="the cluster on the broker")
    parser.add_argument("--prefix", default="presence", help="channel or subject prefix")
    parser.add_argument("--config", default="{}", help="TrackerConfig's fields, as JSON")
    parser.add_argument("--backoff", default=None, help="INITIAL,MAXIMUM,FACTOR in seconds")
    parser.add_argument("--vsn", type=int, default=None, help="the incarnation")
    parser.add_argument("--watch", action="append", default=[], help="a topic to watch")
    parser.add_argument("--no-metas", action="store_true", help="watch without the metas")
    parser.add_argument("--shutdown-timeout", type=float, default=2.0)
    parser.add_argument(
        "--keyring-stdin",
        action="store_true",
        help='read a keyring first, as one line of standard input: {"keyring": TEXT}',
    )
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {options.name.replace('%', '%%')} %(name)s %(levelname)s %(message)s",
    )
    # The protocol owns the original standard output; anything else printed (by a library, say)
    # goes to standard error instead of corrupting it.
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    return asyncio.run(_child(options, protocol))


class _Output(asyncio.BaseProtocol):
    """The child's protocol output: non-blocking writes, buffered on the child's side."""

    def __init__(self) -> None:
        self._transport: asyncio.WriteTransport | None = None
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    def send(self, message: Mapping[str, object]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the parent is gone; standard input ends too, and the node leaves
        transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def event(self, name: str, /, **fields: object) -> None:
        self.send({"event": name, "t": time.monotonic(), **fields})

    async def aclose(self) -> None:
        """Flush what is buffered (bounded) and close."""
        if self._transport is not None:
            self._transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._lost), EXIT_TIMEOUT)


async def _child(options: argparse.Namespace, protocol: IO[bytes]) -> int:
    from presence_adapters.drivers.asyncio import open_node

    loop = asyncio.get_running_loop()
    output = _Output()
    await loop.connect_write_pipe(lambda: output, protocol)
    commands = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    config = TrackerConfig(**json.loads(options.config))
    keyring = None
    if options.keyring_stdin:
        # The parent writes it right after starting the child, before any command.
        line = await commands.readline()
        keyring = parse_keyring(
            json.loads(line)["keyring"] if line else "", source="the keyring on standard input"
        )
    try:
        transport = await _connect(options, output)
        async with open_node(
            transport,
            vsn=options.vsn,
            config=config,
            shutdown_timeout=options.shutdown_timeout,
            keyring=keyring,
        ) as presence:
            child = _Child(output, transport, presence, metas=not options.no_metas)
            await child.serve(commands, options.watch)
        if child.stop_id is not None:
            output.send({"reply": child.stop_id, "ok": True, "value": None, "t": time.monotonic()})
    finally:
        await output.aclose()
    return 0


async def _connect(options: argparse.Namespace, output: _Output) -> Transport:
    backoff = Backoff()
    if options.backoff is not None:
        initial, maximum, factor = (float(part) for part in options.backoff.split(","))
        backoff = Backoff(initial=initial, maximum=maximum, factor=factor)

    def on_status(event: BrokerEvent) -> None:
        if isinstance(event, BrokerConnected):
            detail = f"after {event.attempts} attempt(s), {event.downtime:.3f} s down"
            output.event("broker", kind="connected", detail=detail)
        else:
            output.event("broker", kind="disconnected", detail=event.error)

    if broker_of(options.url) == "redis":
        from presence_adapters.transports.redis import RedisTransport

        return await RedisTransport.connect(
            options.url,
            name=options.name,
            namespace=options.namespace,
            channel_prefix=options.prefix,
            on_status=on_status,
            backoff=backoff,
        )
    from presence_adapters.transports.nats import NatsTransport

    return await NatsTransport.connect(
        options.url,
        name=options.name,
        namespace=options.namespace,
        subject_prefix=options.prefix,
        on_status=on_status,
        backoff=backoff,
    )


def _rows(entries: Iterable[Entry], metas: bool) -> list[JSONValue]:
    return [
        [
            entry.key,
            entry.conn,
            entry.owner.name,
            entry.owner.vsn,
            entry.meta["phx_ref"],
            entry.meta if metas else None,
        ]
        for entry in entries
    ]


class _Child:
    """The child's side: runs the commands, streams what the node sees."""

    def __init__(
        self, output: _Output, transport: Transport, presence: Presence, *, metas: bool
    ) -> None:
        self._output = output
        self._transport = transport
        self._presence = presence
        self._metas = metas
        self._tasks: list[asyncio.Task[None]] = []
        self._watched: set[str] = set()
        self._host: asyncio.Task[Any] | None = None
        self._failure: BaseException | None = None
        self.stop_id: int | None = None

    async def serve(self, commands: asyncio.StreamReader, watch: Sequence[str]) -> None:
        """Stream the node's events and run commands until ``stop`` or the end of the input."""
        self._host = asyncio.current_task()
        presence = self._presence
        try:
            self._start(self._replicas())
            for topic in watch:
                self._watch(topic, self._metas)
            replica = presence.replica
            self._output.event("ready", name=replica.name, vsn=replica.vsn, pid=os.getpid())
            while True:
                line = await commands.readline()
                if not line:
                    return  # the parent is gone: leave gracefully
                request = json.loads(line)
                if request["op"] == "stop":
                    self.stop_id = int(request["id"])
                    return
                self._output.send(self._run(request))
        except asyncio.CancelledError:
            if self._failure is not None:
                raise self._failure from None
            raise
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None and self._failure is None:
            self._failure = failure
            if self._host is not None:
                self._host.cancel()  # a stream broke: stop serving, and fail loudly

    def _run(self, request: dict[str, Any]) -> dict[str, object]:
        ident = request["id"]
        t = time.monotonic()
        try:
            value = self._call(request)
        except Exception as exc:
            return {"reply": ident, "ok": False, "error": f"{type(exc).__name__}: {exc}", "t": t}
        return {"reply": ident, "ok": True, "value": value, "t": t}

    def _call(self, request: dict[str, Any]) -> object:
        presence = self._presence
        op = request["op"]
        if op == "ping":
            return None
        if op in ("track", "update"):
            command = presence.track if op == "track" else presence.update
            return command(request["conn"], request["topic"], request["key"], request["meta"])
        if op == "untrack":
            presence.untrack(request["conn"], request["topic"], request["key"])
            return None
        if op == "untrack_conn":
            presence.untrack_conn(request["conn"])
            return None
        if op == "track_many":
            conn, key, topic, meta = (
                request["conn"],
                request["key"],
                request["topic"],
                request["meta"],
            )
            start = int(request["start"])
            for i in range(start, start + int(request["count"])):
                presence.track(conn.format(i=i), topic, key.format(i=i), meta)
            return None
        if op == "list":
            return presence.list(request["topic"])
        if op == "count":
            return presence.count(request["topic"])
        if op == "replicas":
            return {
                name: [info.ref.vsn, info.status.value]
                for name, info in presence.replicas().items()
            }
        if op == "stats":
            counters: Any = getattr(self._transport, "stats", None)
            pump = attrs.asdict(presence.stats)
            pump["rejected_by_reason"] = _by_value(presence.stats.rejected_by_reason)
            tracker = attrs.asdict(presence.tracker_stats())
            tracker["rejected"] = _by_value(presence.tracker_stats().rejected)
            return {
                "pump": pump,
                "tracker": tracker,
                "transport": attrs.asdict(counters) if attrs.has(type(counters)) else {},
                "max_payload": self._transport.max_payload,
                "cpu": time.process_time(),
            }
        if op == "watch":
            self._watch(request["topic"], bool(request["metas"]))
            return None
        if op == "set_keyring":
            source = "the keyring of set_keyring"
            presence.set_keyring(parse_keyring(request["keyring"], source=source))
            return None
        raise ValueError(f"unknown command {op!r}")

    def _watch(self, topic: str, metas: bool) -> None:
        if topic in self._watched:
            return
        self._watched.add(topic)
        presence = self._presence
        # Subscribe and read the state in one step (nothing can happen in between), so the
        # parent's mirror misses no diff and counts none twice.
        subscription = presence.subscribe(topic, max_buffered=_SUBSCRIPTION_BUFFER)
        entries = presence.pump.tracker.state.get_by_topic(topic)
        self._output.event("watch", topic=topic, entries=_rows(entries, metas))
        self._start(self._diffs(subscription, topic, metas))

    async def _diffs(self, subscription: Subscription[TopicDiff], topic: str, metas: bool) -> None:
        output = self._output
        async with subscription:
            async for diff in subscription:
                event = diff.event
                output.event(
                    "diff",
                    topic=topic,
                    joins=_rows(event.joins, metas),
                    leaves=_rows(event.leaves, metas),
                )

    async def _replicas(self) -> None:
        output = self._output
        async with self._presence.replica_events(max_buffered=_SUBSCRIPTION_BUFFER) as events:
            async for event in events:
                if isinstance(event, ReplicaUp):
                    kind = "up"
                elif isinstance(event, ReplicaDown):
                    kind = "down"
                else:
                    kind = "permdown"
                replica = event.replica
                output.event("replica", kind=kind, name=replica.name, vsn=replica.vsn)


if __name__ == "__main__":
    sys.exit(main())
