"""The sans-IO Phoenix Channels protocol (:class:`ChannelConnection`), with no I/O at all.

Frames in, inputs and frames out, compared with what Phoenix's ``lib/phoenix/socket.ex``,
``channel/server.ex`` and the V1/V2 JSON serializers do (SPEC §5.4): heartbeats, joins accepted
and refused, a second join of a joined topic (the old channel is closed first), leaves, stale
join refs, unmatched topics, and the limits. Every rejected input must leave the state as it
was; a Hypothesis property feeds arbitrary text and JSON to check that nothing but
:class:`ProtocolViolation` ever escapes and that ``channels`` never goes wrong.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence_adapters.phoenix import (
    ChannelClosed,
    ChannelConnection,
    EventReceived,
    Input,
    JoinRequested,
    Message,
    ProtocolViolation,
    Send,
    Serializer,
    broadcast_text,
    negotiate,
)
from presence_core import LocalProtocolError

V1, V2 = Serializer.V1, Serializer.V2
TOPIC = "room:lobby"
OK: dict[str, Any] = {"status": "ok", "response": {}}


def frame(join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any = None) -> str:
    """A V2 frame as a client writes it."""
    return json.dumps([join_ref, ref, topic, event, {} if payload is None else payload])


def v1_frame(topic: Any, event: Any, ref: Any, payload: Any = None, **extra: Any) -> str:
    """A V1 frame as a client writes it (no join_ref unless given)."""
    value = {"topic": topic, "event": event, "payload": {} if payload is None else payload}
    return json.dumps({**value, "ref": ref, **extra})


def decoded(inputs: list[Input]) -> list[Any]:
    """The inputs, with each :class:`Send` turned into the JSON it carries."""
    return [json.loads(item.text) if isinstance(item, Send) else item for item in inputs]


def one_frame(inputs: list[Input]) -> Any:
    """The single frame ``inputs`` hold."""
    (item,) = inputs
    assert isinstance(item, Send), item
    return json.loads(item.text)


def joined(
    serializer: Serializer = V2,
    topic: str = TOPIC,
    join_ref: Any = "1",
    ref: Any = "1",
    **options: Any,
) -> ChannelConnection:
    """A connection that joined ``topic`` (the join accepted)."""
    connection = ChannelConnection(serializer, **options)
    join(connection, topic, join_ref, ref)
    return connection


def join(connection: ChannelConnection, topic: str, join_ref: Any, ref: Any) -> Any:
    """Join ``topic`` and accept; returns the reply's JSON."""
    if connection.serializer is V2:
        text = frame(join_ref, ref, topic, "phx_join")
    else:
        text = v1_frame(topic, "phx_join", ref)
    (request,) = connection.receive(text)
    assert isinstance(request, JoinRequested)
    return json.loads(connection.accept_join(request).text)


# ---------------------------------------------------------------------------- serializers


def test_v2_decodes_an_array_and_keeps_string_refs() -> None:
    message = V2.decode('["3","4","room:lobby","shout",{"body":"hi"}]')
    assert message == Message(
        join_ref="3", ref="4", topic=TOPIC, event="shout", payload={"body": "hi"}
    )


def test_integer_refs_are_kept_and_echoed_as_integers() -> None:
    # Phoenix echoes the ref's JSON value as it came: a client matching replies by ref == 7
    # must get 7 back, not "7".
    message = V2.decode('[3,7,"room:lobby","shout",{}]')
    assert (message.join_ref, message.ref) == (3, 7)
    assert V2.encode(message) == '[3,7,"room:lobby","shout",{}]'
    connection = ChannelConnection(V2)
    assert one_frame(connection.receive('[null,7,"phoenix","heartbeat",{}]')) == [
        None,
        7,
        "phoenix",
        "phx_reply",
        OK,
    ]
    assert join(connection, TOPIC, 3, 3) == [3, 3, TOPIC, "phx_reply", OK]
    # 3 and "3" are different join refs, as Phoenix's === tells them apart.
    assert connection.receive(frame("3", "9", TOPIC, "shout")) == []


def test_null_refs_decode_to_none() -> None:
    message = V2.decode('[null,null,"room:lobby","shout",{}]')
    assert (message.join_ref, message.ref) == (None, None)
    assert V2.encode(message) == '[null,null,"room:lobby","shout",{}]'


def test_v1_decodes_an_object_without_join_ref() -> None:
    message = V1.decode('{"topic":"room:lobby","event":"phx_join","payload":{"a":1},"ref":"1"}')
    assert message == Message(
        join_ref=None, ref="1", topic=TOPIC, event="phx_join", payload={"a": 1}
    )
    # A V1 client may send a join_ref: Phoenix's Message.from_map! takes it.
    with_join_ref = V1.decode(v1_frame(TOPIC, "shout", 5, join_ref="1"))
    assert (with_join_ref.join_ref, with_join_ref.ref) == ("1", 5)


def test_v1_encodes_an_object_without_join_ref_keys_sorted() -> None:
    message = Message(join_ref="1", ref="2", topic=TOPIC, event="phx_reply", payload=OK)
    assert V1.encode(message) == (
        '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"2",'
        '"topic":"room:lobby"}'
    )
    assert V2.encode(message) == (
        '["1","2","room:lobby","phx_reply",{"response":{},"status":"ok"}]'
    )


def test_encode_keeps_unicode_and_refuses_what_json_cannot_carry() -> None:
    message = Message(join_ref=None, ref=None, topic="t", event="e", payload={"n": "é☃"})
    assert V2.encode(message) == '[null,null,"t","e",{"n":"é☃"}]'
    payloads: list[dict[str, object]] = [{"x": float("nan")}, {"x": float("inf")}, {"x": {1}}]
    for payload in payloads:
        with pytest.raises((ValueError, TypeError)):
            V2.encode(Message(join_ref=None, ref=None, topic="t", event="e", payload=payload))


def test_broadcast_has_null_join_ref_and_ref() -> None:
    payload: dict[str, Any] = {"joins": {}, "leaves": {}}
    assert broadcast_text(V2, TOPIC, "presence_diff", payload) == (
        '[null,null,"room:lobby","presence_diff",{"joins":{},"leaves":{}}]'
    )
    assert joined().broadcast(TOPIC, "presence_diff", payload) == broadcast_text(
        V2, TOPIC, "presence_diff", payload
    )
    assert json.loads(broadcast_text(V1, TOPIC, "presence_diff", payload)) == {
        "topic": TOPIC,
        "event": "presence_diff",
        "payload": payload,
        "ref": None,
    }


@pytest.mark.parametrize(
    ("vsn", "serializer"),
    [
        ("2.0.0", V2),
        ("2.1.3", V2),
        ("2.0.0-rc.1", V2),
        ("1.0.0", V1),
        ("1.9.9", V1),
        ("1.0.0+build.5", V1),
        (None, V1),  # Phoenix's default when the client names none
    ],
)
def test_negotiate(vsn: str | None, serializer: Serializer) -> None:
    assert negotiate(vsn) is serializer


@pytest.mark.parametrize(
    "vsn", ["3.0.0", "0.9.0", "", "2", "2.0", "2.x.y", "2garbage", "v2.0.0", "\uff12.0.0", "2.0.0 "]
)
def test_negotiate_refuses_other_versions(vsn: str) -> None:
    # Phoenix parses the vsn as a version (Version.parse) and matches it against its
    # serializers' requirements: malformed versions and other majors are refused.
    with pytest.raises(ProtocolViolation):
        negotiate(vsn)


# ---------------------------------------------------------------------------- heartbeats


def test_heartbeat_reply_v2_has_null_join_ref() -> None:
    connection = ChannelConnection(V2)
    # phoenix.js sends [null, ref, "phoenix", "heartbeat", {}]; a join_ref is not echoed.
    for join_ref in (None, "9"):
        reply = one_frame(connection.receive(frame(join_ref, "5", "phoenix", "heartbeat")))
        assert reply == [None, "5", "phoenix", "phx_reply", OK]
    assert connection.channels == {}


def test_heartbeat_reply_v1() -> None:
    connection = ChannelConnection(V1)
    reply = one_frame(connection.receive(v1_frame("phoenix", "heartbeat", "5")))
    assert reply == {"topic": "phoenix", "event": "phx_reply", "payload": OK, "ref": "5"}


# ---------------------------------------------------------------------------- joins


def test_join_is_decided_by_the_application_then_answered_ok() -> None:
    connection = ChannelConnection(V2)
    (request,) = connection.receive(frame("1", "1", TOPIC, "phx_join", {"token": "t"}))
    assert isinstance(request, JoinRequested)
    assert request.topic == TOPIC
    assert request.message.payload == {"token": "t"}
    assert connection.channels == {}  # nothing joined until the application says so
    reply = json.loads(connection.accept_join(request, {"welcome": True}).text)
    assert reply == ["1", "1", TOPIC, "phx_reply", {"status": "ok", "response": {"welcome": True}}]
    assert connection.channels == {TOPIC: "1"}
    push = json.loads(connection.push(TOPIC, "presence_state", {}).text)
    assert push == ["1", None, TOPIC, "presence_state", {}]


def test_join_rejected() -> None:
    connection = ChannelConnection(V2)
    (request,) = connection.receive(frame("1", "1", TOPIC, "phx_join"))
    assert isinstance(request, JoinRequested)
    reply = json.loads(connection.reject_join(request, "unauthorized").text)
    assert reply == [
        "1",
        "1",
        TOPIC,
        "phx_reply",
        {"status": "error", "response": {"reason": "unauthorized"}},
    ]
    assert connection.channels == {}
    with pytest.raises(LocalProtocolError):
        connection.push(TOPIC, "presence_state", {})


def test_join_v1() -> None:
    connection = ChannelConnection(V1)
    assert join(connection, TOPIC, None, "1") == {
        "topic": TOPIC,
        "event": "phx_reply",
        "payload": OK,
        "ref": "1",
    }
    assert connection.channels == {TOPIC: None}
    assert json.loads(connection.push(TOPIC, "presence_state", {}).text) == {
        "topic": TOPIC,
        "event": "presence_state",
        "payload": {},
        "ref": None,
    }
    (event,) = connection.receive(v1_frame(TOPIC, "shout", "2"))
    assert isinstance(event, EventReceived)


def test_a_join_without_join_ref_makes_the_join_ref_the_channels_ref() -> None:
    # Phoenix.Channel.Server.join: socket.join_ref = join_ref || ref. The join's own reply
    # carries the join_ref the client sent (null); the channel's pushes and replies carry the ref.
    connection = ChannelConnection(V2)
    assert join(connection, TOPIC, None, "4") == [None, "4", TOPIC, "phx_reply", OK]
    assert connection.channels == {TOPIC: None}
    assert json.loads(connection.push(TOPIC, "presence_state", {}).text)[0] == "4"
    (event,) = connection.receive(frame(None, "5", TOPIC, "shout"))
    assert isinstance(event, EventReceived)
    reply = connection.reply(event.message, "ok", {})
    assert reply is not None
    assert json.loads(reply.text) == ["4", "5", TOPIC, "phx_reply", OK]


def test_accept_join_refuses_a_joined_topic_and_an_unencodable_response() -> None:
    connection = ChannelConnection(V2)
    (request,) = connection.receive(frame("1", "1", TOPIC, "phx_join"))
    assert isinstance(request, JoinRequested)
    with pytest.raises((TypeError, ValueError)):
        connection.accept_join(request, {"when": object()})
    assert connection.channels == {}  # the failed reply joined nothing
    connection.accept_join(request)
    with pytest.raises(LocalProtocolError):
        connection.accept_join(request)
    assert connection.channels == {TOPIC: "1"}


def test_joining_a_joined_topic_closes_the_old_channel_first() -> None:
    # socket.ex handle_in({pid, _, _}, %{event: "phx_join"}): shutdown_duplicate_channel, then
    # socket_close pushes phx_close with the OLD join_ref (as join_ref and ref), then the new
    # join is handled as a first one.
    connection = joined(join_ref="1", ref="1")
    inputs = connection.receive(frame("5", "5", TOPIC, "phx_join", {"again": True}))
    closed, close_frame, request = decoded(inputs)
    assert closed == ChannelClosed(topic=TOPIC, join_ref="1", reason="duplicate_join")
    assert close_frame == ["1", "1", TOPIC, "phx_close", {}]
    assert isinstance(request, JoinRequested)
    assert (request.message.join_ref, request.message.payload) == ("5", {"again": True})
    assert connection.channels == {}  # the old channel is gone, the new one not yet joined
    assert json.loads(connection.accept_join(request).text)[:2] == ["5", "5"]
    assert connection.channels == {TOPIC: "5"}
    # Messages for the old join are now stale; those of the new one go through.
    assert connection.receive(frame("1", "6", TOPIC, "shout")) == []
    (event,) = connection.receive(frame("5", "7", TOPIC, "shout"))
    assert isinstance(event, EventReceived)


def test_a_rejoin_refused_leaves_the_topic_unjoined() -> None:
    connection = joined()
    *_, request = connection.receive(frame("2", "2", TOPIC, "phx_join"))
    assert isinstance(request, JoinRequested)
    connection.reject_join(request, "no")
    assert connection.channels == {}


def test_a_rejoin_at_max_channels_is_not_too_many() -> None:
    # The old channel is closed before the new join is counted (Phoenix recurses with the
    # state that no longer holds it).
    connection = joined(max_channels=1)
    *_, request = connection.receive(frame("2", "2", TOPIC, "phx_join"))
    assert isinstance(request, JoinRequested)


def test_max_channels() -> None:
    connection = ChannelConnection(V2, max_channels=2)
    join(connection, "room:a", "1", "1")
    join(connection, "room:b", "2", "2")
    before = dict(connection.channels)
    reply = one_frame(connection.receive(frame("3", "3", "room:c", "phx_join")))
    assert reply == [
        "3",
        "3",
        "room:c",
        "phx_reply",
        {"status": "error", "response": {"reason": "too many channels joined"}},
    ]
    assert connection.channels == before
    connection.receive(frame("1", "4", "room:a", "phx_leave"))
    assert join(connection, "room:c", "5", "5")[4] == OK


# ---------------------------------------------------------------------------- leaves


def test_leave_of_a_joined_topic() -> None:
    # The channel replies ok (with its join_ref) and stops; the socket then pushes phx_close.
    connection = joined(join_ref="1")
    reply, closed, close_frame = decoded(connection.receive(frame("1", "2", TOPIC, "phx_leave")))
    assert reply == ["1", "2", TOPIC, "phx_reply", OK]
    assert closed == ChannelClosed(topic=TOPIC, join_ref="1", reason="left")
    assert close_frame == ["1", "1", TOPIC, "phx_close", {}]
    assert connection.channels == {}


def test_leave_with_a_null_join_ref_is_for_the_current_channel() -> None:
    # "a nil join_ref is valid on non-join messages" (socket.ex)
    connection = joined(join_ref="1")
    reply, closed, _ = decoded(connection.receive(frame(None, "2", TOPIC, "phx_leave")))
    assert reply == ["1", "2", TOPIC, "phx_reply", OK]
    assert isinstance(closed, ChannelClosed)


def test_leave_v1() -> None:
    connection = joined(V1, join_ref=None)
    reply, closed, close_frame = decoded(connection.receive(v1_frame(TOPIC, "phx_leave", "2")))
    assert reply == {"topic": TOPIC, "event": "phx_reply", "payload": OK, "ref": "2"}
    assert closed == ChannelClosed(topic=TOPIC, join_ref=None, reason="left")
    assert close_frame == {"topic": TOPIC, "event": "phx_close", "payload": {}, "ref": None}


def test_leave_of_a_topic_not_joined_is_ok() -> None:
    connection = ChannelConnection(V2)
    reply = one_frame(connection.receive(frame("8", "9", TOPIC, "phx_leave")))
    assert reply == ["8", "9", TOPIC, "phx_reply", OK]
    assert connection.channels == {}


def test_leave_and_events_with_a_stale_join_ref_are_ignored() -> None:
    connection = joined(join_ref="1")
    for event in ("phx_leave", "shout"):
        assert connection.receive(frame("0", "2", TOPIC, event)) == []
    assert connection.channels == {TOPIC: "1"}


def test_a_v1_channel_ignores_messages_that_name_a_join_ref() -> None:
    # Joined without a join_ref, Phoenix stores nil: any non-nil join_ref is not that join's.
    connection = joined(V1, join_ref=None)
    assert connection.receive(v1_frame(TOPIC, "shout", "2", join_ref="1")) == []
    (event,) = connection.receive(v1_frame(TOPIC, "shout", "3"))
    assert isinstance(event, EventReceived)


def test_server_side_close() -> None:
    connection = joined(join_ref="1")
    close = connection.close(TOPIC)
    assert close is not None
    assert json.loads(close.text) == ["1", "1", TOPIC, "phx_close", {}]
    assert connection.channels == {}
    assert connection.close(TOPIC) is None


# ---------------------------------------------------------------------------- events


def test_event_of_a_joined_channel_and_its_reply() -> None:
    connection = joined(join_ref="1")
    (event,) = connection.receive(frame("1", "2", TOPIC, "shout", {"body": "hi"}))
    assert isinstance(event, EventReceived)
    assert event.message.payload == {"body": "hi"}
    reply = connection.reply(event.message, "ok", {"echo": "hi"})
    assert reply is not None
    assert json.loads(reply.text) == [
        "1",
        "2",
        TOPIC,
        "phx_reply",
        {"status": "ok", "response": {"echo": "hi"}},
    ]
    # Without a ref there is nothing to answer.
    (no_ref,) = connection.receive(frame("1", None, TOPIC, "shout"))
    assert isinstance(no_ref, EventReceived)
    assert connection.reply(no_ref.message, "ok", {}) is None


def test_event_on_a_topic_not_joined_is_unmatched_with_null_join_ref() -> None:
    # socket.ex encode_ignore: a Reply with no join_ref.
    connection = ChannelConnection(V2)
    reply = one_frame(connection.receive(frame("1", "2", "room:other", "shout")))
    assert reply == [
        None,
        "2",
        "room:other",
        "phx_reply",
        {"status": "error", "response": {"reason": "unmatched topic"}},
    ]
    # The "phoenix" topic only answers heartbeats.
    assert one_frame(connection.receive(frame(None, "3", "phoenix", "other")))[4] == {
        "status": "error",
        "response": {"reason": "unmatched topic"},
    }


def test_push_needs_a_joined_topic() -> None:
    with pytest.raises(LocalProtocolError):
        ChannelConnection(V2).push(TOPIC, "presence_state", {})


# ---------------------------------------------------------------------------- hostile input


def check_refused(connection: ChannelConnection, text: str, close_code: int = 1008) -> None:
    before = dict(connection.channels)
    with pytest.raises(ProtocolViolation) as refused:
        connection.receive(text)
    assert refused.value.close_code == close_code
    assert connection.channels == before


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '["1","1","room:lobby","phx_join",{}',
        '["1","1","room:lobby","shout",{"x":NaN}]',  # Python's json reads it; JSON does not
        '["1","1","room:lobby","shout",Infinity]',
        "[" * 5000 + "]" * 5000,  # deeper than the parser goes
    ],
)
def test_malformed_json_is_refused(text: str) -> None:
    check_refused(joined(), text)


@pytest.mark.parametrize(
    "text",
    [
        '{"topic":"room:lobby","event":"shout","payload":{},"ref":null}',  # V1 to a V2 socket
        '["1","1","room:lobby","shout"]',
        '["1","1","room:lobby","shout",{},"extra"]',
        "[]",
        '"a string"',
        "null",
        frame("1", "1", "", "shout"),
        frame("1", "1", "t" * 257, "shout"),
        frame("1", "1", 5, "shout"),
        frame("1", "1", None, "shout"),
        frame("1", "1", TOPIC, 5),
        frame("1", "1", TOPIC, ""),
        frame("1", "1", TOPIC, ["phx_join"]),
        frame("1", {"a": 1}, TOPIC, "shout"),
        frame({"a": 1}, "1", TOPIC, "shout"),
        frame("1", [1], TOPIC, "shout"),
        frame("1", 1.5, TOPIC, "shout"),
        frame("1", True, TOPIC, "shout"),
        frame("1", "r" * 257, TOPIC, "shout"),
        frame("1", 2**64, TOPIC, "shout"),
        frame("1", -(2**63) - 1, TOPIC, "shout"),
    ],
)
def test_wrong_v2_shapes_are_refused(text: str) -> None:
    check_refused(joined(), text)


def test_refs_at_the_limits_are_accepted() -> None:
    connection = joined()
    for ref in ("r" * 256, 2**64 - 1, -(2**63), 0):
        reply = one_frame(connection.receive(frame(None, ref, "phoenix", "heartbeat")))
        assert reply[1] == ref
    connection.receive(frame("1", "1", "t" * 256, "shout"))


@pytest.mark.parametrize(
    "text",
    [
        '["1","1","room:lobby","shout",{}]',  # V2 to a V1 socket
        '{"event":"shout","payload":{},"ref":"1"}',
        '{"topic":"room:lobby","payload":{},"ref":"1"}',
        '{"topic":"room:lobby","event":"shout","ref":"1"}',
        '{"topic":"room:lobby","event":"shout","payload":{}}',  # ref is required, even null
        v1_frame("", "shout", "1"),
        v1_frame(TOPIC, 7, "1"),
        v1_frame(TOPIC, "shout", {"r": 1}),
        v1_frame(TOPIC, "shout", "1", join_ref=[1]),
    ],
)
def test_wrong_v1_shapes_are_refused(text: str) -> None:
    check_refused(joined(V1, join_ref=None), text)


def test_lone_surrogates_are_refused() -> None:
    connection = joined()
    # An escape that decodes to a lone surrogate: no UTF-8 frame could carry it back.
    check_refused(connection, '["1","1","room:lobby","shout",{"n":"\\ud800"}]', 1007)
    check_refused(connection, '["1","1","\\udc00","shout",{}]', 1007)
    # A raw lone surrogate in the text (an ASGI server never hands one over).
    check_refused(connection, '["1","1","room:lobby","shout",{"n":"\ud800"}]', 1007)
    # A surrogate pair is one character: fine.
    (event,) = connection.receive('["1","1","room:lobby","shout",{"n":"\\ud83d\\ude00"}]')
    assert isinstance(event, EventReceived)
    assert event.message.payload == {"n": "😀"}


def test_oversized_frames_are_refused_with_1009_counting_utf8_bytes() -> None:
    connection = joined(max_frame_bytes=100)
    head = frame("1", "2", TOPIC, "shout", {"s": ""})
    fits = frame("1", "2", TOPIC, "shout", {"s": "x" * (100 - len(head))})
    assert len(fits.encode()) == 100
    assert len(connection.receive(fits)) == 1
    check_refused(connection, frame("1", "2", TOPIC, "shout", {"s": "x" * (101 - len(head))}), 1009)
    # Fewer than 100 characters, more than 100 bytes: "é" is two bytes of UTF-8.
    wide = json.dumps(["1", "2", TOPIC, "shout", {"s": "é" * 40}], ensure_ascii=False)
    assert len(wide) <= 100 < len(wide.encode())
    check_refused(connection, wide, 1009)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_constructor_checks_its_limits(bad: Any) -> None:
    with pytest.raises(LocalProtocolError):
        ChannelConnection(V2, max_channels=bad)
    with pytest.raises(LocalProtocolError):
        ChannelConnection(V2, max_frame_bytes=bad)


# ---------------------------------------------------------------------------- property

TOPICS = ["room:a", "room:b", "room:c", "phoenix"]
EVENTS = ["phx_join", "phx_leave", "heartbeat", "shout", "phx_reply", "phx_close"]

# Any character, lone surrogates included, and often: a frame can only carry them as JSON
# escapes (or as a raw str through the sans-IO API), and no reply can carry them back.
# (st.text drops surrogates from such an alphabet: the characters are joined by hand.)
any_text = st.lists(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12).map(
    "".join
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: json.dumps writes them, the decoder must refuse
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
good_refs = st.sampled_from(["1", "2", "3", None, 1, 2])
good_payloads: st.SearchStrategy[dict[str, int]] = st.one_of(
    st.just({}), st.dictionaries(st.text(max_size=3), st.integers())
)
good_events = st.sampled_from([*EVENTS, "phx_join", "phx_join", "phx_leave"])
good_v2 = st.tuples(good_refs, good_refs, st.sampled_from(TOPICS), good_events, good_payloads).map(
    lambda t: json.dumps(list(t))
)
good_v1 = st.fixed_dictionaries(
    {
        "topic": st.sampled_from(TOPICS),
        "event": good_events,
        "payload": good_payloads,
        "ref": good_refs,
    },
    optional={"join_ref": good_refs},
).map(json.dumps)
refs = st.one_of(good_refs, json_values)
topics = st.one_of(st.sampled_from(TOPICS), json_values)
events = st.one_of(st.sampled_from(EVENTS), json_values)
hostile = st.one_of(
    st.tuples(refs, refs, topics, events, json_values).map(lambda t: json.dumps(list(t))),
    st.fixed_dictionaries(
        {"topic": topics, "event": events, "payload": json_values, "ref": refs},
        optional={"join_ref": refs, "extra": json_values},
    ).map(json.dumps),
    st.lists(json_values, max_size=7).map(json.dumps),
    json_values.map(json.dumps),
    any_text,
)


def frames_for(serializer: Serializer) -> st.SearchStrategy[str]:
    """Mostly well-formed frames of the serializer (so that channels come and go), and some
    of anything."""
    good = good_v2 if serializer is V2 else good_v1
    return st.integers(0, 3).flatmap(lambda pick: good if pick else hostile)


sessions = st.sampled_from([V1, V2]).flatmap(
    lambda serializer: st.tuples(
        st.just(serializer),
        st.lists(st.tuples(frames_for(serializer), st.booleans()), min_size=1, max_size=40),
    )
)


def check_frame(serializer: Serializer, text: str) -> None:
    """A frame the connection produced: UTF-8, JSON, the serializer's shape."""
    text.encode()  # no lone surrogate
    value = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))
    if serializer is V2:
        assert isinstance(value, list)
        assert len(value) == 5
        assert value[3] in ("phx_reply", "phx_close")
    else:
        assert isinstance(value, dict)
        assert set(value) == {"topic", "event", "payload", "ref"}


@given(session=sessions, max_channels=st.integers(1, 3))
def test_arbitrary_frames_only_raise_protocol_violation_and_keep_channels_sound(
    session: tuple[Serializer, list[tuple[str, bool]]], max_channels: int
) -> None:
    serializer, steps = session
    connection = ChannelConnection(serializer, max_channels=max_channels, max_frame_bytes=4096)
    for text, accept in steps:
        before = dict(connection.channels)
        close_code: int | None = None
        try:
            inputs = connection.receive(text)
        except ProtocolViolation as violation:
            close_code = violation.close_code
            inputs = []
        if close_code is not None:
            assert close_code in (1007, 1008, 1009)
            assert connection.channels == before
            continue
        for item in inputs:
            if isinstance(item, Send):
                check_frame(serializer, item.text)
            elif isinstance(item, JoinRequested):
                assert item.topic not in connection.channels
                if accept:
                    reply = connection.accept_join(item)
                else:
                    reply = connection.reject_join(item, "no")
                check_frame(serializer, reply.text)
            elif isinstance(item, ChannelClosed):
                assert item.topic in before
                assert item.join_ref == before[item.topic]
                assert item.topic not in connection.channels
            else:
                assert isinstance(item, EventReceived)
                assert item.message.topic in connection.channels
                reply_to = connection.reply(item.message, "ok", {})
                if reply_to is not None:
                    check_frame(serializer, reply_to.text)
        channels = connection.channels
        assert type(channels) is dict
        assert len(channels) <= max_channels
        for topic, join_ref in channels.items():
            assert type(topic) is str
            assert topic
            assert join_ref is None or type(join_ref) in (str, int)
            # Every joined channel can be pushed to, with a frame that JSON carries.
            push = connection.push(topic, "presence_state", {})
            assert json.loads(push.text) is not None
