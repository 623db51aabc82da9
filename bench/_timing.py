"""Timing helpers shared by the benchmarks: measured the way BENCH.md's anchors were.

The anchors are best-of-5 wall-clock runs with the inputs built before timing and a fresh state
per repetition, so :func:`measure` runs ``setup`` outside the timed region every time and keeps
the fastest run. Compare results with the anchors as ratios from one run: the machines are noisy.

Why a harness of our own rather than ``timeit``, ``pytest-benchmark`` or ``pyperf``:

* the anchors are *best of 5, one call each, fresh state per repetition, setup untimed*. ``timeit``
  times a statement many times on the *same* state (joins would raise ``AlreadyTracked`` on the
  second loop); ``pytest-benchmark``'s pedantic mode can do it but adds a dependency and a plugin to
  the test run; ``pyperf`` spawns worker processes and calibrates loops, which hides the setup
  split we need and takes minutes per figure;
* every timed run hands its result back so the suite checks it (workload c must return 100,000
  joins) without timing the check;
* ``time.perf_counter`` is the clock all of those use anyway;
* :func:`measure_pair` interleaves the repetitions of the CRDT and of its plain-dict floor, so a
  burst of load from elsewhere on a shared 2-core machine hits both and their ratio stays honest.

Garbage collection stays *enabled* during the timed run (the Erlang reference pays its own garbage
collector too, and a server in production has it on); :func:`gc.collect` runs before each
repetition so a repetition never pays for the garbage of the previous one or of its setup.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Timing", "best_of", "measure", "measure_pair"]

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
U = TypeVar("U")
S = TypeVar("S")


@dataclass(frozen=True)
class Timing(Generic[R_co]):
    """The samples of one measurement.

    Attributes:
        samples: every repetition's wall-clock time, in seconds, in the order they ran.
        result: what the last timed run returned (for correctness checks, never timed).
    """

    samples: tuple[float, ...]
    result: R_co

    @property
    def best(self) -> float:
        """The fastest repetition, in seconds."""
        return min(self.samples)

    @property
    def best_ms(self) -> float:
        """The fastest repetition, in milliseconds."""
        return self.best * 1000.0


def measure(setup: Callable[[], T], run: Callable[[T], R], *, repeat: int = 5) -> Timing[R]:
    """Time ``run(setup())`` ``repeat`` times; ``setup`` is never timed and runs every time.

    Raises:
        ValueError: ``repeat`` is less than 1.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    samples: list[float] = []
    last: list[R] = []
    for _ in range(repeat):
        last.clear()  # free the previous repetition's state before building the next one
        prepared = setup()
        gc.collect()
        start = time.perf_counter()
        out = run(prepared)
        samples.append(time.perf_counter() - start)
        last.append(out)
        del prepared, out
    return Timing(samples=tuple(samples), result=last[0])


def _once(setup: Callable[[], T], run: Callable[[T], R]) -> tuple[float, R]:
    prepared = setup()
    gc.collect()
    start = time.perf_counter()
    out = run(prepared)
    elapsed = time.perf_counter() - start
    return elapsed, out


def measure_pair(
    first: tuple[Callable[[], T], Callable[[T], R]],
    second: tuple[Callable[[], U], Callable[[U], S]],
    *,
    repeat: int = 5,
) -> tuple[Timing[R], Timing[S]]:
    """Like :func:`measure` for two ``(setup, run)`` pairs, their repetitions interleaved.

    On a noisy machine a burst of load then hits both sides alike, so the ratio of their best
    times is steadier than with one measured after the other. The order alternates (AB, BA, ...).

    Raises:
        ValueError: ``repeat`` is less than 1.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    samples_a: list[float] = []
    samples_b: list[float] = []
    last_a: list[R] = []
    last_b: list[S] = []
    for i in range(repeat):
        last_a.clear()
        last_b.clear()
        if i % 2 == 0:
            elapsed_a, out_a = _once(*first)
            elapsed_b, out_b = _once(*second)
        else:
            elapsed_b, out_b = _once(*second)
            elapsed_a, out_a = _once(*first)
        samples_a.append(elapsed_a)
        samples_b.append(elapsed_b)
        last_a.append(out_a)
        last_b.append(out_b)
        del out_a, out_b
    return (
        Timing(samples=tuple(samples_a), result=last_a[0]),
        Timing(samples=tuple(samples_b), result=last_b[0]),
    )


def best_of(setup: Callable[[], T], run: Callable[[T], object], *, repeat: int = 5) -> float:
    """The fastest of ``repeat`` timings of ``run(setup())``, in seconds; setup is not timed.

    Raises:
        ValueError: ``repeat`` is less than 1.
    """
    return measure(setup, run, repeat=repeat).best
