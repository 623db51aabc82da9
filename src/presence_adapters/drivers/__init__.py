"""Drivers: what runs a tracker on an event loop, all over one runtime-free :class:`Pump`.

* :mod:`presence_adapters.drivers.asyncio`: ``open_node`` on asyncio (standard library only).
* :mod:`presence_adapters.drivers.anyio`: ``open_node`` on anyio (asyncio or trio).
* The simulator (:mod:`presence_adapters.simulation`) drives its nodes through the same pump.

Writing a driver for another loop means running :class:`Pump` as those do: read the clock once
per wake-up, feed the pump what woke you, put its transmissions on the transport and sleep until
its deadline.
"""

from __future__ import annotations

from ._pump import LOG_INTERVAL as LOG_INTERVAL
from ._pump import Pump as Pump
from ._pump import PumpStats as PumpStats
from ._pump import Transmission as Transmission

__all__ = ["LOG_INTERVAL", "Pump", "PumpStats", "Transmission"]
