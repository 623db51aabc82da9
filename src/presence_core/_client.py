"""Client-side presence synchronisation: what phoenix.js's ``Presence`` does, in Python (SPEC §6).

A client (a browser, a bot, a test) keeps its own copy of a topic's presences,
``{key: {"metas": [meta, ...], ...}}``, from two kinds of server push: ``presence_state`` (the
whole state, right after joining) and ``presence_diff`` (``{"joins": ..., "leaves": ...}``).

* :func:`sync_state` reconciles a client state with a new full state (after a reconnect the old
  state is kept until the new one arrives, then reconciled);
* :func:`sync_diff` applies one diff: joins first, then leaves, metas matched by ``phx_ref``;
* :func:`list_presences` lists a state in phoenix.js's order, through an optional chooser;
* :class:`ClientView` is phoenix.js's ``Presence`` instance: it buffers diffs that arrive before
  the state of the current join (the pending-diff / join-ref mechanism) and applies them after it;
* :func:`classify_diff` tells real joins and leaves from meta updates (a leave and a join of the
  same key whose new meta's ``phx_ref_prev`` names the old meta's ``phx_ref``), for applications
  that want "updated" instead of a leave and a join.

phoenix.js calls ``onJoin`` / ``onLeave`` callbacks; the core never calls user code, so every
function here returns the same information as :class:`Joined` and :class:`Left` records in a
:class:`SyncResult`, in the order phoenix.js would have called the callbacks.

Unlike phoenix.js, nothing the caller passes in is modified: :func:`sync_state` and
:func:`sync_diff` work on copies (a :class:`ClientView` owns its state and updates it in place).

The metas here are plain, mutable ``dict`` objects, unlike the read-only metas of the replicated
state: a client state is not replicated (changing it changes what this client shows, never what a
replica stores or sends), each sync returns a fresh copy that is the caller's own, and copying
pushes into frozen objects would cost a conversion per sync for nothing. Frozen metas passed in
(a ``presence_diff_payload`` handed straight to :func:`sync_diff`) come out as plain copies.

A push that does not have the expected shape raises :class:`~presence_core.RemoteProtocolError`
(the server sent it); an argument no call could take (a chooser that is not callable, a join ref
of the wrong type) raises :class:`~presence_core.InvalidArgument`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from ._errors import InvalidArgument, LimitExceeded, RemoteProtocolError, shown

__all__ = [
    "ClassifiedDiff",
    "ClientState",
    "ClientView",
    "Joined",
    "Left",
    "MetaUpdate",
    "SyncResult",
    "classify_diff",
    "list_presences",
    "sync_diff",
    "sync_state",
]

T = TypeVar("T")

ClientState = dict[str, dict[str, Any]]
"""A client's presences of one topic: ``{key: {"metas": [meta, ...], ...}}``."""


@attrs.frozen(kw_only=True)
class Joined:
    """Metas joined one key (what phoenix.js passes to ``onJoin``).

    Attributes:
        key: the presence key.
        current: the key's presence *before* the join, or ``None`` if the key is new.
        joined: the presence as the diff carried it: only the joined metas.
    """

    key: str
    current: dict[str, Any] | None
    joined: dict[str, Any]


@attrs.frozen(kw_only=True)
class Left:
    """Metas left one key (what phoenix.js passes to ``onLeave``).

    Attributes:
        key: the presence key.
        current: the key's presence *after* the leave (``{"metas": []}`` when none remain, in
            which case the key is gone from the state).
        left: the presence as the diff carried it: only the metas that left.
    """

    key: str
    current: dict[str, Any]
    left: dict[str, Any]


@attrs.frozen(kw_only=True)
class SyncResult:
    """The outcome of a sync: the new state and who joined and left, in callback order.

    Attributes:
        state: the new client state.
        joins: one record per key that gained metas.
        leaves: one record per key that lost metas.
    """

    state: ClientState
    joins: tuple[Joined, ...] = ()
    leaves: tuple[Left, ...] = ()


def _presences(value: object, what: str) -> dict[str, dict[str, Any]]:
    """Check that ``value`` has the ``{key: {"metas": [...]}}`` shape and deep-copy it."""
    if not isinstance(value, Mapping):
        raise RemoteProtocolError(f"{what} must be an object, not {type(value).__name__}")
    result: dict[str, dict[str, Any]] = {}
    for key, presence in value.items():
        if type(key) is not str:
            raise RemoteProtocolError(f"{what} keys must be strings, not {key!r}")
        if not isinstance(presence, Mapping) or not isinstance(presence.get("metas"), list):
            raise RemoteProtocolError(f"{what}[{key!r}] must be an object with a 'metas' list")
        for meta in presence["metas"]:
            if not isinstance(meta, Mapping):
                raise RemoteProtocolError(f"{what}[{key!r}] metas must be objects")
        try:
            result[key] = copy.deepcopy(dict(presence))
        except (TypeError, ValueError, copy.Error, RecursionError) as exc:  # not JSON's values
            raise RemoteProtocolError(
                f"{what}[{key!r}] holds a value that cannot be copied: {exc}"
            ) from None
    return result


def _diff(diff: object) -> tuple[ClientState, ClientState]:
    if not isinstance(diff, Mapping):
        raise RemoteProtocolError(f"a diff must be an object, not {type(diff).__name__}")
    return (
        _presences(diff.get("joins", {}), "diff['joins']"),
        _presences(diff.get("leaves", {}), "diff['leaves']"),
    )


def _matchable(ref: object) -> object:
    """``ref`` as a key to match refs by: phoenix.js compares refs with ``===``, so a ref that is
    an object or an array (never one a server sends) matches no other; here it gets a key of its
    own instead of failing as unhashable. A number matches the same number, never its string nor
    a boolean (``True == 1`` in Python, but ``true !== 1`` in JavaScript)."""
    if ref is None or type(ref) is str:
        return ref
    if type(ref) is bool:
        return (bool, ref)
    try:
        hash(ref)
    except TypeError:
        return object()
    return ref


def _ref(meta: Mapping[str, Any]) -> object:
    # Metas without a phx_ref all match each other (phoenix.js compares undefined to undefined).
    return _matchable(meta.get("phx_ref"))


def _apply_diff(
    state: ClientState, joins: ClientState, leaves: ClientState
) -> tuple[tuple[Joined, ...], tuple[Left, ...]]:
    """Apply a checked, privately copied diff to ``state`` in place (phoenix.js ``syncDiff``)."""
    joined: list[Joined] = []
    for key, presence in joins.items():
        current = state.get(key)
        new = copy.deepcopy(presence)
        if current is not None:
            refs = {_ref(meta) for meta in new["metas"]}
            survivors = [meta for meta in current["metas"] if _ref(meta) not in refs]
            new["metas"] = survivors + new["metas"]
        state[key] = new
        joined.append(Joined(key=key, current=current, joined=presence))
    left: list[Left] = []
    for key, presence in leaves.items():
        current = state.get(key)
        if current is None:
            continue  # phoenix.js: an unknown key leaves silently, with no callback
        refs = {_ref(meta) for meta in presence["metas"]}
        current["metas"] = [meta for meta in current["metas"] if _ref(meta) not in refs]
        left.append(Left(key=key, current=copy.deepcopy(current), left=presence))
        if not current["metas"]:
            del state[key]
    return tuple(joined), tuple(left)


def _state_diff(state: ClientState, new_state: ClientState) -> tuple[ClientState, ClientState]:
    """The diff that turns ``state`` into ``new_state`` (phoenix.js ``syncState``, steps 2-3)."""
    joins: ClientState = {}
    leaves: ClientState = {}
    for key, presence in state.items():
        if key not in new_state:
            leaves[key] = {**presence, "metas": list(presence["metas"])}
    for key, new in new_state.items():
        current = state.get(key)
        if current is None:
            joins[key] = new
            continue
        new_refs = {_ref(meta) for meta in new["metas"]}
        current_refs = {_ref(meta) for meta in current["metas"]}
        joined = [meta for meta in new["metas"] if _ref(meta) not in current_refs]
        gone = [meta for meta in current["metas"] if _ref(meta) not in new_refs]
        if joined:
            joins[key] = {**new, "metas": joined}
        if gone:
            leaves[key] = {**current, "metas": gone}
    return joins, leaves


def sync_state(current: Mapping[str, Any], new_state: Mapping[str, Any]) -> SyncResult:
    """Reconcile a client state with a new full state (phoenix.js ``Presence.syncState``).

    Keys missing from ``new_state`` leave whole; new keys join whole; for a key in both, metas
    are compared by ``phx_ref``: new refs join, vanished refs leave. Neither argument is modified.

    Raises:
        RemoteProtocolError: either state is not ``{key: {"metas": [object, ...]}}``.
    """
    state = _presences(current, "state")
    joins, leaves = _state_diff(state, _presences(new_state, "new_state"))
    joined, left = _apply_diff(state, joins, leaves)
    return SyncResult(state=state, joins=joined, leaves=left)


def sync_diff(current: Mapping[str, Any], diff: Mapping[str, Any]) -> SyncResult:
    """Apply one ``presence_diff`` payload to a client state (phoenix.js ``Presence.syncDiff``).

    Joins first: a joined key takes the diff's presence (its extra fields too), keeping its old
    metas whose ``phx_ref`` is not among the joined ones in front. Then leaves: metas are removed
    by ``phx_ref`` and a key left with no metas is deleted; a leave for an unknown key is ignored.
    ``current`` is not modified.

    Raises:
        RemoteProtocolError: the state or the diff does not have the expected shape.
    """
    state = _presences(current, "state")
    joins, leaves = _diff(diff)
    joined, left = _apply_diff(state, joins, leaves)
    return SyncResult(state=state, joins=joined, leaves=left)


def _js_order(keys: Iterable[str]) -> list[str]:
    """Keys in JavaScript's own-property order: array-index keys ascending, then the others in
    insertion order (SPEC §6.1), so a list matches phoenix.js's item for item."""
    indexes: list[tuple[int, str]] = []
    others: list[str] = []
    for key in keys:
        if type(key) is not str:
            raise InvalidArgument(f"presences keys must be str, not {type(key).__name__}")
        canonical = key.isascii() and key.isdigit() and (key == "0" or key[0] != "0")
        if canonical and int(key) < 2**32 - 1:
            indexes.append((int(key), key))
        else:
            others.append(key)
    return [key for _, key in sorted(indexes)] + others


def list_presences(
    presences: Mapping[str, Any],
    chooser: Callable[[str, dict[str, Any]], T] | None = None,
) -> list[Any]:
    """List a client state (phoenix.js ``Presence.list``): ``chooser(key, presence)`` for each key,
    or the presences themselves without a chooser, in phoenix.js's key order.

    Raises:
        InvalidArgument: ``presences`` is not a mapping with ``str`` keys, or ``chooser`` is
            neither callable nor ``None``.
    """
    if not isinstance(presences, Mapping):
        raise InvalidArgument(f"presences must be a mapping, not {type(presences).__name__}")
    if chooser is not None and not callable(chooser):
        raise InvalidArgument(f"chooser must be callable or None, not {type(chooser).__name__}")
    if chooser is None:
        return [presences[key] for key in _js_order(presences)]
    return [chooser(key, presences[key]) for key in _js_order(presences)]


class ClientView:
    """One client's view of one topic: phoenix.js's ``Presence`` instance (SPEC §6.3).

    Feed it the channel's pushes with the *current* join ref of the channel (it changes on every
    rejoin). Diffs that arrive while the view waits for the state of the current join are kept
    and applied, in arrival order, right after that state: before the first state, and after a
    rejoin until its new state arrives (the old presences are kept meanwhile and reconciled).

    Attributes:
        state: the presences, plain dicts the view updates in place (read-only for the caller).
        join_ref: the join ref of the last state applied (``None`` before the first).
        max_pending: the most diffs kept while waiting for a state.
    """

    def __init__(self, *, max_pending: int = 10_000) -> None:
        if type(max_pending) is not int or max_pending < 1:
            raise InvalidArgument(f"max_pending must be an int >= 1, not {shown(max_pending)}")
        self.state: ClientState = {}
        self.join_ref: str | int | None = None
        self.max_pending = max_pending
        self._pending: list[tuple[ClientState, ClientState]] = []

    def __repr__(self) -> str:
        return f"<ClientView keys={len(self.state)} pending={len(self._pending)}>"

    @property
    def pending(self) -> int:
        """How many diffs wait for the state of the current join."""
        return len(self._pending)

    def in_pending_sync_state(self, channel_join_ref: str | int | None) -> bool:
        """True while diffs must wait: no state yet, or the last state was for another join."""
        return self.join_ref is None or self.join_ref != channel_join_ref

    def on_state(self, new_state: Mapping[str, Any], *, join_ref: str | int) -> SyncResult:
        """Apply a ``presence_state`` push, then every diff that waited for it.

        Returns:
            The state after all of it, with the joins and leaves of the reconciliation followed by
            those of the waiting diffs (phoenix.js's callbacks, then its one ``onSync``).

        Raises:
            RemoteProtocolError: the push does not have the expected shape (nothing changes).
            InvalidArgument: ``join_ref`` is neither a ``str`` nor an ``int`` (nothing changes).
        """
        if type(join_ref) is not str and type(join_ref) is not int:
            raise InvalidArgument(
                f"join_ref must be a str or an int, not {type(join_ref).__name__}"
            )
        state = copy.deepcopy(self.state)
        joins, leaves = _state_diff(state, _presences(new_state, "new_state"))
        joined, left = _apply_diff(state, joins, leaves)
        all_joined, all_left = list(joined), list(left)
        for pending_joins, pending_leaves in self._pending:
            joined, left = _apply_diff(state, pending_joins, pending_leaves)
            all_joined += joined
            all_left += left
        self.state = state
        self.join_ref = join_ref
        self._pending = []
        return SyncResult(state=state, joins=tuple(all_joined), leaves=tuple(all_left))

    def on_diff(self, diff: Mapping[str, Any], *, join_ref: str | int | None) -> SyncResult | None:
        """Apply a ``presence_diff`` push, or keep it if the view waits for a state.

        Args:
            diff: the payload, ``{"joins": ..., "leaves": ...}``.
            join_ref: the channel's current join ref.

        Returns:
            The sync result, or ``None`` when the diff was kept for later (phoenix.js then calls
            no callback and no ``onSync``).

        Raises:
            RemoteProtocolError: the diff does not have the expected shape (nothing changes).
            LimitExceeded: ``max_pending`` diffs already wait (phoenix.js keeps them without
                bound; a client that never receives its state should rejoin).
            InvalidArgument: ``join_ref`` is neither a ``str``, an ``int`` nor ``None``.
        """
        if join_ref is not None and type(join_ref) is not str and type(join_ref) is not int:
            raise InvalidArgument(
                f"join_ref must be a str, an int or None, not {type(join_ref).__name__}"
            )
        joins, leaves = _diff(diff)
        if self.in_pending_sync_state(join_ref):
            if len(self._pending) >= self.max_pending:
                raise LimitExceeded(
                    f"{self.max_pending} diffs already wait for a presence_state; rejoin"
                )
            self._pending.append((joins, leaves))
            return None
        joined, left = _apply_diff(self.state, joins, leaves)
        return SyncResult(state=self.state, joins=joined, leaves=left)

    def list(self, chooser: Callable[[str, dict[str, Any]], T] | None = None) -> list[Any]:
        """:func:`list_presences` over :attr:`state`."""
        return list_presences(self.state, chooser)


@attrs.frozen(kw_only=True)
class MetaUpdate:
    """One meta replaced by an update.

    Attributes:
        key: the presence key.
        old: the meta that left.
        new: the meta that joined; its ``phx_ref_prev`` is ``old``'s ``phx_ref``.
    """

    key: str
    old: dict[str, Any]
    new: dict[str, Any]


@attrs.frozen(kw_only=True)
class ClassifiedDiff:
    """A diff split into real joins, real leaves and meta updates.

    Attributes:
        joins: ``{key: {"metas": [...]}}`` of metas that appeared (not updates).
        leaves: ``{key: {"metas": [...]}}`` of metas that went away (not replaced by an update).
        updates: metas replaced in place, in the diff's order.
    """

    joins: ClientState
    leaves: ClientState
    updates: tuple[MetaUpdate, ...]

    @property
    def joined_keys(self) -> list[str]:
        """Keys that gained a presence (sorted)."""
        return sorted(self.joins)

    @property
    def left_keys(self) -> list[str]:
        """Keys that lost a presence (sorted)."""
        return sorted(self.leaves)

    @property
    def updated_keys(self) -> list[str]:
        """Keys whose only change is a new meta for an existing presence (sorted)."""
        touched = set(self.joins) | set(self.leaves)
        return sorted({u.key for u in self.updates} - touched)


def classify_diff(diff: Mapping[str, Any]) -> ClassifiedDiff:
    """Split a ``presence_diff`` payload into joins, leaves and meta updates.

    A joined meta whose ``phx_ref_prev`` equals the ``phx_ref`` of a meta leaving the same key in
    the same diff is an update of that meta (what ``update`` produces on every node); every other
    joined or left meta is a real join or leave.

    Raises:
        RemoteProtocolError: the diff does not have the expected shape.
    """
    joins, leaves = _diff(diff)
    updates: list[MetaUpdate] = []
    for key, presence in joins.items():
        left = leaves.get(key)
        if left is None:
            continue
        by_ref = {_ref(meta): meta for meta in left["metas"] if _ref(meta) is not None}
        kept = []
        replaced: set[int] = set()  # id() of the left metas an update replaced
        for meta in presence["metas"]:
            prev = _matchable(meta["phx_ref_prev"]) if "phx_ref_prev" in meta else None
            old = None if prev is None else by_ref.pop(prev, None)
            if old is None:
                kept.append(meta)
            else:
                replaced.add(id(old))
                updates.append(MetaUpdate(key=key, old=old, new=meta))
        presence["metas"] = kept
        left["metas"] = [meta for meta in left["metas"] if id(meta) not in replaced]
    return ClassifiedDiff(
        joins={key: p for key, p in joins.items() if p["metas"]},
        leaves={key: p for key, p in leaves.items() if p["metas"]},
        updates=tuple(updates),
    )
