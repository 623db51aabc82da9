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
