"""Deterministic cluster simulation: many Trackers on a virtual clock over a seeded, faulty network.

Everything runs in one thread with no real time. A heap of ``(time, seq, action)`` is the virtual
clock: the simulation jumps straight to the next action (a tracker's timer deadline, a message
delivery, a workload operation, a scheduled fault or an invariant check), so simulated hours take
seconds. Every random choice comes from one ``random.Random(seed)``, so a run is a function of its
:class:`Scenario`: the same scenario gives the same trace digest, on any machine and under any
``PYTHONHASHSEED``, and a failure replays from its seed alone.

The pieces:

* :class:`Scenario` (frozen): nodes, seed, duration, the :class:`TrackerConfig`, a
  :class:`NetworkModel`, a :class:`Workload` and a schedule of :class:`Fault` events. Build one by
  hand, or from a few numbers with :class:`SimParams` (what the ``presence simulate`` command does).
* :class:`NetworkModel`: decides the fate of each message (a list of delivery delays: empty means
  lost, two means duplicated). :class:`FaultyNetwork` is the stock model (latency, loss,
  duplication, reordering); subclass :class:`NetworkModel` to plug your own. Partitions (including
  one-way ones) are faults, applied by the simulation before the model is asked.
* :class:`Simulation`: runs a scenario and returns a :class:`SimResult` with the invariant
  :class:`Violation` list, the :class:`Metrics` and the trace digest.

Invariants checked (see :class:`Bounds` for the numbers, all derived from the TrackerConfig, the
slowest clock rate and the network's ``max_latency``):

* ``convergence``: after the settle phase (partitions healed, paused nodes resumed, network calm,
  workload stopped) and :attr:`Bounds.settle`, every live replica lists exactly the presences the
  live connections tracked (a plain dict model), and all replicas agree.
* ``crashed_presence``: no presence of a crashed (or shut down, or replaced) incarnation is visible
  on a running replica later than :attr:`Bounds.crash` after the crash.
* ``missing_presence``: a presence of a running node is visible on every other running node within
  :attr:`Bounds.join` of the latest of: its track/update, the last disturbance of either node (a
  message to or from it dropped by loss or a partition, a partition change, a pause, a restart).
* ``duplicate_ref``: every ``phx_ref`` handed out in the run is unique.
* ``diff_replay``: each replica's :class:`~presence_core.PresenceDiff` events, replayed in order
  with phoenix.js ``syncDiff`` semantics on an empty client view, reproduce ``list(topic)``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from presence_core import (
    GracefulPermdown,
    Heartbeat,
    Message,
    PresenceDiff,
    PresenceMap,
    ReplicaDown,
    ReplicaPermdown,
    ReplicaRef,
    ReplicaUp,
    Tracker,
    TrackerConfig,
    TransferAck,
    TransferRequest,
    encode_message,
    presence_diff_payload,
)

__all__ = [
    "FAULT_MIXES",
    "SIM_CONFIG",
    "Bounds",
    "ConvergenceSample",
    "Fault",
    "FaultyNetwork",
    "Metrics",
    "NetworkModel",
    "Scenario",
    "SimParams",
    "SimResult",
    "Simulation",
    "TrackerFactory",
    "Violation",
    "Workload",
    "message_size",
    "run",
]

SIM_CONFIG = TrackerConfig(broadcast_period=0.5, max_silent_periods=4, permdown_period=60.0)
"""The simulation's default tracker config: Phoenix's shape, 3x faster.

A tick every 0.5 s, an empty heartbeat every 5 ticks (2.5 s), down after 4 s of silence
(``0.5 * 4 * 2``), permdown after 60 s, transfer sampling every 2 ticks.
"""

FaultKind = Literal["partition", "heal", "crash", "restart", "shutdown", "pause", "resume"]
ViolationKind = Literal[
    "convergence", "crashed_presence", "missing_presence", "duplicate_ref", "diff_replay", "error"
]

FAULT_MIXES: Mapping[str, str] = {
    "default": "churn, one partition then heal, one crash then restart (the representative run)",
    "none": "churn on a network with latency only",
    "lossy": "5% loss, 5% duplication, 10% reordering",
    "partition": "symmetric and one-way partitions, healed",
    "crash": "crashes and graceful shutdowns, most followed by a restart",
    "pause": "long pauses (GC, frozen VM), some longer than the down period",
    "skew": "clock rates skewed by up to 10% between nodes",
    "all": "everything above at once",
}
"""The fault mixes :class:`SimParams` knows, with what each contains."""


# --------------------------------------------------------------------------- message size


def message_size(message: Message) -> int:
    """The size of ``message`` on the wire, in bytes (the JSON codec's encoding)."""
    return len(encode_message(message))


# --------------------------------------------------------------------------- network


class NetworkModel:
    """What happens to one message on a connected link. Subclass it to plug your own network.

    The simulation applies partitions itself (a blocked link drops everything), then asks the
    model about every other message. Draw all randomness from the ``rng`` argument, never from the
    global ``random`` module or the clock, or runs stop being reproducible.

    Attributes:
        max_latency: the longest delay :meth:`plan` can return, in virtual seconds; the invariant
            bounds are derived from it, so it must be honest.
    """

    max_latency: float = 0.05

    def plan(
        self, src: str, dst: str, message: Message, now: float, rng: random.Random
    ) -> list[float]:
        """Delivery delays (virtual seconds, ``0 <= d <= max_latency``) for one message.

        Return ``[]`` to lose it, one delay to deliver it, several to duplicate it. Reordering is
        just a later delay than the next message's.
        """
        raise NotImplementedError

    def calm(self) -> NetworkModel:
        """The model for the settle phase: the same latencies, nothing lost.

        The default is a :class:`FaultyNetwork` with no loss and no duplication whose latencies
        span ``[0, max_latency]``; override it when the model keeps other state.
        """
        return FaultyNetwork(latency_min=0.0, latency_max=self.max_latency)


@attrs.frozen(kw_only=True)
class FaultyNetwork(NetworkModel):
    """The stock network: uniform latency, independent loss, duplication and reordering.

    Attributes:
        latency_min: the smallest delay (virtual seconds).
        latency_max: the largest ordinary delay.
        loss: probability that a message is lost.
        duplicate: probability that a delivered message is delivered twice.
        reorder: probability that a message is held back by up to ``reorder_delay`` (so later
            messages overtake it).
        reorder_delay: the largest extra delay of a reordered message.
    """

    latency_min: float = 0.001
    latency_max: float = 0.05
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.2

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.latency_min <= self.latency_max:
            raise ValueError("need 0 <= latency_min <= latency_max")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability, not {value!r}")
        if self.reorder_delay < 0:
            raise ValueError("reorder_delay must be >= 0")

    @property
    def max_latency(self) -> float:  # type: ignore[override]
        """``latency_max``, plus ``reorder_delay`` when messages can be reordered."""
        return self.latency_max + (self.reorder_delay if self.reorder > 0 else 0.0)

    def _delay(self, rng: random.Random) -> float:
        delay = rng.uniform(self.latency_min, self.latency_max)
        if self.reorder and rng.random() < self.reorder:
            delay += rng.uniform(0.0, self.reorder_delay)
        return delay

    def plan(
        self, src: str, dst: str, message: Message, now: float, rng: random.Random
    ) -> list[float]:
        if self.loss and rng.random() < self.loss:
            return []
        delays = [self._delay(rng)]
        if self.duplicate and rng.random() < self.duplicate:
            delays.append(self._delay(rng))
        return delays

    def calm(self) -> NetworkModel:
        return FaultyNetwork(latency_min=self.latency_min, latency_max=self.latency_max)


# --------------------------------------------------------------------------- scenario


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _faults(value: Iterable[Fault]) -> tuple[Fault, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Workload:
    """Client connections joining, updating and leaving topics.

    Operations arrive as a Poisson process of ``rate`` per virtual second across the cluster, each
    on a random running node. A connection (``conn``) lives on one node and may be in several
    topics; up to ``conns_per_key`` connections share a key (one user, several tabs).

    Attributes:
        rate: operations per virtual second, cluster-wide.
        join / update / leave / disconnect: relative weights of track, update, untrack and
            untrack_conn (a disconnect removes every presence of one connection).
        topics: number of topics; the first ``hot_topics`` get ``hot_share`` of the joins.
        keys: number of distinct presence keys (users).
        conns_per_key: connections per key per node.
        max_presences: joins turn into leaves above this many live presences.
        unique_conns: prefix connection ids with the node name, so no two nodes ever use the
            same ``conn`` (by default they do, as independent servers numbering their sockets
            would; entries are identified by owner, conn, topic and key, so this must work).
    """

    rate: float = 4.0
    join: float = 0.45
    update: float = 0.25
    leave: float = 0.2
    disconnect: float = 0.1
    topics: int = 8
    hot_topics: int = 2
    hot_share: float = 0.7
    keys: int = 20
    conns_per_key: int = 3
    max_presences: int = 200
    unique_conns: bool = False


@attrs.frozen(kw_only=True)
class Fault:
    """One scheduled fault.

    Attributes:
        at: virtual time.
        kind: ``partition`` (``nodes`` cannot reach ``others``, and the reverse unless
            ``one_way``), ``heal`` (every partition ends), ``crash`` (stops with no goodbye),
            ``shutdown`` (graceful permdown, then stops), ``restart`` (a stopped node comes back
            as a new incarnation, vsn + 1), ``pause`` / ``resume`` (frozen: no timers, deliveries
            queued until resumed).
        nodes: the nodes concerned.
        others: the other side of a partition.
        one_way: a partition that only blocks ``nodes -> others``.
    """

    at: float
    kind: FaultKind
    nodes: tuple[str, ...] = attrs.field(default=(), converter=_names)
    others: tuple[str, ...] = attrs.field(default=(), converter=_names)
    one_way: bool = False

    def describe(self) -> str:
        """A one-line description."""
        if self.kind == "partition":
            arrow = "->" if self.one_way else "<->"
            return f"partition {','.join(self.nodes)} {arrow} {','.join(self.others)}"
        return f"{self.kind} {','.join(self.nodes)}".strip()


@attrs.frozen(kw_only=True)
class Scenario:
    """Everything a run depends on. The same scenario always gives the same run.

    Attributes:
        nodes: node names (``n0``, ``n1``, ... from :class:`SimParams`).
        seed: the master seed; every random stream of the run is drawn from ``Random(seed)``.
        duration: virtual seconds of workload and faults; the settle phase follows.
        config: the TrackerConfig of every node.
        network: the network model.
        workload: the client workload.
        faults: the fault schedule.
        clock_rates: each node's clock rate (1.0 = true time); missing nodes run at 1.0.
        check_interval: virtual seconds between invariant checks.
        params: the :class:`SimParams` the scenario was generated from, if any (for replay).
    """

    nodes: tuple[str, ...] = attrs.field(converter=_names)
    seed: int = 0
    duration: float = 60.0
    config: TrackerConfig = SIM_CONFIG
    network: NetworkModel = attrs.field(factory=FaultyNetwork)
    workload: Workload = attrs.field(factory=Workload)
    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_faults)
    clock_rates: Mapping[str, float] = attrs.field(factory=dict)
    check_interval: float = 0.25
    params: SimParams | None = None

    def __attrs_post_init__(self) -> None:
        if not self.nodes or len(set(self.nodes)) != len(self.nodes):
            raise ValueError("need at least one node, with distinct names")
        known = set(self.nodes)
        for fault in self.faults:
            unknown = sorted(set(fault.nodes + fault.others) - known)
            if unknown:
                raise ValueError(f"fault {fault!r} names unknown nodes {unknown}")
        for rate in self.clock_rates.values():
            if not 0.5 <= rate <= 2.0:
                raise ValueError(f"clock rates must be within [0.5, 2.0], not {rate!r}")

    def bounds(self) -> Bounds:
        """The invariant bounds of this scenario."""
        return Bounds.derive(self)


@attrs.frozen(kw_only=True)
class Bounds:
    """How long the checked invariants may take, in virtual seconds (see :meth:`derive`)."""

    join: float
    crash: float
    settle: float

    @classmethod
    def derive(cls, scenario: Scenario) -> Bounds:
        """Derive the bounds from the config, the slowest clock and the network's max latency.

        With ``B`` the broadcast period divided by the slowest clock rate, ``L`` the network's
        ``max_latency``:

        * ``join = (max_silent_periods + clock_sample_periods + 4) * B + 3 * L``: a change goes
          out on the owner's next tick and arrives after ``L``; if a delta was missed, the gap is
          repaired by the next heartbeat's clock (at most ``max_silent_periods + 1`` ticks), the
          next transfer sampling (``clock_sample_periods`` ticks) and a request/reply (``2 L``);
          one more tick covers the first tick's jitter.
        * ``crash = (down_period + 2 * broadcast_period) / slowest_rate + L``: the last heartbeat
          lands up to ``L`` after the crash, and the tick after ``down_period`` of silence hides
          the presences.
        * ``settle = join + crash``: time the cluster gets after the settle phase starts.
        """
        config = scenario.config
        rate = min([1.0, *scenario.clock_rates.values()])
        period = config.broadcast_period / rate
        latency = scenario.network.max_latency
        join = (config.max_silent_periods + config.clock_sample_periods + 4) * period
        join += 3 * latency
        crash = (config.effective_down_period + 2 * config.broadcast_period) / rate + latency
        return cls(join=join, crash=crash, settle=join + crash)


@attrs.frozen(kw_only=True)
class SimParams:
    """A scenario described by a few numbers: what ``presence simulate`` takes on its command line.

    :meth:`scenario` expands them into a full :class:`Scenario` deterministically (the fault
    schedule and clock rates are drawn from ``seed``), and :meth:`cli_args` gives the flags that
    replay it.
    """

    seed: int = 1
    nodes: int = 5
    duration: float = 60.0
    faults: str = "default"
    rate: float = 4.0
    topics: int = 8
    keys: int = 20
    broadcast_period: float = 0.5

    def __attrs_post_init__(self) -> None:
        if self.faults not in FAULT_MIXES:
            raise ValueError(f"unknown fault mix {self.faults!r}; one of {sorted(FAULT_MIXES)}")
        if not 1 <= self.nodes <= 1000:
            raise ValueError("nodes must be between 1 and 1000")
        if self.duration <= 0:
            raise ValueError("duration must be positive")

    def cli_args(self) -> list[str]:
        """The ``presence simulate`` flags that rebuild this scenario."""
        defaults = SimParams()
        args = ["--seed", str(self.seed)]
        for flag, name in (
            ("--nodes", "nodes"),
            ("--duration", "duration"),
            ("--faults", "faults"),
            ("--rate", "rate"),
            ("--topics", "topics"),
            ("--keys", "keys"),
            ("--broadcast-period", "broadcast_period"),
        ):
            value = getattr(self, name)
            if value != getattr(defaults, name):
                args += [flag, str(value)]
        return args

    def replay_command(self) -> str:
        """The shell command that replays this run."""
        return " ".join(["presence", "simulate", *self.cli_args()])

    def scenario(self) -> Scenario:
        """Expand into a :class:`Scenario` (deterministic in ``seed``)."""
        rng = random.Random(f"presence-sim-scenario:{self.seed}")
        names = tuple(f"n{i}" for i in range(self.nodes))
        mix = self.faults
        every = mix == "all"
        period = self.broadcast_period
        config = TrackerConfig(
            broadcast_period=period,
            max_silent_periods=SIM_CONFIG.max_silent_periods,
            permdown_period=max(SIM_CONFIG.permdown_period, period * 120),
        )
        down = config.effective_down_period
        network = FaultyNetwork(latency_min=0.001, latency_max=0.05, reorder=0.02)
        if mix == "lossy" or every:
            network = FaultyNetwork(
                latency_min=0.001, latency_max=0.08, loss=0.05, duplicate=0.05, reorder=0.1
            )
        elif mix == "default":
            network = FaultyNetwork(latency_min=0.001, latency_max=0.05, loss=0.01, reorder=0.05)
        rates: dict[str, float] = {}
        if mix == "skew" or every:
            rates = {name: round(rng.uniform(0.9, 1.1), 4) for name in names}
        faults: list[Fault] = []
        span = (0.05 * self.duration, 0.8 * self.duration)
        if mix == "default":
            faults += _default_faults(rng, names, self.duration, down)
        if mix in ("partition", "all") and len(names) > 1:
            faults += _partition_faults(rng, names, span, down)
        if mix in ("crash", "all"):
            faults += _node_faults(rng, names, span, down, crash=True)
        if mix in ("pause", "all"):
            faults += _node_faults(rng, names, span, down, crash=False)
        faults.sort(key=lambda f: f.at)
        workload = Workload(rate=self.rate, topics=self.topics, keys=self.keys)
        return Scenario(
            nodes=names,
            seed=self.seed,
            duration=self.duration,
            config=config,
            network=network,
            workload=workload,
            faults=tuple(faults),
            clock_rates=rates,
            check_interval=max(0.05, period / 2),
            params=self,
        )


def _default_faults(
    rng: random.Random, names: tuple[str, ...], duration: float, down: float
) -> list[Fault]:
    faults: list[Fault] = []
    if len(names) > 1:
        cut = max(1, len(names) // 2)
        shuffled = list(names)
        rng.shuffle(shuffled)
        side, other = tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:]))
        start = duration * rng.uniform(0.15, 0.25)
        faults.append(Fault(at=start, kind="partition", nodes=side, others=other))
        faults.append(Fault(at=start + min(duration * 0.2, 2 * down), kind="heal"))
    victim = rng.choice(names)
    crash_at = duration * rng.uniform(0.5, 0.6)
    faults.append(Fault(at=crash_at, kind="crash", nodes=(victim,)))
    faults.append(
        Fault(at=crash_at + min(duration * 0.2, 2 * down), kind="restart", nodes=(victim,))
    )
    return faults


def _partition_faults(
    rng: random.Random, names: tuple[str, ...], span: tuple[float, float], down: float
) -> list[Fault]:
    faults: list[Fault] = []
    t = span[0] + rng.uniform(0, down)
    while t < span[1]:
        shuffled = list(names)
        rng.shuffle(shuffled)
        cut = rng.randint(1, len(names) - 1)
        side, other = tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:]))
        one_way = rng.random() < 0.3
        faults.append(Fault(at=t, kind="partition", nodes=side, others=other, one_way=one_way))
        t += rng.uniform(0.5 * down, 3 * down)
        faults.append(Fault(at=t, kind="heal"))
        t += rng.uniform(down, 4 * down)
    return faults


def _node_faults(
    rng: random.Random,
    names: tuple[str, ...],
    span: tuple[float, float],
    down: float,
    *,
    crash: bool,
) -> list[Fault]:
    faults: list[Fault] = []
    busy_until = dict.fromkeys(names, 0.0)
    t = span[0] + rng.uniform(0, down)
    while t < span[1]:
        free = [n for n in names if busy_until[n] <= t]
        if free:
            node = rng.choice(free)
            gap = rng.uniform(0.2 * down, 3 * down)
            if crash:
                kind: FaultKind = "shutdown" if rng.random() < 0.3 else "crash"
                faults.append(Fault(at=t, kind=kind, nodes=(node,)))
                if rng.random() < 0.8:
                    faults.append(Fault(at=t + gap, kind="restart", nodes=(node,)))
                    busy_until[node] = t + gap + down
                else:
                    busy_until[node] = math.inf
            else:
                faults.append(Fault(at=t, kind="pause", nodes=(node,)))
                faults.append(Fault(at=t + gap, kind="resume", nodes=(node,)))
                busy_until[node] = t + gap + down
        t += rng.uniform(0.5 * down, 3 * down)
    return faults


# --------------------------------------------------------------------------- results


@attrs.frozen(kw_only=True)
class Violation:
    """An invariant that broke.

    Attributes:
        kind: which invariant.
        seed: the scenario's seed.
        step: the simulation step (actions executed) at which it was detected.
        time: the virtual time.
        node: the replica where it was seen.
        detail: what exactly.
    """

    kind: ViolationKind
    seed: int
    step: int
    time: float
    node: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.kind} at step {self.step} (t={self.time:.3f}s, seed {self.seed}) "
            f"on {self.node}: {self.detail}"
        )


@attrs.frozen(kw_only=True)
class ConvergenceSample:
    """Time from a disruption (heal, crash, restart, shutdown, resume, settle) to convergence.

    ``seconds`` is ``None`` when the cluster had not converged by the end of the run. Converged
    means: every running replica shows every presence alive since the disruption, and none that
    was gone by then (resolution: the check interval).
    """

    cause: str
    at: float
    seconds: float | None


@attrs.frozen(kw_only=True)
class Metrics:
    """What a run cost and how fast it converged.

    Attributes:
        virtual_seconds: total virtual time simulated (including the settle phase).
        steps: actions executed.
        convergence: one sample per disruption.
        messages: transmissions per sending node (a broadcast counts once per recipient).
        bytes: bytes per sending node (encoded with the wire codec).
        messages_per_replica_second: mean over nodes of messages / virtual_seconds.
        bytes_per_replica_second: likewise for bytes.
        dropped: messages lost to the network model, partitions or dead receivers.
        diffs: PresenceDiff events emitted, all replicas together.
        largest_transfer: the largest TransferAck, in bytes.
        operations: workload operations performed.
    """

    virtual_seconds: float
    steps: int
    convergence: tuple[ConvergenceSample, ...]
    messages: Mapping[str, int]
    bytes: Mapping[str, int]
    messages_per_replica_second: float
    bytes_per_replica_second: float
    dropped: int
    diffs: int
    largest_transfer: int
    operations: int

    @property
    def worst_convergence(self) -> float | None:
        """The slowest convergence sample, in virtual seconds (``None`` if there were none)."""
        values = [s.seconds for s in self.convergence if s.seconds is not None]
        return max(values) if values else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "virtual_seconds": self.virtual_seconds,
            "steps": self.steps,
            "convergence": [
                {"cause": s.cause, "at": s.at, "seconds": s.seconds} for s in self.convergence
            ],
            "worst_convergence": self.worst_convergence,
            "messages": dict(sorted(self.messages.items())),
            "bytes": dict(sorted(self.bytes.items())),
            "messages_per_replica_second": self.messages_per_replica_second,
            "bytes_per_replica_second": self.bytes_per_replica_second,
            "dropped": self.dropped,
            "diffs": self.diffs,
            "largest_transfer": self.largest_transfer,
            "operations": self.operations,
        }


@attrs.frozen(kw_only=True)
class SimResult:
    """The outcome of a run.

    Attributes:
        scenario: what ran.
        violations: every invariant violation found (empty when the run is correct).
        metrics: the run's metrics.
        digest: SHA-256 (hex) over the canonical trace: identical for identical scenarios.
        trace: the trace lines, when the simulation was asked to keep them.
        timeline: per check: ``(time, {node: visible presences}, expected presences,
            {node: presences differing from the model})``, when asked to record it.
    """

    scenario: Scenario
    violations: tuple[Violation, ...]
    metrics: Metrics
    digest: str
    bounds: Bounds
    trace: tuple[str, ...] = ()
    timeline: tuple[tuple[float, Mapping[str, int], int, Mapping[str, int]], ...] = ()

    @property
    def ok(self) -> bool:
        """True when no invariant broke."""
        return not self.violations

    def replay_command(self) -> str | None:
        """The ``presence simulate`` command that replays this run, if it came from SimParams."""
        return self.scenario.params.replay_command() if self.scenario.params else None


TrackerFactory = Callable[[ReplicaRef, TrackerConfig, random.Random], Tracker]
"""Builds the tracker of one node incarnation: ``factory(replica, config, rng)``."""


def _default_factory(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
    return Tracker(config=config, replica=replica, rng=rng)


# --------------------------------------------------------------------------- client view


def _sync_diff(state: dict[str, dict[str, list[dict[str, Any]]]], diff: PresenceMap2) -> None:
    """phoenix.js ``Presence.syncDiff`` (SPEC §6.1): joins first, then leaves, by phx_ref."""
    for key, presence in diff["joins"].items():
        joined = [dict(meta) for meta in presence["metas"]]
        refs = {meta.get("phx_ref") for meta in joined}
        current = state.get(key)
        kept = [m for m in current["metas"] if m.get("phx_ref") not in refs] if current else []
        state[key] = {"metas": kept + joined}
    for key, presence in diff["leaves"].items():
        current = state.get(key)
        if current is None:
            continue
        refs = {meta.get("phx_ref") for meta in presence["metas"]}
        current["metas"] = [m for m in current["metas"] if m.get("phx_ref") not in refs]
        if not current["metas"]:
            del state[key]


PresenceMap2 = Mapping[str, PresenceMap]


def _canonical(presences: Mapping[str, Any]) -> Any:
    return sorted(
        (key, sorted(json.dumps(meta, sort_keys=True) for meta in value["metas"]))
        for key, value in presences.items()
        if value["metas"]
    )


# --------------------------------------------------------------------------- simulation


@attrs.define
class _RefInfo:
    owner: ReplicaRef
    conn: str
    topic: str
    key: str
    meta: dict[str, Any]
    created: float
    removed: float | None = None


@attrs.define
class _Node:
    name: str
    rate: float
    offset: float
    tracker: Tracker | None = None
    vsn: int = 0
    paused: bool = False
    queued: list[tuple[str, Message]] = attrs.Factory(list)
    last_local: float = -math.inf
    timer_token: int = 0
    timer_at: float | None = None
    disturbed: float = 0.0
    resumed: float = 0.0
    view: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = attrs.Factory(dict)
    model: dict[tuple[str, str, str], str] = attrs.Factory(dict)
    counter: int = 0

    @property
    def running(self) -> bool:
        return self.tracker is not None and not self.paused and not self.tracker.stopped

    def local(self, t: float) -> float:
        now = max(self.offset + self.rate * t, self.last_local)
        self.last_local = now
        return now


class _Stop(Exception):
    pass


class Simulation:
    """Runs one :class:`Scenario`.

    Args:
        scenario: what to run.
        tracker_factory: builds each node's tracker (default: a plain
            :class:`~presence_core.Tracker`); pass your own subclass or wrapper to test it.
        keep_trace: keep the trace lines in the result (the digest is always computed).
        timeline: record per-check view sizes for plotting.
        on_progress: called as ``on_progress(virtual_now, virtual_end)`` every few virtual seconds.
        stop_on_violation: stop at the first violation instead of collecting them all.
        max_violations: stop after this many.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        tracker_factory: TrackerFactory | None = None,
        keep_trace: bool = False,
        timeline: bool = False,
        on_progress: Callable[[float, float], None] | None = None,
        stop_on_violation: bool = False,
        max_violations: int = 50,
    ) -> None:
        self.scenario = scenario
        self.bounds = scenario.bounds()
        self._factory = tracker_factory or _default_factory
        self._keep_trace = keep_trace
        self._record_timeline = timeline
        self._on_progress = on_progress
        self._stop_on_violation = stop_on_violation
        self._max_violations = max_violations
        master = random.Random(scenario.seed)
        self._net_rng = random.Random(master.getrandbits(64))
        self._work_rng = random.Random(master.getrandbits(64))
        self._tracker_seed = master.getrandbits(64)
        self._network: NetworkModel = scenario.network
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self.now = 0.0
        self.step = 0
        self._end = scenario.duration + self.bounds.settle
        self._settling = False
        self._blocked: set[tuple[str, str]] = set()
        self._nodes: dict[str, _Node] = {}
        for index, name in enumerate(scenario.nodes):
            rate = float(scenario.clock_rates.get(name, 1.0))
            self._nodes[name] = _Node(name=name, rate=rate, offset=1000.0 * (index + 1))
        self._refs: dict[str, _RefInfo] = {}
        self._dead: list[tuple[ReplicaRef, float]] = []
        self._hash = hashlib.sha256()
        self._trace: list[str] = []
        self._violations: list[Violation] = []
        self._seen_violations: set[tuple[str, str, str]] = set()
        self._open: list[tuple[str, float]] = []
        self._samples: list[ConvergenceSample] = []
        self._timeline: list[tuple[float, Mapping[str, int], int, Mapping[str, int]]] = []
        self._messages = dict.fromkeys(scenario.nodes, 0)
        self._bytes = dict.fromkeys(scenario.nodes, 0)
        self._dropped = 0
        self._diffs = 0
        self._largest_transfer = 0
        self._ops = 0

    # ------------------------------------------------------------------ plumbing

    def _push(self, at: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, payload))

    def _record(self, line: str) -> None:
        text = f"{self.step} {self.now:.9f} {line}"
        self._hash.update(text.encode())
        self._hash.update(b"\n")
        if self._keep_trace:
            self._trace.append(text)

    def _violate(self, kind: ViolationKind, node: str, detail: str, what: str = "") -> None:
        token = (kind, node, what or detail)
        if token in self._seen_violations:
            return
        self._seen_violations.add(token)
        violation = Violation(
            kind=kind,
            seed=self.scenario.seed,
            step=self.step,
            time=self.now,
            node=node,
            detail=detail,
        )
        self._violations.append(violation)
        self._record(f"VIOLATION {kind} {node} {detail}")
        if self._stop_on_violation or len(self._violations) >= self._max_violations:
            raise _Stop

    def _disturb(self, *names: str) -> None:
        for name in names:
            self._nodes[name].disturbed = self.now

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        """Run the scenario to its end and return the result."""
        scenario = self.scenario
        for fault in scenario.faults:
            self._push(fault.at, "fault", fault)
        self._push(scenario.duration, "settle", None)
        self._schedule_op()
        self._push(scenario.check_interval, "check", None)
        self._push(0.0, "progress", None)
        self._push(self._end, "end", None)
        try:
            for name in scenario.nodes:
                self._start(self._nodes[name])
            while self._heap:
                at, _, kind, payload = heapq.heappop(self._heap)
                self.now = at
                if kind == "end":
                    break
                self.step += 1
                self._dispatch(kind, payload)
            self.step += 1
            self._final_check()
        except _Stop:
            pass
        except Exception as exc:  # a bug in the tracker: report it, with the seed and step
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._violations.append(
                Violation(
                    kind="error",
                    seed=scenario.seed,
                    step=self.step,
                    time=self.now,
                    node="-",
                    detail=f"{detail}\n{traceback.format_exc()}",
                )
            )
        return self._result()

    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "timer":
            name, token = payload
            node = self._nodes[name]
            if token == node.timer_token and node.running:
                node.timer_at = None
                assert node.tracker is not None
                node.tracker.handle_timer(now=node.local(self.now))
                self._drain(node)
        elif kind == "deliver":
            self._deliver(*payload)
        elif kind == "op":
            if not self._settling:
                self._operation()
                self._schedule_op()
        elif kind == "fault":
            self._fault(payload)
        elif kind == "check":
            self._check()
            self._push(self.now + self.scenario.check_interval, "check", None)
        elif kind == "progress":
            if self._on_progress is not None:
                self._on_progress(self.now, self._end)
            self._push(self.now + max(1.0, self._end / 50), "progress", None)
        elif kind == "settle":
            self._settle()

    # ------------------------------------------------------------------ nodes

    def _start(self, node: _Node) -> None:
        node.vsn += 1
        replica = ReplicaRef(node.name, node.vsn)
        rng = random.Random(f"{self._tracker_seed}:{node.name}:{node.vsn}")
        node.tracker = self._factory(replica, self.scenario.config, rng)
        node.paused = False
        node.queued = []
        node.view = {}
        node.model = {}
        node.disturbed = node.resumed = self.now
        self._record(f"start {node.name}.{node.vsn}")
        node.tracker.handle_timer(now=node.local(self.now))
        self._drain(node)

    def _stop(self, node: _Node) -> None:
        assert node.tracker is not None
        replica = node.tracker.replica
        for ref in sorted(node.model.values()):
            self._refs[ref].removed = self.now
        node.model = {}
        node.view = {}
        node.tracker = None
        node.paused = False
        node.queued = []
        node.timer_token += 1
        node.timer_at = None
        self._dead.append((replica, self.now))

    def _refresh_timer(self, node: _Node) -> None:
        tracker = node.tracker
        deadline = tracker.next_deadline() if tracker is not None else None
        if deadline is None or node.paused:
            return
        at = (deadline - node.offset) / node.rate
        while node.offset + node.rate * at < deadline:
            at = math.nextafter(at, math.inf)
        at = max(at, self.now)
        if node.timer_at == at:
            return
        node.timer_token += 1
        node.timer_at = at
        self._push(at, "timer", (node.name, node.timer_token))

    def _drain(self, node: _Node) -> None:
        tracker = node.tracker
        assert tracker is not None
        name = node.name
        while (event := tracker.next_event()) is not None:
            if isinstance(event, PresenceDiff):
                self._diffs += 1
                payload = presence_diff_payload(event)
                _sync_diff(node.view.setdefault(event.topic, {}), payload)
                joins = sorted(str(e.meta.get("phx_ref")) for e in event.joins)
                leaves = sorted(str(e.meta.get("phx_ref")) for e in event.leaves)
                self._record(f"diff {name} {event.topic} +{joins} -{leaves}")
            elif isinstance(event, (ReplicaUp, ReplicaDown, ReplicaPermdown)):
                kind = type(event).__name__
                self._record(f"{kind} {name} {event.replica.name}.{event.replica.vsn}")
        for out in tracker.messages_to_send():
            if out.to is None:
                for dst in self.scenario.nodes:
                    if dst != name:
                        self._send(name, dst, out.message)
            else:
                self._send(name, out.to, out.message)
        self._refresh_timer(node)

    # ------------------------------------------------------------------ network

    def _send(self, src: str, dst: str, message: Message) -> None:
        size = message_size(message)
        self._messages[src] += 1
        self._bytes[src] += size
        if isinstance(message, TransferAck):
            self._largest_transfer = max(self._largest_transfer, size)
        if (src, dst) in self._blocked:
            self._drop(src, dst, message, "partition")
            return
        delays = self._network.plan(src, dst, message, self.now, self._net_rng)
        if not delays:
            self._drop(src, dst, message, "lost")
            return
        for delay in delays:
            if not 0 <= delay <= self._network.max_latency + 1e-9:
                raise ValueError(f"network model returned delay {delay!r} outside [0, max_latency]")
            self._push(self.now + delay, "deliver", (src, dst, message))

    def _drop(self, src: str, dst: str, message: Message, why: str) -> None:
        self._dropped += 1
        self._disturb(src, dst)
        self._record(f"drop {why} {src}->{dst} {_summary(message)}")

    def _deliver(self, src: str, dst: str, message: Message) -> None:
        node = self._nodes[dst]
        if node.tracker is None:
            self._dropped += 1
            return
        if (src, dst) in self._blocked:
            self._drop(src, dst, message, "partition")
            return
        if node.paused:
            node.queued.append((src, message))
            return
        self._record(f"recv {src}->{dst} {_summary(message)}")
        node.tracker.receive(message, now=node.local(self.now))
        self._drain(node)

    # ------------------------------------------------------------------ faults

    def _fault(self, fault: Fault) -> None:
        self._record(f"fault {fault.describe()}")
        kind = fault.kind
        if kind == "partition":
            for a in fault.nodes:
                for b in fault.others:
                    if a != b:
                        self._blocked.add((a, b))
                        if not fault.one_way:
                            self._blocked.add((b, a))
            self._disturb(*fault.nodes, *fault.others)
        elif kind == "heal":
            self._heal()
        else:
            for name in fault.nodes:
                self._node_fault(kind, self._nodes[name])

    def _heal(self) -> None:
        if not self._blocked:
            return
        involved = sorted({n for pair in self._blocked for n in pair})
        self._blocked = set()
        self._disturb(*involved)
        self._open.append(("heal", self.now))

    def _node_fault(self, kind: FaultKind, node: _Node) -> None:
        tracker = node.tracker
        if kind == "crash" and tracker is not None:
            self._stop(node)
            self._open.append((f"crash {node.name}", self.now))
        elif kind == "shutdown" and tracker is not None:
            if node.paused:
                self._resume(node)
            tracker.graceful_permdown(now=node.local(self.now))
            self._drain(node)
            self._stop(node)
            self._open.append((f"shutdown {node.name}", self.now))
        elif kind == "restart" and tracker is None:
            self._start(node)
            self._open.append((f"restart {node.name}", self.now))
        elif kind == "pause" and tracker is not None and not node.paused:
            node.paused = True
            node.timer_token += 1
            node.timer_at = None
        elif kind == "resume" and node.paused:
            self._resume(node)
            self._open.append((f"resume {node.name}", self.now))
        else:
            self._record(f"skip {kind} {node.name}")

    def _resume(self, node: _Node) -> None:
        node.paused = False
        node.disturbed = node.resumed = self.now
        assert node.tracker is not None
        queued, node.queued = node.queued, []
        for src, message in queued:
            self._record(f"recv {src}->{node.name} {_summary(message)} (queued)")
            node.tracker.receive(message, now=node.local(self.now))
        node.tracker.handle_timer(now=node.local(self.now))
        self._drain(node)

    def _settle(self) -> None:
        self._record("settle")
        self._settling = True
        self._heal()
        for name in self.scenario.nodes:
            node = self._nodes[name]
            if node.paused:
                self._resume(node)
        self._network = self.scenario.network.calm()
        self._disturb(*self.scenario.nodes)
        self._open.append(("settle", self.now))

    # ------------------------------------------------------------------ workload

    def _schedule_op(self) -> None:
        rate = self.scenario.workload.rate
        if rate > 0:
            self._push(self.now + self._work_rng.expovariate(rate), "op", None)

    def _operation(self) -> None:
        rng = self._work_rng
        workload = self.scenario.workload
        running = [n for n in self.scenario.nodes if self._nodes[n].running]
        if not running:
            return
        node = self._nodes[rng.choice(running)]
        tracker = node.tracker
        assert tracker is not None
        weights = [workload.join, workload.update, workload.leave, workload.disconnect]
        op = rng.choices(("join", "update", "leave", "disconnect"), weights)[0]
        live = sum(len(n.model) for n in self._nodes.values())
        if op == "join" and live >= workload.max_presences:
            op = "leave"
        if op != "join" and not node.model:
            op = "join"
        now = node.local(self.now)
        self._ops += 1
        if op == "join":
            if rng.random() < workload.hot_share and workload.hot_topics:
                topic = f"topic:{rng.randrange(min(workload.hot_topics, workload.topics))}"
            else:
                topic = f"topic:{rng.randrange(workload.topics)}"
            key = f"user{rng.randrange(workload.keys)}"
            conn = f"{key}/c{rng.randrange(workload.conns_per_key)}"
            if workload.unique_conns:
                conn = f"{node.name}:{conn}"
            if (conn, topic, key) in node.model:
                self._update(node, (conn, topic, key), now)
                return
            node.counter += 1
            meta: dict[str, Any] = {"status": "online", "n": node.counter}
            ref = tracker.track(conn=conn, topic=topic, key=key, meta=meta, now=now)
            self._new_ref(node, ref, (conn, topic, key), {**meta, "phx_ref": ref})
            self._record(f"op track {node.name} {conn} {topic} {key} {ref}")
        elif op == "update":
            ident = rng.choice(sorted(node.model))
            self._update(node, ident, now)
        elif op == "leave":
            ident = rng.choice(sorted(node.model))
            conn, topic, key = ident
            tracker.untrack(conn=conn, topic=topic, key=key, now=now)
            self._refs[node.model.pop(ident)].removed = self.now
            self._record(f"op untrack {node.name} {conn} {topic} {key}")
        else:
            conn = rng.choice(sorted({ident[0] for ident in node.model}))
            tracker.untrack_conn(conn=conn, now=now)
            for ident in sorted(node.model):
                if ident[0] == conn:
                    self._refs[node.model.pop(ident)].removed = self.now
            self._record(f"op untrack_conn {node.name} {conn}")
        self._drain(node)

    def _update(self, node: _Node, ident: tuple[str, str, str], now: float) -> None:
        assert node.tracker is not None
        conn, topic, key = ident
        old = node.model[ident]
        node.counter += 1
        meta: dict[str, Any] = {"status": "away", "n": node.counter}
        ref = node.tracker.update(conn=conn, topic=topic, key=key, meta=meta, now=now)
        self._refs[old].removed = self.now
        self._new_ref(node, ref, ident, {**meta, "phx_ref": ref, "phx_ref_prev": old})
        self._record(f"op update {node.name} {conn} {topic} {key} {old}->{ref}")
        self._drain(node)

    def _new_ref(
        self, node: _Node, ref: str, ident: tuple[str, str, str], meta: dict[str, Any]
    ) -> None:
        assert node.tracker is not None
        if ref in self._refs:
            self._violate(
                "duplicate_ref",
                node.name,
                f"phx_ref {ref!r} handed out twice "
                f"(first by {self._refs[ref].owner}, now by {node.tracker.replica})",
                ref,
            )
        node.model[ident] = ref
        conn, topic, key = ident
        self._refs[ref] = _RefInfo(node.tracker.replica, conn, topic, key, meta, self.now)

    # ------------------------------------------------------------------ invariants

    def _visible(self, node: _Node) -> dict[str, PresenceMap]:
        assert node.tracker is not None
        return {topic: node.tracker.list(topic) for topic in node.tracker.topics()}

    def _check(self) -> None:
        running = [self._nodes[n] for n in self.scenario.nodes if self._nodes[n].running]
        views = {node.name: self._visible(node) for node in running}
        visible: dict[str, set[str]] = {}
        for node in running:
            refs: set[str] = set()
            for presences in views[node.name].values():
                for value in presences.values():
                    refs.update(str(meta.get("phx_ref")) for meta in value["metas"])
            visible[node.name] = refs
            self._check_replay(node, views[node.name])
        self._check_crashed(running, visible)
        self._check_missing(running, visible)
        self._check_convergence(running, visible)
        if self._record_timeline:
            expected = self._expected_live()
            self._timeline.append(
                (
                    self.now,
                    {n: len(v) for n, v in sorted(visible.items())},
                    len(expected),
                    {n: len(v ^ expected) for n, v in sorted(visible.items())},
                )
            )

    def _check_replay(self, node: _Node, view: Mapping[str, PresenceMap]) -> None:
        topics = sorted(set(view) | {t for t, v in node.view.items() if v})
        for topic in topics:
            listed = _canonical(view.get(topic, {}))
            replayed = _canonical(node.view.get(topic, {}))
            if listed != replayed:
                self._violate(
                    "diff_replay",
                    node.name,
                    f"replaying the diffs of {topic!r} gives {replayed} but list() gives {listed}",
                    topic,
                )

    def _check_crashed(self, running: list[_Node], visible: Mapping[str, set[str]]) -> None:
        bound = self.bounds.crash
        for replica, at in self._dead:
            for node in running:
                if self.now <= max(at, node.resumed) + bound:
                    continue
                for ref in sorted(visible[node.name]):
                    info = self._refs.get(ref)
                    if info is not None and info.owner == replica:
                        self._violate(
                            "crashed_presence",
                            node.name,
                            f"{info.key!r} in {info.topic!r} (ref {ref}) of {replica} which "
                            f"stopped at t={at:.3f}s is still visible after {bound:.3f}s",
                            ref,
                        )

    def _check_missing(self, running: list[_Node], visible: Mapping[str, set[str]]) -> None:
        bound = self.bounds.join
        for owner in running:
            for ident in sorted(owner.model):
                ref = owner.model[ident]
                info = self._refs[ref]
                for node in running:
                    if node is owner or ref in visible[node.name]:
                        continue
                    since = max(info.created, owner.disturbed, node.disturbed)
                    if self.now - since > bound:
                        self._violate(
                            "missing_presence",
                            node.name,
                            f"{info.key!r} in {info.topic!r} (ref {ref}) tracked on {owner.name} "
                            f"at t={info.created:.3f}s still missing {self.now - since:.3f}s "
                            f"after the last disturbance (bound {bound:.3f}s)",
                            ref,
                        )

    def _expected_live(self) -> set[str]:
        return {ref for node in self._nodes.values() if node.running for ref in node.model.values()}

    def _check_convergence(self, running: list[_Node], visible: Mapping[str, set[str]]) -> None:
        if not self._open:
            return
        still: list[tuple[str, float]] = []
        running_names = {n.name for n in running}
        paused = {
            self._nodes[n].tracker.replica  # type: ignore[union-attr]
            for n in self.scenario.nodes
            if self._nodes[n].paused
        }
        for cause, at in self._open:
            done = True
            for node in running:
                seen = visible[node.name]
                for ref in seen:
                    info = self._refs.get(ref)
                    if info is not None and info.removed is not None and info.removed <= at:
                        done = False
                        break
                if not done:
                    break
                for owner in running:
                    if owner.name not in running_names:
                        continue
                    for ref in owner.model.values():
                        info = self._refs[ref]
                        if info.created <= at and info.owner not in paused and ref not in seen:
                            done = False
                            break
                    if not done:
                        break
                if not done:
                    break
            if done:
                self._samples.append(ConvergenceSample(cause=cause, at=at, seconds=self.now - at))
                self._record(f"converged {cause} {self.now - at:.9f}")
            else:
                still.append((cause, at))
        self._open = still

    def _final_check(self) -> None:
        self._check()
        running = [self._nodes[n] for n in self.scenario.nodes if self._nodes[n].running]
        expected: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
        for node in running:
            for ref in node.model.values():
                info = self._refs[ref]
                by_key = expected.setdefault(info.topic, {})
                by_key.setdefault(info.key, {"metas": []})["metas"].append(info.meta)
        want = {topic: _canonical(v) for topic, v in sorted(expected.items())}
        for node in running:
            got = {topic: _canonical(v) for topic, v in sorted(self._visible(node).items())}
            if got != want:
                topics = sorted(t for t in set(got) | set(want) if got.get(t) != want.get(t))
                first = topics[0]
                self._violate(
                    "convergence",
                    node.name,
                    f"{self.bounds.settle:.3f}s after the settle phase began, {len(topics)} "
                    f"topic(s) differ from the model; first {first!r}: listed "
                    f"{got.get(first, [])}, expected {want.get(first, [])}",
                    "final",
                )
        for cause, at in self._open:
            self._samples.append(ConvergenceSample(cause=cause, at=at, seconds=None))
        self._open = []

    def _result(self) -> SimResult:
        seconds = max(self.now, 1e-9)
        count = len(self.scenario.nodes)
        metrics = Metrics(
            virtual_seconds=self.now,
            steps=self.step,
            convergence=tuple(self._samples),
            messages=dict(self._messages),
            bytes=dict(self._bytes),
            messages_per_replica_second=sum(self._messages.values()) / count / seconds,
            bytes_per_replica_second=sum(self._bytes.values()) / count / seconds,
            dropped=self._dropped,
            diffs=self._diffs,
            largest_transfer=self._largest_transfer,
            operations=self._ops,
        )
        return SimResult(
            scenario=self.scenario,
            violations=tuple(self._violations),
            metrics=metrics,
            digest=self._hash.hexdigest(),
            bounds=self.bounds,
            trace=tuple(self._trace),
            timeline=tuple(self._timeline),
        )


def _summary(message: Message) -> str:
    sender = f"{message.sender.name}.{message.sender.vsn}"
    if isinstance(message, Heartbeat):
        clock = ",".join(f"{r.name}.{r.vsn}={c}" for r, c in sorted(message.clock.items()))
        kind = "delta" if message.delta is not None else "empty"
        return f"heartbeat-{kind} {sender} [{clock}]"
    if isinstance(message, TransferRequest):
        return f"transfer_req#{message.request_id} {sender}"
    if isinstance(message, TransferAck):
        return f"transfer_ack#{message.request_id} {sender} {type(message.payload).__name__}"
    assert isinstance(message, GracefulPermdown)
    return f"graceful_permdown {sender}"


def run(
    scenario: Scenario | SimParams | None = None,
    *,
    tracker_factory: TrackerFactory | None = None,
    keep_trace: bool = False,
) -> SimResult:
    """Run a scenario (default: ``SimParams()``, the representative 5-node run) and return the
    result. A shortcut for ``Simulation(scenario, ...).run()``."""
    if scenario is None:
        scenario = SimParams()
    if isinstance(scenario, SimParams):
        scenario = scenario.scenario()
    return Simulation(scenario, tracker_factory=tracker_factory, keep_trace=keep_trace).run()
