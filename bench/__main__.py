"""``python -m bench``: run the suite, print the figures, write the table and the plot.

Full mode (the default) uses BENCH.md's sizes, takes a few minutes and writes
``performance_results.inc`` (included by ``docs/performance.rst``) and ``performance.png`` into
``--out`` (``docs/`` by default). ``--quick`` uses small sizes, checks every result, judges no
target and writes nothing unless ``--out`` is given; it leaves out the broker section.
``--targets`` runs only the speed pass's target figures (CPU and wall time, min and median, of
interleaved runs; memory per presence with the meta) and prints them, writing nothing; it imports
neither the adapters nor matplotlib, so it runs on every supported Python (3.10 to 3.13) with only
the core installed: run it with each interpreter to report that Python.
``--brokers`` runs only the broker section (nodes in processes over Redis and NATS; with
``--quick``, at small sizes) and prints it, writing nothing. ``--soak`` runs only the soak (a
million operations and 100 restarts in the simulator, memory sampled along the way; with
``--quick``, the test's 20,000 operations) and prints its curve, writing nothing.
``--fanout`` runs only the fan-out section (a room of 100,000 presences on three nodes under 1,000
joins per second, batched against unbatched; a few minutes, or seconds with ``--quick``), prints
it and writes ``fanout_results.inc`` (included by the *Fan-out* section of
``docs/performance.rst``) into ``--out``: ``docs/`` by default, nowhere in quick mode unless
``--out`` is given. A full run writes that file too. ``--fanout-seconds`` sets its measured window.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._format import ROOT

if TYPE_CHECKING:
    from ._fanout import FanoutPlan, FanoutResult
    from ._format import Machine
    from ._report import Results

__all__ = ["main", "write_fanout", "write_outputs"]

TABLE = "performance_results.inc"
PLOT = "performance.png"
FANOUT_TABLE = "fanout_results.inc"


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def write_outputs(results: Results, out: Path, *, plot: bool = True) -> list[Path]:
    """Write the rst fragments (and the PNG when ``plot``) into ``out``; return the paths.

    The fan-out section has a fragment of its own (:data:`FANOUT_TABLE`), written when the run
    measured it.
    """
    from ._report import render_rst, write_plot

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if plot:
        write_plot(results, out / PLOT)
        written.append(out / PLOT)
    table = out / TABLE
    table.write_text(render_rst(results, image=PLOT if plot else None), encoding="utf-8")
    written.append(table)
    if results.fanout is not None:
        written.append(write_fanout(results.fanout, results.machine, out))
    return written


def write_fanout(found: FanoutResult, where: Machine, out: Path) -> Path:
    """Write :data:`FANOUT_TABLE` into ``out``; return its path."""
    from ._fanout import render_fanout_rst

    out.mkdir(parents=True, exist_ok=True)
    path = out / FANOUT_TABLE
    path.write_text(render_fanout_rst(found, where), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="presence-core's benchmark suite (BENCH.md)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: check every result, judge no target"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"where to write {TABLE} and {PLOT} (default: docs/; nothing in --quick mode)",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="repetitions per figure (default 5, quick 1)"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    parser.add_argument(
        "--targets",
        action="store_true",
        help="run only the speed pass's target figures and print them; writes nothing "
        "(needs neither the adapters nor matplotlib)",
    )
    parser.add_argument(
        "--brokers",
        action="store_true",
        help="run only the broker section (Redis and NATS, nodes in processes); writes nothing",
    )
    parser.add_argument(
        "--broker-presences",
        type=int,
        default=None,
        metavar="N",
        help="presences of the state that reaches a new node over a broker "
        "(default 100,000; quick 1,000)",
    )
    parser.add_argument(
        "--soak",
        action="store_true",
        help="run only the soak (a million operations, 100 restarts; memory sampled along the "
        "way) and print its curve; writes nothing",
    )
    parser.add_argument(
        "--fanout",
        action="store_true",
        help="run only the fan-out section (a large room on three nodes, batched against "
        "unbatched), print it and write fanout_results.inc into --out",
    )
    parser.add_argument(
        "--fanout-seconds",
        type=float,
        default=None,
        metavar="S",
        help="the fan-out's measured window, in seconds of load, rounded up to whole broadcast "
        "periods (default 10; quick 0.3)",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.broker_presences is not None and args.broker_presences < 1:
        parser.error("--broker-presences must be at least 1")
    if args.fanout_seconds is not None and not args.fanout_seconds > 0:
        parser.error("--fanout-seconds must be positive")

    if sum((args.targets, args.brokers, args.soak, args.fanout)) > 1:
        parser.error("--targets, --brokers, --soak and --fanout each run one section: pick one")
    if args.targets:
        if args.out is not None or args.broker_presences is not None:
            parser.error(
                "--targets prints the targets only; it takes no --out or --broker-presences"
            )
        return _targets(quick=args.quick, repeat=args.repeat)
    if args.soak:
        if args.out is not None:
            parser.error("--soak prints the soak only; it takes no --out")
        from ._soak import CI_SOAK, FULL_SOAK, render_soak, run_soak

        print(render_soak(run_soak(CI_SOAK if args.quick else FULL_SOAK, progress=_progress)))
        return 0
    from ._brokers import measure_brokers
    from ._report import render_broker_text, render_text
    from ._suite import FULL_PLAN, QUICK_PLAN, run_suite

    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.broker_presences is not None:
        brokers = dataclasses.replace(plan.brokers, presences=args.broker_presences)
        plan = dataclasses.replace(plan, brokers=brokers)
    if args.fanout_seconds is not None:
        fanout = dataclasses.replace(plan.fanout, seconds=args.fanout_seconds)
        plan = dataclasses.replace(plan, fanout=fanout)
    out: Path | None = args.out
    if out is None and not args.quick:
        out = ROOT / "docs"
    if args.fanout:
        if args.broker_presences is not None:
            parser.error("--fanout runs the fan-out only; it takes no --broker-presences")
        return _fanout(plan.fanout, repeat=args.repeat, out=out)
    if args.brokers:
        if args.out is not None:
            parser.error("--brokers prints the broker section only; it writes no --out files")
        print(render_broker_text(measure_brokers(plan.brokers, progress=_progress)))
        return 0
    results = run_suite(
        plan, quick=args.quick, repeat=args.repeat, progress=_progress, brokers=not args.quick
    )
    print(render_text(results))
    if out is not None:
        try:
            written = write_outputs(results, out, plot=not args.no_plot)
        except ModuleNotFoundError as error:
            print(
                f"\ncannot draw the plot ({error}): pip install -e '.[bench]', or pass --no-plot",
                file=sys.stderr,
            )
            return 2
        for path in written:
            print(f"wrote {path}")
    return 0


def _fanout(plan: FanoutPlan, *, repeat: int | None, out: Path | None) -> int:
    from ._fanout import measure_fanout, render_fanout
    from ._format import machine, text_table

    if repeat is not None:
        plan = dataclasses.replace(plan, repeat=repeat)
    where = machine()
    found = measure_fanout(plan, progress=_progress)
    print(render_fanout(found, text_table))
    if out is not None:
        print(f"wrote {write_fanout(found, where, out)}")
    return 0


def _targets(*, quick: bool, repeat: int | None) -> int:
    from ._format import machine
    from ._targets import FULL_TARGETS, QUICK_TARGETS, measure_targets, render_targets

    where = machine()
    _progress(f"targets on {where.python} ...")
    result = measure_targets(
        QUICK_TARGETS if quick else FULL_TARGETS,
        quick=quick,
        repeat=(1 if quick else 5) if repeat is None else repeat,
        progress=_progress,
    )
    print(render_targets(result, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
