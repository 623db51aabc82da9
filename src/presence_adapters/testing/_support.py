"""What both conformance suites share: bounded waits and the leak watch.

No check sleeps for a fixed time and hopes: it waits for a condition, polling every
:data:`POLL_INTERVAL`, and fails with a message naming the condition once :data:`DEADLINE` has
passed. The only timed waits are those that prove an *absence* (nothing arrives during
:data:`QUIET_PERIOD`), and those say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import anyio

from presence_adapters.transports._base import Transport

T = TypeVar("T")

__all__ = [
    "DEADLINE",
    "POLL_INTERVAL",
    "QUIET_PERIOD",
    "LeakWatch",
    "current_backend",
    "failing_after",
    "running_tasks",
    "wait_until",
]

DEADLINE = 10.0
"""Seconds any single wait of a check may take before the check fails (expected: milliseconds)."""

POLL_INTERVAL = 0.005
"""Seconds between two evaluations of a condition being waited for."""

QUIET_PERIOD = 0.1
"""Seconds during which nothing may arrive, where a check proves that something is *not*
delivered and no later message from the same sender can serve as a marker."""


async def wait_until(
    condition: Callable[[], bool], what: str, *, timeout: float | None = None
) -> None:
    """Wait until ``condition()`` is true, polling every :data:`POLL_INTERVAL`.

    Args:
        condition: the condition, evaluated at once and then after each poll.
        what: the condition in words, for the failure message.
        timeout: the most seconds to wait (default: :data:`DEADLINE`).

    Raises:
        AssertionError: the condition was still false after ``timeout`` seconds.
    """
    if timeout is None:
        timeout = DEADLINE
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(POLL_INTERVAL)
        return
    raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")


def current_backend() -> str:
    """``"asyncio"``, ``"trio"`` or ``"unknown"``: the event loop this task runs on."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio: Any = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    return "unknown"


def running_tasks() -> set[object] | None:
    """Every task alive on this loop, or ``None`` when the loop cannot list them."""
    backend = current_backend()
    if backend == "asyncio":
        return set(asyncio.all_tasks())
    if backend == "trio":
        trio: Any = sys.modules["trio"]
        tasks: set[object] = set()
        pending = [trio.lowlevel.current_root_task()]
        while pending:
            task = pending.pop()
            tasks.add(task)
            for nursery in task.child_nurseries:
                pending.extend(nursery.child_tasks)
        return tasks
    return None


class LeakWatch:
    """Records what a block leaves behind: tasks, warnings and unraisable exceptions.

    Use it as ``with LeakWatch() as watch: ...`` around async code, then call
    :meth:`check` (after the ``with``) to raise if anything leaked. Warnings (among them the
    :class:`ResourceWarning` of an unclosed stream) and unraisable exceptions (an exception in a
    ``__del__`` or in a task nobody awaited) are collected after a garbage collection, so what
    the block dropped is seen before the watch ends.
    """

    def __init__(self) -> None:
        self._tasks_before: set[object] | None = None
        self.leaked_tasks: list[object] = []
        self.warnings: list[warnings.WarningMessage] = []
        self.unraisable: list[str] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> LeakWatch:
        self._tasks_before = running_tasks()
        recorded = self._stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        self.warnings = recorded
        previous_hook = sys.unraisablehook

        def record(unraisable: Any) -> None:
            self.unraisable.append(
                f"{unraisable.exc_type.__name__}: {unraisable.exc_value!r} "
                f"({unraisable.err_msg or 'unraisable'}: {unraisable.object!r})"
            )

        sys.unraisablehook = record
        self._stack.callback(setattr, sys, "unraisablehook", previous_hook)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            after = running_tasks()
            if self._tasks_before is not None and after is not None:
                self.leaked_tasks = sorted(
                    (task for task in after if task not in self._tasks_before), key=repr
                )
            gc.collect()
        finally:
            self._stack.close()

    def check(self, what: str) -> None:
        """Raise if the watched block left a task, a warning or an unraisable exception.

        Raises:
            AssertionError: naming everything that leaked.
        """
        problems = [f"a task still running: {task!r}" for task in self.leaked_tasks]
        problems += [
            f"a warning: {warning.category.__name__}: {warning.message}"
            for warning in self.warnings
        ]
        problems += [f"an unraisable exception: {text}" for text in self.unraisable]
        if problems:
            raise AssertionError(f"{what} left behind " + "; ".join(problems))


@contextlib.contextmanager
def failing_after(seconds: float, what: str) -> Iterator[None]:
    """Like :func:`anyio.fail_after`, but fail with an :class:`AssertionError` naming ``what``."""
    with anyio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise AssertionError(f"timed out after {seconds:g} s: {what}")


class DelegatingTransport:
    """A transport that passes every call to ``inner``: subclass it and override the one method
    a fault or a broken rule is about (the checks' hanging and flooding transports do)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def max_payload(self) -> int:
        return self.inner.max_payload

    async def broadcast(self, data: bytes) -> None:
        await self.inner.broadcast(data)

    async def send(self, to: str, data: bytes) -> None:
        await self.inner.send(to, data)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_checks(checks: Sequence[Callable[[T], Awaitable[None]]], subject: T) -> None:
    """Run ``check(subject)`` for each check in turn; the first failure is raised, prefixed with
    the check's name."""
    for check in checks:
        try:
            await check(subject)
        except AssertionError as exc:
            raise AssertionError(f"{check.__name__}: {exc}") from exc
