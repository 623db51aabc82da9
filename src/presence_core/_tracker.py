"""Tracker: one Phoenix.Tracker node as a sans-IO state machine (SPEC §1-§3).

Theory of operation
===================

Three things drive a tracker, and each takes the current time as ``now`` (monotonic seconds on the
adapter's clock):

* local commands: :meth:`Tracker.track`, :meth:`~Tracker.update`, :meth:`~Tracker.untrack`,
  :meth:`~Tracker.untrack_conn`, :meth:`~Tracker.graceful_permdown`;
* messages from other replicas: :meth:`Tracker.receive`;
* the timer: :meth:`Tracker.handle_timer`, due at :meth:`Tracker.next_deadline`.

Diffs reach the application as Phoenix emits them, one per change, unless the topic has options
(:meth:`Tracker.configure_topic`, ``_rooms``): a leave grace period holds a key's last leave back,
and a large room gathers its diffs into one per tick.

Everything the tracker wants done comes out of two queues the adapter drains after every call:
:meth:`Tracker.next_event` (presence diffs and replica liveness changes, for the application) and
:meth:`Tracker.messages_to_send` (for the transport). The tracker never reads a clock, never draws
randomness except from the ``rng`` it was given, never does I/O and never calls back.

Every tick (each ``broadcast_period``), in Phoenix's order: broadcast the pending delta (or, after
``max_silent_periods`` quiet ticks, an empty heartbeat); every ``clock_sample_periods`` ticks ask
the replicas whose clocks are not dominated for a transfer; then check every remote replica's
silence against the down and permdown periods (see ``_liveness``).

Hostile peers
=============

Every message from another replica is checked before it changes anything (``docs/security.rst``):

* with a :class:`~presence_core.Keyring`, it must be sealed by a key we hold, by the replica it
  claims to come from, and never seen before (``_security``);
* its bytes must decode within the configured limits (``DecodeLimits``, from the config);
* a transfer reply must answer one of our latest requests, from the replica we asked; a
  transfer request must come from a replica we know (up or down), at most once per broadcast
  period;
* what it claims about third replicas is cut at what they announced themselves (``_claims``);
* it may not make us know more than ``max_replicas`` replicas or park more than
  ``max_cloud_dots`` dots.

A message that fails a check is not applied at all: it is counted in :meth:`Tracker.stats` and
reported as a :class:`~presence_core.MessageRejected` event (undecodable bytes also raise
:class:`~presence_core.RemoteProtocolError`, as they always did).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import overload

import attrs

from ._claims import clamp_clock, clamp_payload
from ._codec import MAX_WIRE_INT, DecodeLimits, decode_message
from ._config import TrackerConfig
from ._deltas import DeltaGenerations
from ._errors import LimitExceeded, LocalProtocolError, NoPresence, RemoteProtocolError, shown
from ._events import Event, PresenceDiff, ReplicaDown, ReplicaPermdown, ReplicaUp, Unsendable
from ._lifecycle import Lifecycle, LifecycleInput, advance
from ._liveness import LivenessAction, LivenessInput, ReplicaStatus, transition
from ._messages import (
    GracefulPermdown,
    Heartbeat,
    Message,
    Outbound,
    TransferAck,
    TransferRequest,
)
from ._meta import JSONValue, Meta, copy_meta, json_fits, thaw_meta
from ._parts import encode_parts
from ._payloads import Delta, Entry, MergeResult, Snapshot, SnapshotPart
from ._presence import PresenceMap, group
from ._refs import RefGenerator
from ._rooms import Occupancy, PresencePage, Rooms, TopicOptions, check_page_args, page_of
from ._security import (
    MAGIC,
    REPLAY_MEMORY,
    AuthenticationError,
    Keyring,
    MessageRejected,
    RejectReason,
    ReplayWindow,
    seal,
    seal_overhead,
    unseal,
)
from ._state import ReplicaState
from ._vclock import Context, ReplicaRef, dominates

__all__ = ["MetaUpdater", "ReplicaInfo", "Tracker", "TrackerStats"]

MetaUpdater = Callable[[dict[str, JSONValue]], Meta]
"""A function that receives a mutable deep copy of the current meta and returns the new one."""

_RETIRED_MEMORY = 4096
"""How many replica names' retired incarnations are remembered (the oldest are forgotten first):
a heartbeat of an incarnation that left gracefully or was replaced by a newer one must not
bring it back."""

MAX_TRANSFER_REQUESTS = 8
"""The most transfer requests one clock sample sends (the replicas that know the most first):
peers with incomparable clocks cannot make a node ask every one of them at once."""

MAX_ASKED = 4
"""How many of the latest transfer requests to one replica a reply is still taken for."""

MAX_PARTS = 1 << 20
"""The most parts one message may claim to be sent in."""

_CONTROL = re.compile("[\x00-\x1f]")
"""A control character, which replica names may not hold."""

_JITTER = 0.25

_CLOCK_ROOM = 24
"""Bytes of ``[name, vsn, clock]`` in an encoded clock besides the name and the vsn: brackets,
commas and a clock of up to 19 digits."""


def _clock_bytes(ref: ReplicaRef) -> int:
    """The most bytes ``ref`` takes in one encoded clock."""
    name = json.dumps(ref.name, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return len(name) + len(str(ref.vsn)) + _CLOCK_ROOM


"""The first tick comes at a random point of the first quarter period (Phoenix's stutter)."""


def _check_identity(config: TrackerConfig, conn: object, topic: object, key: object) -> None:
    if (
        type(conn) is str
        and type(topic) is str
        and type(key) is str
        and conn.isascii()
        and topic.isascii()
        and key.isascii()
        and len(conn) <= config.max_conn_bytes
        and len(topic) <= config.max_topic_bytes
        and len(key) <= config.max_key_bytes
    ):
        return  # the usual case, at a glance: ASCII is a byte a character, and never a surrogate
    for what, value, limit in (
        ("conn", conn, config.max_conn_bytes),
        ("topic", topic, config.max_topic_bytes),
        ("key", key, config.max_key_bytes),
    ):
        if type(value) is not str:
            raise LocalProtocolError(f"{what} must be a str, not {type(value).__name__}")
        size = len(value) if value.isascii() else len(_check_unicode(value, what))
        if size > limit:
            raise LimitExceeded(f"{what} is {size} bytes, over max_{what}_bytes={limit}")


def _check_topic(topic: object) -> None:
    if type(topic) is not str:
        raise LocalProtocolError(f"topic must be a str, not {type(topic).__name__}")


def _check_unicode(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate: fine in a Python str, impossible to send in UTF-8.
        raise LocalProtocolError(f"{what} is not valid Unicode (a lone surrogate)") from None


def _is_time(value: object) -> bool:
    # Subclasses of float (numpy.float64) are fine; bool is an int subclass but not a time.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float: no clock reads that
        return False


class _Assembly:
    """The parts of one message sent in parts, as they arrive: which ones, and what they cover.

    Each part is merged when it arrives (:meth:`ReplicaState.merge_part`); the dots the parts
    cover are handed to :meth:`ReplicaState.complete_parts` once the last one is in.

    Only what every part could speak for becomes seen then. A part's entries of an owner we did
    not know yet were ignored, and those beyond the owner's bound were cut, so the whole
    context is held, per owner, to the lowest of the bounds the parts were merged under
    (nothing at all for an owner unknown to any part), and a part's cloud dots count only for
    owners known when it arrived. Without that, the dot of an entry that a part could not
    accept would become seen, and the entry lost for good.
    """

    __slots__ = ("caps", "clouds", "context", "count", "dots", "key", "received", "sender")

    def __init__(self, sender: ReplicaRef, key: object, count: int) -> None:
        self.sender = sender
        self.key = key
        self.count = count
        self.received: set[int] = set()
        self.clouds: dict[ReplicaRef, set[int]] = {}
        self.dots = 0  # how many dots ``clouds`` holds
        self.context: Mapping[ReplicaRef, int] = {}
        self.caps: dict[ReplicaRef, int] = {}  # per owner, the lowest bound of any part

    def add(self, part: int, payload: Delta | SnapshotPart, caps: Mapping[ReplicaRef, int]) -> None:
        """Count one part in (a duplicate changes nothing).

        ``caps``: per owner we know, the highest of its dots this part could be merged for.
        """
        if part in self.received:
            return
        self.received.add(part)
        for owner, dots in payload.clouds.items():
            if owner not in caps:
                continue  # unknown when it arrived: its entries there were not taken
            held = self.clouds.setdefault(owner, set())
            self.dots -= len(held)
            held.update(dots)
            self.dots += len(held)
        if isinstance(payload, SnapshotPart):
            mine = self.caps
            for owner in payload.context:
                cap = caps.get(owner, 0)
                mine[owner] = min(cap, mine.get(owner, cap))
            self.context = payload.context

    def seen_context(self) -> dict[ReplicaRef, int]:
        """The whole context, held to what every part could speak for."""
        caps = self.caps
        return {owner: min(clock, caps.get(owner, 0)) for owner, clock in self.context.items()}

    @property
    def complete(self) -> bool:
        """True once every part is in."""
        return len(self.received) == self.count


class _Request:
    """The transfer requests we sent one replica, until a reply to one has fully arrived.

    ``heard`` is set when a request is sent and whenever a part of a reply arrives, and cleared
    at every clock sample: a request whose reply went quiet for a whole sampling period is asked
    again, one still streaming in is not (a large state comes in many parts).

    Asking again does not disown the earlier requests: the replica may still be encoding or
    sending its reply to one of them (a large state takes seconds), and refusing that reply
    would make a slow transfer start over for ever. The last :data:`MAX_ASKED` request ids are
    waited for, each with its own parts; the first reply to complete ends them all.
    """

    __slots__ = ("asked", "heard", "ref")

    def __init__(self, ref: ReplicaRef) -> None:
        self.ref = ref
        self.asked: dict[int, _Assembly | None] = {}  # request id -> its reply's parts so far
        self.heard = True

    @property
    def request_id(self) -> int:
        """The latest request id."""
        return next(reversed(self.asked))

    def ask(self, request_id: int) -> None:
        """Wait for a reply to ``request_id`` too (the oldest beyond MAX_ASKED is forgotten)."""
        self.asked[request_id] = None
        while len(self.asked) > MAX_ASKED:
            del self.asked[next(iter(self.asked))]
        self.heard = True


class ReplicaInfo:
    """What this tracker knows about one remote replica (a read-only record).

    Attributes:
        ref: the incarnation last heard from.
        status: UP or DOWN.
        last_heard: ``now`` of the last heartbeat received from it.
        clock: the highest clock of its own it announced (its number of events).
        lag: how many of those events this tracker has not seen yet (``clock`` minus what we hold
            of it): a replica that stays behind for long points at lost messages.
    """

    __slots__ = ("clock", "lag", "last_heard", "ref", "status")

    def __init__(
        self,
        ref: ReplicaRef,
        last_heard: float,
        status: ReplicaStatus,
        clock: int = 0,
        lag: int = 0,
    ) -> None:
        self.ref = ref
        self.last_heard = last_heard
        self.status = status
        self.clock = clock
        self.lag = lag

    def _key(self) -> tuple[object, ...]:
        return (self.ref, self.last_heard, self.status, self.clock, self.lag)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplicaInfo):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ReplicaInfo(ref={self.ref!r}, status={self.status.name}, "
            f"last_heard={self.last_heard!r}, clock={self.clock}, lag={self.lag})"
        )


class _Record:
    """The tracker's own record of one remote replica (see :class:`ReplicaInfo`)."""

    __slots__ = ("answered", "clock", "last_heard", "ref", "sampled", "status")

    def __init__(self, ref: ReplicaRef, last_heard: float, status: ReplicaStatus) -> None:
        self.ref = ref
        self.last_heard = last_heard
        self.status = status
        self.clock = 0  # the highest clock of its own it announced
        self.answered: float | None = None  # ``now`` of our last transfer reply to it
        # Its latest heartbeat clock, as sent (``None`` once sampled or if it told us nothing)
        self.sampled: Mapping[ReplicaRef, int] | None = None


@attrs.frozen(kw_only=True)
class TrackerStats:
    """Counters and gauges of one tracker, for operators (:meth:`Tracker.stats`).

    Counters only grow over the tracker's life; gauges are read when the snapshot is taken.

    Attributes:
        received: messages handed to :meth:`Tracker.receive`.
        rejected: messages refused, by reason (reasons never seen are absent).
        claims_cut: accepted payloads whose claims about third replicas went beyond what those
            announced, and were cut (``docs/security.rst``).
        transfer_requests_sent: transfer requests this tracker sent.
        transfer_requests_answered: transfer requests it answered.
        transfers_received_delta: transfer replies fully received that held a delta generation.
        transfers_received_full: transfer replies fully received that held the whole state.
        unsendable: messages dropped because even their parts did not fit.
        replicas_up: remote replicas known to be up (gauge).
        replicas_down: remote replicas known to be down, not yet permanently (gauge).
        entries: presences stored, visible or hidden (gauge).
        cloud_dots: dots parked beyond a gap (gauge; bounded by ``max_cloud_dots``).
        leaves_held: keys whose last leave is held back for a grace period (gauge).
    """

    received: int
    rejected: Mapping[RejectReason, int]
    claims_cut: int
    transfer_requests_sent: int
    transfer_requests_answered: int
    transfers_received_delta: int
    transfers_received_full: int
    unsendable: int
    replicas_up: int
    replicas_down: int
    entries: int
    cloud_dots: int
    leaves_held: int

    @property
    def rejected_total(self) -> int:
        """Every message refused, whatever the reason."""
        return sum(self.rejected.values())


class Tracker:
    """One presence tracker node.

    Args:
        config: timing and size options (Phoenix's defaults).
        replica: this node's identity; the adapter picks the incarnation ``vsn`` (for example from
            the wall clock at start) so that a restart is a new replica.
        rng: the only source of randomness (the jitter of the first tick). Required: pass
            ``random.Random()`` in production and a seeded one in tests.
        keyring: seal every message with ``keyring.current`` and accept only messages sealed
            with one of its keys, each once (``docs/security.rst``). ``None`` (the default):
            messages travel unsealed, and anything that can publish on the bus is a member.

    Raises:
        LocalProtocolError: an argument has the wrong type, or ``replica`` cannot be sent: its
            name is not valid Unicode (a lone surrogate), longer than
            ``config.max_replica_name_bytes``, or its ``vsn`` is above the wire's ``2**63 - 1``.
    """

    def __init__(
        self,
        *,
        config: TrackerConfig,
        replica: ReplicaRef,
        rng: random.Random,
        keyring: Keyring | None = None,
    ) -> None:
        if not isinstance(config, TrackerConfig):
            raise LocalProtocolError(f"config must be a TrackerConfig, not {type(config).__name__}")
        if not isinstance(replica, ReplicaRef):
            raise LocalProtocolError(f"replica must be a ReplicaRef, not {type(replica).__name__}")
        # Every message carries the replica: refuse one that no message could carry.
        name_bytes = len(_check_unicode(replica.name, "replica.name"))
        if _CONTROL.search(replica.name):
            raise LocalProtocolError(
                "replica.name holds a control character: names may not (JSON would write "
                "each one as six bytes in every clock)"
            )
        if name_bytes > config.max_replica_name_bytes:
            raise LimitExceeded(
                f"replica.name is {name_bytes} bytes, over "
                f"max_replica_name_bytes={config.max_replica_name_bytes}"
            )
        if replica.vsn > MAX_WIRE_INT:
            raise LocalProtocolError(
                f"replica.vsn is {shown(replica.vsn)}, above 2**63 - 1, "
                "the largest the wire carries"
            )
        if not isinstance(rng, random.Random):
            raise LocalProtocolError(f"rng must be a random.Random, not {type(rng).__name__}")
        if keyring is not None and not isinstance(keyring, Keyring):
            raise LocalProtocolError(f"keyring must be a Keyring, not {type(keyring).__name__}")
        self.config = config
        self.replica = replica
        self._rng = rng
        self._state = ReplicaState(replica)
        self._generations = DeltaGenerations(config.max_delta_sizes)
        self._refs = RefGenerator(replica)
        self._records: dict[str, _Record] = {}
        # The bytes our clock takes at most, over us and every replica with a record.
        self._clock_size = _clock_bytes(replica)
        self._events: deque[Event] = deque()
        self._rooms = Rooms(config.leave_grace_period)
        self._outbox: list[Outbound] = []
        self._last_now: float | None = None
        self._next_tick: float | None = None  # set while RUNNING only
        self._silent_periods = config.max_silent_periods
        self._sample_countdown = config.clock_sample_periods
        self._request_ids = 0
        self._requests: dict[str, _Request] = {}
        # Per sender, the heartbeat in parts being received (a newer one replaces it).
        self._heartbeat_parts: dict[str, _Assembly] = {}
        self._lifecycle = Lifecycle.NEW
        # Per name, the highest incarnation retired on purpose (it left gracefully, or a newer
        # one replaced it): a heartbeat of theirs still in flight must not bring them back.
        # Bounded; the oldest are forgotten first. (A replica permanently down after a silence
        # is not retired: after a long netsplit the same incarnation may come back, as in
        # Phoenix.)
        self._retired: dict[str, int] = {}
        self._decode_limits = DecodeLimits(
            max_meta_bytes=config.max_meta_bytes,
            max_conn_bytes=config.max_conn_bytes,
            max_topic_bytes=config.max_topic_bytes,
            max_key_bytes=config.max_key_bytes,
            max_name_bytes=config.max_replica_name_bytes,
            max_replicas=config.max_replicas + 1,  # a peer's clock names itself too
        )
        self._keyring = keyring
        self._sealed = 0  # the counter of the last message we sealed
        self._windows: dict[ReplicaRef, ReplayWindow] = {}  # per origin, least recent first
        self._in_callback = False
        self._received = 0
        self._rejected: dict[RejectReason, int] = {}
        self._claims_cut = 0
        self._requests_sent = 0
        self._requests_answered = 0
        self._transfers_delta = 0
        self._transfers_full = 0
        self._unsendable = 0

    def __repr__(self) -> str:
        return f"<Tracker {self.replica!r} presences={len(self._state)} peers={len(self._records)}>"

    # ------------------------------------------------------------------ time

    def _check_now(self, now: float) -> float:
        if self._in_callback:
            raise LocalProtocolError(
                "a re-entrant call from inside an update callback: the callback must only "
                "compute the new meta from the one it is given"
            )
        if not _is_time(now):
            raise LocalProtocolError(f"now must be a finite number of seconds, not {shown(now)}")
        if self._last_now is not None and now < self._last_now:
            raise LocalProtocolError(
                f"time went backwards: now={now!r} after now={self._last_now!r}"
            )
        return float(now)

    def _commit_now(self, now: float) -> None:
        self._last_now = now
        held_until = self._rooms.next_deadline
        if held_until is not None and held_until <= now:
            self._events.extend(self._rooms.expire(now))
        if self._lifecycle is Lifecycle.NEW:
            self._lifecycle = advance(Lifecycle.NEW, LifecycleInput.FIRST_NOW)
            period = self.config.broadcast_period
            self._next_tick = now + self._rng.random() * _JITTER * period

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` wants to be called next (absolute, on the ``now`` clock):
        the next tick, or a held leave's end of grace if that comes first.

        ``None`` before the first call that takes ``now`` (the clock starts then) and after
        :meth:`graceful_permdown`. A pure query: it changes nothing.
        """
        tick = self._next_tick
        held_until = self._rooms.next_deadline
        if tick is None or held_until is None or tick <= held_until:
            return tick
        return held_until

    def handle_timer(self, *, now: float) -> None:
        """Run the tick if it is due, and deliver the held leaves whose grace period is over;
        harmless when called early, late, twice or spuriously.

        The first call (or any call taking ``now``) starts the clock: the first tick comes within
        a quarter of a period. A late call runs one tick, and the next comes a period later.
        Afterwards drain :meth:`next_event` and :meth:`messages_to_send` and re-read
        :meth:`next_deadline`.

        Raises:
            LocalProtocolError: ``now`` is not a finite number or is earlier than a previous one.
        """
        now = self._check_now(now)
        self._commit_now(now)
        due = self._next_tick  # None unless running
        if due is None or now < due:
            return
        self._tick(now)
        self._next_tick = now + self.config.broadcast_period

    def _tick(self, now: float) -> None:
        config = self.config
        state = self._state
        if state.has_delta():
            delta = state.take_delta()
            self._broadcast(Heartbeat(sender=self.replica, clock=state.up_context, delta=delta))
            self._silent_periods = 0
            self._push_generation_delta(delta)
        elif self._silent_periods >= config.max_silent_periods:
            self._broadcast(Heartbeat(sender=self.replica, clock=state.up_context))
            self._silent_periods = 0
        else:
            self._silent_periods += 1

        if self._sample_countdown <= 1:
            targets, behind = self._sample_clocks()
            for name, pending in sorted(self._requests.items()):
                if pending.ref in targets and pending.heard:
                    targets.remove(pending.ref)  # its reply may still be on its way
                elif pending.ref in behind and not pending.heard:
                    # Quiet for a whole sample, and its clock says it knows nothing more: a
                    # lost part is not waited for for ever. (A replica that sent no clock is
                    # still waited for: a large reply can take it seconds to encode.)
                    del self._requests[name]
                pending.heard = False
            for ref in targets:
                self._request_transfer(ref)
            self._sample_countdown = config.clock_sample_periods
        else:
            self._sample_countdown -= 1

        down_period = config.effective_down_period
        # Sorted for determinism; a transition only ever removes the record it is applied to.
        for name in sorted(self._records):
            record = self._records[name]
            silence = now - record.last_heard
            if silence > config.permdown_period:
                self._apply(record, LivenessInput.SILENCE_PERMDOWN_PERIOD)
            elif silence > down_period:
                self._apply(record, LivenessInput.SILENCE_DOWN_PERIOD)
        self._events.extend(self._rooms.flush())  # large rooms: one diff per tick

    def _sample_clocks(self) -> tuple[list[ReplicaRef], set[ReplicaRef]]:
        """Whom to ask for a transfer: the replicas that know what we do not (SPEC §3.5).

        Returns the replicas to ask, and those whose latest clock our own dominates.

        Of the clocks heard since the last sample (the latest per replica, its claims about
        third replicas cut now, at what they announced by now), those our own clock does not
        dominate; of those, the ones no other
        dominates; at most :data:`MAX_TRANSFER_REQUESTS` of them, those that know the most
        first. Phoenix folds every heartbeat's clock into a set as it arrives, which costs
        O(N^2) per heartbeat when N peers send incomparable clocks; sampling once per period
        costs O(N) per clock, and the pairwise pass is over a bounded few.
        """
        own = self._state.up_context
        bounds = {
            ref: bound for ref in self._state.context if (bound := self._bound(ref)) is not None
        }
        ahead: list[tuple[int, ReplicaRef, Context]] = []
        behind: set[ReplicaRef] = set()
        for record in self._records.values():
            sampled = record.sampled
            record.sampled = None
            if sampled is None:
                continue
            clock = clamp_clock(sampled, record.ref, bounds)
            if dominates(own, clock):
                behind.add(record.ref)
                continue
            excess = sum(max(0, value - own.get(replica, 0)) for replica, value in clock.items())
            ahead.append((-excess, record.ref, clock))
        ahead.sort(key=lambda item: (item[0], item[1]))
        chosen = ahead[:MAX_TRANSFER_REQUESTS]
        kept = [
            ref
            for i, (_, ref, clock) in enumerate(chosen)
            if not any(
                j != i and dominates(other, clock) and (not dominates(clock, other) or j < i)
                for j, (_, _, other) in enumerate(chosen)
            )
        ]
        return sorted(kept), behind

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        """The next event for the application, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[Outbound]:
        """Every message queued for other replicas, oldest first (the queue is emptied)."""
        outbox, self._outbox = self._outbox, []
        return outbox

    def _broadcast(self, message: Message) -> None:
        self._send(message, None)

    def _send(self, message: Message, to: str | None) -> None:
        """Queue ``message`` encoded, in parts if it is too large for one; report it if neither.

        With a keyring, each part is sealed, and the seal's bytes are kept out of the budget.
        """
        keyring = self._keyring
        budget = self.config.max_message_bytes
        if keyring is not None:
            budget -= seal_overhead(self.replica, keyring.current)
        try:
            if budget < 1:
                raise LimitExceeded(f"max_message_bytes leaves no room for the seal ({budget})")
            parts = encode_parts(message, max_bytes=budget)
        except LimitExceeded as exc:
            self._unsendable += 1
            self._events.append(Unsendable(message=message, to=to, reason=exc.message))
            return
        if keyring is None:
            self._outbox.extend(Outbound(message=part, data=data, to=to) for part, data in parts)
            return
        for part, data in parts:
            self._sealed += 1
            sealed = seal(data, key=keyring.current, origin=self.replica, counter=self._sealed)
            self._outbox.append(Outbound(message=part, data=sealed, to=to))

    def _reject(self, reason: RejectReason, sender: ReplicaRef | None, detail: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._events.append(MessageRejected(reason=reason, sender=sender, detail=detail))

    def _emit_merge(self, result: MergeResult) -> None:
        # Entries of a replica we consider down are hidden: their joins and leaves are not news
        # (its leaves went out when it went down; a join now would be a ghost in every client).
        is_down = self._state.is_down
        self._emit_diff(
            tuple(e for e in result.joins if not is_down(e.owner)),
            tuple(e for e in result.leaves if not is_down(e.owner)),
        )

    def _emit_diff(self, joins: tuple[Entry, ...], leaves: tuple[Entry, ...]) -> None:
        by_topic: dict[str, tuple[list[Entry], list[Entry]]] = {}
        for entry in joins:
            by_topic.setdefault(entry.topic, ([], []))[0].append(entry)
        for entry in leaves:
            by_topic.setdefault(entry.topic, ([], []))[1].append(entry)
        for topic in sorted(by_topic):
            topic_joins, topic_leaves = by_topic[topic]
            self._emit_topic(topic, topic_joins, topic_leaves)

    def _emit_topic(self, topic: str, joins: Sequence[Entry], leaves: Sequence[Entry]) -> None:
        """One topic's change, to the application: at once (Phoenix), or through its room."""
        rooms = self._rooms
        if not rooms.active:
            self._events.append(PresenceDiff(topic=topic, joins=joins, leaves=leaves))
            return
        now = self._last_now
        assert now is not None  # every change comes after _commit_now
        diff = rooms.deliver(topic, joins, leaves, now, lambda: self._state.get_by_topic(topic))
        if diff is not None:
            self._events.append(diff)

    # ------------------------------------------------------------------ local commands

    def _check_running(self) -> None:
        if self._lifecycle is Lifecycle.STOPPED:
            raise LocalProtocolError("the tracker was stopped by graceful_permdown")

    def _checked_meta(self, meta: object, *, ref: str, prev: str | None) -> dict[str, JSONValue]:
        """``meta`` copied as it will be stored, with its refs, within ``max_meta_bytes``."""
        stored = copy_meta(meta, phx_ref=ref, phx_ref_prev=prev)
        limit = self.config.max_meta_bytes
        if json_fits(stored, limit):
            return stored
        try:
            text = json.dumps(stored, separators=(",", ":"), ensure_ascii=False)
        except ValueError as exc:  # an int over Python's int-to-str digit limit
            raise LocalProtocolError(f"meta cannot be written as JSON: {exc}") from None
        size = len(_check_unicode(text, "meta"))
        if size > limit:
            raise LimitExceeded(f"meta is {size} bytes as JSON, over max_meta_bytes={limit}")
        return stored

    def track(self, *, conn: str, topic: str, key: str, meta: Meta, now: float) -> str:
        """Track connection ``conn`` as present under ``key`` in ``topic``.

        The stored meta is a copy of ``meta`` with a fresh ``phx_ref``. Emits one
        :class:`PresenceDiff` with the join; other replicas learn of it on the next tick.

        Returns:
            The new ``phx_ref``.

        Raises:
            AlreadyTracked: this replica already tracks ``(conn, topic, key)``.
            LimitExceeded: the meta is larger than ``config.max_meta_bytes``, or ``conn``,
                ``topic`` or ``key`` is longer than its limit (``config.max_conn_bytes``...).
            LocalProtocolError: a wrong argument type, a meta JSON cannot carry, time going
                backwards, or a stopped tracker.
        """
        now = self._check_now(now)
        self._check_running()
        _check_identity(self.config, conn, topic, key)
        ref = self._refs.peek()
        stored = self._checked_meta(meta, ref=ref, prev=None)
        entry = self._state.join(conn, topic, key, stored)  # raises AlreadyTracked first
        self._refs.advance()
        self._commit_now(now)
        self._emit_topic(topic, (entry,), ())
        return ref

    def update(
        self, *, conn: str, topic: str, key: str, meta: Meta | MetaUpdater, now: float
    ) -> str:
        """Replace the meta of a tracked presence (a full replacement, never a merge).

        ``meta`` is the new meta, or a function given a mutable deep copy of the current meta
        (with its ``phx_ref``) that returns the new one; it must not call this tracker. The
        stored meta gets a fresh ``phx_ref`` and ``phx_ref_prev`` set to the old ref. Emits one
        :class:`PresenceDiff` holding the new entry as a join and the old one as a leave.

        Returns:
            The new ``phx_ref``.

        Raises:
            NoPresence: ``(conn, topic, key)`` is not tracked here.
            LimitExceeded: the new meta is larger than ``config.max_meta_bytes``, or an identity
                field is longer than its limit.
            LocalProtocolError: as for :meth:`track`, or the function returned something that is
                not a JSON object.
        """
        now = self._check_now(now)
        self._check_running()
        _check_identity(self.config, conn, topic, key)
        old = self._state.get(conn, topic, key)
        if old is None:
            raise NoPresence(conn, topic, key)
        if callable(meta):
            self._in_callback = True  # the callback must not call back into this tracker
            try:
                new_meta = meta(thaw_meta(old.meta))
            finally:
                self._in_callback = False
        else:
            new_meta = meta
        prev = old.meta.get("phx_ref")
        ref = self._refs.peek()
        stored = self._checked_meta(new_meta, ref=ref, prev=prev if isinstance(prev, str) else None)
        self._refs.advance()
        _, new = self._state.update(conn, topic, key, stored)
        self._commit_now(now)
        self._emit_topic(topic, (new,), (old,))
        return ref

    def untrack(self, *, conn: str, topic: str, key: str, now: float) -> None:
        """Stop tracking ``(conn, topic, key)``; a no-op when it is not tracked.

        Emits one :class:`PresenceDiff` with the leave.

        Raises:
            LocalProtocolError: a wrong argument type, time going backwards, a stopped tracker.
        """
        now = self._check_now(now)
        self._check_running()
        entry = self._state.leave(conn, topic, key)
        self._commit_now(now)
        if entry is not None:
            self._emit_topic(topic, (), (entry,))

    def untrack_conn(self, *, conn: str, now: float) -> None:
        """Stop tracking every presence of connection ``conn`` (it disconnected).

        Emits one :class:`PresenceDiff` per topic it was in, topics in sorted order.

        Raises:
            LocalProtocolError: a wrong argument type, time going backwards, a stopped tracker.
        """
        now = self._check_now(now)
        self._check_running()
        leaves = self._state.leave_conn(conn)
        self._commit_now(now)
        self._emit_diff((), leaves)

    def graceful_permdown(self, *, now: float) -> None:
        """Announce this replica's departure and stop.

        Peers drop our presences at once instead of after the down and permdown periods. No
        leaves are emitted locally; what was held back (leaves in their grace period, the batches
        of large rooms) is delivered now. Afterwards commands raise, :meth:`receive` and
        :meth:`handle_timer` do nothing, and :meth:`next_deadline` is ``None``.

        Raises:
            LocalProtocolError: time going backwards, or the tracker is already stopped.
        """
        now = self._check_now(now)
        self._check_running()
        self._last_now = now
        self._events.extend(self._rooms.release_all())
        self._broadcast(GracefulPermdown(sender=self.replica))
        self._lifecycle = advance(self._lifecycle, LifecycleInput.GRACEFUL_PERMDOWN)
        self._next_tick = None

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> ReplicaState:
        """The underlying CRDT, for inspection (mutating it directly voids every guarantee)."""
        return self._state

    @property
    def stopped(self) -> bool:
        """True after :meth:`graceful_permdown`."""
        return self._lifecycle is Lifecycle.STOPPED

    @property
    def lifecycle(self) -> Lifecycle:
        """Where this tracker is in its life: new, running or stopped.

        It changes only through :data:`~presence_core.LIFECYCLE`.
        """
        return self._lifecycle

    @property
    def keyring(self) -> Keyring | None:
        """The keys messages are sealed and checked with, or ``None`` (see :meth:`set_keyring`)."""
        return self._keyring

    def set_keyring(self, keyring: Keyring) -> None:
        """Replace the keyring while running (a key rotation without a restart).

        Messages sealed from now on use ``keyring.current``; messages received are checked
        against the new keys. A tracker started without a keyring cannot start sealing: its
        peers would refuse its messages, or it theirs; restart it with one instead.

        Raises:
            LocalProtocolError: ``keyring`` is not a Keyring, the tracker has none, or the call
                comes from inside an update callback.
        """
        if self._in_callback:
            raise LocalProtocolError("a re-entrant call from inside an update callback")
        if not isinstance(keyring, Keyring):
            raise LocalProtocolError(f"keyring must be a Keyring, not {type(keyring).__name__}")
        if self._keyring is None:
            raise LocalProtocolError(
                "this tracker was started without a keyring: restart it with one"
            )
        self._keyring = keyring

    def stats(self) -> TrackerStats:
        """Counters and gauges for operators (a snapshot; see :class:`TrackerStats`)."""
        down = sum(1 for r in self._records.values() if r.status is ReplicaStatus.DOWN)
        return TrackerStats(
            received=self._received,
            rejected=dict(sorted(self._rejected.items(), key=lambda item: item[0].value)),
            claims_cut=self._claims_cut,
            transfer_requests_sent=self._requests_sent,
            transfer_requests_answered=self._requests_answered,
            transfers_received_delta=self._transfers_delta,
            transfers_received_full=self._transfers_full,
            unsendable=self._unsendable,
            replicas_up=len(self._records) - down,
            replicas_down=down,
            entries=len(self._state),
            cloud_dots=self._state.cloud_dots,
            leaves_held=self._rooms.held,
        )

    def entries(self, topic: str) -> list[Entry]:
        """The entries of ``topic`` as the application has been shown them.

        That is the visible state (:meth:`ReplicaState.get_by_topic
        <presence_core.ReplicaState.get_by_topic>`), except for a topic with options
        (:meth:`configure_topic`), whose diffs are held back: there, changes still in the
        tick's batch are not in it yet and keys in their grace period still are. So a
        subscriber that starts from it (or from :meth:`presences`, :meth:`page`,
        :meth:`occupancy`, which answer the same way) and applies every diff that follows is
        exactly right. A new list each call.

        Raises:
            LocalProtocolError: ``topic`` is not a ``str``.
        """
        _check_topic(topic)
        shown = self._rooms.shown(topic)
        return self._state.get_by_topic(topic) if shown is None else shown.entries()

    def presences(self, topic: str) -> PresenceMap:
        """The presences of ``topic`` in Phoenix's shape: ``{key: {"metas": [...]}}``, as the
        application has been shown them (see :meth:`entries`).

        Keys are sorted; metas of one key are ordered by owning replica, then connection, so every
        replica holding the same presences lists them identically.
        """
        return group(self.entries(topic))

    def get_by_key(self, topic: str, key: str) -> dict[str, list[Mapping[str, JSONValue]]]:
        """The presence of ``key`` in ``topic`` as ``{"metas": [...]}`` (empty metas if absent),
        as the application has been shown it (see :meth:`entries`)."""
        _check_topic(topic)
        shown = self._rooms.shown(topic)
        if shown is None:
            entries = self._state.get_by_key(topic, key)
        else:
            if type(key) is not str:
                raise LocalProtocolError(f"key must be a str, not {type(key).__name__}")
            entries = shown.entries_of(key)
        return group(entries).get(key, {"metas": []})

    def count(self, topic: str) -> int:
        """The number of presences (metas) in ``topic``, as the application has been shown
        them (see :meth:`entries`), without building the list."""
        _check_topic(topic)
        shown = self._rooms.shown(topic)
        return self._state.count(topic) if shown is None else shown.presences

    def topics(self) -> list[str]:
        """Every topic with at least one presence, as the application has been shown them (see
        :meth:`entries`), sorted."""
        if not self._rooms.active:
            return self._state.topics()
        rooms = self._rooms.topics()
        shown = {topic for topic in self._state.topics() if topic not in rooms}
        shown.update(topic for topic, present in rooms.items() if present)
        return sorted(shown)

    def occupancy(self, topic: str) -> Occupancy:
        """How many keys and presences ``topic`` holds, without the list, as the application has
        been shown them (see :meth:`entries`): keys in their grace period still count.

        In O(1) for a topic with options (its index keeps the counts); otherwise counted over
        the topic's presences.

        Raises:
            LocalProtocolError: ``topic`` is not a ``str``.
        """
        _check_topic(topic)
        shown = self._rooms.shown(topic)
        if shown is not None:
            return Occupancy(topic=topic, keys=len(shown.rows), presences=shown.presences)
        entries = self._state.get_by_topic(topic)
        return Occupancy(topic=topic, keys=len({e.key for e in entries}), presences=len(entries))

    def page(self, topic: str, *, after: str | None = None, limit: int = 100) -> PresencePage:
        """Up to ``limit`` keys of ``topic`` with their metas, the keys after ``after`` in sorted
        (code point) order: a stable order to walk a large room in pages. As the application
        has been shown them (see :meth:`entries`).

        Start with ``after=None`` and pass each page's ``next_after`` to the next call. While
        the room changes, a key present for the whole walk is listed exactly once, no key is
        listed twice, and keys come in increasing order. A large room answers from its index
        (its sorted keys are patched as keys come and go); any other topic sorts its keys for
        each page.

        Raises:
            LocalProtocolError: ``topic`` is not a ``str``, ``after`` not a ``str`` or ``None``,
                or ``limit`` not an ``int >= 1``.
        """
        _check_topic(topic)
        check_page_args(after, limit)
        paged = self._rooms.page(topic, after, limit)
        if paged is not None:
            return paged
        return page_of(self._state.get_by_topic(topic), after, limit)

    def configure_topic(self, topic: str, options: TopicOptions) -> None:
        """Set how ``topic``'s diffs reach the application: a leave grace period
        (``docs/grace-period.rst``), large-room batching (``docs/large-rooms.rst``).
        ``TopicOptions()`` goes back to the tracker's defaults.

        Options are this node's own (nothing is replicated) and take effect at once: shortening
        the grace period to zero delivers the held leaves of the topic now, and leaving
        large-room mode delivers its pending batch now.

        Raises:
            LocalProtocolError: ``topic`` is not a ``str``, ``options`` not a
                :class:`~presence_core.TopicOptions`, or a call from inside an update callback.
        """
        if self._in_callback:
            raise LocalProtocolError(
                "a re-entrant call from inside an update callback: the callback must only "
                "compute the new meta from the one it is given"
            )
        _check_topic(topic)
        if not isinstance(options, TopicOptions):
            raise LocalProtocolError(
                f"options must be a TopicOptions, not {type(options).__name__}"
            )
        self._events.extend(
            self._rooms.configure(topic, options, lambda: self._state.get_by_topic(topic))
        )

    def topic_options(self, topic: str) -> TopicOptions:
        """The options :meth:`configure_topic` set for ``topic`` (``TopicOptions()`` if none)."""
        _check_topic(topic)
        return self._rooms.options(topic)

    def replicas(self) -> dict[str, ReplicaInfo]:
        """The remote replicas this tracker knows, by name (snapshots of the records)."""
        context = self._state.context
        return {
            name: ReplicaInfo(
                r.ref, r.last_heard, r.status, r.clock, max(0, r.clock - context.get(r.ref, 0))
            )
            for name, r in sorted(self._records.items())
        }

    # ------------------------------------------------------------------ replication

    def receive(self, message: Message | bytes | bytearray | memoryview, *, now: float) -> None:
        """Handle a message (or its encoded bytes) from another replica.

        Duplicated, reordered and stale messages are normal and handled silently. Messages from
        this replica's own name (a transport echo, or a previous incarnation) are ignored. A
        message that fails a check (see the module docs) is counted in :meth:`stats`, reported
        as a :class:`~presence_core.MessageRejected` event, and changes nothing else.

        With a keyring, only bytes are accepted: a message object cannot be authenticated.

        Raises:
            RemoteProtocolError: the bytes are not a valid message; nothing changed (it is
                counted as rejected, ``MALFORMED``, all the same).
            LocalProtocolError: ``message`` is neither bytes nor a message, a message object with
                a keyring, time went backwards, or a call from inside an update callback.
        """
        now = self._check_now(now)
        origin: ReplicaRef | None = None
        if isinstance(message, (bytes, bytearray, memoryview)):
            self._received += 1
            data: bytes | bytearray | memoryview = message
            keyring = self._keyring
            if keyring is not None:
                size = data.nbytes if isinstance(data, memoryview) else len(data)
                if size > self.config.max_message_bytes:  # refused before paying for the MAC
                    self._commit_now(now)
                    self._reject(
                        RejectReason.UNAUTHENTICATED,
                        None,
                        f"{size} bytes, over max_message_bytes={self.config.max_message_bytes}",
                    )
                    return
                try:
                    sealed = unseal(data, keyring)
                except AuthenticationError as exc:
                    self._commit_now(now)
                    claimed = "" if exc.replica is None else f" (it claims to be {exc.replica!r})"
                    self._reject(RejectReason.UNAUTHENTICATED, None, exc.message + claimed)
                    return
                origin = sealed.origin
                window = self._window(origin)
                if window.too_old(sealed.counter):
                    self._commit_now(now)
                    self._reject(
                        RejectReason.TOO_OLD,
                        origin,
                        f"message {sealed.counter} of {origin!r} is older than the replay window "
                        f"tells apart (it has seen up to {window.highest}): replayed, or sent by "
                        "a node restarted with its old vsn",
                    )
                    return
                if not window.accept(sealed.counter):
                    self._commit_now(now)
                    self._reject(
                        RejectReason.REPLAYED,
                        origin,
                        f"message {sealed.counter} of {origin!r} was already received",
                    )
                    return
                data = sealed.body
            try:
                message = decode_message(
                    data, max_bytes=self.config.max_message_bytes, limits=self._decode_limits
                )
            except RemoteProtocolError as exc:
                self._rejected[RejectReason.MALFORMED] = (
                    self._rejected.get(RejectReason.MALFORMED, 0) + 1
                )
                if keyring is None and bytes(data[: len(MAGIC)]) == MAGIC:
                    raise RemoteProtocolError(
                        "message: sealed with a key (docs/security.rst), but this tracker has "
                        "no keyring: every node of a cluster needs the same keys",
                        replica=exc.replica,
                    ) from exc
                raise
        elif not isinstance(message, (Heartbeat, TransferRequest, TransferAck, GracefulPermdown)):
            raise LocalProtocolError(f"cannot receive a {type(message).__name__}")
        elif self._keyring is not None:
            raise LocalProtocolError(
                "this tracker has a keyring: receive the sealed bytes, not a message object"
            )
        else:
            self._received += 1
        self._commit_now(now)
        sender = message.sender
        if origin is not None and sender != origin:
            self._reject(
                RejectReason.UNAUTHENTICATED,
                sender,
                f"the message says it comes from {sender!r}, but {origin!r} sealed it",
            )
            return
        if self._lifecycle is Lifecycle.STOPPED or sender.name == self.replica.name:
            return
        if isinstance(message, Heartbeat):
            self._receive_heartbeat(message, now)
        elif isinstance(message, TransferRequest):
            self._answer_transfer(message, now)
        elif isinstance(message, TransferAck):
            self._receive_transfer(message)
        else:
            record = self._records.get(sender.name)
            if record is not None and record.ref == sender:
                self._apply(record, LivenessInput.GRACEFUL_PERMDOWN)

    def _window(self, origin: ReplicaRef) -> ReplayWindow:
        """The replay window of ``origin``; the least recently heard are forgotten first."""
        windows = self._windows
        window = windows.pop(origin, None)
        if window is None:
            window = ReplayWindow()
            while len(windows) >= REPLAY_MEMORY:
                del windows[next(iter(windows))]
        windows[origin] = window  # now the most recent
        return window

    def _bound(self, replica: ReplicaRef) -> int | None:
        """The highest clock of its own ``replica`` may be claimed to have reached (``_claims``):
        our context for it, or what it announced itself if higher; ``None`` if unknown."""
        held = self._state.clock_of(replica)
        if held is not None:
            record = self._records.get(replica.name)
            if record is not None and record.ref == replica and record.clock > held:
                held = record.clock
        return held

    def _bounds(
        self, sender: ReplicaRef, payload: Delta | Snapshot | SnapshotPart
    ) -> dict[ReplicaRef, int]:
        """The bound of every third replica ``payload`` names (the sender has none: its claims
        about itself are never cut). A heartbeat's delta names its sender alone, so this costs
        nothing per replica known."""
        named = set(payload.clouds)
        named.update(payload.values)
        if isinstance(payload, Delta):
            named.update(payload.start)
            named.update(payload.end)
        else:
            named.update(payload.context)
        named.discard(sender)
        bounds = {}
        for replica in named:
            bound = self._bound(replica)
            if bound is not None:
                bounds[replica] = bound
        return bounds

    @overload
    def _cut(
        self, payload: Delta, sender: ReplicaRef, bounds: Mapping[ReplicaRef, int]
    ) -> Delta: ...

    @overload
    def _cut(
        self,
        payload: Delta | Snapshot | SnapshotPart,
        sender: ReplicaRef,
        bounds: Mapping[ReplicaRef, int],
    ) -> Delta | Snapshot | SnapshotPart: ...

    def _cut(
        self,
        payload: Delta | Snapshot | SnapshotPart,
        sender: ReplicaRef,
        bounds: Mapping[ReplicaRef, int],
    ) -> Delta | Snapshot | SnapshotPart:
        """``payload`` with its claims about third replicas cut at ``bounds`` (counted)."""
        cut = clamp_payload(payload, sender, bounds)
        if cut is None:
            return payload
        self._claims_cut += 1
        return cut

    def _over_clouds(self, clouds: Mapping[ReplicaRef, frozenset[int] | set[int]]) -> bool:
        """True if ``clouds`` could take the dots held over ``max_cloud_dots``.

        The dots held are the parked ones plus those of every message in parts being
        assembled: one bound for all, however many senders. Checked before anything is merged.
        """
        incoming = sum(len(dots) for dots in clouds.values())
        if not incoming:
            return False
        assemblies = [*self._heartbeat_parts.values()]
        assemblies.extend(
            parts for r in self._requests.values() for parts in r.asked.values() if parts
        )
        held = self._state.cloud_dots + sum(a.dots for a in assemblies)
        return held + incoming > self.config.max_cloud_dots

    def _too_many_parts(self, sender: ReplicaRef, parts: int) -> bool:
        if parts <= MAX_PARTS:
            return False
        self._reject(
            RejectReason.OVER_LIMIT, sender, f"sent in {parts} parts, over MAX_PARTS={MAX_PARTS}"
        )
        return True

    def _receive_heartbeat(self, message: Heartbeat, now: float) -> None:
        sender = message.sender
        if self._too_many_parts(sender, message.parts):
            return
        delta = message.delta
        sent_window: object = None
        bounds: dict[ReplicaRef, int] = {}
        if delta is not None:
            sent_window = (tuple(delta.start.items()), tuple(delta.end.items()))
            bounds = self._bounds(sender, delta)
            delta = self._cut(delta, sender, bounds)
            if self._over_clouds(delta.clouds):
                self._reject_clouds(sender, delta.clouds)
                return
        record = self._heard_from(sender, now)
        if record is None:
            return
        record.clock = max(record.clock, message.clock.get(sender, 0))
        record.sampled = message.clock  # cut when sampled: most heartbeats are never sampled
        if delta is not None and message.parts == 1:
            self._emit_merge(self._state.merge(delta))
            self._push_generation_delta(delta)
        elif delta is not None:
            self._emit_merge(self._state.merge_part(delta))
            # A part covers only some of the window's dots: folded into a generation it would
            # claim the whole window. The generations start afresh instead.
            self._generations.clear()
            name = sender.name
            window = sent_window  # as sent, before any cut: every part names the same one
            parts = self._heartbeat_parts.get(name)
            if (
                parts is None
                or parts.sender != sender
                or parts.key != window
                or parts.count != message.parts
            ):
                parts = _Assembly(sender, window, message.parts)
                self._heartbeat_parts[name] = parts
            self._add_part(parts, message.part, delta, bounds)
            if parts.complete:
                del self._heartbeat_parts[name]
                self._state.complete_parts({}, parts.clouds)

    def _add_part(
        self,
        assembly: _Assembly,
        part: int,
        payload: Delta | SnapshotPart,
        bounds: Mapping[ReplicaRef, int],
    ) -> None:
        """Count a part in (its clouds were checked against ``max_cloud_dots`` already)."""
        caps = dict(bounds)  # the part was cut at these: it spoke for no more
        caps[assembly.sender] = MAX_WIRE_INT  # its claims about itself are never cut
        assembly.add(part, payload, caps)

    def _reject_clouds(
        self, sender: ReplicaRef, clouds: Mapping[ReplicaRef, frozenset[int] | set[int]]
    ) -> None:
        incoming = sum(len(dots) for dots in clouds.values())
        self._reject(
            RejectReason.OVER_LIMIT,
            sender,
            f"{incoming} cloud dots on top of {self._state.cloud_dots} parked would exceed "
            f"max_cloud_dots={self.config.max_cloud_dots}",
        )

    def _push_generation_delta(self, delta: Delta) -> None:
        pending = None if len(self._generations) else self._state.pending_delta
        self._generations.push(delta, pending=pending)

    def _answer_transfer(self, message: TransferRequest, now: float) -> None:
        sender = message.sender
        record = self._records.get(sender.name)
        # Known: a record of this very incarnation, up or down. One we think down may well be
        # back from a partition, its heartbeat still on the way; refusing it would cost it a
        # whole sampling round, and it is no stranger to send a state to.
        if record is None or record.ref != sender:
            self._reject(
                RejectReason.UNKNOWN_REQUESTER,
                sender,
                f"a transfer request from {sender!r}, a replica we do not know",
            )
            return
        if record.answered is not None and now - record.answered < self.config.broadcast_period:
            self._reject(
                RejectReason.RATE_LIMITED,
                sender,
                f"a transfer request from {sender!r} {now - record.answered:.3g} s after the last "
                f"one answered (at most one per broadcast_period={self.config.broadcast_period})",
            )
            return
        record.answered = now
        self._requests_answered += 1
        # The requester's own entries stay in (remote_ref=None): their dots are in the reply,
        # and a generation merged with dots but no values would forget them.
        payload = self._generations.extract(self._state, None, message.clock)
        reply = TransferAck(request_id=message.request_id, sender=self.replica, payload=payload)
        self._send(reply, sender.name)

    def _receive_transfer(self, message: TransferAck) -> None:
        sender = message.sender
        name = sender.name
        pending = self._requests.get(name)
        if pending is None or pending.ref != sender or message.request_id not in pending.asked:
            self._reject(
                RejectReason.UNSOLICITED,
                sender,
                f"a transfer reply (request {message.request_id}) from {sender!r}, "
                "which we are not waiting for",
            )
            return
        if self._too_many_parts(sender, message.parts):
            return
        # A request is forgotten when its replica goes down: the replica is known and up.
        record = self._records[name]
        # A transfer reply speaks for its sender's own clock too.
        payload = message.payload
        own = payload.end if isinstance(payload, Delta) else payload.context
        record.clock = max(record.clock, own.get(sender, 0))
        bounds = self._bounds(sender, message.payload)
        payload = self._cut(message.payload, sender, bounds)
        if self._over_clouds(payload.clouds):
            self._reject_clouds(sender, payload.clouds)
            return
        pending.heard = True
        if not isinstance(payload, Snapshot) and (
            isinstance(payload, SnapshotPart) or message.parts > 1
        ):
            self._emit_merge(self._state.merge_part(payload))
            # A part in a generation would claim what it does not carry: start them afresh.
            self._generations.clear()
            parts = pending.asked[message.request_id]
            if parts is None or parts.count != message.parts:
                parts = pending.asked[message.request_id] = _Assembly(
                    sender, message.request_id, message.parts
                )
            self._add_part(parts, message.part, payload, bounds)
            if parts.complete:
                del self._requests[name]
                self._state.complete_parts(parts.seen_context(), parts.clouds)
                if isinstance(payload, SnapshotPart):
                    self._transfers_full += 1
                else:
                    self._transfers_delta += 1
            return
        self._emit_merge(self._state.merge(payload))
        if isinstance(payload, Snapshot):
            self._generations.clear()
            self._transfers_full += 1
        else:
            self._push_generation_delta(payload)
            self._transfers_delta += 1
        del self._requests[name]

    def _request_transfer(self, ref: ReplicaRef) -> None:
        self._request_ids += 1
        self._requests_sent += 1
        request = TransferRequest(
            request_id=self._request_ids, sender=self.replica, clock=self._state.up_context
        )
        pending = self._requests.get(ref.name)
        if pending is None or pending.ref != ref:
            pending = self._requests[ref.name] = _Request(ref)
        pending.ask(self._request_ids)
        self._send(request, ref.name)

    def _forget_request(self, ref: ReplicaRef) -> None:
        """Stop waiting for anything in parts from ``ref``: it went down."""
        pending = self._requests.get(ref.name)
        if pending is not None and pending.ref == ref:
            del self._requests[ref.name]
        parts = self._heartbeat_parts.get(ref.name)
        if parts is not None and parts.sender == ref:
            del self._heartbeat_parts[ref.name]

    def _heard_from(self, ref: ReplicaRef, now: float) -> _Record | None:
        """Liveness bookkeeping for a heartbeat; ``None`` when it must be ignored (counted)."""
        if self._retired.get(ref.name, -1) >= ref.vsn:
            self._reject(RejectReason.STALE, ref, f"{ref!r} was retired (it left or restarted)")
            return None
        record = self._records.get(ref.name)
        if record is not None and record.ref != ref:
            if ref.vsn < record.ref.vsn:
                self._reject(RejectReason.STALE, ref, f"{ref!r} was replaced by {record.ref!r}")
                return None
            self._apply(record, LivenessInput.NEW_INCARNATION)
            record = None
        if record is None:
            if not self._room_for(ref):
                return None
            record = _Record(ref, now, ReplicaStatus.UNKNOWN)
            self._records[ref.name] = record
            self._clock_size += _clock_bytes(ref)
        record.last_heard = now
        self._apply(record, LivenessInput.HEARTBEAT)
        return record

    def _room_for(self, ref: ReplicaRef) -> bool:
        """Whether a new replica may get a record, forgetting down ones to make room if needed.

        Two bounds: ``max_replicas`` records, and clocks that fit in a quarter of
        ``max_message_bytes`` (every part of a message repeats up to two of them, in the half
        the config leaves for what parts repeat): a peer must not be able to make our own
        messages too large to send.
        """
        config = self.config
        budget = config.max_message_bytes // 4
        size = _clock_bytes(ref)
        while len(self._records) >= config.max_replicas or self._clock_size + size > budget:
            if not self._make_room():
                if len(self._records) >= config.max_replicas:
                    why = f"max_replicas={config.max_replicas} replicas are known and up"
                else:
                    why = (
                        f"the clocks of the replicas known and up would no longer fit in a "
                        f"quarter of max_message_bytes={config.max_message_bytes}"
                    )
                self._reject(RejectReason.TOO_MANY_REPLICAS, ref, f"{ref!r} is new, and {why}")
                return False
        return True

    def _make_room(self) -> bool:
        """Forget the replica down for longest, for a new one; False if none is down."""
        down = [r for r in self._records.values() if r.status is ReplicaStatus.DOWN]
        if not down:
            return False
        oldest = min(down, key=lambda r: (r.last_heard, r.ref))
        self._apply(oldest, LivenessInput.SILENCE_PERMDOWN_PERIOD)
        return True

    def _retire(self, ref: ReplicaRef) -> None:
        retired = self._retired
        retired[ref.name] = max(ref.vsn, retired.pop(ref.name, -1))  # now the most recent
        while len(retired) > _RETIRED_MEMORY:
            del retired[next(iter(retired))]

    def _apply(self, record: _Record, trigger: LivenessInput) -> None:
        status, actions = transition(record.status, trigger)
        ref = record.ref
        for action in actions:
            if action is LivenessAction.UP:
                self._events.append(ReplicaUp(replica=ref))
                self._emit_diff(self._state.replica_up(ref), ())
            elif action is LivenessAction.DOWN:
                # Its clock must no longer attract a transfer request.
                record.sampled = None
                self._forget_request(ref)
                self._events.append(ReplicaDown(replica=ref))
                self._emit_diff((), self._state.replica_down(ref))
            else:
                record.sampled = None
                self._forget_request(ref)
                self._events.append(ReplicaPermdown(replica=ref))
                self._state.remove_down_replica(ref)
                self._generations.remove_replica(ref)
                if trigger is not LivenessInput.SILENCE_PERMDOWN_PERIOD:
                    self._retire(ref)  # it left or restarted: it cannot come back
        record.status = status
        if status is ReplicaStatus.UNKNOWN and self._records.get(ref.name) is record:
            del self._records[ref.name]
            self._clock_size -= _clock_bytes(ref)
