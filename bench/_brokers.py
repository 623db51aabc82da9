"""Brokers: nodes in separate processes over Redis and NATS.

Three figures per broker, each node a child process of its own
(:class:`~presence_adapters.testing.NodeProcess`: its own interpreter, asyncio driver and broker
connection, controlled over its standard input and output). Every time below is read by the
children themselves (:func:`time.monotonic`, one clock for every process of the machine), so the
parent's pipes are outside every timed span; the children's CPU times (:func:`time.process_time`)
include their share of that harness work (reading commands, writing lines), which is stated.

**Brokers.** ``PRESENCE_REDIS_URL`` / ``PRESENCE_NATS_URL`` when set; else a ``redis-server``
(``--save '' --appendonly no``, defaults otherwise: ``client-output-buffer-limit pubsub 32mb 8mb
60``) or ``nats-server`` (defaults: ``max_payload`` 1 MiB) this section starts on a free loopback
port and stops at the end; else the broker is skipped, and the output says why. Each figure runs
in a namespace of its own.

**(a) Track to visible.** Two processes, A and B, ``TrackerConfig(broadcast_period=period)`` and
the other defaults; B watches the topic without metas. Once each has seen the other up, each
sample is: sleep a random fraction of a period (seeded, so a track lands at a uniform point of A's
tick cycle), A tracks a new presence with BENCH.md's meta, B's node shows it. The time runs from A
running the track to B's subscription yielding the diff, both read in the children. It is mostly
the wait for A's next tick (half a period on average): then encoding, the broker, B's transport
and loop, decoding, the merge. Median, p99 (nearest rank) and best; the CPU time of A and of B
over all samples, per sample.

**(b) A large state reaching a new node.** A holder process tracks ``presences`` presences (one
topic, one connection each) whose metas are 600 bytes of JSON each, and broadcasts its delta;
then a joiner process starts. Timed from just before the joiner's process is spawned (the
parent's clock) to the joiner's node showing the last of them (its clock), split into start-up
(the interpreter, the imports, connecting: until its node runs), discovery (until it hears the
holder's first heartbeat and marks it up) and transfer (from then until all presences are shown:
its transfer request, the holder's extract and encoding, the broker, decoding, the merge). Both
use ``TrackerConfig(broadcast_period=0.1, max_silent_periods=1, down_period=30.0)``: an idle
node heartbeats every 0.2 s (with the default config a newcomer may wait up to 16.5 s for an idle
cluster's first heartbeat, which would measure nothing but that), and a node busy encoding or
decoding a large message for seconds is not taken for dead. Also shown: the bytes the holder sent
meanwhile, and both processes' CPU time over the span (the joiner's includes writing the
presences to the parent, keys and refs only). The state crosses in parts that each fit the
broker's payload limit. If the holder still drops a message as unsendable (its ``unsendable``
count), or the broker cuts the joiner's connection again and again during the transfer, the
figure says so instead of waiting out its deadline.

**(c) Churn.** Three processes with the default TrackerConfig (a tick every 1.5 s), each holding
``churn_presences`` presences with BENCH.md's meta; once all three list all of them, each node
gets ``churn_rate`` untracks of its oldest presence and tracks of a new one per second, for
``churn_window`` seconds (the parent paces the commands). Per node: bytes and messages its pump
sent and received per second (:class:`~presence_adapters.PumpStats`: a broadcast counts once, the
broker's copies to each subscriber are not counted), and its CPU time per wall second. Afterwards
every node must list the same presences.

Left out: a real network (loopback only), TLS, clustered brokers, other broker settings, the
broker's own CPU and memory, nodes on separate machines (all processes share this one's cores),
the anyio driver and trio, and the fetch hook.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from presence_adapters.testing import NodeProcess, NodeStats, SeenPresence
from presence_core import TrackerConfig

from ._latency import percentile
from ._workloads import META

__all__ = [
    "BROKERS",
    "FULL_BROKERS",
    "QUICK_BROKERS",
    "BrokerPlan",
    "BrokerResult",
    "BrokerRun",
    "ChurnFigure",
    "LatencyFigure",
    "TransferFigure",
    "big_meta",
    "churn_header",
    "churn_rows",
    "latency_header",
    "latency_rows",
    "measure_brokers",
    "notes",
    "render_brokers",
    "transfer_failures",
    "transfer_header",
    "transfer_rows",
]

TOPIC = "room:bench"
BROKERS = ("Redis", "NATS")
SEED = 20_240_601

START_TIMEOUT = 10.0
"""Seconds a broker server this section starts may take to answer."""

WAIT = 30.0
"""Seconds any one wait of the section may take (a sample, a convergence) before it fails."""

TRANSFER_CONFIG = TrackerConfig(broadcast_period=0.1, max_silent_periods=1, down_period=30.0)
"""The tracker options of figure (b) (see the module's docstring)."""

META_BYTES = 600
"""The size of each meta of figure (b), as JSON."""

MAX_DISCONNECTIONS = 3
"""Times the broker may cut the joiner of (b) off before the transfer counts as failed (a
transfer the broker cannot deliver would otherwise be re-sent until the deadline)."""

IDLE_BYTES = 4096
"""Bytes a holder may send over two broadcast periods and still count as idle (heartbeats)."""


@dataclass(frozen=True)
class BrokerPlan:
    """The sizes of the broker section.

    Attributes:
        latency_samples: tracks timed per broker in figure (a).
        latency_period: the ``broadcast_period`` of figure (a).
        presences: presences of the state that reaches a new node in figure (b).
        transfer_timeout: seconds the new node may take to show them all before (b) fails.
        churn_nodes: processes of figure (c).
        churn_presences: presences each of them holds.
        churn_rate: untracks and tracks (pairs) per second per node.
        churn_window: seconds the churn is measured for.
    """

    latency_samples: int
    latency_period: float
    presences: int
    transfer_timeout: float
    churn_nodes: int
    churn_presences: int
    churn_rate: int
    churn_window: float


FULL_BROKERS = BrokerPlan(
    latency_samples=300,
    latency_period=0.02,
    presences=100_000,
    transfer_timeout=120.0,
    churn_nodes=3,
    churn_presences=1_000,
    churn_rate=50,
    churn_window=10.0,
)

QUICK_BROKERS = BrokerPlan(
    latency_samples=30,
    latency_period=0.02,
    presences=1_000,
    transfer_timeout=30.0,
    churn_nodes=3,
    churn_presences=100,
    churn_rate=20,
    churn_window=3.0,
)


@dataclass(frozen=True)
class LatencyFigure:
    """Figure (a) on one broker.

    Attributes:
        samples: seconds from A's track to B's node showing it, per sample.
        sender_cpu: A's CPU seconds over all samples.
        receiver_cpu: B's CPU seconds over all samples.
    """

    samples: tuple[float, ...]
    sender_cpu: float
    receiver_cpu: float


@dataclass(frozen=True)
class TransferFigure:
    """Figure (b) on one broker.

    Attributes:
        presences: presences the holder tracked.
        arrived: how many the joiner showed at the end (all of them, unless it failed).
        startup: seconds from spawning the joiner until its node ran.
        discovery: from then until it marked the holder up (``None``: it never did).
        transfer: from then until it showed every presence (``None``: failed).
        holder_bytes: bytes the holder's pump sent over the span.
        holder_cpu: the holder's CPU seconds over the span.
        joiner_cpu: the joiner's CPU seconds from its start to the end of the span.
        max_payload: the holder transport's ``max_payload``.
        failure: why the state did not arrive, or ``None``.
    """

    presences: int
    arrived: int
    startup: float
    discovery: float | None
    transfer: float | None
    holder_bytes: int
    holder_cpu: float
    joiner_cpu: float
    max_payload: int
    failure: str | None

    @property
    def total(self) -> float | None:
        """Seconds from spawning the joiner until it showed every presence (``None``: failed)."""
        if self.discovery is None or self.transfer is None:
            return None
        return self.startup + self.discovery + self.transfer


@dataclass(frozen=True)
class ChurnNode:
    """One node of figure (c), per wall second of the window.

    Attributes:
        name: the node.
        sent_bytes: bytes its pump sent.
        received_bytes: bytes its pump received.
        sent: messages sent.
        received: messages received.
        cpu: CPU seconds (so the share of one core).
    """

    name: str
    sent_bytes: float
    received_bytes: float
    sent: float
    received: float
    cpu: float


@dataclass(frozen=True)
class ChurnFigure:
    """Figure (c) on one broker.

    Attributes:
        nodes: per node.
        pairs: untrack + track pairs done per node.
        window: the window's wall seconds.
    """

    nodes: tuple[ChurnNode, ...]
    pairs: int
    window: float


@dataclass(frozen=True)
class BrokerRun:
    """Everything measured on one broker (or why it was skipped).

    Attributes:
        broker: ``Redis`` or ``NATS``.
        server: what served it.
        skipped: why it was not measured, or ``None``.
        latency: figure (a).
        transfer: figure (b).
        churn: figure (c).
    """

    broker: str
    server: str
    skipped: str | None
    latency: LatencyFigure | None
    transfer: TransferFigure | None
    churn: ChurnFigure | None


@dataclass(frozen=True)
class BrokerResult:
    """The broker section.

    Attributes:
        plan: its sizes.
        runs: one per broker of :data:`BROKERS`.
        cores: the machine's CPU count (every process shares it).
        seconds: the wall time of the section.
    """

    plan: BrokerPlan
    runs: tuple[BrokerRun, ...]
    cores: int
    seconds: float


def big_meta(size: int = META_BYTES) -> dict[str, str]:
    """BENCH.md's meta, padded so that its JSON is ``size`` bytes."""
    meta = {**META, "pad": ""}
    meta["pad"] = "x" * (size - len(json.dumps(meta, separators=(",", ":"))))
    return meta


def _namespace(what: str) -> str:
    return f"bench-{what}-{random.getrandbits(32):08x}"


# ---------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int, hello: bytes, expected: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if hello:
                sock.sendall(hello)
            return sock.recv(64).startswith(expected)
    except OSError:
        return False


def _version(command: Sequence[str]) -> str:
    try:
        found = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown version"
    text = (found.stdout or found.stderr).strip()
    return " ".join(text.split()[:3]) if text else "unknown version"


def _nats_binary() -> str | None:
    explicit = os.environ.get("PRESENCE_NATS_SERVER", "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None
    )


@contextlib.contextmanager
def _server(broker: str) -> Iterator[tuple[str | None, str]]:
    """``(url, what serves it)``, or ``(None, why not)``; a server started here is stopped at the
    end."""
    variable = "PRESENCE_REDIS_URL" if broker == "Redis" else "PRESENCE_NATS_URL"
    url = os.environ.get(variable, "").strip()
    if url:
        yield url, f"{variable}={url}"
        return
    if broker == "Redis":
        binary = shutil.which("redis-server")
        if binary is None:
            yield None, f"no Redis: set {variable}, or put redis-server on PATH"
            return
    else:
        binary = _nats_binary()
        if binary is None:
            yield None, f"no NATS: set {variable}, or install nats-server"
            return
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        if broker == "Redis":
            command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            command += ["--appendonly", "no", "--dir", directory]
            hello, expected, url = b"PING\r\n", b"+PONG", f"redis://127.0.0.1:{port}"
        else:
            command = [binary, "-a", "127.0.0.1", "-p", str(port)]
            hello, expected, url = b"", b"INFO", f"nats://127.0.0.1:{port}"
        version = _version([binary, "--version"])
        log = Path(directory) / "server.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers(port, hello, expected):
                if process.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-2000:]
                    yield None, f"{binary} did not start on port {port}: {text}"
                    return
                time.sleep(0.01)
            yield url, f"{version}, started by the benchmark on 127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---------------------------------------------------------------------------- the figures


def _holds(refs: Mapping[str, SeenPresence], ref: str) -> Callable[[], bool]:
    return lambda: ref in refs


async def _latency(url: str, plan: BrokerPlan) -> LatencyFigure:
    config = TrackerConfig(broadcast_period=plan.latency_period)
    ns = _namespace("latency")
    rng = random.Random(SEED)
    async with (
        NodeProcess(url, name="sender", namespace=ns, config=config) as a,
        NodeProcess(url, name="receiver", namespace=ns, config=config, watch=[TOPIC]) as b,
    ):
        await b.wait_replica("up", "sender", timeout=WAIT)
        await a.wait_replica("up", "receiver", timeout=WAIT)
        samples: list[float] = []
        before = (await a.stats(), await b.stats())
        for i in range(plan.latency_samples):
            await anyio.sleep(rng.uniform(0.0, plan.latency_period))
            reply = await a.command("track", conn=f"conn-{i}", topic=TOPIC, key=f"u{i}", meta=META)
            ref = reply.value
            assert isinstance(ref, str)
            refs = b.refs(TOPIC)
            await b.wait_until(_holds(refs, ref), f"it shows {ref}", timeout=WAIT)
            seen = refs[ref]
            if (
                seen.key != f"u{i}"
                or seen.owner != a.replica
                or seen.meta != {**META, "phx_ref": ref}
            ):
                raise AssertionError(f"brokers: B shows {seen}, not what A tracked")
            samples.append(seen.seen_at - reply.t)
        after = (await a.stats(), await b.stats())
    return LatencyFigure(
        samples=tuple(samples),
        sender_cpu=after[0].cpu - before[0].cpu,
        receiver_cpu=after[1].cpu - before[1].cpu,
    )


async def _transfer(url: str, plan: BrokerPlan) -> TransferFigure:
    ns = _namespace("transfer")
    n = plan.presences
    async with NodeProcess(url, name="holder", namespace=ns, config=TRANSFER_CONFIG) as holder:
        await holder.track_many(TOPIC, n, big_meta(), conn="c{i}", key="user{i}", timeout=WAIT * 4)
        settled = await _settle(holder)
        joiner = NodeProcess(
            url, name="joiner", namespace=ns, config=TRANSFER_CONFIG, watch=[TOPIC], metas=False
        )
        async with joiner:
            return await _join(holder, joiner, settled, plan)


async def _settle(holder: NodeProcess) -> NodeStats:
    """Wait until the holder has broadcast its delta (or failed to) and sends only idle
    heartbeats since: a joiner started later gets the state by a transfer, which is what (b)
    measures."""
    tracked = await holder.stats()
    last = tracked
    deadline = time.monotonic() + WAIT
    while True:
        await anyio.sleep(2 * TRANSFER_CONFIG.broadcast_period)
        now = await holder.stats()
        tried = now.pump.sent + now.pump.unsendable > tracked.pump.sent + tracked.pump.unsendable
        if tried and now.pump.sent_bytes - last.pump.sent_bytes < IDLE_BYTES:
            return now
        if time.monotonic() > deadline:
            raise AssertionError("brokers: the holder's delta broadcast never ended")
        last = now


def _disconnections(node: NodeProcess) -> list[str]:
    return [event.detail for event in node.broker_events if event.kind == "disconnected"]


async def _join(
    holder: NodeProcess, joiner: NodeProcess, before: NodeStats, plan: BrokerPlan
) -> TransferFigure:
    n = plan.presences
    assert joiner.started_at is not None
    assert joiner.ready_at is not None
    start = joiner.started_at
    refs = joiner.refs(TOPIC)
    failure: str | None = None
    deadline = time.monotonic() + plan.transfer_timeout
    while len(refs) < n:
        try:
            await joiner.wait_until(
                lambda: len(refs) >= n, f"it shows {n:,} presences", timeout=1.0
            )
        except AssertionError:
            now = await holder.stats()
            dropped = now.pump.unsendable - before.pump.unsendable
            if dropped:
                failure = (
                    f"the holder dropped {dropped} message(s) larger than its transport's "
                    f"max_payload ({now.max_payload:,} B), even in parts"
                )
            elif len(lost := _disconnections(joiner)) >= MAX_DISCONNECTIONS:
                failure = (
                    f"the broker cut the joiner off {len(lost)} times during the transfer "
                    f"(last: {lost[-1]})"
                )
            elif time.monotonic() > deadline:
                failure = f"not all there after {plan.transfer_timeout:g} s"
            if failure is not None:
                break
    end = joiner.changed_at(TOPIC) if failure is None else time.monotonic()
    up = next(
        (r.t for r in joiner.replica_events if r.kind == "up" and r.replica.name == "holder"), None
    )
    after = (await holder.stats(), await joiner.stats())
    if failure is None:
        arrived = refs.values()
        if {seen.owner for seen in arrived} != {holder.replica} or len(arrived) != n:
            raise AssertionError("brokers: the joiner shows presences the holder did not track")
    return TransferFigure(
        presences=n,
        arrived=len(refs),
        startup=joiner.ready_at - start,
        discovery=None if up is None else up - joiner.ready_at,
        transfer=None if up is None or failure is not None else end - up,
        holder_bytes=after[0].pump.sent_bytes - before.pump.sent_bytes,
        holder_cpu=after[0].cpu - before.cpu,
        joiner_cpu=after[1].cpu,
        max_payload=after[0].max_payload,
        failure=failure,
    )


async def _converged(nodes: Sequence[NodeProcess], total: int) -> None:
    """Wait until every node lists the same ``total`` presences (polling; bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        lists = [await node.list(TOPIC) for node in nodes]
        counts = [sum(len(value["metas"]) for value in listed.values()) for listed in lists]
        if counts == [total] * len(nodes) and all(listed == lists[0] for listed in lists):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"brokers: the nodes do not list the same {total} presences: they hold {counts}"
            )
        await anyio.sleep(0.1)


async def _churn(url: str, plan: BrokerPlan) -> ChurnFigure:
    ns = _namespace("churn")
    names = [f"n{i}" for i in range(plan.churn_nodes)]
    per = plan.churn_presences
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(NodeProcess(url, name=name, namespace=ns))
            for name in names
        ]
        for node in nodes:
            await node.track_many(
                TOPIC, per, META, conn=f"{node.name}-c{{i}}", key=f"{node.name}-u{{i}}"
            )
        total = per * len(nodes)
        await _converged(nodes, total)
        before = [await node.stats() for node in nodes]
        interval = 1.0 / plan.churn_rate
        start = anyio.current_time()
        pairs = 0
        while anyio.current_time() - start < plan.churn_window:
            for node in nodes:
                await node.untrack(f"{node.name}-c{pairs}", TOPIC, f"{node.name}-u{pairs}")
                i = per + pairs
                await node.track(f"{node.name}-c{i}", TOPIC, f"{node.name}-u{i}", META)
            pairs += 1
            await anyio.sleep_until(start + pairs * interval)
        after = [await node.stats() for node in nodes]
        await _converged(nodes, total)
    figures = []
    for node, first, last in zip(nodes, before, after, strict=True):
        wall = last.t - first.t
        figures.append(
            ChurnNode(
                name=node.name,
                sent_bytes=(last.pump.sent_bytes - first.pump.sent_bytes) / wall,
                received_bytes=(last.pump.received_bytes - first.pump.received_bytes) / wall,
                sent=(last.pump.sent - first.pump.sent) / wall,
                received=(last.pump.received - first.pump.received) / wall,
                cpu=(last.cpu - first.cpu) / wall,
            )
        )
    return ChurnFigure(nodes=tuple(figures), pairs=pairs, window=after[0].t - before[0].t)


async def _measure(
    broker: str, url: str, plan: BrokerPlan, say: Callable[[str], None]
) -> tuple[LatencyFigure, TransferFigure, ChurnFigure]:
    latency = await _latency(url, plan)
    say(
        f"median {statistics.median(latency.samples) * 1e3:.1f} ms, "
        f"p99 {percentile(latency.samples, 99) * 1e3:.1f} ms from a track to another process"
    )
    transfer = await _transfer(url, plan)
    if transfer.failure is None:
        assert transfer.total is not None
        say(f"{transfer.presences:,} presences reached a new node in {transfer.total:.2f} s")
    else:
        say(f"{transfer.presences:,} presences did NOT reach a new node: {transfer.failure}")
    churn = await _churn(url, plan)
    say(f"churn: {statistics.mean(n.sent_bytes for n in churn.nodes):,.0f} B/s sent per node")
    return latency, transfer, churn


def measure_brokers(plan: BrokerPlan, *, progress: Callable[[str], None]) -> BrokerResult:
    """The whole section, on each broker that is available (the others are skipped, saying why).

    Raises:
        AssertionError: a figure produced a wrong result, or a wait ran past its deadline
            (figure (b) reports a state that could not arrive instead of raising).
        NodeProcessError: a node process failed.
    """
    start = time.perf_counter()
    runs = []
    for broker in BROKERS:
        with _server(broker) as (url, server):
            if url is None:
                progress(f"brokers, {broker}: skipped ({server})")
                runs.append(BrokerRun(broker, "-", server, None, None, None))
                continue
            progress(f"brokers, {broker}: {server}")

            def say(message: str, broker: str = broker) -> None:
                progress(f"brokers, {broker}: {message}")

            latency, transfer, churn = anyio.run(_measure, broker, url, plan, say)
            runs.append(BrokerRun(broker, server, None, latency, transfer, churn))
    return BrokerResult(
        plan=plan, runs=tuple(runs), cores=os.cpu_count() or 0, seconds=time.perf_counter() - start
    )


# ---------------------------------------------------------------------------- the tables


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def latency_header() -> list[str]:
    return [
        "broker",
        "median (ms)",
        "p99 (ms)",
        "best (ms)",
        "A's CPU per sample (ms)",
        "B's CPU per sample (ms)",
    ]


def latency_rows(result: BrokerResult) -> list[list[str]]:
    rows = []
    for run in result.runs:
        found = run.latency
        if found is None:
            continue
        n = len(found.samples)
        rows.append(
            [
                run.broker,
                _ms(statistics.median(found.samples)),
                _ms(percentile(found.samples, 99)),
                _ms(min(found.samples)),
                _ms(found.sender_cpu / n),
                _ms(found.receiver_cpu / n),
            ]
        )
    return rows


def transfer_header() -> list[str]:
    return [
        "broker",
        "arrived",
        "start-up (s)",
        "discovery (s)",
        "transfer (s)",
        "total (s)",
        "holder sent (bytes)",
        "holder CPU (s)",
        "joiner CPU (s)",
        "result",
    ]


def transfer_rows(result: BrokerResult) -> list[list[str]]:
    rows = []
    for run in result.runs:
        found = run.transfer
        if found is None:
            continue
        rows.append(
            [
                run.broker,
                f"{found.arrived:,} of {found.presences:,}",
                _s(found.startup),
                _s(found.discovery),
                _s(found.transfer),
                _s(found.total),
                f"{found.holder_bytes:,}",
                _s(found.holder_cpu),
                _s(found.joiner_cpu),
                "ok" if found.failure is None else "FAILED (below)",
            ]
        )
    return rows


def transfer_failures(result: BrokerResult) -> list[str]:
    """Why the state did not reach the new node, per broker where it did not."""
    return [
        f"{run.broker}: {run.transfer.failure}"
        for run in result.runs
        if run.transfer is not None and run.transfer.failure is not None
    ]


def churn_header() -> list[str]:
    return [
        "broker",
        "node",
        "sent (B/s)",
        "received (B/s)",
        "messages sent/s",
        "received/s",
        "CPU (% of a core)",
    ]


def churn_rows(result: BrokerResult) -> list[list[str]]:
    rows = []
    for run in result.runs:
        if run.churn is None:
            continue
        for node in run.churn.nodes:
            rows.append(
                [
                    run.broker,
                    node.name,
                    f"{node.sent_bytes:,.0f}",
                    f"{node.received_bytes:,.0f}",
                    f"{node.sent:.1f}",
                    f"{node.received:.1f}",
                    f"{node.cpu * 100:.1f}",
                ]
            )
    return rows


def notes(result: BrokerResult) -> dict[str, str]:
    """The captions: ``where``, ``latency``, ``transfer``, ``churn``, ``left out``."""
    plan = result.plan
    servers = "; ".join(
        f"{run.broker}: {run.server}"
        if run.skipped is None
        else f"{run.broker}: skipped, {run.skipped}"
        for run in result.runs
    )
    achieved = ", ".join(
        f"{run.broker} {run.churn.pairs / run.churn.window:.1f}/s"
        for run in result.runs
        if run.churn is not None
    )
    return {
        "where": (
            f"every node a process of its own (NodeProcess, asyncio driver), over loopback, "
            f"{result.cores} cores shared by all; {servers}; the section took "
            f"{result.seconds:.0f} s"
        ),
        "latency": (
            f"{plan.latency_samples} tracks in process A, each timed until process B's node "
            f"shows it (both clocks read in the children), broadcast_period "
            f"{plan.latency_period:g} s, BENCH.md's meta; CPU includes the harness's pipe work"
        ),
        "transfer": (
            f"{plan.presences:,} presences with {META_BYTES}-byte metas held by one process, "
            "then a new process joins: from spawning it until its node shows them all "
            "(start-up: until its node runs; discovery: until it hears the holder; transfer: "
            f"the rest); TrackerConfig(broadcast_period={TRANSFER_CONFIG.broadcast_period:g}, "
            f"max_silent_periods={TRANSFER_CONFIG.max_silent_periods}, "
            f"down_period={TRANSFER_CONFIG.effective_down_period:g}); CPU over that span, the "
            "joiner's since its start"
        ),
        "churn": (
            f"{plan.churn_nodes} processes x {plan.churn_presences:,} presences, "
            f"{plan.churn_rate} untrack + track pairs per second per node (achieved: "
            f"{achieved or '-'}) for {plan.churn_window:g} s, default TrackerConfig (a tick "
            "every 1.5 s), BENCH.md's meta: each node's pump traffic and CPU per wall second"
        ),
        "left out": (
            "a real network, TLS, clustered brokers, other broker settings, the brokers' own CPU "
            "and memory, separate machines, the anyio driver, the fetch hook"
        ),
    }


def render_brokers(result: BrokerResult, table: Callable[[list[str], list[list[str]]], str]) -> str:
    """The section as text, its tables drawn by ``table(header, rows)``."""
    text = notes(result)
    parts = [textwrap.fill(f"Brokers ({text['where']})", 100), ""]
    for key, title, header, rows in (
        ("latency", "(a) Track to visible", latency_header(), latency_rows(result)),
        (
            "transfer",
            "(b) A large state reaching a new node",
            transfer_header(),
            transfer_rows(result),
        ),
        ("churn", "(c) Bytes per second under churn", churn_header(), churn_rows(result)),
    ):
        parts.append(textwrap.fill(f"{title}: {text[key]}", 100))
        parts.append(table(header, rows) if rows else "(no broker measured)")
        if key == "transfer":
            parts += [textwrap.fill(f"FAILED, {why}", 100) for why in transfer_failures(result)]
        parts.append("")
    parts.append(textwrap.fill(f"Left out: {text['left out']}.", 100))
    return "\n".join(parts)
