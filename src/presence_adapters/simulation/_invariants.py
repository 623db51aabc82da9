"""The invariants a run is checked against, and the client-side view they replay diffs into.

:class:`Invariants` knows nothing of the engine's heap, clocks or network. The engine tells it
the facts as they happen (a presence tracked or removed, an incarnation stopped, a disruption
that convergence is measured from, a diff a node emitted, a flap key leaving and coming back)
and, at each check, hands it an :class:`Observed` record per running node: what ``list`` shows,
what the node's diffs replay to, what its connections tracked and when it was last disturbed. A
broken invariant is reported through the ``violate`` callback; trace lines (convergence reached)
go through ``record``.

The invariants (see the package docstring and :class:`~presence_adapters.simulation.Bounds`):
``convergence``, ``crashed_presence``, ``missing_presence``, ``duplicate_ref``, ``diff_replay``,
``rejected`` (a simulated cluster is honest: no tracker may refuse a message for a reason that is
not :attr:`~presence_core.RejectReason.normal`), and the flap checks ``flap_seen``,
``leave_lost`` and ``leave_repeated``. The engine itself reports ``malformed`` and ``error``.

Diffs held back (a leave grace period, a large room's batch): a node lists a topic as its
subscribers were shown it (:meth:`~presence_core.Tracker.entries`), so the view replayed from
its diffs must be ``list`` exactly, at every check, in every topic, and its
:meth:`~presence_core.Tracker.occupancy` must count what ``list`` shows. A key in its grace
period is listed, so the time bounds of a topic grow by its grace period and large-room tick
(:meth:`Bounds.crash_of <presence_adapters.simulation.Bounds.crash_of>`, :meth:`Bounds.join_of
<presence_adapters.simulation.Bounds.join_of>`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from presence_core import (
    ClientView,
    MessageRejected,
    Occupancy,
    PresenceDiff,
    PresenceMap,
    ReplicaRef,
    presence_diff_payload,
)

from ._results import ConvergenceSample, ViolationKind
from ._scenario import Bounds

__all__ = [
    "Disturbances",
    "Ident",
    "Invariants",
    "Observed",
    "ReplayedClient",
    "TimelineRow",
    "Unchecked",
]

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

    def count(self, topic: str, key: str) -> int:
        """How many metas of ``key`` the replayed view of ``topic`` shows."""
        found = self.state(topic).get(key)
        return len(found["metas"]) if found else 0

    def refs(self, topic: str, key: str) -> set[str]:
        """The ``phx_ref`` of every meta of ``key`` the replayed view of ``topic`` shows."""
        found = self.state(topic).get(key)
        return {str(meta.get("phx_ref")) for meta in found["metas"]} if found else set()


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
        listed: ``{topic: tracker.presences(topic)}`` for every topic where that is not empty:
            what the node's subscribers were shown (a key in its grace period included, a
            change in a large room's batch not yet).
        client: the node's diffs replayed (:class:`ReplayedClient`).
        model: what the node's live connections tracked: ``{(conn, topic, key): phx_ref}``.
        disturbed: the virtual time of the node's last disturbance.
        resumed: the virtual time it last started or resumed.
        vsn: the node's incarnation.
        occupancy: ``{topic: tracker.occupancy(topic)}`` for every topic listed or replayed,
            when the scenario has topics with options (a grace period, a large room), whose
            counts come from their own index; ``None`` otherwise (nothing to check).
        leaves_held: the keys the tracker holds in a grace period
            (:attr:`~presence_core.TrackerStats.leaves_held`), read at the final check only
            (0 otherwise).
    """

    name: str
    listed: Mapping[str, PresenceMap]
    client: ReplayedClient
    model: Mapping[Ident, str]
    disturbed: float
    resumed: float
    vsn: int = 0
    occupancy: Mapping[str, Occupancy] | None = None
    leaves_held: int = 0

    def visible(self) -> set[str]:
        """The ``phx_ref`` of every presence ``list`` shows."""
        return {
            str(meta.get("phx_ref"))
            for presences in self.listed.values()
            for value in presences.values()
            for meta in value["metas"]
        }


@attrs.frozen(kw_only=True)
class Disturbances:
    """When each node and each link was last disturbed, for the flap checks.

    What a flap key does reaches an observer from the nodes the key left and came back on,
    directly, within :attr:`Bounds.flap_slack <presence_adapters.simulation.Bounds.flap_slack>`
    (news of it through a third node can only come later than the change itself). So what
    makes its timing unknowable at an observer is a fault on one of those nodes or on the
    observer, or a message lost between the observer and one of them (a lost delta is repaired
    only within :attr:`~presence_adapters.simulation.Bounds.join`, and lost heartbeats can make
    the observer take the node for down).

    Attributes:
        nodes: the last fault on each node itself: a start, stop, pause or resume, a partition
            or heal involving it, the settle phase (virtual time; absent: never).
        links: the last message dropped on each link ``(src, dst)``, by loss or a partition.
    """

    nodes: Mapping[str, float]
    links: Mapping[tuple[str, str], float]

    def last(self, observer: str, involved: Iterable[str]) -> float:
        """The last disturbance that can delay, at ``observer``, news from ``involved``."""
        last = self.nodes.get(observer, math.inf)
        for name in involved:
            last = max(last, self.nodes.get(name, math.inf))
            if name != observer:
                last = max(
                    last,
                    self.links.get((name, observer), -math.inf),
                    self.links.get((observer, name), -math.inf),
                )
        return last


@attrs.define
class _RefInfo:
    owner: ReplicaRef
    topic: str
    key: str
    meta: dict[str, Any]
    created: float
    removed: float | None = None


@attrs.define
class _Gap:
    """One disconnect of a flap key, and its reconnect once it comes."""

    topic: str
    key: str
    left: float  # virtual time of the disconnect
    seq: int  # the transition counter then: later transitions have a greater one
    nodes: list[str]  # the node it left, then the node it came back on
    within: float  # gone for less: within the grace period at every observer
    beyond: float  # gone for more: beyond it at every observer
    shown: dict[str, int]  # observers whose subscribers showed the key when it left: vsn
    back: float | None = None


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
        self._flap_keys: set[tuple[str, str]] = set()  # (topic, key)
        self._gaps: list[_Gap] = []  # not judged yet
        # (node, vsn, topic, key) -> (seq, virtual time) of each drop of the key's count to 0
        self._drops: dict[tuple[str, int, str, str], list[tuple[int, float]]] = {}
        self._seq = 0
        self.flaps_judged = 0
        """Flap judgements made (one per gap and observer)."""
        self.flaps_skipped = 0
        """Flap judgements skipped: a fault disturbed the observer or the nodes involved."""
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

    def delivered(
        self, node: str, vsn: int, client: ReplayedClient, diff: PresenceDiff, now: float
    ) -> None:
        """``node`` (incarnation ``vsn``) emitted ``diff``: apply it to the node's replayed
        client, as its subscribers would.

        A leave of a presence the client does not show (and the diff itself does not join)
        breaks ``leave_repeated``: its subscribers were told of that leave already (or never
        shown the presence). The drops of a flap key's count to zero are recorded for the flap
        checks.
        """
        topic = diff.topic
        if diff.leaves:
            joined = {(entry.key, str(entry.meta.get("phx_ref"))) for entry in diff.joins}
            for entry in diff.leaves:
                ref = str(entry.meta.get("phx_ref"))
                if (entry.key, ref) not in joined and ref not in client.refs(topic, entry.key):
                    self._violate(
                        "leave_repeated",
                        node,
                        f"a diff of {topic!r} leaves {entry.key!r} (ref {ref}), which its "
                        f"subscribers do not show: a leave delivered twice, or one of a presence "
                        f"never shown",
                        f"{topic} {entry.key} {ref}",
                    )
        before: dict[str, int] = {}
        if self._flap_keys:
            for entry in (*diff.joins, *diff.leaves):
                if (topic, entry.key) in self._flap_keys and entry.key not in before:
                    before[entry.key] = client.count(topic, entry.key)
        client.apply(diff)
        for key, count in sorted(before.items()):
            if count and not client.count(topic, key):
                self._seq += 1
                self._drops.setdefault((node, vsn, topic, key), []).append((self._seq, now))

    def flap_left(
        self,
        topic: str,
        key: str,
        node: str,
        now: float,
        *,
        window: tuple[float, float],
        observers: Mapping[str, tuple[int, ReplayedClient]],
    ) -> None:
        """The flap key ``key`` of ``topic`` loses its only connection, on ``node``, now (call
        it before the disconnect).

        Args:
            window: ``(within, beyond)`` of :meth:`Scenario.flap_window
                <presence_adapters.simulation.Scenario.flap_window>`.
            observers: every running node: ``{name: (vsn, replayed client)}``; those whose
                subscribers show the key now are the ones judged.
        """
        self._flap_keys.add((topic, key))
        shown = {name: vsn for name, (vsn, client) in observers.items() if client.count(topic, key)}
        within, beyond = window
        self._gaps.append(_Gap(topic, key, now, self._seq, [node], within, beyond, shown))

    def flap_back(self, topic: str, key: str, node: str, now: float) -> None:
        """The flap key ``key`` of ``topic`` gets a new connection, on ``node``, now."""
        for gap in reversed(self._gaps):
            if gap.topic == topic and gap.key == key and gap.back is None:
                gap.back = now
                gap.nodes.append(node)
                return

    # ------------------------------------------------------------------ checks

    def check(
        self,
        now: float,
        running: Sequence[Observed],
        disturbed: Disturbances | None = None,
    ) -> None:
        """Check every invariant but ``convergence`` on the running nodes.

        ``disturbed`` tells the flap checks when each node and link was last disturbed; without
        it no flap is judged.
        """
        self._check(now, running, disturbed, final=False)

    def _check(
        self,
        now: float,
        running: Sequence[Observed],
        disturbed: Disturbances | None,
        *,
        final: bool,
    ) -> None:
        visible = {node.name: node.visible() for node in running}
        for node in running:
            self._check_replay(node, final=final)
        if disturbed is not None:
            self._judge_flaps(now, running, disturbed, final=final)
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

    def final_check(
        self,
        now: float,
        running: Sequence[Observed],
        disturbed: Disturbances | None = None,
    ) -> None:
        """The last check, after the settle phase: :meth:`check`, then ``convergence``.

        Every running node must list exactly what the running nodes' connections tracked (its
        replayed views too, through ``diff_replay``), and no key may still be held in a grace
        period nor shown by a replayed view after ``list`` dropped it (``leave_lost``: the
        settle phase outlasts every grace period). Disruptions still open are closed as never
        converged; flaps not yet due are dropped.
        """
        self._check(now, running, disturbed, final=True)
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

    def _check_replay(self, node: Observed, *, final: bool) -> None:
        """``diff_replay`` on every topic of ``node``: the view replayed from its diffs is what
        it lists (both are what its subscribers were shown), and its occupancy counts that. At
        the ``final`` check, a key still held in a grace period, or still replayed after
        ``list`` dropped it, is also a ``leave_lost``: its leave never reached the
        subscribers."""
        client = node.client
        replayed_topics = {t for t, view in client.views.items() if view.state}
        for topic in sorted(set(node.listed) | replayed_topics):
            listed = node.listed.get(topic, {})
            replayed = client.state(topic)
            want, got = _canonical(listed), _canonical(replayed)
            if want != got:
                self._violate(
                    "diff_replay",
                    node.name,
                    f"replaying the diffs of {topic!r} gives {got} but list() gives {want}",
                    topic,
                )
            occupancy = None if node.occupancy is None else node.occupancy.get(topic)
            if occupancy is not None:
                keys = sum(1 for value in listed.values() if value["metas"])
                presences = sum(len(value["metas"]) for value in listed.values())
                if (occupancy.keys, occupancy.presences) != (keys, presences):
                    self._violate(
                        "diff_replay",
                        node.name,
                        f"occupancy() of {topic!r} counts {occupancy.keys} key(s) and "
                        f"{occupancy.presences} presence(s), but list() shows {keys} and "
                        f"{presences}",
                        f"{topic} occupancy",
                    )
            if final:
                for key in sorted(k for k, v in replayed.items() if v["metas"] and k not in listed):
                    self._violate(
                        "leave_lost",
                        node.name,
                        f"{key!r} in {topic!r} left (list() no longer shows it) but its "
                        f"subscribers still show it at the end of the run, "
                        f"{self.bounds.settle:.3f}s after the settle phase began: its leave "
                        f"was never delivered",
                        f"{topic} {key} final",
                    )
        if final and node.leaves_held:
            self._violate(
                "leave_lost",
                node.name,
                f"{node.leaves_held} key(s) still held in their grace period at the end of the "
                f"run, {self.bounds.settle:.3f}s after the settle phase began: their leaves "
                f"were never delivered",
                "held final",
            )

    def _judge_flaps(
        self,
        now: float,
        running: Sequence[Observed],
        disturbed: Disturbances,
        *,
        final: bool,
    ) -> None:
        """Judge every flap gap whose window has closed (see :class:`_Gap`)."""
        slack = self.bounds.flap_slack
        by_name = {node.name: node for node in running}
        still: list[_Gap] = []
        for gap in self._gaps:
            gone = None if gap.back is None else gap.back - gap.left
            if gone is not None and gone < gap.within:
                due, real = gap.left + gone + slack, False
            elif gone is None or gone > gap.beyond:
                due, real = gap.left + gap.beyond, True
            else:
                continue  # between within and beyond: either is right, nothing to judge
            if now < due:
                if not final:
                    still.append(gap)
                continue
            self._judge(gap, due, real, by_name, disturbed)
        self._gaps = still

    def _judge(
        self,
        gap: _Gap,
        due: float,
        real: bool,
        running: Mapping[str, Observed],
        disturbed: Disturbances,
    ) -> None:
        """Judge one gap at every observer that showed the key when it left, and that nothing
        disturbed (see :class:`Disturbances`) since ``Bounds.join`` before it left: a
        disturbance delays what reaches it by up to that much, so timing is unknowable."""
        quiet_since = gap.left - self.bounds.join
        for name, vsn in sorted(gap.shown.items()):
            observer = running.get(name)
            if (
                observer is None
                or observer.vsn != vsn
                or disturbed.last(name, gap.nodes) >= quiet_since
            ):
                self.flaps_skipped += 1
                continue
            self.flaps_judged += 1
            drops = [
                at
                for seq, at in self._drops.get((name, vsn, gap.topic, gap.key), ())
                if seq > gap.seq and at <= due
            ]
            where = f"{gap.key!r} in {gap.topic!r} left on {gap.nodes[0]} at t={gap.left:.3f}s"
            what = f"{gap.topic} {gap.key} {gap.left:.9f}"
            if not real:
                if drops:
                    assert gap.back is not None
                    self._violate(
                        "flap_seen",
                        name,
                        f"{where} and came back on {gap.nodes[1]} {gap.back - gap.left:.3f}s "
                        f"later, within its grace period (under {gap.within:.3f}s is), yet "
                        f"subscribers saw it leave at t={drops[0]:.3f}s",
                        what,
                    )
                continue
            later = (
                f"came back {gap.back - gap.left:.3f}s later"
                if gap.back is not None
                else "did not come back"
            )
            if not drops:
                self._violate(
                    "leave_lost",
                    name,
                    f"{where} and {later}, beyond its grace period (over {gap.beyond:.3f}s is), "
                    f"yet its leave had not reached subscribers by t={due:.3f}s",
                    what,
                )
            elif len(drops) > 1:
                self._violate(
                    "leave_repeated",
                    name,
                    f"{where} and {later}: subscribers saw it leave {len(drops)} times (at t="
                    + ", ".join(f"{at:.3f}s" for at in drops)
                    + ")",
                    what,
                )

    def _check_crashed(
        self, now: float, running: Sequence[Observed], visible: Mapping[str, set[str]]
    ) -> None:
        """``crashed_presence``: a presence of a stopped incarnation is listed no longer than
        :meth:`Bounds.crash_of <presence_adapters.simulation.Bounds.crash_of>` its topic after
        the stop (or after the observer resumed)."""
        bounds = self.bounds
        for replica, at in self._dead:
            for node in running:
                since = max(at, node.resumed)
                if now <= since + bounds.crash:  # the shortest bound: nothing is late yet
                    continue
                for ref in sorted(visible[node.name]):
                    info = self._refs.get(ref)
                    if info is None or info.owner != replica:
                        continue
                    bound = bounds.crash_of(info.topic)
                    if now > since + bound:
                        self._violate(
                            "crashed_presence",
                            node.name,
                            f"{info.key!r} in {info.topic!r} (ref {ref}) of {replica} which "
                            f"stopped at t={at:.3f}s is still listed after {bound:.3f}s",
                            ref,
                        )

    def _check_missing(
        self, now: float, running: Sequence[Observed], visible: Mapping[str, set[str]]
    ) -> None:
        """``missing_presence``: a presence of a running node is listed on every other one
        within :meth:`Bounds.join_of <presence_adapters.simulation.Bounds.join_of>` its topic
        of the latest of its creation and the last disturbance of either node."""
        for owner in running:
            for ident in sorted(owner.model):
                ref = owner.model[ident]
                info = self._refs[ref]
                bound = self.bounds.join_of(info.topic)
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

    def delivered(
        self, node: str, vsn: int, client: ReplayedClient, diff: PresenceDiff, now: float
    ) -> None:
        pass  # the client is not replayed

    def flap_left(
        self,
        topic: str,
        key: str,
        node: str,
        now: float,
        *,
        window: tuple[float, float],
        observers: Mapping[str, tuple[int, ReplayedClient]],
    ) -> None:
        pass

    def flap_back(self, topic: str, key: str, node: str, now: float) -> None:
        pass

    def check(
        self,
        now: float,
        running: Sequence[Observed],
        disturbed: Disturbances | None = None,
    ) -> None:
        pass

    def final_check(
        self,
        now: float,
        running: Sequence[Observed],
        disturbed: Disturbances | None = None,
    ) -> None:
        pass
