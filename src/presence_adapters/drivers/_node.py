"""What every driver does, written once over a :class:`~presence_adapters._runtime.Runtime`.

A driver is two loops around the :class:`~presence_adapters.drivers.Pump`, plus the structure
that runs them (a task group, cancellation, shielding), which is the only part that differs
between asyncio and anyio:

* the **receive loop** waits for the transport, feeds each message to the pump (which ticks and
  drains), pokes the send loop and yields to the other tasks (so that a transport which always
  has a message at hand cannot starve them); when more than :data:`MAX_PENDING` transmissions
  wait, it stops reading until the send loop has caught up (back-pressure onto the transport,
  never an unbounded queue);
* the **send loop** ticks, puts every transmission on the transport, then sleeps until the
  tracker's deadline or a poke, whichever comes first.

:func:`node_parts` turns the user's options into a tracker and a transport (a private memory hub
when none is given), choosing the name and the incarnation the user left out. With a
:class:`~presence_core.Keyring`, the tracker seals what it sends and refuses what was not sealed
by a key of the keyring (``docs/security.rst``): the drivers only pass it through.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import socket
import time

import attrs

from presence_adapters._errors import TransportError
from presence_adapters._runtime import AsyncEvent, Runtime
from presence_adapters.presence import FetchHook, Presence
from presence_adapters.transports._base import Transport
from presence_adapters.transports.memory import MemoryHub
from presence_core import Keyring, LocalProtocolError, ReplicaRef, Tracker, TrackerConfig

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT", "MAX_PENDING", "NodeLoops", "default_name", "default_vsn"]

logger = logging.getLogger("presence_adapters")

MAX_PENDING = 64
"""Transmissions waiting for the transport before the receive loop stops reading."""

DEFAULT_SHUTDOWN_TIMEOUT = 2.0
"""Seconds a stopping node spends announcing its departure and closing its transport."""


def default_name() -> str:
    """A node name unique in practice: the host name and 6 random hex digits."""
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


def default_vsn() -> int:
    """The incarnation: microseconds of wall-clock time, so a restarted node gets a larger one.

    If the wall clock was stepped back across a restart, the new incarnation is *smaller* than
    the old one and peers that still remember the old one ignore the new one until the old one is
    permanently down; pass ``vsn`` yourself when the clock cannot be trusted.
    """
    return time.time_ns() // 1000


def node_parts(
    transport: Transport | None,
    *,
    name: str | None,
    vsn: int | None,
    config: TrackerConfig | None,
    rng: random.Random | None,
    shutdown_timeout: object,
    keyring: Keyring | None = None,
) -> tuple[Transport, Tracker]:
    """Validate a driver's options and build its tracker (and transport, when none is given).

    The tracker's ``max_message_bytes`` is lowered to the transport's ``max_payload`` when that
    is smaller, so that every message it sends fits (larger ones go in parts; with a keyring the
    seal is counted in, so a sealed message fits too).

    Raises:
        LocalProtocolError: an option has the wrong type or value (``keyring`` included: a
            :class:`~presence_core.Keyring` or ``None``), or ``name`` differs from the
            transport's name.
        ConfigurationError: one presence at the config's limits would not fit the transport's
            ``max_payload`` (see :attr:`TrackerConfig.max_presence_bytes`).
    """
    if not (
        isinstance(shutdown_timeout, (int, float))
        and not isinstance(shutdown_timeout, bool)
        and math.isfinite(shutdown_timeout)
        and shutdown_timeout > 0
    ):
        raise LocalProtocolError(
            f"shutdown_timeout must be a positive number of seconds, not {shutdown_timeout!r}"
        )
    if name is not None and (type(name) is not str or not name):
        raise LocalProtocolError(f"name must be a non-empty str, not {name!r}")
    if keyring is not None and not isinstance(keyring, Keyring):
        # A Key or a secret's bytes given instead is a mistake to refuse, never a reason to run
        # unsealed.
        raise LocalProtocolError(
            f"keyring must be a Keyring (for example Keyring(Key(id, secret))), "
            f"not {type(keyring).__name__}"
        )
    if transport is None:
        transport = MemoryHub().connect(name if name is not None else default_name())
    elif not isinstance(transport, Transport):
        raise LocalProtocolError(
            f"transport must implement the Transport protocol, not {type(transport).__name__}"
        )
    elif name is not None and name != transport.name:
        raise LocalProtocolError(
            f"name {name!r} differs from the transport's name {transport.name!r}"
        )
    if vsn is None:
        vsn = default_vsn()
    if type(vsn) is not int or vsn < 0:
        raise LocalProtocolError(f"vsn must be an int >= 0, not {vsn!r}")
    if config is None:
        config = TrackerConfig()
    elif not isinstance(config, TrackerConfig):
        raise LocalProtocolError(f"config must be a TrackerConfig, not {type(config).__name__}")
    if transport.max_payload < config.max_message_bytes:
        # Every message must fit the transport: the tracker splits what is larger into parts.
        config = attrs.evolve(config, max_message_bytes=transport.max_payload)
    tracker = Tracker(
        config=config,
        replica=ReplicaRef(transport.name, vsn),
        rng=rng if rng is not None else random.Random(),
        keyring=keyring,
    )
    return transport, tracker


class NodeLoops:
    """The two loops of a running node and its goodbye, on any runtime.

    The driver runs :meth:`receive_loop` and :meth:`send_loop` as two tasks, cancels both to stop,
    then calls :meth:`goodbye` (unless the node is abandoned) and :meth:`close`.
    """

    def __init__(
        self,
        transport: Transport,
        tracker: Tracker,
        runtime: Runtime,
        *,
        fetch: FetchHook | None,
        shutdown_timeout: float,
    ) -> None:
        self.transport = transport
        self.runtime = runtime
        self.shutdown_timeout = shutdown_timeout
        self.presence = Presence(tracker, runtime, self, fetch=fetch)
        self.pump = self.presence.pump
        self.failure: BaseException | None = None
        self._wakeup: AsyncEvent = runtime.event()
        self._room: AsyncEvent | None = None
        self._armed: float | None = None

    # ------------------------------------------------------------------ _NodeControl

    def poke(self) -> None:
        """Wake the send loop if the pump has something to send or a new deadline."""
        if self.pump.should_wake(self._armed):
            self._wakeup.set()

    async def abandon(self) -> None:  # pragma: no cover - every driver overrides it
        raise NotImplementedError

    # ------------------------------------------------------------------ loops

    def start(self) -> None:
        """Start the tracker's clock (its first tick comes within a quarter period)."""
        pump = self.pump
        pump.wake(now=pump.now(self.runtime.clock()))

    async def receive_loop(self) -> None:
        """Feed every message from the transport to the pump, until cancelled or it fails."""
        transport, pump, runtime = self.transport, self.pump, self.runtime
        while True:
            data = await transport.receive()
            pump.receive(data, now=pump.now(runtime.clock()))
            self.poke()
            # A transport with messages at hand returns them without waiting (a full socket
            # buffer, a backlog in the memory hub). Yield anyway: a flood, of junk even, must
            # not starve the send loop, whose heartbeats tell the peers we are alive.
            await runtime.checkpoint()
            while pump.pending >= MAX_PENDING:
                room = self._room = runtime.event()
                await room.wait()

    async def send_loop(self) -> None:
        """Tick, send, then sleep until the deadline or a poke, until cancelled or failed."""
        pump, runtime = self.pump, self.runtime
        while True:
            pump.wake(now=pump.now(runtime.clock()))
            await self.flush()
            self._armed = pump.deadline
            # Checked after the awaits above, and with the new event made in the same step, so a
            # poke that came while we were sending is not lost.
            if not pump.should_wake(self._armed):
                wakeup = self._wakeup = runtime.event()
                await runtime.wait(wakeup, self._armed)

    async def flush(self) -> None:
        """Put every pending transmission on the transport."""
        transport = self.transport
        while transmissions := self.pump.take_transmissions():
            for transmission in transmissions:
                if transmission.to is None:
                    await transport.broadcast(transmission.data)
                else:
                    await transport.send(transmission.to, transmission.data)
            if self._room is not None:
                self._room.set()
                self._room = None

    # ------------------------------------------------------------------ stopping

    async def goodbye(self) -> None:
        """Announce the graceful permdown and send it (the caller bounds the time)."""
        pump = self.pump
        tracker = pump.tracker
        if tracker.stopped:
            return
        # Closed first: from here on the tracker refuses commands, so the application must get
        # NodeClosed (and a connection scope exiting now must be a no-op), not the tracker's
        # error, while the goodbye is on its way.
        self.presence._close()
        pump.command(
            lambda now: tracker.graceful_permdown(now=now), now=pump.now(self.runtime.clock())
        )
        try:
            await self.flush()
        except TransportError as exc:
            logger.warning("%s could not announce its departure: %s", self.presence.name, exc)

    def failed_while_stopping(self, exc: BaseException) -> None:
        """A loop failed after the node began to stop: log it; the node stops all the same."""
        logger.warning("%s: a loop failed while the node was stopping: %r", self.presence.name, exc)

    async def close(self) -> None:
        """Close the presence (commands refused, subscriptions end) and the transport."""
        self.presence._close()
        try:
            await self.transport.aclose()
        except TransportError as exc:
            logger.warning("%s could not close its transport cleanly: %s", self.presence.name, exc)
