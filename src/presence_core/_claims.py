"""What a peer may claim about other replicas: nothing beyond what they announced themselves.

A payload from replica ``S`` (a delta, a full extract or a part of one) speaks for ``S`` itself
and, as gossip, for third replicas: their entries it carries, and the dots of theirs it has seen
(which is how removals spread). A dot of replica ``c`` that ``c`` never announced cannot be
genuine, and accepting one does lasting harm: a context that puts ``c`` at ``2**63 - 1`` would
make every later join of ``c`` look already seen, and a cloud of ``c``'s future dots would do
the same to some of them.

So, before merging, every claim about a third replica ``c`` is cut at a *bound*: the highest
clock ``c`` itself announced to us (its heartbeats and its own transfer replies), or our context
for ``c`` if that is higher. Entries above it are dropped, dots above it forgotten, contexts,
ranges and window ends lowered to it. ``S``'s claims about itself are its own business (a lie
there only hides ``S``'s own later joins), and replicas without a bound (unknown to us) pass
unchanged: a merge ignores them anyway.

An honest peer is never cut for long: it can be ahead of what ``c`` told us only by the events
``c`` made since its last heartbeat reached us. What was cut comes back through ``c``'s next
heartbeat and the transfers that follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

from ._payloads import Delta, Entry, Snapshot, SnapshotPart, _trusted
from ._vclock import ReplicaRef

__all__ = ["clamp_clock", "clamp_payload"]

Bounds = Mapping[ReplicaRef, int]


def clamp_clock(
    clock: Mapping[ReplicaRef, int], sender: ReplicaRef, bounds: Bounds
) -> dict[ReplicaRef, int]:
    """``clock`` with every third replica cut at its bound, and replicas without one left out.

    The sender's claim about itself is never cut (a bound of its, if any, is ignored).
    """
    result = {
        replica: value if value <= bound else bound
        for replica, value in clock.items()
        if (bound := bounds.get(replica)) is not None and replica != sender
    }
    own = clock.get(sender)
    if own is not None:
        result[sender] = own
    return result


def _over(payload: Delta | Snapshot | SnapshotPart, sender: ReplicaRef, bounds: Bounds) -> bool:
    """True if any claim about a third replica goes beyond its bound (the cheap common check)."""
    if isinstance(payload, Delta):
        contexts: tuple[Mapping[ReplicaRef, int], ...] = (payload.end,)
    else:
        contexts = (payload.context,)
    for context in contexts:
        for replica, value in context.items():
            bound = bounds.get(replica)
            if bound is not None and value > bound and replica != sender:
                return True
    for replica, dots in payload.clouds.items():
        bound = bounds.get(replica)
        if bound is not None and dots and max(dots) > bound and replica != sender:
            return True
    for owner, rows in payload.values.items():
        bound = bounds.get(owner)
        if bound is not None and rows and max(rows) > bound and owner != sender:
            return True
    return False


@overload
def clamp_payload(payload: Delta, sender: ReplicaRef, bounds: Bounds) -> Delta | None: ...


@overload
def clamp_payload(payload: Snapshot, sender: ReplicaRef, bounds: Bounds) -> Snapshot | None: ...


@overload
def clamp_payload(
    payload: SnapshotPart, sender: ReplicaRef, bounds: Bounds
) -> SnapshotPart | None: ...


def clamp_payload(
    payload: Delta | Snapshot | SnapshotPart, sender: ReplicaRef, bounds: Bounds
) -> Delta | Snapshot | SnapshotPart | None:
    """``payload`` cut at ``bounds`` for every replica but ``sender``; ``None`` if nothing was cut.

    ``bounds`` maps a replica to the highest clock of its own that it announced (or that we hold).
    """
    if not _over(payload, sender, bounds):
        return None

    def cap(replica: ReplicaRef) -> int | None:
        return None if replica == sender else bounds.get(replica)

    def cut_context(context: Mapping[ReplicaRef, int]) -> dict[ReplicaRef, int]:
        result = {}
        for replica, value in context.items():
            bound = cap(replica)
            result[replica] = value if bound is None else min(value, bound)
        return result

    clouds: dict[ReplicaRef, frozenset[int]] = {}
    for replica, dots in payload.clouds.items():
        bound = cap(replica)
        kept = dots if bound is None else frozenset(d for d in dots if d <= bound)
        if kept:
            clouds[replica] = kept
    values: dict[ReplicaRef, Mapping[int, Entry]] = {}
    for owner, rows in payload.values.items():
        bound = cap(owner)
        kept_rows = rows if bound is None else {c: e for c, e in rows.items() if c <= bound}
        if kept_rows:
            values[owner] = kept_rows
    if isinstance(payload, Delta):
        end = cut_context(payload.end)
        start = {r: min(c, end[r]) if r in end else c for r, c in payload.start.items()}
        return _trusted(
            Delta, replica=payload.replica, values=values, clouds=clouds, start=start, end=end
        )
    context = cut_context(payload.context)
    if isinstance(payload, Snapshot):
        return _trusted(
            Snapshot, replica=payload.replica, context=context, clouds=clouds, values=values
        )
    ranges: dict[ReplicaRef, tuple[int, int]] = {}
    for owner, (first, last) in payload.ranges.items():
        last = min(last, context[owner])
        if first < last:
            ranges[owner] = (first, last)
    return _trusted(
        SnapshotPart,
        replica=payload.replica,
        context=context,
        ranges=ranges,
        clouds=clouds,
        values=values,
    )
