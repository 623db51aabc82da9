"""The pump: every decision a driver makes, written once, with no event loop in it.

A driver (asyncio, anyio, the simulator) only waits and moves bytes. On each wake-up it reads its
clock and hands the reading to :meth:`Pump.now`, then feeds the pump what woke it: a message from
the transport (:meth:`Pump.receive`), the timer (:meth:`Pump.wake`) or a local command
(:meth:`Pump.command`). After each of those calls the pump has

* ticked the tracker (``handle_timer`` on *every* wake-up: it is harmless early, and a node that
  only ticks on timeouts never ticks under a steady stream of messages, so its peers would think
  it dead);
* handed every event the tracker queued to ``on_event``, in order;
* turned every outbound message (the tracker encodes them, in parts when one is too large for
  the transport) into :class:`Transmission` records that :meth:`Pump.take_transmissions` gives
  the driver to put on the transport.

and :attr:`Pump.deadline` says when to wake next. Time never goes backwards: :meth:`Pump.now`
returns ``max(reading, previous now)``. It is never clamped *up* to the deadline (a later call
with the real clock would then go backwards).

A message that is not valid is dropped, counted in :attr:`Pump.stats` and logged (at most one
warning per :data:`LOG_INTERVAL` seconds, so a flood of junk cannot flood the log); the node
carries on. A message the tracker could not send even in parts (its
:class:`~presence_core.Unsendable` event) is counted and logged the same way, and the event goes
on to ``on_event`` like any other.

A message the tracker refused (its :class:`~presence_core.MessageRejected` event: not sealed by
a key of its keyring, replayed, from a retired incarnation, over a limit... see
:class:`~presence_core.RejectReason`) is counted in :attr:`PumpStats.rejected` and, per reason,
in :attr:`PumpStats.rejected_by_reason`, and logged with the same throttle, one per reason: at
WARNING for the reasons that mean a broken or hostile peer, or a misconfiguration (a node with
another key, say), and at DEBUG for those an honest cluster also produces now and then (their
:attr:`~presence_core.RejectReason.normal` is true: a late message of a restarted incarnation,
say). The event then goes on to ``on_event`` like any other. Bytes that do not decode at all
are not events: the tracker raises, and they count as ``malformed`` (above), not as rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import attrs

from presence_core import (
    Event,
    Message,
    MessageRejected,
    RejectReason,
    RemoteProtocolError,
    Tracker,
    Unsendable,
)

__all__ = ["LOG_INTERVAL", "Pump", "PumpStats", "Transmission"]

T = TypeVar("T")

LOG_INTERVAL = 10.0
"""Seconds (on the pump's clock) between two warnings about the same kind of trouble."""

logger = logging.getLogger("presence_adapters")


@attrs.frozen(kw_only=True)
class Transmission:
    """One encoded message for the transport.

    Attributes:
        to: the replica name to send it to, or ``None`` to broadcast it.
        data: the encoded message.
        message: the message itself (for traces and metrics; the bytes are what travel).
    """

    to: str | None
    data: bytes
    message: Message


@attrs.define(kw_only=True)
class PumpStats:
    """Counters of one node's traffic (they only grow).

    Attributes:
        received: messages fed to the node, valid or not.
        received_bytes: their total size.
        malformed: received messages dropped because they were not valid.
        sent: messages encoded for the transport.
        sent_bytes: their total size (a broadcast counts once).
        unsendable: outbound messages the tracker dropped because even their parts would not
            fit the transport's ``max_payload`` (each one is also an
            :class:`~presence_core.Unsendable` event).
        rejected: received messages the tracker refused and did not apply (each one is also a
            :class:`~presence_core.MessageRejected` event); ``malformed`` ones are not among
            them.
        rejected_by_reason: ``rejected``, by :class:`~presence_core.RejectReason` (reasons
            never seen are absent).
    """

    received: int = 0
    received_bytes: int = 0
    malformed: int = 0
    sent: int = 0
    sent_bytes: int = 0
    unsendable: int = 0
    rejected: int = 0
    rejected_by_reason: dict[RejectReason, int] = attrs.field(factory=dict)


class _Throttle:
    """Says whether to log now: the first time, then at most once per interval."""

    __slots__ = ("_next", "suppressed")

    def __init__(self) -> None:
        self._next: float | None = None
        self.suppressed = 0

    def ready(self, now: float) -> bool:
        if self._next is not None and now < self._next:
            self.suppressed += 1
            return False
        self._next = now + LOG_INTERVAL
        return True


class Pump:
    """Runs one tracker for a driver.

    The tracker encodes within its ``config.max_message_bytes``: build it with a limit the
    transport carries (the drivers lower it to the transport's ``max_payload``).

    Args:
        tracker: the node's tracker; the pump is the only thing that should call it.
        on_event: receives every event the tracker emits, in order, synchronously.
        log: where warnings go (default: the ``presence_adapters`` logger).
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        on_event: Callable[[Event], object],
        log: logging.Logger | None = None,
    ) -> None:
        self.tracker = tracker
        self.stats = PumpStats()
        self._on_event = on_event
        self._log = log if log is not None else logger
        self._last_now: float | None = None
        self._outgoing: list[Transmission] = []
        self._malformed_log = _Throttle()
        self._unsendable_log = _Throttle()
        self._rejected_logs: dict[RejectReason, _Throttle] = {}

    def __repr__(self) -> str:
        return f"<Pump {self.tracker!r} pending={len(self._outgoing)}>"

    # ------------------------------------------------------------------ time

    def now(self, reading: float) -> float:
        """The time to pass to this wake-up's calls: ``max(reading, the previous now)``.

        Read the clock once per wake-up and use the result for every call of that wake-up.
        """
        if self._last_now is not None and reading < self._last_now:
            return self._last_now
        self._last_now = reading
        return reading

    @property
    def deadline(self) -> float | None:
        """When to call :meth:`wake` next, on the same clock (``None``: no timer is armed)."""
        return self.tracker.next_deadline()

    # ------------------------------------------------------------------ inputs

    def receive(self, data: bytes, *, now: float) -> None:
        """Feed one message from the transport, then tick and drain.

        A message that is not valid is dropped, counted and logged; it never raises.
        """
        self.stats.received += 1
        self.stats.received_bytes += len(data)
        try:
            self.tracker.receive(data, now=now)
        except RemoteProtocolError as exc:
            self.stats.malformed += 1
            if self._malformed_log.ready(now):
                self._log.warning(
                    "%s dropped a malformed message (%d bytes, %d dropped so far, %d warnings "
                    "suppressed): %s",
                    self.tracker.replica.name,
                    len(data),
                    self.stats.malformed,
                    self._malformed_log.suppressed,
                    exc,
                )
        self.wake(now=now)

    def wake(self, *, now: float) -> None:
        """Tick the tracker (harmless when nothing is due) and drain."""
        try:
            self.tracker.handle_timer(now=now)
        finally:
            self._drain(now)

    def command(self, call: Callable[[float], T], *, now: float) -> T:
        """Run one local command as ``call(now)`` (for example a ``track``), then drain.

        What the command raises is raised to the caller; the core's errors are atomic, so the
        tracker is unchanged then.
        """
        try:
            return call(now)
        finally:
            self._drain(now)

    # ------------------------------------------------------------------ outputs

    def take_transmissions(self) -> list[Transmission]:
        """Everything to put on the transport, oldest first (the pump forgets it)."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def should_wake(self, armed: float | None) -> bool:
        """Whether a driver sleeping until ``armed`` must wake now to send or re-arm its timer."""
        return bool(self._outgoing) or self.tracker.next_deadline() != armed

    @property
    def pending(self) -> int:
        """How many transmissions wait for :meth:`take_transmissions`."""
        return len(self._outgoing)

    def _drain(self, now: float) -> None:
        tracker = self.tracker
        while (event := tracker.next_event()) is not None:
            if isinstance(event, Unsendable):
                self._count_unsendable(event, now)
            elif isinstance(event, MessageRejected):
                self._count_rejected(event, now)
            self._on_event(event)
        for outbound in tracker.messages_to_send():
            self.stats.sent += 1
            self.stats.sent_bytes += len(outbound.data)
            self._outgoing.append(
                Transmission(to=outbound.to, data=outbound.data, message=outbound.message)
            )

    def _count_unsendable(self, event: Unsendable, now: float) -> None:
        self.stats.unsendable += 1
        if self._unsendable_log.ready(now):
            self._log.warning(
                "%s could not send a %s (%d so far, %d warnings suppressed): %s",
                self.tracker.replica.name,
                type(event.message).__name__,
                self.stats.unsendable,
                self._unsendable_log.suppressed,
                event.reason,
            )

    def _count_rejected(self, event: MessageRejected, now: float) -> None:
        stats = self.stats
        reason = event.reason
        stats.rejected += 1
        count = stats.rejected_by_reason[reason] = stats.rejected_by_reason.get(reason, 0) + 1
        throttle = self._rejected_logs.get(reason)
        if throttle is None:
            throttle = self._rejected_logs[reason] = _Throttle()
        if throttle.ready(now):
            sender = event.sender
            if sender is None:
                origin = "an unknown sender"
            elif reason is RejectReason.UNAUTHENTICATED:
                origin = f"{sender.name}.{sender.vsn} (so it claims)"
            else:
                origin = f"{sender.name}.{sender.vsn}"
            self._log.log(
                logging.DEBUG if reason.normal else logging.WARNING,
                "%s rejected a message from %s: %s (%d %s so far, %d logs suppressed): %s",
                self.tracker.replica.name,
                origin,
                reason.value,
                count,
                reason.value,
                throttle.suppressed,
                event.detail,
            )
