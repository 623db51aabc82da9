"""Phoenix.Presence's client-facing shapes (SPEC §5.2, §5.4), compared with literal JSON text.

Each expected string below is copied from the examples of SPEC §5.4; the entries are built with
exactly the metas those examples show. The frames must match byte for byte: V2 arrays
``[join_ref, ref, topic, event, payload]`` with ``null`` join_ref and ref for ``presence_diff``
(fastlane) and the channel's join_ref for ``presence_state``; V1 objects without a join_ref;
keys sorted, compact separators.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from helpers import make_tracker
from presence_core import (
    Entry,
    JSONValue,
    PresenceDiff,
    PresenceMap,
    ReplicaRef,
    encode_frame,
    group,
    presence_diff_frame,
    presence_diff_payload,
    presence_state_frame,
)

TOPIC = "room:lobby"
N1 = ReplicaRef("n1", 1)
N2 = ReplicaRef("n2", 1)


def entry(
    key: str,
    meta: dict[str, JSONValue],
    *,
    conn: str = "c1",
    owner: ReplicaRef = N1,
    clock: int = 1,
) -> Entry:
    return Entry(TOPIC, key, conn, meta, owner, clock)


ALICE = entry("alice", {"online_at": "1712345678", "phx_ref": "GOw10tf291z-WgCy"}, clock=1)
BOB = entry("bob", {"online_at": "1712345690", "phx_ref": "GOw10xQOqFn-WgCx"}, conn="c2", clock=2)


# ---------------------------------------------------------------------------- SPEC §5.4 literals


def test_presence_state_v2_carries_the_join_ref() -> None:
    frame = presence_state_frame(TOPIC, group([ALICE]), join_ref="3")
    assert encode_frame(frame) == (
        '["3",null,"room:lobby","presence_state",'
        '{"alice":{"metas":[{"online_at":"1712345678","phx_ref":"GOw10tf291z-WgCy"}]}}]'
    )


def test_presence_diff_v2_has_null_join_ref_and_ref() -> None:
    frame = presence_diff_frame(PresenceDiff(topic=TOPIC, joins=[BOB]))
    assert encode_frame(frame) == (
        '[null,null,"room:lobby","presence_diff",'
        '{"joins":{"bob":{"metas":[{"online_at":"1712345690","phx_ref":"GOw10xQOqFn-WgCx"}]}},'
        '"leaves":{}}]'
    )
    assert presence_diff_frame(PresenceDiff(topic=TOPIC, joins=[BOB]), vsn="2.0.0") == frame


def test_an_update_is_one_presence_diff_with_join_and_leave() -> None:
    # Presence.update(socket, "alice", &Map.put(&1, :status, "away"))
    new = entry(
        "alice",
        {
            "online_at": "1712345678",
            "phx_ref": "GOw10tg6Ior-WgCh",
            "phx_ref_prev": "GOw10tf291z-WgCy",
            "status": "away",
        },
        clock=3,
    )
    frame = presence_diff_frame(PresenceDiff(topic=TOPIC, joins=[new], leaves=[ALICE]))
    assert encode_frame(frame) == (
        '[null,null,"room:lobby","presence_diff",'
        '{"joins":{"alice":{"metas":[{"online_at":"1712345678","phx_ref":"GOw10tg6Ior-WgCh",'
        '"phx_ref_prev":"GOw10tf291z-WgCy","status":"away"}]}},'
        '"leaves":{"alice":{"metas":[{"online_at":"1712345678","phx_ref":"GOw10tf291z-WgCy"}]}}}]'
    )


def test_one_key_from_two_tabs_with_a_fetched_field() -> None:
    web = entry("42", {"device": "web", "phx_ref": "GOw1RJvO8wr-WgCy"}, conn="tab1", clock=1)
    ios = entry("42", {"device": "ios", "phx_ref": "GOw1RJvPiK3-WgDC"}, conn="tab2", clock=2)
    grouped = group([ios, web])  # input order does not matter: metas by owner, then conn
    assert grouped == {"42": {"metas": [web.meta, ios.meta]}}
    # what a fetch/2 that adds "user" next to "metas" returns (outside PresenceMap's type)
    fetched = cast(dict[str, dict[str, Any]], grouped)
    fetched["42"]["user"] = {"name": "Ann"}
    frame = presence_state_frame(TOPIC, cast(PresenceMap, fetched), join_ref="3")
    assert encode_frame(frame) == (
        '["3",null,"room:lobby","presence_state",'
        '{"42":{"metas":[{"device":"web","phx_ref":"GOw1RJvO8wr-WgCy"},'
        '{"device":"ios","phx_ref":"GOw1RJvPiK3-WgDC"}],"user":{"name":"Ann"}}}]'
    )


def test_presence_diff_v1_is_an_object_without_join_ref() -> None:
    leaving = entry("bob", {"phx_ref": "GOw10xQOqFn-WgCx"})
    frame = presence_diff_frame(PresenceDiff(topic=TOPIC, leaves=[leaving]), vsn="1.0.0")
    assert encode_frame(frame) == (
        '{"event":"presence_diff","payload":{"joins":{},'
        '"leaves":{"bob":{"metas":[{"phx_ref":"GOw10xQOqFn-WgCx"}]}}},'
        '"ref":null,"topic":"room:lobby"}'
    )


def test_presence_state_v1_is_an_object_without_join_ref() -> None:
    frame = presence_state_frame(TOPIC, group([ALICE]), join_ref="3", vsn="1.0.0")
    assert encode_frame(frame) == (
        '{"event":"presence_state","payload":'
        '{"alice":{"metas":[{"online_at":"1712345678","phx_ref":"GOw10tf291z-WgCy"}]}},'
        '"ref":null,"topic":"room:lobby"}'
    )


# ---------------------------------------------------------------------------- shapes in general


def test_payload_always_has_joins_and_leaves() -> None:
    assert presence_diff_payload(PresenceDiff(topic=TOPIC)) == {"joins": {}, "leaves": {}}
    assert encode_frame(presence_diff_frame(PresenceDiff(topic=TOPIC))) == (
        '[null,null,"room:lobby","presence_diff",{"joins":{},"leaves":{}}]'
    )
    assert presence_diff_payload(PresenceDiff(topic=TOPIC, joins=[ALICE], leaves=[BOB])) == {
        "joins": {"alice": {"metas": [ALICE.meta]}},
        "leaves": {"bob": {"metas": [BOB.meta]}},
    }


def test_empty_presence_state() -> None:
    assert encode_frame(presence_state_frame(TOPIC, group([]), join_ref="7")) == (
        '["7",null,"room:lobby","presence_state",{}]'
    )
    assert encode_frame(presence_state_frame(TOPIC, {}, join_ref=None)) == (
        '[null,null,"room:lobby","presence_state",{}]'
    )


def test_group_sorts_keys_and_orders_metas_by_owner_then_conn() -> None:
    entries = [
        entry("zed", {"i": 0}, conn="a", owner=N2, clock=1),
        entry("amy", {"i": 1}, conn="c2", owner=N2, clock=2),
        entry("amy", {"i": 2}, conn="c9", owner=N1, clock=3),
        entry("amy", {"i": 3}, conn="c10", owner=N1, clock=4),
        entry("bob", {"i": 4}, conn="c1", owner=N1, clock=5),
        entry("amy", {"i": 5}, conn="c1", owner=ReplicaRef("n1", 0), clock=6),
    ]
    grouped = group(entries)
    assert list(grouped) == ["amy", "bob", "zed"]
    assert [m["i"] for m in grouped["amy"]["metas"]] == [5, 3, 2, 1]
    assert grouped == group(reversed(entries))
    assert encode_frame(presence_state_frame(TOPIC, grouped, join_ref="1")) == (
        '["1",null,"room:lobby","presence_state",{"amy":{"metas":[{"i":5},{"i":3},{"i":2},'
        '{"i":1}]},"bob":{"metas":[{"i":4}]},"zed":{"metas":[{"i":0}]}}]'
    )


def test_encode_frame_sorts_meta_keys_compactly_and_keeps_unicode() -> None:
    meta: dict[str, JSONValue] = {
        "zeta": 1,
        "alpha": {"y": [1, 2.5, None, True], "b": "é☃"},
        "phx_ref": "r",
    }
    frame = presence_diff_frame(PresenceDiff(topic="t", joins=[entry("k", meta)]))
    text = encode_frame(frame)
    assert text == (
        '[null,null,"t","presence_diff",{"joins":{"k":{"metas":[{"alpha":{"b":"é☃",'
        '"y":[1,2.5,null,true]},"phx_ref":"r","zeta":1}]}},"leaves":{}}]'
    )
    assert json.loads(text)[4]["joins"]["k"]["metas"][0] == meta


@pytest.mark.parametrize("vsn", ["1.0.0", "1.9.9"])
def test_v1_serializer_versions(vsn: str) -> None:
    frame = presence_diff_frame(PresenceDiff(topic=TOPIC), vsn=vsn)
    assert frame == {
        "event": "presence_diff",
        "payload": {"joins": {}, "leaves": {}},
        "ref": None,
        "topic": TOPIC,
    }


def test_frames_from_a_tracker_list() -> None:
    tracker = make_tracker("n1")
    ref = tracker.track(conn="c1", topic=TOPIC, key="alice", meta={"online_at": "1"}, now=0.0)
    assert encode_frame(presence_state_frame(TOPIC, tracker.list(TOPIC), join_ref="3")) == (
        f'["3",null,"room:lobby","presence_state",'
        f'{{"alice":{{"metas":[{{"online_at":"1","phx_ref":"{ref}"}}]}}}}]'
    )
    diff = tracker.next_event()
    assert isinstance(diff, PresenceDiff)
    assert encode_frame(presence_diff_frame(diff)) == (
        f'[null,null,"room:lobby","presence_diff",'
        f'{{"joins":{{"alice":{{"metas":[{{"online_at":"1","phx_ref":"{ref}"}}]}}}},"leaves":{{}}}}]'
    )
