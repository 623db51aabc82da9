"""The engine: a driver that runs every node through a :class:`~presence_adapters.drivers.Pump`.

A heap of ``(time, seq, action, payload)`` is the virtual clock. Each node incarnation is one
tracker (built by the :data:`TrackerFactory`) wrapped in one pump, and the engine does what any
driver does with a pump: it reads the node's (skewed) clock once per wake-up and passes the
reading through :meth:`Pump.now`, arms a timer action at :attr:`Pump.deadline` and calls
:meth:`Pump.wake` when it fires, feeds every delivery to :meth:`Pump.receive` as the encoded
bytes, runs client operations through :meth:`Pump.command`, and puts every
:class:`~presence_adapters.drivers.Transmission` on the virtual network (:class:`Links`). The
codec is thus exercised on every message; a delivery the receiver rejects as malformed is a
``malformed`` violation. With a keyring (:attr:`Scenario.keyring`, or a ``restart`` fault's),
every node's tracker seals what it sends and checks what it receives, and a message a tracker
refuses for a reason an honest cluster never gives is a ``rejected`` violation.

Events reach the engine through the pump's ``on_event``; they wait in the node's inbox until the
call that produced them returns, so the trace reads "operation, then its diffs, then its sends".
Each :class:`~presence_core.PresenceDiff` is replayed on the node's client view as its
subscribers would apply it (:meth:`Invariants.delivered`); at each check that view must be what
the node lists, in every topic (a node lists what its subscribers were shown).

Every node incarnation gets the scenario's :attr:`~Scenario.topic_options` before its first
tick. Flap episodes (:attr:`Workload.flaps`) are driven here too: each is a :class:`_Flap`
whose connection joins, leaves and comes back on the heap's schedule, with gaps chosen from
:meth:`Scenario.flap_window` so that "within the grace period" and "beyond it" hold at every
observer; the engine tells the invariants when the key leaves and when it comes back.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import traceback
from collections.abc import Callable
from typing import Any

import attrs

from presence_adapters.drivers import Pump, PumpStats, Transmission
from presence_core import (
    Event,
    GracefulPermdown,
    Heartbeat,
    Keyring,
    Message,
    MessageRejected,
    PresenceDiff,
    RemoteProtocolError,
    ReplicaDown,
    ReplicaPermdown,
    ReplicaRef,
    ReplicaUp,
    TopicOptions,
    Tracker,
    TrackerConfig,
    TransferAck,
    TransferRequest,
    decode_message,
)

from ._invariants import Disturbances, Ident, Invariants, Observed, ReplayedClient, Unchecked
from ._network import Links
from ._results import Metrics, SimResult, Violation, ViolationKind
from ._scenario import Fault, FaultKind, Scenario, SimParams, Workload, describe_keyring

__all__ = ["Simulation", "TrackerFactory", "run"]

TrackerFactory = Callable[[ReplicaRef, TrackerConfig, random.Random], Tracker]
"""Builds the tracker of one node incarnation: ``factory(replica, config, rng)``.

A custom factory chooses its trackers' keyrings itself: the scenario's keyrings (its own, and a
``restart`` fault's) apply to the default factory only."""


@attrs.define
class _Node:
    """One node across its incarnations: its clock, its current pump and its workload model."""

    name: str
    rate: float
    offset: float
    pump: Pump | None = None
    vsn: int = 0
    paused: bool = False
    # the keyring of its next incarnation (the scenario's, or the last keyed restart's)
    keyring: Keyring | None = None
    # deliveries that arrived while paused: (sender, transmission)
    queued: list[tuple[str, Transmission]] = attrs.Factory(list)
    # events the pump handed over during the current call
    inbox: list[Event] = attrs.Factory(list)
    # the pump's unsendable count, as far as the trace has reported it
    unsendable: int = 0
    timer_token: int = 0
    timer_at: float | None = None
    disturbed: float = 0.0
    # the last fault on the node itself (not a dropped message): for the flap checks
    faulted: float = 0.0
    resumed: float = 0.0
    client: ReplayedClient = attrs.Factory(ReplayedClient)
    model: dict[Ident, str] = attrs.Factory(dict)
    # what its live connections of flap episodes track (kept apart from the regular workload)
    flapping: dict[Ident, str] = attrs.Factory(dict)
    counter: int = 0

    @property
    def running(self) -> bool:
        return self.pump is not None and not self.paused and not self.pump.tracker.stopped

    def now(self, t: float) -> float:
        """This node's ``now`` at virtual time ``t``: its clock reading, through its pump."""
        assert self.pump is not None
        return self.pump.now(self.offset + self.rate * t)


class _Stop(Exception):
    pass


@attrs.define(eq=False)
class _Flap:
    """One flap episode: a key of its own in one topic, whose one connection comes and goes.

    It connects on a node, stays ``2..3 * flap_slack``, disconnects; ``cycles`` times it comes
    back (a new connection id) after a gap within or beyond the grace period, on the same node
    or another; after the last reconnect it stays, or (``final``) leaves once more for good.
    """

    topic: str
    key: str
    node: str  # where its connection is, or last was
    cycles: int  # reconnects still to come
    final: bool  # leave for good after the last reconnect
    conn: str | None = None  # the live connection
    conns: int = 0  # connections it has had


class Simulation:
    """Runs one :class:`Scenario`, once: :meth:`run` may be called a single time.

    Args:
        scenario: what to run.
        tracker_factory: builds each node's tracker (default: a plain
            :class:`~presence_core.Tracker`, with the node's keyring); pass your own subclass
            or wrapper to test it. The simulation wraps it in a
            :class:`~presence_adapters.drivers.Pump`.
        keep_trace: keep the trace lines in the result (the digest is always computed).
        timeline: record per-check view sizes for plotting.
        on_progress: called as ``on_progress(virtual_now, virtual_end)`` every few virtual seconds.
        stop_on_violation: stop at the first violation instead of collecting them all.
        max_violations: stop after this many.
        checks: check the invariants (the default). ``False`` runs the scenario with no
            invariant at all, for soak runs of millions of operations: the checks remember
            every ``phx_ref`` handed out (``duplicate_ref``) and replay every diff, which grows
            with the run and costs more than the trackers. The run is otherwise the same (the
            same operations, faults and messages; its trace differs only in step numbers and
            the convergence lines). The result reports only the engine's own violations
            (``error``, ``malformed``) and no convergence samples: inspect the nodes with
            :meth:`trackers` and :meth:`tracked`.

    Raises:
        TypeError: ``scenario`` is not a :class:`Scenario`.
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
        checks: bool = True,
    ) -> None:
        if not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a Scenario, not {type(scenario).__name__}")
        self.scenario = scenario
        self.bounds = scenario.bounds()
        self._ran = False
        self._factory = tracker_factory
        self._keep_trace = keep_trace
        self._on_progress = on_progress
        self._stop_on_violation = stop_on_violation
        self._max_violations = max_violations
        master = random.Random(scenario.seed)
        self._links = Links(scenario.network, random.Random(master.getrandbits(64)))
        self._work_rng = random.Random(master.getrandbits(64))
        self._tracker_seed = master.getrandbits(64)
        self._flap_rng = random.Random(master.getrandbits(64))
        self._flaps: list[_Flap] = []
        self._flap_topics = scenario.flap_topics() if scenario.workload.flaps > 0 else ()
        self._flap_windows: dict[str, tuple[float, float]] = {}
        self._link_drops: dict[tuple[str, str], float] = {}  # (src, dst): the last drop
        # topics that may have a room (a grace period, a large room): their list, counts and
        # pages come from the room's own index, so the checks compare its counts with its list
        self._rooms = frozenset(scenario.topic_options)
        self._holds = self.bounds.grace > 0 or bool(scenario.large_rooms())
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self.now = 0.0
        self.step = 0
        self._end = scenario.duration + self.bounds.settle
        self._settling = False
        self._nodes: dict[str, _Node] = {}
        for index, name in enumerate(scenario.nodes):
            rate = float(scenario.clock_rates.get(name, 1.0))
            self._nodes[name] = _Node(
                name=name, rate=rate, offset=1000.0 * (index + 1), keyring=scenario.keyring
            )
        self._checks = checks
        self._invariants = (Invariants if checks else Unchecked)(
            self.bounds, violate=self._violate, record=self._record, timeline=timeline
        )
        self._hash = hashlib.sha256()
        self._trace: list[str] = []
        self._violations: list[Violation] = []
        self._seen_violations: set[tuple[str, str, str]] = set()
        self._traffic: list[PumpStats] = []  # one per incarnation
        self._messages = dict.fromkeys(scenario.nodes, 0)
        self._bytes = dict.fromkeys(scenario.nodes, 0)
        self._dropped = 0
        self._diffs = 0
        self._largest_transfer = 0
        self._ops = 0
        self._rejected: dict[str, int] = {}

    # ------------------------------------------------------------------ inspection

    @property
    def operations(self) -> int:
        """Client operations performed so far."""
        return self._ops

    def trackers(self) -> dict[str, Tracker]:
        """The tracker of every node that has one (running or paused), by node name.

        For inspection during a run (from ``on_progress``) or after it: read it, never call or
        change it, or the run stops being a function of its scenario. A crashed or shut down
        node has none until it restarts.
        """
        return {
            name: node.pump.tracker for name, node in self._nodes.items() if node.pump is not None
        }

    def tracked(self) -> dict[str, dict[tuple[str, str, str], str]]:
        """What the live connections of each node track: ``{node: {(conn, topic, key): ref}}``.

        A copy; nodes with no tracker are left out. After the settle phase every running
        tracker should list exactly these presences.
        """
        return {
            name: {**node.model, **node.flapping}
            for name, node in self._nodes.items()
            if node.pump is not None
        }

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
        """A fault on these nodes (a partition or heal involving them, the settle phase)."""
        for name in names:
            node = self._nodes[name]
            node.disturbed = node.faulted = self.now

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        """Run the scenario to its end and return the result.

        Raises:
            RuntimeError: this simulation already ran. A run consumes its random streams and
                leaves its nodes where the run ended, so a second one would not replay the
                first: build a new :class:`Simulation` of the same scenario, which gives the same
                run (the same trace digest).
        """
        if self._ran:
            raise RuntimeError(
                "this Simulation already ran; a Simulation runs once: build a new "
                "Simulation(scenario) to run the scenario again (it gives the same run)"
            )
        self._ran = True
        scenario = self.scenario
        for fault in scenario.faults:
            self._push(fault.at, "fault", fault)
        self._push(scenario.duration, "settle", None)
        self._schedule_op()
        self._schedule_flap()
        if self._checks:
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
            if self._checks:
                self._invariants.final_check(
                    self.now, self._observe(final=True), self._disturbances()
                )
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
                assert node.pump is not None
                node.timer_at = None
                node.pump.wake(now=node.now(self.now))
                self._flush(node)
        elif kind == "deliver":
            self._deliver(*payload)
        elif kind == "op":
            if not self._settling:
                self._operation()
                self._schedule_op()
        elif kind == "flap_start":
            if not self._settling:
                self._flap_start()
                self._schedule_flap()
        elif kind == "flap":
            if not self._settling:
                flap, step = payload
                if step == "leave":
                    self._flap_leave(flap)
                else:
                    self._flap_back(flap)
        elif kind == "fault":
            self._fault(payload)
        elif kind == "check":
            self._invariants.check(self.now, self._observe(), self._disturbances())
            self._push(self.now + self.scenario.check_interval, "check", None)
        elif kind == "progress":
            if self._on_progress is not None:
                self._on_progress(self.now, self._end)
            self._push(self.now + max(1.0, self._end / 50), "progress", None)
        elif kind == "settle":
            self._settle()

    def _observe(self, *, final: bool = False) -> list[Observed]:
        observed = []
        for name in self.scenario.nodes:
            node = self._nodes[name]
            if node.running:
                assert node.pump is not None
                tracker = node.pump.tracker
                # tracker.topics() has the topics with a visible presence; a topic whose only
                # keys are in their grace period is listed all the same: ask for those too
                topics = set(tracker.topics())
                if self._holds:
                    topics.update(t for t, view in node.client.views.items() if view.state)
                    topics.update(self._rooms)
                listed = {}
                for topic in sorted(topics):
                    presences = tracker.presences(topic)
                    if presences:
                        listed[topic] = presences
                occupancy = None
                if self._holds:
                    occupancy = {topic: tracker.occupancy(topic) for topic in sorted(topics)}
                observed.append(
                    Observed(
                        name=name,
                        listed=listed,
                        client=node.client,
                        model={**node.model, **node.flapping},
                        disturbed=node.disturbed,
                        resumed=node.resumed,
                        vsn=node.vsn,
                        occupancy=occupancy,
                        leaves_held=tracker.stats().leaves_held if final else 0,
                    )
                )
        return observed

    def _disturbances(self) -> Disturbances:
        """Every node's and link's last disturbance (running or not), for the flap checks."""
        return Disturbances(
            nodes={name: node.faulted for name, node in self._nodes.items()},
            links=dict(self._link_drops),
        )

    # ------------------------------------------------------------------ nodes

    def _start(self, node: _Node) -> None:
        node.vsn += 1
        replica = ReplicaRef(node.name, node.vsn)
        rng = random.Random(f"{self._tracker_seed}:{node.name}:{node.vsn}")
        if self._factory is not None:
            tracker = self._factory(replica, self.scenario.config, rng)
        else:
            tracker = Tracker(
                config=self.scenario.config, replica=replica, rng=rng, keyring=node.keyring
            )
        node.inbox = []
        node.pump = Pump(tracker, on_event=node.inbox.append)
        self._traffic.append(node.pump.stats)
        node.unsendable = 0
        node.paused = False
        node.queued = []
        node.client = ReplayedClient()
        node.model = {}
        node.flapping = {}
        node.disturbed = node.resumed = node.faulted = self.now
        self._record(f"start {node.name}.{node.vsn}")
        for topic, options in sorted(self.scenario.topic_options.items()):
            node.pump.command(_configure(tracker, topic, options), now=node.now(self.now))
            grace = options.leave_grace_period
            self._record(
                f"options {node.name} {topic} grace={'-' if grace is None else f'{grace:g}'}"
                f"{' large' if options.large_room else ''}"
            )
        node.pump.wake(now=node.now(self.now))
        self._flush(node)

    def _stop(self, node: _Node) -> None:
        assert node.pump is not None
        replica = node.pump.tracker.replica
        for ref in sorted([*node.model.values(), *node.flapping.values()]):
            self._invariants.removed(ref, self.now)
        node.model = {}
        node.flapping = {}
        node.disturbed = node.faulted = self.now
        node.client = ReplayedClient()
        node.pump = None
        node.paused = False
        node.queued = []
        node.timer_token += 1
        node.timer_at = None
        self._invariants.stopped(replica, self.now)

    def _refresh_timer(self, node: _Node) -> None:
        deadline = node.pump.deadline if node.pump is not None else None
        if deadline is None or node.paused:
            return
        # the virtual time at which the node's clock reads the deadline
        at = (deadline - node.offset) / node.rate
        while node.offset + node.rate * at < deadline:
            at = math.nextafter(at, math.inf)
        at = max(at, self.now)
        if node.timer_at == at:
            return
        node.timer_token += 1
        node.timer_at = at
        self._push(at, "timer", (node.name, node.timer_token))

    def _flush(self, node: _Node) -> None:
        """After a pump call: handle its events, put its transmissions on the wire, re-arm."""
        pump = node.pump
        assert pump is not None
        name = node.name
        events = list(node.inbox)
        node.inbox.clear()
        for event in events:
            if isinstance(event, PresenceDiff):
                self._diffs += 1
                self._invariants.delivered(name, node.vsn, node.client, event, self.now)
                joins = sorted(str(e.meta.get("phx_ref")) for e in event.joins)
                leaves = sorted(str(e.meta.get("phx_ref")) for e in event.leaves)
                self._record(f"diff {name} {event.topic} +{joins} -{leaves}")
            elif isinstance(event, (ReplicaUp, ReplicaDown, ReplicaPermdown)):
                kind = type(event).__name__
                self._record(f"{kind} {name} {event.replica.name}.{event.replica.vsn}")
            elif isinstance(event, MessageRejected):
                reason = event.reason.value
                self._rejected[reason] = self._rejected.get(reason, 0) + 1
                sender = "?" if event.sender is None else f"{event.sender.name}.{event.sender.vsn}"
                self._record(f"rejected {name} {reason} from {sender}")
        for transmission in pump.take_transmissions():
            if transmission.to is None:
                for dst in self.scenario.nodes:
                    if dst != name:
                        self._send(name, dst, transmission)
            else:
                self._send(name, transmission.to, transmission)
        if pump.stats.unsendable != node.unsendable:
            node.unsendable = pump.stats.unsendable
            self._record(f"unsendable {name} {node.unsendable} so far")
        self._refresh_timer(node)

    # ------------------------------------------------------------------ network

    def _send(self, src: str, dst: str, transmission: Transmission) -> None:
        size = len(transmission.data)
        message = transmission.message
        self._messages[src] += 1
        self._bytes[src] += size
        if isinstance(message, TransferAck):
            self._largest_transfer = max(self._largest_transfer, size)
        if self._links.is_cut(src, dst):
            self._drop(src, dst, message, "partition")
            return
        delays = self._links.plan(src, dst, message, self.now)
        if not delays:
            self._drop(src, dst, message, "lost")
            return
        for delay in delays:
            self._push(self.now + delay, "deliver", (src, dst, transmission))

    def _drop(self, src: str, dst: str, message: Message, why: str) -> None:
        self._dropped += 1
        self._nodes[src].disturbed = self._nodes[dst].disturbed = self.now
        self._link_drops[src, dst] = self.now
        self._record(f"drop {why} {src}->{dst} {_summary(message)}")

    def _deliver(self, src: str, dst: str, transmission: Transmission) -> None:
        node = self._nodes[dst]
        if node.pump is None:
            self._dropped += 1
            return
        if self._links.is_cut(src, dst):
            self._drop(src, dst, transmission.message, "partition")
            return
        if node.paused:
            node.queued.append((src, transmission))
            return
        self._receive(node, src, transmission)
        self._flush(node)

    def _receive(self, node: _Node, src: str, transmission: Transmission, note: str = "") -> None:
        pump = node.pump
        assert pump is not None
        data = transmission.data
        self._record(f"recv {src}->{node.name} {_summary(transmission.message)} {len(data)}B{note}")
        malformed = pump.stats.malformed
        seen = len(node.inbox)
        pump.receive(data, now=node.now(self.now))
        for event in node.inbox[seen:]:
            if isinstance(event, MessageRejected):
                self._invariants.rejected(node.name, src, event)
        if pump.stats.malformed != malformed:
            try:
                decode_message(data, max_bytes=pump.tracker.config.max_message_bytes)
                reason = "the bytes decode, so the receiving tracker itself refused them"
            except RemoteProtocolError as exc:
                reason = str(exc)
            self._violate(
                "malformed",
                node.name,
                f"{src}'s {_summary(transmission.message)} ({len(data)} bytes) was dropped as "
                f"malformed: {reason}",
                f"{src} {type(transmission.message).__name__}",
            )

    # ------------------------------------------------------------------ faults

    def _fault(self, fault: Fault) -> None:
        self._record(f"fault {fault.describe()}")
        kind = fault.kind
        if kind == "partition":
            self._links.cut(fault.nodes, fault.others, one_way=fault.one_way)
            self._disturb(*fault.nodes, *fault.others)
        elif kind == "heal":
            self._heal()
        else:
            for name in fault.nodes:
                self._node_fault(fault, self._nodes[name])

    def _heal(self) -> None:
        involved = self._links.heal()
        if involved:
            self._disturb(*involved)
            self._invariants.disrupted("heal", self.now)

    def _node_fault(self, fault: Fault, node: _Node) -> None:
        kind: FaultKind = fault.kind
        pump = node.pump
        if kind == "crash" and pump is not None:
            self._stop(node)
            self._invariants.disrupted(f"crash {node.name}", self.now)
        elif kind == "shutdown" and pump is not None:
            if node.paused:
                self._resume(node)
            tracker = pump.tracker
            pump.command(lambda t: tracker.graceful_permdown(now=t), now=node.now(self.now))
            self._flush(node)
            self._stop(node)
            self._invariants.disrupted(f"shutdown {node.name}", self.now)
        elif kind == "restart" and pump is None:
            if fault.keyring is not None:
                node.keyring = fault.keyring
                self._record(f"keyring {node.name} {describe_keyring(fault.keyring)}")
            self._start(node)
            self._invariants.disrupted(f"restart {node.name}", self.now)
        elif kind == "pause" and pump is not None and not node.paused:
            node.paused = True
            node.disturbed = node.faulted = self.now
            node.timer_token += 1
            node.timer_at = None
        elif kind == "resume" and node.paused:
            self._resume(node)
            self._invariants.disrupted(f"resume {node.name}", self.now)
        else:
            self._record(f"skip {kind} {node.name}")

    def _resume(self, node: _Node) -> None:
        assert node.pump is not None
        node.paused = False
        node.disturbed = node.resumed = node.faulted = self.now
        queued, node.queued = node.queued, []
        for src, transmission in queued:
            self._receive(node, src, transmission, " (queued)")
            self._flush(node)
        node.pump.wake(now=node.now(self.now))
        self._flush(node)

    def _settle(self) -> None:
        self._record("settle")
        self._settling = True
        self._heal()
        for name in self.scenario.nodes:
            node = self._nodes[name]
            if node.paused:
                self._resume(node)
        self._links.calm()
        self._disturb(*self.scenario.nodes)
        self._invariants.disrupted("settle", self.now)

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
        pump = node.pump
        assert pump is not None
        tracker = pump.tracker
        weights = [workload.join, workload.update, workload.leave, workload.disconnect]
        op = rng.choices(("join", "update", "leave", "disconnect"), weights)[0]
        live = sum(len(n.model) for n in self._nodes.values())
        if op == "join" and live >= workload.max_presences:
            op = "leave"
        if op != "join" and not node.model:
            op = "join"
        now = node.now(self.now)
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
            else:
                node.counter += 1
                meta: dict[str, Any] = {"status": "online", "n": node.counter}
                ref = pump.command(
                    lambda t: tracker.track(conn=conn, topic=topic, key=key, meta=meta, now=t),
                    now=now,
                )
                self._new_ref(node, ref, (conn, topic, key), {**meta, "phx_ref": ref})
                self._record(f"op track {node.name} {conn} {topic} {key} {ref}")
        elif op == "update":
            self._update(node, rng.choice(sorted(node.model)), now)
        elif op == "leave":
            conn, topic, key = ident = rng.choice(sorted(node.model))
            pump.command(lambda t: tracker.untrack(conn=conn, topic=topic, key=key, now=t), now=now)
            self._invariants.removed(node.model.pop(ident), self.now)
            self._record(f"op untrack {node.name} {conn} {topic} {key}")
        else:
            conn = rng.choice(sorted({ident[0] for ident in node.model}))
            pump.command(lambda t: tracker.untrack_conn(conn=conn, now=t), now=now)
            for ident in sorted(node.model):
                if ident[0] == conn:
                    self._invariants.removed(node.model.pop(ident), self.now)
            self._record(f"op untrack_conn {node.name} {conn}")
        self._flush(node)

    def _update(self, node: _Node, ident: Ident, now: float) -> None:
        pump = node.pump
        assert pump is not None
        tracker = pump.tracker
        conn, topic, key = ident
        old = node.model[ident]
        node.counter += 1
        meta: dict[str, Any] = {"status": "away", "n": node.counter}
        ref = pump.command(
            lambda t: tracker.update(conn=conn, topic=topic, key=key, meta=meta, now=t),
            now=now,
        )
        self._invariants.removed(old, self.now)
        self._new_ref(node, ref, ident, {**meta, "phx_ref": ref, "phx_ref_prev": old})
        self._record(f"op update {node.name} {conn} {topic} {key} {old}->{ref}")

    def _new_ref(self, node: _Node, ref: str, ident: Ident, meta: dict[str, Any]) -> None:
        assert node.pump is not None
        self._invariants.tracked(node.name, node.pump.tracker.replica, ref, ident, meta, self.now)
        node.model[ident] = ref

    # ------------------------------------------------------------------ flap workload

    def _schedule_flap(self) -> None:
        rate = self.scenario.workload.flaps
        if rate > 0:
            self._push(self.now + self._flap_rng.expovariate(rate), "flap_start", None)

    def _running(self) -> list[str]:
        return [name for name in self.scenario.nodes if self._nodes[name].running]

    def _flap_window(self, topic: str) -> tuple[float, float]:
        window = self._flap_windows.get(topic)
        if window is None:
            window = self._flap_windows[topic] = self.scenario.flap_window(topic)
        return window

    def _flap_start(self) -> None:
        rng = self._flap_rng
        workload: Workload = self.scenario.workload
        topic = rng.choice(self._flap_topics)
        cycles = rng.randint(1, workload.flap_cycles)
        final = rng.random() < 0.5
        running = self._running()
        if not running:
            return
        name = rng.choice(running)
        key = f"flap{len(self._flaps)}"
        flap = _Flap(topic=topic, key=key, node=name, cycles=cycles, final=final)
        self._flaps.append(flap)
        self._flap_connect(flap, self._nodes[name])

    def _flap_connect(self, flap: _Flap, node: _Node) -> None:
        """Give the episode's key a new connection on ``node``, and schedule its next leave."""
        pump = node.pump
        assert pump is not None
        tracker = pump.tracker
        topic, key = flap.topic, flap.key
        conn = f"{key}.{flap.conns}"
        flap.conns += 1
        node.counter += 1
        meta: dict[str, Any] = {"status": "online", "n": node.counter}
        self._ops += 1
        ref = pump.command(
            lambda t: tracker.track(conn=conn, topic=topic, key=key, meta=meta, now=t),
            now=node.now(self.now),
        )
        ident = (conn, topic, key)
        self._invariants.tracked(
            node.name, tracker.replica, ref, ident, {**meta, "phx_ref": ref}, self.now
        )
        node.flapping[ident] = ref
        flap.node, flap.conn = node.name, conn
        self._record(f"flap track {node.name} {conn} {topic} {key} {ref}")
        self._flush(node)
        if flap.cycles or flap.final:
            slack = self.bounds.flap_slack
            stay = self._flap_rng.uniform(2 * slack, 3 * slack)
            self._push(self.now + stay, "flap", (flap, "leave"))

    def _flap_leave(self, flap: _Flap) -> None:
        """The episode's connection disconnects; schedule its reconnect, if one is to come."""
        node = self._nodes[flap.node]
        conn = flap.conn
        assert conn is not None
        ident = (conn, flap.topic, flap.key)
        if not node.running or ident not in node.flapping:
            # paused (the presence stays), or stopped (it went with its node): the episode ends
            self._record(f"flap end {flap.key} {node.name} not running")
            return
        pump = node.pump
        assert pump is not None
        tracker = pump.tracker
        window = self._flap_window(flap.topic)
        observers = {
            other.name: (other.vsn, other.client) for other in self._nodes.values() if other.running
        }
        self._invariants.flap_left(
            flap.topic, flap.key, node.name, self.now, window=window, observers=observers
        )
        self._ops += 1
        pump.command(lambda t: tracker.untrack_conn(conn=conn, now=t), now=node.now(self.now))
        self._invariants.removed(node.flapping.pop(ident), self.now)
        flap.conn = None
        self._record(f"flap leave {node.name} {conn}")
        self._flush(node)
        if not flap.cycles:
            return  # gone for good
        flap.cycles -= 1
        rng = self._flap_rng
        within, beyond = window
        if rng.random() < self.scenario.workload.flap_beyond:
            gap = beyond + rng.uniform(0.1, 1.0) * self.bounds.flap_slack
        else:
            gap = rng.uniform(0.0, 0.9) * within
        self._push(self.now + gap, "flap", (flap, "back"))

    def _flap_back(self, flap: _Flap) -> None:
        """The episode's key reconnects: where it left, or on another node (a handover)."""
        rng = self._flap_rng
        running = self._running()
        if not running:
            self._record(f"flap end {flap.key} no node running")
            return
        others = [name for name in running if name != flap.node]
        handover = rng.random() < self.scenario.workload.handover
        name = (
            rng.choice(others) if others and (handover or flap.node not in running) else flap.node
        )
        self._invariants.flap_back(flap.topic, flap.key, name, self.now)
        self._flap_connect(flap, self._nodes[name])

    # ------------------------------------------------------------------ result

    def _result(self) -> SimResult:
        seconds = max(self.now, 1e-9)
        count = len(self.scenario.nodes)
        traffic = self._traffic
        metrics = Metrics(
            virtual_seconds=self.now,
            steps=self.step,
            convergence=tuple(self._invariants.samples),
            messages=dict(self._messages),
            bytes=dict(self._bytes),
            messages_per_replica_second=sum(self._messages.values()) / count / seconds,
            bytes_per_replica_second=sum(self._bytes.values()) / count / seconds,
            dropped=self._dropped,
            diffs=self._diffs,
            largest_transfer=self._largest_transfer,
            operations=self._ops,
            encoded_bytes=sum(stats.sent_bytes for stats in traffic),
            received_bytes=sum(stats.received_bytes for stats in traffic),
            malformed=sum(stats.malformed for stats in traffic),
            unsendable=sum(stats.unsendable for stats in traffic),
            rejected=dict(sorted(self._rejected.items())),
            flaps=len(self._flaps),
            flaps_judged=self._invariants.flaps_judged,
            flaps_skipped=self._invariants.flaps_skipped,
        )
        return SimResult(
            scenario=self.scenario,
            violations=tuple(self._violations),
            metrics=metrics,
            digest=self._hash.hexdigest(),
            bounds=self.bounds,
            trace=tuple(self._trace),
            timeline=tuple(self._invariants.timeline),
        )


def _configure(tracker: Tracker, topic: str, options: TopicOptions) -> Callable[[float], None]:
    """The pump command that sets ``topic``'s options on ``tracker``."""

    def call(_now: float) -> None:
        tracker.configure_topic(topic, options)

    return call


def _summary(message: Message) -> str:
    sender = f"{message.sender.name}.{message.sender.vsn}"
    if isinstance(message, Heartbeat):
        clock = ",".join(f"{r.name}.{r.vsn}={c}" for r, c in sorted(message.clock.items()))
        kind = "delta" if message.delta is not None else "empty"
        return f"heartbeat-{kind} {sender} [{clock}]{_part(message.part, message.parts)}"
    if isinstance(message, TransferRequest):
        return f"transfer_req#{message.request_id} {sender}"
    if isinstance(message, TransferAck):
        payload = type(message.payload).__name__
        return (
            f"transfer_ack#{message.request_id} {sender} {payload}"
            f"{_part(message.part, message.parts)}"
        )
    assert isinstance(message, GracefulPermdown)
    return f"graceful_permdown {sender}"


def _part(part: int, parts: int) -> str:
    """`` part 2/5`` for the second of five parts; nothing for a message sent whole."""
    return "" if parts == 1 else f" part {part + 1}/{parts}"


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
