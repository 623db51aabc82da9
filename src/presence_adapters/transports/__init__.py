"""Transports: how a node's bytes reach its cluster (see :class:`Transport`).

:class:`MemoryHub` needs nothing beyond the standard library. The broker transports load their
client library only when first used, so this package imports without them:
``RedisTransport`` (``pip install 'presence-core[redis]'``) and ``NatsTransport``
(``pip install 'presence-core[nats]'``). They are left out of ``__all__`` so that a star import
never needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import Transport as Transport
from ._broker import Backoff as Backoff
from ._broker import BrokerConnected as BrokerConnected
from ._broker import BrokerDisconnected as BrokerDisconnected
from ._broker import BrokerEvent as BrokerEvent
from ._broker import BrokerStats as BrokerStats
from ._broker import StatusCallback as StatusCallback
from ._broker import address_segment as address_segment
from .memory import HubStats as HubStats
from .memory import LinkFaults as LinkFaults
from .memory import MemoryHub as MemoryHub
from .memory import MemoryTransport as MemoryTransport

if TYPE_CHECKING:
    from .nats import NatsTransport as NatsTransport
    from .redis import RedisTransport as RedisTransport

__all__ = [
    "Backoff",
    "BrokerConnected",
    "BrokerDisconnected",
    "BrokerEvent",
    "BrokerStats",
    "HubStats",
    "LinkFaults",
    "MemoryHub",
    "MemoryTransport",
    "StatusCallback",
    "Transport",
    "address_segment",
]


def __getattr__(name: str) -> object:
    # The broker transports import their client library: load them on first use only.
    if name == "RedisTransport":
        from .redis import RedisTransport

        return RedisTransport
    if name == "NatsTransport":
        from .nats import NatsTransport

        return NatsTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
