"""The few async primitives the runtime-free parts of the adapters need, per event loop.

The application API (:mod:`presence_adapters.presence`) and the memory transport work on every
event loop the drivers support, so they never import one directly: they ask a :class:`Runtime`
for an event, a lock, the loop's clock and a bounded wait. :class:`AsyncioRuntime` uses the
standard library only (the asyncio driver must run without anyio installed);
:class:`AnyioRuntime` serves anyio on asyncio and on trio. :func:`current_runtime` picks one from
the loop that is running.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Any, Protocol

__all__ = [
    "AnyioRuntime",
    "AsyncEvent",
    "AsyncLock",
    "AsyncioRuntime",
    "Runtime",
    "current_runtime",
]


class AsyncEvent(Protocol):
    """A one-shot event: ``set()`` from synchronous code, ``await wait()`` from a task."""

    def set(self) -> Any: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


class AsyncLock(Protocol):
    """A mutual-exclusion lock used with ``async with``."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Any: ...


class Runtime(Protocol):
    """The primitives of one event loop."""

    name: str

    def event(self) -> AsyncEvent:
        """A new, unset event (events are never reset: make a new one per wait)."""
        ...

    def lock(self) -> AsyncLock:
        """A new lock."""
        ...

    def clock(self) -> float:
        """The loop's monotonic clock, in seconds."""
        ...

    async def wait(self, event: AsyncEvent, deadline: float | None) -> bool:
        """Wait until ``event`` is set or the clock reaches ``deadline`` (``None``: no deadline).

        Returns:
            True when the event was set.
        """
        ...

    async def checkpoint(self) -> None:
        """Let other tasks run (and deliver a pending cancellation)."""
        ...


class _AsyncioEvent:
    """asyncio.Event's behaviour, plus a wait with a deadline that creates no task."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[bool]] = []

    def set(self) -> None:
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(True)

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> bool:
        return await self.wait_until(None)

    async def wait_until(self, deadline: float | None) -> bool:
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        # The loop's own timer ends the wait at the deadline: cancelling the wait leaves nothing.
        handle = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            self._waiters.remove(waiter)
            if handle is not None:
                handle.cancel()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class AsyncioRuntime:
    """asyncio, standard library only."""

    name = "asyncio"

    def event(self) -> AsyncEvent:
        return _AsyncioEvent()

    def lock(self) -> AsyncLock:
        return asyncio.Lock()

    def clock(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: AsyncEvent, deadline: float | None) -> bool:
        if not isinstance(event, _AsyncioEvent):
            raise TypeError("AsyncioRuntime.wait takes the events it made")
        return await event.wait_until(deadline)

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)


class AnyioRuntime:
    """anyio, on whichever backend (asyncio or trio) is running."""

    name = "anyio"

    def __init__(self) -> None:
        import anyio  # imported here: the asyncio driver must work without anyio installed

        self._anyio = anyio

    def event(self) -> AsyncEvent:
        return self._anyio.Event()

    def lock(self) -> AsyncLock:
        return self._anyio.Lock()

    def clock(self) -> float:
        return self._anyio.current_time()

    async def wait(self, event: AsyncEvent, deadline: float | None) -> bool:
        if event.is_set():
            return True
        with self._anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
            await event.wait()
        return event.is_set()

    async def checkpoint(self) -> None:
        await self._anyio.lowlevel.checkpoint()


def current_runtime() -> Runtime:
    """The runtime of the running loop: asyncio's own primitives under asyncio, anyio's otherwise.

    Raises:
        RuntimeError: no asyncio loop is running and anyio is not installed (trio needs it).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            return AnyioRuntime()
        except ImportError:
            raise RuntimeError(
                "no asyncio event loop is running, and anyio (needed on trio) is not installed: "
                "pip install 'presence-core[trio]'"
            ) from None
    return AsyncioRuntime()
