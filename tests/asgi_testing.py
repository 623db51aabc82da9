"""Shared helpers for the tests that drive ASGI apps (the examples, the Phoenix endpoint).

* :data:`TestClient` and :data:`WebSocketTestSession`: Starlette's, imported once with the one
  warning Starlette 1.10 gives on import when it finds httpx instead of its httpx2 fork.
* :func:`run_bounded`: run a blocking scenario (a TestClient's websocket reads block) in a daemon
  thread and fail, instead of hanging, past a deadline.
* :func:`load_example`: a fresh copy of one module of ``examples/``.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient, WebSocketTestSession

__all__ = ["EXAMPLES", "TestClient", "WebSocketTestSession", "load_example", "run_bounded"]

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """A fresh copy of ``examples/<name>`` (so a test may patch it freely)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name.removesuffix('.py')}", EXAMPLES / name
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bounded(scenario: Callable[[], None], deadline: float) -> None:
    """Run ``scenario`` in a daemon thread; re-raise what it raised, or fail past ``deadline``."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            scenario()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="bounded scenario", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        pytest.fail(f"the scenario did not finish within {deadline} s (a hang in the app?)")
    if errors:
        raise errors[0]
