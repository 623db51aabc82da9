"""What a run produces: the violations found, the metrics, and the result that holds them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._scenario import Bounds, Scenario

__all__ = ["ConvergenceSample", "Metrics", "SimResult", "Violation", "ViolationKind"]

ViolationKind = Literal[
    "convergence",
    "crashed_presence",
    "missing_presence",
    "duplicate_ref",
    "diff_replay",
    "malformed",
    "rejected",
    "flap_seen",
    "leave_lost",
    "leave_repeated",
    "error",
]
"""The invariants a :class:`Violation` can name (``error``: the tracker raised)."""


@attrs.frozen(kw_only=True)
class Violation:
    """An invariant that broke.

    Attributes:
        kind: which invariant.
        seed: the scenario's seed.
        step: the simulation step (actions executed) at which it was detected.
        time: the virtual time.
        node: the replica where it was seen.
        detail: what exactly.
    """

    kind: ViolationKind
    seed: int
    step: int
    time: float
    node: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.kind} at step {self.step} (t={self.time:.3f}s, seed {self.seed}) "
            f"on {self.node}: {self.detail}"
        )


@attrs.frozen(kw_only=True)
class ConvergenceSample:
    """Time from a disruption (heal, crash, restart, shutdown, resume, settle) to convergence.

    ``seconds`` is ``None`` when the cluster had not converged by the end of the run. Converged
    means: every running replica shows every presence alive since the disruption, and none that
    was gone by then (resolution: the check interval).
    """

    cause: str
    at: float
    seconds: float | None


@attrs.frozen(kw_only=True)
class Metrics:
    """What a run cost and how fast it converged.

    Attributes:
        virtual_seconds: total virtual time simulated (including the settle phase).
        steps: actions executed.
        convergence: one sample per disruption.
        messages: transmissions per sending node (a broadcast counts once per recipient).
        bytes: bytes per sending node (the encoded size of each transmission).
        messages_per_replica_second: mean over nodes of messages / virtual_seconds.
        bytes_per_replica_second: likewise for bytes.
        dropped: messages lost to the network model, partitions or dead receivers.
        diffs: PresenceDiff events emitted, all replicas together.
        largest_transfer: the largest TransferAck, in bytes.
        operations: workload operations performed.
        encoded_bytes: bytes the nodes' pumps encoded (each message once, a broadcast once).
        received_bytes: bytes delivered to the nodes' pumps (duplicates included).
        malformed: delivered messages a node rejected as not valid (each one is also a
            ``malformed`` violation: the codec or the glue is broken).
        unsendable: messages a pump could not encode within the tracker's
            ``max_message_bytes`` (dropped before they reached the network).
        rejected: delivered messages a tracker refused (its
            :class:`~presence_core.MessageRejected` events), by reason (the
            :class:`~presence_core.RejectReason` value; reasons never seen are absent). Those
            whose reason is not :attr:`~presence_core.RejectReason.normal` are also ``rejected``
            violations.
        flaps: flap episodes the workload started (:attr:`Workload.flaps
            <presence_adapters.simulation.Workload.flaps>`).
        flaps_judged: judgements of a flap's timing checks (``flap_seen``, ``leave_lost``,
            ``leave_repeated``): one per reconnect or leave and per observer that no fault
            disturbed.
        flaps_skipped: the same, left unjudged because a fault disturbed the observer or the
            nodes the key left or came back on (timing is then unknowable).
    """

    virtual_seconds: float
    steps: int
    convergence: tuple[ConvergenceSample, ...]
    messages: Mapping[str, int]
    bytes: Mapping[str, int]
    messages_per_replica_second: float
    bytes_per_replica_second: float
    dropped: int
    diffs: int
    largest_transfer: int
    operations: int
    encoded_bytes: int = 0
    received_bytes: int = 0
    malformed: int = 0
    unsendable: int = 0
    rejected: Mapping[str, int] = attrs.field(factory=dict)
    flaps: int = 0
    flaps_judged: int = 0
    flaps_skipped: int = 0

    @property
    def worst_convergence(self) -> float | None:
        """The slowest convergence sample, in virtual seconds (``None`` if there were none)."""
        values = [s.seconds for s in self.convergence if s.seconds is not None]
        return max(values) if values else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "virtual_seconds": self.virtual_seconds,
            "steps": self.steps,
            "convergence": [
                {"cause": s.cause, "at": s.at, "seconds": s.seconds} for s in self.convergence
            ],
            "worst_convergence": self.worst_convergence,
            "messages": dict(sorted(self.messages.items())),
            "bytes": dict(sorted(self.bytes.items())),
            "messages_per_replica_second": self.messages_per_replica_second,
            "bytes_per_replica_second": self.bytes_per_replica_second,
            "dropped": self.dropped,
            "diffs": self.diffs,
            "largest_transfer": self.largest_transfer,
            "operations": self.operations,
            "encoded_bytes": self.encoded_bytes,
            "received_bytes": self.received_bytes,
            "malformed": self.malformed,
            "unsendable": self.unsendable,
            "rejected": dict(sorted(self.rejected.items())),
            "flaps": self.flaps,
            "flaps_judged": self.flaps_judged,
            "flaps_skipped": self.flaps_skipped,
        }


@attrs.frozen(kw_only=True)
class SimResult:
    """The outcome of a run.

    Attributes:
        scenario: what ran.
        violations: every invariant violation found (empty when the run is correct).
        metrics: the run's metrics.
        digest: SHA-256 (hex) over the canonical trace: identical for identical scenarios.
        bounds: the invariant bounds the run was checked against.
        trace: the trace lines, when the simulation was asked to keep them.
        timeline: per check: ``(time, {node: visible presences}, expected presences,
            {node: presences differing from the model})``, when asked to record it.
    """

    scenario: Scenario
    violations: tuple[Violation, ...]
    metrics: Metrics
    digest: str
    bounds: Bounds
    trace: tuple[str, ...] = ()
    timeline: tuple[tuple[float, Mapping[str, int], int, Mapping[str, int]], ...] = ()

    @property
    def ok(self) -> bool:
        """True when no invariant broke."""
        return not self.violations

    def replay_command(self) -> str | None:
        """The ``presence simulate`` command that replays this run, if it came from SimParams."""
        return self.scenario.params.replay_command() if self.scenario.params else None
