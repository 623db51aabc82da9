"""The anyio driver: a presence node on anyio, on the asyncio or the trio backend.

.. code-block:: python

    async with open_node() as presence:          # one node, on a private in-memory bus
        presence.track("conn-1", "room:lobby", "alice", {"status": "online"})

The node's two loops run in a task group that lives exactly as long as the ``async with``.
Leaving it, by return, exception or cancellation, stops them, announces the graceful permdown
(shielded from cancellation and bounded by ``shutdown_timeout``) and only then closes the
transport. If the transport fails, the task group cancels the body and the failure is raised out
of the ``async with`` as itself, not wrapped in an exception group (a group comes out only when
several unrelated errors happened at once).
"""

from __future__ import annotations

import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType

import anyio
import sniffio

from presence_adapters._runtime import AnyioRuntime
from presence_adapters.presence import FetchHook, Presence
from presence_adapters.transports._base import Transport
from presence_core import Keyring, LocalProtocolError, Tracker, TrackerConfig

from ._node import DEFAULT_SHUTDOWN_TIMEOUT, NodeLoops, node_parts

if sys.version_info < (3, 11):  # pragma: no cover - depends on the interpreter
    from exceptiongroup import BaseExceptionGroup

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
    """Run a presence node on anyio: ``async with open_node(...) as presence: ...``.

    The arguments are those of :func:`presence_adapters.drivers.asyncio.open_node`.

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
    return _Once(_AnyioNode(transport, tracker, fetch=fetch, shutdown_timeout=shutdown_timeout))


class _Once(AbstractAsyncContextManager[Presence]):
    """What :func:`open_node` returns: :func:`_run` on the first entry, an error on the next."""

    def __init__(self, node: _AnyioNode) -> None:
        self._node = node
        self._running: AbstractAsyncContextManager[Presence] | None = None

    async def __aenter__(self) -> Presence:
        if self._running is not None:
            raise RuntimeError("a node can be entered only once")
        self._running = _run(self._node)
        return await self._running.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._running is not None
        return await self._running.__aexit__(exc_type, exc, tb)


class _AnyioNode(NodeLoops):
    def __init__(
        self,
        transport: Transport,
        tracker: Tracker,
        *,
        fetch: FetchHook | None,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(
            transport, tracker, AnyioRuntime(), fetch=fetch, shutdown_timeout=shutdown_timeout
        )
        self._loops_scope = anyio.CancelScope()
        self._loops_done = anyio.Event()
        self._stopped = False

    async def run_loops(self) -> None:
        try:
            with self._loops_scope:
                async with anyio.create_task_group() as loops:
                    loops.start_soon(self._guard, self.receive_loop)
                    loops.start_soon(self._guard, self.send_loop)
        finally:
            self._loops_done.set()

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            if self._stopped:
                # Cancelled before its first await, the loop may still run one tick and fail on
                # a transport that is going away: the node is stopping anyway, so say it and end.
                self.failed_while_stopping(exc)
                return
            if self.failure is None:
                self.failure = exc
            raise

    async def abandon(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stop(goodbye=False)

    async def stop(self, *, goodbye: bool) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._loops_scope.cancel()
        await self._loops_done.wait()
        if goodbye and self.failure is None:
            with anyio.move_on_after(self.shutdown_timeout):
                await self.goodbye()
        with anyio.move_on_after(self.shutdown_timeout) as scope:
            await self.close()
        if scope.cancelled_caught:
            self.presence._close()


@asynccontextmanager
async def _run(node: _AnyioNode) -> AsyncIterator[Presence]:
    _check_backend(node.transport)
    try:
        async with anyio.create_task_group() as group:
            node.start()
            group.start_soon(node.run_loops)
            try:
                yield node.presence
            finally:
                with anyio.CancelScope(shield=True):
                    await node.stop(goodbye=True)
    except BaseExceptionGroup as exc_group:
        error = _unwrap(exc_group, node.failure)
        if error is exc_group:
            raise
        # Raising in this handler would make the group the error's context (and `from None`
        # would hide the error's own context): keep the context the error came with.
        context, suppressed = error.__context__, error.__suppress_context__
        try:
            raise error
        finally:
            error.__context__, error.__suppress_context__ = context, suppressed
            del error, exc_group


def _check_backend(transport: Transport) -> None:
    """Refuse a transport built on an asyncio-only client when anyio runs on another backend."""
    if getattr(transport, "requires_asyncio", False):
        backend = sniffio.current_async_library()
        if backend != "asyncio":
            raise LocalProtocolError(
                f"the {type(transport).__name__} transport needs asyncio (its client library is "
                f"asyncio-only); anyio is running on {backend}"
            )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(_leaves(exc))
        else:
            leaves.append(exc)
    return leaves


def _unwrap(
    group: BaseExceptionGroup[BaseException], failure: BaseException | None
) -> BaseException:
    """The one exception to raise for a task group's exception group.

    The transport's failure if there is one (with another error, if any, as its context); else
    the only error; else the group itself.
    """
    cancelled = anyio.get_cancelled_exc_class()
    errors = [exc for exc in _leaves(group) if not isinstance(exc, cancelled)]
    if failure is not None and failure in errors:
        others = [exc for exc in errors if exc is not failure]
        if others:
            failure.__context__ = others[0]
        return failure
    if len(errors) == 1:
        return errors[0]
    return group
