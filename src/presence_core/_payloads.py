"""What replicas exchange and what a merge returns: entries, snapshots, deltas, merge results.

These are values: immutable once built, shared freely between the CRDT (``_state``), the tracker,
events, messages and the codec, none of which needs the CRDT to use them. The public
constructors check and copy every field; the state and the codec, which build payloads from data
they made or checked themselves, use :func:`_trusted` instead (an extract of 100,000 entries
would otherwise be checked twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any, Final, NamedTuple, TypeVar

import attrs

from ._errors import InvalidArgument, LocalProtocolError, shown
from ._meta import FrozenDict, JSONValue, Meta, copy_meta
from ._vclock import Context, ReplicaRef, dominates_or_equal, lowerbound, upperbound

__all__ = [
    "Delta",
    "Entry",
    "MergeResult",
    "Snapshot",
    "SnapshotPart",
    "merge_deltas",
    "stored_entry",
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

    Built by hand, every field is checked and the meta is copied like one given to
    :meth:`ReplicaState.join <presence_core.ReplicaState.join>`; the state and the codec build
    entries of fields they checked themselves past this constructor.

    It is a named tuple (cheap to build, compare and unpack); its fourth item is the meta *as
    stored*, a plain ``dict`` that must never be changed. Read the meta through :attr:`meta`.

    Attributes:
        topic: the topic the presence is in.
        key: the presence key (several entries may share a key: one per connection).
        conn: the connection id, unique within the owning replica.
        meta: the metadata, read-only: a frozen ``dict`` (its mutating methods raise
            :exc:`~presence_core.ReadOnlyError`, also a ``TypeError``), made from the stored
            meta on each read. Objects and arrays nested in it are the stored ones, frozen too.
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
    def meta(self) -> Mapping[str, JSONValue]:
        # Stored metas are plain dicts: a dict of strings and numbers is left alone by the
        # garbage collector (a dict subclass never is), which halves what it walks per presence.
        return FrozenDict(self[3])

    @property
    def dot(self) -> Dot:
        """The entry's tag: ``(owner, clock)``."""
        return (self.owner, self.clock)

    def _replace(self, **changes: Any) -> Entry:
        """A copy with some fields changed, checked and its meta copied as by the constructor
        (the named tuple's own ``_replace`` would store any meta as it is)."""
        fields = {**self._asdict(), **changes}
        return Entry(**fields)


StoredFields = tuple[str, str, str, dict[str, JSONValue], ReplicaRef, int]
"""An entry's fields as stored: ``(topic, key, conn, stored meta, owner, clock)``."""

stored_entry: Final[Callable[[StoredFields], Entry]] = partial(tuple.__new__, Entry)
"""``stored_entry((topic, key, conn, stored_meta, owner, clock))``: an Entry of fields already
checked and a meta already copied (by :func:`~presence_core._meta.copy_meta` or the codec).

It skips :class:`Entry`'s checking constructor: the state and the codec build one per presence
they store or decode, from fields they made or checked themselves."""


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


_Frozen = TypeVar("_Frozen")


def _trusted(cls: type[_Frozen], **fields: object) -> _Frozen:
    """Build a frozen attrs value (a payload, a message) from fields already owned and checked.

    The public constructors copy and check every field; the state and the codec build values
    from data they made or checked themselves, so they skip that work (an extract of 100,000
    entries would otherwise be checked twice, a heartbeat's clock of every replica likewise).
    Every field must be given, a private, never-mutated copy.
    """
    payload = object.__new__(cls)  # past attrs' __init__: its converters copy and check
    for name, value in fields.items():
        object.__setattr__(payload, name, value)  # the frozen class refuses plain assignment
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
