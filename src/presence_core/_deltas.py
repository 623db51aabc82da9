"""Delta generations: recent deltas kept to answer transfer requests cheaply (SPEC §4.7).

A replica keeps ``N`` generations, one per entry of ``max_sizes`` (smallest first). Every delta it
sends or receives is pushed into each generation: merged with it when the two are contiguous and
the result fits the generation's size cap. When a peer asks for a transfer, the smallest
generation that covers what the peer is missing (and starts no later than what it has) is sent
instead of the whole state.

Push, in Phoenix's words turned into ours: for generation ``i`` with cap ``m_i``, merge it with the
new delta. If contiguous and the merge fits, store the merge. If contiguous but too big, store the
previous level's result (for level 0, the new delta alone) and hand the oversized merge on as the
"previous" of the next level. If not contiguous, keep the generation unchanged (it becomes the
"previous").

Unlike Phoenix, a generation never holds more than its cap: where Phoenix would store a delta
larger than the cap (a window busier than the cap alone, or an oversized merge handed up), the
generation starts afresh, empty, at that delta's end. A transfer that no generation covers then
gets the full state, which is what a cap means; and memory stays bounded by the caps, however
busy a window is.

How it is kept: every delta sent or received is pushed, so a push must cost what the delta
holds, not what the generations hold (up to the largest cap, 10,000 by default).
:func:`~presence_core.merge_deltas` builds a new immutable :class:`Delta`, copying the
generation's rows and clouds; so each generation is instead a :class:`_Generation`, a mutable
accumulator that a push merges into in place, with the same result as ``merge_deltas``. Only
``.generations`` and a transfer reply (rare) turn one back into a :class:`Delta`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ._errors import InvalidArgument, shown
from ._payloads import Delta, Entry, Snapshot, _trusted
from ._state import ReplicaState
from ._vclock import Context, ReplicaRef, dominates, dominates_or_equal, filter_replicas

__all__ = ["DeltaGenerations"]

_NO_ROWS: Final[Mapping[int, Entry]] = {}
_NO_DOTS: Final[frozenset[int]] = frozenset()


class _Generation:
    """One generation, merged in place: what ``merge_deltas(generation, delta)`` would return,
    without copying the generation.

    After a push, a level holds its generation merged with the delta, or its generation
    untouched (not contiguous), or another one (over its cap): never its generation as it was
    before a merge. So a push may merge in place (see :meth:`DeltaGenerations.push`). Adjacent
    levels may share one generation (a level over its cap takes the one below); a push merges a
    shared generation once.

    Attributes:
        replica: the replica whose generation it is (``Delta.replica``).
        values: the entries, by owner then clock. Never an empty row: ``merge_deltas`` drops
            them, and so does every merge here.
        clouds: the dots seen, by replica.
        start: where the window starts (lower bound of the starts merged in).
        end: where it ends (upper bound of the ends).
        size: the number of values plus the number of cloud dots, kept as the merges go, so
            that checking a cap costs nothing.
        forward: whether the range runs forward (see :func:`_runs_forward`); merging two that
            do gives one that does, so it is kept as the merges go too.
    """

    __slots__ = ("_frozen", "clouds", "end", "forward", "replica", "size", "start", "values")

    def __init__(
        self,
        replica: ReplicaRef,
        start: dict[ReplicaRef, int],
        end: dict[ReplicaRef, int],
        frozen: Delta | None = None,
    ) -> None:
        self.replica = replica
        self.values: dict[ReplicaRef, dict[int, Entry]] = {}
        self.clouds: dict[ReplicaRef, set[int]] = {}
        self.start = start
        self.end = end
        self.size = 0
        self.forward = _runs_forward(start, end)
        # The Delta equal to this generation, while it is known: the one it was made from, or
        # the last one materialized. Kept as is, a stored delta reads back exactly as it was
        # pushed (empty rows included, which the mutable copy drops); None after a change.
        self._frozen = frozen

    @classmethod
    def of(cls, delta: Delta) -> _Generation:
        """A generation holding ``delta`` (copied: the generation will change, not the delta)."""
        generation = cls(delta.replica, dict(delta.start), dict(delta.end), delta)
        generation.values = {owner: dict(rows) for owner, rows in delta.values.items() if rows}
        generation.clouds = {replica: set(dots) for replica, dots in delta.clouds.items()}
        generation.size = delta.size
        return generation

    @classmethod
    def empty_at(cls, replica: ReplicaRef, end: Context) -> _Generation:
        """A generation that holds nothing and starts where a window ending at ``end`` ends
        (contiguous with what comes next)."""
        return cls(replica, dict(end), dict(end))

    def frozen(self) -> Delta:
        """This generation as an immutable :class:`Delta` (built once per change)."""
        if self._frozen is None:
            self._frozen = _trusted(
                Delta,
                replica=self.replica,
                values={owner: dict(rows) for owner, rows in self.values.items()},
                clouds={replica: frozenset(dots) for replica, dots in self.clouds.items()},
                start=dict(self.start),
                end=dict(self.end),
            )
        return self._frozen

    def merge(self, delta: Delta, delta_forward: bool) -> bool:
        """Fold ``delta`` in, as ``merge_deltas(self, delta)`` does; if the two are not
        contiguous, change nothing and return False.

        Costs what ``delta`` holds and names, whatever the size of the generation.
        ``delta_forward`` is ``_runs_forward(delta.start, delta.end)`` (one walk per push, not
        one per level).
        """
        # Fast path, a delta that starts exactly where this generation ends, both running
        # forward: they are contiguous, the start stays, the end becomes the delta's. It saves
        # walking the range (every replica, for a delta that names them all) at each level.
        follows = self.forward and delta_forward and self.end == delta.start
        if not follows and not self._contiguous(delta):
            return False
        self._frozen = None
        self._drop_removed(delta)
        self._add_values(delta)  # before the clouds grow: it looks at the dots seen *before*
        self._add_dots(delta.clouds)
        if follows:
            self.end.update(delta.end)  # the same replicas, every clock at least as high
        else:
            self._widen(delta.start, delta.end)
            self.forward = self.forward and delta_forward
        return True

    def _contiguous(self, delta: Delta) -> bool:
        """``merge_deltas``' test: ``dominates_or_equal(delta.end, self.start)`` and
        ``dominates_or_equal(self.end, delta.start)``, walking only the replicas ``delta``
        names."""
        start, end = self.start, self.end
        if not delta.end:
            if start:
                return False
        else:
            get = start.get
            for replica, clock in delta.end.items():
                if clock < get(replica, 0):
                    return False
        if not end:
            return not delta.start
        # dominates_or_equal(end, delta.start) walks ``end``; a replica ``delta.start`` does not
        # name compares with 0, which no clock is under: walking ``delta.start`` is the same test.
        get = end.get
        return all(get(replica, clock) >= clock for replica, clock in delta.start.items())

    def _drop_removed(self, delta: Delta) -> None:
        """Drop the entries whose removal ``delta`` observed: it has their dot, not the entry."""
        values = self.values
        for owner, dots in delta.clouds.items():
            rows = values.get(owner)
            if rows is None:
                continue
            theirs = delta.values.get(owner, _NO_ROWS)
            for dot in dots:
                if dot in rows and dot not in theirs:
                    del rows[dot]
                    self.size -= 1
            if not rows:
                del values[owner]

    def _add_values(self, delta: Delta) -> None:
        """Add the entries of ``delta`` that the generation neither has nor saw removed."""
        values, clouds = self.values, self.clouds
        for owner, theirs in delta.values.items():
            seen = clouds.get(owner, _NO_DOTS)
            rows = values.get(owner)
            for clock, entry in theirs.items():
                if clock in seen or (rows is not None and clock in rows):
                    continue
                if rows is None:
                    rows = values[owner] = {}
                rows[clock] = entry
                self.size += 1

    def _add_dots(self, dots_by_replica: Mapping[ReplicaRef, frozenset[int]]) -> None:
        """Take every dot of the delta (adds, removes and tombstones alike)."""
        clouds = self.clouds
        for replica, dots in dots_by_replica.items():
            mine = clouds.get(replica)
            if mine is None:
                clouds[replica] = set(dots)
                self.size += len(dots)
            else:
                before = len(mine)
                mine |= dots
                self.size += len(mine) - before

    def _widen(self, start: Context, end: Context) -> None:
        """Stretch the range over the delta's: the lower bound of the starts, the upper bound of
        the ends (``lowerbound`` and ``upperbound``, in place)."""
        low = self.start
        for replica, clock in start.items():
            mine = low.get(replica)
            if mine is None or clock < mine:
                low[replica] = clock
        high = self.end
        for replica, clock in end.items():
            mine = high.get(replica)
            if mine is None or clock > mine:
                high[replica] = clock

    def remove_replica(self, replica: ReplicaRef) -> None:
        """Drop every trace of ``replica`` (values, clouds, range); doing it twice is harmless."""
        rows = self.values.pop(replica, _NO_ROWS)
        dots = self.clouds.pop(replica, _NO_DOTS)
        self.size -= len(rows) + len(dots)
        self.start.pop(replica, None)
        self.end.pop(replica, None)
        if self._frozen is not None:
            # What the delta it holds would become, unchanged otherwise (Delta.without_replica).
            self._frozen = self._frozen.without_replica(replica)


def _runs_forward(start: Context, end: Context) -> bool:
    """True if ``start`` and ``end`` name the same replicas and no clock of ``start`` is above
    ``end``'s: what a window's range normally is."""
    if len(start) != len(end):
        return False
    get = end.get
    for replica, clock in start.items():
        high = get(replica)
        if high is None or clock > high:
            return False
    return True


def _overflowed(below: _Generation | None, delta: Delta, cap: int) -> _Generation:
    """What a level whose merge went over its cap holds instead.

    That is the level below's generation, as this push left it (for level 0, the new delta
    alone); or, if that is over the cap too, nothing, from its end on.
    """
    if below is None:
        if delta.size <= cap:
            return _Generation.of(delta)
        return _Generation.empty_at(delta.replica, delta.end)
    if below.size <= cap:
        return below  # shared with the level below: both hold the same, and change alike
    return _Generation.empty_at(below.replica, below.end)


class DeltaGenerations:
    """The delta generations of one replica.

    Args:
        max_sizes: the size cap of each generation, smallest first (Phoenix default
            ``[100, 1000, 10000]``). The size of a delta is its number of values plus the number
            of dots in its clouds.

        generations: generations to start from (for example restored ones), one per size;
            empty by default.

    Raises:
        InvalidArgument: ``max_sizes`` is not a non-empty sequence of ints ``>= 1``, or
            ``generations`` does not hold one :class:`Delta` per size (it is also a
            ``ValueError``, what this raised before).
    """

    __slots__ = ("_levels", "max_sizes")

    def __init__(self, max_sizes: Sequence[int], generations: Sequence[Delta] = ()) -> None:
        try:
            sizes = tuple(max_sizes)
            generations = tuple(generations)
        except TypeError:
            raise InvalidArgument("max_sizes and generations must be sequences") from None
        if not sizes or any(type(size) is not int or size < 1 for size in sizes):
            raise InvalidArgument(f"max_sizes must be positive ints, got {shown(sizes)}")
        if generations and len(generations) != len(sizes):
            raise InvalidArgument(f"expected {len(sizes)} generations, got {len(generations)}")
        if not all(isinstance(g, Delta) for g in generations):
            raise InvalidArgument("generations must be Delta instances")
        self.max_sizes: tuple[int, ...] = sizes
        # One per level, smallest first; adjacent levels may share one (see _Generation).
        self._levels: list[_Generation] = [_Generation.of(g) for g in generations]

    @property
    def generations(self) -> tuple[Delta, ...]:
        """The current generations, smallest first (empty until the first push)."""
        return tuple(level.frozen() for level in self._levels)

    def __len__(self) -> int:
        """The number of generations held (0 until the first push)."""
        return len(self._levels)

    def push(self, delta: Delta, *, pending: Delta | None = None) -> None:
        """Fold a delta that was just sent or received into every generation.

        It costs what ``delta`` holds and names (amortized), not what the generations hold.

        Args:
            delta: the delta.
            pending: the replica's pending delta at this moment; when there are no generations
                yet, each one starts as a copy of it (it is only needed then).

        Raises:
            InvalidArgument: ``delta`` (or ``pending``) is not a :class:`Delta`, or there are no
                generations yet and ``pending`` is missing.
        """
        given: tuple[object, object] = (delta, pending)  # as the caller may have passed them
        if not isinstance(given[0], Delta) or not isinstance(given[1], (Delta, type(None))):
            raise InvalidArgument("push takes a Delta, and pending must be a Delta or None")
        if self._levels:
            levels = self._levels
        elif pending is None:
            raise InvalidArgument("the first push needs the pending delta to start from")
        else:
            levels = [_Generation.of(pending)] * len(self.max_sizes)
        # Whether ``delta`` was merged into each generation, by id: levels may share one, and
        # it must take the delta once.
        contiguous_by_id: dict[int, bool] = {}
        forward = _runs_forward(delta.start, delta.end)
        below: _Generation | None = None  # None: level 0, whose "previous" is the delta itself
        result: list[_Generation] = []
        for generation, cap in zip(levels, self.max_sizes, strict=True):
            contiguous = contiguous_by_id.get(id(generation))
            if contiguous is None:
                contiguous = contiguous_by_id[id(generation)] = generation.merge(delta, forward)
            if not contiguous or generation.size <= cap:
                result.append(generation)
            else:
                result.append(_overflowed(below, delta, cap))
            # Whichever way it went, the level above's "previous" is this generation as merged
            # (or unchanged, if not contiguous): the oversized merge is handed on as it is.
            below = generation
        self._levels = result

    def clear(self) -> None:
        """Forget every generation (after a full-state transfer was merged)."""
        self._levels = []

    def remove_replica(self, replica: ReplicaRef) -> None:
        """Prune a permanently down replica from every generation (no zombie entries later)."""
        for level in self._levels:
            level.remove_replica(replica)

    def find(self, remote_context: Context) -> Delta | None:
        """The first generation worth sending to a replica whose context is ``remote_context``.

        Looking only at the replicas the requester knows, the generation must hold something
        (its start does not dominate-or-equal its end), start no later than the requester
        (the requester's context dominates-or-equals its start) and not be fully known already
        (the requester's context does not dominate its end).
        """
        known = list(remote_context)
        for level in self._levels:
            start = filter_replicas(level.start, known)
            end = filter_replicas(level.end, known)
            if (
                not dominates_or_equal(start, end)
                and dominates_or_equal(remote_context, start)
                and not dominates(remote_context, end)
            ):
                return level.frozen()
        return None

    def extract(
        self, state: ReplicaState, remote_ref: ReplicaRef | None, remote_context: Context
    ) -> Snapshot | Delta:
        """What to send in reply to a transfer request: a fitting generation, else the full state.

        Either way it is filtered for the requester (only replicas it knows, none of its own
        entries).
        """
        generation = self.find(remote_context)
        if generation is None:
            return state.extract(remote_ref, remote_context)
        return generation.extract(remote_ref, remote_context)
