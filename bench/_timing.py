"""Timing helpers shared by the benchmarks: CPU and wall time, min and median, interleaved runs.

Every timed run is one call on a fresh state: ``setup`` builds the state outside the timed region
every time, :func:`gc.collect` runs, then the call is timed on two clocks at once:

* **CPU time**, :func:`time.process_time`: the CPU this process spent (every thread, user and
  system). Time the process spent waiting for a core that another process had is not in it, so it
  is the steadier figure on a shared machine;
* **wall time**, :func:`time.perf_counter`: what a caller waits, including whatever else the
  machine did meanwhile. BENCH.md's Phoenix anchors are best-of-5 *wall-clock* runs, so speed-ups
  over Phoenix divide by our wall minimum.

Both are kept per repetition; :class:`Samples` gives the min and the median of each. The min is the
run least disturbed by anything else; the median is what a run typically costs, garbage collections
included (a collection that fires in one run out of five moves the median only if it fires in most).

Several figures measured together have their repetitions *interleaved* (:func:`measure_jobs`):
every figure's first run, then every figure's second run in the reverse order, and so on (AB, BA,
ABC, CBA), so a burst of load from elsewhere on a shared 2-core machine hits all of them alike and
ratios between them stay honest.

Each run's result goes to the job's ``check`` right after the clocks stop (untimed) and is dropped
before the next run is set up; only what ``check`` returns is kept (keep it small: a count, a
digest), so no large result stays alive while another figure runs and the collector never walks it.

Garbage collection stays *enabled* during the timed run (the Erlang reference pays its own garbage
collector too, and a server in production has it on); :func:`gc.collect` runs before each
repetition so a repetition never pays for the garbage of the previous one or of its setup.

Why a harness of our own rather than ``timeit``, ``pytest-benchmark`` or ``pyperf``:

* the anchors are *best of 5, one call each, fresh state per repetition, setup untimed*. ``timeit``
  times a statement many times on the *same* state (joins would raise ``AlreadyTracked`` on the
  second loop); ``pytest-benchmark``'s pedantic mode can do it but adds a dependency and a plugin to
  the test run; ``pyperf`` spawns worker processes and calibrates loops, which hides the setup
  split we need and takes minutes per figure;
* every timed run hands its result to a check (workload c must return 100,000 joins) that is not
  timed;
* ``time.perf_counter`` and ``time.process_time`` are the clocks all of those use anyway.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, cast

__all__ = [
    "Job",
    "PhaseClock",
    "Samples",
    "Timing",
    "keep",
    "measure",
    "measure_jobs",
    "measure_pair",
    "timed",
]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
U = TypeVar("U")
Q = TypeVar("Q")
V = TypeVar("V")
R_co = TypeVar("R_co", covariant=True)
P = ParamSpec("P")


@dataclass(frozen=True)
class Samples:
    """The CPU and wall times of every repetition of one figure, in seconds, in run order.

    Attributes:
        cpu: CPU time (:func:`time.process_time`) of each repetition.
        wall: wall time (:func:`time.perf_counter`) of each repetition.
    """

    cpu: tuple[float, ...]
    wall: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.wall or len(self.cpu) != len(self.wall):
            raise ValueError(f"{len(self.cpu)} CPU and {len(self.wall)} wall samples")

    @property
    def cpu_min(self) -> float:
        return min(self.cpu)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def wall_min(self) -> float:
        return min(self.wall)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def stats(self) -> tuple[float, float, float, float]:
        """``(cpu_min, cpu_median, wall_min, wall_median)``, the order every report shows."""
        return self.cpu_min, self.cpu_median, self.wall_min, self.wall_median

    def per(self, count: float) -> Samples:
        """Every sample divided by ``count`` (the cost per operation of a run of ``count``)."""
        return Samples(tuple(s / count for s in self.cpu), tuple(s / count for s in self.wall))

    @classmethod
    def of(cls, pairs: Sequence[tuple[float, float]]) -> Samples:
        """From ``(cpu, wall)`` pairs."""
        return cls(tuple(cpu for cpu, _ in pairs), tuple(wall for _, wall in pairs))


@dataclass(frozen=True)
class Timing(Samples, Generic[R_co]):
    """The samples of one figure, and what its check returned on the last run.

    Attributes:
        result: what ``check`` returned for the last timed run (never timed).
    """

    result: R_co

    def samples(self) -> Samples:
        """The samples alone (drops the result)."""
        return Samples(self.cpu, self.wall)


@dataclass(frozen=True)
class Job(Generic[T, R, S]):
    """One figure: ``run(setup())`` is timed; ``check`` gets each result, untimed.

    Attributes:
        setup: builds a fresh input for one run (never timed).
        run: the timed call.
        check: called with each run's result right after the clocks stop; raises if it is wrong
            and returns what is worth keeping (small: the result itself is dropped at once).
    """

    setup: Callable[[], T]
    run: Callable[[T], R]
    check: Callable[[R], S]


def keep(result: R) -> R:
    """A ``check`` that keeps the whole result (for a single figure whose result is small)."""
    return result


def _collect() -> None:
    """Collect garbage before a timed run, then settle the CPU clock.

    On the VMs we measure on, the first :func:`time.process_time` window after a collection reads
    a few microseconds of CPU that the wall clock does not see (about 5 µs after collecting a
    large heap); one throwaway read of each clock takes most of it away. It matters only to
    figures of well under a millisecond.
    """
    gc.collect()
    time.process_time()
    time.perf_counter()


def timed(call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> tuple[float, float, R]:
    """``(cpu, wall, result)`` of ``call(*args, **kwargs)``, after an untimed :func:`gc.collect`."""
    _collect()
    cpu, wall = time.process_time(), time.perf_counter()
    out = call(*args, **kwargs)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return cpu, wall, out


def _run_once(job: Job[Any, Any, Any]) -> tuple[float, float, Any]:
    prepared = job.setup()
    run = job.run
    _collect()
    cpu, wall = time.process_time(), time.perf_counter()
    out = run(prepared)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    del prepared
    return cpu, wall, job.check(out)


def measure_jobs(jobs: Sequence[Job[Any, Any, Any]], *, repeat: int = 5) -> list[Timing[Any]]:
    """Time every job ``repeat`` times, interleaved; the order reverses every repetition.

    Raises:
        ValueError: ``repeat`` is less than 1.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    samples: list[list[tuple[float, float]]] = [[] for _ in jobs]
    kept: list[Any] = [None] * len(jobs)
    order = list(range(len(jobs)))
    for i in range(repeat):
        for index in order if i % 2 == 0 else reversed(order):
            kept[index] = None  # the previous run's check result goes before the next setup
            cpu, wall, kept[index] = _run_once(jobs[index])
            samples[index].append((cpu, wall))
    return [
        Timing(cpu=found.cpu, wall=found.wall, result=result)
        for found, result in zip(map(Samples.of, samples), kept, strict=True)
    ]


def measure(setup: Callable[[], T], run: Callable[[T], R], *, repeat: int = 5) -> Timing[R]:
    """Time ``run(setup())`` ``repeat`` times; ``setup`` is never timed and runs every time.

    The last run's result is kept (the one before is dropped before the next setup).

    Raises:
        ValueError: ``repeat`` is less than 1.
    """
    return cast("Timing[R]", measure_jobs([Job(setup, run, keep)], repeat=repeat)[0])


def measure_pair(
    first: Job[T, R, S], second: Job[U, Q, V], *, repeat: int = 5
) -> tuple[Timing[S], Timing[V]]:
    """:func:`measure_jobs` of two jobs (AB, BA, ...), typed.

    Raises:
        ValueError: ``repeat`` is less than 1.
    """
    a, b = measure_jobs([first, second], repeat=repeat)
    return cast("Timing[S]", a), cast("Timing[V]", b)


class PhaseClock:
    """Splits timed runs into named phases, on both clocks (``lap`` inside the timed call).

    Each lap costs four clock reads, about a microsecond, inside the timed region.
    """

    def __init__(self) -> None:
        self._laps: dict[str, list[tuple[float, float]]] = {}

    @staticmethod
    def start() -> tuple[float, float]:
        """The two clocks now: pass it to the first :meth:`lap`."""
        return time.process_time(), time.perf_counter()

    def lap(self, name: str, since: tuple[float, float]) -> tuple[float, float]:
        """Record phase ``name`` as lasting from ``since`` until now; return now."""
        wall = time.perf_counter()
        cpu = time.process_time()
        self._laps.setdefault(name, []).append((cpu - since[0], wall - since[1]))
        return cpu, wall

    def phases(self) -> dict[str, Samples]:
        """Every phase's samples, in the order the phases were first recorded."""
        return {name: Samples.of(laps) for name, laps in self._laps.items()}
