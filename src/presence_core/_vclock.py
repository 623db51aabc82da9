"""Version vectors (causal contexts), dot clouds and clock sets.

Named ``_vclock`` rather than ``_clock`` on purpose: nothing here reads time. A *context* maps a
replica to the highest clock such that every dot ``1..clock`` of that replica has been observed; a
*cloud* is the set of observed dots beyond a gap. A *clock* is ``(replica, context)``, what a
replica announces in its heartbeats.

The semantics are Phoenix.Tracker.Clock's, including two quirks that the tracker's transfer logic
relies on (SPEC §3.5, §4.4):

* :func:`dominates` first compares sizes, so ``{a: 1}`` does not dominate ``{a: 1, b: 0}``;
* :func:`dominates_or_equal` only looks at the keys of its *first* argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, overload

from ._errors import InvalidArgument, shown

__all__ = [
    "Clock",
    "Context",
    "ReplicaRef",
    "append_clock",
    "compact_cloud",
    "dominates",
    "dominates_or_equal",
    "filter_replicas",
    "lowerbound",
    "upperbound",
]


class _ReplicaRefFields(NamedTuple):
    name: str
    vsn: int


class ReplicaRef(_ReplicaRefFields):
    """The identity of one replica incarnation: its ``name`` and its ``vsn`` (incarnation).

    A restarted node keeps its name and gets a new ``vsn``, which makes it a new replica: the
    presences of the old incarnation are retired, never confused with the new ones. The adapter
    chooses ``vsn`` (for example from the wall clock at start); the core never does.

    It is a named tuple, so it is hashable, cheap, ordered (by name, then vsn) and prints as valid
    Python.

    Raises:
        InvalidArgument: ``name`` is not a non-empty ``str``, or ``vsn`` is not an ``int >= 0``
            (it is also a ``TypeError`` and a ``ValueError``, what this raised before).
    """

    __slots__ = ()

    def __new__(cls, name: str, vsn: int) -> ReplicaRef:
        if not isinstance(name, str):
            raise InvalidArgument(f"ReplicaRef.name must be a str, not {type(name).__name__}")
        if type(vsn) is not int:
            raise InvalidArgument(f"ReplicaRef.vsn must be an int, not {type(vsn).__name__}")
        if not name:
            raise InvalidArgument("ReplicaRef.name must not be empty")
        if vsn < 0:
            raise InvalidArgument(f"ReplicaRef.vsn must be >= 0, not {shown(vsn)}")
        return super().__new__(cls, name, vsn)

    def __repr__(self) -> str:
        return f"ReplicaRef({self.name!r}, {self.vsn!r})"


Context = Mapping[ReplicaRef, int]
"""A version vector: replica -> highest clock with no gap below it."""

Clock = tuple[ReplicaRef, Context]
"""What a replica announces: its own ref and its context (down replicas omitted)."""


def _check_contexts(a: object, b: object) -> None:
    """Refuse a context that is not a mapping (the callers' fast path checks for dicts first)."""
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, Mapping):
            raise InvalidArgument(f"{name} must be a context mapping, not {type(value).__name__}")


def dominates(a: Context, b: Context) -> bool:
    """True if ``a`` has seen everything ``b`` has (Phoenix ``Clock.dominates?``).

    ``a`` must have at least as many entries as ``b``; then every replica of ``b`` must have a
    clock in ``a`` (0 when absent) that is at least as high.

    Raises:
        InvalidArgument: ``a`` or ``b`` is not a mapping.
    """
    if type(a) is not dict or type(b) is not dict:
        _check_contexts(a, b)
    if len(a) < len(b):
        return False
    get = a.get
    return all(get(replica, 0) >= clock for replica, clock in b.items())


def dominates_or_equal(a: Context, b: Context) -> bool:
    """True if ``a`` is at least ``b`` on the replicas of ``a`` (Phoenix ``dominates_or_equal?``).

    Two empty contexts are equal; an empty ``a`` never dominates a non-empty ``b``; replicas that
    only ``b`` knows are ignored.

    Raises:
        InvalidArgument: ``a`` or ``b`` is not a mapping.
    """
    if type(a) is not dict or type(b) is not dict:
        _check_contexts(a, b)
    if not a:
        return not b
    get = b.get
    return all(clock >= get(replica, 0) for replica, clock in a.items())


def upperbound(a: Context, b: Context) -> dict[ReplicaRef, int]:
    """Key-wise maximum over the union of both contexts.

    Raises:
        InvalidArgument: ``a`` or ``b`` is not a mapping.
    """
    if type(a) is not dict or type(b) is not dict:
        _check_contexts(a, b)
    result = dict(a)
    for replica, clock in b.items():
        mine = result.get(replica)
        if mine is None or clock > mine:
            result[replica] = clock
    return result


def lowerbound(a: Context, b: Context) -> dict[ReplicaRef, int]:
    """Key-wise minimum over the union of both contexts (a key on one side only keeps its value).

    Raises:
        InvalidArgument: ``a`` or ``b`` is not a mapping.
    """
    if type(a) is not dict or type(b) is not dict:
        _check_contexts(a, b)
    result = dict(a)
    for replica, clock in b.items():
        mine = result.get(replica)
        if mine is None or clock < mine:
            result[replica] = clock
    return result


def filter_replicas(context: Context, replicas: Iterable[ReplicaRef]) -> dict[ReplicaRef, int]:
    """The part of ``context`` about ``replicas`` (unknown replicas are ignored).

    Raises:
        InvalidArgument: ``context`` is not a mapping, or ``replicas`` not an iterable.
    """
    if type(context) is not dict and not isinstance(context, Mapping):
        raise InvalidArgument(f"context must be a mapping, not {type(context).__name__}")
    if type(replicas) is not list and not isinstance(replicas, Iterable):
        raise InvalidArgument(f"replicas must be an iterable, not {type(replicas).__name__}")
    return {replica: context[replica] for replica in replicas if replica in context}


@overload
def compact_cloud(base: int, cloud: Iterable[int]) -> tuple[int, set[int]]: ...


@overload
def compact_cloud(base: int | None, cloud: Iterable[int]) -> tuple[int | None, set[int]]: ...


def compact_cloud(base: int | None, cloud: Iterable[int]) -> tuple[int | None, set[int]]:
    """Fold the contiguous part of a replica's cloud into its context clock.

    Args:
        base: the replica's context clock, or ``None`` when the context has no entry for it.
        cloud: the replica's observed dots beyond the context.

    Returns:
        ``(new_base, remaining_cloud)``. Dots at or below the context are dropped; dot 1 of a
        replica without a context entry starts one (Phoenix's compaction does the same).

    Raises:
        InvalidArgument: ``base`` is neither an ``int`` nor ``None``, or ``cloud`` not an
            iterable.
    """
    if base is not None and type(base) is not int:
        raise InvalidArgument(f"base must be an int or None, not {type(base).__name__}")
    if type(cloud) is not set and type(cloud) is not frozenset and not isinstance(cloud, Iterable):
        raise InvalidArgument(f"cloud must be an iterable of ints, not {type(cloud).__name__}")
    remaining: set[int] = set()
    for dot in sorted(cloud):
        if base is not None and dot == base + 1:
            base = dot
        elif base is not None and dot <= base:
            continue
        elif base is None and dot == 1:
            base = 1
        else:
            remaining.add(dot)
    return base, remaining


def _combine(clockset: Sequence[Clock]) -> dict[ReplicaRef, int]:
    combined: dict[ReplicaRef, int] = {}
    for _, context in clockset:
        combined = upperbound(context, combined)
    return combined


def append_clock(clockset: Sequence[Clock], clock: Clock) -> list[Clock]:
    """Add a replica's clock to a clock set, keeping only the clocks worth a transfer (SPEC §3.5).

    * an empty context is ignored;
    * a clock that dominates the upper bound of the set replaces the whole set;
    * a clock that the upper bound dominates is not added;
    * otherwise every clock it dominates is dropped, and it is added unless every remaining clock
      dominates it.

    The set is never mutated; a new list is returned.

    Raises:
        InvalidArgument: ``clock`` is not a pair ``(ReplicaRef, context mapping)``, or
            ``clockset`` not a sequence of such pairs.
    """
    given: object = clockset
    if not isinstance(given, Sequence) or isinstance(given, str):
        raise InvalidArgument(f"clockset must be a sequence of clocks, not {type(given).__name__}")
    pairs: list[tuple[str, object]] = [("clock", clock)]
    pairs.extend(("clockset item", other) for other in given)
    for name, item in pairs:
        if not (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and isinstance(item[0], ReplicaRef)
            and isinstance(item[1], Mapping)
        ):
            what = type(item).__name__
            if isinstance(item, (tuple, list)):
                what = f"({', '.join(type(field).__name__ for field in item)})"
            raise InvalidArgument(
                f"{name} must be a pair (ReplicaRef, context mapping), not {what}"
            )
    replica, context = clock
    if not context:
        return list(clockset)
    big = _combine(clockset)
    if dominates(context, big):
        return [clock]
    if dominates(big, context):
        return list(clockset)
    # Neither side dominates: drop what the new clock dominates and add it. (Phoenix also keeps
    # an "insert unless every remaining clock dominates it" flag; that case cannot arise here,
    # since those clocks' upper bound would then dominate it and we returned above.)
    kept = [other for other in clockset if not dominates(context, other[1])]
    kept.append((replica, context))
    return kept
