"""ReplicaState: the replicated presence CRDT (Phoenix.Tracker.State, SPEC §4).

Theory of operation
===================

Every replica owns a set of presence *entries*. An entry's identity is
``(owner, conn, topic, key)``: the owning replica incarnation, a connection id that only needs to
be unique within that replica, the topic and the presence key. Each event of a replica (an add or a
remove) consumes one *dot* ``(replica, clock)``; an entry is tagged with the dot of the add that
created it.

What a replica has observed is its *context* (a version vector: every dot ``1..n`` of replica ``r``
seen) plus *clouds* (dots seen beyond a gap). A remote add is accepted when its dot was not seen
yet and its owner is known (in the context); a stored remote entry is removed when a remote payload
has *seen* its dot but no longer carries it (observed remove). Only the owner ever removes its own
entries, and a merge never removes ours.

Since the last broadcast, every local event is also recorded in the *pending delta*: the adds made
in the window, every dot consumed, and the tombstones of removed entries (ours, and remote ones
whose removal we learned through a merge, so that we gossip it on). The tracker broadcasts the
delta every tick with :meth:`ReplicaState.take_delta`.

Differences from Phoenix, all deliberate:

* identity includes the owner, so two replicas that both use conn ``"c1"`` never collide and
  add-add conflicts between replicas (upstream #214) cannot arise;
* one stored row per identity: a merged add for a stored identity with a newer dot replaces the row
  and reports the old row as a leave; an older dot is ignored (upstream #213);
* replicas marked down are kept in a set that :meth:`ReplicaState.remove_down_replica` prunes
  (upstream #179);
* peers cannot advance our own clock or inject entries in our name.

Storage
=======

Three indexes, chosen for the hot paths (join, merge, get_by_topic, replica_down):

* ``_rows[owner][clock] -> Entry``: the values table by dot (merge, extract, up/down/remove);
* ``_own_ids[conn][(topic, key)] -> Entry`` for our own entries (identity lookups and leave of a
  whole connection) and ``_ids[owner][(conn, topic, key)] -> Entry`` for the others' (identity
  lookups in merges, one flat key per entry);
* ``_topics[topic][owner][clock] -> Entry``: listing a topic while skipping down owners wholesale.

Our own dots are never parked in ``_clouds``: the context entry of our own replica is our clock,
which already covers them. The pending delta keeps only its start clock, the adds and the
tombstones; the window's own dots ``start+1..clock`` are materialised when the delta is taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from typing import Any, NamedTuple, TypeVar

import attrs

from ._errors import AlreadyTracked, InvalidArgument, LocalProtocolError, NoPresence, shown
from ._meta import JSONValue, Meta, copy_meta
from ._vclock import Context, ReplicaRef, compact_cloud, dominates_or_equal, lowerbound, upperbound

__all__ = [
    "Delta",
    "Entry",
    "MergeResult",
    "ReplicaState",
    "Snapshot",
    "SnapshotPart",
    "merge_deltas",
]

Dot = tuple[ReplicaRef, int]


class _EntryFields(NamedTuple):
    topic: str
    key: str
    conn: str
    meta: Mapping[str, JSONValue]
    owner: ReplicaRef
    clock: int


class Entry(_EntryFields):
    """One presence as the CRDT stores it.

    Built by the state and the codec past this constructor (``tuple.__new__``: they made or
    checked every field); built by hand, every field is checked and the meta is copied and frozen
    like one given to :meth:`ReplicaState.join`.

    Attributes:
        topic: the topic the presence is in.
        key: the presence key (several entries may share a key: one per connection).
        conn: the connection id, unique within the owning replica.
        meta: the metadata: the stored object, read-only (a frozen ``dict`` whose mutating
            methods raise a :exc:`LocalProtocolError` that is also a ``TypeError``).
        owner: the replica incarnation that created the entry and alone may remove it.
        clock: the owner's clock at the add; ``(owner, clock)`` is the entry's dot.

    Raises:
        InvalidArgument: ``topic``, ``key`` or ``conn`` is not a ``str``, ``meta`` not a JSON
            object, ``owner`` not a :class:`ReplicaRef`, or ``clock`` not an ``int >= 1``.
    """

    __slots__ = ()

    def __new__(
        cls, topic: str, key: str, conn: str, meta: Meta, owner: ReplicaRef, clock: int
    ) -> Entry:
        for value, name in ((topic, "topic"), (key, "key"), (conn, "conn")):
            if type(value) is not str:
                raise InvalidArgument(f"Entry.{name} must be a str, not {type(value).__name__}")
        if not isinstance(owner, ReplicaRef):
            raise InvalidArgument(f"Entry.owner must be a ReplicaRef, not {type(owner).__name__}")
        if type(clock) is not int or clock < 1:
            raise InvalidArgument(f"Entry.clock must be an int >= 1, not {shown(clock)}")
        try:
            stored = copy_meta(meta)
        except LocalProtocolError as exc:
            raise InvalidArgument(f"Entry.{exc.message}") from None
        return super().__new__(cls, topic, key, conn, stored, owner, clock)

    @property
    def dot(self) -> Dot:
        """The entry's tag: ``(owner, clock)``."""
        return (self.owner, self.clock)


Values = Mapping[ReplicaRef, Mapping[int, Entry]]
Clouds = Mapping[ReplicaRef, frozenset[int]]


def _mapping(value: object, what: str) -> Mapping[Any, Any]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidArgument(f"{what} must be a mapping, not {type(value).__name__}")
    return value


def _frozen_clouds(clouds: Mapping[ReplicaRef, Iterable[int]]) -> dict[ReplicaRef, frozenset[int]]:
    result: dict[ReplicaRef, frozenset[int]] = {}
    for replica, dots in _mapping(clouds, "clouds").items():
        try:
            result[replica] = frozenset(dots)
        except TypeError:  # not iterable, or holding something unhashable
            raise InvalidArgument(f"clouds[{replica!r}] must be a set of ints >= 1") from None
    return result


def _copied_values(values: Values) -> dict[ReplicaRef, dict[int, Entry]]:
    result: dict[ReplicaRef, dict[int, Entry]] = {}
    for owner, rows in _mapping(values, "values").items():
        result[owner] = dict(_mapping(rows, f"values[{owner!r}]"))
    return result


def _copied_context(context: Context) -> dict[ReplicaRef, int]:
    return dict(_mapping(context, "a context"))


def _check_context(context: Context, what: str) -> None:
    for replica, clock in context.items():
        if not isinstance(replica, ReplicaRef):
            raise InvalidArgument(f"{what} keys must be ReplicaRef, not {type(replica).__name__}")
        if type(clock) is not int or clock < 0:
            raise InvalidArgument(f"{what}[{replica!r}] must be an int >= 0, not {shown(clock)}")


def _check_payload(replica: object, values: Values, clouds: Clouds) -> None:
    if not isinstance(replica, ReplicaRef):
        raise InvalidArgument(f"replica must be a ReplicaRef, not {type(replica).__name__}")
    for owner, dots in clouds.items():
        if not isinstance(owner, ReplicaRef):
            raise InvalidArgument(f"clouds keys must be ReplicaRef, not {type(owner).__name__}")
        if any(type(dot) is not int or dot < 1 for dot in dots):
            raise InvalidArgument(f"clouds[{owner!r}] must hold ints >= 1")
    for owner, rows in values.items():
        for clock, entry in rows.items():
            if not isinstance(entry, Entry):
                raise InvalidArgument(f"values must hold Entry, not {type(entry).__name__}")
            if entry.owner != owner or entry.clock != clock:
                raise InvalidArgument(f"entry {entry!r} is filed under dot ({owner!r}, {clock})")


_Payload = TypeVar("_Payload", "Snapshot", "SnapshotPart", "Delta")


def _trusted(cls: type[_Payload], **fields: object) -> _Payload:
    """Build a Snapshot or Delta from fields the caller already owns and validated.

    The public constructors copy and check every entry; the state and the codec build payloads
    from data they made or checked themselves, so they skip that work (an extract of 100,000
    entries would otherwise be checked twice). Every field must be a private, never-mutated copy.
    """
    payload = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(payload, name, value)
    return payload


@attrs.frozen(kw_only=True)
class Snapshot:
    """A full-state extract: what a transfer carries when no delta generation fits (SPEC §4.5).

    Built by :meth:`ReplicaState.extract` (or decoded from the wire); merged with
    :meth:`ReplicaState.merge`.

    Attributes:
        replica: the replica that extracted it.
        context: its context, restricted to the replicas the requester knows.
        clouds: its clouds, likewise restricted.
        values: the entries, by owner then clock, without the requester's own and without those of
            replicas the requester does not know.
    """

    replica: ReplicaRef
    context: Mapping[ReplicaRef, int] = attrs.field(converter=_copied_context)
    clouds: Mapping[ReplicaRef, frozenset[int]] = attrs.field(converter=_frozen_clouds)
    values: Mapping[ReplicaRef, Mapping[int, Entry]] = attrs.field(converter=_copied_values)

    def __attrs_post_init__(self) -> None:
        _check_payload(self.replica, self.values, self.clouds)
        _check_context(self.context, "context")

    def entries(self) -> Iterator[Entry]:
        """Every entry carried, owner by owner."""
        for rows in self.values.values():
            yield from rows.values()


def _ranges(value: Mapping[ReplicaRef, tuple[int, int]]) -> dict[ReplicaRef, tuple[int, int]]:
    ranges: dict[ReplicaRef, tuple[int, int]] = {}
    for owner, span in _mapping(value, "ranges").items():
        if not isinstance(span, (tuple, list)) or len(span) != 2:
            raise InvalidArgument(
                f"ranges[{owner!r}] must be a pair (first, last), not {shown(span)}"
            )
        first, last = span
        ranges[owner] = (first, last)
    return ranges


@attrs.frozen(kw_only=True)
class SnapshotPart:
    """One part of a full-state extract too large for one message (``docs/wire.rst``).

    A part *covers*, for each owner it names, the dots ``first < clock <= last`` of
    ``ranges[owner]`` and the dots in ``clouds[owner]``: the sender had seen every one of them,
    and ``values`` holds exactly its live entries among them. Merging a part
    (:meth:`ReplicaState.merge_part`) adds and removes within what it covers and nowhere else,
    so parts merge in any order and any number of times, and a lost part only leaves its dots
    unknown: it never removes what another part carries.

    ``context`` is the whole extract's, the same in every part. It joins the receiver's, with
    the parts' clouds, only once every part of one reply was merged
    (:meth:`ReplicaState.complete_parts`): a covered dot may be a remove whose removed entry is
    in another part.

    Attributes:
        replica: the replica that extracted it.
        context: the whole extract's context.
        ranges: per owner, the dots ``(first, last]`` covered, with ``last`` at most the context.
        clouds: per owner, further dots covered (observed beyond the context).
        values: the live entries among the covered dots, by owner then clock.
    """

    replica: ReplicaRef
    context: Mapping[ReplicaRef, int] = attrs.field(converter=_copied_context)
    ranges: Mapping[ReplicaRef, tuple[int, int]] = attrs.field(converter=_ranges)
    clouds: Mapping[ReplicaRef, frozenset[int]] = attrs.field(converter=_frozen_clouds)
    values: Mapping[ReplicaRef, Mapping[int, Entry]] = attrs.field(converter=_copied_values)

    def __attrs_post_init__(self) -> None:
        _check_payload(self.replica, self.values, self.clouds)
        _check_context(self.context, "context")
        for owner, (first, last) in self.ranges.items():
            upto = self.context.get(owner)
            if upto is None:
                raise InvalidArgument(f"ranges[{owner!r}]: the owner is not in the context")
            if type(first) is not int or type(last) is not int or not 0 <= first < last <= upto:
                raise InvalidArgument(
                    f"ranges[{owner!r}] must be ints 0 <= first < last <= {upto}, "
                    f"not ({shown(first)}, {shown(last)})"
                )
        for owner, rows in self.values.items():
            first, last = self.ranges.get(owner, (0, 0))
            cloud = self.clouds.get(owner, frozenset())
            for clock in rows:
                if not (first < clock <= last or clock in cloud):
                    raise InvalidArgument(
                        f"values[{owner!r}][{clock}] is outside what the part covers"
                    )

    def entries(self) -> Iterator[Entry]:
        """Every entry carried, owner by owner."""
        for rows in self.values.values():
            yield from rows.values()


@attrs.frozen(kw_only=True)
class Delta:
    """A delta-state: the events of one or more broadcast windows (SPEC §4.2).

    Attributes:
        replica: the replica that produced it.
        values: the adds made in the window that were not removed within it, by owner then clock.
        clouds: every dot of the window (adds, removes and tombstones of removed entries).
        start: the context at the start of the window.
        end: the context at the end of the window.
    """

    replica: ReplicaRef
    values: Mapping[ReplicaRef, Mapping[int, Entry]] = attrs.field(converter=_copied_values)
    clouds: Mapping[ReplicaRef, frozenset[int]] = attrs.field(converter=_frozen_clouds)
    start: Mapping[ReplicaRef, int] = attrs.field(converter=_copied_context)
    end: Mapping[ReplicaRef, int] = attrs.field(converter=_copied_context)

    def __attrs_post_init__(self) -> None:
        _check_payload(self.replica, self.values, self.clouds)
        _check_context(self.start, "start")
        _check_context(self.end, "end")

    @property
    def size(self) -> int:
        """Number of values plus number of dots in the clouds (the measure of delta size caps)."""
        return sum(len(rows) for rows in self.values.values()) + sum(
            len(dots) for dots in self.clouds.values()
        )

    def is_empty(self) -> bool:
        """True if the window holds no event at all (no dot in any cloud)."""
        return not any(self.clouds.values())

    def entries(self) -> Iterator[Entry]:
        """Every entry carried, owner by owner."""
        for rows in self.values.values():
            yield from rows.values()

    def extract(self, remote_ref: ReplicaRef | None, remote_context: Context) -> Delta:
        """This delta as sent to ``remote_ref``: only replicas it knows, never its own entries.

        With ``remote_ref=None`` no replica's entries are left out (see
        :meth:`ReplicaState.extract`).
        """
        known = remote_context.keys()
        return _trusted(
            Delta,
            replica=self.replica,
            values={
                owner: rows
                for owner, rows in self.values.items()
                if owner != remote_ref and owner in known
            },
            clouds={r: dots for r, dots in self.clouds.items() if r in known},
            start={r: c for r, c in self.start.items() if r in known},
            end={r: c for r, c in self.end.items() if r in known},
        )

    def without_replica(self, replica: ReplicaRef) -> Delta:
        """This delta with every trace of a permanently down ``replica`` removed."""
        return _trusted(
            Delta,
            replica=self.replica,
            values={owner: rows for owner, rows in self.values.items() if owner != replica},
            clouds={r: dots for r, dots in self.clouds.items() if r != replica},
            start={r: c for r, c in self.start.items() if r != replica},
            end={r: c for r, c in self.end.items() if r != replica},
        )


def merge_deltas(a: Delta, b: Delta) -> Delta | None:
    """Join two deltas into one covering both windows, or ``None`` if they are not contiguous.

    Two deltas are contiguous when each one's end dominates-or-equals the other's start. The
    result spans the lower bound of the starts to the upper bound of the ends and holds every dot
    of both. A value survives unless the other delta observed its removal (has its dot without
    the value); a concurrent add of a different dot always survives.

    Raises:
        InvalidArgument: ``a`` or ``b`` is not a :class:`Delta`.
    """
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, Delta):
            raise InvalidArgument(f"{name} must be a Delta, not {type(value).__name__}")
    if not (dominates_or_equal(b.end, a.start) and dominates_or_equal(a.end, b.start)):
        return None
    # A generation ``a`` is often large and ``b`` a single window: copy ``a`` wholesale (C-level)
    # and walk only ``b``. Payloads are immutable, so unchanged rows and clouds are shared.
    clouds: dict[ReplicaRef, frozenset[int]] = dict(a.clouds)
    for replica, dots in b.clouds.items():
        mine = clouds.get(replica)
        clouds[replica] = dots if mine is None else mine | dots
    values: dict[ReplicaRef, Mapping[int, Entry]] = {}
    for owner, rows in a.values.items():
        theirs = b.values.get(owner, {})
        observed = b.clouds.get(owner)
        if not observed:
            kept: Mapping[int, Entry] = rows
        elif len(observed) < len(rows):
            trimmed = dict(rows)
            for dot in observed:
                if dot in trimmed and dot not in theirs:
                    del trimmed[dot]
            kept = trimmed
        else:
            kept = {c: e for c, e in rows.items() if c in theirs or c not in observed}
        if kept:
            values[owner] = kept
    for owner, rows in b.values.items():
        ours = a.values.get(owner, {})
        seen = a.clouds.get(owner, frozenset())
        added = {c: e for c, e in rows.items() if c not in ours and c not in seen}
        if added:
            existing = values.get(owner)
            values[owner] = added if existing is None else {**existing, **added}
    return _trusted(
        Delta,
        replica=a.replica,
        values=values,
        clouds=clouds,
        start=lowerbound(a.start, b.start),
        end=upperbound(a.end, b.end),
    )


@attrs.frozen(kw_only=True)
class MergeResult:
    """What a merge (or a replica going up or down) changed in the visible presences.

    Attributes:
        joins: entries that appeared, in a deterministic order.
        leaves: entries that disappeared; a replaced entry (a remote update) shows up here with its
            old meta while the new one is in ``joins``.
    """

    joins: tuple[Entry, ...] = ()
    leaves: tuple[Entry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves)


def _check_str(value: object, what: str) -> str:
    if type(value) is not str:
        raise LocalProtocolError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _check_ref(value: object, what: str) -> ReplicaRef:
    if not isinstance(value, ReplicaRef):
        raise LocalProtocolError(f"{what} must be a ReplicaRef, not {type(value).__name__}")
    return value


class ReplicaState:
    """The presence CRDT of one replica (Phoenix.Tracker.State, SPEC §4, upstream bugs fixed).

    It is a plain, synchronous, deterministic object: no clock, no randomness, no I/O. The
    :class:`~presence_core.Tracker` drives one; experts and conformance tests may drive it directly.

    Every method validates its arguments before changing anything: a call that raises leaves the
    state exactly as it was.

    Args:
        replica: this replica's identity.

    Raises:
        LocalProtocolError: ``replica`` is not a :class:`ReplicaRef`, or its name is not valid
            Unicode (a lone surrogate): no message could carry it.
    """

    __slots__ = (
        "_clock",
        "_clouds",
        "_context",
        "_delta_start",
        "_delta_tombs",
        "_delta_values",
        "_down",
        "_ids",
        "_own_ids",
        "_own_topics",
        "_rows",
        "_topics",
        "replica",
    )

    def __init__(self, replica: ReplicaRef) -> None:
        self.replica: ReplicaRef = _check_ref(replica, "replica")
        name = self.replica.name
        if not name.isascii():
            try:
                name.encode()
            except UnicodeEncodeError:
                raise LocalProtocolError(
                    "replica.name is not valid Unicode (a lone surrogate): "
                    "no message could carry it"
                ) from None
        # Our own clock lives in ``_clock``; ``_context`` holds the other replicas only.
        self._clock = 0
        self._context: dict[ReplicaRef, int] = {}
        self._clouds: dict[ReplicaRef, set[int]] = {}
        # Rows of the other replicas by dot; ours are found through ``_own_topics``.
        self._rows: dict[ReplicaRef, dict[int, Entry]] = {}
        self._own_ids: dict[str, dict[tuple[str, str], Entry]] = {}
        self._ids: dict[ReplicaRef, dict[tuple[str, str, str], Entry]] = {}
        self._topics: dict[str, dict[ReplicaRef, dict[int, Entry]]] = {}
        # Our own rows of each topic: the same dicts as ``_topics[topic][replica]``.
        self._own_topics: dict[str, dict[int, Entry]] = {}
        self._down: set[ReplicaRef] = set()
        self._delta_start = 0
        self._delta_values: dict[int, Entry] = {}
        self._delta_tombs: dict[ReplicaRef, set[int]] = {}

    def __repr__(self) -> str:
        return f"<ReplicaState {self.replica!r} clock={self.clock} entries={len(self)}>"

    def __len__(self) -> int:
        """Number of stored entries, including hidden entries of down replicas."""
        own = sum(len(rows) for rows in self._own_topics.values())
        return own + sum(len(rows) for rows in self._rows.values())

    def _own_by_dot(self) -> dict[int, Entry]:
        rows: dict[int, Entry] = {}
        for topic_rows in self._own_topics.values():
            rows.update(topic_rows)
        return rows

    # ------------------------------------------------------------------ clocks

    @property
    def clock(self) -> int:
        """This replica's own clock: the number of events it has made."""
        return self._clock

    @property
    def context(self) -> Mapping[ReplicaRef, int]:
        """The full causal context, including replicas marked down (a read-only copy)."""
        return {self.replica: self._clock, **self._context}

    @property
    def clouds(self) -> Mapping[ReplicaRef, frozenset[int]]:
        """Dots observed beyond the context, per replica (a read-only copy; empty sets omitted)."""
        return {r: frozenset(dots) for r, dots in self._clouds.items() if dots}

    def clocks(self) -> tuple[ReplicaRef, dict[ReplicaRef, int]]:
        """What this replica announces: ``(replica, context without replicas marked down)``."""
        down = self._down
        context = {self.replica: self._clock}
        if not down:
            context.update(self._context)
        else:
            context.update((r, c) for r, c in self._context.items() if r not in down)
        return self.replica, context

    def seen(self, owner: ReplicaRef, clock: int) -> bool:
        """True if the dot ``(owner, clock)`` is covered by the context or the clouds."""
        if owner == self.replica:
            return clock <= self._clock
        known = self._context.get(owner)
        if known is not None and clock <= known:
            return True
        dots = self._clouds.get(owner)
        return dots is not None and clock in dots

    # ------------------------------------------------------------------ replicas

    def replicas(self) -> Mapping[ReplicaRef, bool]:
        """Every replica in the context, mapped to ``True`` when up and ``False`` when down."""
        down = self._down
        return {self.replica: True, **{r: r not in down for r in self._context}}

    def is_down(self, replica: ReplicaRef) -> bool:
        """True if ``replica`` is marked down (its entries are hidden but kept)."""
        return replica in self._down

    def down_replicas(self) -> frozenset[ReplicaRef]:
        """The replicas marked down and not yet removed."""
        return frozenset(self._down)

    def replica_up(self, replica: ReplicaRef) -> tuple[Entry, ...]:
        """Mark ``replica`` up (adding it to the context at clock 0 if new).

        Returns:
            The joins: every entry stored for that replica (they become visible again after a
            netsplit heals; a new replica has none).

        Raises:
            LocalProtocolError: ``replica`` is not a ReplicaRef or is this replica.
        """
        replica = self._check_other(replica)
        self._context.setdefault(replica, 0)
        self._rows.setdefault(replica, {})
        self._down.discard(replica)
        return tuple(self._rows[replica].values())

    def replica_down(self, replica: ReplicaRef) -> tuple[Entry, ...]:
        """Mark ``replica`` down: its entries are hidden from queries and clocks, but kept.

        Returns:
            The leaves: every entry stored for that replica.

        Raises:
            LocalProtocolError: ``replica`` is not a ReplicaRef or is this replica.
        """
        replica = self._check_other(replica)
        self._down.add(replica)
        rows = self._rows.get(replica)
        return tuple(rows.values()) if rows else ()

    def remove_down_replica(self, replica: ReplicaRef) -> tuple[Entry, ...]:
        """Forget ``replica`` for good (permdown): its entries, context entry, clouds and status.

        No leaves are due (they were reported when it went down). The replica also leaves the set
        of down replicas, so a cluster that restarts nodes for months keeps constant bookkeeping.

        Returns:
            The entries that were deleted.

        Raises:
            LocalProtocolError: ``replica`` is not a ReplicaRef or is this replica.
        """
        replica = self._check_other(replica)
        rows = self._rows.pop(replica, {})
        self._ids.pop(replica, None)
        topics = self._topics
        for topic in {entry.topic for entry in rows.values()}:
            by_owner = topics[topic]
            del by_owner[replica]
            if not by_owner:
                del topics[topic]
        self._context.pop(replica, None)
        self._clouds.pop(replica, None)
        self._delta_tombs.pop(replica, None)
        self._down.discard(replica)
        return tuple(rows.values())

    def _check_other(self, replica: object) -> ReplicaRef:
        ref = _check_ref(replica, "replica")
        if ref == self.replica:
            raise LocalProtocolError(f"{ref!r} is this replica itself")
        return ref

    # ------------------------------------------------------------------ local operations

    def join(self, conn: str, topic: str, key: str, meta: Meta) -> Entry:
        """Add a presence owned by this replica (one dot).

        Returns:
            The stored entry.

        Raises:
            AlreadyTracked: this replica already has ``(conn, topic, key)``.
            LocalProtocolError: an argument has the wrong type or ``meta`` is not JSON-compatible.
        """
        if type(conn) is not str or type(topic) is not str or type(key) is not str:
            _check_str(conn, "conn")
            _check_str(topic, "topic")
            _check_str(key, "key")
        return self._add_own(conn, topic, key, copy_meta(meta))

    def _add_own(self, conn: str, topic: str, key: str, stored: dict[str, JSONValue]) -> Entry:
        """:meth:`join` once the arguments are checked and ``stored`` is a private copy."""
        replica = self.replica
        clock = self._clock + 1
        entry = _new_entry(Entry, (topic, key, conn, stored, replica, clock))
        identity = (topic, key)
        by_conn = self._own_ids.get(conn)
        if by_conn is None:
            self._own_ids[conn] = {identity: entry}
        elif by_conn.setdefault(identity, entry) is not entry:
            raise AlreadyTracked(conn, topic, key)
        self._clock = clock
        rows = self._own_topics.get(topic)
        if rows is None:
            rows = self._own_topics[topic] = {}
            by_owner = self._topics.get(topic)
            if by_owner is None:
                self._topics[topic] = {replica: rows}
            else:
                by_owner[replica] = rows
        rows[clock] = entry
        self._delta_values[clock] = entry
        return entry

    def leave(self, conn: str, topic: str, key: str) -> Entry | None:
        """Remove this replica's presence ``(conn, topic, key)`` (one dot), if there is one.

        Returns:
            The removed entry, or ``None`` when there was nothing to remove (no dot is used then).

        Raises:
            LocalProtocolError: an argument is not a str.
        """
        if type(conn) is not str or type(topic) is not str or type(key) is not str:
            _check_str(conn, "conn")
            _check_str(topic, "topic")
            _check_str(key, "key")
        by_conn = self._own_ids.get(conn)
        if by_conn is None:
            return None
        entry = by_conn.get((topic, key))
        if entry is not None:
            self._remove_own(entry, by_conn)
        return entry

    def leave_conn(self, conn: str) -> tuple[Entry, ...]:
        """Remove every presence of this replica's connection ``conn`` (one dot each).

        Returns:
            The removed entries, in the order they were added.

        Raises:
            LocalProtocolError: ``conn`` is not a str.
        """
        _check_str(conn, "conn")
        by_conn = self._own_ids.get(conn)
        if not by_conn:
            return ()
        removed = tuple(sorted(by_conn.values(), key=_by_clock))
        for entry in removed:
            self._remove_own(entry, by_conn)
        return removed

    def update(self, conn: str, topic: str, key: str, meta: Meta) -> tuple[Entry, Entry]:
        """Replace the meta of this replica's presence ``(conn, topic, key)`` (two dots).

        The old dot is tombstoned, one dot is used for the remove and one for the new add; the
        row is replaced in place, so readers never see the presence missing.

        Returns:
            ``(old_entry, new_entry)``.

        Raises:
            NoPresence: there is no such presence.
            LocalProtocolError: an argument has the wrong type or ``meta`` is not JSON-compatible.
        """
        old = self.get(conn, topic, key)
        if old is None:
            raise NoPresence(conn, topic, key)
        return old, self._replace_own(old, copy_meta(meta))

    def _replace_own(self, old: Entry, stored: dict[str, JSONValue]) -> Entry:
        """:meth:`update` of the stored entry ``old`` once ``stored`` is a private copy."""
        topic, key, conn, _meta, replica, _clock = old
        self._delta_values.pop(old.clock, None)
        self._delta_tombs.setdefault(replica, set()).add(old.clock)
        clock = self._clock + 2
        self._clock = clock
        new = _new_entry(Entry, (topic, key, conn, stored, replica, clock))
        self._own_ids[conn][(topic, key)] = new
        rows = self._own_topics[topic]
        del rows[old.clock]
        rows[clock] = new
        self._delta_values[clock] = new
        return new

    def _remove_own(self, entry: Entry, by_conn: dict[tuple[str, str], Entry]) -> None:
        topic, key, conn, _meta, replica, clock = entry
        del by_conn[(topic, key)]
        if not by_conn:
            del self._own_ids[conn]
        rows = self._own_topics[topic]
        del rows[clock]
        if not rows:
            del self._own_topics[topic]
            by_owner = self._topics[topic]
            del by_owner[replica]
            if not by_owner:
                del self._topics[topic]
        self._delta_values.pop(clock, None)
        tombs = self._delta_tombs.get(replica)
        if tombs is None:
            self._delta_tombs[replica] = {clock}
        else:
            tombs.add(clock)
        self._clock += 1

    def _unlink(self, entry: Entry) -> None:
        """Drop another replica's entry from every index."""
        topic, key, conn, _meta, owner, clock = entry
        del self._rows[owner][clock]
        del self._ids[owner][(conn, topic, key)]
        by_owner = self._topics[topic]
        rows = by_owner[owner]
        del rows[clock]
        if not rows:
            del by_owner[owner]
            if not by_owner:
                del self._topics[topic]

    # ------------------------------------------------------------------ queries

    def get_by_topic(self, topic: str) -> list[Entry]:
        """The visible entries of ``topic`` (entries of replicas marked down are hidden).

        Entries come owner by owner (in the order owners first appeared in the topic), then in
        the order they were stored.

        Raises:
            LocalProtocolError: an argument has the wrong type.
        """
        if type(topic) is not str:
            _check_str(topic, "topic")
        by_owner = self._topics.get(topic)
        if by_owner is None:
            return []
        down = self._down
        if len(by_owner) == 1:
            ((owner, rows),) = by_owner.items()
            return [] if owner in down else list(rows.values())
        result: list[Entry] = []
        for owner, rows in by_owner.items():
            if owner not in down:
                result.extend(rows.values())
        return result

    def count(self, topic: str) -> int:
        """The number of visible entries of ``topic``, without building them.

        Raises:
            LocalProtocolError: an argument has the wrong type.
        """
        if type(topic) is not str:
            _check_str(topic, "topic")
        by_owner = self._topics.get(topic)
        if by_owner is None:
            return 0
        down = self._down
        return sum(len(rows) for owner, rows in by_owner.items() if owner not in down)

    def get_by_key(self, topic: str, key: str) -> list[Entry]:
        """The visible entries of ``topic`` under ``key`` (one per connection).

        Raises:
            LocalProtocolError: an argument has the wrong type.
        """
        _check_str(topic, "topic")
        _check_str(key, "key")
        by_owner = self._topics.get(topic)
        if by_owner is None:
            return []
        down = self._down
        return [
            entry
            for owner, rows in by_owner.items()
            if owner not in down
            for entry in rows.values()
            if entry.key == key
        ]

    def get_by_conn(self, conn: str, owner: ReplicaRef | None = None) -> list[Entry]:
        """The entries of connection ``conn`` of ``owner`` (this replica by default).

        Connection ids are only unique within their replica, hence the owner. Entries of a down
        owner are hidden.

        Raises:
            LocalProtocolError: an argument has the wrong type.
        """
        _check_str(conn, "conn")
        if owner is not None:
            _check_ref(owner, "owner")
        if owner is None or owner == self.replica:
            return sorted(self._own_ids.get(conn, {}).values(), key=_by_clock)
        if owner in self._down:
            return []
        # Other replicas' entries are indexed by full identity only: a scan of that owner's.
        found = [e for (c, _, _), e in self._ids.get(owner, {}).items() if c == conn]
        return sorted(found, key=_by_clock)

    def get(self, conn: str, topic: str, key: str, owner: ReplicaRef | None = None) -> Entry | None:
        """The entry with this identity (``owner`` defaults to this replica), hidden or not.

        Raises:
            LocalProtocolError: an argument has the wrong type.
        """
        _check_str(conn, "conn")
        _check_str(topic, "topic")
        _check_str(key, "key")
        if owner is not None:
            _check_ref(owner, "owner")
        if owner is None or owner == self.replica:
            by_conn = self._own_ids.get(conn)
            return None if by_conn is None else by_conn.get((topic, key))
        return self._ids.get(owner, {}).get((conn, topic, key))

    def topics(self) -> list[str]:
        """Every topic with at least one visible entry, sorted."""
        down = self._down
        return sorted(
            topic
            for topic, by_owner in self._topics.items()
            if any(owner not in down for owner in by_owner)
        )

    def entries(self) -> Iterator[Entry]:
        """Every stored entry, visible or hidden: ours first, then each other owner's."""
        for own in self._own_topics.values():
            yield from own.values()
        for rows in self._rows.values():
            yield from rows.values()

    def visible_entries(self) -> Iterator[Entry]:
        """Every entry whose owner is not marked down: ours first, then each other owner's."""
        for own in self._own_topics.values():
            yield from own.values()
        down = self._down
        for owner, rows in self._rows.items():
            if owner not in down:
                yield from rows.values()

    # ------------------------------------------------------------------ delta

    def has_delta(self) -> bool:
        """True if any event happened since the delta was last taken or reset."""
        return self._clock > self._delta_start or any(self._delta_tombs.values())

    @property
    def pending_delta(self) -> Delta:
        """The pending delta, as a new :class:`Delta` (the state keeps it)."""
        return self._pending_delta(dict(self._delta_values))

    def _pending_delta(self, values: dict[int, Entry]) -> Delta:
        replica = self.replica
        clock = self._clock
        clouds = {r: frozenset(dots) for r, dots in self._delta_tombs.items() if dots}
        if clock > self._delta_start:
            window = range(self._delta_start + 1, clock + 1)
            clouds[replica] = clouds.get(replica, frozenset()).union(window)
        return _trusted(
            Delta,
            replica=replica,
            values={replica: values} if values else {},
            clouds=clouds,
            start={replica: self._delta_start},
            end={replica: clock},
        )

    def reset_delta(self) -> None:
        """Drop the pending delta and start a new window at the current clock."""
        self._delta_start = self._clock
        self._delta_values = {}
        self._delta_tombs = {}

    def take_delta(self) -> Delta:
        """Return the pending delta, then reset it (what a broadcast does).

        Clouds need no compaction here: merges keep them compact as they go (see :meth:`_see`).
        """
        delta = self._pending_delta(self._delta_values)  # reset_delta gives up this dict
        self.reset_delta()
        return delta

    def compact(self) -> None:
        """Fold contiguous cloud dots into the context (SPEC §4.4).

        Merges already keep every cloud compact, so this only matters to code that edits the
        clouds by hand; it costs a sort of every cloud.
        """
        context = self._context
        clouds = self._clouds
        for replica, dots in clouds.items():
            if dots:
                # Clouds are only kept for replicas in the context (merges and removals see to it).
                context[replica], clouds[replica] = compact_cloud(context[replica], dots)

    @property
    def cloud_dots(self) -> int:
        """How many dots the clouds hold, over every replica (what ``max_cloud_dots`` bounds)."""
        return sum(len(dots) for dots in self._clouds.values())

    # ------------------------------------------------------------------ extract and merge

    def extract(self, remote_ref: ReplicaRef | None, remote_context: Context) -> Snapshot:
        """The full state as sent to ``remote_ref`` (SPEC §4.5).

        Only replicas in ``remote_context`` are included (a requester never receives entries of a
        replica it does not know or considers down), and never the requester's own entries.

        ``remote_ref=None`` keeps the requester's own entries too. The tracker's transfer replies
        do that, as Phoenix's do: a reply without them but with their dots would make the
        requester's delta generations forget its own live entries.

        Raises:
            LocalProtocolError: ``remote_ref`` is not a ReplicaRef, or ``remote_context`` is not
                a mapping.
        """
        if remote_ref is not None:
            _check_ref(remote_ref, "remote_ref")
        if type(remote_context) is not dict and not isinstance(remote_context, Mapping):
            raise LocalProtocolError(
                f"remote_context must be a mapping, not {type(remote_context).__name__}"
            )
        me = self.replica
        context = self.context
        known = [r for r in remote_context if r in context]
        return _trusted(
            Snapshot,
            replica=me,
            context={r: context[r] for r in known},
            clouds={r: frozenset(self._clouds[r]) for r in known if r in self._clouds},
            values={
                r: self._own_by_dot() if r == me else dict(self._rows[r])
                for r in known
                if r != remote_ref and (self._own_topics if r == me else self._rows.get(r))
            },
        )

    def merge(self, remote: Snapshot | Delta) -> MergeResult:
        """Merge a full extract or a delta from another replica (SPEC §4.6).

        Adds whose dot we have not seen are accepted if their owner is known; stored remote entries
        whose dot the remote has seen but no longer carries are removed (and tombstoned in our
        pending delta, so we gossip the removal on). Merging the same payload twice changes nothing
        the second time. Every dot the payload has seen becomes seen here.

        Returns:
            The joins and leaves. A remote update is a leave of the old entry and a join of the new.

        Raises:
            LocalProtocolError: ``remote`` is neither a Snapshot nor a Delta (a part of a message
                sent in parts goes to :meth:`merge_part`).
        """
        if isinstance(remote, Snapshot):
            covered: Mapping[ReplicaRef, tuple[int, int]] = {
                owner: (0, clock) for owner, clock in remote.context.items()
            }
        elif isinstance(remote, Delta):
            covered = {}
        else:
            hint = " (a part goes to merge_part)" if isinstance(remote, SnapshotPart) else ""
            raise LocalProtocolError(
                f"can only merge a Snapshot or a Delta, not {type(remote).__name__}{hint}"
            )
        return self._merge(remote, covered, whole=True)

    def merge_part(self, part: SnapshotPart | Delta) -> MergeResult:
        """Merge one part of a message sent in parts (a :class:`SnapshotPart`, or a delta's part).

        It adds and removes as :meth:`merge` does, within the dots the part covers only, so parts
        merge in any order and any number of times. But of the dots it covers, only those of the
        entries it adds become seen here: a covered dot may be a remove whose removed entry is
        covered by another part, and seeing the remove before that part arrives would keep the
        removed entry for good. Once every part of the message was merged, the caller (who counts
        them; the tracker does) hands their dots to :meth:`complete_parts`.

        Raises:
            LocalProtocolError: ``part`` is neither a SnapshotPart nor a Delta.
        """
        if isinstance(part, SnapshotPart):
            covered: Mapping[ReplicaRef, tuple[int, int]] = part.ranges
        elif isinstance(part, Delta):
            covered = {}
        else:
            raise LocalProtocolError(
                f"can only merge a SnapshotPart or a Delta as a part, not {type(part).__name__}"
            )
        return self._merge(part, covered, whole=False)

    def complete_parts(self, context: Context, clouds: Mapping[ReplicaRef, Iterable[int]]) -> None:
        """See every dot of a message sent in parts, once all its parts were merged.

        ``context`` is a full extract's context (empty for a delta), ``clouds`` the union of the
        parts' clouds. Every removal they speak for has been applied by then, so the dots can be
        seen safely. Replicas we do not know, and our own, are skipped as in a merge.
        """
        self._see(context, clouds)

    def _merge(
        self,
        remote: Snapshot | SnapshotPart | Delta,
        covered: Mapping[ReplicaRef, tuple[int, int]],
        *,
        whole: bool,
    ) -> MergeResult:
        # ``covered``: what the remote speaks for below its clouds, per owner: dots (first, last].
        me = self.replica
        context = self._context
        clouds = self._clouds
        remote_values = remote.values
        remote_clouds = remote.clouds

        # 1. Adds we have not seen, of owners we know (never our own: only we make those).
        adds: list[tuple[ReplicaRef, dict[int, Entry]]] = []
        for owner, rows in remote_values.items():
            known = context.get(owner)
            if known is None or owner == me:
                continue
            dots = clouds.get(owner)
            if dots:
                accepted = {c: e for c, e in rows.items() if c > known and c not in dots}
            elif known:
                accepted = {c: e for c, e in rows.items() if c > known}
            else:
                accepted = dict(rows)
            if accepted:
                adds.append((owner, accepted))

        # 2. Observed removes: our copies of remote entries that the remote has seen but dropped.
        removed: list[Entry] = []
        for owner in _union_keys(covered, remote_clouds):
            stored = self._rows.get(owner)
            if not stored or owner == me:
                continue
            carried = remote_values.get(owner, {})
            first, last = covered.get(owner, (0, 0))
            observed = remote_clouds.get(owner, frozenset())
            candidates: Iterable[Entry]
            if last - first + len(observed) < len(stored):
                # Fewer covered dots than stored rows (a delta, a part): look the dots up.
                covered_dots = chain(range(first + 1, last + 1), sorted(observed))
                candidates = [stored[c] for c in covered_dots if c in stored]
            else:
                candidates = list(stored.values())
            removed.extend(
                e
                for e in candidates
                if e.clock not in carried and (first < e.clock <= last or e.clock in observed)
            )

        if not adds and not removed:
            self._merge_causality(remote, (), whole=whole)
            return MergeResult()

        leaves: list[Entry] = []
        tombs = self._delta_tombs
        for entry in removed:
            self._unlink(entry)
            owner_tombs = tombs.get(entry.owner)
            if owner_tombs is None:
                tombs[entry.owner] = {entry.clock}
            else:
                owner_tombs.add(entry.clock)
            leaves.append(entry)

        # 3. Adds: one row per identity; a newer dot of the owner replaces, an older one is stale.
        # This loop runs once per entry of a full transfer, so the indexes are filled inline.
        joins: list[Entry] = []
        dropped: set[int] = set()  # ids of entries this merge ends up not joining after all
        topics = self._topics
        for owner, accepted in adds:
            rows = self._rows.setdefault(owner, {})
            rows.update(accepted)
            ids = self._ids.setdefault(owner, {})
            owner_topics: dict[str, dict[int, Entry]] = {}  # topic -> this owner's rows there
            for clock, entry in accepted.items():
                topic, key, conn, _meta, _owner, _clock = entry
                identity = (conn, topic, key)
                old = ids.setdefault(identity, entry)
                if old is not entry:
                    if old.clock > clock:
                        # A stale add (upstream #213): the newer row stays.
                        del rows[clock]
                        dropped.add(id(entry))
                        continue
                    self._unlink(old)
                    owner_topics.clear()  # the unlink may have dropped a cached topic dict
                    ids[identity] = entry
                    if self.seen(owner, old.clock):
                        leaves.append(old)
                    else:  # two dots of one identity in this very payload
                        dropped.add(id(old))
                topic_rows = owner_topics.get(topic)
                if topic_rows is None:
                    by_owner = topics.get(topic)
                    if by_owner is None:
                        by_owner = topics[topic] = {}
                    topic_rows = by_owner.get(owner)
                    if topic_rows is None:
                        topic_rows = by_owner[owner] = {}
                    owner_topics[topic] = topic_rows
                topic_rows[clock] = entry
            joins.extend(accepted.values())
        if dropped:
            joins = [e for e in joins if id(e) not in dropped]

        self._merge_causality(remote, adds, whole=whole)
        return MergeResult(joins=tuple(joins), leaves=tuple(leaves))

    def _merge_causality(
        self,
        remote: Snapshot | SnapshotPart | Delta,
        adds: Iterable[tuple[ReplicaRef, Mapping[int, Entry]]],
        *,
        whole: bool,
    ) -> None:
        if whole:
            # Unlike Phoenix, the dots of removed entries stay in the clouds: they have been
            # observed, and forgetting one beyond a gap would let a redelivered add bring the
            # entry back.
            self._see(remote.context if isinstance(remote, Snapshot) else {}, remote.clouds)
        else:
            # A part: only the adds it made are seen (see merge_part).
            self._see({}, {owner: accepted.keys() for owner, accepted in adds})

    def _see(
        self, remote_context: Context, remote_clouds: Mapping[ReplicaRef, Iterable[int]]
    ) -> None:
        """Make the dots of ``remote_context`` and ``remote_clouds`` seen, compacting as it goes.

        Clouds are kept compact at all times (every dot above the context, and never the dot
        right after it), so compaction here only looks at what this call changed: it costs the
        dots received plus the dots folded, never a pass over a large cloud that a message did
        not touch (a peer could otherwise make every merge re-sort a million parked dots).
        """
        me = self.replica
        context = self._context
        clouds = self._clouds
        for replica, clock in remote_context.items():
            known = context.get(replica)
            if known is not None and clock > known and replica != me:
                context[replica] = clock
                mine = clouds.get(replica)
                if mine:
                    # The context jumped past parked dots: they are now below it.
                    mine.difference_update([dot for dot in mine if dot <= clock])
                    self._fold(replica)
        for replica, dots in remote_clouds.items():
            if not dots or replica == me:
                continue
            known = context.get(replica)
            if known is None:
                continue
            fresh = [dot for dot in dots if dot > known]
            if not fresh:
                continue
            mine = clouds.get(replica)
            if mine is None:
                clouds[replica] = set(fresh)
            else:
                mine.update(fresh)
            self._fold(replica)

    def _fold(self, replica: ReplicaRef) -> None:
        """Move the run of parked dots right after ``replica``'s context into the context."""
        dots = self._clouds[replica]
        base = self._context[replica]
        start = base
        while base + 1 in dots:
            base += 1
        if base != start:
            self._context[replica] = base
            if len(dots) == base - start:
                dots.clear()
            else:
                dots.difference_update(range(start + 1, base + 1))


_new_entry = tuple.__new__
"""Builds an Entry without the named tuple's Python-level ``__new__`` (join is a hot path)."""


def _by_clock(entry: Entry) -> int:
    return entry.clock


def _union_keys(a: Mapping[ReplicaRef, object], b: Mapping[ReplicaRef, object]) -> list[ReplicaRef]:
    keys = list(a)
    keys.extend(k for k in b if k not in a)
    return keys
