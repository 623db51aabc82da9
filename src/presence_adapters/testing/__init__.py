"""Conformance suites for transports and drivers: run them on your own implementation.

Two suites, each a tuple of independent async checks plus a function that runs them all:

* :mod:`presence_adapters.testing.transport`: what every :class:`~presence_adapters.Transport`
  must do (delivery, ordering, payload limits, namespaces, close semantics). A third-party
  transport passes it before it carries a cluster::

      from presence_adapters.testing import check_transport

      async def connect(namespace: str, name: str) -> Transport:
          return await MyBusTransport.connect(url, namespace=namespace, name=name)

      anyio.run(check_transport, connect)

* :mod:`presence_adapters.testing.driver`: what every driver's ``open_node`` must do (nodes
  converge, go down and permanently down, leave gracefully, clean up connection scopes, survive
  junk, surface a failed transport, leave nothing running), on the in-memory bus.

:class:`NodeProcess` (:mod:`presence_adapters.testing.process`) runs a node in a child process on
Redis or NATS, to test real multi-process deployments: crashes (kill -9), restarts, outages.

:mod:`presence_adapters.testing.strategies` holds Hypothesis strategies that generate whole
scenarios for the simulator (:mod:`presence_adapters.simulation`). It is not imported here: it
needs Hypothesis (the ``test`` extra, ``pip install 'presence-core[test]'``), and nothing else in
this package does.

Each check raises :class:`AssertionError` with a message saying what went wrong, and bounds every
wait with :data:`DEADLINE`, so a broken implementation fails instead of hanging. Run one pytest
test per check by parametrizing over :data:`TRANSPORT_CHECKS` or :data:`DRIVER_CHECKS`.

The suites run on anyio (asyncio or trio, whichever loop is running), so this package needs the
``anyio`` extra: ``pip install 'presence-core[anyio]'``.
"""

from __future__ import annotations

try:
    import anyio as _anyio  # noqa: F401  (the checks are written with anyio)
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "presence_adapters.testing needs anyio; install the 'anyio' extra: "
        "pip install 'presence-core[anyio]' (or the 'test' extra, which also brings the "
        "Hypothesis that presence_adapters.testing.strategies needs)"
    ) from _exc

from ._support import DEADLINE as DEADLINE
from ._support import QUIET_PERIOD as QUIET_PERIOD
from .driver import DRIVER_CHECKS as DRIVER_CHECKS
from .driver import DriverCheck as DriverCheck
from .driver import NodeOpener as NodeOpener
from .driver import check_driver as check_driver
from .process import BrokerRecord as BrokerRecord
from .process import DiffRecord as DiffRecord
from .process import NodeProcess as NodeProcess
from .process import NodeProcessError as NodeProcessError
from .process import NodeStats as NodeStats
from .process import ReplicaRecord as ReplicaRecord
from .process import Reply as Reply
from .process import SeenPresence as SeenPresence
from .transport import TRANSPORT_CHECKS as TRANSPORT_CHECKS
from .transport import TransportCheck as TransportCheck
from .transport import TransportFactory as TransportFactory
from .transport import check_transport as check_transport

__all__ = [
    "DEADLINE",
    "DRIVER_CHECKS",
    "QUIET_PERIOD",
    "TRANSPORT_CHECKS",
    "BrokerRecord",
    "DiffRecord",
    "DriverCheck",
    "NodeOpener",
    "NodeProcess",
    "NodeProcessError",
    "NodeStats",
    "ReplicaRecord",
    "Reply",
    "SeenPresence",
    "TransportCheck",
    "TransportFactory",
    "check_driver",
    "check_transport",
]
