"""The asyncio driver: a presence node on asyncio, with the standard library only.

.. code-block:: python

    async with open_node() as presence:          # one node, on a private in-memory bus
        presence.track("conn-1", "room:lobby", "alice", {"status": "online"})

The node runs two tasks (see :mod:`presence_adapters.drivers._node`) that live exactly as long as
the ``async with``. Leaving it, by return, exception or cancellation, stops them, announces the
graceful permdown (peers drop our presences at once; shielded from cancellation and bounded by
``shutdown_timeout``) and closes the transport. If the transport fails, the body is cancelled and
the failure is raised out of the ``async with``, as an :class:`asyncio.TaskGroup` would, on every
Python the project supports (3.10 has no TaskGroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import Collection, Coroutine
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from presence_adapters._runtime import AsyncioRuntime
from presence_adapters.presence import FetchHook, Presence
from presence_adapters.transports._base import Transport
from presence_core import Keyring, Tracker, TrackerConfig

from ._node import DEFAULT_SHUTDOWN_TIMEOUT, NodeLoops, node_parts

__all__ = ["open_node"]


def open_node(
    transport: Transport | None = None,
    *,
    name: str | None = None,
    vsn: int | None = None,
    config: TrackerConfig | None = None,
    fetch: FetchHook | None = None,
    rng: random.Random | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    keyring: Keyring | None = None,
) -> AbstractAsyncContextManager[Presence]:
    """Run a presence node on asyncio: ``async with open_node(...) as presence: ...``.

    Args:
        transport: how the node reaches its cluster; it becomes the node's (closed on exit).
            Default: a private :class:`~presence_adapters.MemoryHub`, i.e. a single node.
        name: the node's name; default: the transport's name (or a unique one for the default
            transport). Must equal the transport's name when both are given.
        vsn: the incarnation; default: the wall clock in microseconds, so that it grows across
            restarts (see :func:`~presence_adapters.drivers.default_vsn`).
        config: the tracker's options (Phoenix's defaults).
        fetch: the fetch hook (see :data:`~presence_adapters.FetchHook`).
        rng: the tracker's randomness (default: seeded by the OS).
        shutdown_timeout: the most seconds spent announcing the departure and closing.
        keyring: authenticate replication (``docs/security.rst``): every message the node sends
            is sealed with ``keyring.current``, and a message not sealed by one of its keys
            (from a node with another key or none, or forged, or replayed) is refused, counted
            in :attr:`Presence.stats <presence_adapters.Presence.stats>` and logged. Give every
            node of the cluster the same keyring; rotate keys in two rolls (see
            :class:`~presence_core.Keyring`, and :meth:`Presence.set_keyring
            <presence_adapters.Presence.set_keyring>` to do it without a restart). Default:
            ``None``, messages travel unsealed and anything that can publish on the transport
            is a member.

    Raises:
        LocalProtocolError: an option is invalid (raised here, before anything starts).
        ConfigurationError: one presence at the config's limits would not fit the transport's
            ``max_payload``.
    """
    transport, tracker = node_parts(
        transport,
        name=name,
        vsn=vsn,
        config=config,
        rng=rng,
        shutdown_timeout=shutdown_timeout,
        keyring=keyring,
    )
    return _AsyncioNode(transport, tracker, fetch=fetch, shutdown_timeout=shutdown_timeout)


class _AsyncioNode(NodeLoops):
    """The async context manager :func:`open_node` returns."""

    def __init__(
        self,
        transport: Transport,
        tracker: Tracker,
        *,
        fetch: FetchHook | None,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(
            transport, tracker, AsyncioRuntime(), fetch=fetch, shutdown_timeout=shutdown_timeout
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._host: asyncio.Task[object] | None = None
        self._in_body = False
        self._cancelled_host = False
        self._entered = False
        self._stopped = False

    async def __aenter__(self) -> Presence:
        if self._entered:
            raise RuntimeError("a node can be entered only once")
        self._entered = True
        loop = asyncio.get_running_loop()
        self._host = asyncio.current_task()
        self.start()
        name = self.presence.name
        self._tasks = [
            loop.create_task(self.receive_loop(), name=f"presence {name} receive"),
            loop.create_task(self.send_loop(), name=f"presence {name} send"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._loop_ended)
        self._in_body = True
        return self.presence

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        failure = task.exception() or RuntimeError(f"{task.get_name()} returned")
        if self._stopped:
            self.failed_while_stopping(failure)
            return
        if self.failure is None:
            self.failure = failure
            if self._in_body and self._host is not None:
                # Interrupt the body, as a task group does when a child fails.
                self._cancelled_host = self._host.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_body = False
        if self._cancelled_host and sys.version_info >= (3, 11):
            assert self._host is not None
            self._host.uncancel()  # that cancellation was ours, not the caller's
        await _to_completion(self._stop(goodbye=self.failure is None))
        failure = self.failure
        if failure is not None:
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                failure.__context__ = exc
            raise failure

    async def abandon(self) -> None:
        await _to_completion(self._stop(goodbye=False))

    async def _stop(self, *, goodbye: bool) -> None:
        if self._stopped:
            return
        self._stopped = True
        await _cancel_all(self._tasks)
        if goodbye:
            # Past the timeout the peers notice our silence instead.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.goodbye(), self.shutdown_timeout)
        try:
            await asyncio.wait_for(self.close(), self.shutdown_timeout)
        except asyncio.TimeoutError:
            self.presence._close()


CANCEL_REPEAT = 0.05
"""Seconds between two cancellations of a loop that has not ended (see :func:`_cancel_all`)."""


async def _cancel_all(tasks: Collection[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they have all ended.

    A cancellation of an asyncio task is delivered once, and a library may swallow it (nats-py's
    publish does, while it waits for its buffer to flush: the send loop then carried on, and the
    node never stopped). So a task still running is cancelled again, every
    :data:`CANCEL_REPEAT` seconds, as anyio's cancel scopes do at every await.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_REPEAT)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a failure was recorded by the task's done callback


async def _to_completion(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to its end even if we are cancelled meanwhile; then re-raise the cancel.

    Shielding alone would let the caller go on while the shielded work still runs; this waits
    for it, so nothing is left running when the ``async with`` is over.
    """
    task = asyncio.get_running_loop().create_task(coro)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
        else:
            break
    if cancelled:
        raise asyncio.CancelledError
