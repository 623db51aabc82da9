"""The scripts in examples/ run, so the README's first example and command keep working.

Every script runs as ``python examples/<name>.py`` and must print something and exit 0, except the
web servers listed in :data:`SERVED`: run as scripts they serve forever, so here they are only
imported (which must not block), and tests/test_embedding_examples.py drives their apps.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))

SERVED = frozenset({"phoenix_app.py", "starlette_app.py", "starlette_trio.py"})
"""Scripts that serve a web app when run: imported here, exercised in test_embedding_examples.py
and test_phoenix_example.py."""

SCRIPTS = [path for path in EXAMPLES if path.name not in SERVED]
SERVERS = [path for path in EXAMPLES if path.name in SERVED]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@functools.cache
def _run_script(path: Path) -> subprocess.CompletedProcess[str]:
    """Run one script (once per session: the story tests reuse the run of test_example_runs)."""
    return _run(str(path))


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"two_replicas.py", "embed_asyncio.py"} <= names
    assert names >= SERVED, f"listed in SERVED but missing from examples/: {SERVED - names}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_example_runs(path: Path) -> None:
    result = _run_script(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize("path", SERVERS, ids=[path.name for path in SERVERS])
def test_server_example_imports_without_serving(path: Path) -> None:
    # Imported under another name than __main__, the script must define its app and return.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('example', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(type(module.app).__name__)\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"Starlette", "PhoenixApp"}


def test_two_replicas_story() -> None:
    result = _run_script(EXAMPLES_DIR / "two_replicas.py")
    assert result.returncode == 0, result.stderr
    final_view = result.stdout.rstrip().splitlines()[-1]
    assert "alice" in final_view
    assert "busy" in final_view
    assert "carol" not in final_view


def test_embed_asyncio_story() -> None:
    # The README's first example: c sees alice join, then leave, and knows the two other nodes.
    result = _run_script(EXAMPLES_DIR / "embed_asyncio.py")
    assert result.returncode == 0, result.stderr
    joined, left, knows = result.stdout.splitlines()
    assert joined.startswith("c sees {'joins': {'alice': {'metas': [{")
    assert joined.endswith("'leaves': {}}")
    assert left.startswith("c sees {'joins': {}, 'leaves': {'alice': {'metas': [{")
    assert knows == "c knows ['a', 'b']"
