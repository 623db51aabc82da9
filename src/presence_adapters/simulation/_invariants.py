"""The invariants a run is checked against, and the client-side view they replay diffs into.

:class:`Invariants` knows nothing of the engine's heap, clocks or network. The engine tells it
the facts as they happen (a presence tracked or removed, an incarnation stopped, a disruption
that convergence is measured from) and, at each check, hands it an :class:`Observed` record per
running node: what ``list`` shows, what the node's diffs replay to, what its connections tracked
and when it was last disturbed. A broken invariant is reported through the ``violate`` callback;
trace lines (convergence reached) go through ``record``.

The invariants (see the package docstring and :class:`~presence_adapters.simulation.Bounds`):
``convergence``, ``crashed_presence``, ``missing_presence``, ``duplicate_ref``, ``diff_replay``
and ``rejected`` (a simulated cluster is honest: no tracker may refuse a message for a reason
that is not :attr:`~presence_core.RejectReason.normal`). The engine itself reports ``malformed``
and ``error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from presence_core import (
    ClientView,
    MessageRejected,
    PresenceDiff,
    PresenceMap,
    ReplicaRef,
    presence_diff_payload,
)

from ._results import ConvergenceSample, ViolationKind
from ._scenario import Bounds

__all__ = ["Ident", "Invariants", "Observed", "ReplayedClient", "TimelineRow", "Unchecked"]

Ident = tuple[str, str, str]
"""``(conn, topic, key)``: one presence of one node, as its connections tracked it."""

TimelineRow = tuple[float, Mapping[str, int], int, Mapping[str, int]]
"""``(time, {node: visible presences}, expected presences, {node: presences off the model})``."""

Violate = Callable[[ViolationKind, str, str, str], None]
"""``violate(kind, node, detail, what)``: ``what`` identifies the violation for deduplication."""

# --------------------------------------------------------------------------- client view


class ReplayedClient:
    """One replica's diffs replayed as a phoenix.js client would, from an empty view: one
    :class:`~presence_core.ClientView` per topic (the core's client-side sync)."""

    _JOIN_REF = "sim"

    def __init__(self) -> None:
        self.views: dict[str, ClientView] = {}

    def apply(self, diff: PresenceDiff) -> None:
        """Apply one diff with ``Presence.syncDiff`` semantics (SPEC §6.1)."""
        view = self.views.get(diff.topic)
        if view is None:
            view = self.views[diff.topic] = ClientView()
            view.on_state({}, join_ref=self._JOIN_REF)
        view.on_diff(presence_diff_payload(diff), join_ref=self._JOIN_REF)

    def state(self, topic: str) -> dict[str, Any]:
        """The replayed presences of ``topic``."""
        view = self.views.get(topic)
        return view.state if view is not None else {}


def _canonical(presences: Mapping[str, Any]) -> Any:
    return sorted(
        (key, sorted(json.dumps(meta, sort_keys=True) for meta in value["metas"]))
        for key, value in presences.items()
        if value["metas"]
    )


# --------------------------------------------------------------------------- observations


@attrs.frozen(kw_only=True)
class Observed:
    """What the checks see of one running node at one moment.

    Attributes:
        name: the node.
        listed: ``{topic: tracker.presences(topic)}`` for every topic the tracker has.
        client: the node's diffs replayed (:class:`ReplayedClient`).
        model: what the node's live connections tracked: ``{(conn, topic, key): phx_ref}``.
        disturbed: the virtual time of the node's last disturbance.
        resumed: the virtual time it last started or resumed.
    """

    name: str
    listed: Mapping[str, PresenceMap]
    client: ReplayedClient
    model: Mapping[Ident, str]
    disturbed: float
    resumed: float

    def visible(self) -> set[str]:
        """The ``phx_ref`` of every presence ``list`` shows."""
        return {
            str(meta.get("phx_ref"))
            for presences in self.listed.values()
            for value in presences.values()
            for meta in value["metas"]
        }


@attrs.define
class _RefInfo:
    owner: ReplicaRef
    topic: str
    key: str
    meta: dict[str, Any]
    created: float
    removed: float | None = None


# --------------------------------------------------------------------------- the checks


class Invariants:
    """The invariants of one run, and the bookkeeping they need.

    Args:
        bounds: the time limits.
        violate: called for each broken invariant.
        record: called with a trace line when a disruption's cluster converges.
        timeline: keep one :data:`TimelineRow` per check.
    """

    def __init__(
        self,
        bounds: Bounds,
        *,
        violate: Violate,
        record: Callable[[str], None],
        timeline: bool = False,
    ) -> None:
        self.bounds = bounds
        self._violate = violate
        self._record = record
        self._keep_timeline = timeline
        self._refs: dict[str, _RefInfo] = {}
        self._dead: list[tuple[ReplicaRef, float]] = []
        self._open: list[tuple[str, float]] = []
        self.samples: list[ConvergenceSample] = []
        """One sample per disruption, in the order they converged (or the run ended)."""
        self.timeline: list[TimelineRow] = []
        """One row per check, when asked for."""

    # ------------------------------------------------------------------ facts

    def tracked(
        self, node: str, owner: ReplicaRef, ref: str, ident: Ident, meta: dict[str, Any], now: float
    ) -> None:
        """``owner`` (running on ``node``) handed out ``ref`` for ``ident``; the meta lists as
        ``meta``. A ref handed out before breaks ``duplicate_ref``."""
        previous = self._refs.get(ref)
        if previous is not None:
            self._violate(
                "duplicate_ref",
                node,
                f"phx_ref {ref!r} handed out twice (first by {previous.owner}, now by {owner})",
                ref,
            )
        _conn, topic, key = ident
        self._refs[ref] = _RefInfo(owner, topic, key, meta, now)

    def removed(self, ref: str, now: float) -> None:
        """The presence ``ref`` was untracked, replaced by an update, or its node stopped."""
        self._refs[ref].removed = now

    def stopped(self, replica: ReplicaRef, now: float) -> None:
        """The incarnation ``replica`` stopped (crash, shutdown); its presences must vanish."""
        self._dead.append((replica, now))

    def disrupted(self, cause: str, now: float) -> None:
        """Start measuring how long the cluster takes to converge after ``cause``."""
        self._open.append((cause, now))

    def rejected(self, node: str, src: str, event: MessageRejected) -> None:
        """``node``'s tracker refused a message ``src`` sent (``event``).

        A simulated cluster is honest (unless a custom tracker factory or network makes it
        otherwise), so only the reasons an honest cluster produces over a network that loses,
        duplicates and reorders (:attr:`~presence_core.RejectReason.normal`) are allowed; any
        other breaks ``rejected``.
        """
        reason = event.reason
        if reason.normal:
            return
        self._violate(
            "rejected",
            node,
            f"refused a message {src} sent: {reason.value}: {event.detail}",
            f"{src} {reason.value}",
        )

    # ------------------------------------------------------------------ checks

    def check(self, now: float, running: Sequence[Observed]) -> None:
        """Check every invariant but ``convergence`` on the running nodes."""
        visible = {node.name: node.visible() for node in running}
        for node in running:
            self._check_replay(node)
        self._check_crashed(now, running, visible)
        self._check_missing(now, running, visible)
        self._check_converged(now, running, visible)
        if self._keep_timeline:
            expected = {ref for node in running for ref in node.model.values()}
            self.timeline.append(
                (
                    now,
                    {n: len(v) for n, v in sorted(visible.items())},
                    len(expected),
                    {n: len(v ^ expected) for n, v in sorted(visible.items())},
                )
            )

    def final_check(self, now: float, running: Sequence[Observed]) -> None:
        """The last check, after the settle phase: :meth:`check`, then ``convergence``.

        Every running node must list exactly what the running nodes' connections tracked.
        Disruptions still open are closed as never converged.
        """
        self.check(now, running)
        expected: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
        for node in running:
            for ref in node.model.values():
                info = self._refs[ref]
                by_key = expected.setdefault(info.topic, {})
                by_key.setdefault(info.key, {"metas": []})["metas"].append(info.meta)
        want = {topic: _canonical(v) for topic, v in sorted(expected.items())}
        for node in running:
            got = {topic: _canonical(v) for topic, v in sorted(node.listed.items())}
            if got != want:
                topics = sorted(t for t in set(got) | set(want) if got.get(t) != want.get(t))
                first = topics[0]
                self._violate(
                    "convergence",
                    node.name,
                    f"{self.bounds.settle:.3f}s after the settle phase began, {len(topics)} "
                    f"topic(s) differ from the model; first {first!r}: listed "
                    f"{got.get(first, [])}, expected {want.get(first, [])}",
                    "final",
                )
        for cause, at in self._open:
            self.samples.append(ConvergenceSample(cause=cause, at=at, seconds=None))
        self._open = []

    def _check_replay(self, node: Observed) -> None:
        client = node.client
        replayed_topics = {t for t, view in client.views.items() if view.state}
        for topic in sorted(set(node.listed) | replayed_topics):
            listed = _canonical(node.listed.get(topic, {}))
            replayed = _canonical(client.state(topic))
            if listed != replayed:
                self._violate(
                    "diff_replay",
                    node.name,
                    f"replaying the diffs of {topic!r} gives {replayed} but list() gives {listed}",
                    topic,
                )

    def _check_crashed(
        self, now: float, running: Sequence[Observed], visible: Mapping[str, set[str]]
    ) -> None:
        bound = self.bounds.crash
        for replica, at in self._dead:
            for node in running:
                if now <= max(at, node.resumed) + bound:
                    continue
                for ref in sorted(visible[node.name]):
                    info = self._refs.get(ref)
                    if info is not None and info.owner == replica:
                        self._violate(
                            "crashed_presence",
                            node.name,
                            f"{info.key!r} in {info.topic!r} (ref {ref}) of {replica} which "
                            f"stopped at t={at:.3f}s is still visible after {bound:.3f}s",
                            ref,
                        )

    def _check_missing(
        self, now: float, running: Sequence[Observed], visible: Mapping[str, set[str]]
    ) -> None:
        bound = self.bounds.join
        for owner in running:
            for ident in sorted(owner.model):
                ref = owner.model[ident]
                info = self._refs[ref]
                for node in running:
                    if node is owner or ref in visible[node.name]:
                        continue
                    since = max(info.created, owner.disturbed, node.disturbed)
                    if now - since > bound:
                        self._violate(
                            "missing_presence",
                            node.name,
                            f"{info.key!r} in {info.topic!r} (ref {ref}) tracked on {owner.name} "
                            f"at t={info.created:.3f}s still missing {now - since:.3f}s "
                            f"after the last disturbance (bound {bound:.3f}s)",
                            ref,
                        )

    def _check_converged(
        self, now: float, running: Sequence[Observed], visible: Mapping[str, set[str]]
    ) -> None:
        """Close every open disruption the cluster has converged from.

        Converged from a disruption at ``at``: every running node shows every presence of a
        running node created by ``at``, and none removed by ``at``.
        """
        still: list[tuple[str, float]] = []
        for cause, at in self._open:
            if self._converged_since(at, running, visible):
                self.samples.append(ConvergenceSample(cause=cause, at=at, seconds=now - at))
                self._record(f"converged {cause} {now - at:.9f}")
            else:
                still.append((cause, at))
        self._open = still

    def _converged_since(
        self, at: float, running: Sequence[Observed], visible: Mapping[str, set[str]]
    ) -> bool:
        alive = [
            ref
            for owner in running
            for ref in owner.model.values()
            if self._refs[ref].created <= at
        ]
        for node in running:
            seen = visible[node.name]
            for ref in seen:
                info = self._refs.get(ref)
                if info is not None and info.removed is not None and info.removed <= at:
                    return False
            if any(ref not in seen for ref in alive):
                return False
        return True


class Unchecked(Invariants):
    """Invariants that check nothing and remember nothing (``Simulation(checks=False)``).

    The engine tells it the facts all the same; it drops them, so a soak run of millions of
    operations keeps no record of the presences it has seen come and go.
    """

    def tracked(
        self, node: str, owner: ReplicaRef, ref: str, ident: Ident, meta: dict[str, Any], now: float
    ) -> None:
        pass

    def removed(self, ref: str, now: float) -> None:
        pass

    def stopped(self, replica: ReplicaRef, now: float) -> None:
        pass

    def disrupted(self, cause: str, now: float) -> None:
        pass

    def rejected(self, node: str, src: str, event: MessageRejected) -> None:
        pass

    def check(self, now: float, running: Sequence[Observed]) -> None:
        pass

    def final_check(self, now: float, running: Sequence[Observed]) -> None:
        pass
