"""presence-core's benchmark suite: ``python -m bench`` (see ``docs/performance.rst``).

It runs BENCH.md's workloads a to e on the CRDT and on a plain-dict floor, the speed pass's target
figures, memory per presence, bytes on the wire, end-to-end joins per second, the latency of one
join from tracker to tracker, how each cost scales and, in the cluster simulator, how fast replicas
converge after a partition heals or a node crashes; then the adapters: nodes on the asyncio and
anyio drivers (track-to-remote-diff latency, tracks per second, idle CPU) and the Phoenix endpoint
under uvicorn (websocket joins per second, fan-out of one diff to 1,000 sockets). Every timed figure
is CPU time and wall time, min and median of interleaved runs. It checks every result, and writes a
table and a plot into ``docs/``. ``python -m bench --quick`` runs the same code on small sizes in
seconds (CI runs it through ``tests/test_bench_quick.py``); ``python -m bench --targets`` runs only
the target figures, on any supported Python (it needs neither the adapters' extras nor matplotlib).

The names below are imported on first use, so that ``--targets`` loads only what it measures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._suite import FULL_PLAN, QUICK_PLAN, Plan, run_suite

__all__ = ["FULL_PLAN", "QUICK_PLAN", "Plan", "run_suite"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("._suite", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
