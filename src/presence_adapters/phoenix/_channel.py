"""The Phoenix Channels protocol, sans-IO: one websocket's frames in, frames and decisions out.

Theory of operation
===================

A Phoenix client (phoenix.js, or any client of its protocol) multiplexes *channels* over one
websocket: each channel is a topic it joined, named by the client's ``join_ref``. Every frame is a
message ``(join_ref, ref, topic, event, payload)``, written as a JSON array by serializer V2
(``vsn=2.0.0``, what phoenix.js speaks) or as a JSON object without ``join_ref`` by V1
(``vsn=1.0.0``, the server's default when the client names none; SPEC §5.4).

:class:`ChannelConnection` holds one socket's protocol state (the serializer and the joined
channels) and turns each received frame into *inputs* for the endpoint:

* frames it answers alone come back as :class:`Send`: heartbeat replies, replies to ``phx_leave``
  and ``phx_close`` for a left channel, ``"unmatched topic"`` errors, limit errors;
* :class:`JoinRequested`: the application decides (:meth:`ChannelConnection.accept_join` or
  :meth:`ChannelConnection.reject_join`, which return the reply);
* :class:`ChannelClosed`: a channel ended (left, or replaced by a new join of its topic): the
  endpoint stops its presence and its diffs;
* :class:`EventReceived`: a custom event for a joined channel; the endpoint may answer it with
  :meth:`ChannelConnection.reply`.

It mirrors Phoenix.Socket's handling (``lib/phoenix/socket.ex``): a second join of a joined topic
closes the old channel first (``phx_close`` with the old join_ref); a message carrying an older
join_ref is ignored as stale; a leave of a topic not joined is answered ``ok``; anything else for
a topic not joined is answered ``{"reason": "unmatched topic"}``; at most ``max_channels``
channels per socket (``"too many channels joined"``).

What a client sends is hostile until checked: a frame that is not valid JSON (``NaN`` and lone
surrogate escapes included, which Phoenix's Jason refuses too), not the serializer's shape, or
larger than ``max_frame_bytes`` raises :class:`ProtocolViolation` (the endpoint closes the
socket, as Phoenix's decoder crashing does), and the state is unchanged.

Refs are opaque and echoed as the client wrote them: phoenix.js sends strings, other clients
send integers, and a reply carries the very JSON value it answers, as Phoenix's does. A channel's
own pushes and replies (``presence_state``, the replies to its events and to its leave) carry the
channel's join ref: the join's ``join_ref``, or its ``ref`` when the client sent none (Phoenix's
``join_ref || ref``).
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any, Union

import attrs

from presence_core import InvalidArgument, LocalProtocolError, RemoteProtocolError

__all__ = [
    "ChannelClosed",
    "ChannelConnection",
    "EventReceived",
    "Input",
    "JoinRequested",
    "Message",
    "ProtocolViolation",
    "Ref",
    "Send",
    "Serializer",
    "broadcast_text",
    "negotiate",
]

MAX_NAME_CHARS = 256
"""The longest topic, event, ref or join_ref accepted (Phoenix sets none; one is needed here)."""

MIN_REF_INT = -(2**63)
MAX_REF_INT = 2**64 - 1
"""The range of integer refs accepted (64 bits, signed or not)."""

Ref = Union[str, int, None]  # noqa: UP007
"""A ref or join_ref: opaque, echoed as the client wrote it (a string, an integer, or null)."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# A frame holding a surrogate escape may decode to a lone surrogate, which no UTF-8 frame can
# carry back; the rare frame that matches is checked in full.

_VERSION = re.compile(
    r"([0-9]+)\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?", re.ASCII
)


class ProtocolViolation(RemoteProtocolError):
    """The client sent something the protocol does not allow; the endpoint closes the socket.

    Attributes:
        close_code: the websocket close code to use (1008 policy violation, 1009 too big).
    """

    def __init__(self, message: str, *, close_code: int = 1008) -> None:
        super().__init__(message)
        self.close_code = close_code


class Serializer(enum.Enum):
    """A serializer of Phoenix Channels messages (chosen by the client's ``vsn``)."""

    V1 = "1.0.0"
    """Objects ``{"topic", "event", "payload", "ref"}``; no join_ref on the wire."""
    V2 = "2.0.0"
    """Arrays ``[join_ref, ref, topic, event, payload]`` (phoenix.js)."""

    def encode(self, message: Message) -> str:
        """The JSON text of ``message``, compact with sorted keys, as Phoenix's Jason writes it.

        Raises:
            InvalidArgument: JSON cannot carry the message (its payload holds NaN, bytes, an
                object, keys that are not strings, or nests too deep); it is also a
                ``TypeError`` and a ``ValueError``, what this raised before.
        """
        if self is Serializer.V1:
            frame: object = {
                "event": message.event,
                "payload": message.payload,
                "ref": message.ref,
                "topic": message.topic,
            }
        else:
            frame = [message.join_ref, message.ref, message.topic, message.event, message.payload]
        # allow_nan=False: NaN is not JSON (phoenix.js's JSON.parse would fail on the frame);
        # what cannot be encoded raises here instead of going out.
        try:
            return json.dumps(
                frame, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(f"JSON cannot carry the message: {exc}") from None

    def decode(self, text: str) -> Message:
        """Parse one frame.

        Raises:
            ProtocolViolation: not JSON, or not the serializer's shape.
        """
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ProtocolViolation(f"the frame is not valid JSON: {exc}") from None
        if _SURROGATE_ESCAPE.search(text) is not None:
            try:
                json.dumps(value, ensure_ascii=False).encode()
            except UnicodeEncodeError:
                raise ProtocolViolation(
                    "the frame holds a lone surrogate escape: it is not valid Unicode",
                    close_code=1007,
                ) from None
        if self is Serializer.V1:
            if (
                not isinstance(value, dict)
                or not {"topic", "event", "payload", "ref"} <= value.keys()
            ):
                raise ProtocolViolation("a V1 frame is an object with topic, event, payload, ref")
            join_ref, ref = value.get("join_ref"), value["ref"]
            topic, event, payload = value["topic"], value["event"], value["payload"]
        else:
            if not isinstance(value, list) or len(value) != 5:
                raise ProtocolViolation(
                    "a V2 frame is an array [join_ref, ref, topic, event, payload]"
                )
            join_ref, ref, topic, event, payload = value
        for what, field in (("topic", topic), ("event", event)):
            if type(field) is not str or not field or len(field) > MAX_NAME_CHARS:
                raise ProtocolViolation(
                    f"{what} must be a string of 1 to {MAX_NAME_CHARS} characters"
                )
        return Message(
            join_ref=_ref(join_ref, "join_ref"),
            ref=_ref(ref, "ref"),
            topic=topic,
            event=event,
            payload=payload,
        )


def _refuse_constant(name: str) -> object:
    # Python's json reads NaN, Infinity and -Infinity; JSON (and Phoenix's Jason) does not.
    raise ValueError(f"{name} is not JSON")


def _ref(value: object, what: str) -> Ref:
    # phoenix.js sends refs as strings; other clients send integers. Both are opaque to us and
    # kept as they are, so that a reply echoes the very value the client sent.
    if value is None:
        return None
    if type(value) is int:
        if not MIN_REF_INT <= value <= MAX_REF_INT:
            raise ProtocolViolation(f"{what} must be an integer of at most 64 bits")
        return value
    if type(value) is not str or len(value) > MAX_NAME_CHARS:
        raise ProtocolViolation(
            f"{what} must be null, an integer or a string of at most {MAX_NAME_CHARS} characters"
        )
    return value


def negotiate(vsn: str | None) -> Serializer:
    """The serializer for a client's ``vsn`` parameter: a version ``2.x.y`` is V2, ``1.x.y`` (or
    none) is V1.

    Raises:
        ProtocolViolation: anything else, a malformed version included (Phoenix refuses the
            connection).
    """
    if vsn is None:
        return Serializer.V1
    match = _VERSION.fullmatch(vsn) if len(vsn) <= MAX_NAME_CHARS else None
    major = match.group(1) if match is not None else None
    if major == "2":
        return Serializer.V2
    if major == "1":
        return Serializer.V1
    raise ProtocolViolation(f"unsupported serializer version {vsn!r}")


@attrs.frozen(kw_only=True)
class Message:
    """One Phoenix Channels message, in either direction.

    Attributes:
        join_ref: the channel's join ref (``None`` for broadcasts; V1 never writes it).
        ref: the message's ref, echoed by its reply (``None`` for pushes).
        topic: the channel's topic.
        event: ``phx_join``, ``phx_reply``, ``presence_diff``, an application event, ...
        payload: any JSON value (an object for every event of the protocol).
    """

    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: Any


@attrs.frozen
class Send:
    """A frame to write to the websocket."""

    text: str


@attrs.frozen(kw_only=True)
class JoinRequested:
    """The client asks to join ``topic``; the application decides (see
    :meth:`ChannelConnection.accept_join` and :meth:`ChannelConnection.reject_join`).

    Attributes:
        message: the ``phx_join`` message (its payload is the client's join params).
    """

    message: Message

    @property
    def topic(self) -> str:
        """The topic to join."""
        return self.message.topic


@attrs.frozen(kw_only=True)
class ChannelClosed:
    """A joined channel ended: stop its presence and its diffs.

    Attributes:
        topic: the channel's topic.
        join_ref: the join ref of the channel that ended.
        reason: ``"left"`` (the client left) or ``"duplicate_join"`` (a new join replaced it).
    """

    topic: str
    join_ref: Ref
    reason: str


@attrs.frozen(kw_only=True)
class EventReceived:
    """An application event for a joined channel.

    Attributes:
        message: the message (answer it with :meth:`ChannelConnection.reply` if it has a ref).
    """

    message: Message


Input = Union[Send, JoinRequested, ChannelClosed, EventReceived]  # noqa: UP007
"""What :meth:`ChannelConnection.receive` returns, in the order to act on it."""


def _reply(
    serializer: Serializer, request: Message, status: str, response: object, *, join_ref: Ref
) -> Send:
    return Send(
        serializer.encode(
            Message(
                join_ref=join_ref,
                ref=request.ref,
                topic=request.topic,
                event="phx_reply",
                payload={"status": status, "response": response},
            )
        )
    )


class ChannelConnection:
    """The protocol state of one websocket (see the module docs).

    Args:
        serializer: from :func:`negotiate`.
        max_channels: the most channels joined at once (Phoenix's default: 100).
        max_frame_bytes: the largest frame accepted, in bytes of UTF-8.
    """

    def __init__(
        self, serializer: Serializer, *, max_channels: int = 100, max_frame_bytes: int = 65536
    ) -> None:
        for what, value in (("max_channels", max_channels), ("max_frame_bytes", max_frame_bytes)):
            if type(value) is not int or value < 1:
                raise LocalProtocolError(f"{what} must be an int >= 1, not {value!r}")
        self.serializer = serializer
        self.max_channels = max_channels
        self.max_frame_bytes = max_frame_bytes
        self.channels: dict[str, Ref] = {}
        """The joined channels: topic to the join's join_ref (``None`` for V1 clients)."""
        self._own_refs: dict[str, Ref] = {}
        # Topic to the channel's own join ref, carried by its pushes and replies: the join's
        # join_ref, or its ref when the client sent none (Phoenix's `join_ref || ref`).

    def __repr__(self) -> str:
        return f"<ChannelConnection {self.serializer.name} channels={len(self.channels)}>"

    # ------------------------------------------------------------------ inbound

    def receive(self, text: str) -> list[Input]:
        """Take one frame from the client.

        Raises:
            ProtocolViolation: the frame is too large or malformed (close the socket); the state
                is unchanged.
        """
        limit = self.max_frame_bytes
        if len(text) > limit:  # more characters than bytes allowed: no need to encode it
            raise ProtocolViolation(f"frame over max_frame_bytes={limit}", close_code=1009)
        try:
            size = len(text.encode())
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 frame can hold it
            raise ProtocolViolation("the frame is not valid Unicode", close_code=1007) from None
        if size > limit:
            raise ProtocolViolation(f"frame over max_frame_bytes={limit}", close_code=1009)
        message = self.serializer.decode(text)
        topic, event = message.topic, message.event
        if topic == "phoenix" and event == "heartbeat":
            return [_reply(self.serializer, message, "ok", {}, join_ref=None)]
        if event == "phx_join":
            if topic in self.channels:
                # Phoenix closes the existing channel for the new join (shutdown_duplicate_channel):
                # its phx_close carries the old join_ref, as join_ref and as ref.
                current = self._forget(topic)
                return [
                    ChannelClosed(topic=topic, join_ref=current, reason="duplicate_join"),
                    self._close(topic, current),
                    JoinRequested(message=message),
                ]
            if len(self.channels) >= self.max_channels:
                reason = {"reason": "too many channels joined"}
                return [
                    _reply(self.serializer, message, "error", reason, join_ref=message.join_ref)
                ]
            return [JoinRequested(message=message)]
        if topic not in self.channels:
            if event == "phx_leave":
                return [_reply(self.serializer, message, "ok", {}, join_ref=message.join_ref)]
            # Phoenix's encode_ignore: no join_ref.
            reason = {"reason": "unmatched topic"}
            return [_reply(self.serializer, message, "error", reason, join_ref=None)]
        current = self.channels[topic]
        if message.join_ref is not None and message.join_ref != current:
            return []  # for an older join of this topic: stale, ignored as Phoenix does
        if event == "phx_leave":
            own = self._own_refs[topic]
            self._forget(topic)
            return [
                _reply(self.serializer, message, "ok", {}, join_ref=own),
                ChannelClosed(topic=topic, join_ref=current, reason="left"),
                self._close(topic, current),
            ]
        return [EventReceived(message=message)]

    # ------------------------------------------------------------------ decisions

    def accept_join(self, request: JoinRequested, response: object = None) -> Send:
        """Join the channel; returns the ``ok`` reply (send it before any push of the channel).

        Raises:
            LocalProtocolError: the topic was joined meanwhile.
            InvalidArgument: JSON cannot carry ``response`` (nothing was joined).
        """
        message = request.message
        if message.topic in self.channels:
            raise LocalProtocolError(f"{message.topic!r} is already joined")
        reply = _reply(
            self.serializer,
            message,
            "ok",
            {} if response is None else response,
            join_ref=message.join_ref,
        )
        self.channels[message.topic] = message.join_ref
        self._own_refs[message.topic] = (
            message.join_ref if message.join_ref is not None else message.ref
        )
        return reply

    def reject_join(self, request: JoinRequested, reason: str) -> Send:
        """Refuse the join; returns the ``error`` reply ``{"reason": reason}``."""
        message = request.message
        return _reply(
            self.serializer, message, "error", {"reason": reason}, join_ref=message.join_ref
        )

    def reply(self, message: Message, status: str, response: object) -> Send | None:
        """The reply to an application event (``None`` if it carried no ref: nothing to answer).

        It carries the channel's join ref, as a Phoenix channel's replies do.

        Raises:
            InvalidArgument: JSON cannot carry ``response``.
        """
        if message.ref is None:
            return None
        join_ref = self._own_refs.get(message.topic, message.join_ref)
        return _reply(self.serializer, message, status, response, join_ref=join_ref)

    def close(self, topic: str) -> Send | None:
        """End a joined channel from the server side (as a Phoenix channel that stops): forget it
        and return its ``phx_close``; ``None`` if ``topic`` is not joined."""
        if topic not in self.channels:
            return None
        return self._close(topic, self._forget(topic))

    # ------------------------------------------------------------------ outbound

    def push(self, topic: str, event: str, payload: object) -> Send:
        """A push to a joined channel (``presence_state``): it carries the channel's join ref.

        Raises:
            LocalProtocolError: the topic is not joined.
            InvalidArgument: JSON cannot carry ``payload``.
        """
        if topic not in self.channels:
            raise LocalProtocolError(f"{topic!r} is not joined")
        return Send(
            self.serializer.encode(
                Message(
                    join_ref=self._own_refs[topic],
                    ref=None,
                    topic=topic,
                    event=event,
                    payload=payload,
                )
            )
        )

    def broadcast(self, topic: str, event: str, payload: object) -> str:
        """A broadcast frame (``presence_diff``): null join_ref and ref, as Phoenix's fastlane
        sends it; the same text serves every socket with this serializer.

        Raises:
            InvalidArgument: as :func:`broadcast_text`.
        """
        return broadcast_text(self.serializer, topic, event, payload)

    def _forget(self, topic: str) -> Ref:
        del self._own_refs[topic]
        return self.channels.pop(topic)

    def _close(self, topic: str, join_ref: Ref) -> Send:
        return Send(
            self.serializer.encode(
                Message(join_ref=join_ref, ref=join_ref, topic=topic, event="phx_close", payload={})
            )
        )


def broadcast_text(serializer: Serializer, topic: str, event: str, payload: object) -> str:
    """The frame of a broadcast (null join_ref and ref) for one serializer: a ``presence_diff``
    is ``broadcast_text(serializer, diff.topic, "presence_diff", diff.payload)``.

    Raises:
        InvalidArgument: ``serializer`` is not a :class:`Serializer`, ``topic`` or ``event`` is
            not a non-empty ``str``, or JSON cannot carry ``payload``.
    """
    if not isinstance(serializer, Serializer):
        raise InvalidArgument(f"serializer must be a Serializer, not {type(serializer).__name__}")
    for what, value in (("topic", topic), ("event", event)):
        if type(value) is not str or not value:
            raise InvalidArgument(f"{what} must be a non-empty str, not {value!r}")
    return serializer.encode(
        Message(join_ref=None, ref=None, topic=topic, event=event, payload=payload)
    )
