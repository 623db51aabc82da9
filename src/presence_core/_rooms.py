"""Topic modes beyond Phoenix: a leave grace period, and large rooms (``docs/grace-period.rst``,
``docs/large-rooms.rst``).

Phoenix hands the application every join and leave at once, one diff per change. A topic with
:class:`TopicOptions` (or every topic, when ``TrackerConfig.leave_grace_period`` is set) gets a
*room*: an index of its visible presences by key, kept in step with the diffs the tracker
emits, through which those diffs pass on their way to the application.

* With a leave grace period, a key's last leave is held back. A join of that key within the
  period turns both into one diff (an update: the new metas as joins, the old as leaves), or
  into none when the very presence comes back (its replica was down for a moment). A leave not
  followed by a join is delivered once, when the period ends.
* In large-room mode, what the room delivers is gathered into one diff per topic per tick
  holding the net effect (a presence that joined and left within the tick is in neither list),
  and the index answers counts and pages without building the whole list.

A room keeps its topic as its subscribers were shown it (every diff delivered so far, applied),
and the tracker answers the topic's list, counts and pages from it: a subscriber who starts from
the list and applies the diffs that follow is exactly right, whenever it starts (a join still in
the tick's batch is not listed yet; a key in its grace period still is).

The tracker drives this with its ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import attrs

from ._config import non_negative_seconds
from ._errors import ConfigurationError, InvalidArgument, shown
from ._events import PresenceDiff
from ._payloads import Dot, Entry
from ._presence import PresenceMap, group
from ._vclock import ReplicaRef

__all__ = ["Occupancy", "PresencePage", "TopicOptions"]

_REBUILD_SHARE = 16
"""The sorted key order is rebuilt, rather than patched key by key, once more than one key in
this many changed since it was last read (each patch moves the list's tail)."""


def _grace(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        non_negative_seconds("leave_grace_period", value)


def _flag(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise ConfigurationError(f"{attribute.name} must be a bool, not {shown(value)}")


@attrs.frozen(kw_only=True)
class TopicOptions:
    """How one topic's diffs reach the application (:meth:`Tracker.configure_topic
    <presence_core.Tracker.configure_topic>`). The defaults are Phoenix's behaviour.

    Options are local: each node sets its own, and they change nothing that is replicated.

    Raises:
        ConfigurationError: ``leave_grace_period`` is not ``None`` or a finite number >= 0, or
            ``large_room`` is not a bool.
    """

    leave_grace_period: float | None = attrs.field(default=None, validator=_grace)
    """Seconds a key's last leave is held back (see the module docs); ``None``: the tracker's
    ``config.leave_grace_period``; ``0``: none."""

    large_room: bool = attrs.field(default=False, validator=_flag)
    """One diff per tick with the net effect, instead of one per change; counts and pages
    answered from an index by key."""


@attrs.frozen(kw_only=True)
class Occupancy:
    """How many are in one topic, without the list.

    Attributes:
        topic: the topic.
        keys: distinct keys (users, say) present, keys in their grace period included.
        presences: presences (connections), those of keys in their grace period included.
    """

    topic: str
    keys: int
    presences: int


@attrs.frozen(kw_only=True)
class PresencePage:
    """One page of a topic's presences, keys in sorted order (:meth:`Tracker.page
    <presence_core.Tracker.page>`).

    Attributes:
        presences: ``{key: {"metas": [...]}}`` for at most ``limit`` keys, each greater than the
            ``after`` the page was asked with.
        next_after: pass it as ``after`` for the next page; ``None`` when no key follows.
    """

    presences: PresenceMap
    next_after: str | None


class _Hold(NamedTuple):
    deadline: float
    entries: tuple[Entry, ...]  # what subscribers were last shown of the key
    seq: int  # tells this hold from an older one of the same key in the deadline heap


def _dot(entry: Entry) -> Dot:
    return (entry[4], entry[5])


class _Keys:
    """Entries of one topic by key, with the keys sorted on demand (for pages)."""

    __slots__ = ("changes", "order", "presences", "rows")

    def __init__(self, entries: Iterable[Entry]) -> None:
        # A key's one entry is stored bare (most keys have one connection); several in a list.
        self.rows: dict[str, Entry | list[Entry]] = {}
        self.presences = 0
        self.order: list[str] | None = None  # the keys sorted, as last read by a page
        self.changes: dict[str, bool] = {}  # keys added (True) or removed since, net
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        key = entry[1]
        rows = self.rows
        found = rows.get(key)
        if found is None:
            rows[key] = entry
            self._changed(key, True)
        elif isinstance(found, list):
            found.append(entry)
        else:
            rows[key] = [found, entry]
        self.presences += 1

    def remove(self, entry: Entry) -> None:
        """Unindex ``entry``, which is indexed: a room is only told of leaves of entries it
        holds (the tracker's diffs are consistent with its visible state)."""
        key = entry[1]
        rows = self.rows
        found = rows[key]
        if isinstance(found, list):
            dot = _dot(entry)
            del found[[_dot(row) for row in found].index(dot)]
            self.presences -= 1
            if len(found) == 1:
                rows[key] = found[0]
        else:
            del rows[key]
            self.presences -= 1
            self._changed(key, False)

    def entries_of(self, key: str) -> list[Entry]:
        found = self.rows.get(key)
        if found is None:
            return []
        return list(found) if isinstance(found, list) else [found]

    def entries(self) -> list[Entry]:
        result: list[Entry] = []
        for found in self.rows.values():
            if isinstance(found, list):
                result.extend(found)
            else:
                result.append(found)
        return result

    def _changed(self, key: str, added: bool) -> None:
        if self.order is None:
            return
        changes = self.changes
        if changes.get(key) is (not added):  # undoes a change not yet applied to the order
            del changes[key]
        else:
            changes[key] = added

    def sorted_keys(self) -> list[str]:
        order = self.order
        changes = self.changes
        if order is None or len(changes) * _REBUILD_SHARE > len(order):
            order = self.order = sorted(self.rows)
        else:
            for key, added in changes.items():
                at = bisect.bisect_left(order, key)
                if added:
                    order.insert(at, key)
                else:
                    del order[at]
        changes.clear()
        return order


class _Room:
    """One topic with options: what its subscribers were shown, held leaves, pending batch."""

    __slots__ = (
        "batched",
        "explicit",
        "grace",
        "held",
        "joins",
        "leaves",
        "live",
        "shown",
        "topic",
    )

    def __init__(
        self, topic: str, grace: float, batched: bool, explicit: bool, shown: _Keys
    ) -> None:
        self.topic = topic
        self.grace = grace
        self.batched = batched
        self.explicit = explicit  # set by configure_topic: kept even when empty
        # The topic as its subscribers were shown it: every diff delivered so far, applied.
        # The list, counts and pages answer from it, so that a subscriber who starts from the
        # list and applies the diffs that follow is right (a join still in the tick's batch is
        # not in it yet; a key in its grace period still is).
        self.shown = shown
        # The visible state by key, kept with a grace period only: it tells when a key's last
        # connection left, and what is there when the key comes back.
        self.live = _Keys(shown.entries()) if grace > 0 else None
        self.held: dict[str, _Hold] = {}
        # The tick's batch, net: joins and leaves by owner, then clock. Keyed by the dot's two
        # parts rather than by a dot tuple: no tuple per change for the collector to walk.
        self.joins: dict[ReplicaRef, dict[int, Entry]] = {}
        self.leaves: dict[ReplicaRef, dict[int, Entry]] = {}

    @property
    def idle(self) -> bool:
        return not (self.explicit or self.shown.rows or self.held or self.joins or self.leaves)

    def set_grace(self, grace: float, entries: Callable[[], list[Entry]]) -> None:
        if grace > 0 and self.live is None:
            self.live = _Keys(entries())
        elif grace == 0:
            self.live = None
        self.grace = grace


class Rooms:
    """Every room of one tracker, and the deadlines of their held leaves.

    Internal to the tracker, which feeds it every change it would emit (``deliver``) and its
    ticks (``expire``, ``flush``), turns what it returns into events, and answers a topic's
    queries from its room when it has one (``shown``).
    """

    __slots__ = ("_default_grace", "_dirty", "_heap", "_options", "_rooms", "_seq")

    def __init__(self, default_grace: float) -> None:
        self._default_grace = default_grace
        self._rooms: dict[str, _Room] = {}
        self._options: dict[str, TopicOptions] = {}
        self._heap: list[tuple[float, int, str, str]] = []  # (deadline, seq, topic, key)
        self._seq = 0
        self._dirty: set[str] = set()  # batched rooms with a pending diff

    @property
    def active(self) -> bool:
        """Whether a change may need a room: some topic has one, or every topic gets one."""
        return bool(self._rooms) or self._default_grace > 0

    @property
    def next_deadline(self) -> float | None:
        """When the earliest held leave is due (``None`` when none is held)."""
        return self._heap[0][0] if self._heap else None

    @property
    def held(self) -> int:
        """Keys whose last leave is being held back, over every room."""
        return sum(len(room.held) for room in self._rooms.values())

    def options(self, topic: str) -> TopicOptions:
        return self._options.get(topic, _DEFAULT_OPTIONS)

    def shown(self, topic: str) -> _Keys | None:
        """``topic`` as its subscribers were shown it, if it has a room (``None``: it has none,
        and the visible state is what they were shown)."""
        room = self._rooms.get(topic)
        return None if room is None else room.shown

    def topics(self) -> dict[str, bool]:
        """Every topic with a room, and whether its subscribers were shown a presence in it."""
        return {topic: bool(room.shown.rows) for topic, room in self._rooms.items()}

    def configure(
        self, topic: str, options: TopicOptions, entries: Callable[[], list[Entry]]
    ) -> list[PresenceDiff]:
        """Set ``topic``'s options; returns the diffs they release (held leaves, a batch).

        ``entries`` lists the topic's visible entries; it is called only when a room starts
        keeping them.
        """
        if options == _DEFAULT_OPTIONS:
            self._options.pop(topic, None)
        else:
            self._options[topic] = options
        explicit = topic in self._options
        grace = self._grace_of(options)
        room = self._rooms.get(topic)
        if room is None:
            if grace > 0 or options.large_room:
                room = _Room(topic, grace, options.large_room, explicit, _Keys(entries()))
                if not room.idle:
                    self._rooms[topic] = room
            return []
        released: list[PresenceDiff] = []
        if grace == 0 and room.held:
            leaves = [entry for hold in room.held.values() for entry in hold.entries]
            room.held.clear()
            self._prune()
            released.extend(self._route(room, (), leaves))
        if room.batched and not options.large_room:
            released.extend(self._flush_room(room))
        room.set_grace(grace, entries)
        room.batched = options.large_room
        room.explicit = explicit
        if not (grace > 0 or room.batched) or room.idle:
            # Nothing is held or pending any more: what was shown is the visible state.
            del self._rooms[topic]
        return released

    def deliver(
        self,
        topic: str,
        joins: Sequence[Entry],
        leaves: Sequence[Entry],
        now: float,
        entries: Callable[[], list[Entry]],
    ) -> PresenceDiff | None:
        """What the application sees of a change of ``topic``: a diff now, or nothing yet.

        ``entries`` lists the topic's visible entries (the change included); it is called only
        to build a room that does not exist yet.
        """
        room = self._rooms.get(topic)
        if room is None:
            if self._default_grace == 0 or topic in self._options:  # Phoenix's behaviour
                return PresenceDiff(topic=topic, joins=joins, leaves=leaves)
            # The room starts as the topic was before the change. Under a default grace period
            # a topic has no room only while it has no presence: the change holds no leave.
            before = _Keys(entries())
            for entry in joins:
                before.remove(entry)
            room = self._rooms[topic] = _Room(topic, self._default_grace, False, False, before)
        live = room.live
        if live is not None:
            for entry in joins:
                live.add(entry)
            for entry in leaves:
                live.remove(entry)
            joins, leaves = self._settle(room, live, joins, leaves, now)
        # Never idle here: a room without options has a grace period, so it holds a key whose
        # last leave this was.
        diffs = self._route(room, joins, leaves)
        return diffs[0] if diffs else None

    def expire(self, now: float) -> list[PresenceDiff]:
        """The held leaves due by ``now``, delivered (or added to their room's batch)."""
        heap = self._heap
        due: dict[str, list[Entry]] = {}
        while heap and heap[0][0] <= now:
            _, seq, topic, key = heapq.heappop(heap)
            room = self._rooms.get(topic)
            hold = None if room is None else room.held.get(key)
            if room is None or hold is None or hold.seq != seq:
                continue  # released early: the key came back
            del room.held[key]
            due.setdefault(topic, []).extend(hold.entries)
        self._prune()  # a released hold's deadline may be the next one up
        diffs: list[PresenceDiff] = []
        for topic, leaves in due.items():  # in the order of their deadlines
            room = self._rooms[topic]
            diffs.extend(self._route(room, (), leaves))
            if room.idle:
                del self._rooms[topic]
        return diffs

    def flush(self) -> list[PresenceDiff]:
        """Every batched room's pending diff (the tracker calls it once per tick)."""
        diffs: list[PresenceDiff] = []
        for topic in sorted(self._dirty):
            room = self._rooms.get(topic)
            if room is not None:  # batched: it has options, so it is never idle
                diffs.extend(self._flush_room(room))
        self._dirty.clear()
        return diffs

    def release_all(self) -> list[PresenceDiff]:
        """Everything held back, delivered now: every held leave, then every batch."""
        diffs = self.expire(math.inf)
        diffs.extend(self.flush())
        return diffs

    def page(self, topic: str, after: str | None, limit: int) -> PresencePage | None:
        """A page of ``topic`` as its subscribers were shown it (``None``: it has no room)."""
        room = self._rooms.get(topic)
        if room is None:
            return None
        shown = room.shown
        order = shown.sorted_keys()
        start = 0 if after is None else bisect.bisect_right(order, after)
        keys = order[start : start + limit]
        entries = [entry for key in keys for entry in shown.entries_of(key)]
        more = start + limit < len(order)
        return PresencePage(presences=group(entries), next_after=keys[-1] if more else None)

    # ------------------------------------------------------------------ internals

    def _grace_of(self, options: TopicOptions) -> float:
        grace = options.leave_grace_period
        return self._default_grace if grace is None else grace

    def _settle(
        self,
        room: _Room,
        live: _Keys,
        joins: Sequence[Entry],
        leaves: Sequence[Entry],
        now: float,
    ) -> tuple[Sequence[Entry], Sequence[Entry]]:
        """The change as subscribers should see it, the grace period applied (``live`` holds
        the change already)."""
        by_key: dict[str, tuple[list[Entry], list[Entry]]] = {}
        for entry in joins:
            by_key.setdefault(entry[1], ([], []))[0].append(entry)
        for entry in leaves:
            by_key.setdefault(entry[1], ([], []))[1].append(entry)
        out_joins: list[Entry] = []
        out_leaves: list[Entry] = []
        held = room.held
        for key, (key_joins, key_leaves) in by_key.items():
            hold = held.get(key)
            present = key in live.rows
            if hold is None:
                if present:
                    out_joins.extend(key_joins)
                    out_leaves.extend(key_leaves)
                    continue
                # The key is gone: subscribers keep what they were shown for the grace period.
                # (No diff joins and leaves one entry: nothing joined, these were its last.)
                last = tuple(key_leaves)
                self._seq += 1
                deadline = now + room.grace
                held[key] = _Hold(deadline, last, self._seq)
                heapq.heappush(self._heap, (deadline, self._seq, room.topic, key))
                continue
            # Back within the grace period (a held key is absent, so a change naming it joins
            # it): one diff from what subscribers saw to what is here.
            del held[key]
            rows = live.entries_of(key)
            now_dots = {_dot(entry) for entry in rows}
            held_dots = {_dot(entry) for entry in hold.entries}
            out_joins.extend(entry for entry in rows if _dot(entry) not in held_dots)
            out_leaves.extend(entry for entry in hold.entries if _dot(entry) not in now_dots)
        self._prune()
        return out_joins, out_leaves

    def _route(
        self, room: _Room, joins: Sequence[Entry], leaves: Sequence[Entry]
    ) -> list[PresenceDiff]:
        """A diff for the application now, or (large room) into the room's batch."""
        if not joins and not leaves:
            return []
        if not room.batched:
            return [self._show(room, joins, leaves)]
        _batch(room.joins, room.leaves, joins)  # left and came back within the tick: no change
        _batch(room.leaves, room.joins, leaves)  # joined and left within the tick: no change
        self._dirty.add(room.topic)
        return []

    def _flush_room(self, room: _Room) -> list[PresenceDiff]:
        if not room.joins and not room.leaves:
            return []
        joins = [entry for by_clock in room.joins.values() for entry in by_clock.values()]
        leaves = [entry for by_clock in room.leaves.values() for entry in by_clock.values()]
        room.joins = {}
        room.leaves = {}
        return [self._show(room, joins, leaves)]

    @staticmethod
    def _show(room: _Room, joins: Sequence[Entry], leaves: Sequence[Entry]) -> PresenceDiff:
        """The diff delivered now, and applied to what the room's subscribers were shown."""
        shown = room.shown
        for entry in joins:
            shown.add(entry)
        for entry in leaves:
            shown.remove(entry)
        return PresenceDiff(topic=room.topic, joins=joins, leaves=leaves)

    def _prune(self) -> None:
        """Drop the deadlines of released holds from the top of the heap, so that
        ``next_deadline`` names a real one."""
        heap = self._heap
        rooms = self._rooms
        while heap:
            _, seq, topic, key = heap[0]
            room = rooms.get(topic)
            hold = None if room is None else room.held.get(key)
            if hold is not None and hold.seq == seq:
                return
            heapq.heappop(heap)


_DEFAULT_OPTIONS = TopicOptions()


def _batch(
    adding: dict[ReplicaRef, dict[int, Entry]],
    opposite: dict[ReplicaRef, dict[int, Entry]],
    entries: Sequence[Entry],
) -> None:
    """Add ``entries`` to one side of a batch, each cancelling its own dot on the other side."""
    for entry in entries:
        owner = entry[4]
        clock = entry[5]
        other = opposite.get(owner)
        if other is not None and clock in other:
            del other[clock]
            if not other:
                del opposite[owner]
        else:
            adding.setdefault(owner, {})[clock] = entry


def check_page_args(after: object, limit: object) -> None:
    """Raise :class:`~presence_core.InvalidArgument` unless ``after`` and ``limit`` can page."""
    if after is not None and type(after) is not str:
        raise InvalidArgument(f"after must be a str or None, not {type(after).__name__}")
    if type(limit) is not int or limit < 1:
        raise InvalidArgument(f"limit must be an int >= 1, not {shown(limit)}")


def page_of(entries: list[Entry], after: str | None, limit: int) -> PresencePage:
    """A page of a topic without a room: built from all of its entries (O(n log n))."""
    keys = sorted({entry[1] for entry in entries if after is None or entry[1] > after})
    chosen = set(keys[:limit])
    page = group([entry for entry in entries if entry[1] in chosen])
    return PresencePage(presences=page, next_after=keys[limit - 1] if len(keys) > limit else None)
