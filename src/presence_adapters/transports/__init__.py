"""Transports: how a node's bytes reach its cluster (see :class:`Transport`)."""

from __future__ import annotations

from ._base import Transport as Transport
from .memory import HubStats as HubStats
from .memory import LinkFaults as LinkFaults
from .memory import MemoryHub as MemoryHub
from .memory import MemoryTransport as MemoryTransport

__all__ = ["HubStats", "LinkFaults", "MemoryHub", "MemoryTransport", "Transport"]
