"""Memory per presence, measured with :mod:`tracemalloc`.

The state is filled the way workload a fills it (connections x 100 topics, key ``user<i>``); the
inputs (the connection, topic and key strings and the input tuples) are built before tracing
starts, so only what the state allocates is counted. ``ReplicaState.join`` stores a private copy
of every meta, so the meta cannot be shared: what one stored copy of the BENCH.md meta costs is
measured the same way (``copy_meta`` into a preallocated list) and subtracted, once per presence.

Two figures: right after the joins (the pending delta still references every new entry) and after
the broadcast (``reset_delta`` and ``compact``, what every tick does), which is the steady state.
The floor (:class:`~bench._floor.PlainState`) is measured the same way, for comparison.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from presence_core import ReplicaState
from presence_core._meta import copy_meta

from ._floor import PlainState
from ._workloads import META, R1, fill, fill_plain, grid

__all__ = ["MEMORY_TARGET", "MemoryResult", "measure_memory"]

MEMORY_TARGET = 400.0
"""Bytes per presence, meta excluded, the steady state must stay under."""


@dataclass(frozen=True)
class MemoryResult:
    """Bytes per presence at one size, meta excluded.

    Attributes:
        presences: how many presences the state holds.
        steady: bytes per presence after the broadcast (the figure the target is about).
        with_delta: bytes per presence before the broadcast (the pending delta references all).
        floor: bytes per presence of the plain-dict floor.
        meta: bytes of one stored meta copy (subtracted from the figures above).
    """

    presences: int
    steady: float
    with_delta: float
    floor: float
    meta: float


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


def _meta_bytes(copy: Callable[[dict[str, str]], object], count: int) -> float:
    slots: list[object] = [None] * count

    def build() -> None:
        for i in range(count):
            slots[i] = copy(META)

    used, _ = _traced(build)
    return used / count


def measure_memory(conns: int, topics: int = 100) -> MemoryResult:
    """Bytes per presence of a state holding ``conns * topics`` presences (meta excluded)."""
    inputs = grid(conns, topics)
    n = len(inputs)
    meta = _meta_bytes(copy_meta, min(n, 100_000))
    plain_meta = _meta_bytes(dict, min(n, 100_000))

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
    del state

    plain_used, plain = _traced(lambda: fill_plain(PlainState(R1.name), inputs))
    del plain
    return MemoryResult(
        presences=n,
        steady=steady / n - meta,
        with_delta=with_delta / n - meta,
        floor=plain_used / n - plain_meta,
        meta=meta,
    )
