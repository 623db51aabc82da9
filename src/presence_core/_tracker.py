"""Tracker: one Phoenix.Tracker node as a sans-IO state machine (SPEC §1-§3).

Theory of operation
===================

Three things drive a tracker, and each takes the current time as ``now`` (monotonic seconds on the
adapter's clock):

* local commands: :meth:`Tracker.track`, :meth:`~Tracker.update`, :meth:`~Tracker.untrack`,
  :meth:`~Tracker.untrack_conn`, :meth:`~Tracker.graceful_permdown`;
* messages from other replicas: :meth:`Tracker.receive`;
* the timer: :meth:`Tracker.handle_timer`, due at :meth:`Tracker.next_deadline`.

Everything the tracker wants done comes out of two queues the adapter drains after every call:
:meth:`Tracker.next_event` (presence diffs and replica liveness changes, for the application) and
:meth:`Tracker.messages_to_send` (for the transport). The tracker never reads a clock, never draws
randomness except from the ``rng`` it was given, never does I/O and never calls back.

Every tick (each ``broadcast_period``), in Phoenix's order: broadcast the pending delta (or, after
``max_silent_periods`` quiet ticks, an empty heartbeat); every ``clock_sample_periods`` ticks ask
the replicas whose clocks are not dominated for a transfer; then check every remote replica's
silence against the down and permdown periods (see ``_liveness``).
"""

from __future__ import annotations

import builtins
import json
import math
import random
from collections import deque
from collections.abc import Callable, Mapping

from ._codec import MAX_WIRE_INT, decode_message
from ._config import TrackerConfig
from ._deltas import DeltaGenerations
from ._errors import LimitExceeded, LocalProtocolError, NoPresence, shown
from ._events import Event, PresenceDiff, ReplicaDown, ReplicaPermdown, ReplicaUp, Unsendable
from ._liveness import LivenessAction, LivenessInput, ReplicaStatus, transition
from ._messages import (
    GracefulPermdown,
    Heartbeat,
    Message,
    Outbound,
    TransferAck,
    TransferRequest,
)
from ._meta import JSONValue, Meta, copy_meta
from ._parts import encode_parts
from ._presence import PresenceMap, group
from ._refs import RefGenerator
from ._state import Delta, Entry, MergeResult, ReplicaState, Snapshot, SnapshotPart
from ._vclock import Clock, ReplicaRef, append_clock

__all__ = ["MetaUpdater", "ReplicaInfo", "Tracker"]

MetaUpdater = Callable[[dict[str, JSONValue]], Meta]
"""A function that receives a copy of the current meta and returns the new one."""

_DEPARTED_MEMORY = 1024
"""How many gracefully departed incarnations are remembered to ignore their late heartbeats."""

_JITTER = 0.25
"""The first tick comes at a random point of the first quarter period (Phoenix's stutter)."""


def _check_identity(config: TrackerConfig, conn: object, topic: object, key: object) -> None:
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
    """

    __slots__ = ("clouds", "context", "count", "key", "received", "sender")

    def __init__(self, sender: ReplicaRef, key: object, count: int) -> None:
        self.sender = sender
        self.key = key
        self.count = count
        self.received: set[int] = set()
        self.clouds: dict[ReplicaRef, set[int]] = {}
        self.context: Mapping[ReplicaRef, int] = {}

    def add(self, part: int, payload: Delta | SnapshotPart) -> bool:
        """Count one part in; True when it was the last one missing (once per message)."""
        if part in self.received:
            return False
        self.received.add(part)
        for owner, dots in payload.clouds.items():
            self.clouds.setdefault(owner, set()).update(dots)
        if isinstance(payload, SnapshotPart):
            self.context = payload.context
        return len(self.received) == self.count


class _Request:
    """A transfer request we sent, until its reply has fully arrived.

    ``heard`` is set when it is sent and whenever a part of its reply arrives, and cleared at
    every clock sample: a request whose reply went quiet for a whole sampling period is asked
    again, one still streaming in is not (a large state comes in many parts).
    """

    __slots__ = ("heard", "parts", "ref", "request_id")

    def __init__(self, ref: ReplicaRef, request_id: int) -> None:
        self.ref = ref
        self.request_id = request_id
        self.parts: _Assembly | None = None
        self.heard = True


class ReplicaInfo:
    """What this tracker knows about one remote replica (a read-only record).

    Attributes:
        ref: the incarnation last heard from.
        status: UP or DOWN.
        last_heard: ``now`` of the last heartbeat received from it.
    """

    __slots__ = ("last_heard", "ref", "status")

    def __init__(self, ref: ReplicaRef, last_heard: float, status: ReplicaStatus) -> None:
        self.ref = ref
        self.last_heard = last_heard
        self.status = status

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplicaInfo):
            return NotImplemented
        return (self.ref, self.last_heard, self.status) == (
            other.ref,
            other.last_heard,
            other.status,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ReplicaInfo(ref={self.ref!r}, status={self.status.name}, "
            f"last_heard={self.last_heard!r})"
        )


class Tracker:
    """One presence tracker node.

    Args:
        config: timing and size options (Phoenix's defaults).
        replica: this node's identity; the adapter picks the incarnation ``vsn`` (for example from
            the wall clock at start) so that a restart is a new replica.
        rng: the only source of randomness (the jitter of the first tick). Required: pass
            ``random.Random()`` in production and a seeded one in tests.

    Raises:
        LocalProtocolError: an argument has the wrong type, or ``replica`` cannot be sent: its
            name is not valid Unicode (a lone surrogate) or its ``vsn`` is above the wire's
            ``2**63 - 1``.
    """

    def __init__(self, *, config: TrackerConfig, replica: ReplicaRef, rng: random.Random) -> None:
        if not isinstance(config, TrackerConfig):
            raise LocalProtocolError(f"config must be a TrackerConfig, not {type(config).__name__}")
        if not isinstance(replica, ReplicaRef):
            raise LocalProtocolError(f"replica must be a ReplicaRef, not {type(replica).__name__}")
        # Every message carries the replica: refuse one that no message could carry.
        if not replica.name.isascii():
            _check_unicode(replica.name, "replica.name")
        if replica.vsn > MAX_WIRE_INT:
            raise LocalProtocolError(
                f"replica.vsn is {shown(replica.vsn)}, above 2**63 - 1, "
                "the largest the wire carries"
            )
        if not isinstance(rng, random.Random):
            raise LocalProtocolError(f"rng must be a random.Random, not {type(rng).__name__}")
        self.config = config
        self.replica = replica
        self._rng = rng
        self._state = ReplicaState(replica)
        self._generations = DeltaGenerations(config.max_delta_sizes)
        self._refs = RefGenerator(replica)
        self._records: dict[str, ReplicaInfo] = {}
        self._events: deque[Event] = deque()
        self._outbox: list[Outbound] = []
        self._last_now: float | None = None
        self._next_tick: float | None = None
        self._silent_periods = config.max_silent_periods
        self._sample_countdown = config.clock_sample_periods
        self._clockset: list[Clock] = []
        self._request_ids = 0
        self._requests: dict[str, _Request] = {}
        # Per sender, the heartbeat in parts being received (a newer one replaces it).
        self._heartbeat_parts: dict[str, _Assembly] = {}
        self._stopped = False
        # Incarnations that announced their departure: a heartbeat of theirs still in flight
        # must not bring them back. Bounded; the oldest are forgotten first.
        self._departed: dict[ReplicaRef, None] = {}

    def __repr__(self) -> str:
        return f"<Tracker {self.replica!r} presences={len(self._state)} peers={len(self._records)}>"

    # ------------------------------------------------------------------ time

    def _check_now(self, now: float) -> float:
        if not _is_time(now):
            raise LocalProtocolError(f"now must be a finite number of seconds, not {shown(now)}")
        if self._last_now is not None and now < self._last_now:
            raise LocalProtocolError(
                f"time went backwards: now={now!r} after now={self._last_now!r}"
            )
        return float(now)

    def _commit_now(self, now: float) -> None:
        self._last_now = now
        if self._next_tick is None and not self._stopped:
            period = self.config.broadcast_period
            self._next_tick = now + self._rng.random() * _JITTER * period

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` wants to be called next (absolute, on the ``now`` clock).

        ``None`` before the first call that takes ``now`` (the clock starts then) and after
        :meth:`graceful_permdown`. A pure query: it changes nothing.
        """
        return self._next_tick

    def handle_timer(self, *, now: float) -> None:
        """Run the tick if it is due; harmless when called early, late, twice or spuriously.

        The first call (or any call taking ``now``) starts the clock: the first tick comes within
        a quarter of a period. A late call runs one tick, and the next comes a period later.
        Afterwards drain :meth:`next_event` and :meth:`messages_to_send` and re-read
        :meth:`next_deadline`.

        Raises:
            LocalProtocolError: ``now`` is not a finite number or is earlier than a previous one.
        """
        now = self._check_now(now)
        self._commit_now(now)
        if self._next_tick is None or now < self._next_tick:
            return
        self._tick(now)
        self._next_tick = now + self.config.broadcast_period

    def _tick(self, now: float) -> None:
        config = self.config
        state = self._state
        if state.has_delta():
            delta = state.take_delta()
            self._broadcast(Heartbeat(sender=self.replica, clock=state.clocks()[1], delta=delta))
            self._silent_periods = 0
            self._push_generation_delta(delta)
        elif self._silent_periods >= config.max_silent_periods:
            self._broadcast(Heartbeat(sender=self.replica, clock=state.clocks()[1]))
            self._silent_periods = 0
        else:
            self._silent_periods += 1

        if self._sample_countdown <= 1:
            candidates = append_clock(self._clockset, state.clocks())
            for ref in sorted(ref for ref, _ in candidates if ref != self.replica):
                pending = self._requests.get(ref.name)
                if pending is not None and pending.ref == ref and pending.heard:
                    pending.heard = False  # its reply may still be on its way
                    continue
                self._request_transfer(ref)
            self._clockset = []
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

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        """The next event for the application, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> builtins.list[Outbound]:
        """Every message queued for other replicas, oldest first (the queue is emptied)."""
        outbox, self._outbox = self._outbox, []
        return outbox

    def _broadcast(self, message: Message) -> None:
        self._send(message, None)

    def _send(self, message: Message, to: str | None) -> None:
        """Queue ``message`` encoded, in parts if it is too large for one; report it if neither."""
        try:
            parts = encode_parts(message, max_bytes=self.config.max_message_bytes)
        except LimitExceeded as exc:
            self._events.append(Unsendable(message=message, to=to, reason=exc.message))
            return
        self._outbox.extend(Outbound(message=part, data=data, to=to) for part, data in parts)

    def _emit_merge(self, result: MergeResult) -> None:
        # Entries of a replica we consider down are hidden: their joins and leaves are not news
        # (its leaves went out when it went down; a join now would be a ghost in every client).
        is_down = self._state.is_down
        self._emit_diff(
            tuple(e for e in result.joins if not is_down(e.owner)),
            tuple(e for e in result.leaves if not is_down(e.owner)),
        )

    def _emit_diff(self, joins: tuple[Entry, ...], leaves: tuple[Entry, ...]) -> None:
        by_topic: dict[str, tuple[builtins.list[Entry], builtins.list[Entry]]] = {}
        for entry in joins:
            by_topic.setdefault(entry.topic, ([], []))[0].append(entry)
        for entry in leaves:
            by_topic.setdefault(entry.topic, ([], []))[1].append(entry)
        for topic in sorted(by_topic):
            topic_joins, topic_leaves = by_topic[topic]
            self._events.append(PresenceDiff(topic=topic, joins=topic_joins, leaves=topic_leaves))

    # ------------------------------------------------------------------ local commands

    def _check_running(self) -> None:
        if self._stopped:
            raise LocalProtocolError("the tracker was stopped by graceful_permdown")

    def _checked_meta(self, meta: object, *, ref: str, prev: str | None) -> dict[str, JSONValue]:
        stored = copy_meta(meta)
        stored["phx_ref"] = ref
        if prev is not None:
            stored["phx_ref_prev"] = prev
        try:
            text = json.dumps(stored, separators=(",", ":"), ensure_ascii=False)
        except ValueError as exc:  # an int over Python's int-to-str digit limit
            raise LocalProtocolError(f"meta cannot be written as JSON: {exc}") from None
        size = len(_check_unicode(text, "meta"))
        if size > self.config.max_meta_bytes:
            raise LimitExceeded(
                f"meta is {size} bytes as JSON, over max_meta_bytes={self.config.max_meta_bytes}"
            )
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
        entry = self._state._add_own(conn, topic, key, stored)  # raises AlreadyTracked first
        self._refs.advance()
        self._commit_now(now)
        self._events.append(PresenceDiff(topic=topic, joins=(entry,)))
        return ref

    def update(
        self, *, conn: str, topic: str, key: str, meta: Meta | MetaUpdater, now: float
    ) -> str:
        """Replace the meta of a tracked presence (a full replacement, never a merge).

        ``meta`` is the new meta, or a function given a copy of the current meta (with its
        ``phx_ref``) that returns the new one. The stored meta gets a fresh ``phx_ref`` and
        ``phx_ref_prev`` set to the old ref. Emits one :class:`PresenceDiff` holding the new entry
        as a join and the old one as a leave.

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
        new_meta = meta(copy_meta(old.meta)) if callable(meta) else meta
        prev = old.meta.get("phx_ref")
        ref = self._refs.peek()
        stored = self._checked_meta(new_meta, ref=ref, prev=prev if isinstance(prev, str) else None)
        self._refs.advance()
        new = self._state._replace_own(old, stored)
        self._commit_now(now)
        self._events.append(PresenceDiff(topic=topic, joins=(new,), leaves=(old,)))
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
            self._events.append(PresenceDiff(topic=topic, leaves=(entry,)))

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
        leaves are emitted locally. Afterwards commands raise, :meth:`receive` and
        :meth:`handle_timer` do nothing, and :meth:`next_deadline` is ``None``.

        Raises:
            LocalProtocolError: time going backwards, or the tracker is already stopped.
        """
        now = self._check_now(now)
        self._check_running()
        self._last_now = now
        self._broadcast(GracefulPermdown(sender=self.replica))
        self._stopped = True
        self._next_tick = None

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> ReplicaState:
        """The underlying CRDT, for inspection (mutating it directly voids every guarantee)."""
        return self._state

    @property
    def stopped(self) -> bool:
        """True after :meth:`graceful_permdown`."""
        return self._stopped

    def list(self, topic: str) -> PresenceMap:
        """The visible presences of ``topic`` in Phoenix's shape: ``{key: {"metas": [...]}}``.

        Keys are sorted; metas of one key are ordered by owning replica, then connection, so every
        replica holding the same presences lists them identically.
        """
        return group(self._state.get_by_topic(topic))

    def get_by_key(self, topic: str, key: str) -> dict[str, builtins.list[Mapping[str, JSONValue]]]:
        """The presence of ``key`` in ``topic`` as ``{"metas": [...]}`` (empty metas if absent)."""
        return group(self._state.get_by_key(topic, key)).get(key, {"metas": []})

    def count(self, topic: str) -> int:
        """The number of visible presences (metas) in ``topic``, without building the list."""
        return self._state.count(topic)

    def topics(self) -> builtins.list[str]:
        """Every topic with at least one visible presence, sorted."""
        return self._state.topics()

    def replicas(self) -> dict[str, ReplicaInfo]:
        """The remote replicas this tracker knows, by name (copies of the records)."""
        return {
            name: ReplicaInfo(r.ref, r.last_heard, r.status)
            for name, r in sorted(self._records.items())
        }

    # ------------------------------------------------------------------ replication

    def receive(self, message: Message | bytes | bytearray | memoryview, *, now: float) -> None:
        """Handle a message (or its encoded bytes) from another replica.

        Duplicated, reordered and stale messages are normal and handled silently. Messages from
        this replica's own name (a transport echo, or a previous incarnation) are ignored.

        Raises:
            RemoteProtocolError: the bytes are not a valid message; nothing changed.
            LocalProtocolError: ``message`` is neither bytes nor a message, or time went backwards.
        """
        now = self._check_now(now)
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = decode_message(message, max_bytes=self.config.max_message_bytes)
        if not isinstance(message, (Heartbeat, TransferRequest, TransferAck, GracefulPermdown)):
            raise LocalProtocolError(f"cannot receive a {type(message).__name__}")
        self._commit_now(now)
        if self._stopped or message.sender.name == self.replica.name:
            return
        if isinstance(message, Heartbeat):
            self._receive_heartbeat(message, now)
        elif isinstance(message, TransferRequest):
            # The requester's own entries stay in (remote_ref=None): their dots are in the reply,
            # and a generation merged with dots but no values would forget them.
            payload = self._generations.extract(self._state, None, message.clock)
            reply = TransferAck(request_id=message.request_id, sender=self.replica, payload=payload)
            self._send(reply, message.sender.name)
        elif isinstance(message, TransferAck):
            self._receive_transfer(message)
        else:
            record = self._records.get(message.sender.name)
            if record is not None and record.ref == message.sender:
                self._apply(record, LivenessInput.GRACEFUL_PERMDOWN)
                self._departed[message.sender] = None
                while len(self._departed) > _DEPARTED_MEMORY:
                    del self._departed[next(iter(self._departed))]

    def _receive_heartbeat(self, message: Heartbeat, now: float) -> None:
        if not self._heard_from(message.sender, now):
            return
        delta = message.delta
        if delta is not None and message.parts == 1:
            self._emit_merge(self._state.merge(delta))
            self._push_generation_delta(delta)
        elif delta is not None:
            self._emit_merge(self._state.merge_part(delta))
            # A part covers only some of the window's dots: folded into a generation it would
            # claim the whole window. The generations start afresh instead.
            self._generations.clear()
            name = message.sender.name
            window = (tuple(delta.start.items()), tuple(delta.end.items()))
            parts = self._heartbeat_parts.get(name)
            if (
                parts is None
                or parts.sender != message.sender
                or parts.key != window
                or parts.count != message.parts
            ):
                parts = _Assembly(message.sender, window, message.parts)
                self._heartbeat_parts[name] = parts
            if parts.add(message.part, delta):
                del self._heartbeat_parts[name]
                self._state.complete_parts({}, parts.clouds)
        self._clockset = append_clock(self._clockset, (message.sender, message.clock))

    def _push_generation_delta(self, delta: Delta) -> None:
        pending = None if len(self._generations) else self._state.pending_delta
        self._generations.push(delta, pending=pending)

    def _receive_transfer(self, message: TransferAck) -> None:
        payload = message.payload
        name = message.sender.name
        pending = self._requests.get(name)
        if pending is not None and (
            pending.ref != message.sender or pending.request_id != message.request_id
        ):
            pending = None  # a reply to a request we no longer wait for
        if pending is not None:
            pending.heard = True
        if not isinstance(payload, Snapshot) and (
            isinstance(payload, SnapshotPart) or message.parts > 1
        ):
            self._emit_merge(self._state.merge_part(payload))
            # A part in a generation would claim what it does not carry: start them afresh.
            self._generations.clear()
            # Only a reply we wait for is counted: its dots are seen once every part is in. A
            # reply to an older request is merged all the same, and a later transfer completes.
            if pending is None:
                return
            if pending.parts is None or pending.parts.count != message.parts:
                pending.parts = _Assembly(message.sender, message.request_id, message.parts)
            if pending.parts.add(message.part, payload):
                del self._requests[name]
                self._state.complete_parts(pending.parts.context, pending.parts.clouds)
            return
        self._emit_merge(self._state.merge(payload))
        if isinstance(payload, Snapshot):
            self._generations.clear()
        else:
            self._push_generation_delta(payload)
        if pending is not None:
            del self._requests[name]

    def _request_transfer(self, ref: ReplicaRef) -> None:
        self._request_ids += 1
        request = TransferRequest(
            request_id=self._request_ids, sender=self.replica, clock=self._state.clocks()[1]
        )
        self._requests[ref.name] = _Request(ref, self._request_ids)
        self._send(request, ref.name)

    def _forget_request(self, ref: ReplicaRef) -> None:
        """Stop waiting for anything in parts from ``ref``: it went down."""
        pending = self._requests.get(ref.name)
        if pending is not None and pending.ref == ref:
            del self._requests[ref.name]
        parts = self._heartbeat_parts.get(ref.name)
        if parts is not None and parts.sender == ref:
            del self._heartbeat_parts[ref.name]

    def _heard_from(self, ref: ReplicaRef, now: float) -> bool:
        """Liveness bookkeeping for a heartbeat; False when it comes from a retired incarnation."""
        if ref in self._departed:
            return False
        record = self._records.get(ref.name)
        if record is not None and record.ref != ref:
            if ref.vsn < record.ref.vsn:
                return False
            self._apply(record, LivenessInput.NEW_INCARNATION)
            record = None
        if record is None:
            record = ReplicaInfo(ref, now, ReplicaStatus.UNKNOWN)
            self._records[ref.name] = record
        record.last_heard = now
        self._apply(record, LivenessInput.HEARTBEAT)
        return True

    def _apply(self, record: ReplicaInfo, event: LivenessInput) -> None:
        status, actions = transition(record.status, event)
        ref = record.ref
        for action in actions:
            if action is LivenessAction.UP:
                self._events.append(ReplicaUp(replica=ref))
                self._emit_diff(self._state.replica_up(ref), ())
            elif action is LivenessAction.DOWN:
                # Its clock must no longer attract a transfer request.
                self._clockset = [clock for clock in self._clockset if clock[0] != ref]
                self._forget_request(ref)
                self._events.append(ReplicaDown(replica=ref))
                self._emit_diff((), self._state.replica_down(ref))
            else:
                self._clockset = [clock for clock in self._clockset if clock[0] != ref]
                self._forget_request(ref)
                self._events.append(ReplicaPermdown(replica=ref))
                self._state.remove_down_replica(ref)
                self._generations.remove_replica(ref)
        record.status = status
        if status is ReplicaStatus.UNKNOWN and self._records.get(ref.name) is record:
            del self._records[ref.name]
