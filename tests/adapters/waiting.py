"""Waiting in adapter tests (for a condition or an item, always with a deadline), and the
``anyio_backend`` fixture.

No adapter test sleeps for a fixed time and hopes. It waits for a condition, polled every
:data:`POLL_INTERVAL` seconds, and fails with a message naming the condition after
:data:`DEADLINE` seconds (generous: the expected wait is milliseconds, and the deadline only
bounds a broken run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio
import pytest

T = TypeVar("T")

DEADLINE = 5.0
"""Seconds a test waits for something before it fails."""

POLL_INTERVAL = 0.002
"""Seconds between two evaluations of a condition being waited for."""


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(POLL_INTERVAL)
        return
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")


async def next_item(iterator: AsyncIterator[T], what: str, timeout: float = DEADLINE) -> T:
    """The next item of ``iterator``; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        return await iterator.__anext__()
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The loops an ``anyio``-marked test runs on: import this into the test module."""
    backend: str = request.param
    return backend
