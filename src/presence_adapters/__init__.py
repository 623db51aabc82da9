"""presence-core's adapters: the core bound to event loops, transports and a simulator.

Open a node with a driver's ``open_node`` (:mod:`presence_adapters.drivers.asyncio` or
:mod:`presence_adapters.drivers.anyio`); it hands you a :class:`Presence`. Everything documented
here is public; the ``_modules`` are not.
"""

from __future__ import annotations

from ._errors import FetchHookError as FetchHookError
from ._errors import NodeClosed as NodeClosed
from ._errors import PayloadTooLarge as PayloadTooLarge
from ._errors import SubscriptionOverflow as SubscriptionOverflow
from ._errors import TransportClosed as TransportClosed
from ._errors import TransportError as TransportError
from ._keyfile import KEYRING_VARIABLE as KEYRING_VARIABLE
from ._keyfile import format_keyring as format_keyring
from ._keyfile import load_keyring as load_keyring
from ._keyfile import parse_keyring as parse_keyring
from .drivers._node import DEFAULT_SHUTDOWN_TIMEOUT as DEFAULT_SHUTDOWN_TIMEOUT
from .drivers._node import default_name as default_name
from .drivers._node import default_vsn as default_vsn
from .drivers._pump import Pump as Pump
from .drivers._pump import PumpStats as PumpStats
from .drivers._pump import Transmission as Transmission
from .presence import DEFAULT_MAX_BUFFERED as DEFAULT_MAX_BUFFERED
from .presence import ConnectionScope as ConnectionScope
from .presence import FetchHook as FetchHook
from .presence import OccupancySubscription as OccupancySubscription
from .presence import Presence as Presence
from .presence import PresenceView as PresenceView
from .presence import ReplicaEvent as ReplicaEvent
from .presence import Subscription as Subscription
from .presence import TopicDiff as TopicDiff
from .presence import UserSubscription as UserSubscription
from .transports._base import Transport as Transport
from .transports._broker import Backoff as Backoff
from .transports._broker import BrokerConnected as BrokerConnected
from .transports._broker import BrokerDisconnected as BrokerDisconnected
from .transports._broker import BrokerEvent as BrokerEvent
from .transports._broker import BrokerStats as BrokerStats
from .transports._broker import StatusCallback as StatusCallback
from .transports.memory import HubStats as HubStats
from .transports.memory import LinkFaults as LinkFaults
from .transports.memory import MemoryHub as MemoryHub
from .transports.memory import MemoryTransport as MemoryTransport

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "KEYRING_VARIABLE",
    "Backoff",
    "BrokerConnected",
    "BrokerDisconnected",
    "BrokerEvent",
    "BrokerStats",
    "ConnectionScope",
    "FetchHook",
    "FetchHookError",
    "HubStats",
    "LinkFaults",
    "MemoryHub",
    "MemoryTransport",
    "NodeClosed",
    "OccupancySubscription",
    "PayloadTooLarge",
    "Presence",
    "PresenceView",
    "Pump",
    "PumpStats",
    "ReplicaEvent",
    "StatusCallback",
    "Subscription",
    "SubscriptionOverflow",
    "TopicDiff",
    "Transmission",
    "Transport",
    "TransportClosed",
    "TransportError",
    "UserSubscription",
    "default_name",
    "default_vsn",
    "format_keyring",
    "load_keyring",
    "parse_keyring",
]
