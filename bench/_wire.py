"""Bytes on the wire, through the replica codec (``presence_core.encode_message``).

Three messages, with the BENCH.md meta on every presence:

* an idle heartbeat (no delta) of a replica that knows 10 replicas (itself included), named
  ``presence@10.0.0.<i>`` with vsn 1, every clock at 1,000,000 (a busy replica's clock); each
  known replica costs about ``len(name) + 16`` bytes, so it is also measured with names ``r<i>``;
* a heartbeat carrying a delta of 100 changes, from R1 after it holds workload a's 100,000
  presences (so clocks are six digits) and knows 9 other replicas: once 100 joins, once 50 joins
  plus 50 leaves;
* a full transfer: the ``TransferAck`` carrying R1's extract of workload a's 100,000 presences for
  R2, in total and per presence.
"""

from __future__ import annotations

from dataclasses import dataclass

from presence_core import Heartbeat, ReplicaRef, ReplicaState, TransferAck, encode_message

from ._workloads import META, R1, R2, fill, grid, pair

__all__ = [
    "HEARTBEAT_TARGET",
    "TRANSFER_TARGET",
    "WireResult",
    "measure_wire",
]

WHOLE_TRANSFER_BYTES = 1 << 30
"""The codec's limit while the whole transfer is measured (1 GiB: no limit in practice)."""

HEARTBEAT_TARGET = 400
"""Bytes an idle heartbeat with 10 replicas known must stay under."""

TRANSFER_TARGET = 120.0
"""Bytes per presence a full transfer must stay under."""


@dataclass(frozen=True)
class WireResult:
    """Encoded sizes in bytes.

    Attributes:
        idle_heartbeat: an empty heartbeat, 10 replicas in its clock (``presence@10.0.0.<i>``).
        idle_heartbeat_short: the same with replicas named ``r1`` to ``r10``.
        delta_joins: a heartbeat with a delta of 100 joins.
        delta_mixed: a heartbeat with a delta of 50 joins and 50 leaves.
        transfer: a TransferAck carrying ``transfer_presences`` presences.
        transfer_presences: how many presences the transfer carries.
    """

    idle_heartbeat: int
    idle_heartbeat_short: int
    delta_joins: int
    delta_mixed: int
    transfer: int
    transfer_presences: int

    @property
    def transfer_per_presence(self) -> float:
        return self.transfer / self.transfer_presences


def idle_heartbeat(replicas: int = 10, *, name: str = "presence@10.0.0.{i}") -> Heartbeat:
    """An empty heartbeat whose clock holds ``replicas`` replicas at clock 1,000,000."""
    refs = [ReplicaRef(name.format(i=i + 1), 1) for i in range(replicas)]
    return Heartbeat(sender=refs[0], clock={ref: 1_000_000 for ref in refs})


def _busy_r1(conns: int, topics: int) -> ReplicaState:
    r1, _ = pair()
    for i in range(2, 10):
        r1.replica_up(ReplicaRef(f"r{i + 1}", 1))
    fill(r1, grid(conns, topics))
    r1.reset_delta()
    r1.compact()
    return r1


def delta_heartbeats(conns: int, topics: int) -> tuple[Heartbeat, Heartbeat]:
    """Heartbeats with a delta of 100 joins, and of 50 joins + 50 leaves."""
    new = [(f"new{j}", f"topic{j % 10}", f"newuser{j}") for j in range(100)]
    r1 = _busy_r1(conns, topics)
    for conn, topic, key in new:
        r1.join(conn, topic, key, META)
    joins = Heartbeat(sender=R1, clock=r1.clocks()[1], delta=r1.take_delta())
    r1 = _busy_r1(conns, topics)
    for conn, topic, key in new[:50]:
        r1.join(conn, topic, key, META)
    for entry in list(r1.get_by_topic("topic0"))[:50]:
        r1.leave(entry.conn, entry.topic, entry.key)
    mixed = Heartbeat(sender=R1, clock=r1.clocks()[1], delta=r1.take_delta())
    return joins, mixed


def full_transfer(conns: int, topics: int) -> TransferAck:
    r1, r2 = pair()
    fill(r1, grid(conns, topics))
    return TransferAck(request_id=1, sender=R1, payload=r1.extract(*r2.clocks()))


def measure_wire(conns: int, topics: int = 100) -> WireResult:
    """Encode the three messages with the codec."""
    n = conns * topics
    joins, mixed = delta_heartbeats(conns, topics)
    transfer = full_transfer(conns, topics)
    if len(list(transfer.payload.entries())) != n or R2 in transfer.payload.values:
        raise AssertionError("wire: the transfer does not carry R1's presences")
    return WireResult(
        idle_heartbeat=len(encode_message(idle_heartbeat())),
        idle_heartbeat_short=len(encode_message(idle_heartbeat(name="r{i}"))),
        delta_joins=len(encode_message(joins)),
        delta_mixed=len(encode_message(mixed)),
        # Measured whole, as one message: a tracker sends a transfer this large in parts of at
        # most max_message_bytes (1 MiB by default), so the size check is lifted here.
        transfer=len(encode_message(transfer, max_bytes=WHOLE_TRANSFER_BYTES)),
        transfer_presences=n,
    )
