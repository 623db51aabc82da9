"""The Phoenix endpoint: websocket clients joined per second, and diff fan-out latency to 1,000
sockets on one node.

**Process layout.** The server is a child process: uvicorn (``loop="asyncio"``, ``http="h11"``,
``ws="wsproto"``, one worker, access log off, its websocket pings off so that none falls into a
timed window) serving :func:`presence_adapters.phoenix.create_app` on the asyncio driver: one node
with the default TrackerConfig on a private hub, the default
:class:`~presence_adapters.phoenix.SocketLimits` but for ``idle_timeout=None`` (the fan-out's
watchers send nothing after their join, however long the rounds take). The child binds a free
port of ``127.0.0.1`` itself before serving and prints it, so nothing can take the port in
between (the socket is made with ``IPPROTO_TCP``, as uvicorn's own are, so that asyncio turns
Nagle's algorithm off). Its join hook tracks ``payload["user"]`` with BENCH.md's meta when the
join names one, and tracks nothing otherwise (a *watcher*: it gets the topic's state and diffs
only); its event hook answers ``count`` with the number of presences on the node, which the
benchmark polls between runs until the previous run's sockets have all been untracked. The
clients all live in the benchmark process, on one asyncio loop: :class:`WebSocketClient`, a
websocket client of wsproto over an asyncio transport (standard library and wsproto only, which
the ``phoenix`` extra installs), speaking Phoenix's V2 serializer (``vsn=2.0.0``, what phoenix.js
speaks). Traffic goes over the loopback interface: no real network, no TLS, no proxy.

**Joins per second.** ``n`` sockets connect at once (one task each: TCP connect and websocket
upgrade), and each joins a topic of its own, ``room:join-<i>``, tracking ``user<i>``: timed from
before the first connect until every socket has received its join reply and its
``presence_state``. Every frame is checked: the reply is ``ok`` with the join's refs, the state
carries the join_ref and holds exactly that socket's presence with BENCH.md's meta; untimed
afterwards, each socket's own ``presence_diff`` (null refs) must hold its join, then every socket
closes and the next run waits until the node holds no presence. A baseline, *connect only*, opens
the ``n`` websockets without joining (the upgrade is answered once the endpoint accepted the
socket): what a websocket costs before any Phoenix message. The two alternate (AB, BA, ...)
``repeat`` times; best and median. Each run also reads the server process's CPU time (``utime +
stime`` of ``/proc/<pid>/stat``, in clock ticks of 10 ms on most kernels: meaningful over many
sockets only) and the benchmark process's own (:func:`time.process_time`). Both processes are
CPU-bound; on a machine with fewer than two free cores they slow each other down.

**Fan-out.** ``m`` watchers join ``room:fanout``, so setting up fans out nothing (had they been
tracked, their joins would have sent m²/2 diffs first); a diff holds only the change and is
encoded once for all the sockets of a serializer, so the topic's size does not change its cost.
Then each round: the clock is read; one more socket, the *probe*, joins the topic tracking
``probe<r>``; each watcher reads the clock in the callback that parsed its frame. The round gives
the time until the first, the median and the last watcher had that ``presence_diff``. Each frame
is checked (every watcher got exactly one, the same text, a diff with null join_ref and ref
joining exactly that key), and the probe's reply, state and own diff. Untimed, the probe leaves:
every watcher must receive the leave, and the probe its reply and ``phx_close``. It is a local
join: no broadcast period is waited for (a join on another node adds that node's tick, see
``bench/_driver.py``). Median and p99 (nearest rank) over the rounds, with the benchmark
process's CPU time over each timed fan-out and the server's over all rounds (two fan-outs each,
the join's and the leave's).

Left out: a real network, TLS and proxies; separate client machines (the client shares this one,
and its own work is inside every latency: the one client process reads and parses the frames one
socket after the other, so the last watcher also waits for the client to get through the others;
its CPU time is reported to show how much); the fetch hook (none); other nodes; heartbeats; other
uvicorn options (httptools, uvloop, workers); any application work in the hooks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from ._latency import percentile
from ._workloads import META

__all__ = [
    "CONNECT_ONLY",
    "JOIN",
    "VARIANTS",
    "EndpointResult",
    "FanoutRounds",
    "JoinRuns",
    "WebSocketClient",
    "measure_endpoint",
]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
PATH = "/socket/websocket"
FANOUT_TOPIC = "room:fanout"
HOST = "127.0.0.1"

CONNECT_ONLY = "connect only"
JOIN = "connect + join"
VARIANTS = (CONNECT_ONLY, JOIN)
"""The joins-per-second runs: the websocket alone, then the websocket and a Phoenix join."""

TIMEOUT = 60.0
"""Seconds any one run may take before the section fails (expected: well under a second)."""


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class JoinRuns:
    """The runs of one joins-per-second variant (``n`` sockets each), in the order they ran.

    Attributes:
        variant: :data:`CONNECT_ONLY` or :data:`JOIN`.
        wall: seconds from before the first connect until the last socket was ready.
        server_cpu: the server process's CPU seconds over each run (``None``: not readable).
        client_cpu: the benchmark process's CPU seconds over each run.
    """

    variant: str
    wall: tuple[float, ...]
    server_cpu: tuple[float, ...] | None
    client_cpu: tuple[float, ...]


@dataclass(frozen=True)
class FanoutRounds:
    """One tracked join fanned out to every watcher, per round, in seconds from the probe's join.

    Attributes:
        first: until the first watcher had parsed the diff.
        median: until the median watcher had.
        last: until the last watcher had.
        client_cpu: the benchmark process's CPU seconds from the probe's join to the last watcher.
        server_cpu: the server process's CPU seconds over all rounds, each a join and a leave
            fanned out (``None``: not readable).
    """

    first: tuple[float, ...]
    median: tuple[float, ...]
    last: tuple[float, ...]
    client_cpu: tuple[float, ...]
    server_cpu: float | None

    @property
    def server_cpu_per_fanout(self) -> float | None:
        """The server's CPU seconds per diff fanned out (a round fans out two: join, leave)."""
        return None if self.server_cpu is None else self.server_cpu / (2 * len(self.first))


@dataclass(frozen=True)
class EndpointResult:
    """Everything the endpoint section measured.

    Attributes:
        sockets: sockets per joins-per-second run.
        repeat: runs per variant.
        joins: per variant of :data:`VARIANTS`.
        watchers: sockets the fan-out reaches.
        rounds: fan-out rounds.
        fanout: the fan-out rounds.
        server: what serves the endpoint.
        cores: the machine's CPU count (the two processes share it).
        seconds: the wall time of the whole section.
    """

    sockets: int
    repeat: int
    joins: tuple[JoinRuns, ...]
    watchers: int
    rounds: int
    fanout: FanoutRounds
    server: str
    cores: int
    seconds: float

    @property
    def cpu_readable(self) -> bool:
        """Whether the server's CPU time could be read (``/proc``, Linux)."""
        return self.fanout.server_cpu is not None


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1e3


def p99_ms(samples: Sequence[float]) -> float:
    return percentile(samples, 99) * 1e3


# ---------------------------------------------------------------------------- the client


class ConnectionLost(Exception):
    """The server closed the websocket, or the connection."""


class WebSocketClient(asyncio.Protocol):
    """A websocket client of Phoenix V2 text frames: wsproto over an asyncio transport.

    It sits on asyncio's protocol layer (the one under streams) so that a frame's arrival is
    timed in the callback that parses it, with no task switch per socket: with a thousand sockets
    in one client process, the client's own cost is part of every latency, so it is kept small.
    :meth:`frame` returns the next text frame; while :attr:`on_frame` is set, frames go to it
    instead, with the clock read right after the frame was parsed. Pings are answered at once.
    """

    def __init__(self, host: str) -> None:
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._host = host
        self._target = ""
        self._transport: asyncio.Transport | None = None
        self._frames: collections.deque[str] = collections.deque()
        self._partial: list[str] = []
        self._waiter: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._accepted = False
        self.on_frame: Callable[[str, float], None] | None = None
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, port: int, query: str = "vsn=2.0.0") -> WebSocketClient:
        """Open a websocket to ``PATH?query`` and wait for the upgrade.

        Raises:
            ConnectionLost: the upgrade was refused.
        """
        loop = asyncio.get_running_loop()
        client = cls(f"{HOST}:{port}")
        client._target = f"{PATH}?{query}"
        await loop.create_connection(lambda: client, HOST, port)
        while not client._accepted:
            await client._wait()
        return client

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._ws.send(Request(host=self._host, target=self._target)))

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage):
                    self._partial.append(event.data)
                    if event.message_finished:
                        text = "".join(self._partial)
                        self._partial.clear()
                        if self.on_frame is not None:
                            self.on_frame(text, time.perf_counter())
                        else:
                            self._frames.append(text)
                elif isinstance(event, AcceptConnection):
                    self._accepted = True
                elif isinstance(event, Ping):
                    self._write(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    raise ConnectionLost(f"the server closed the websocket ({event.code})")
                elif isinstance(event, (RejectConnection, RejectData)):
                    raise ConnectionLost("the server refused the websocket")
                elif isinstance(event, BytesMessage):
                    raise AssertionError("endpoint: the server sent a binary frame")
        except Exception as exc:  # handed to whoever waits on this socket
            self._failure = exc
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._failure is None:
            self._failure = ConnectionLost(f"the connection was lost ({exc!r})")
        self._wake()

    # the client's side

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self._failure is not None:
            raise self._failure
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._failure is not None and not self._frames:
            raise self._failure

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def frame(self) -> str:
        """The next text frame from the server."""
        while not self._frames:
            await self._wait()
        return self._frames.popleft()

    def send(self, text: str) -> None:
        """Send one text frame (the transport buffers it; no flow control needed here)."""
        self._write(self._ws.send(TextMessage(data=text)))

    async def close(self) -> None:
        """Close the websocket (code 1000) and the connection."""
        with contextlib.suppress(LocalProtocolError):  # the websocket was already closed
            self._write(self._ws.send(CloseConnection(code=1000)))
        if self._transport is not None:
            self._transport.close()


async def _bounded(what: str, awaitable: Awaitable[T], seconds: float = TIMEOUT) -> T:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"endpoint: {what}: no answer within {seconds:g} s") from None


# ---------------------------------------------------------------------------- the frames


def _frame(text: str, what: str) -> list[Any]:
    frame = json.loads(text)
    if not isinstance(frame, list) or len(frame) != 5:
        raise AssertionError(f"endpoint: {what}: not a V2 frame: {text!r}")
    return frame


def _check_reply(text: str, join_ref: str, ref: str, topic: str, what: str) -> None:
    expected = [join_ref, ref, topic, "phx_reply", {"status": "ok", "response": {}}]
    if _frame(text, what) != expected:
        raise AssertionError(f"endpoint: {what}: the reply is {text!r}")


def _check_presences(presences: Any, key: str | None, what: str, text: str) -> str | None:
    """``presences`` is exactly ``{key: {"metas": [META + phx_ref]}}`` (``{}`` for no key);
    returns the phx_ref."""
    if key is None:
        if presences != {}:
            raise AssertionError(f"endpoint: {what}: expected no presence, got {text!r}")
        return None
    try:
        (meta,) = presences[key]["metas"]
        ref = meta["phx_ref"]
    except (KeyError, TypeError, ValueError):
        raise AssertionError(f"endpoint: {what}: no presence of {key} in {text!r}") from None
    if list(presences) != [key] or {**META, "phx_ref": ref} != meta or type(ref) is not str:
        raise AssertionError(f"endpoint: {what}: wrong presences in {text!r}")
    return ref


def _check_state(text: str, join_ref: str, topic: str, key: str | None, what: str) -> str | None:
    frame = _frame(text, what)
    if frame[:4] != [join_ref, None, topic, "presence_state"]:
        raise AssertionError(f"endpoint: {what}: not the channel's presence_state: {text!r}")
    return _check_presences(frame[4], key, what, text)


def _check_diff(text: str, topic: str, joined: str | None, left: str | None, what: str) -> None:
    frame = _frame(text, what)
    payload = frame[4]
    if frame[:4] != [None, None, topic, "presence_diff"] or not isinstance(payload, dict):
        raise AssertionError(f"endpoint: {what}: not a presence_diff broadcast: {text!r}")
    if set(payload) != {"joins", "leaves"}:
        raise AssertionError(f"endpoint: {what}: a diff is joins and leaves: {text!r}")
    _check_presences(payload["joins"], joined, what, text)
    _check_presences(payload["leaves"], left, what, text)


def _join_frame(join_ref: str, topic: str, user: str | None) -> str:
    return json.dumps(
        [join_ref, join_ref, topic, "phx_join", {} if user is None else {"user": user}]
    )


# ---------------------------------------------------------------------------- the server


def _raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit of open files to ``needed`` if the hard limit allows."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _server_main() -> None:
    """The child process: ``sockets`` in argv; prints the port, then serves until SIGTERM."""
    import uvicorn

    from presence_adapters.drivers.asyncio import open_node
    from presence_adapters.phoenix import (
        Accept,
        ChannelEvent,
        JoinRequest,
        Reply,
        SocketLimits,
        create_app,
    )

    _raise_fd_limit(2 * int(sys.argv[1]) + 256)

    async def on_join(request: JoinRequest) -> Accept:
        user = request.payload.get("user")
        if isinstance(user, str):
            return Accept(key=user, meta=META)
        return Accept()  # a watcher: it gets the topic's state and diffs, and tracks nothing

    async def on_event(event: ChannelEvent) -> Reply:
        # For the benchmark only: how many presences the node holds, all topics together.
        node = event.presence
        return Reply({"presences": sum(node.count(topic) for topic in node.topics())})

    # The watchers stay silent through every round: no idle timeout (a slow machine could take
    # longer than its 60 s); every other bound at its default.
    limits = SocketLimits(idle_timeout=None)
    app = create_app(open_node, on_join=on_join, on_event=on_event, limits=limits)
    # IPPROTO_TCP explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets
    # whose proto says TCP, and accepted sockets inherit it. With proto 0, the presence_state that
    # follows a join reply would wait for the client's delayed ACK (40 ms).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(4096)
    print(listener.getsockname()[1], flush=True)
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        ws="wsproto",
        lifespan="on",
        log_level="warning",
        access_log=False,
        ws_ping_interval=None,
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=[listener])


def _server_version() -> str:
    from importlib.metadata import version

    return (
        f"uvicorn {version('uvicorn')} (asyncio loop, h11, wsproto {version('wsproto')}), "
        "asyncio driver, one process"
    )


class _Server:
    """The server child process and its CPU clock."""

    def __init__(self, sockets: int, errors: IO[str]) -> None:
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "import bench._endpoint as e; e._server_main()"
        )
        # Its stderr goes to a file: a pipe nobody reads could fill up and block the server.
        self._errors = errors
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(sockets)],
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        try:
            ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        except (OSError, ValueError):  # no select on pipes on this platform: block instead
            ready = [self.process.stdout]
        line = self.process.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            output = self.stop()
            raise AssertionError(f"endpoint: the server did not start: {line!r}\n{output}")
        self.port = int(line)
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def cpu(self) -> float | None:
        """The server process's CPU seconds so far (user + system), or ``None`` (no /proc)."""
        try:
            with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL) and return what it wrote to stderr."""
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._errors.seek(0)
        return self._errors.read()


# ---------------------------------------------------------------------------- joins per second


async def _connect_and_join(port: int, i: int, join: bool) -> tuple[WebSocketClient, str | None]:
    """One socket of a joins run: connect, and join ``room:join-<i>`` as ``user<i>``."""
    client = await WebSocketClient.connect(port)
    if not join:
        return client, None
    topic, user, what = f"room:join-{i}", f"user{i}", f"join of user{i}"
    client.send(_join_frame("1", topic, user))
    _check_reply(await client.frame(), "1", "1", topic, what)
    ref = _check_state(await client.frame(), "1", topic, user, what)
    return client, ref


async def _own_diff(client: WebSocketClient, i: int) -> None:
    _check_diff(await client.frame(), f"room:join-{i}", f"user{i}", None, f"user{i}'s own diff")


async def _joins_run(server: _Server, n: int, join: bool) -> tuple[float, float | None, float]:
    """One run: ``n`` sockets connect (and join) at once. Returns (wall, server CPU, own CPU)."""
    gc.collect()
    server_cpu, cpu, wall = server.cpu(), time.process_time(), time.perf_counter()
    opened = await _bounded(
        "joins", asyncio.gather(*(_connect_and_join(server.port, i, join) for i in range(n)))
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server_after = server.cpu()
    server_used = None if server_cpu is None or server_after is None else server_after - server_cpu
    clients = [client for client, _ in opened]
    if join:
        await _bounded(
            "own diffs", asyncio.gather(*(_own_diff(c, i) for i, c in enumerate(clients)))
        )
    await _bounded("closing", asyncio.gather(*(client.close() for client in clients)))
    return wall, server_used, cpu


class _Monitor:
    """A watcher of its own topic that asks the node how many presences it holds."""

    TOPIC = "room:monitor"
    POLL = 0.03
    """Seconds between two questions: under the endpoint's default rate (50 frames/s)."""

    def __init__(self, client: WebSocketClient) -> None:
        self.client = client
        self._refs = 0

    @classmethod
    async def open(cls, port: int) -> _Monitor:
        client = await WebSocketClient.connect(port)
        client.send(_join_frame("1", cls.TOPIC, None))
        _check_reply(await client.frame(), "1", "1", cls.TOPIC, "the monitor's join")
        _check_state(await client.frame(), "1", cls.TOPIC, None, "the monitor's join")
        return cls(client)

    async def presences(self) -> int:
        self._refs += 1
        ref = f"count-{self._refs}"
        self.client.send(json.dumps(["1", ref, self.TOPIC, "count", {}]))
        frame = _frame(await self.client.frame(), "the monitor")
        count = frame[4].get("response", {}).get("presences") if frame[:2] == ["1", ref] else None
        if type(count) is not int:
            raise AssertionError(f"endpoint: the monitor got {frame!r}")
        return count

    async def until_empty(self) -> None:
        """Wait until the node holds no presence (every socket of a run has been untracked)."""
        deadline = time.perf_counter() + TIMEOUT
        while await self.presences():
            if time.perf_counter() > deadline:
                raise AssertionError("endpoint: the closed sockets' presences never left")
            await asyncio.sleep(self.POLL)


async def _joins(server: _Server, monitor: _Monitor, n: int, repeat: int) -> list[JoinRuns]:
    runs: dict[str, list[tuple[float, float | None, float]]] = {v: [] for v in VARIANTS}
    await _joins_run(server, min(n, 10), join=True)  # warm-up, untimed
    await monitor.until_empty()
    for r in range(repeat):
        for variant in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
            runs[variant].append(await _joins_run(server, n, join=variant == JOIN))
            await monitor.until_empty()
            await asyncio.sleep(0.1)  # let the server finish closing the sockets
    result = []
    for variant in VARIANTS:
        found = runs[variant]
        server_cpu = [s for _, s, _ in found if s is not None]
        result.append(
            JoinRuns(
                variant,
                tuple(w for w, _, _ in found),
                tuple(server_cpu) if len(server_cpu) == len(found) else None,
                tuple(c for _, _, c in found),
            )
        )
    return result


# ---------------------------------------------------------------------------- fan-out


async def _watchers(server: _Server, m: int) -> list[WebSocketClient]:
    async def watcher(i: int) -> WebSocketClient:
        client = await WebSocketClient.connect(server.port)
        client.send(_join_frame("1", FANOUT_TOPIC, None))
        what = f"watcher {i}'s join"
        _check_reply(await client.frame(), "1", "1", FANOUT_TOPIC, what)
        _check_state(await client.frame(), "1", FANOUT_TOPIC, None, what)
        return client

    return await _bounded("watchers", asyncio.gather(*(watcher(i) for i in range(m))))


async def _collect(
    watchers: Sequence[WebSocketClient], send: Callable[[], None], what: str
) -> tuple[list[float], list[str], float]:
    """Call ``send``, then wait until every watcher received one frame: returns, per watcher,
    the seconds from just before ``send`` until its frame was parsed, and the frame; and this
    process's CPU seconds over that window."""
    m = len(watchers)
    times = [0.0] * m
    texts: list[str | None] = [None] * m
    pending = [m]
    extra: list[str] = []
    everyone = asyncio.get_running_loop().create_future()

    def receiver(i: int) -> Callable[[str, float], None]:
        def received(text: str, now: float) -> None:
            if texts[i] is not None:
                extra.append(text)
                return
            texts[i], times[i] = text, now
            pending[0] -= 1
            if not pending[0] and not everyone.done():
                everyone.set_result(None)

        return received

    for i, client in enumerate(watchers):
        client.on_frame = receiver(i)
    cpu, start = time.process_time(), time.perf_counter()
    send()
    try:
        await _bounded(what, everyone)
    finally:
        cpu = time.process_time() - cpu
        for client in watchers:
            client.on_frame = None
    if extra:
        raise AssertionError(f"endpoint: {what}: a watcher got more than one frame: {extra[0]!r}")
    return [t - start for t in times], [text for text in texts if text is not None], cpu


async def _round(
    watchers: Sequence[WebSocketClient], probe: WebSocketClient, r: int
) -> tuple[float, float, float, float]:
    """One fan-out round: the probe joins as ``probe<r>``; returns (first, median, last, this
    process's CPU over them)."""
    key, join_ref, what = f"probe{r}", str(r + 1), f"fan-out round {r}"
    gc.collect()
    times, texts, cpu = await _collect(
        watchers, lambda: probe.send(_join_frame(join_ref, FANOUT_TOPIC, key)), what
    )
    times.sort()
    # Untimed: check every frame (one text for all), then the probe leaves and all see it leave.
    if len(set(texts)) != 1:
        raise AssertionError(f"endpoint: {what}: the watchers got different frames")
    _check_diff(texts[0], FANOUT_TOPIC, key, None, what)
    _check_reply(await probe.frame(), join_ref, join_ref, FANOUT_TOPIC, what)
    _check_state(await probe.frame(), join_ref, FANOUT_TOPIC, key, what)
    _check_diff(await probe.frame(), FANOUT_TOPIC, key, None, f"{what}, the probe's own diff")
    leave = json.dumps([join_ref, f"{join_ref}-leave", FANOUT_TOPIC, "phx_leave", {}])
    _, leaves, _ = await _collect(watchers, lambda: probe.send(leave), f"{what}, the leave")
    if len(set(leaves)) != 1:
        raise AssertionError(f"endpoint: {what}: the watchers got different leaves")
    _check_diff(leaves[0], FANOUT_TOPIC, None, key, f"{what}, the leave")
    left = _frame(await probe.frame(), what)
    closed = _frame(await probe.frame(), what)
    if left[3:] != ["phx_reply", {"status": "ok", "response": {}}] or closed[3] != "phx_close":
        raise AssertionError(f"endpoint: {what}: the probe's leave got {left!r}, {closed!r}")
    return times[0], statistics.median(times), times[-1], cpu


async def _fanout(server: _Server, m: int, rounds: int) -> FanoutRounds:
    watchers = await _watchers(server, m)
    probe = await WebSocketClient.connect(server.port)
    await _round(watchers, probe, -1)  # warm-up, untimed
    server_cpu = server.cpu()
    samples = [await _round(watchers, probe, r) for r in range(rounds)]
    server_after = server.cpu()
    await _bounded("closing", asyncio.gather(*(c.close() for c in [*watchers, probe])))
    return FanoutRounds(
        first=tuple(s[0] for s in samples),
        median=tuple(s[1] for s in samples),
        last=tuple(s[2] for s in samples),
        client_cpu=tuple(s[3] for s in samples),
        server_cpu=None
        if server_cpu is None or server_after is None
        else server_after - server_cpu,
    )


# ---------------------------------------------------------------------------- the section


def measure_endpoint(
    *, sockets: int, repeat: int, watchers: int, rounds: int, progress: Callable[[str], None]
) -> EndpointResult:
    """The whole section: joins per second, then fan-out; every frame checked.

    Raises:
        AssertionError: the server did not start, a frame was missing or wrong, or a run took
            longer than :data:`TIMEOUT`.
    """
    start = time.perf_counter()
    _raise_fd_limit(2 * max(sockets, watchers) + 256)

    async def main(server: _Server) -> tuple[list[JoinRuns], FanoutRounds]:
        monitor = await _Monitor.open(server.port)
        joins = await _joins(server, monitor, sockets, repeat)
        fanout = await _fanout(server, watchers, rounds)
        if await monitor.presences():
            raise AssertionError("endpoint: presences were left behind")
        await monitor.client.close()
        return joins, fanout

    with tempfile.TemporaryFile(mode="w+") as errors_file:
        server = _Server(max(sockets, watchers) + 16, errors_file)
        try:
            joins, fanout = asyncio.run(main(server))
        except BaseException:
            errors = server.stop()
            if errors:
                print(errors, file=sys.stderr)
            raise
        errors = server.stop()
    if server.process.returncode not in (0, -15):
        raise AssertionError(
            f"endpoint: the server failed ({server.process.returncode}):\n{errors}"
        )
    for runs in joins:
        progress(
            f"endpoint, {runs.variant}: {sockets / min(runs.wall):,.0f} sockets/s "
            f"({sockets} at once)"
        )
    progress(
        f"endpoint fan-out to {watchers}: median {median_ms(fanout.first):.1f} ms first, "
        f"{median_ms(fanout.last):.1f} ms last"
    )
    return EndpointResult(
        sockets=sockets,
        repeat=repeat,
        joins=tuple(joins),
        watchers=watchers,
        rounds=rounds,
        fanout=fanout,
        server=_server_version(),
        cores=os.cpu_count() or 0,
        seconds=time.perf_counter() - start,
    )
