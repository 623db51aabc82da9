"""Documented == public: docs/api.rst documents exactly ``presence_core.__all__``.

Sphinx's ``-W`` build catches broken references but not a forgotten export, so this test compares
the names. It also checks that docs/architecture.rst places every module of the core.
"""

from __future__ import annotations

import re
from pathlib import Path

import presence_core

DOCS = Path(__file__).resolve().parents[1] / "docs"
SRC = Path(__file__).resolve().parents[1] / "src" / "presence_core"

_DIRECTIVE = re.compile(
    r"^\.\. (?:auto(?:class|function|exception|data)|py:(?:class|function|exception|data))::"
    r"\s+(?:presence_core\.)?(\w+)\s*$",
    re.MULTILINE,
)


def _documented_names() -> set[str]:
    return set(_DIRECTIVE.findall((DOCS / "api.rst").read_text(encoding="utf-8")))


def test_every_export_is_documented() -> None:
    missing = sorted(set(presence_core.__all__) - _documented_names())
    assert not missing, f"exported from presence_core but not documented in docs/api.rst: {missing}"


def test_everything_documented_is_exported() -> None:
    extra = sorted(_documented_names() - set(presence_core.__all__))
    assert not extra, f"documented in docs/api.rst but not in presence_core.__all__: {extra}"


def test_architecture_places_every_core_module() -> None:
    text = (DOCS / "architecture.rst").read_text(encoding="utf-8")
    modules = sorted(path.name for path in SRC.glob("_*.py"))
    assert "_state.py" in modules
    missing = [name for name in modules if f"``{name}``" not in text]
    assert not missing, f"modules missing from docs/architecture.rst's layer table: {missing}"


def _liveness_table() -> dict[tuple[str, str], tuple[str, tuple[str, ...]]]:
    text = (DOCS / "tracker.rst").read_text(encoding="utf-8")
    section = text[text.index("Liveness\n--------") :]
    lines = section.splitlines()
    borders = [i for i, line in enumerate(lines) if line.startswith("=====")]
    table: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
    for line in lines[borders[1] + 1 : borders[2]]:
        status, event, new_status, actions = line.split(None, 3)
        words = actions.split("(")[0].replace(",", " ").split()
        table[(status, event)] = (new_status, tuple(words))
    return table


def test_the_liveness_table_in_the_docs_is_the_one_in_the_code() -> None:
    documented = _liveness_table()
    actual = {
        (status.name, event.name): (new.name, tuple(action.value for action in actions))
        for (status, event), (new, actions) in presence_core.TRANSITIONS.items()
    }
    assert documented == actual
