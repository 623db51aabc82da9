"""Messages replicas send each other (nouns), and where they go (SPEC §3.2).

These are values: frozen, validated on construction, comparable. The codec (``_codec``) turns
them into bytes and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import attrs

from ._state import Delta, Snapshot
from ._vclock import ReplicaRef

__all__ = [
    "GracefulPermdown",
    "Heartbeat",
    "Message",
    "Outbound",
    "TransferAck",
    "TransferRequest",
]


def _context(value: Mapping[ReplicaRef, int]) -> Mapping[ReplicaRef, int]:
    context = dict(value)
    for replica, clock in context.items():
        if not isinstance(replica, ReplicaRef):
            raise TypeError(f"clock keys must be ReplicaRef, not {type(replica).__name__}")
        if type(clock) is not int or clock < 0:
            raise ValueError(f"clock[{replica!r}] must be an int >= 0, not {clock!r}")
    return context


def _request_id(_instance: object, _attribute: object, value: int) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"request_id must be an int >= 0, not {value!r}")


_ref = attrs.validators.instance_of(ReplicaRef)


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A replica's periodic broadcast: its clock and, when it has one, its pending delta.

    Attributes:
        sender: the sending replica.
        clock: the sender's context, without the replicas it considers down.
        delta: the delta of the window just closed, or ``None`` for an empty heartbeat.
    """

    sender: ReplicaRef = attrs.field(validator=_ref)
    clock: Mapping[ReplicaRef, int] = attrs.field(converter=_context)
    delta: Delta | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Delta))
    )


@attrs.frozen(kw_only=True)
class TransferRequest:
    """A request for what the sender lacks, sent to one replica.

    Attributes:
        request_id: correlation number, echoed by the reply.
        sender: the requesting replica.
        clock: the requester's context (without replicas it considers down).
    """

    request_id: int = attrs.field(validator=_request_id)
    sender: ReplicaRef = attrs.field(validator=_ref)
    clock: Mapping[ReplicaRef, int] = attrs.field(converter=_context)


@attrs.frozen(kw_only=True)
class TransferAck:
    """The reply to a :class:`TransferRequest`: a delta generation or the full state.

    Attributes:
        request_id: the request's correlation number.
        sender: the replying replica.
        payload: a :class:`~presence_core.Delta` or a :class:`~presence_core.Snapshot`.
    """

    request_id: int = attrs.field(validator=_request_id)
    sender: ReplicaRef = attrs.field(validator=_ref)
    payload: Delta | Snapshot = attrs.field(
        validator=attrs.validators.instance_of((Delta, Snapshot))
    )


@attrs.frozen(kw_only=True)
class GracefulPermdown:
    """The sender is leaving for good: drop its presences now rather than after timeouts.

    Attributes:
        sender: the departing replica.
    """

    sender: ReplicaRef = attrs.field(validator=_ref)


Message = Union[Heartbeat, TransferRequest, TransferAck, GracefulPermdown]  # noqa: UP007
"""Any message between replicas."""


@attrs.frozen(kw_only=True)
class Outbound:
    """A message the tracker wants sent.

    Attributes:
        message: what to send.
        to: the name of the one replica to send it to, or ``None`` to broadcast it to every other
            replica of the cluster.
    """

    message: Message
    to: str | None = None

    @property
    def is_broadcast(self) -> bool:
        """True when the message goes to every other replica."""
        return self.to is None
