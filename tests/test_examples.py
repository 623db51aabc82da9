"""The scripts in examples/ run, so the README's first command keeps working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_examples_exist() -> None:
    assert [path.name for path in EXAMPLES if path.name == "two_replicas.py"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_two_replicas_story() -> None:
    path = next(path for path in EXAMPLES if path.name == "two_replicas.py")
    result = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    final_view = result.stdout.rstrip().splitlines()[-1]
    assert "alice" in final_view
    assert "busy" in final_view
    assert "carol" not in final_view
