"""What the broker transports (Redis, NATS) share: names on the broker, status events, backoff.

A broker transport maps a cluster onto the broker's own addressing: one *broadcast* channel (or
subject) per cluster namespace, and one *direct* channel per replica of it. Replica names and
namespaces become parts of those addresses, and NATS gives ``.``, ``*`` and ``>`` a meaning in a
subject (and whitespace ends it), so every name goes through :func:`address_segment`, a reversible
escape that leaves ``[A-Za-z0-9_-]`` alone: two different names never share an address, and no
name can subscribe to or publish on anything but its own.

Connection trouble never kills a node silently: the transport keeps the node running, drops what
it cannot send (the replication protocol repairs it once the broker is back, like any lost
message), reconnects with :class:`Backoff`, and reports each change as a :data:`BrokerEvent`
(logged, counted in :class:`BrokerStats`, and given to the ``on_status`` callback if any).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Union

import attrs

__all__ = [
    "Backoff",
    "BrokerConnected",
    "BrokerDisconnected",
    "BrokerEvent",
    "BrokerStats",
    "StatusCallback",
    "address_segment",
    "report",
]

logger = logging.getLogger("presence_adapters.transports")

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def address_segment(name: str) -> str:
    """``name`` as one segment of a broker address: ``[A-Za-z0-9_-]`` kept, every other character
    written ``%XX`` per UTF-8 byte (so ``.``, ``*``, ``>``, whitespace and ``%`` itself cannot
    change an address's meaning, and the escape is reversible).

    Raises:
        ValueError: ``name`` is not a non-empty str, or not valid Unicode.
    """
    if type(name) is not str or not name:
        raise ValueError(f"a broker address segment must be a non-empty str, not {name!r}")
    if all(char in _PLAIN for char in name):
        return name
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{name!r} is not valid Unicode") from None
    return "".join(chr(byte) if chr(byte) in _PLAIN else f"%{byte:02X}" for byte in encoded)


@attrs.frozen(kw_only=True)
class BrokerConnected:
    """The transport is connected (again) and subscribed.

    Attributes:
        attempts: connection attempts it took (1 when the first one worked).
        downtime: seconds without a connection before this one (0.0 for the first).
    """

    attempts: int
    downtime: float


@attrs.frozen(kw_only=True)
class BrokerDisconnected:
    """The connection to the broker was lost; the transport is reconnecting.

    Attributes:
        error: what went wrong, as text.
    """

    error: str


BrokerEvent = Union[BrokerConnected, BrokerDisconnected]  # noqa: UP007
"""A change of a broker transport's connection."""

StatusCallback = Callable[[BrokerEvent], object]
"""Called (synchronously, from the transport's task) with every :data:`BrokerEvent`."""


@attrs.define(kw_only=True)
class BrokerStats:
    """Counters of a broker transport (they only grow).

    Attributes:
        connects: successful connections, the first included.
        disconnects: connections lost.
        sent: messages handed to the broker.
        dropped_while_disconnected: messages not sent because there was no connection.
        received: messages received from other replicas.
        ignored_own: our own broadcasts the broker echoed back, dropped unread.
    """

    connects: int = 0
    disconnects: int = 0
    sent: int = 0
    dropped_while_disconnected: int = 0
    received: int = 0
    ignored_own: int = 0


@attrs.frozen(kw_only=True)
class Backoff:
    """Delays between reconnection attempts: exponential, capped, with full jitter.

    Attributes:
        initial: the first delay's cap, in seconds.
        maximum: the largest delay.
        factor: how much the cap grows per attempt.
    """

    initial: float = 0.05
    maximum: float = 2.0
    factor: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        cap = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return rng.uniform(0.0, cap)


def report(
    name: str, event: BrokerEvent, stats: BrokerStats, on_status: StatusCallback | None
) -> None:
    """Log, count and hand on one status event (a failing callback is logged, not raised)."""
    if isinstance(event, BrokerConnected):
        stats.connects += 1
        if event.attempts > 1 or event.downtime > 0:
            logger.warning(
                "%s reconnected to the broker after %.3f s (%d attempts)",
                name,
                event.downtime,
                event.attempts,
            )
    else:
        stats.disconnects += 1
        logger.warning("%s lost the broker: %s; reconnecting", name, event.error)
    if on_status is not None:
        try:
            on_status(event)
        except Exception:
            logger.exception("%s: the on_status callback failed", name)
