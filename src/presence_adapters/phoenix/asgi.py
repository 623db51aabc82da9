"""A Phoenix Channels endpoint as an ASGI application: phoenix.js clients connect unchanged.

:class:`PhoenixSocket` serves the websocket (``/socket/websocket`` in :func:`create_app`, where
phoenix.js's ``new Socket("/socket")`` connects). For each socket it runs the sans-IO
:class:`~presence_adapters.phoenix.ChannelConnection` and does what it asks:

* a ``phx_join`` goes to the application's join hook, which decides whether the client may join
  and *what the server tracks for it*: the key and meta come from the hook, never from the client
  unchecked. An accepted join's presence is tracked, then the join is answered ``ok`` and the
  topic's ``presence_state`` pushed (with the channel's join_ref), and from then on every
  ``presence_diff`` of the topic on this node is pushed with null join_ref and ref, the same text
  for every socket. A join the hook fails on (it raises, or what it returns cannot be tracked or
  sent) is answered ``{"reason": "join crashed"}`` and leaves nothing behind;
* a join whose params hold ``"presence": "occupancy"`` asks for the topic's counts instead of its
  presences: after the ``ok`` reply the channel gets ``presence_occupancy`` pushes, ``{"keys":
  n, "presences": m}`` (with the channel's join_ref), one on join and one each time the counts
  change, and neither ``presence_state`` nor ``presence_diff``. ``"presence": "full"`` (or no
  ``"presence"``) is the default, Phoenix's; any other value is refused before the join hook
  runs, with ``{"reason": "join param \"presence\" must be \"full\" or \"occupancy\""}``.
  What the channel tracks is the join hook's decision either way;
* the optional ``topic_options`` hook gives each topic its
  :class:`~presence_core.TopicOptions` (a leave grace period, large-room batching: one
  ``presence_diff`` per tick): it is asked at each accepted join, before the channel listens,
  and what it returns (unless ``None``) is set on the node with :meth:`Presence.configure_topic
  <presence_adapters.Presence.configure_topic>` when it differs from the topic's options;
* a channel's presence lives as long as the channel: leaving it, joining its topic again, closing
  the socket or losing it untracks it (each channel is its own connection id, as each Phoenix
  channel is its own process);
* other events go to the optional event hook, whose :class:`Reply` answers them (a hook that
  fails is answered ``{"reason": "event crashed"}``; the channel goes on).

Bad input never disturbs other sockets. A malformed or oversized frame, a binary frame, or more
messages than the socket's rate allows closes that socket, and so does silence past
``idle_timeout`` (Phoenix's websocket timeout); protocol-level refusals (too many channels, an
unknown topic) are the protocol's error replies. :class:`SocketLimits` holds every per-socket
bound.

:func:`create_app` wraps a :class:`PhoenixSocket` into a whole application: its lifespan opens the
presence node (and, at shutdown, closes every socket with 1001 before the node leaves), and it
can serve the presence page.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any, Union
from urllib.parse import parse_qsl

import anyio
import attrs

from presence_adapters._errors import SubscriptionOverflow
from presence_adapters.presence import DEFAULT_MAX_BUFFERED, Presence, Subscription, TopicDiff
from presence_core import LocalProtocolError, Meta, TopicOptions

from ._channel import (
    ChannelClosed,
    ChannelConnection,
    EventReceived,
    JoinRequested,
    ProtocolViolation,
    Send,
    Serializer,
    broadcast_text,
    negotiate,
)

__all__ = [
    "PRESENCE_PARAM",
    "Accept",
    "ChannelEvent",
    "EventHook",
    "JoinHook",
    "JoinRequest",
    "PhoenixApp",
    "PhoenixSocket",
    "Reject",
    "Reply",
    "SocketLimits",
    "TopicOptionsHook",
    "create_app",
]

logger = logging.getLogger("presence_adapters.phoenix")

Scope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@attrs.frozen(kw_only=True)
class JoinRequest:
    """A client asks to join a topic (what the join hook receives).

    Attributes:
        topic: the topic.
        payload: the client's join params (``{}`` when it sent something that is not an object).
        params: the socket's connect params (the query string: ``vsn``, a token, ...).
        socket_id: this socket's id, unique on this node.
    """

    topic: str
    payload: Mapping[str, Any]
    params: Mapping[str, str]
    socket_id: str


@attrs.frozen(kw_only=True)
class Accept:
    """Let the client join; track ``key`` with ``meta`` for its channel (nothing if ``key`` is
    ``None``).

    Attributes:
        key: the presence key to track, chosen by the server.
        meta: the presence's meta.
        response: the ``response`` of the ``ok`` reply.
    """

    key: str | None = None
    meta: Meta = attrs.field(factory=dict)
    response: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Reject:
    """Refuse the join: the client gets ``{"status": "error", "response": {"reason": reason}}``."""

    reason: str = "unauthorized"


@attrs.frozen(kw_only=True)
class ChannelEvent:
    """An application event on a joined channel (what the event hook receives).

    Attributes:
        topic: the channel's topic.
        event: the event's name.
        payload: its payload (any JSON value).
        socket_id: the socket's id.
        conn: the channel's connection id (what its presence is tracked under).
        key: the key tracked for the channel, or ``None``.
        presence: the node, to ``update`` the channel's presence for example.
    """

    topic: str
    event: str
    payload: Any
    socket_id: str
    conn: str
    key: str | None
    presence: Presence


@attrs.frozen
class Reply:
    """The answer to an application event: ``{"status": status, "response": response}``."""

    response: Mapping[str, Any] = attrs.field(factory=dict)
    status: str = "ok"


JoinHook = Callable[[JoinRequest], Awaitable[Union[Accept, Reject]]]  # noqa: UP007
"""``async on_join(request) -> Accept | Reject``."""

EventHook = Callable[[ChannelEvent], Awaitable[Union[Reply, None]]]  # noqa: UP007
"""``async on_event(event) -> Reply | None`` (``None``: no reply)."""

TopicOptionsHook = Callable[[str], Union[TopicOptions, None]]  # noqa: UP007
"""``topic_options(topic) -> TopicOptions | None``: the options of a topic being joined (``None``:
leave them as they are). A mapping's ``get`` will do: ``{"room:lobby": TopicOptions(...)}.get``."""

PRESENCE_PARAM = "presence"
"""The join param that chooses what a channel receives: ``"full"`` or ``"occupancy"``."""

_PRESENCE_MODES = ("full", "occupancy")
_BAD_PRESENCE_MODE = 'join param "presence" must be "full" or "occupancy"'


def _positive(what: str, *, optional: bool = False) -> Callable[[object, object, object], None]:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LocalProtocolError(f"{what} must be a positive number, not {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise LocalProtocolError(f"{what} must be a positive number, not {value!r}")

    return check


def _positive_int(what: str) -> Callable[[object, object, object], None]:
    # A count: 1.5 channels would pass _positive and then fail every socket at its first frame.
    def check(_instance: object, _attribute: object, value: object) -> None:
        if type(value) is not int or value < 1:
            raise LocalProtocolError(f"{what} must be an int >= 1, not {value!r}")

    return check


@attrs.frozen(kw_only=True)
class SocketLimits:
    """Per-socket bounds, with safe defaults.

    Attributes:
        max_channels: channels joined at once (Phoenix's default, 100).
        max_frame_bytes: the largest frame from the client; larger closes the socket (1009).
        messages_per_second: the sustained rate of frames from the client.
        burst: how many frames may come at once above that rate; beyond, the socket is closed
            (1008): a join flood cannot cost more than this.
        max_buffered: each channel's diff buffer, in presences; a socket that reads slower than
            its topic changes gets a fresh ``presence_state`` instead of a backlog.
        idle_timeout: seconds a client may send nothing (phoenix.js sends a heartbeat every
            30 s) before the socket is closed (1000) and its presences leave: Phoenix's
            websocket ``timeout``, 60 s. ``None``: never (rely on the server's pings).
    """

    max_channels: int = attrs.field(default=100, validator=_positive_int("max_channels"))
    max_frame_bytes: int = attrs.field(default=65536, validator=_positive_int("max_frame_bytes"))
    messages_per_second: float = attrs.field(
        default=50.0, validator=_positive("messages_per_second")
    )
    burst: int = attrs.field(default=200, validator=_positive_int("burst"))
    max_buffered: int = attrs.field(
        default=DEFAULT_MAX_BUFFERED, validator=_positive_int("max_buffered")
    )
    idle_timeout: float | None = attrs.field(
        default=60.0, validator=_positive("idle_timeout", optional=True)
    )


class _TokenBucket:
    __slots__ = ("_at", "_rate", "_size", "_tokens")

    def __init__(self, rate: float, size: int, now: float) -> None:
        self._rate, self._size, self._tokens, self._at = rate, float(size), float(size), now

    def take(self, now: float) -> bool:
        self._tokens = min(self._size, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class _DiffFrames:
    """The text of each recent diff per serializer: one encoding serves every socket."""

    _SIZE = 256

    def __init__(self) -> None:
        # Keyed by id(diff); the diff itself is kept so that the id cannot be reused meanwhile.
        self._recent: collections.OrderedDict[int, tuple[TopicDiff, dict[Serializer, str]]] = (
            collections.OrderedDict()
        )

    def text(self, serializer: Serializer, diff: TopicDiff) -> str:
        entry = self._recent.get(id(diff))
        if entry is None or entry[0] is not diff:
            entry = (diff, {})
            self._recent[id(diff)] = entry
            if len(self._recent) > self._SIZE:
                self._recent.popitem(last=False)
        texts = entry[1]
        text = texts.get(serializer)
        if text is None:
            text = texts[serializer] = broadcast_text(
                serializer, diff.topic, "presence_diff", diff.payload
            )
        return text


class PhoenixSocket:
    """The websocket side of a Phoenix endpoint: an ASGI app for ``websocket`` scopes.

    Args:
        on_join: decides each join (see :data:`JoinHook`).
        on_event: answers application events (see :data:`EventHook`); without it they are
            answered ``{"reason": "unhandled event"}``.
        limits: per-socket bounds.
        presence: the node; :func:`create_app` binds it at startup (see :meth:`bind`).
        topic_options: the options of each topic joined (see :data:`TopicOptionsHook`); a hook
            that raises, or returns something else than a
            :class:`~presence_core.TopicOptions` or ``None``, fails the join (``"join
            crashed"``).
    """

    def __init__(
        self,
        *,
        on_join: JoinHook,
        on_event: EventHook | None = None,
        limits: SocketLimits | None = None,
        presence: Presence | None = None,
        topic_options: TopicOptionsHook | None = None,
    ) -> None:
        self.on_join = on_join
        self.on_event = on_event
        self.limits = limits if limits is not None else SocketLimits()
        self.topic_options = topic_options
        self._presence = presence
        self._ids = itertools.count(1)
        self._frames = _DiffFrames()
        self._sessions: set[anyio.CancelScope] = set()
        self._idle: anyio.Event | None = None

    @property
    def presence(self) -> Presence | None:
        """The node sockets are served from (``None`` until bound)."""
        return self._presence

    def bind(self, presence: Presence | None) -> None:
        """Serve sockets from ``presence`` (``None``: refuse new sockets)."""
        self._presence = presence

    @property
    def open_sockets(self) -> int:
        """How many websockets are being served."""
        return len(self._sessions)

    def close_all(self) -> None:
        """End every socket (they are closed with 1001, going away)."""
        for scope in list(self._sessions):
            scope.cancel()

    async def aclose(self, timeout: float = 5.0) -> None:
        """End every socket (closed with 1001, going away) and wait, at most ``timeout`` seconds,
        until each one has untracked its channels and sent its close frame.

        Call it before stopping the node (after ``bind(None)``, so that no socket starts
        meanwhile): the channels' leaves then go out as ordinary diffs, to this node's
        subscribers too.
        """
        self.close_all()
        with anyio.move_on_after(timeout):
            while self._sessions:
                idle = self._idle = anyio.Event()
                await idle.wait()
        self._idle = None

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "websocket":
            raise LocalProtocolError(f"PhoenixSocket serves websockets, not {scope['type']!r}")
        query = scope.get("query_string", b"").decode("latin-1")
        params = dict(parse_qsl(query, keep_blank_values=True))
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        presence = self._presence
        try:
            serializer = negotiate(params.get("vsn"))
        except ProtocolViolation:
            await send({"type": "websocket.close", "code": 1008})  # before accept: refused
            return
        if presence is None or presence.closed:
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        await send({"type": "websocket.accept"})
        session = _Session(self, presence, serializer, params, f"socket-{next(self._ids)}", send)
        self._sessions.add(session.scope)
        if self._presence is not presence:  # unbound while accepting: the node is stopping
            session.scope.cancel()
        try:
            await session.run(receive)
        finally:
            try:
                await session.finish()
            finally:
                self._sessions.discard(session.scope)
                if not self._sessions and self._idle is not None:
                    self._idle.set()


@attrs.define
class _Channel:
    topic: str
    conn: str
    key: str | None
    subscription: Subscription[Any] | None  # None until an occupancy channel has tracked
    occupancy: bool = False
    scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)


_EVENT_CRASHED = Reply({"reason": "event crashed"}, status="error")


class _Session:
    """One websocket being served."""

    def __init__(
        self,
        endpoint: PhoenixSocket,
        presence: Presence,
        serializer: Serializer,
        params: Mapping[str, str],
        socket_id: str,
        send: ASGISend,
    ) -> None:
        limits = endpoint.limits
        self.endpoint = endpoint
        self.presence = presence
        self.params = params
        self.socket_id = socket_id
        self.protocol = ChannelConnection(
            serializer, max_channels=limits.max_channels, max_frame_bytes=limits.max_frame_bytes
        )
        self.channels: dict[str, _Channel] = {}
        self.close_code: int | None = None
        self._send = send
        # fast_acquire: a free lock is taken without a trip through the event loop, so a diff
        # woken on 1,000 channels starts leaving at once (first socket 25 -> 6 ms at 1,000).
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._bucket = _TokenBucket(limits.messages_per_second, limits.burst, anyio.current_time())
        self._channel_ids = itertools.count(1)
        self._closed_by_client = False
        self.scope = anyio.CancelScope()

    async def write(self, text: str) -> None:
        async with self._send_lock:
            await self._send({"type": "websocket.send", "text": text})

    def stop(self, close_code: int) -> None:
        """End the socket from any task: the server closes it with ``close_code``."""
        if self.close_code is None:
            self.close_code = close_code
        self.scope.cancel()

    async def run(self, receive: ASGIReceive) -> None:
        """Serve the socket until the client leaves, breaks a rule, or the server ends it."""
        try:
            with self.scope:
                async with anyio.create_task_group() as forwarders:
                    await self._read(receive, forwarders)
                    forwarders.cancel_scope.cancel()
        except Exception as exc:  # a write failed because the client went away, or a bug
            logger.info("%s ended: %r", self.socket_id, exc)
            if self.close_code is None:
                self.close_code = 1011  # internal error (not sent if the client is gone)
        if self.scope.cancelled_caught and self.close_code is None:
            self.close_code = 1001  # the server is stopping

    async def _read(self, receive: ASGIReceive, forwarders: anyio.abc.TaskGroup) -> None:
        idle_timeout = self.endpoint.limits.idle_timeout
        while True:
            with anyio.move_on_after(math.inf if idle_timeout is None else idle_timeout) as idle:
                event = await receive()
            if idle.cancelled_caught:
                # A client gone without a word (no FIN) would otherwise stay present forever.
                logger.info("%s sent nothing for %s s: closing it", self.socket_id, idle_timeout)
                self.close_code = 1000  # as Cowboy closes an idle websocket
                return
            kind = event["type"]
            if kind == "websocket.disconnect":
                self._closed_by_client = True
                return
            if kind != "websocket.receive":
                continue
            text = event.get("text")
            if text is None:
                self.close_code = 1003  # binary frames: not part of this protocol's use here
                return
            if not self._bucket.take(anyio.current_time()):
                logger.warning("%s sent more than its rate allows: closing it", self.socket_id)
                self.close_code = 1008
                return
            try:
                inputs = self.protocol.receive(text)
            except ProtocolViolation as exc:
                logger.info("%s: %s; closing it", self.socket_id, exc)
                self.close_code = exc.close_code
                return
            for item in inputs:
                if isinstance(item, Send):
                    await self.write(item.text)
                elif isinstance(item, JoinRequested):
                    await self._join(item, forwarders)
                elif isinstance(item, ChannelClosed):
                    self._end_channel(item.topic)
                else:
                    await self._event(item)

    async def _join(self, request: JoinRequested, forwarders: anyio.abc.TaskGroup) -> None:
        message = request.message
        topic = message.topic
        payload = message.payload if isinstance(message.payload, dict) else {}
        mode = payload.get(PRESENCE_PARAM, "full")
        if not isinstance(mode, str) or mode not in _PRESENCE_MODES:
            await self._refuse(request, _BAD_PRESENCE_MODE)
            return
        join = JoinRequest(
            topic=topic, payload=payload, params=self.params, socket_id=self.socket_id
        )
        decision: object
        try:
            decision = await self.endpoint.on_join(join)
        except Exception:
            logger.exception("the join hook failed for %s on %r", self.socket_id, topic)
            decision = None
        if isinstance(decision, Reject):
            await self._refuse(request, decision.reason)
            return
        if not isinstance(decision, Accept):
            if decision is not None:
                logger.error("the join hook returned %r, not Accept or Reject", decision)
            await self._refuse(request, "join crashed")
            return
        presence = self.presence
        conn = f"{self.socket_id}/{next(self._channel_ids)}"
        push = None
        try:
            # The reply first: a response that JSON cannot carry fails the join before anything
            # is tracked. Then the topic's options, before anything listens. Then subscribe,
            # track and read the state with no await in between: the state holds everything
            # before the subscription's first diff. From the moment the channel is registered,
            # _end_channel (here, or in finish on any exit) undoes it.
            reply = self.protocol.accept_join(request, dict(decision.response))
            self._configure(topic)
            if mode == "occupancy":
                # Counts are a latest value, not a stream to splice onto a state: listen once
                # tracked, so that the first count holds the joiner (in a large room, whose
                # counts are those of its list, the count of the tick that shows the join).
                channel = _Channel(
                    topic=topic, conn=conn, key=decision.key, subscription=None, occupancy=True
                )
                self.channels[topic] = channel
                if decision.key is not None:
                    presence.track(conn, topic, decision.key, decision.meta)
                channel.subscription = presence.watch_occupancy(topic)
            else:
                subscription = presence.subscribe(
                    topic, max_buffered=self.endpoint.limits.max_buffered
                )
                channel = _Channel(
                    topic=topic, conn=conn, key=decision.key, subscription=subscription
                )
                self.channels[topic] = channel
                if decision.key is not None:
                    presence.track(conn, topic, decision.key, decision.meta)
                state = await presence.fetched_list(topic)
                push = self.protocol.push(topic, "presence_state", state)
        except Exception:  # a PresenceError (a meta too large...), the fetch hook, TypeError...
            logger.exception("cannot serve the join of %s on %r", self.socket_id, topic)
            self.protocol.close(topic)
            self._end_channel(topic)
            await self._refuse(request, "join crashed")
            return
        await self.write(reply.text)
        if push is None:  # the first presence_occupancy is the forwarder's
            forwarders.start_soon(self._forward_occupancy, channel)
            return
        await self.write(push.text)
        forwarders.start_soon(self._forward, channel)

    def _configure(self, topic: str) -> None:
        """Give ``topic`` the options the endpoint's ``topic_options`` hook returns."""
        hook = self.endpoint.topic_options
        if hook is None:
            return
        options = hook(topic)
        if options is None:
            return
        if not isinstance(options, TopicOptions):
            raise LocalProtocolError(
                f"topic_options returned a {type(options).__name__}, not TopicOptions or None"
            )
        if self.presence.topic_options(topic) != options:
            self.presence.configure_topic(topic, options)

    async def _refuse(self, request: JoinRequested, reason: str) -> None:
        try:
            reply = self.protocol.reject_join(request, reason)
        except (TypeError, ValueError):  # a reason JSON cannot carry
            logger.exception("the join hook's reason cannot be sent")
            reply = self.protocol.reject_join(request, "join crashed")
        await self.write(reply.text)

    def _push_text(self, channel: _Channel, event: str, payload: object) -> str | None:
        """A push of ``channel`` (with its join_ref), or ``None`` once the channel is over: the
        client may have left it while its leave's reply was being written."""
        if self.channels.get(channel.topic) is not channel:
            return None
        if channel.topic not in self.protocol.channels:
            return None
        return self.protocol.push(channel.topic, event, payload).text

    async def _forward_occupancy(self, channel: _Channel) -> None:
        subscription = channel.subscription
        assert subscription is not None
        with channel.scope:
            async with subscription:
                async for occupancy in subscription:
                    counts = {"keys": occupancy.keys, "presences": occupancy.presences}
                    text = self._push_text(channel, "presence_occupancy", counts)
                    if text is None:
                        return
                    await self.write(text)
            if self.presence.closed:  # the node stopped: so does every socket it served
                self.stop(1001)

    async def _forward(self, channel: _Channel) -> None:
        presence, frames = self.presence, self.endpoint._frames
        serializer = self.protocol.serializer
        limit = self.endpoint.limits.max_buffered
        with channel.scope:
            while True:
                assert channel.subscription is not None
                try:
                    async with channel.subscription as subscription:
                        async for diff in subscription:
                            await self.write(frames.text(serializer, diff))
                except SubscriptionOverflow:
                    # Too far behind: start over from a fresh state, which phoenix.js reconciles.
                    channel.subscription = presence.subscribe(channel.topic, max_buffered=limit)
                    state = await presence.fetched_list(channel.topic)
                    text = self._push_text(channel, "presence_state", state)
                    if text is None:
                        return  # the channel ended meanwhile
                    await self.write(text)
                    continue
                if presence.closed:  # the node stopped: so does every socket it served
                    self.stop(1001)
                return

    def _end_channel(self, topic: str) -> None:
        channel = self.channels.pop(topic, None)
        if channel is None:
            return
        channel.scope.cancel()
        if channel.subscription is not None:
            channel.subscription.close()
        if not self.presence.closed:
            self.presence.untrack_conn(channel.conn)

    async def _event(self, item: EventReceived) -> None:
        message = item.message
        channel = self.channels.get(message.topic)
        if channel is None:
            return
        hook = self.endpoint.on_event
        answer: Reply | None
        if hook is None:
            answer = Reply({"reason": "unhandled event"}, status="error")
        else:
            event = ChannelEvent(
                topic=message.topic,
                event=message.event,
                payload=message.payload,
                socket_id=self.socket_id,
                conn=channel.conn,
                key=channel.key,
                presence=self.presence,
            )
            result: object
            try:
                result = await hook(event)
            except Exception:
                logger.exception("the event hook failed on %r %r", message.topic, message.event)
                result = _EVENT_CRASHED
            if result is None or isinstance(result, Reply):
                answer = result
            else:
                logger.error("the event hook returned %r, not a Reply or None", result)
                answer = _EVENT_CRASHED
        if answer is None:
            return
        try:
            reply = self.protocol.reply(message, answer.status, dict(answer.response))
        except (TypeError, ValueError):  # a response JSON cannot carry
            logger.exception("the event hook's reply on %r cannot be sent", message.topic)
            reply = self.protocol.reply(message, "error", {"reason": "event crashed"})
        if reply is not None:
            await self.write(reply.text)

    async def finish(self) -> None:
        """Untrack every channel, and close the websocket if the server ends it."""
        for topic in list(self.channels):
            self._end_channel(topic)
        if self.close_code is not None and not self._closed_by_client:
            with anyio.move_on_after(1.0, shield=True):
                try:
                    await self._send({"type": "websocket.close", "code": self.close_code})
                except Exception:  # the client is already gone
                    logger.debug("%s: the close frame could not be sent", self.socket_id)


class PhoenixApp:
    """An ASGI application: the lifespan runs the presence node, the websocket serves phoenix.js,
    and (optionally) the presence page is served at ``/``.

    Made by :func:`create_app`. Attributes:
        socket: the :class:`PhoenixSocket`.
        path: where the websocket is served.
    """

    def __init__(
        self,
        node: Callable[[], AbstractAsyncContextManager[Presence]],
        socket: PhoenixSocket,
        *,
        path: str,
        page: bool,
    ) -> None:
        self.socket = socket
        self.path = path
        self._node = node
        self._page = page

    @property
    def presence(self) -> Presence | None:
        """The running node (``None`` before the lifespan started it, or after it stopped)."""
        return self.socket.presence

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            if scope.get("path") == self.path:
                await self.socket(scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008})
        elif kind == "http":
            await self._http(scope, send)

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            context = self._node()
            presence = await context.__aenter__()
        except Exception as exc:
            logger.exception("the presence node did not start")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        self.socket.bind(presence)
        await send({"type": "lifespan.startup.complete"})
        failed: BaseException | None = None
        try:
            await receive()  # lifespan.shutdown
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self.socket.bind(None)
            if failed is None:
                # Every socket closes (1001) and untracks its channels while the node runs.
                await self.socket.aclose()
            else:
                self.socket.close_all()
            try:
                if failed is None:
                    await context.__aexit__(None, None, None)
                else:
                    await context.__aexit__(type(failed), failed, failed.__traceback__)
            finally:
                if failed is None:
                    await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, send: ASGISend) -> None:
        path = scope.get("path", "/")
        body: bytes | None = None
        kind = "text/plain; charset=utf-8"
        if self._page and path in ("/", "/index.html"):
            body, kind = _static("index.html"), "text/html; charset=utf-8"
        elif self._page and path.startswith("/static/"):
            name = path[len("/static/") :]
            body = _static(name)
            kind = _CONTENT_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
        status = 200 if body is not None else 404
        if body is None:
            body = b"not found\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", kind.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "png": "image/png",
    "svg": "image/svg+xml",
}


def _static(name: str) -> bytes | None:
    """A file of the package's ``static`` folder, or ``None`` (names with a path are refused)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    resource = resources.files("presence_adapters.phoenix").joinpath("static").joinpath(name)
    try:
        return resource.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def create_app(
    node: Callable[[], AbstractAsyncContextManager[Presence]],
    *,
    on_join: JoinHook,
    on_event: EventHook | None = None,
    limits: SocketLimits | None = None,
    path: str = "/socket/websocket",
    page: bool = False,
    topic_options: TopicOptionsHook | None = None,
) -> PhoenixApp:
    """A whole ASGI application serving phoenix.js clients from one presence node.

    Args:
        node: opens the node, e.g. ``lambda: open_node(transport, config=..., keyring=...)``
            (the asyncio driver under uvicorn; the anyio driver under Hypercorn on trio). The
            lifespan enters it at startup and leaves it at shutdown (the graceful permdown goes
            out then).
        on_join: decides each join and what is tracked (see :data:`JoinHook`).
        on_event: answers application events (see :data:`EventHook`).
        limits: per-socket bounds.
        path: the websocket's path (phoenix.js's ``new Socket("/socket")`` uses
            ``/socket/websocket``).
        page: also serve the presence page at ``/`` (who is online in a room, live).
        topic_options: each joined topic's :class:`~presence_core.TopicOptions` (see
            :data:`TopicOptionsHook` and :class:`PhoenixSocket`), e.g. large-room batching for
            some topics: ``{"room:lobby": TopicOptions(large_room=True)}.get``. A grace period
            for every topic is simpler set in the node's ``TrackerConfig``
            (``leave_grace_period``).
    """
    socket = PhoenixSocket(
        on_join=on_join, on_event=on_event, limits=limits, topic_options=topic_options
    )
    return PhoenixApp(node, socket, path=path, page=page)
