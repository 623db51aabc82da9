"""Draw the core's state machines from their tables, as h11 draws its own.

The tracker's lifecycle (:data:`presence_core.LIFECYCLE`) and the liveness of remote replicas
(:data:`presence_core.TRANSITIONS`) are tables in the code; the docs show them as a Graphviz
diagram and an rst table each, written from those tables every time the docs are built
(``conf.py`` calls :func:`write_all` into ``docs/_generated/``), so the pictures cannot drift
from the code. Run ``python docs/state_machines.py OUT_DIR`` to write them by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from presence_core import LIFECYCLE, TRANSITIONS, Lifecycle, ReplicaStatus

__all__ = ["lifecycle_dot", "lifecycle_table", "liveness_dot", "liveness_table", "write_all"]


def _words(name: str) -> str:
    return name.lower().replace("_", " ")


def _dot(title: str, states: Iterable[str], edges: Iterable[tuple[str, str, str]]) -> str:
    lines = [
        f"digraph {title} {{",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    lines.extend(f"  {state};" for state in states)
    lines.extend(f'  {source} -> {target} [label="{label}"];' for source, target, label in edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in (header, *rows):
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines) + "\n"


def liveness_dot() -> str:
    """:data:`~presence_core.TRANSITIONS` as a Graphviz digraph: one edge per transition."""
    edges = []
    for (status, trigger), (after, actions) in TRANSITIONS.items():
        done = ", ".join(action.name.lower() for action in actions)
        label = _words(trigger.name) + (f"\\n/ {done}" if done else "")
        edges.append((status.name, after.name, label))
    return _dot("liveness", (status.name for status in ReplicaStatus), edges)


def liveness_table() -> str:
    """:data:`~presence_core.TRANSITIONS` as an rst list-table."""
    rows = [
        (
            f"``{status.name}``",
            f"``{trigger.name}``",
            f"``{after.name}``",
            ", ".join(action.name.lower() for action in actions) or "(nothing)",
        )
        for (status, trigger), (after, actions) in TRANSITIONS.items()
    ]
    return _table(("status", "input", "new status", "actions, in order"), rows)


def lifecycle_dot() -> str:
    """:data:`~presence_core.LIFECYCLE` as a Graphviz digraph."""
    edges = [
        (status.name, after.name, _words(trigger.name))
        for (status, trigger), after in LIFECYCLE.items()
    ]
    return _dot("lifecycle", (status.name for status in Lifecycle), edges)


def lifecycle_table() -> str:
    """:data:`~presence_core.LIFECYCLE` as an rst list-table."""
    rows = [
        (f"``{status.name}``", f"``{trigger.name}``", f"``{after.name}``")
        for (status, trigger), after in LIFECYCLE.items()
    ]
    return _table(("status", "input", "new status"), rows)


def write_all(out: Path) -> list[Path]:
    """Write every diagram (``.dot``) and table (``.rst``) into ``out``; return the paths.

    A file whose text is unchanged is left alone, so Sphinx does not rebuild for nothing.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("liveness.dot", liveness_dot()),
        ("liveness.rst", liveness_table()),
        ("lifecycle.dot", lifecycle_dot()),
        ("lifecycle.rst", lifecycle_table()),
    ):
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_generated")):
        print(path)
