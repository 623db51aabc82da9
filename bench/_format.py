"""What every report shares: the machine a run comes from, and plain-text and rst tables.

It imports nothing but the standard library, so ``python -m bench --targets`` can print its table
on a Python where the adapters' packages or matplotlib are not installed.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ROOT",
    "Machine",
    "machine",
    "machine_lines",
    "ms",
    "rst_cell",
    "rst_table",
    "rst_text",
    "text_table",
    "us",
]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Machine:
    """Where the numbers come from."""

    platform: str
    python: str
    cpu: str
    cores: int
    commit: str
    date: str


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def machine() -> Machine:
    """Describe this machine, this Python and this checkout."""
    return Machine(
        platform=platform.platform(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        cpu=_cpu(),
        cores=os.cpu_count() or 0,
        commit=_commit(),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def machine_lines(m: Machine) -> list[str]:
    return [
        f"platform: {m.platform}",
        f"python:   {m.python}",
        f"cpu:      {m.cpu} ({m.cores} cores)",
        f"commit:   {m.commit}",
        f"date:     {m.date}",
    ]


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with three significant digits or more."""
    value = seconds * 1000.0
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def us(seconds: float) -> str:
    """Seconds as microseconds, with three significant digits or more."""
    return ms(seconds * 1000.0)


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain-text table: columns padded, a rule under the header."""
    lines_in = [list(header), *map(list, rows)]
    widths = [max(len(row[i]) for row in lines_in) for i in range(len(header))]
    lines = []
    for n, row in enumerate(lines_in):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def rst_cell(cell: str) -> str:
    if not cell:
        return ".."  # an empty comment keeps the cell well formed
    for special in ("\\", "*", "|", "@", "`", "_"):  # markup, links and e-mail addresses
        cell = cell.replace(special, "\\" + special)
    return "\\" + cell if cell[0] in "-+#" else cell  # not a bullet or enumerated list


def rst_text(text: str) -> str:
    for special in ("\\", "*", "|", "`", "_"):
        text = text.replace(special, "\\" + special)
    return text


def rst_table(header: Sequence[str], rows: Iterable[Sequence[str]], caption: str) -> str:
    """An rst ``list-table`` with a header row."""
    lines = [f".. list-table:: {caption}", "   :header-rows: 1", ""]
    for row in [list(header), *map(list, rows)]:
        lines.append(f"   * - {rst_cell(row[0])}")
        lines.extend(f"     - {rst_cell(cell)}" for cell in row[1:])
    return "\n".join(lines)
