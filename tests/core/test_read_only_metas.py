"""Metas handed out by queries and events cannot change replicated state.

Once, ``Entry.meta`` was the stored dict itself, so ``tracker.presences(topic)["k"]["metas"][0]["x"]
= 1``, or a mutation of a meta in a ``PresenceDiff``, silently changed what the replica stored and
later sent. Metas handed out are frozen ``dict`` / ``list`` subclasses: every mutating method
raises :class:`~presence_core._meta.ReadOnlyError` (a ``LocalProtocolError`` that is also a
``TypeError``), and everything that only reads them (``==``, ``repr``, ``json``, ``copy``,
``pickle``) works as on plain ones.

How a meta is stored: :func:`~presence_core._meta.copy_meta` makes a plain top-level ``dict``
(which the garbage collector leaves alone) whose nested objects and arrays are frozen; the entry
keeps it as its fourth item, and :attr:`Entry.meta` hands out a new frozen shallow copy of it on
every read (nested values shared, and frozen).
"""

from __future__ import annotations

import copy
import json
import json.encoder
import pickle
import sys
from collections.abc import Callable
from typing import Any

import pytest

from helpers import drain, make_tracker, observe
from presence_core import (
    Delta,
    Entry,
    LocalProtocolError,
    PresenceDiff,
    ReplicaRef,
    ReplicaState,
    Snapshot,
    Tracker,
    TransferAck,
    decode_message,
    encode_message,
    group,
    presence_diff_payload,
    sync_diff,
    sync_state,
)
from presence_core._meta import FrozenDict, FrozenList, ReadOnlyError, copy_meta, thaw_meta

A1 = ReplicaRef("a", 1)
B1 = ReplicaRef("b", 1)
NESTED: dict[str, Any] = {"n": 1, "tags": ["x", {"deep": [1, 2]}], "obj": {"k": "v"}}


def _tracker() -> Tracker:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta=NESTED, now=1.0)
    drain(tracker)
    return tracker


def _stored(tracker: Tracker) -> Any:
    (meta,) = tracker.presences("lobby")["u1"]["metas"]
    return meta


def _what_the_next_delta_carries(tracker: Tracker) -> bytes:
    """The bytes of the pending delta, as a heartbeat would carry them."""
    delta = tracker.state.pending_delta
    assert isinstance(delta, Delta)
    return encode_message(TransferAck(request_id=1, sender=A1, payload=delta))


MUTATIONS: list[tuple[str, Callable[[Any], object]]] = [
    ("setitem", lambda m: m.__setitem__("x", 1)),
    ("setitem existing", lambda m: m.__setitem__("n", 2)),
    ("delitem", lambda m: m.__delitem__("n")),
    ("update", lambda m: m.update(x=1)),
    ("update empty", lambda m: m.update()),
    ("pop", lambda m: m.pop("n")),
    ("pop default", lambda m: m.pop("absent", None)),
    ("popitem", lambda m: m.popitem()),
    ("clear", lambda m: m.clear()),
    ("setdefault", lambda m: m.setdefault("x", 1)),
    ("setdefault existing", lambda m: m.setdefault("n", 1)),
    ("ior", lambda m: m.__ior__({"x": 1})),
    ("nested list append", lambda m: m["tags"].append(3)),
    ("nested list setitem", lambda m: m["tags"].__setitem__(0, "y")),
    ("nested list slice assign", lambda m: m["tags"].__setitem__(slice(0, 1), ["y"])),
    ("nested list delitem", lambda m: m["tags"].__delitem__(0)),
    ("nested list extend", lambda m: m["tags"].extend([3])),
    ("nested list iadd", lambda m: m["tags"].__iadd__([3])),
    ("nested list imul", lambda m: m["tags"].__imul__(2)),
    ("nested list insert", lambda m: m["tags"].insert(0, 3)),
    ("nested list pop", lambda m: m["tags"].pop()),
    ("nested list remove", lambda m: m["tags"].remove("x")),
    ("nested list clear", lambda m: m["tags"].clear()),
    ("nested list sort", lambda m: m["tags"][1]["deep"].sort()),
    ("nested list reverse", lambda m: m["tags"].reverse()),
    ("dict in a list", lambda m: m["tags"][1].__setitem__("deep", None)),
    ("list in a dict in a list", lambda m: m["tags"][1]["deep"].append(3)),
    ("nested dict", lambda m: m["obj"].__setitem__("k", "w")),
]


@pytest.mark.parametrize(
    "mutate", [case[1] for case in MUTATIONS], ids=[case[0] for case in MUTATIONS]
)
def test_a_meta_from_a_query_cannot_be_changed(mutate: Callable[[Any], object]) -> None:
    tracker = _tracker()
    before = observe(tracker)
    sent = _what_the_next_delta_carries(tracker)
    with pytest.raises(ReadOnlyError, match="read-only") as info:
        mutate(_stored(tracker))
    assert isinstance(info.value, LocalProtocolError)
    assert isinstance(info.value, TypeError)
    assert observe(tracker) == before
    assert thaw_meta(_stored(tracker)) == {**NESTED, "phx_ref": _stored(tracker)["phx_ref"]}
    assert _what_the_next_delta_carries(tracker) == sent


def test_the_error_says_what_was_refused() -> None:
    meta = _stored(_tracker())
    with pytest.raises(ReadOnlyError) as info:
        meta["x"] = 1
    assert str(info.value) == (
        "cannot set 'x': this object belongs to a stored meta, which is read-only "
        "(copy.deepcopy(meta) gives a mutable copy)"
    )
    with pytest.raises(ReadOnlyError, match="cannot append to it: this array"):
        meta["tags"].append(1)


def test_metas_of_events_are_the_stored_read_only_ones() -> None:
    tracker = make_tracker("a")
    tracker.track(conn="c1", topic="lobby", key="u1", meta={"n": 1}, now=1.0)
    (joined,) = drain(tracker)
    assert isinstance(joined, PresenceDiff)
    with pytest.raises(ReadOnlyError):
        joined.joins[0].meta["n"] = 2  # type: ignore[index]
    tracker.update(conn="c1", topic="lobby", key="u1", meta={"n": 3}, now=1.0)
    (updated,) = drain(tracker)
    assert isinstance(updated, PresenceDiff)
    with pytest.raises(ReadOnlyError):
        updated.leaves[0].meta.clear()  # type: ignore[attr-defined]
    with pytest.raises(ReadOnlyError):
        presence_diff_payload(updated)["joins"]["u1"]["metas"][0]["n"] = 4  # type: ignore[index]
    assert _stored_n(tracker) == 3


def test_every_query_hands_out_frozen_metas() -> None:
    tracker = _tracker()
    tracker.track(conn="c2", topic="lobby", key="u2", meta={"flat": 1}, now=1.0)
    (joined,) = drain(tracker)
    assert isinstance(joined, PresenceDiff)
    state = tracker.state
    handed_out = [
        *(e.meta for e in joined.joins),
        *(meta for value in tracker.presences("lobby").values() for meta in value["metas"]),
        *tracker.get_by_key("lobby", "u1")["metas"],
        *(meta for value in group(state.entries()).values() for meta in value["metas"]),
        *(e.meta for e in state.get_by_topic("lobby")),
        *(e.meta for e in state.get_by_key("lobby", "u2")),
        *(e.meta for e in state.get_by_conn("c1")),
        *(e.meta for e in state.visible_entries()),
        *(e.meta for e in state.pending_delta.entries()),
    ]
    entry = state.get("c1", "lobby", "u1")
    assert entry is not None
    handed_out.append(entry.meta)
    assert len(handed_out) == 15
    for meta in handed_out:
        _assert_frozen_all_the_way(meta)
        with pytest.raises(ReadOnlyError):
            meta["x"] = 1  # type: ignore[index]
    assert all("x" not in e.meta for e in state.entries())


def _stored_n(tracker: Tracker) -> object:
    return tracker.get_by_key("lobby", "u1")["metas"][0]["n"]


def test_what_is_around_the_metas_is_the_caller_s_own() -> None:
    tracker = _tracker()
    listed = tracker.presences("lobby")
    listed["u1"]["metas"].append({"mine": True})
    listed["u2"] = {"metas": []}
    del listed["u1"]
    assert list(tracker.presences("lobby")) == ["u1"]
    assert len(tracker.presences("lobby")["u1"]["metas"]) == 1


def test_every_stored_meta_is_frozen_however_it_arrived() -> None:
    # track, update, update by callback, ReplicaState.join and update, a merged delta, a decoded
    # transfer and an Entry built by hand.
    tracker = _tracker()
    tracker.track(conn="c2", topic="lobby", key="u2", meta={"flat": 1}, now=1.0)
    tracker.update(conn="c2", topic="lobby", key="u2", meta=NESTED, now=1.0)
    tracker.update(conn="c1", topic="lobby", key="u1", meta=lambda m: {**m, "v": 2}, now=1.0)
    state = ReplicaState(B1)
    state.join("c", "t", "k", NESTED)
    state.update("c", "t", "k", {"flat": [1]})
    state.join("c2", "t", "k", {"flat": "yes"})
    peer = ReplicaState(A1)
    peer.replica_up(B1)
    peer.merge(state.take_delta())
    decoded = decode_message(
        encode_message(TransferAck(request_id=1, sender=B1, payload=state.extract(A1, {B1: 0})))
    )
    assert isinstance(decoded, TransferAck)
    fresh = ReplicaState(A1)
    fresh.replica_up(B1)
    assert isinstance(decoded.payload, Snapshot)
    fresh.merge(decoded.payload)
    by_hand = Entry("t", "k", "c", NESTED, B1, 1)
    entries = [
        *tracker.state.entries(),
        *state.entries(),
        *peer.entries(),
        *decoded.payload.entries(),
        *fresh.entries(),
        by_hand,
    ]
    assert len(entries) == 11
    for entry in entries:
        _assert_frozen_all_the_way(entry.meta)  # what is handed out
        _assert_stored(entry[3])  # what is stored
        assert entry.meta == entry[3]


def _assert_stored(meta: object) -> None:
    """A meta as stored: a plain top-level dict, every object and array nested in it frozen."""
    assert type(meta) is dict
    for item in meta.values():
        _assert_frozen_all_the_way(item)


def _assert_frozen_all_the_way(value: object) -> None:
    if isinstance(value, dict):
        assert type(value) is FrozenDict
        for item in value.values():
            _assert_frozen_all_the_way(item)
    elif isinstance(value, list):
        assert type(value) is FrozenList
        for item in value:
            _assert_frozen_all_the_way(item)


def test_a_decoded_flat_meta_is_frozen_too() -> None:
    state = ReplicaState(B1)
    state.join("c", "t", "k", {"status": "online"})
    data = encode_message(TransferAck(request_id=1, sender=B1, payload=state.extract(A1, {B1: 0})))
    decoded = decode_message(data)
    assert isinstance(decoded, TransferAck)
    (entry,) = decoded.payload.entries()
    assert type(entry.meta) is FrozenDict
    assert entry.meta == {"status": "online"}
    assert type(entry[3]) is dict  # stored as parsed
    handed_out: Any = entry.meta
    with pytest.raises(ReadOnlyError):
        handed_out["status"] = "away"
    assert entry.meta == {"status": "online"}


def test_the_update_callback_gets_a_mutable_deep_copy() -> None:
    tracker = _tracker()
    seen: list[Any] = []

    def edit(meta: Any) -> Any:
        seen.append(meta)
        assert type(meta) is dict
        meta["tags"][1]["deep"].append(3)
        meta["obj"]["k"] = "w"
        del meta["n"]
        return meta

    old = _stored(tracker)
    tracker.update(conn="c1", topic="lobby", key="u1", meta=edit, now=1.0)
    new = _stored(tracker)
    assert new["tags"] == ["x", {"deep": [1, 2, 3]}]
    assert new["obj"] == {"k": "w"}
    assert "n" not in new
    assert old == {**NESTED, "phx_ref": old["phx_ref"]}  # the old entry did not change
    _assert_frozen_all_the_way(new)
    seen[0]["later"] = 1  # the caller's copy stays theirs; the stored one does not follow
    assert "later" not in _stored(tracker)


def test_a_copy_of_a_stored_meta_can_be_edited_and_tracked_again() -> None:
    tracker = _tracker()
    mine = copy.deepcopy(_stored(tracker))
    mine["tags"].append("new")
    mine["obj"]["k"] = "w"
    tracker.update(conn="c1", topic="lobby", key="u1", meta=mine, now=1.0)
    assert _stored(tracker)["tags"] == ["x", {"deep": [1, 2]}, "new"]
    shallow = dict(_stored(tracker))
    shallow["flag"] = True
    tracker.update(conn="c1", topic="lobby", key="u1", meta=shallow, now=1.0)
    assert _stored(tracker)["flag"] is True


# ----------------------------------------------------------------------------- a dict, read-only


def _handed_out(meta: dict[str, Any]) -> Any:
    """``meta`` as a query hands it out: an entry's frozen meta."""
    frozen = Entry("t", "k", "c", meta, A1, 1).meta
    assert type(frozen) is FrozenDict
    return frozen


def test_frozen_metas_read_like_plain_ones() -> None:
    meta: Any = _handed_out(NESTED)
    assert meta == NESTED
    assert NESTED == meta  # noqa: SIM300 (the plain dict's own __eq__)
    assert meta["tags"] == ["x", {"deep": [1, 2]}]
    assert repr(meta) == repr(NESTED)
    assert str(meta["tags"]) == "['x', {'deep': [1, 2]}]"
    assert meta != {**NESTED, "n": 2}
    assert list(meta) == list(NESTED)
    assert meta.get("n") == 1
    assert "obj" in meta
    assert isinstance(meta, dict)
    assert isinstance(meta["tags"], list)
    with pytest.raises(TypeError):
        hash(meta)  # unhashable, like the dict it equals


def test_json_writes_frozen_metas_like_plain_ones() -> None:
    meta: Any = _handed_out(NESTED)
    c_encoder = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    assert c_encoder is not None  # the C encoder, which takes subclasses
    every_options: list[dict[str, Any]] = [
        {},
        {"sort_keys": True, "separators": (",", ":")},
        {"indent": 2},
    ]
    for options in every_options:
        assert json.dumps(meta, **options) == json.dumps(NESTED, **options)
    assert json.loads(json.dumps(meta)) == NESTED


def test_operators_and_copies_give_plain_containers() -> None:
    meta: Any = _handed_out(NESTED)
    tags = meta["tags"]
    for plain in (meta.copy(), copy.copy(meta), dict(meta), meta | {"x": 1}):
        assert type(plain) is dict
        plain["x"] = 2  # mutable
        assert type(plain["tags"]) is FrozenList  # shallow: nested values are still the stored ones
    added = tags + [1]  # noqa: RUF005 (list.__add__ itself is what is tested)
    for plain_list in (tags.copy(), copy.copy(tags), tags[:], added, tags * 2, list(tags)):
        assert type(plain_list) is list
    deep = copy.deepcopy(meta)
    assert deep == NESTED
    assert type(deep) is dict
    assert type(deep["tags"]) is list
    assert type(deep["tags"][1]) is dict
    assert type(deep["tags"][1]["deep"]) is list
    deep["tags"][1]["deep"].append(3)
    assert meta["tags"][1]["deep"] == [1, 2]
    assert thaw_meta(meta) == deep | {"tags": ["x", {"deep": [1, 2]}]}
    assert type(copy.deepcopy(tags)) is list


def test_deepcopy_keeps_a_shared_meta_shared() -> None:
    meta: Any = _handed_out(NESTED)
    pair = copy.deepcopy([meta, meta])
    assert pair[0] is pair[1]
    assert type(pair[0]) is dict


def test_pickle_round_trips_stay_frozen() -> None:
    tracker = _tracker()
    meta = _stored(tracker)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(meta, protocol=protocol))
        assert back == meta
        _assert_frozen_all_the_way(back)
    (entry,) = tracker.state.entries()
    back_entry = pickle.loads(pickle.dumps(entry))
    assert back_entry == entry
    _assert_frozen_all_the_way(back_entry.meta)
    diff = PresenceDiff(topic="lobby", joins=(entry,))
    assert pickle.loads(pickle.dumps(diff)) == diff
    copied_entry = copy.deepcopy(entry)  # rebuilt by Entry's own constructor: frozen again
    assert copied_entry == entry
    _assert_frozen_all_the_way(copied_entry.meta)


def test_a_frozen_meta_costs_the_memory_of_a_plain_one() -> None:
    for value in (
        {},
        {"status": "online", "device": "web", "phx_ref": "F1"},
        dict.fromkeys("abcdefghij", 1),
    ):
        assert sys.getsizeof(FrozenDict(value)) == sys.getsizeof(dict(value))
    assert sys.getsizeof(FrozenList([1, 2, 3])) == sys.getsizeof([1, 2, 3])
    assert not hasattr(FrozenDict(), "__dict__")
    assert not hasattr(FrozenList(), "__dict__")


def test_a_copy_meta_with_refs_sets_them_over_the_caller_s() -> None:
    mine = {"phx_ref": "mine", "a": 1}
    meta = copy_meta(mine, phx_ref="R1", phx_ref_prev="R0")
    assert meta == {"phx_ref": "R1", "a": 1, "phx_ref_prev": "R0"}
    assert list(meta) == ["phx_ref", "a", "phx_ref_prev"]  # the key keeps its place, as before
    assert mine == {"phx_ref": "mine", "a": 1}  # the caller's dict is left alone
    _assert_stored(meta)
    assert copy_meta({"a": [1]}, phx_ref="R1") == {"a": [1], "phx_ref": "R1"}
    _assert_stored(copy_meta({"a": [1]}, phx_ref="R1"))
    # phx_ref_prev only comes with a phx_ref.
    assert copy_meta({"a": 1}, phx_ref_prev="R0") == {"a": 1}
    assert copy_meta({"a": [1]}, phx_ref="R1", phx_ref_prev="R0") == {
        "a": [1],
        "phx_ref": "R1",
        "phx_ref_prev": "R0",
    }


@pytest.mark.parametrize(
    "meta",
    [{}, {"n": 1, "s": "x", "f": 1.5, "b": True, "z": None}, NESTED, {"deep": [[[{"a": []}]]]}],
    ids=["empty", "flat", "nested", "deep"],
)
def test_copy_meta_stores_a_plain_dict_with_frozen_nested_values(meta: dict[str, Any]) -> None:
    stored = copy_meta(meta)
    _assert_stored(stored)
    assert stored == meta
    assert stored is not meta  # a private copy, flat or not
    # Of a frozen meta too (one handed out, tracked again): the top is plain again.
    again = copy_meta(FrozenDict(stored))
    _assert_stored(again)
    assert again == meta
    assert again is not stored


def test_copy_meta_does_not_follow_the_caller_s_dict() -> None:
    mine: dict[str, Any] = {"n": 1, "tags": ["x"], "obj": {"k": "v"}}
    stored = copy_meta(mine)
    mine["n"] = 2
    mine["tags"].append("y")
    mine["obj"]["k"] = "w"
    mine["new"] = True
    assert stored == {"n": 1, "tags": ["x"], "obj": {"k": "v"}}


# ----------------------------------------------------------------------------- Entry.meta


def test_entry_meta_is_a_new_frozen_copy_on_each_read() -> None:
    entry = Entry("t", "k", "c", NESTED, A1, 1)
    stored = entry[3]
    _assert_stored(stored)
    first, second = entry.meta, entry.meta
    assert type(first) is FrozenDict
    assert type(second) is FrozenDict
    assert first is not second  # a copy on each read...
    assert first is not stored
    assert first == second == stored == NESTED  # ...of the same meta
    for key in NESTED:
        assert first[key] is stored[key]  # shallow: nested values are the stored (frozen) ones
    _assert_frozen_all_the_way(first)


@pytest.mark.parametrize(
    "mutate", [case[1] for case in MUTATIONS], ids=[case[0] for case in MUTATIONS]
)
def test_entry_meta_cannot_be_changed(mutate: Callable[[Any], object]) -> None:
    entry = Entry("t", "k", "c", NESTED, A1, 1)
    stored = entry[3]
    with pytest.raises(ReadOnlyError, match="read-only"):
        mutate(entry.meta)
    assert entry[3] is stored
    assert stored == NESTED
    assert entry.meta == NESTED


def test_forcing_a_change_into_a_handed_out_meta_leaves_the_stored_one_alone() -> None:
    """Were the freeze of the top level bypassed, only the caller's copy would change."""
    entry = Entry("t", "k", "c", NESTED, A1, 1)
    meta: Any = entry.meta
    dict.__setitem__(meta, "x", 1)
    dict.__delitem__(meta, "n")
    dict.clear(meta)
    assert meta == {}
    assert entry[3] == NESTED
    assert entry.meta == NESTED
    # And in a tracker: what it lists, stores and will send are unchanged.
    tracker = _tracker()
    before = observe(tracker)
    sent = _what_the_next_delta_carries(tracker)
    for meta in (_stored(tracker), *(e.meta for e in tracker.state.entries())):
        dict.__setitem__(meta, "x", 1)
        dict.__delitem__(meta, "n")
    assert observe(tracker) == before
    assert _what_the_next_delta_carries(tracker) == sent
    assert "x" not in _stored(tracker)
    assert _stored(tracker)["n"] == 1


def test_entries_with_equal_metas_are_equal_and_hash_alike() -> None:
    one = Entry("t", "k", "c", NESTED, A1, 1)
    other = Entry("t", "k", "c", copy.deepcopy(NESTED), A1, 1)
    assert one == other
    assert one.meta == other.meta
    assert one != Entry("t", "k", "c", {**NESTED, "n": 2}, A1, 1)


# ----------------------------------------------------------------------------- the client side


def test_client_states_hold_plain_metas_even_from_frozen_pushes() -> None:
    # The client state is not replicated: its metas are plain and the caller's to change.
    tracker = _tracker()
    (entry,) = tracker.state.entries()
    payload = presence_diff_payload(PresenceDiff(topic="lobby", joins=(entry,)))
    result = sync_diff({}, payload)
    meta = result.state["u1"]["metas"][0]
    assert type(meta) is dict
    assert type(meta["tags"]) is list
    meta["x"] = 1
    meta["tags"].append(1)
    assert "x" not in _stored(tracker)
    state = sync_state({}, group(tracker.state.entries())).state
    assert type(state["u1"]["metas"][0]) is dict
