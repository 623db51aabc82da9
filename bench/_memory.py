"""Memory per presence, measured with :mod:`tracemalloc`, the stored meta included.

The state is filled the way workload a fills it (connections x 100 topics, key ``user<i>``); the
inputs (the connection, topic and key strings and the input tuples) are built before tracing
starts, so only what the state allocates is counted. ``ReplicaState.join`` stores a private copy
of every meta: that copy belongs to one presence and to nothing else, so it is part of what a
presence costs and every figure includes it.

The meta's share is reported beside it, for information: one stored meta (the ``meta`` of a stored
:class:`~presence_core.Entry`: public API only) is rebuilt with its own type when that is a
``dict``, as many times as there are presences (at most 100,000), traced the same way, and
multiplied by the number of distinct meta objects the state holds per presence (1 while every
presence has a copy of its own; less if the core ever shares equal metas).

Two figures: right after the joins (the pending delta still references every new entry) and after
the broadcast (``reset_delta`` and ``compact``, what every tick does), which is the steady state and
the one the target (at most 400 B per presence at 100,000 presences) is about. The floor
(:class:`~bench._floor.PlainState`, whose records hold a ``dict(meta)`` copy) is measured the same
way, for comparison.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from presence_core import ReplicaState

from ._floor import PlainState
from ._workloads import R1, fill, fill_plain, grid

__all__ = ["MEMORY_TARGET", "MEMORY_TARGET_PRESENCES", "MemoryResult", "measure_memory"]

MEMORY_TARGET = 400.0
"""Bytes per presence, meta included, the steady state must not exceed (at 100,000 presences)."""

MEMORY_TARGET_PRESENCES = 100_000
"""The size the memory target is judged at."""


@dataclass(frozen=True)
class MemoryResult:
    """Bytes per presence at one size, the stored meta included.

    Attributes:
        presences: how many presences the state holds.
        steady: bytes per presence after the broadcast (the figure the target is about).
        with_delta: bytes per presence before the broadcast (the pending delta references all).
        floor: bytes per presence of the plain-dict floor.
        meta: bytes per presence of the stored meta copies (included in the figures above).
    """

    presences: int
    steady: float
    with_delta: float
    floor: float
    meta: float

    @property
    def meta_share(self) -> float:
        """The meta's share of :attr:`steady`, between 0 and 1."""
        return self.meta / self.steady

    @property
    def without_meta(self) -> float:
        """:attr:`steady` less the meta: what the CRDT's own structures cost."""
        return self.steady - self.meta

    @property
    def judged(self) -> bool:
        """True at the size the target is judged at."""
        return self.presences == MEMORY_TARGET_PRESENCES

    @property
    def met(self) -> bool:
        return self.steady <= MEMORY_TARGET


def _traced(build: Callable[[], object]) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, built
    finally:
        tracemalloc.stop()


def _copy_bytes(meta: Mapping[str, object], count: int) -> float:
    """Bytes of one copy of ``meta``, of its own type when that is a ``dict`` (``dict`` else)."""
    kind: Callable[[Mapping[str, object]], object] = type(meta) if isinstance(meta, dict) else dict
    slots: list[object] = [None] * count

    def build() -> None:
        for i in range(count):
            slots[i] = kind(meta)

    used, _ = _traced(build)
    return used / count


def measure_memory(conns: int, topics: int = 100) -> MemoryResult:
    """Bytes per presence of a state holding ``conns * topics`` presences, meta included."""
    inputs = grid(conns, topics)
    n = len(inputs)

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        state = fill(ReplicaState(R1), inputs)
        gc.collect()
        with_delta = tracemalloc.get_traced_memory()[0] - before
        state.reset_delta()
        state.compact()
        gc.collect()
        steady = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    if len(state) != n:
        raise AssertionError(f"memory: the state holds {len(state)}, not {n}")
    metas = [entry.meta for entry in state.entries()]
    distinct = len({id(meta) for meta in metas})
    sample = metas[0]
    del state, metas
    meta = _copy_bytes(sample, min(n, 100_000)) * distinct / n

    plain_used, plain = _traced(lambda: fill_plain(PlainState(R1.name), inputs))
    del plain
    return MemoryResult(
        presences=n,
        steady=steady / n,
        with_delta=with_delta / n,
        floor=plain_used / n,
        meta=meta,
    )
