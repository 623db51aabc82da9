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

What a client sends is hostile until checked: a frame that is not valid JSON, not the
serializer's shape, or larger than ``max_frame_bytes`` raises :class:`ProtocolViolation` (the
endpoint closes the socket, as Phoenix's decoder crashing does), and the state is unchanged.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Union

import attrs

from presence_core import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ChannelClosed",
    "ChannelConnection",
    "EventReceived",
    "Input",
    "JoinRequested",
    "Message",
    "ProtocolViolation",
    "Send",
    "Serializer",
    "broadcast_text",
    "negotiate",
]

MAX_NAME_CHARS = 256
"""The longest topic, event, ref or join_ref accepted (Phoenix sets none; one is needed here)."""


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
        """The JSON text of ``message``, compact with sorted keys, as Phoenix's Jason writes it."""
        if self is Serializer.V1:
            frame: object = {
                "event": message.event,
                "payload": message.payload,
                "ref": message.ref,
                "topic": message.topic,
            }
        else:
            frame = [message.join_ref, message.ref, message.topic, message.event, message.payload]
        return json.dumps(frame, separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    def decode(self, text: str) -> Message:
        """Parse one frame.

        Raises:
            ProtocolViolation: not JSON, or not the serializer's shape.
        """
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolViolation(f"the frame is not valid JSON: {exc}") from None
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


def _ref(value: object, what: str) -> str | None:
    # phoenix.js sends refs as strings; other clients send integers. Both are opaque to us.
    if value is None:
        return None
    if type(value) is int:
        value = str(value)
    if type(value) is not str or len(value) > MAX_NAME_CHARS:
        raise ProtocolViolation(f"{what} must be null, a string or an integer")
    return value


def negotiate(vsn: str | None) -> Serializer:
    """The serializer for a client's ``vsn`` parameter: ``2.x`` is V2, ``1.x`` (or none) is V1.

    Raises:
        ProtocolViolation: any other version (Phoenix refuses the connection).
    """
    if vsn is None:
        return Serializer.V1
    major = vsn.split(".", 1)[0]
    if major == "2":
        return Serializer.V2
    if major == "1":
        return Serializer.V1
    raise ProtocolViolation(f"unsupported serializer version {vsn!r}")


@attrs.frozen(kw_only=True)
class Message:
    """One Phoenix Channels message, in either direction.

    Attributes:
        join_ref: the channel's join ref (``None`` for broadcasts and for V1).
        ref: the message's ref, echoed by its reply (``None`` for pushes).
        topic: the channel's topic.
        event: ``phx_join``, ``phx_reply``, ``presence_diff``, an application event, ...
        payload: any JSON value (an object for every event of the protocol).
    """

    join_ref: str | None
    ref: str | None
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
    join_ref: str | None
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
    serializer: Serializer, request: Message, status: str, response: object, *, join_ref: bool
) -> Send:
    return Send(
        serializer.encode(
            Message(
                join_ref=request.join_ref if join_ref else None,
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
        self.channels: dict[str, str | None] = {}
        """The joined channels: topic to join ref."""

    def __repr__(self) -> str:
        return f"<ChannelConnection {self.serializer.name} channels={len(self.channels)}>"

    # ------------------------------------------------------------------ inbound

    def receive(self, text: str) -> list[Input]:
        """Take one frame from the client.

        Raises:
            ProtocolViolation: the frame is too large or malformed (close the socket).
        """
        if len(text) > self.max_frame_bytes or len(text.encode()) > self.max_frame_bytes:
            raise ProtocolViolation(
                f"frame over max_frame_bytes={self.max_frame_bytes}", close_code=1009
            )
        message = self.serializer.decode(text)
        topic, event = message.topic, message.event
        if topic == "phoenix" and event == "heartbeat":
            return [_reply(self.serializer, message, "ok", {}, join_ref=False)]
        joined = topic in self.channels
        current = self.channels.get(topic)
        if event == "phx_join":
            if joined:
                # Phoenix closes the existing channel for the new join (shutdown_duplicate_channel).
                del self.channels[topic]
                return [
                    ChannelClosed(topic=topic, join_ref=current, reason="duplicate_join"),
                    self._close(topic, current),
                    JoinRequested(message=message),
                ]
            if len(self.channels) >= self.max_channels:
                return [
                    _reply(
                        self.serializer,
                        message,
                        "error",
                        {"reason": "too many channels joined"},
                        join_ref=True,
                    )
                ]
            return [JoinRequested(message=message)]
        if not joined:
            if event == "phx_leave":
                return [_reply(self.serializer, message, "ok", {}, join_ref=True)]
            return [
                _reply(
                    self.serializer, message, "error", {"reason": "unmatched topic"}, join_ref=False
                )
            ]
        if message.join_ref is not None and message.join_ref != current:
            return []  # for an older join of this topic: stale, ignored as Phoenix does
        if event == "phx_leave":
            del self.channels[topic]
            return [
                _reply(self.serializer, message, "ok", {}, join_ref=True),
                ChannelClosed(topic=topic, join_ref=current, reason="left"),
                self._close(topic, current),
            ]
        return [EventReceived(message=message)]

    # ------------------------------------------------------------------ decisions

    def accept_join(self, request: JoinRequested, response: object = None) -> Send:
        """Join the channel; returns the ``ok`` reply (send it before any push of the channel).

        Raises:
            LocalProtocolError: the topic was joined meanwhile.
        """
        message = request.message
        if message.topic in self.channels:
            raise LocalProtocolError(f"{message.topic!r} is already joined")
        self.channels[message.topic] = message.join_ref
        return _reply(
            self.serializer, message, "ok", {} if response is None else response, join_ref=True
        )

    def reject_join(self, request: JoinRequested, reason: str) -> Send:
        """Refuse the join; returns the ``error`` reply ``{"reason": reason}``."""
        return _reply(self.serializer, request.message, "error", {"reason": reason}, join_ref=True)

    def reply(self, message: Message, status: str, response: object) -> Send | None:
        """The reply to an application event (``None`` if it carried no ref: nothing to answer)."""
        if message.ref is None:
            return None
        return _reply(self.serializer, message, status, response, join_ref=True)

    # ------------------------------------------------------------------ outbound

    def push(self, topic: str, event: str, payload: object) -> Send:
        """A push to a joined channel (``presence_state``): it carries the channel's join_ref.

        Raises:
            LocalProtocolError: the topic is not joined.
        """
        if topic not in self.channels:
            raise LocalProtocolError(f"{topic!r} is not joined")
        return Send(
            self.serializer.encode(
                Message(
                    join_ref=self.channels[topic],
                    ref=None,
                    topic=topic,
                    event=event,
                    payload=payload,
                )
            )
        )

    def broadcast(self, topic: str, event: str, payload: object) -> str:
        """A broadcast frame (``presence_diff``): null join_ref and ref, as Phoenix's fastlane
        sends it; the same text serves every socket with this serializer."""
        return broadcast_text(self.serializer, topic, event, payload)

    def _close(self, topic: str, join_ref: str | None) -> Send:
        return Send(
            self.serializer.encode(
                Message(join_ref=join_ref, ref=join_ref, topic=topic, event="phx_close", payload={})
            )
        )


def broadcast_text(serializer: Serializer, topic: str, event: str, payload: object) -> str:
    """The frame of a broadcast (null join_ref and ref) for one serializer."""
    return serializer.encode(
        Message(join_ref=None, ref=None, topic=topic, event=event, payload=payload)
    )
