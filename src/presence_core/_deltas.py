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
"""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import InvalidArgument, shown
from ._state import Delta, ReplicaState, Snapshot, merge_deltas
from ._vclock import Context, ReplicaRef, dominates, dominates_or_equal, filter_replicas

__all__ = ["DeltaGenerations"]


def _empty_at(delta: Delta) -> Delta:
    """A generation that holds nothing and starts where ``delta`` ends (contiguous with what
    comes next)."""
    return Delta(replica=delta.replica, values={}, clouds={}, start=delta.end, end=delta.end)


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

    __slots__ = ("_generations", "max_sizes")

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
        self._generations: list[Delta] = list(generations)

    @property
    def generations(self) -> tuple[Delta, ...]:
        """The current generations, smallest first (empty until the first push)."""
        return tuple(self._generations)

    def __len__(self) -> int:
        """The number of generations held (0 until the first push)."""
        return len(self._generations)

    def push(self, delta: Delta, *, pending: Delta | None = None) -> None:
        """Fold a delta that was just sent or received into every generation.

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
        if self._generations:
            generations = self._generations
        elif pending is None:
            raise InvalidArgument("the first push needs the pending delta to start from")
        else:
            generations = [pending] * len(self.max_sizes)
        previous = delta
        result: list[Delta] = []
        for generation, cap in zip(generations, self.max_sizes, strict=True):
            merged = merge_deltas(generation, delta)
            if merged is None:
                result.append(generation)
                previous = generation
            elif merged.size <= cap:
                result.append(merged)
                previous = merged
            else:
                result.append(previous if previous.size <= cap else _empty_at(previous))
                previous = merged
        self._generations = result

    def clear(self) -> None:
        """Forget every generation (after a full-state transfer was merged)."""
        self._generations = []

    def remove_replica(self, replica: ReplicaRef) -> None:
        """Prune a permanently down replica from every generation (no zombie entries later)."""
        self._generations = [g.without_replica(replica) for g in self._generations]

    def find(self, remote_context: Context) -> Delta | None:
        """The first generation worth sending to a replica whose context is ``remote_context``.

        Looking only at the replicas the requester knows, the generation must hold something
        (its start does not dominate-or-equal its end), start no later than the requester
        (the requester's context dominates-or-equals its start) and not be fully known already
        (the requester's context does not dominate its end).
        """
        known = list(remote_context)
        for generation in self._generations:
            start = filter_replicas(generation.start, known)
            end = filter_replicas(generation.end, known)
            if (
                not dominates_or_equal(start, end)
                and dominates_or_equal(remote_context, start)
                and not dominates(remote_context, end)
            ):
                return generation
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
