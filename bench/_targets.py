"""The speed pass's targets (issue 12): each figure as CPU and wall time, min and median.

``python -m bench --targets`` runs only this section and prints it (``--quick``: small sizes, no
verdict); a full ``python -m bench`` includes it in the results and in ``docs/``.

Every figure is a whole operation timed from a fresh state built untimed, the collector on and
left alone but for a :func:`gc.collect` before each run, the repetitions of all figures interleaved
(figure 1, 2, ..., n, then n, ..., 2, 1, and so on: :func:`~bench._timing.measure_jobs`) so a
burst of load elsewhere hits all of them alike. CPU time is :func:`time.process_time` (the whole
process), wall time :func:`time.perf_counter`. Each run's result is checked right after the clocks
stop and then dropped, so nothing large stays alive while the other figures run. A target bounds
the **min CPU time**; the table shows the median and the wall times beside it.

* ``a``: 100,000 ``ReplicaState.join`` into an empty replica (BENCH.md a, the workload's code);
* ``c``: ``clocks`` + ``extract`` + ``merge`` of 100,000 into an empty replica (BENCH.md c);
* ``d``: 1,000 rounds of 100 joins, 100 leaves, a delta merge and a compaction, the merge results
  discarded as Phoenix's benchmark discards them (BENCH.md d, the workload's code);
* ``track``: 100,000 ``Tracker.track`` on one node, a tick every 1,000 tracks (every tick encodes
  the heartbeat carrying them), events and messages drained as an adapter does (per track);
* ``encode`` / ``decode`` / ``decode + merge``: a transfer reply holding 100,000 presences, as
  one message: encoding it, decoding its bytes, and decoding then merging it into an empty
  replica;
* ``heartbeat``: 2,000 encoded heartbeats received by a tracker that knows 50 replicas, each
  carrying a delta of one join and a clock naming all 51 (per heartbeat);
* ``memory``: bytes per presence of a replica holding 100,000 presences after a broadcast, the
  stored meta included (:mod:`tracemalloc`, :func:`~bench._memory.measure_memory`; measured once:
  it does not vary from run to run).
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from presence_core import (
    Heartbeat,
    ReplicaRef,
    ReplicaState,
    SnapshotPart,
    Tracker,
    TrackerConfig,
    TransferAck,
    decode_message,
    encode_message,
)

from ._format import Machine, machine_lines, ms, text_table, us
from ._memory import MEMORY_TARGET, MemoryResult, measure_memory
from ._timing import Job, Samples, measure_jobs
from ._workloads import (
    FULL,
    META,
    R1,
    CheckFailed,
    Sizes,
    check,
    crdt_a,
    crdt_c,
    crdt_d,
    fill,
    grid,
    pair,
)

__all__ = [
    "FULL_TARGETS",
    "QUICK_TARGETS",
    "TARGET_HEADER",
    "Figure",
    "TargetPlan",
    "TargetSpec",
    "TargetsResult",
    "measure_targets",
    "render_targets",
    "target_rows",
    "targets_caption",
]

ONE_MESSAGE = 1 << 30
"""A message limit no 100,000-presence transfer reaches: the codec figures time one message."""


@dataclass(frozen=True)
class TargetPlan:
    """The sizes of the targets section.

    Attributes:
        sizes: the workload sizes of a, c and d (a's grid is also the transfer's and the number
            of tracks).
        per_tick: tracks between two ticks in the ``track`` figure.
        replicas: replicas the ``heartbeat`` figure's tracker knows.
        beats: heartbeats received per ``heartbeat`` run.
        memory_conns: connections (x 100 topics) of the memory row.
    """

    sizes: Sizes
    per_tick: int
    replicas: int
    beats: int
    memory_conns: int

    @property
    def presences(self) -> int:
        return self.sizes.a_conns * self.sizes.a_topics


FULL_TARGETS = TargetPlan(sizes=FULL, per_tick=1_000, replicas=50, beats=2_000, memory_conns=1_000)
QUICK_TARGETS = TargetPlan(
    sizes=Sizes(a_conns=50, a_topics=20, d_rounds=20, d_per_round=20, d_topics=10),
    per_tick=100,
    replicas=50,
    beats=100,
    memory_conns=10,
)


@dataclass(frozen=True)
class TargetSpec:
    """One figure of the issue's table: what one run does and its bound.

    Attributes:
        id: the figure's short name.
        title: what one run does.
        per: what one run is divided by for the figure shown (1: a whole run, in ms).
        unit: what the figure is per when ``per > 1`` ("track", "heartbeat").
        target: the bound on the min CPU time of one run, in seconds (``None``: no bound).
    """

    id: str
    title: str
    per: int
    unit: str
    target: float | None

    def shown(self, seconds: float) -> str:
        """``seconds`` of one run as the figure is shown (ms per run, or µs per unit)."""
        return us(seconds / self.per) if self.per > 1 else ms(seconds)

    @property
    def unit_label(self) -> str:
        return f"µs per {self.unit}" if self.per > 1 else "ms per run"


@dataclass(frozen=True)
class Figure:
    """The samples of one figure, in seconds per whole run."""

    spec: TargetSpec
    samples: Samples

    @property
    def met(self) -> bool | None:
        """Whether the min CPU time meets the target (``None`` without one)."""
        return None if self.spec.target is None else self.samples.cpu_min <= self.spec.target


@dataclass(frozen=True)
class TargetsResult:
    """Everything the targets section measured.

    Attributes:
        quick: measured at quick sizes (no verdict).
        repeat: repetitions of every timed figure.
        figures: the timed figures, in table order.
        memory: the memory row (``None`` when it was not measured).
    """

    quick: bool
    repeat: int
    figures: tuple[Figure, ...]
    memory: MemoryResult | None


Setup = Callable[[], Any]
Run = Callable[[Any], Any]
Check = Callable[[Any], Any]


def _track(tracks: int, per_tick: int) -> tuple[Setup, Run, Check]:
    config = TrackerConfig()
    period = config.broadcast_period
    conns = [f"conn{i}" for i in range(tracks)]
    keys = [f"user{i}" for i in range(tracks)]

    def setup() -> Tracker:
        tracker = Tracker(config=config, replica=R1, rng=random.Random(1))
        tracker.handle_timer(now=0.0)
        return tracker

    def run(tracker: Tracker) -> tuple[Tracker, int]:
        now = 0.0
        track, next_event = tracker.track, tracker.next_event
        sent = 0
        for start in range(0, tracks, per_tick):
            for i in range(start, min(start + per_tick, tracks)):
                track(conn=conns[i], topic="topic0", key=keys[i], meta=META, now=now)
            now += period
            tracker.handle_timer(now=now)
            while next_event() is not None:
                pass
            sent += sum(len(out.data) for out in tracker.messages_to_send())
        return tracker, sent

    def check_track(result: tuple[Tracker, int]) -> None:
        tracker, sent = result
        check(tracker.count("topic0") == tracks, "track: wrong number of presences")
        check(sent > tracks * 20, "track: the heartbeats did not carry the tracks")

    return setup, run, check_track


def _transfer(conns: int, topics: int) -> bytes:
    """The encoded reply (bytes: nothing the collector walks while other figures run)."""
    r1, r2 = pair()
    fill(r1, grid(conns, topics))
    reply = TransferAck(request_id=1, sender=R1, payload=r1.extract(None, r2.clocks()[1]))
    return encode_message(reply, max_bytes=ONE_MESSAGE)


def _decoded(data: bytes) -> TransferAck:
    message = decode_message(data, max_bytes=ONE_MESSAGE)
    if not isinstance(message, TransferAck):
        raise CheckFailed(f"decode: a {type(message).__name__}, not the TransferAck")
    return message


def _heartbeats(replicas: int, count: int, *, idle: bool) -> tuple[Setup, Run, Check]:
    """``count`` heartbeats from ``replicas`` peers in turn, each clock naming all of them and
    us; ``idle``: without a delta (what a quiet node sends), else each with one join."""
    peers = [ReplicaRef(f"peer{i:02d}", 1) for i in range(replicas)]
    states = {peer: ReplicaState(peer) for peer in peers}
    for state in states.values():
        for other in peers:
            if other != state.replica:
                state.replica_up(other)

    def beat(peer: ReplicaRef, i: int, *, idle: bool = False) -> bytes:
        state = states[peer]
        if not idle:
            state.join(f"conn{i}", "topic0", f"user{i}", META)
        clock = {**state.up_context, R1: 0}
        delta = None if idle else state.take_delta()
        return encode_message(Heartbeat(sender=peer, clock=clock, delta=delta))

    hello = [beat(peer, -1) for peer in peers]
    stream = [beat(peers[i % replicas], i, idle=idle) for i in range(count)]
    states.clear()  # only the encoded heartbeats are needed from here on

    def setup() -> Tracker:
        tracker = Tracker(config=TrackerConfig(), replica=R1, rng=random.Random(1))
        for data in hello:
            tracker.receive(data, now=0.0)
        while tracker.next_event() is not None:
            pass
        check(len(tracker.replicas()) == replicas, "heartbeat: not every peer is known")
        return tracker

    def run(tracker: Tracker) -> Tracker:
        receive, next_event = tracker.receive, tracker.next_event
        for data in stream:
            receive(data, now=1.0)
            while next_event() is not None:
                pass
        return tracker

    def check_heartbeats(tracker: Tracker) -> None:
        joined = 0 if idle else count
        check(tracker.count("topic0") == replicas + joined, "heartbeat: presences missing")
        heard = {info.last_heard for info in tracker.replicas().values()}
        check(heard == {1.0}, "heartbeat: a peer's heartbeats were not all received")

    return setup, run, check_heartbeats


def _fresh(make: Callable[[], Job[Any, Any, Any]]) -> Job[Any, Any, Any]:
    """``make()``'s job, made again for every run, so that its inputs live for its own runs only.

    Figures run interleaved; if every figure's inputs (lists of 100,000 tuples or strings) stayed
    alive through every other figure's runs, each full collection in those runs would walk them
    too, and figure a would pay for c's and d's inputs.
    """
    current: list[Job[Any, Any, Any]] = []

    def setup() -> Any:
        current[:] = [make()]
        return current[0].setup()

    def run(prepared: Any) -> Any:
        return current[0].run(prepared)

    def check(out: Any) -> Any:
        job = current.pop()
        return job.check(out)

    return Job(setup, run, check)


def _jobs(plan: TargetPlan) -> list[tuple[TargetSpec, Job[Any, Any, Any]]]:
    sizes = plan.sizes
    n = plan.presences
    data = _transfer(sizes.a_conns, sizes.a_topics)
    beats = plan.beats

    def empty_r2() -> ReplicaState:
        return pair()[1]

    def check_decoded(message: Any) -> None:
        check(encode_message(message, max_bytes=ONE_MESSAGE) == data, "decode: no round trip")

    def check_merged(r2: ReplicaState) -> None:
        check(len(r2) == n, "decode + merge: wrong number of entries")

    def decode_and_merge(r2: ReplicaState) -> ReplicaState:
        payload = _decoded(data).payload
        if isinstance(payload, SnapshotPart):  # one message: the whole state, never a part
            raise CheckFailed("decode + merge: the transfer came as a part")
        r2.merge(payload)
        return r2

    def check_encoded(encoded: bytes) -> None:
        check(encoded == data, "encode: not deterministic")

    def spec(
        id_: str, title: str, target: float | None, per: int = 1, unit: str = ""
    ) -> TargetSpec:
        return TargetSpec(id_, title, per, unit, target)

    rounds = f"{sizes.d_rounds:,} rounds of {sizes.d_per_round} joins + leaves + merge"
    return [
        (spec("a", f"{n:,} joins", 0.180), _fresh(lambda: crdt_a(sizes))),
        (spec("c", f"clocks + extract + merge of {n:,}", 0.078), _fresh(lambda: crdt_c(sizes))),
        (spec("d", rounds, 0.349), _fresh(lambda: crdt_d(sizes))),
        (
            spec(
                "track",
                f"{n:,} Tracker.track, a tick per {plan.per_tick:,}",
                n * 10e-6,
                n,
                "track",
            ),
            _fresh(lambda: Job(*_track(n, plan.per_tick))),
        ),
        (
            spec("encode", f"encode a transfer of {n:,}", None),
            Job(
                lambda: _decoded(data),
                lambda message: encode_message(message, max_bytes=ONE_MESSAGE),
                check_encoded,
            ),
        ),
        (
            spec("decode", f"decode a transfer of {n:,}", None),
            Job(lambda: data, lambda b: decode_message(b, max_bytes=ONE_MESSAGE), check_decoded),
        ),
        (
            spec("decode + merge", f"decode + merge a transfer of {n:,}", 0.300),
            Job(empty_r2, decode_and_merge, check_merged),
        ),
        (
            spec(
                "heartbeat",
                f"one idle heartbeat received, {plan.replicas} replicas known",
                beats * 50e-6,
                beats,
                "heartbeat",
            ),
            _fresh(lambda: Job(*_heartbeats(plan.replicas, beats, idle=True))),
        ),
        (
            spec(
                "heartbeat + join",
                f"one heartbeat carrying a join received, {plan.replicas} replicas known",
                None,
                beats,
                "heartbeat",
            ),
            _fresh(lambda: Job(*_heartbeats(plan.replicas, beats, idle=False))),
        ),
    ]


def measure_targets(
    plan: TargetPlan,
    *,
    quick: bool,
    repeat: int = 5,
    memory: MemoryResult | None = None,
    with_memory: bool = True,
    only: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> TargetsResult:
    """Measure every figure ``repeat`` times, interleaved; each result is checked, never timed.

    Args:
        plan: the sizes.
        quick: small sizes: the figures are shown without a verdict.
        repeat: repetitions of every timed figure.
        memory: the memory row, when it was measured already (at ``plan.memory_conns``).
        with_memory: measure the memory row when ``memory`` is not given.
        only: measure only the figures with these ids (all when empty).
        progress: called with a line of text after each section.

    Raises:
        CheckFailed: a figure's run produced a wrong result.
        ValueError: ``repeat`` is less than 1, or ``memory`` is of another size.
    """
    jobs = [(spec, job) for spec, job in _jobs(plan) if not only or spec.id in only]
    timings = measure_jobs([job for _, job in jobs], repeat=repeat)
    figures = tuple(
        Figure(spec, timing.samples()) for (spec, _), timing in zip(jobs, timings, strict=True)
    )
    if progress is not None:
        for figure in figures:
            progress(
                f"target {figure.spec.id}: CPU {figure.spec.shown(figure.samples.cpu_min)} "
                f"{figure.spec.unit_label}"
            )
    if memory is None and with_memory and (not only or "memory" in only):
        memory = measure_memory(plan.memory_conns)
    if memory is not None and memory.presences != plan.memory_conns * 100:
        raise ValueError(f"the memory row is at {memory.presences:,} presences")
    return TargetsResult(quick=quick, repeat=repeat, figures=figures, memory=memory)


# ---------------------------------------------------------------------------- report

TARGET_HEADER = [
    "figure",
    "unit",
    "target",
    "CPU: min",
    "CPU: median",
    "wall: min",
    "wall: median",
    "verdict (CPU min)",
]


def _verdict(met: bool | None, quick: bool) -> str:
    if met is None:
        return "no target"
    if quick:
        return "-"
    return "MET" if met else "MISSED"


def _target(spec: TargetSpec, quick: bool) -> str:
    # A whole run's bound is for BENCH.md's sizes: at quick sizes it would mean nothing.
    if spec.target is None or (quick and spec.per == 1):
        return "-"
    return f"<= {spec.shown(spec.target)}"


def target_rows(result: TargetsResult) -> list[list[str]]:
    """One row per figure (and the memory row), in :data:`TARGET_HEADER`'s columns.

    The memory row has no times: its verdict cell holds the bytes per presence.
    """
    rows = []
    for figure in result.figures:
        spec = figure.spec
        rows.append(
            [
                f"{spec.id}: {spec.title}",
                spec.unit_label,
                _target(spec, result.quick),
                *(spec.shown(value) for value in figure.samples.stats),
                _verdict(figure.met, result.quick),
            ]
        )
    memory = result.memory
    if memory is not None:
        measured = f"{memory.steady:.0f} B"
        verdict = measured if result.quick else f"{_verdict(memory.met, False)}: {measured}"
        rows.append(
            [
                f"memory: {memory.presences:,} presences after a broadcast, meta included "
                f"(the meta: {memory.meta:.0f} B, {memory.meta_share:.0%})",
                "B per presence",
                "-" if result.quick else f"<= {MEMORY_TARGET:.0f}",
                *["-"] * 4,
                verdict,
            ]
        )
    return rows


def targets_caption(result: TargetsResult) -> str:
    size = "quick sizes, no verdict" if result.quick else "BENCH.md sizes"
    return (
        f"The speed pass's targets ({size}): {result.repeat} interleaved "
        f"{'run' if result.repeat == 1 else 'runs'} of each figure, a fresh state each, the "
        "collector on; a target bounds the min CPU time (time.process_time); wall time is "
        "time.perf_counter; the memory row is tracemalloc's, measured once"
    )


def render_targets(result: TargetsResult, where: Machine) -> str:
    """The section alone as plain text (``python -m bench --targets``)."""
    return "\n".join(
        [
            "presence-core targets (python -m bench --targets)",
            *machine_lines(where),
            "",
            textwrap.fill(targets_caption(result), 100),
            text_table(TARGET_HEADER, target_rows(result)),
        ]
    )
