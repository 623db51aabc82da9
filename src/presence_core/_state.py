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

* ``_rows[owner][clock] -> Entry`` for the other replicas' entries: the values by dot (merges,
  extracts, up/down/remove). Ours are found by topic (``_own_topics``) and, in the window since
  the last broadcast, in ``_delta_values``;
* ``_topics[topic][owner][clock] -> Entry``: listing a topic while skipping down owners wholesale
  (``_own_topics[topic]`` is the same dict as ``_topics[topic][replica]``);
* identities, ``conn -> topic -> slot`` per owner (``_own_ids`` for ours, ``_ids[owner]`` for
  the others'): the slot is the entry's clock when the connection holds one key in that topic
  (the rule: a channel tracks itself once), and ``{key: clock}`` only when it holds several;
  the entry is then found by dot. Keys are the entry's own strings and values its clock, so
  indexing a presence allocates nothing (a tuple key per presence cost 56 bytes and, built in
  every merge, most of a merge's garbage collections), and these dicts hold no container: the
  garbage collector never walks them (see :func:`_find`, :func:`_claim_taken`,
  :func:`_release`).

The pending delta's adds are kept as ``clock -> topic`` (``_delta_values``) for the same reason:
the collector walks each stored entry once, from its topic's rows, and from nowhere else.

Our own dots are never parked in ``_clouds``: the context entry of our own replica is our clock,
which already covers them. The pending delta keeps only its start clock, the adds and the
tombstones; the window's own dots ``start+1..clock`` are materialised when the delta is taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from operator import itemgetter
from types import MappingProxyType
from typing import Union

from ._errors import AlreadyTracked, LocalProtocolError, NoPresence
from ._meta import _SCALARS, Meta, copy_meta
from ._payloads import Delta, Entry, MergeResult, Snapshot, SnapshotPart, _trusted
from ._vclock import Context, ReplicaRef, compact_cloud

__all__ = ["ReplicaState"]

Slot = Union[int, dict[str, int]]  # noqa: UP007 (a runtime alias needs Union on 3.10)
"""One connection's presence in one topic: its entry's clock, or ``{key: clock}`` for several."""

Identities = dict[str, dict[str, Slot]]
"""One owner's identity index: ``conn -> topic -> slot``."""

Rows = Mapping[int, Entry]
"""Where a slot's clocks are found: the owner's rows in that topic, or all the owner's rows."""

_NO_ROWS: Rows = MappingProxyType({})
_NO_IDENTITIES: Mapping[str, Mapping[str, Slot]] = MappingProxyType({})

_new_entry = tuple.__new__
"""``_new_entry(Entry, fields)``: :func:`~presence_core._payloads.stored_entry` without its
``partial``, whose call copies its arguments into one more tuple (a join builds an entry)."""


def _find(
    identities: Mapping[str, Mapping[str, Slot]], rows: Rows, conn: str, topic: str, key: str
) -> Entry | None:
    """The entry of identity ``(conn, topic, key)``, if any; ``rows`` holds its clock."""
    topics = identities.get(conn)
    slot = None if topics is None else topics.get(topic)
    if slot is None:
        return None
    if isinstance(slot, dict):
        clock = slot.get(key)
        return None if clock is None else rows[clock]
    entry = rows[slot]
    return entry if entry.key == key else None


def _claim_taken(topics: dict[str, Slot], rows: Rows, slot: Slot, entry: Entry) -> Entry | None:
    """File ``entry`` where its connection already holds ``slot`` in its topic, unless its
    identity is filed there: return that entry, or None.

    The usual case, a connection's first key in a topic, is a ``setdefault`` that join and
    merge make inline before they call this.
    """
    key, clock = entry.key, entry.clock
    if isinstance(slot, dict):
        filed = slot.setdefault(key, clock)
        return None if filed == clock else rows[filed]
    old = rows[slot]
    if old.key == key:
        return old
    topics[entry.topic] = {old.key: slot, key: clock}  # a second key of this connection here
    return None


def _replace(identities: Identities, old: Entry, new: Entry) -> None:
    """File ``new`` where ``old`` (same identity) was filed."""
    topics = identities[old.conn]
    slot = topics[old.topic]
    if isinstance(slot, dict):
        slot[old.key] = new.clock
    else:
        topics[old.topic] = new.clock


def _release(identities: Identities, entry: Entry) -> None:
    """Unfile ``entry`` (it is filed).

    A slot that held several keys stays a dict until its last key goes: a connection that
    changes keys in a topic (join the new, then leave the old) would otherwise build and undo
    a dict at every change.
    """
    conn, topic = entry.conn, entry.topic
    topics = identities[conn]
    slot = topics[topic]
    if isinstance(slot, dict):
        del slot[entry.key]
        if slot:
            return
    del topics[topic]
    if not topics:
        del identities[conn]


def _filed(topics: Mapping[str, Slot]) -> list[tuple[str, int]]:
    """Every ``(topic, clock)`` of one connection's slots."""
    found: list[tuple[str, int]] = []
    for topic, slot in topics.items():
        if isinstance(slot, dict):
            found.extend((topic, clock) for clock in slot.values())
        else:
            found.append((topic, slot))
    return found


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
        self._own_ids: Identities = {}
        self._ids: dict[ReplicaRef, Identities] = {}
        self._topics: dict[str, dict[ReplicaRef, dict[int, Entry]]] = {}
        # Our own rows of each topic: the same dicts as ``_topics[topic][replica]``.
        self._own_topics: dict[str, dict[int, Entry]] = {}
        self._down: set[ReplicaRef] = set()
        self._delta_start = 0
        self._delta_values: dict[int, str] = {}  # the window's adds: clock -> topic
        self._delta_tombs: dict[ReplicaRef, set[int]] = {}

    def __repr__(self) -> str:
        return f"<ReplicaState {self.replica!r} clock={self.clock} entries={len(self)}>"

    def __len__(self) -> int:
        """Number of stored entries, including hidden entries of down replicas."""
        own = sum(len(rows) for rows in self._own_topics.values())
        return own + sum(len(rows) for rows in self._rows.values())

    def _own_by_dot(self) -> dict[int, Entry]:
        """Our entries by dot, in clock order.

        Clock order is the order the entries were made, so most often the order they lie in
        memory: a receiver filing them in that order reads memory in sequence (a full transfer
        of 100,000 merged twice as fast as in topic order, which jumps between cache lines).
        """
        entries: list[Entry] = []
        for topic_rows in self._own_topics.values():
            entries.extend(topic_rows.values())
        entries.sort(key=_clock_of)  # cheap: merges the topics' runs, each in clock order
        return dict(zip(map(_clock_of, entries), entries, strict=True))

    # ------------------------------------------------------------------ clocks

    @property
    def clock(self) -> int:
        """This replica's own clock: the number of events it has made."""
        return self._clock

    @property
    def context(self) -> dict[ReplicaRef, int]:
        """Everything observed: every replica's clock, replicas marked down included (a copy).

        What merges and extracts reason with. What this replica *announces* leaves the down
        replicas out: :attr:`up_context`.
        """
        return {self.replica: self._clock, **self._context}

    @property
    def up_context(self) -> dict[ReplicaRef, int]:
        """The context without the replicas marked down: what heartbeats and transfer requests
        announce (a new dict, the caller's to keep)."""
        down = self._down
        context = {self.replica: self._clock}
        if not down:
            context.update(self._context)
        else:
            context.update((r, c) for r, c in self._context.items() if r not in down)
        return context

    @property
    def clouds(self) -> Mapping[ReplicaRef, frozenset[int]]:
        """Dots observed beyond the context, per replica (a read-only copy; empty sets omitted)."""
        return {r: frozenset(dots) for r, dots in self._clouds.items() if dots}

    def clocks(self) -> tuple[ReplicaRef, dict[ReplicaRef, int]]:
        """``(replica, up_context)``, Phoenix's ``State.clocks/1`` (what a peer extracts for)."""
        return self.replica, self.up_context

    def clock_of(self, replica: ReplicaRef) -> int | None:
        """``replica``'s clock in the context (ours for this replica), or ``None`` if unknown.

        Raises:
            LocalProtocolError: ``replica`` is not a ReplicaRef.
        """
        if not isinstance(replica, ReplicaRef):
            _check_ref(replica, "replica")
        if replica == self.replica:
            return self._clock
        return self._context.get(replica)

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

        ``meta`` is validated and deep-copied (objects and arrays nested in it frozen): the
        caller keeps theirs.

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
        # copy_meta's fast path for a flat dict, inlined: the call was a tenth of a join.
        if type(meta) is dict:
            stored = meta.copy()
            for name, item in stored.items():
                if type(name) is not str or type(item) not in _SCALARS:
                    stored = copy_meta(meta)
                    break
        else:
            stored = copy_meta(meta)
        replica = self.replica
        clock = self._clock + 1
        entry = _new_entry(Entry, (topic, key, conn, stored, replica, clock))
        rows = self._own_topics.get(topic)
        topics = self._own_ids.get(conn)
        if topics is None:
            self._own_ids[conn] = {topic: clock}
        elif (slot := topics.setdefault(topic, clock)) is not clock and (
            # The connection is in this topic already (so ``rows`` is there): another key?
            _claim_taken(topics, rows or {}, slot, entry) is not None
        ):
            raise AlreadyTracked(conn, topic, key)
        self._clock = clock
        if rows is None:
            rows = self._own_topics[topic] = {}
            by_owner = self._topics.get(topic)
            if by_owner is None:
                self._topics[topic] = {replica: rows}
            else:
                by_owner[replica] = rows
        rows[clock] = entry
        self._delta_values[clock] = topic
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
        # _find, inlined: an untrack is as hot as a track.
        topics = self._own_ids.get(conn)
        slot = None if topics is None else topics.get(topic)
        if slot is None:
            return None
        if isinstance(slot, dict):
            clock = slot.get(key)
            if clock is None:
                return None
            entry = self._own_topics[topic][clock]
        else:
            entry = self._own_topics[topic][slot]
            if entry.key != key:
                return None
        self._remove_own(entry)
        return entry

    def leave_conn(self, conn: str) -> tuple[Entry, ...]:
        """Remove every presence of this replica's connection ``conn`` (one dot each).

        Returns:
            The removed entries, in the order they were added.

        Raises:
            LocalProtocolError: ``conn`` is not a str.
        """
        _check_str(conn, "conn")
        topics = self._own_ids.get(conn)
        if not topics:
            return ()
        own_topics = self._own_topics
        removed = tuple(sorted((own_topics[t][c] for t, c in _filed(topics)), key=_clock_of))
        for entry in removed:
            self._remove_own(entry)
        return removed

    def update(self, conn: str, topic: str, key: str, meta: Meta) -> tuple[Entry, Entry]:
        """Replace the meta of this replica's presence ``(conn, topic, key)`` (two dots).

        The old dot is tombstoned, one dot is used for the remove and one for the new add; the
        row is replaced in place, so readers never see the presence missing. ``meta`` is copied.

        Returns:
            ``(old_entry, new_entry)``.

        Raises:
            NoPresence: there is no such presence.
            LocalProtocolError: an argument has the wrong type or ``meta`` is not JSON-compatible.
        """
        old = self.get(conn, topic, key)
        if old is None:
            raise NoPresence(conn, topic, key)
        stored = copy_meta(meta)
        replica = old.owner
        self._delta_values.pop(old.clock, None)
        self._delta_tombs.setdefault(replica, set()).add(old.clock)
        clock = self._clock + 2
        self._clock = clock
        new = _new_entry(Entry, (topic, key, conn, stored, replica, clock))
        _replace(self._own_ids, old, new)
        rows = self._own_topics[topic]
        del rows[old.clock]
        rows[clock] = new
        self._delta_values[clock] = topic
        return old, new

    def _remove_own(self, entry: Entry) -> None:
        _release(self._own_ids, entry)
        topic, replica, clock = entry.topic, entry.owner, entry.clock
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
        owner, clock, topic = entry.owner, entry.clock, entry.topic
        del self._rows[owner][clock]
        _release(self._ids[owner], entry)
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
            own_topics = self._own_topics
            filed = _filed(self._own_ids.get(conn, {}))
            return sorted((own_topics[t][c] for t, c in filed), key=_clock_of)
        if owner in self._down:
            return []
        rows = self._rows.get(owner, {})
        filed = _filed(self._ids.get(owner, {}).get(conn, {}))
        return sorted((rows[c] for _, c in filed), key=_clock_of)

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
            return _find(self._own_ids, self._own_topics.get(topic, _NO_ROWS), conn, topic, key)
        identities = self._ids.get(owner, _NO_IDENTITIES)
        return _find(identities, self._rows.get(owner, _NO_ROWS), conn, topic, key)

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
        return self._pending_delta(self._delta_entries())

    def _delta_entries(self) -> dict[int, Entry]:
        """The window's adds, by clock (a new dict)."""
        own_topics = self._own_topics
        return {clock: own_topics[topic][clock] for clock, topic in self._delta_values.items()}

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

        Clouds need no compaction here: merges keep them compact as they go.
        """
        delta = self._pending_delta(self._delta_entries())
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
        return sum(map(len, self._clouds.values()))

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
        """Merge ``remote``, which speaks for ``covered`` (per owner, the dots ``(first, last]``)
        and its clouds, in four phases: take the adds, apply the observed removes, index the
        adds, see the dots."""
        adds = self._unseen_adds(remote.values)
        leaves = self._remove_observed(remote.values, covered, remote.clouds)
        joins = self._index_adds(adds, leaves) if adds else []
        if whole:
            # Unlike Phoenix, the dots of removed entries stay in the clouds: they have been
            # observed, and forgetting one beyond a gap would let a redelivered add bring the
            # entry back.
            self._see(remote.context if isinstance(remote, Snapshot) else {}, remote.clouds)
        else:
            # A part: only the adds it made are seen (see merge_part).
            self._see({}, {owner: accepted.keys() for owner, accepted in adds})  # stale ones too
        if not joins and not leaves:
            return _NOTHING
        return MergeResult(joins=tuple(joins), leaves=tuple(leaves))

    def _unseen_adds(
        self, values: Mapping[ReplicaRef, Mapping[int, Entry]]
    ) -> list[tuple[ReplicaRef, Mapping[int, Entry]]]:
        """Phase 1: the adds whose dot we have not seen, of owners we know, by owner.

        Never our own: only we make those. The mappings are read-only (an owner we have seen
        nothing of gets the payload's own rows, uncopied).
        """
        me = self.replica
        context = self._context
        clouds = self._clouds
        adds: list[tuple[ReplicaRef, Mapping[int, Entry]]] = []
        for owner, rows in values.items():
            known = context.get(owner)
            if known is None or owner == me:
                continue
            dots = clouds.get(owner)
            accepted: Mapping[int, Entry]
            if dots:
                accepted = {c: e for c, e in rows.items() if c > known and c not in dots}
            elif known:
                accepted = {c: e for c, e in rows.items() if c > known}
            else:
                accepted = rows
            if accepted:
                adds.append((owner, accepted))
        return adds

    def _remove_observed(
        self,
        values: Mapping[ReplicaRef, Mapping[int, Entry]],
        covered: Mapping[ReplicaRef, tuple[int, int]],
        clouds: Mapping[ReplicaRef, frozenset[int]],
    ) -> list[Entry]:
        """Phase 2: remove our copies of remote entries the remote has seen but no longer
        carries; tombstone them in our pending delta (we gossip the removal on). The leaves."""
        me = self.replica
        leaves: list[Entry] = []
        for owner in _union_keys(covered, clouds):
            stored = self._rows.get(owner)
            if not stored or owner == me:
                continue
            carried = values.get(owner, {})
            first, last = covered.get(owner, (0, 0))
            observed = clouds.get(owner, frozenset())
            candidates: Iterable[Entry]
            if last - first + len(observed) < len(stored):
                # Fewer covered dots than stored rows (a delta, a part): look the dots up.
                covered_dots = chain(range(first + 1, last + 1), sorted(observed))
                candidates = [stored[c] for c in covered_dots if c in stored]
            else:
                candidates = list(stored.values())
            gone = [
                e
                for e in candidates
                if e.clock not in carried and (first < e.clock <= last or e.clock in observed)
            ]
            if gone:
                tombs = self._delta_tombs.setdefault(owner, set())
                for entry in gone:
                    self._unlink(entry)
                    tombs.add(entry.clock)
                leaves.extend(gone)
        return leaves

    def _index_adds(
        self, adds: list[tuple[ReplicaRef, Mapping[int, Entry]]], leaves: list[Entry]
    ) -> list[Entry]:
        """Phase 3: store the adds, one row per identity (upstream #213); return the joins.

        An add for an identity already stored with an older dot replaces that row, which joins
        ``leaves``; one with an older dot than the stored row is stale and dropped. Two dots of
        one identity in this very payload: the newer stays and the older was never news.
        """
        joins: list[Entry] = []
        for owner, accepted in adds:
            rows = self._rows.setdefault(owner, {})
            # ``stored``: the owner's rows with the adds in them, while the loop files the adds.
            # With nothing of this owner stored (a full transfer to a new replica), the adds go
            # in after the loop instead, less the dropped ones: filled first, the dict (untracked
            # by the collector while empty) would be young when the loop's allocations trigger
            # a collection, and that collection would walk all its rows once more.
            stored = rows or None
            if stored is not None:
                stored.update(accepted)  # at C speed; the few dropped are taken out below
            identities = self._ids.setdefault(owner, {})
            find = identities.get  # bound once: called once per entry below
            rows_of_topic: dict[str, dict[int, Entry]] = {}  # this owner's rows, by topic
            rows_of = rows_of_topic.get  # bound once: called once per entry below
            dropped: list[int] = []  # clocks of ``accepted`` that end up not joining
            # Once per entry of a full transfer: the usual claim (a first key) is inlined, and
            # ``entry[i]`` reads a field (the named tuple's attribute is a slower descriptor).
            for clock, entry in accepted.items():
                topic = entry[0]
                topic_rows = rows_of(topic)
                if topic_rows is None:
                    topic_rows = rows_of_topic[topic] = self._topic_rows(topic, owner)
                conn = entry[2]
                conn_topics = find(conn)
                if conn_topics is None:
                    identities[conn] = {topic: clock}
                elif conn_topics.setdefault(topic, clock) is not clock and not self._claim(
                    owner, identities, entry, accepted, stored, topic_rows, leaves, dropped
                ):
                    continue
                topic_rows[clock] = entry
            if stored is None:
                rows.update(accepted)  # a copy at C speed: the dict is empty
                for clock in dropped:
                    del rows[clock]
            if dropped:
                gone = set(dropped)
                joins.extend(e for c, e in accepted.items() if c not in gone)
            else:
                joins.extend(accepted.values())
        return joins

    def _claim(
        self,
        owner: ReplicaRef,
        identities: Identities,
        entry: Entry,
        accepted: Rows,
        stored: dict[int, Entry] | None,
        topic_rows: dict[int, Entry],
        leaves: list[Entry],
        dropped: list[int],
    ) -> bool:
        """File ``entry``, an add of ``accepted`` whose connection holds a slot in its topic
        already; False when ``entry`` is dropped.

        Another key of that connection there: the slot gets a second key. The same identity:
        the newer dot stays (upstream #213). An older stored row goes (a leave), and so does an
        older add of this very payload (a drop); an older ``entry`` is stale and dropped.

        ``stored`` is the owner's rows with ``accepted`` in them, whence the rows that go are
        taken out at once; ``None`` while nothing else of the owner is stored and ``accepted``
        is not in its rows yet (:meth:`_index_adds` then leaves out every clock ``dropped``).
        """
        conn_topics = identities[entry.conn]
        rows = accepted if stored is None else stored
        old = _claim_taken(conn_topics, rows, conn_topics[entry.topic], entry)
        if old is None:
            return True
        clock = entry.clock
        if old.clock > clock:  # stale: the newer row stays
            if stored is not None:
                del stored[clock]
            dropped.append(clock)
            return False
        # Same identity, so same topic: its rows keep the new entry, and no index dict empties.
        _replace(identities, old, entry)
        if stored is not None:
            del stored[old.clock]
        del topic_rows[old.clock]
        if self.seen(owner, old.clock):
            leaves.append(old)
        else:  # an add of this payload, replaced by a newer one of it
            dropped.append(old.clock)
        return True

    def _topic_rows(self, topic: str, owner: ReplicaRef) -> dict[int, Entry]:
        """``owner``'s rows in ``topic``, made empty if there are none."""
        by_owner = self._topics.get(topic)
        if by_owner is None:
            by_owner = self._topics[topic] = {}
        rows = by_owner.get(owner)
        if rows is None:
            rows = by_owner[owner] = {}
        return rows

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


_NOTHING = MergeResult()
"""The result of a merge that changed no presence (immutable: one for all)."""


_clock_of = itemgetter(5)
"""An entry's clock (its sixth field), read at C speed: the sort key of entries by dot."""


def _union_keys(a: Mapping[ReplicaRef, object], b: Mapping[ReplicaRef, object]) -> list[ReplicaRef]:
    keys = list(a)
    keys.extend(k for k in b if k not in a)
    return keys
