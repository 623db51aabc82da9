"""Client-side sync: the fourteen cases of phoenix.js's presence_test.js (SPEC §6.4), in Python.

Callbacks become returned :class:`Joined` / :class:`Left` records; the JavaScript-only cases
(null prototypes, ``Object.prototype`` pollution) become "keys named like object internals are
ordinary keys". Then properties: replaying any server diff sequence on a view seeded from any
earlier state ends equal to the server's ``list``.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence_core import (
    ClientView,
    Joined,
    Left,
    LimitExceeded,
    LocalProtocolError,
    MetaUpdate,
    RemoteProtocolError,
    ReplicaRef,
    Tracker,
    TrackerConfig,
    classify_diff,
    list_presences,
    presence_diff_payload,
    sync_diff,
    sync_state,
)
from presence_core import PresenceDiff as _PresenceDiff


def joins() -> dict[str, Any]:
    return {"u1": {"metas": [{"id": 1, "phx_ref": "1.2"}]}}


def leaves() -> dict[str, Any]:
    return {"u2": {"metas": [{"id": 2, "phx_ref": "2"}]}}


def state() -> dict[str, Any]:
    return {
        "u1": {"metas": [{"id": 1, "phx_ref": "1"}]},
        "u2": {"metas": [{"id": 2, "phx_ref": "2"}]},
        "u3": {"metas": [{"id": 3, "phx_ref": "3"}]},
    }


def list_by_first(_key: str, presence: dict[str, Any]) -> Any:
    return presence["metas"][0]


# ----------------------------------------------------------------------------- syncState


def test_1_sync_state_from_empty_leaves_the_input_alone() -> None:
    current: dict[str, Any] = {}
    new_state = {"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}}
    sync_state(current, new_state)
    assert current == {}
    assert sync_state(current, new_state).state == new_state


def test_2_sync_state_reports_new_presences_and_left_presences() -> None:
    current = {"u4": {"metas": [{"id": 4, "phx_ref": "4"}]}}
    result = sync_state(current, state())
    assert result.state == state()
    assert result.joins == tuple(
        Joined(key=key, current=None, joined=presence) for key, presence in state().items()
    )
    assert result.leaves == (
        Left(key="u4", current={"metas": []}, left={"metas": [{"id": 4, "phx_ref": "4"}]}),
    )
    assert current == {"u4": {"metas": [{"id": 4, "phx_ref": "4"}]}}


def test_3_sync_state_reports_only_newly_added_metas() -> None:
    current = {"u3": {"metas": [{"id": 3, "phx_ref": "3"}]}}
    new_state = {"u3": {"metas": [{"id": 3, "phx_ref": "3"}, {"id": 3, "phx_ref": "3.new"}]}}
    result = sync_state(current, copy.deepcopy(new_state))
    assert result.state == new_state
    assert [m["phx_ref"] for m in result.state["u3"]["metas"]] == ["3", "3.new"]
    assert result.joins == (
        Joined(
            key="u3",
            current={"metas": [{"id": 3, "phx_ref": "3"}]},
            joined={"metas": [{"id": 3, "phx_ref": "3.new"}]},
        ),
    )
    assert result.leaves == ()


# ----------------------------------------------------------------------------- syncDiff


def test_4_sync_diff_into_empty_state() -> None:
    diff = {"joins": {"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}}, "leaves": {}}
    assert sync_diff({}, diff).state == diff["joins"]


def test_5_sync_diff_removes_emptied_keys_and_adds_metas() -> None:
    result = sync_diff(state(), {"joins": joins(), "leaves": leaves()})
    assert result.state == {
        "u1": {"metas": [{"id": 1, "phx_ref": "1"}, {"id": 1, "phx_ref": "1.2"}]},
        "u3": {"metas": [{"id": 3, "phx_ref": "3"}]},
    }


def test_6_sync_diff_keeps_a_key_that_still_has_metas() -> None:
    current = {"u1": {"metas": [{"id": 1, "phx_ref": "1"}, {"id": 1, "phx_ref": "1.2"}]}}
    diff = {"joins": {}, "leaves": {"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}}}
    assert sync_diff(current, diff).state == {"u1": {"metas": [{"id": 1, "phx_ref": "1.2"}]}}


# ------------------------------------------------------- keys named like object internals


PROTO_STATE = json.loads(
    '{"__proto__":{"metas":[{"id":1,"phx_ref":"1"}]},'
    '"constructor":{"metas":[{"id":2,"phx_ref":"2"}]},'
    '"hasOwnProperty":{"metas":[{"id":3,"phx_ref":"3"}]}}'
)


def test_7_sync_state_treats_internal_looking_keys_as_keys() -> None:
    result = sync_state({}, PROTO_STATE)
    assert [j.key for j in result.joins] == ["__proto__", "constructor", "hasOwnProperty"]
    assert list_presences(result.state, lambda _k, p: p["metas"][0]["id"]) == [1, 2, 3]
    gone = sync_state(result.state, {})
    assert [left.key for left in gone.leaves] == ["__proto__", "constructor", "hasOwnProperty"]
    assert list_presences(gone.state) == []


def test_8_sync_diff_treats_internal_looking_keys_as_keys() -> None:
    diff = json.loads('{"joins":{"__proto__":{"metas":[{"id":1,"phx_ref":"1"}]}},"leaves":{}}')
    joined = sync_diff({}, diff).state
    assert list_presences(joined, lambda k, p: [k, p["metas"][0]["id"]]) == [["__proto__", 1]]
    diff = json.loads('{"joins":{},"leaves":{"__proto__":{"metas":[{"id":1,"phx_ref":"1"}]}}}')
    assert list_presences(sync_diff(joined, diff).state) == []


# ----------------------------------------------------------------------------- list


def test_9_list_gives_full_presences_by_default() -> None:
    assert list_presences(state()) == [
        {"metas": [{"id": 1, "phx_ref": "1"}]},
        {"metas": [{"id": 2, "phx_ref": "2"}]},
        {"metas": [{"id": 3, "phx_ref": "3"}]},
    ]


def test_10_list_with_a_chooser() -> None:
    current = {"u1": {"metas": [{"id": 1, "phx_ref": "1.first"}, {"id": 1, "phx_ref": "1.second"}]}}
    assert list_presences(current, list_by_first) == [{"id": 1, "phx_ref": "1.first"}]


def test_list_order_is_javascripts_own_property_order() -> None:
    # Array-index keys first, ascending; then the other keys in insertion order (SPEC §6.1).
    presences: dict[str, Any] = {
        k: {"metas": []} for k in ["b", "10", "2", "a", "01", "4294967295", "0"]
    }
    assert list_presences(presences, lambda k, _p: k) == [
        "0",
        "2",
        "10",
        "b",
        "a",
        "01",
        "4294967295",
    ]


# ----------------------------------------------------------------------------- instance


class ChannelStub:
    """phoenix.js's test stub: a join ref that grows on every reconnect."""

    def __init__(self) -> None:
        self.ref = 1

    def join_ref(self) -> str:
        return str(self.ref)

    def simulate_disconnect_and_reconnect(self) -> None:
        self.ref += 1


def test_11_view_syncs_state_and_diffs() -> None:
    channel, view = ChannelStub(), ClientView()
    view.on_state(
        {
            "u1": {"metas": [{"id": 1, "phx_ref": "1"}]},
            "u2": {"metas": [{"id": 2, "phx_ref": "2"}]},
        },
        join_ref=channel.join_ref(),
    )
    assert view.list(list_by_first) == [{"id": 1, "phx_ref": "1"}, {"id": 2, "phx_ref": "2"}]
    diff = {"joins": {}, "leaves": {"u1": {"metas": [{"id": 1, "phx_ref": "1"}]}}}
    assert view.on_diff(diff, join_ref=channel.join_ref()) is not None
    assert view.list(list_by_first) == [{"id": 2, "phx_ref": "2"}]


def test_12_view_applies_pending_diffs_after_the_state_of_the_current_join() -> None:
    channel, view = ChannelStub(), ClientView()
    user1 = {"metas": [{"id": 1, "phx_ref": "1"}]}
    user2 = {"metas": [{"id": 2, "phx_ref": "2"}]}
    user3 = {"metas": [{"id": 3, "phx_ref": "3"}]}
    assert view.on_diff({"joins": {}, "leaves": {"u2": user2}}, join_ref=channel.join_ref()) is None
    assert view.list(list_by_first) == []
    assert view.pending == 1

    result = view.on_state({"u1": user1, "u2": user2}, join_ref=channel.join_ref())
    assert result.leaves == (Left(key="u2", current={"metas": []}, left=user2),)
    assert view.list(list_by_first) == [{"id": 1, "phx_ref": "1"}]
    assert view.pending == 0
    assert result.joins == (
        Joined(key="u1", current=None, joined=user1),
        Joined(key="u2", current=None, joined=user2),
    )

    channel.simulate_disconnect_and_reconnect()
    assert view.in_pending_sync_state(channel.join_ref())
    assert view.on_diff({"joins": {}, "leaves": {"u1": user1}}, join_ref=channel.join_ref()) is None
    assert view.list(list_by_first) == [{"id": 1, "phx_ref": "1"}]
    view.on_state({"u1": user1, "u3": user3}, join_ref=channel.join_ref())
    assert view.list(list_by_first) == [{"id": 3, "phx_ref": "3"}]


def test_13_custom_event_names_are_the_transports_business() -> None:
    # phoenix.js lets the channel's event names be changed; here the caller routes pushes to
    # on_state / on_diff itself, so any name works: the view only sees payloads.
    channel, view = ChannelStub(), ClientView()
    handlers = {"the_state": view.on_state, "the_diff": view.on_diff}
    handlers["the_state"]({"user1": {"metas": [{"id": 1, "phx_ref": "1"}]}}, join_ref="1")
    assert view.list(list_by_first) == [{"id": 1, "phx_ref": "1"}]
    handlers["the_diff"](
        {"joins": {}, "leaves": {"user1": {"metas": [{"id": 1, "phx_ref": "1"}]}}},
        join_ref=channel.join_ref(),
    )
    assert view.list(list_by_first) == []


def test_14_an_update_is_a_leave_and_a_join_of_the_same_key() -> None:
    channel, view = ChannelStub(), ClientView()
    view.on_state(
        {
            "u1": {"metas": [{"id": 1, "phx_ref": "1"}]},
            "u2": {"metas": [{"id": 2, "name": "chris", "phx_ref": "2"}]},
        },
        join_ref=channel.join_ref(),
    )
    assert view.list(lambda _k, p: p["metas"]) == [
        [{"id": 1, "phx_ref": "1"}],
        [{"id": 2, "name": "chris", "phx_ref": "2"}],
    ]
    new_meta = {"id": 2, "name": "chris.2", "phx_ref": "2.2", "phx_ref_prev": "2"}
    result = view.on_diff(
        {
            "joins": {"u2": {"metas": [new_meta]}},
            "leaves": {"u2": {"metas": [{"id": 2, "name": "chris", "phx_ref": "2"}]}},
        },
        join_ref=channel.join_ref(),
    )
    assert result is not None
    assert view.list(lambda _k, p: p["metas"]) == [[{"id": 1, "phx_ref": "1"}], [new_meta]]
    assert result.joins == (
        Joined(
            key="u2",
            current={"metas": [{"id": 2, "name": "chris", "phx_ref": "2"}]},
            joined={"metas": [new_meta]},
        ),
    )
    assert result.leaves == (
        Left(
            key="u2",
            current={"metas": [new_meta]},
            left={"metas": [{"id": 2, "name": "chris", "phx_ref": "2"}]},
        ),
    )


# ----------------------------------------------------------------------------- edges


def test_nothing_passed_in_is_modified() -> None:
    current, diff = state(), {"joins": joins(), "leaves": leaves()}
    before = copy.deepcopy((current, diff))
    sync_diff(current, diff)
    sync_state(current, diff["joins"])
    assert (current, diff) == before


def test_a_join_of_a_known_ref_replaces_that_meta_and_moves_it_last() -> None:
    current = {"u1": {"metas": [{"phx_ref": "a", "v": 1}, {"phx_ref": "b"}]}}
    result = sync_diff(current, {"joins": {"u1": {"metas": [{"phx_ref": "a", "v": 2}]}}})
    assert result.state == {"u1": {"metas": [{"phx_ref": "b"}, {"phx_ref": "a", "v": 2}]}}


def test_metas_without_a_ref_all_match_each_other() -> None:
    current = {"u1": {"metas": [{"x": 1}, {"x": 2}]}}
    assert sync_diff(current, {"joins": {"u1": {"metas": [{"x": 3}]}}}).state == {
        "u1": {"metas": [{"x": 3}]}
    }


def test_number_refs_match_as_phoenix_js_compares_them() -> None:
    """A server sends string refs; others are compared as phoenix.js compares refs (``===``):
    1 matches 1 and 1.0, never "1" nor true."""
    current = {"u1": {"metas": [{"phx_ref": 1, "n": 1}, {"phx_ref": "1"}, {"phx_ref": True}]}}
    left = sync_diff(current, {"leaves": {"u1": {"metas": [{"phx_ref": 1.0}]}}})
    assert left.state == {"u1": {"metas": [{"phx_ref": "1"}, {"phx_ref": True}]}}
    assert left.leaves == (
        Left(key="u1", current=left.state["u1"], left={"metas": [{"phx_ref": 1.0}]}),
    )
    joined = sync_diff(current, {"joins": {"u1": {"metas": [{"phx_ref": True, "n": 2}]}}})
    assert joined.state == {
        "u1": {"metas": [{"phx_ref": 1, "n": 1}, {"phx_ref": "1"}, {"phx_ref": True, "n": 2}]}
    }
    assert sync_state(current, {"u1": {"metas": [{"phx_ref": 1}]}}).state == {
        "u1": {"metas": [{"phx_ref": 1, "n": 1}]}
    }
    update = {"phx_ref": 8, "phx_ref_prev": 7}
    classified = classify_diff(
        {
            "joins": {"u1": {"metas": [update]}},
            "leaves": {"u1": {"metas": [{"phx_ref": 7}, {"phx_ref": "7"}]}},
        }
    )
    assert classified.updates == (MetaUpdate(key="u1", old={"phx_ref": 7}, new=update),)
    assert classified.joins == {}
    assert classified.leaves == {"u1": {"metas": [{"phx_ref": "7"}]}}


def test_extra_fields_come_from_the_join_and_do_not_keep_a_key_alive() -> None:
    current = {"u1": {"metas": [{"phx_ref": "1"}], "name": "old"}}
    joined = sync_diff(current, {"joins": {"u1": {"metas": [{"phx_ref": "2"}], "name": "new"}}})
    assert joined.state["u1"]["name"] == "new"
    left = sync_diff(
        joined.state, {"leaves": {"u1": {"metas": [{"phx_ref": "1"}, {"phx_ref": "2"}]}}}
    )
    assert left.state == {}


def test_a_leave_of_an_unknown_key_is_ignored_without_a_record() -> None:
    result = sync_diff(state(), {"leaves": {"nobody": {"metas": [{"phx_ref": "9"}]}}})
    assert result.state == state()
    assert result.leaves == ()


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"joins": []},
        {"joins": {"u1": {}}},
        {"joins": {"u1": {"metas": {}}}},
        {"joins": {"u1": {"metas": [1]}}},
        {"leaves": {1: {"metas": []}}},
    ],
)
def test_a_malformed_push_is_refused_and_changes_nothing(bad: Any) -> None:
    view = ClientView()
    view.on_state(state(), join_ref="1")
    before = copy.deepcopy(view.state)
    with pytest.raises(RemoteProtocolError):
        view.on_diff(bad, join_ref="1")
    with pytest.raises(RemoteProtocolError):
        sync_diff(state(), bad)
    assert view.state == before


def test_a_malformed_state_is_refused_and_changes_nothing() -> None:
    view = ClientView()
    view.on_state(state(), join_ref="1")
    with pytest.raises(RemoteProtocolError):
        view.on_state({"u1": {"metas": "no"}}, join_ref="2")
    assert view.state == state()
    assert view.join_ref == "1"
    with pytest.raises(RemoteProtocolError):
        sync_state("nope", {})  # type: ignore[arg-type]


def test_repr_tells_the_size() -> None:
    view = ClientView()
    view.on_diff({"joins": joins()}, join_ref="1")
    assert repr(view) == "<ClientView keys=0 pending=1>"


def test_pending_diffs_are_bounded() -> None:
    view = ClientView(max_pending=2)
    for _ in range(2):
        assert view.on_diff({"joins": joins()}, join_ref="1") is None
    with pytest.raises(LimitExceeded):
        view.on_diff({"joins": joins()}, join_ref="1")
    assert view.pending == 2
    with pytest.raises(LocalProtocolError):
        ClientView(max_pending=0)


# ----------------------------------------------------------------------------- properties


def canonical(presences: dict[str, Any]) -> dict[str, list[str]]:
    """Per key, the sorted metas as JSON: equal presences whatever their meta order."""
    return {
        key: sorted(json.dumps(meta, sort_keys=True) for meta in value["metas"])
        for key, value in presences.items()
        if value["metas"]
    }


def server_history(seed: int, steps: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A tracker under random commands: its list() before each diff, and each diff's payload."""
    rng = random.Random(seed)
    tracker = Tracker(config=TrackerConfig(), replica=ReplicaRef("server", 1), rng=rng)
    lists: list[dict[str, Any]] = []
    diffs: list[dict[str, Any]] = []
    live: list[tuple[str, str]] = []
    for now in range(steps):
        choice = rng.random()
        conn, key = f"c{rng.randrange(4)}", f"k{rng.randrange(3)}"
        if choice < 0.5 and (conn, key) not in live:
            tracker.track(conn=conn, topic="t", key=key, meta={"n": now}, now=now)
            live.append((conn, key))
        elif choice < 0.75 and live:
            conn, key = rng.choice(live)
            tracker.update(conn=conn, topic="t", key=key, meta={"n": now}, now=now)
        elif choice < 0.9 and live:
            conn, key = live.pop(rng.randrange(len(live)))
            tracker.untrack(conn=conn, topic="t", key=key, now=now)
        elif live:
            conn = rng.choice(live)[0]
            tracker.untrack_conn(conn=conn, now=now)
            live = [ident for ident in live if ident[0] != conn]
        while (event := tracker.next_event()) is not None:
            assert isinstance(event, _PresenceDiff)
            lists.append(json.loads(json.dumps(tracker.presences("t"))))
            diffs.append(json.loads(json.dumps(presence_diff_payload(event))))
    lists.append(json.loads(json.dumps(tracker.presences("t"))))
    return lists, diffs


@given(
    seed=st.integers(0, 2**32),
    steps=st.integers(1, 40),
    data=st.data(),
)
def test_replaying_diffs_on_a_view_seeded_from_any_earlier_state_ends_at_the_servers_list(
    seed: int, steps: int, data: st.DataObject
) -> None:
    lists, diffs = server_history(seed, steps)
    # The client joins when the server's state was lists[i]; diffs from j <= i on arrive around
    # that state: those before it wait (pending), the rest follow it.
    i = data.draw(st.integers(0, len(diffs)), label="state index")
    j = data.draw(st.integers(0, i), label="first diff replayed")
    view = ClientView()
    for diff in diffs[j:i]:
        assert view.on_diff(diff, join_ref="1") is None
    # lists[k] is the server's list right after diff k, so the state before diff i is lists[i-1].
    seed_state = lists[i - 1] if i > 0 else {}
    view.on_state(seed_state, join_ref="1")
    for diff in diffs[i:]:
        assert view.on_diff(diff, join_ref="1") is not None
    assert canonical(view.state) == canonical(lists[-1])


@given(seed=st.integers(0, 2**32), steps=st.integers(1, 40))
def test_sync_state_then_sync_diff_agree_with_the_server_at_every_step(
    seed: int, steps: int
) -> None:
    lists, diffs = server_history(seed, steps)
    current: dict[str, Any] = {}
    for after, diff in zip(lists[:-1], diffs, strict=True):
        current = sync_diff(current, diff).state
        assert canonical(current) == canonical(after)
        assert canonical(sync_state({}, after).state) == canonical(after)


# ----------------------------------------------------------------------------- classify_diff


def test_an_update_is_classified_as_an_update_not_a_leave_and_a_join() -> None:
    old = {"id": 2, "phx_ref": "2"}
    new = {"id": 2, "phx_ref": "2.2", "phx_ref_prev": "2"}
    result = classify_diff(
        {
            "joins": {"u2": {"metas": [new]}, "u5": {"metas": [{"phx_ref": "5"}]}},
            "leaves": {"u2": {"metas": [old]}, "u9": {"metas": [{"phx_ref": "9"}]}},
        }
    )
    assert result.updates == (MetaUpdate(key="u2", old=old, new=new),)
    assert result.joins == {"u5": {"metas": [{"phx_ref": "5"}]}}
    assert result.leaves == {"u9": {"metas": [{"phx_ref": "9"}]}}
    assert (result.joined_keys, result.left_keys, result.updated_keys) == (["u5"], ["u9"], ["u2"])


def test_a_key_with_an_update_and_a_real_join_is_both() -> None:
    old = {"phx_ref": "a"}
    new = {"phx_ref": "b", "phx_ref_prev": "a"}
    other_tab = {"phx_ref": "c"}
    result = classify_diff(
        {"joins": {"u1": {"metas": [new, other_tab]}}, "leaves": {"u1": {"metas": [old]}}}
    )
    assert result.updates == (MetaUpdate(key="u1", old=old, new=new),)
    assert result.joins == {"u1": {"metas": [other_tab]}}
    assert result.leaves == {}
    assert (result.joined_keys, result.updated_keys) == (["u1"], [])


def test_a_phx_ref_prev_that_names_nothing_leaving_is_a_join() -> None:
    stale = {"phx_ref": "b", "phx_ref_prev": "zzz"}
    result = classify_diff(
        {"joins": {"u1": {"metas": [stale]}}, "leaves": {"u1": {"metas": [{"phx_ref": "a"}]}}}
    )
    assert result.updates == ()
    assert result.joins == {"u1": {"metas": [stale]}}
    assert result.leaves == {"u1": {"metas": [{"phx_ref": "a"}]}}


def test_classify_diff_matches_the_tracker_s_own_updates() -> None:
    tracker = Tracker(config=TrackerConfig(), replica=ReplicaRef("s", 1), rng=random.Random(0))
    ref = tracker.track(conn="c", topic="t", key="k", meta={"v": 1}, now=0.0)
    tracker.next_event()
    tracker.update(conn="c", topic="t", key="k", meta={"v": 2}, now=0.0)
    event = tracker.next_event()
    assert isinstance(event, _PresenceDiff)
    result = classify_diff(json.loads(json.dumps(presence_diff_payload(event))))
    assert [(u.old["phx_ref"], u.new["phx_ref_prev"]) for u in result.updates] == [(ref, ref)]
    assert result.updated_keys == ["k"]
    with pytest.raises(RemoteProtocolError):
        classify_diff({"joins": 1})
