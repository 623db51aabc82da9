"""What a run depends on: the scenario, its workload, its fault schedule and its bounds.

A :class:`Scenario` is frozen and complete: the same scenario always gives the same run.
:class:`SimParams` expands a few numbers (what ``presence simulate`` takes) into one, drawing the
fault schedule and the clock rates from its seed. :class:`Bounds` derives the invariants' time
limits from the scenario.

Every class here validates its fields on construction and raises ``ValueError`` naming the field:
a value that would make a run meaningless (NaN, a negative rate) or endless (an infinite duration,
a tick or check interval below :data:`MIN_PERIOD`, a rate above :data:`MAX_RATE`) is refused
before anything runs.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

import attrs

from presence_core import Key, Keyring, TopicOptions, TrackerConfig

from ._network import FaultyNetwork, NetworkModel, finite

__all__ = [
    "FAULT_MIXES",
    "MAX_RATE",
    "MIN_PERIOD",
    "SIM_CONFIG",
    "Bounds",
    "Fault",
    "FaultKind",
    "Scenario",
    "SimParams",
    "Workload",
    "describe_keyring",
    "sim_keyring",
]

SIM_CONFIG = TrackerConfig(broadcast_period=0.5, max_silent_periods=4, permdown_period=60.0)
"""The simulation's default tracker config: Phoenix's shape, 3x faster.

A tick every 0.5 s, an empty heartbeat every 5 ticks (2.5 s), down after 4 s of silence
(``0.5 * 4 * 2``), permdown after 60 s, transfer sampling every 2 ticks.
"""

FaultKind = Literal["partition", "heal", "crash", "restart", "shutdown", "pause", "resume"]

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

MIN_PERIOD = 0.001
"""The shortest broadcast period and check interval a scenario may have, in virtual seconds.

A run takes one step per tick of every node and one per check, so its cost grows as the inverse
of these intervals: at 1 ms the representative 5-node, 60-second run takes some 600,000 steps and
half a minute of real time (200 times the default 0.5 s period's), and much below it a run would
practically never end. 1 ms is also far below the simulated network's latency (up to 50 ms), so
no meaningful tick is refused.
"""

FIRST_TICK_JITTER = 0.25
"""The share of a period by which a tracker's first tick may come late (its jitter)."""

MAX_RATE = 10_000.0
"""The highest workload rate, in client operations per virtual second, cluster-wide.

The simulator runs some 15,000 operations per real second, so the representative 60-second run
takes half a minute at this rate, and one at a rate far above it would practically never end. The
workload holds at most :attr:`Workload.max_presences` presences (200), so a higher rate would
only churn the same ones faster.
"""

_FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)


def _at_least(what: str, value: object, low: int) -> int:
    if type(value) is not int or value < low:
        raise ValueError(f"{what} must be an int >= {low}, not {value!r}")
    return value


def _duration(value: object) -> None:
    if finite("duration", value) <= 0:
        raise ValueError(f"duration must be a positive number of virtual seconds, not {value!r}")


def _interval(what: str, value: object) -> None:
    if finite(what, value) < MIN_PERIOD:
        raise ValueError(
            f"{what} must be at least {MIN_PERIOD:g} virtual seconds (a shorter one makes the run "
            f"take practically forever), not {value!r}"
        )


def _rate(value: object) -> None:
    if not 0 <= finite("rate", value) <= MAX_RATE:
        raise ValueError(
            f"rate must be from 0 (no workload) to {MAX_RATE:g} operations per virtual second, "
            f"not {value!r}"
        )


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
        rate: operations per virtual second, cluster-wide, from 0 to :data:`MAX_RATE`; 0 means
            no workload at all (a run of faults and heartbeats only).
        join / update / leave / disconnect: relative weights of track, update, untrack and
            untrack_conn (a disconnect removes every presence of one connection); finite,
            ``>= 0``, not all 0.
        topics: number of topics (at least 1); the first ``hot_topics`` get ``hot_share`` of the
            joins.
        keys: number of distinct presence keys (users), at least 1.
        conns_per_key: connections per key per node, at least 1.
        max_presences: joins turn into leaves above this many live presences (at least 1).
        unique_conns: prefix connection ids with the node name, so no two nodes ever use the
            same ``conn`` (by default they do, as independent servers numbering their sockets
            would; entries are identified by owner, conn, topic and key, so this must work).
        flaps: flap episodes started per virtual second, cluster-wide, from 0 (none, the
            default) to :data:`MAX_RATE`. An episode is one key of its own (``flap<n>``) in one
            topic with a leave grace period: its connection joins on a random node, stays a
            while, disconnects and reconnects with a new connection id (``<key>.<i>``), up to
            ``flap_cycles`` times, then half of the episodes leave for good and the others stay.
            Each reconnect comes either *within* the topic's grace period or *beyond* it, with a
            margin that makes the difference hold at every observer (see
            :meth:`Scenario.flap_window`); the ``flap_seen``, ``leave_lost`` and
            ``leave_repeated`` invariants judge what subscribers saw. The regular operations
            never touch these keys.
        flap_beyond: the share of reconnects that come beyond the grace period (a real leave,
            then a join); the others come within it (subscribers must see no leave).
        handover: the share of reconnects on another running node than the one the
            connection left (a handover); the others reconnect where they left.
        flap_cycles: the most disconnect/reconnect pairs of one episode (at least 1; each
            episode draws from 1 to this many).

    Raises:
        ValueError: a field is out of its range, or of the wrong type.
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
    flaps: float = 0.0
    flap_beyond: float = 0.3
    handover: float = 0.3
    flap_cycles: int = 3

    def __attrs_post_init__(self) -> None:
        _rate(self.rate)
        weights = [self.join, self.update, self.leave, self.disconnect]
        names = ("join", "update", "leave", "disconnect")
        for name, weight in zip(names, weights, strict=True):
            if finite(name, weight) < 0:
                raise ValueError(f"{name} must be a weight >= 0, not {weight!r}")
        if not any(weights):
            raise ValueError("at least one of join, update, leave and disconnect must weigh > 0")
        _at_least("topics", self.topics, 1)
        _at_least("hot_topics", self.hot_topics, 0)
        if not 0 <= finite("hot_share", self.hot_share) <= 1:
            raise ValueError(f"hot_share must be a share from 0 to 1, not {self.hot_share!r}")
        _at_least("keys", self.keys, 1)
        _at_least("conns_per_key", self.conns_per_key, 1)
        _at_least("max_presences", self.max_presences, 1)
        if type(self.unique_conns) is not bool:
            raise ValueError(f"unique_conns must be a bool, not {self.unique_conns!r}")
        if not 0 <= finite("flaps", self.flaps) <= MAX_RATE:
            raise ValueError(
                f"flaps must be from 0 (none) to {MAX_RATE:g} episodes per virtual second, "
                f"not {self.flaps!r}"
            )
        for name in ("flap_beyond", "handover"):
            if not 0 <= finite(name, getattr(self, name)) <= 1:
                raise ValueError(f"{name} must be a share from 0 to 1, not {getattr(self, name)!r}")
        _at_least("flap_cycles", self.flap_cycles, 1)


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
        keyring: for a ``restart`` only: the keyring the new incarnation (and every later one of
            these nodes) gets, replacing :attr:`Scenario.keyring`: a restart with a new
            configuration, as one roll of a key rotation does. ``None``: the node keeps its
            keyring. A restart that is skipped (the node is running) changes nothing. Only the
            default tracker factory applies it (a custom one builds its own trackers).

    Raises:
        ValueError: ``at`` is not a finite number ``>= 0``, ``kind`` is not a fault kind, or a
            ``keyring`` on a fault that is not a restart.
        TypeError: ``keyring`` is not a :class:`~presence_core.Keyring`.
    """

    at: float
    kind: FaultKind
    nodes: tuple[str, ...] = attrs.field(default=(), converter=_names)
    others: tuple[str, ...] = attrs.field(default=(), converter=_names)
    one_way: bool = False
    keyring: Keyring | None = None

    def __attrs_post_init__(self) -> None:
        if finite("at", self.at) < 0:
            raise ValueError(f"a fault's time must be >= 0, not {self.at!r}")
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {list(_FAULT_KINDS)}")
        if self.keyring is not None:
            _keyring("keyring", self.keyring)
            if self.kind != "restart":
                raise ValueError(f"only a restart takes a keyring, not a {self.kind}")

    def describe(self) -> str:
        """A one-line description (key ids, never secrets)."""
        if self.kind == "partition":
            arrow = "->" if self.one_way else "<->"
            return f"partition {','.join(self.nodes)} {arrow} {','.join(self.others)}"
        text = f"{self.kind} {','.join(self.nodes)}".strip()
        if self.keyring is not None:
            text += f" with keyring {describe_keyring(self.keyring)}"
        return text


def describe_keyring(keyring: Keyring) -> str:
    """``current-id [+accepted-id...]``: a keyring by its key ids (never the secrets)."""
    return " ".join([keyring.current.id, *(f"+{key.id}" for key in keyring.accepted)])


def _keyring(what: str, value: object) -> None:
    if not isinstance(value, Keyring):
        raise TypeError(f"{what} must be a Keyring or None, not {type(value).__name__}")


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
        keyring: every node's keyring (``None``: unsealed replication). With one, every
            message of the run is sealed and checked (see :class:`~presence_core.Keyring`); a
            ``restart`` fault may give a node another one (a key rotation's roll).
        topic_options: :class:`~presence_core.TopicOptions` by topic (a leave grace period,
            large-room batching), set on every node's tracker with
            :meth:`~presence_core.Tracker.configure_topic` each time it starts or restarts,
            before its first tick. The workload's topics are ``topic:0``, ``topic:1``...; a
            grace period for every topic is ``config.leave_grace_period``.

    Raises:
        ValueError: no nodes or two with one name; a fault naming an unknown node; a clock rate
            outside ``[0.5, 2.0]``; a ``duration`` that is not positive and finite; a
            ``check_interval`` or a ``config.broadcast_period`` that is not finite or is below
            :data:`MIN_PERIOD`; a network whose ``max_latency`` is not finite and ``>= 0``; a
            flap workload (:attr:`Workload.flaps`) with no workload topic whose grace period is
            longer than twice :attr:`Bounds.flap_slack` (see :meth:`flap_window`).
        TypeError: ``config``, ``network``, ``workload`` or ``keyring`` is not of its class, a
            ``topic_options`` key not a ``str`` or value not a
            :class:`~presence_core.TopicOptions`.
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
    keyring: Keyring | None = None
    topic_options: Mapping[str, TopicOptions] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        for topic, options in self.topic_options.items():
            if type(topic) is not str:
                raise TypeError(f"topic_options keys must be str topics, not {topic!r}")
            if not isinstance(options, TopicOptions):
                raise TypeError(
                    f"topic_options[{topic!r}] must be a TopicOptions, not {type(options).__name__}"
                )
        if self.keyring is not None:
            _keyring("keyring", self.keyring)
        if not self.nodes or len(set(self.nodes)) != len(self.nodes):
            raise ValueError("need at least one node, with distinct names")
        for what, value, cls in (
            ("config", self.config, TrackerConfig),
            ("network", self.network, NetworkModel),
            ("workload", self.workload, Workload),
        ):
            if not isinstance(value, cls):
                raise TypeError(f"{what} must be a {cls.__name__}, not {type(value).__name__}")
        _duration(self.duration)
        _interval("check_interval", self.check_interval)
        _interval("config.broadcast_period", self.config.broadcast_period)
        if finite("network.max_latency", self.network.max_latency) < 0:
            raise ValueError(f"network.max_latency must be >= 0, not {self.network.max_latency!r}")
        known = set(self.nodes)
        for fault in self.faults:
            unknown = sorted(set(fault.nodes + fault.others) - known)
            if unknown:
                raise ValueError(f"fault {fault!r} names unknown nodes {unknown}")
        for rate in self.clock_rates.values():
            if not 0.5 <= finite("a clock rate", rate) <= 2.0:
                raise ValueError(f"clock rates must be within [0.5, 2.0], not {rate!r}")
        if self.workload.flaps > 0 and not self.flap_topics():
            slack = self.bounds().flap_slack
            raise ValueError(
                f"a flap workload needs a workload topic whose leave grace period is longer than "
                f"{2 * slack:.3f} virtual seconds (twice Bounds.flap_slack, at the fastest "
                f"clock): set config.leave_grace_period, or a grace period in topic_options"
            )

    def bounds(self) -> Bounds:
        """The invariant bounds of this scenario."""
        return Bounds.derive(self)

    def grace_of(self, topic: str) -> float:
        """The leave grace period of ``topic`` on every node, in seconds of a node's clock: its
        options' if they set one, else ``config.leave_grace_period`` (0: none)."""
        options = self.topic_options.get(topic)
        if options is not None and options.leave_grace_period is not None:
            return options.leave_grace_period
        return self.config.leave_grace_period

    def large_rooms(self) -> frozenset[str]:
        """The topics in large-room mode (their diffs come batched, one per tick)."""
        return frozenset(t for t, options in self.topic_options.items() if options.large_room)

    def flap_window(self, topic: str) -> tuple[float, float]:
        """``(within, beyond)``: how long a key of ``topic`` may be gone and still be *within*
        its grace period at every observer, and how long it must be gone to be *beyond* it.

        A key gone for less than ``within`` virtual seconds (from the disconnect to the
        reconnect, on any nodes) must show subscribers no leave; gone for more than
        ``beyond``, its leave must reach every subscriber, once. In between, either is right.
        With ``G`` the grace period, ``S`` :attr:`Bounds.flap_slack` (the latest a change
        reaches an observer's subscribers):

        * ``within = G / fastest_rate - S``: an observer holds the leave from the moment it
          hears it (no earlier than the disconnect) for ``G`` of its clock, and hears the
          reconnect at most ``S`` after it happened;
        * ``beyond = G / slowest_rate + S``: it hears the leave at most ``S`` after the
          disconnect and delivers it when ``G`` of its clock has passed.

        ``within`` is negative when the grace period is too short for any reconnect to be
        within it everywhere (0: no grace period).
        """
        slack = self.bounds().flap_slack
        rates = list(self.clock_rates.values())
        grace = self.grace_of(topic)
        return grace / max([1.0, *rates]) - slack, grace / min([1.0, *rates]) + slack

    def flap_topics(self) -> tuple[str, ...]:
        """The workload's topics a flap episode may use: those whose :meth:`flap_window` leaves
        room for a reconnect within the grace period (``within`` longer than
        :attr:`Bounds.flap_slack`)."""
        slack = self.bounds().flap_slack
        topics = (f"topic:{i}" for i in range(self.workload.topics))
        return tuple(t for t in topics if self.flap_window(t)[0] > slack)


@attrs.frozen(kw_only=True)
class Bounds:
    """How long the checked invariants may take, in virtual seconds (see :meth:`derive`).

    ``join`` and ``crash`` are those of a topic without options; :meth:`join_of` and
    :meth:`crash_of` add what a topic's grace period and large-room mode add to them.
    """

    join: float
    crash: float
    settle: float
    grace: float = 0.0
    flap_slack: float = 0.0
    tick: float = 0.0
    """One broadcast period on the slowest clock: the longest a large room's change waits for
    the tick that lists it (0 when the scenario has no large room)."""
    graces: Mapping[str, float] = attrs.field(factory=dict)
    """Each topic's leave grace period on the slowest clock, for the topics whose grace period
    is not ``default_grace`` (those :attr:`Scenario.topic_options` sets one for)."""
    default_grace: float = 0.0
    """``config.leave_grace_period`` on the slowest clock: the grace period of other topics."""
    large_rooms: frozenset[str] = frozenset()
    """The topics in large-room mode (:meth:`Scenario.large_rooms`)."""

    def grace_of(self, topic: str) -> float:
        """``topic``'s leave grace period on the slowest clock (0: none)."""
        return self.graces.get(topic, self.default_grace)

    def join_of(self, topic: str) -> float:
        """How long a new presence of ``topic`` may take to be listed on every node:
        :attr:`join`, plus :attr:`tick` in a large room (its batch waits for the next tick)."""
        return self.join + (self.tick if topic in self.large_rooms else 0.0)

    def crash_of(self, topic: str) -> float:
        """How long a presence of ``topic`` may stay listed after its node stopped:
        :attr:`crash`, plus the topic's grace period (the leave is held that long), plus
        :attr:`tick` in a large room with a grace period (the leave, released at the end of
        the period, waits for the next batch; without one it goes in the very tick that found
        the node down)."""
        grace = self.grace_of(topic)
        if grace == 0:
            return self.crash
        return self.crash + grace + (self.tick if topic in self.large_rooms else 0.0)

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
        * ``grace``: the longest leave grace period of the scenario (the config's, or a topic's
          in :attr:`Scenario.topic_options`) on the slowest clock; 0 without one.
        * ``flap_slack = (2 + jitter) * B + 2 * L``: the latest a change of a key on one node
          reaches the subscribers of another when nothing disturbs them: the owner's next tick
          (``B``, plus the first tick's jitter, a quarter period), the wire (``L``, and ``L``
          more of margin), and in a large room the observer's next tick (``B``), which the
          batch waits for. The flap checks time their windows with it
          (:meth:`Scenario.flap_window`).
        * ``settle = join + crash``, plus ``grace + flap_slack`` with a grace period: time the
          cluster gets after the settle phase starts (a leave seen last still has its grace
          period to run before it reaches subscribers).
        * ``tick = B`` with a large room (0 without), and each topic's grace period on the
          slowest clock (``graces``, ``default_grace``): what :meth:`join_of` and
          :meth:`crash_of` add for a topic. A node lists a topic as its subscribers were shown
          it (:meth:`~presence_core.Tracker.entries`), so a presence of a crashed node stays
          listed while its leave is held, and a large room lists a change at its next tick.
        """
        config = scenario.config
        rate = min([1.0, *scenario.clock_rates.values()])
        period = config.broadcast_period / rate
        latency = scenario.network.max_latency
        join = (config.max_silent_periods + config.clock_sample_periods + 4) * period
        join += 3 * latency
        crash = (config.effective_down_period + 2 * config.broadcast_period) / rate + latency
        graces = [config.leave_grace_period]
        graces += [
            options.leave_grace_period
            for options in scenario.topic_options.values()
            if options.leave_grace_period is not None
        ]
        grace = max(graces) / rate
        slack = (2 + FIRST_TICK_JITTER) * period + 2 * latency
        settle = join + crash + (grace + slack if grace > 0 else 0.0)
        large = scenario.large_rooms()
        default_grace = config.leave_grace_period / rate
        topic_graces = {
            topic: options.leave_grace_period / rate
            for topic, options in sorted(scenario.topic_options.items())
            if options.leave_grace_period is not None
        }
        return cls(
            join=join,
            crash=crash,
            settle=settle,
            grace=grace,
            flap_slack=slack,
            tick=period if large else 0.0,
            graces=topic_graces,
            default_grace=default_grace,
            large_rooms=large,
        )


MIN_MESSAGE_BYTES = 1024
"""The smallest ``SimParams.max_message_bytes``: the workload's presences must still fit."""


def limits_for(max_message_bytes: int) -> dict[str, int]:
    """TrackerConfig limits for a message limit: a meta of an eighth, identities of a 96th each.

    One presence then takes at most ``5/16`` of a message plus the entry's overhead, within the
    half that :class:`~presence_core.TrackerConfig` requires.
    """
    return {
        "max_message_bytes": max_message_bytes,
        "max_meta_bytes": max_message_bytes // 8,
        "max_conn_bytes": max_message_bytes // 96,
        "max_topic_bytes": max_message_bytes // 96,
        "max_key_bytes": max_message_bytes // 96,
    }


@attrs.frozen(kw_only=True)
class SimParams:
    """A scenario described by a few numbers: what ``presence simulate`` takes on its command line.

    :meth:`scenario` expands them into a full :class:`Scenario` deterministically (the fault
    schedule and clock rates are drawn from ``seed``), and :meth:`cli_args` gives the flags that
    replay it.

    Attributes:
        seed: the master seed (an int).
        nodes: replicas, from 1 to 1000.
        duration: virtual seconds of workload and faults (positive, finite); the settle phase
            follows.
        faults: a fault mix, one of :data:`FAULT_MIXES`.
        rate: client operations per virtual second, from 0 (no workload) to :data:`MAX_RATE`.
        topics: topics of the workload, at least 1.
        keys: presence keys of the workload, at least 1.
        broadcast_period: every tracker's tick, at least :data:`MIN_PERIOD` seconds.
        sealed: authenticated replication: every node gets the same keyring, derived from the
            seed (one key, id ``sim``), so every message is sealed and checked.
        grace: every tracker's ``leave_grace_period`` in seconds (0, the default: none, as in
            Phoenix); finite and ``>= 0``.
        flaps: flap episodes per virtual second (:attr:`Workload.flaps`), from 0 (none) to
            :data:`MAX_RATE`; they need a ``grace`` longer than twice
            :attr:`Bounds.flap_slack`.
        large_rooms: the first this many topics (the hot ones) are in large-room mode
            (:class:`~presence_core.TopicOptions`), an int ``>= 0``.

    Raises:
        ValueError: a field is out of its range, or of the wrong type.
    """

    seed: int = 1
    nodes: int = 5
    duration: float = 60.0
    faults: str = "default"
    rate: float = 4.0
    topics: int = 8
    keys: int = 20
    broadcast_period: float = 0.5
    max_message_bytes: int | None = None
    """A message limit for every node (``None``: the config's default). Deltas and transfers
    larger than it travel in parts; the limits on one presence are scaled down to fit it (see
    :func:`limits_for`)."""
    sealed: bool = False
    grace: float = 0.0
    flaps: float = 0.0
    large_rooms: int = 0

    def __attrs_post_init__(self) -> None:
        if type(self.sealed) is not bool:
            raise ValueError(f"sealed must be a bool, not {self.sealed!r}")
        if finite("grace", self.grace) < 0:
            raise ValueError(f"grace must be a number of seconds >= 0, not {self.grace!r}")
        if not 0 <= finite("flaps", self.flaps) <= MAX_RATE:
            raise ValueError(
                f"flaps must be from 0 (none) to {MAX_RATE:g} episodes per virtual second, "
                f"not {self.flaps!r}"
            )
        if self.flaps > 0 and self.grace == 0:
            raise ValueError("flaps need a leave grace period: set grace too")
        _at_least("large_rooms", self.large_rooms, 0)
        if self.faults not in FAULT_MIXES:
            raise ValueError(f"unknown fault mix {self.faults!r}; one of {sorted(FAULT_MIXES)}")
        if self.max_message_bytes is not None and (
            type(self.max_message_bytes) is not int or self.max_message_bytes < MIN_MESSAGE_BYTES
        ):
            raise ValueError(
                f"max_message_bytes must be an int >= {MIN_MESSAGE_BYTES}, "
                f"not {self.max_message_bytes!r}"
            )
        if type(self.seed) is not int:
            raise ValueError(f"seed must be an int, not {self.seed!r}")
        if type(self.nodes) is not int or not 1 <= self.nodes <= 1000:
            raise ValueError(f"nodes must be an int from 1 to 1000, not {self.nodes!r}")
        _duration(self.duration)
        _rate(self.rate)
        _at_least("topics", self.topics, 1)
        _at_least("keys", self.keys, 1)
        _interval("broadcast_period", self.broadcast_period)

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
            ("--max-message-bytes", "max_message_bytes"),
            ("--grace", "grace"),
            ("--flaps", "flaps"),
            ("--large-rooms", "large_rooms"),
        ):
            value = getattr(self, name)
            if value != getattr(defaults, name):
                args += [flag, str(value)]
        if self.sealed:
            args.append("--sealed")
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
            leave_grace_period=self.grace,
        )
        if self.max_message_bytes is not None:
            limits: dict[str, Any] = limits_for(self.max_message_bytes)
            config = attrs.evolve(config, **limits)
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
        workload = Workload(rate=self.rate, topics=self.topics, keys=self.keys, flaps=self.flaps)
        large = TopicOptions(large_room=True)
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
            keyring=sim_keyring(self.seed) if self.sealed else None,
            topic_options={f"topic:{i}": large for i in range(min(self.large_rooms, self.topics))},
        )


def sim_keyring(seed: int) -> Keyring:
    """The keyring of a sealed simulated cluster (:attr:`SimParams.sealed`): one key, id
    ``sim``, its secret a hash of the seed (a simulation needs no secrecy, only the real work of
    sealing every message and checking it)."""
    return Keyring(Key("sim", hashlib.sha256(f"presence-sim-key:{seed}".encode()).digest()))


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
