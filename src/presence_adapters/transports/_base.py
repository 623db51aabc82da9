"""The Transport protocol: how a node's bytes reach the other replicas of its cluster.

A transport is deliberately dumb. It knows nothing of presences, heartbeats or the codec: it moves
opaque byte strings, each one whole (a message is delivered complete or not at all), between the
members of one cluster. Everything the replication protocol needs beyond that (retries, repair
after loss, liveness) is done by the core, which tolerates messages that are lost, duplicated,
delayed or reordered.

What a transport must do, checked by :mod:`presence_adapters.testing` (run its conformance suite
on any new transport):

* :meth:`~Transport.broadcast` reaches every *other* member of the cluster that is connected, and
  never the sender itself;
* :meth:`~Transport.send` reaches the one member of that name, if it is connected (a message to a
  name nobody holds is dropped silently, as on any pub/sub bus);
* :meth:`~Transport.receive` returns the next message; the messages one member sends another
  arrive in the order they were sent (the core copes with reordering, but every bus we bind keeps
  this order, and the suite checks it so that a bug which reorders shows up);
* payloads up to :attr:`~Transport.max_payload` bytes are carried; larger ones raise
  :class:`~presence_adapters.PayloadTooLarge` and nothing is sent;
* two clusters sharing one bus (different namespaces) never see each other's messages;
* after :meth:`~Transport.aclose` (idempotent) sends raise and ``receive`` raises
  :class:`~presence_adapters.TransportClosed`; a ``receive`` already waiting is woken with it.

A transport whose client library works only on asyncio says so with a class attribute
``requires_asyncio = True``: the anyio driver then refuses it on trio with a clear error, instead
of failing somewhere inside the library.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """One cluster member's connection to the others (interface only; see the module docs).

    A node takes ownership of the transport it is given: it closes it when it stops.
    """

    @property
    def name(self) -> str:
        """The replica name this transport receives for; the node takes it as its own name."""
        ...

    @property
    def max_payload(self) -> int:
        """The largest payload, in bytes, that :meth:`broadcast` and :meth:`send` carry."""
        ...

    async def broadcast(self, data: bytes) -> None:
        """Send ``data`` to every other connected member of the cluster.

        Raises:
            PayloadTooLarge: ``len(data) > max_payload``; nothing was sent.
            TransportClosed: the transport is closed.
            TransportError: the transport failed.
        """
        ...

    async def send(self, to: str, data: bytes) -> None:
        """Send ``data`` to the member named ``to`` (dropped silently if nobody holds that name).

        Raises:
            PayloadTooLarge: ``len(data) > max_payload``; nothing was sent.
            TransportClosed: the transport is closed.
            TransportError: the transport failed.
        """
        ...

    async def receive(self) -> bytes:
        """The next message for this member (a broadcast or one sent to :attr:`name`).

        Raises:
            TransportClosed: the transport was closed; no message will come any more.
            TransportError: the transport failed.
        """
        ...

    async def aclose(self) -> None:
        """Leave the cluster and release every resource. Idempotent."""
        ...
