"""The frames the endpoint sends (SPEC §5.4), compared with literal JSON text.

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
from presence_adapters.phoenix import (
    ChannelConnection,
    JoinRequested,
    Message,
    Serializer,
    broadcast_text,
    negotiate,
)
from presence_core import (
    Entry,
    InvalidArgument,
    JSONValue,
    PresenceDiff,
    ReplicaRef,
    group,
    presence_diff_payload,
)

TOPIC = "room:lobby"
N1 = ReplicaRef("n1", 1)


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


def state(presences: object, *, join_ref: str, serializer: Serializer = Serializer.V2) -> str:
    """The presence_state push of a channel joined with ``join_ref``."""
    connection = ChannelConnection(serializer)
    join = Message(join_ref=join_ref, ref=join_ref, topic=TOPIC, event="phx_join", payload={})
    connection.accept_join(JoinRequested(message=join))
    return connection.push(TOPIC, "presence_state", presences).text


def diff_text(diff: PresenceDiff, serializer: Serializer = Serializer.V2) -> str:
    """The presence_diff broadcast of ``diff``."""
    return broadcast_text(serializer, diff.topic, "presence_diff", presence_diff_payload(diff))


# ---------------------------------------------------------------------------- SPEC §5.4 literals


def test_presence_state_v2_carries_the_join_ref() -> None:
    assert state(group([ALICE]), join_ref="3") == (
        '["3",null,"room:lobby","presence_state",'
        '{"alice":{"metas":[{"online_at":"1712345678","phx_ref":"GOw10tf291z-WgCy"}]}}]'
    )


def test_presence_diff_v2_has_null_join_ref_and_ref() -> None:
    assert diff_text(PresenceDiff(topic=TOPIC, joins=[BOB])) == (
        '[null,null,"room:lobby","presence_diff",'
        '{"joins":{"bob":{"metas":[{"online_at":"1712345690","phx_ref":"GOw10xQOqFn-WgCx"}]}},'
        '"leaves":{}}]'
    )


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
    assert diff_text(PresenceDiff(topic=TOPIC, joins=[new], leaves=[ALICE])) == (
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
    assert state(fetched, join_ref="3") == (
        '["3",null,"room:lobby","presence_state",'
        '{"42":{"metas":[{"device":"web","phx_ref":"GOw1RJvO8wr-WgCy"},'
        '{"device":"ios","phx_ref":"GOw1RJvPiK3-WgDC"}],"user":{"name":"Ann"}}}]'
    )


def test_presence_diff_v1_is_an_object_without_join_ref() -> None:
    leaving = entry("bob", {"phx_ref": "GOw10xQOqFn-WgCx"})
    assert diff_text(PresenceDiff(topic=TOPIC, leaves=[leaving]), Serializer.V1) == (
        '{"event":"presence_diff","payload":{"joins":{},'
        '"leaves":{"bob":{"metas":[{"phx_ref":"GOw10xQOqFn-WgCx"}]}}},'
        '"ref":null,"topic":"room:lobby"}'
    )


def test_presence_state_v1_is_an_object_without_join_ref() -> None:
    assert state(group([ALICE]), join_ref="3", serializer=Serializer.V1) == (
        '{"event":"presence_state","payload":'
        '{"alice":{"metas":[{"online_at":"1712345678","phx_ref":"GOw10tf291z-WgCy"}]}},'
        '"ref":null,"topic":"room:lobby"}'
    )


def test_empty_presence_state_and_diff() -> None:
    assert state(group([]), join_ref="7") == '["7",null,"room:lobby","presence_state",{}]'
    assert diff_text(PresenceDiff(topic=TOPIC)) == (
        '[null,null,"room:lobby","presence_diff",{"joins":{},"leaves":{}}]'
    )


def test_encode_frame_sorts_meta_keys_compactly_and_keeps_unicode() -> None:
    meta: dict[str, JSONValue] = {
        "zeta": 1,
        "alpha": {"y": [1, 2.5, None, True], "b": "é☃"},
        "phx_ref": "r",
    }
    text = diff_text(PresenceDiff(topic="t", joins=[entry("k", meta)]))
    assert text == (
        '[null,null,"t","presence_diff",{"joins":{"k":{"metas":[{"alpha":{"b":"é☃",'
        '"y":[1,2.5,null,true]},"phx_ref":"r","zeta":1}]}},"leaves":{}}]'
    )
    assert json.loads(text)[4]["joins"]["k"]["metas"][0] == meta


@pytest.mark.parametrize("vsn", ["1.0.0", "1.9.9", None])
def test_v1_serializer_versions(vsn: str | None) -> None:
    assert negotiate(vsn) is Serializer.V1
    assert json.loads(diff_text(PresenceDiff(topic=TOPIC), negotiate(vsn))) == {
        "event": "presence_diff",
        "payload": {"joins": {}, "leaves": {}},
        "ref": None,
        "topic": TOPIC,
    }


def test_frames_from_a_tracker_list() -> None:
    tracker = make_tracker("n1")
    ref = tracker.track(conn="c1", topic=TOPIC, key="alice", meta={"online_at": "1"}, now=0.0)
    assert state(tracker.presences(TOPIC), join_ref="3") == (
        f'["3",null,"room:lobby","presence_state",'
        f'{{"alice":{{"metas":[{{"online_at":"1","phx_ref":"{ref}"}}]}}}}]'
    )
    diff = tracker.next_event()
    assert isinstance(diff, PresenceDiff)
    assert diff_text(diff) == (
        f'[null,null,"room:lobby","presence_diff",'
        f'{{"joins":{{"alice":{{"metas":[{{"online_at":"1","phx_ref":"{ref}"}}]}}}},"leaves":{{}}}}]'
    )


# ---------------------------------------------------------------------------- bad arguments

NOT_A_SERIALIZER: Any = "2.0.0"
NOT_A_DIFF: Any = None
NOT_A_TOPIC: Any = None


def _deep(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: presence_diff_payload(NOT_A_DIFF), "diff must be a PresenceDiff, not NoneType"),
        (
            lambda: broadcast_text(NOT_A_SERIALIZER, TOPIC, "presence_diff", {}),
            "serializer must be a Serializer, not str",
        ),
        (
            lambda: broadcast_text(Serializer.V2, NOT_A_TOPIC, "presence_diff", {}),
            "topic must be a non-empty str, not None",
        ),
        (lambda: broadcast_text(Serializer.V2, TOPIC, "", {}), "event must be a non-empty str"),
        (
            lambda: broadcast_text(Serializer.V2, TOPIC, "presence_diff", {"f": float("nan")}),
            "JSON cannot carry the message",
        ),
        (
            lambda: broadcast_text(Serializer.V1, TOPIC, "presence_diff", {"b": b"bytes"}),
            "JSON cannot carry the message",
        ),
        (
            lambda: broadcast_text(Serializer.V2, TOPIC, "presence_diff", _deep(100_000)),
            "JSON cannot carry the message",
        ),
    ],
    ids=["payload of None", "serializer", "topic", "event", "NaN", "bytes", "too deep"],
)
def test_building_a_presence_diff_frame_refuses_bad_arguments(build: Any, match: str) -> None:
    # Before: AttributeError (None), a frame with a null topic, ValueError, TypeError or
    # RecursionError. Now InvalidArgument, which is also a ValueError and a TypeError.
    with pytest.raises(InvalidArgument, match=match) as info:
        build()
    assert type(info.value) is InvalidArgument


def test_a_push_json_cannot_carry_is_an_invalid_argument_and_joins_nothing() -> None:
    connection = ChannelConnection(Serializer.V2)
    join = Message(join_ref="1", ref="1", topic=TOPIC, event="phx_join", payload={})
    with pytest.raises(InvalidArgument, match="JSON cannot carry"):
        connection.accept_join(JoinRequested(message=join), {"n": float("inf")})
    assert connection.channels == {}
    connection.accept_join(JoinRequested(message=join))
    with pytest.raises(InvalidArgument, match="JSON cannot carry"):
        connection.push(TOPIC, "presence_state", {"s": {1, 2}})
