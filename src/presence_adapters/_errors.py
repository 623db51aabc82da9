"""The errors the adapters add to presence_core's hierarchy.

Every one is a :class:`~presence_core.PresenceError`, so ``except PresenceError`` still catches
everything the library raises on purpose:

* :class:`TransportClosed`: the transport was closed (by us, or under us).
* :class:`TransportError`: the transport failed and cannot carry on.
* :class:`PayloadTooLarge`: bytes larger than the transport carries were handed to it.
* :class:`NodeClosed`: a command reached a node that has already left the cluster.
* :class:`SubscriptionOverflow`: a subscriber fell too far behind and must resynchronise.
* :class:`FetchHookError`: the application's fetch hook returned something unusable.
"""

from __future__ import annotations

from presence_core import LimitExceeded, LocalProtocolError, PresenceError

__all__ = [
    "FetchHookError",
    "NodeClosed",
    "PayloadTooLarge",
    "SubscriptionOverflow",
    "TransportClosed",
    "TransportError",
]


class TransportError(PresenceError):
    """The transport failed (a broker connection that cannot be restored, a broken bus).

    Out of a node's ``async with`` it means the node stopped: it could no longer talk to the
    cluster.
    """


class TransportClosed(TransportError):
    """The transport is closed: :meth:`~presence_adapters.Transport.receive` raises it at the end,
    and sending on a closed transport raises it too."""


class PayloadTooLarge(LimitExceeded):
    """A payload is larger than the transport's ``max_payload``; nothing was sent.

    Attributes:
        size: the payload's size in bytes.
        limit: the transport's ``max_payload``.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the payload is {size} bytes, over the transport's max_payload={limit}")
        self.size = size
        self.limit = limit


class NodeClosed(LocalProtocolError):
    """The node has left the cluster (its ``async with`` exited, or it was abandoned), so it takes
    no more commands. Queries still answer from the last state."""


class SubscriptionOverflow(PresenceError):
    """The subscriber fell more than its buffer behind, so the subscription ended.

    Nothing was dropped or reordered silently: the buffered diffs were discarded together and the
    subscription ended with this error. Resynchronise by subscribing again and reading
    :meth:`~presence_adapters.Presence.list` with no ``await`` in between.

    Attributes:
        topic: the topic of the subscription (``None`` for replica events).
        limit: the buffer size, in presences, that was exceeded.
    """

    def __init__(self, topic: str | None, limit: int) -> None:
        what = f"topic {topic!r}" if topic is not None else "replica events"
        super().__init__(
            f"the subscription to {what} fell more than {limit} presences behind and ended; "
            "subscribe again and resynchronise from list()"
        )
        self.topic = topic
        self.limit = limit


class FetchHookError(LocalProtocolError):
    """The fetch hook broke its contract: it must return a dict holding every key it was given,
    each with its ``"metas"`` list."""
