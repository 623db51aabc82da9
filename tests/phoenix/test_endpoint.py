"""The Phoenix Channels endpoint (:func:`create_app`) end to end, as a client sees it.

Most scenarios run the ASGI app through Starlette's TestClient (lifespan and websockets, no
server), with a fast tracker: joins, the ``presence_state`` push with the channel's join_ref,
``presence_diff`` broadcasts with null join_ref and ref, the join and event hooks (and their
failures), leaves, closes, rejoins, V1 clients, hostile clients (binary, malformed, oversized,
floods, silence), a slow socket, the node stopping, and two nodes on one :class:`MemoryHub`.

The node-stopping scenarios go through :class:`Nodes`, an ASGI app that routes ``/n1/...`` and
``/n2/...`` to endpoints whose own lifespans it runs, so that one endpoint can shut down while a
socket is open and the other node goes on. Leaving the ``with TestClient(...)`` block cannot
show that: TestClient runs the lifespan shutdown and then waits for every websocket session it
started, which only ends when the test leaves its ``with websocket_connect(...)`` block, so the
socket would have to be closed by the client first.

Two smoke tests run the same app under real servers, since "works under uvicorn and hypercorn"
is a requirement that TestClient cannot show (it never parses a websocket frame): uvicorn with
wsproto on asyncio, and Hypercorn on trio with the anyio driver, each talking to a minimal
wsproto client over a TCP stream.

TestClient's websocket calls block without a timeout: every scenario runs in a daemon thread
joined with a deadline (:func:`run_bounded`), and the real-server scenarios run under
``anyio.fail_after``. Nothing sleeps: tests wait for frames, which come in order per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal
from urllib.parse import urlencode

import anyio
import anyio.abc
import pytest
import trio
import uvicorn
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.websockets import WebSocketDisconnect
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)

from asgi_testing import TestClient, WebSocketTestSession, run_bounded
from presence_adapters import MemoryHub, Presence, TopicDiff, Transport
from presence_adapters.drivers import anyio as anyio_driver
from presence_adapters.drivers import asyncio as asyncio_driver
from presence_adapters.phoenix import (
    Accept,
    ChannelEvent,
    EventHook,
    JoinRequest,
    PhoenixApp,
    Reject,
    Reply,
    SocketLimits,
    create_app,
)
from presence_core import JSONValue, LocalProtocolError, TrackerConfig, sync_diff, sync_state

TOPIC = "room:lobby"
OK: dict[str, Any] = {"status": "ok", "response": {}}
DEADLINE = 10.0
"""Seconds one scenario may take (each takes well under one)."""

CONFIG = TrackerConfig(broadcast_period=0.02, max_silent_periods=2, permdown_period=1.0)
SLOW_FAILURE_DETECTION = TrackerConfig(
    broadcast_period=0.02, max_silent_periods=2, down_period=30.0, permdown_period=60.0
)
"""For two nodes: a node that left is only seen gone within a test by its graceful permdown."""

Backend = Literal["asyncio", "trio"]

Frame = tuple[Any, Any, str, str, Any]
"""``(join_ref, ref, topic, event, payload)``; V1 frames have ``join_ref`` None."""

NodeFactory = Callable[..., AbstractAsyncContextManager[Presence]]


# ---------------------------------------------------------------------------- the application


async def on_join(request: JoinRequest) -> Accept | Reject:
    """The identity is the socket's ``user`` param (a real app checks a token there); whatever
    the join payload says about keys or metas is ignored."""
    user = request.params.get("user", "")
    if not user:
        return Reject("unauthorized")
    topic = request.topic
    if topic == "room:boom":
        raise RuntimeError("the join hook broke")
    if topic == "room:weird":
        return "yes"  # type: ignore[return-value]  # a broken hook
    if topic == "room:big":
        return Accept(key=user, meta={"blob": "x" * 20_000})  # over max_meta_bytes
    if topic == "room:unsendable":
        return Accept(key=user, meta={"user": user}, response={"when": object()})
    if topic == "room:watch":
        return Accept(response={"watching": True})  # no presence: only watch the topic
    return Accept(key=user, meta={"user": user, "via": request.socket_id}, response={"you": user})


async def on_event(event: ChannelEvent) -> Reply | None:
    payload = event.payload if isinstance(event.payload, dict) else {}
    name = event.event
    if name == "echo":
        return Reply({"echo": event.payload})
    if name == "silent":
        return None
    if name == "boom":
        raise RuntimeError("the event hook broke")
    if name == "weird":
        return "not a reply"  # type: ignore[return-value]  # a broken hook
    if name == "nan":
        return Reply({"x": float("nan")})  # JSON cannot carry it
    if name == "status" and event.key is not None:
        status = payload.get("status")

        def set_status(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
            return {**meta, "status": status}

        event.presence.update(event.conn, event.topic, event.key, set_status)
        return Reply({"status": status})
    return Reply({"reason": "unknown event"}, status="error")


def make_app(
    *,
    on_event: EventHook | None = on_event,
    limits: SocketLimits | None = None,
    config: TrackerConfig = CONFIG,
    hub: MemoryHub | None = None,
    name: str = "n1",
    open_node: NodeFactory = asyncio_driver.open_node,
) -> PhoenixApp:
    def node() -> AbstractAsyncContextManager[Presence]:
        transport: Transport | None = hub.connect(name) if hub is not None else None
        return open_node(transport, config=config)

    return create_app(node, on_join=on_join, on_event=on_event, limits=limits)


class Nodes:
    """Several endpoints as one ASGI app: ``/<name>/...`` reaches node ``name``.

    Its lifespan runs every endpoint's own lifespan; :meth:`stop` runs one endpoint's shutdown
    (the real one: sockets closed, node left) while the others go on.
    """

    def __init__(self, apps: Mapping[str, PhoenixApp]) -> None:
        self.apps = dict(apps)
        self._stop: dict[str, anyio.Event] = {}
        self._done: dict[str, anyio.Event] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        name, _, rest = scope["path"].lstrip("/").partition("/")
        await self.apps[name]({**scope, "path": f"/{rest}"}, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        async with anyio.create_task_group() as lifespans:
            for name, app in self.apps.items():
                self._stop[name], self._done[name] = anyio.Event(), anyio.Event()
                await lifespans.start(self._run, name, app)
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            for name in self.apps:
                await self.stop(name)
        await send({"type": "lifespan.shutdown.complete"})

    async def _run(
        self, name: str, app: PhoenixApp, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        messages = [{"type": "lifespan.startup"}]

        async def receive() -> dict[str, str]:
            if messages:
                return messages.pop()
            await self._stop[name].wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: Mapping[str, Any]) -> None:
            assert message["type"] in ("lifespan.startup.complete", "lifespan.shutdown.complete")
            if message["type"] == "lifespan.startup.complete":
                task_status.started()

        try:
            await app({"type": "lifespan", "state": {}}, receive, send)
        finally:
            self._done[name].set()

    async def stop(self, name: str) -> None:
        """Shut node ``name``'s endpoint down; returns once it has."""
        self._stop[name].set()
        await self._done[name].wait()


# ---------------------------------------------------------------------------- the client side


class Closed(Exception):
    """The server closed the websocket."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Frames:
    """What one client received, read in order; :meth:`take` returns the first frame of a kind
    and keeps the others for later takes. It also keeps each topic's presences as phoenix.js's
    ``Presence`` would (``presence_state`` then ``presence_diff`` s, in arrival order)."""

    def __init__(self, *, v1: bool) -> None:
        self.v1 = v1
        self.pending: list[Frame] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.refs = itertools.count(1)
        self.join_refs: dict[str, str] = {}

    def encode(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> str:
        if self.v1:
            value: dict[str, Any] = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                value["join_ref"] = join_ref
            return json.dumps(value)
        return json.dumps([join_ref, ref, topic, event, payload])

    def decode(self, text: str) -> Frame:
        value = json.loads(text)
        if self.v1:
            assert isinstance(value, dict), value
            assert set(value) == {"topic", "event", "payload", "ref"}, value  # never a join_ref
            frame: Frame = (None, value["ref"], value["topic"], value["event"], value["payload"])
        else:
            assert isinstance(value, list), value
            assert len(value) == 5, value
            frame = (value[0], value[1], value[2], value[3], value[4])
        topic, event, payload = frame[2], frame[3], frame[4]
        if event == "presence_state":
            self.views[topic] = sync_state(self.views.get(topic, {}), payload).state
        elif event == "presence_diff":
            assert frame[:2] == (None, None), frame  # the fastlane: null join_ref and ref
            self.views[topic] = sync_diff(self.views.get(topic, {}), payload).state
        return frame

    def find(self, event: str, topic: str, ref: Any) -> Frame | None:
        for index, frame in enumerate(self.pending):
            if frame[3] == event and frame[2] == topic and (ref is None or frame[1] == ref):
                return self.pending.pop(index)
        return None

    def pushed(self, topic: str = TOPIC) -> list[Frame]:
        """Pending pushes and broadcasts of ``topic`` (not replies)."""
        return [frame for frame in self.pending if frame[2] == topic and frame[3] != "phx_reply"]


class Peer(Frames):
    """A Phoenix client over a TestClient websocket."""

    def __init__(self, ws: WebSocketTestSession, *, v1: bool = False) -> None:
        super().__init__(v1=v1)
        self.ws = ws

    def send(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any = None) -> None:
        self.ws.send_text(
            self.encode(join_ref, ref, topic, event, {} if payload is None else payload)
        )

    def request(self, event: str, payload: Any = None, topic: str = TOPIC) -> str:
        """Send ``event`` on a joined ``topic`` (with its join_ref); returns the ref."""
        ref = str(next(self.refs))
        self.send(self.join_refs.get(topic), ref, topic, event, payload)
        return ref

    def read(self) -> Frame:
        message = self.ws.receive()
        if message["type"] == "websocket.close":
            raise Closed(message.get("code", 1000))
        return self.decode(message["text"])

    def take(self, event: str, topic: str = TOPIC, *, ref: Any = None) -> Frame:
        found = self.find(event, topic, ref)
        while found is None:
            frame = self.read()
            if frame[3] == event and frame[2] == topic and (ref is None or frame[1] == ref):
                return frame
            self.pending.append(frame)
        return found

    def reply(self, ref: str, topic: str = TOPIC) -> Frame:
        return self.take("phx_reply", topic, ref=ref)

    def join(self, topic: str = TOPIC, payload: Any = None) -> Frame:
        """Join ``topic`` (join_ref = ref, as phoenix.js does); returns the reply."""
        ref = str(next(self.refs))
        self.send(ref, ref, topic, "phx_join", payload)
        reply = self.reply(ref, topic)
        if reply[4]["status"] == "ok":
            self.join_refs[topic] = ref
        return reply

    def joined(self, topic: str = TOPIC) -> Any:
        """Join ``topic``, check the ok reply and the state push; returns the state."""
        reply = self.join(topic)
        assert reply[4]["status"] == "ok", reply
        return self.state(topic)

    def state(self, topic: str = TOPIC) -> Any:
        join_ref, ref, _, _, payload = self.take("presence_state", topic)
        assert join_ref == (None if self.v1 else self.join_refs[topic])
        assert ref is None
        return payload

    def diff(self, topic: str = TOPIC) -> Any:
        return self.take("presence_diff", topic)[4]

    def next_leave(self, topic: str = TOPIC) -> Any:
        """The next diff of ``topic`` with a leave (the joins before it are skipped)."""
        while not (diff := self.diff(topic))["leaves"]:
            pass
        return diff

    def heartbeat(self) -> None:
        ref = str(next(self.refs))
        self.send(None, ref, "phoenix", "heartbeat", {})
        reply = self.reply(ref, "phoenix")
        assert reply == (None, ref, "phoenix", "phx_reply", OK)

    def closed(self) -> int:
        """Read until the server closes the socket; returns the close code."""
        try:
            while True:
                self.pending.append(self.read())
        except Closed as closed:
            return closed.code

    def wait_for(self, topic: str, keys: set[str]) -> dict[str, Any]:
        """Read until the client's presences of ``topic`` have exactly ``keys``: the presence
        frames of the topic read meanwhile (pending ones too) are consumed, others kept."""
        self.pending = [frame for frame in self.pending if not _presence_of(frame, topic)]
        while set(self.views.get(topic, {})) != keys:
            frame = self.read()
            if not _presence_of(frame, topic):
                self.pending.append(frame)
        return self.views[topic]


def _presence_of(frame: Frame, topic: str) -> bool:
    return frame[2] == topic and frame[3] in ("presence_state", "presence_diff")


@contextlib.contextmanager
def connect(
    client: TestClient, user: str | None = None, *, vsn: str | None = "2.0.0", node: str = ""
) -> Iterator[Peer]:
    query = {name: value for name, value in (("vsn", vsn), ("user", user)) if value is not None}
    path = f"{'/' + node if node else ''}/socket/websocket?{urlencode(query)}"
    with client.websocket_connect(path) as ws:
        yield Peer(ws, v1=vsn is None or vsn.startswith("1."))


def serve(
    app: Any, scenario: Callable[[TestClient], None], *, backend: Backend = "asyncio"
) -> None:
    """Run ``scenario`` with a TestClient of ``app`` (lifespan included), bounded in time."""

    def run() -> None:
        with TestClient(app, backend=backend) as client:
            scenario(client)

    run_bounded(run, DEADLINE)


def node_of(app: PhoenixApp) -> Presence:
    presence = app.presence
    assert presence is not None
    return presence


def portal_of(client: TestClient) -> anyio.from_thread.BlockingPortal:
    portal = client.portal
    assert portal is not None
    return portal


def metas(presences: Any, key: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = presences[key]["metas"]
    return result


def join_hook_recording(requests: list[JoinRequest]) -> Callable[[JoinRequest], Any]:
    async def hook(request: JoinRequest) -> Accept | Reject:
        requests.append(request)
        return await on_join(request)

    return hook


async def first(subscription: Any) -> Any:
    return await subscription.__anext__()


async def drain(subscription: Any) -> list[Any]:
    return [item async for item in subscription]


# ---------------------------------------------------------------------------- joins


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_join_state_then_diffs_to_every_channel_of_the_topic(backend: Backend) -> None:
    driver = asyncio_driver if backend == "asyncio" else anyio_driver
    app = make_app(open_node=driver.open_node)

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        with connect(client, "alice") as alice, connect(client, "bob") as bob:
            reply = alice.join()
            assert reply == (
                "1",
                "1",
                TOPIC,
                "phx_reply",
                {"status": "ok", "response": {"you": "alice"}},
            )
            state = alice.state()  # the channel's join_ref, ref null
            assert list(state) == ["alice"]
            (meta,) = metas(state, "alice")
            assert meta["user"] == "alice"
            assert isinstance(meta["phx_ref"], str)
            assert alice.diff() == {"joins": state, "leaves": {}}  # its own join, broadcast

            bob_state = bob.joined()
            assert bob_state.keys() == {"alice", "bob"}
            joined = alice.diff()
            assert joined == {"joins": {"bob": bob_state["bob"]}, "leaves": {}}
            assert bob.diff() == joined  # the same diff to every channel of the topic

            with connect(client, "carol") as carol:
                carol.joined("room:other")  # another topic: alice and bob hear nothing of it
                carol.joined()
                for peer in (alice, bob):
                    assert peer.diff()["joins"].keys() == {"carol"}
                carol_presence = presence.list(TOPIC)["carol"]
            # carol's socket closed: both her channels were untracked.
            for peer in (alice, bob):
                assert peer.diff() == {"joins": {}, "leaves": {"carol": carol_presence}}
            assert presence.list(TOPIC).keys() == {"alice", "bob"}
            assert presence.list("room:other") == {}
            assert "room:other" not in alice.views

    serve(app, scenario, backend=backend)


def test_the_join_hook_binds_the_identity() -> None:
    requests: list[JoinRequest] = []
    app = make_app()
    app.socket.on_join = join_hook_recording(requests)

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        with connect(client, "alice") as alice, connect(client, "bob") as bob:
            # The client claims another identity in its join params: the hook decides.
            claim = {"user": "mallory", "key": "mallory", "meta": {"admin": True}}
            ref = str(next(alice.refs))
            alice.send(ref, ref, TOPIC, "phx_join", claim)
            assert alice.reply(ref)[4] == {"status": "ok", "response": {"you": "alice"}}
            alice.join_refs[TOPIC] = ref
            state = alice.state()
            assert state.keys() == {"alice"}
            (meta,) = metas(state, "alice")
            assert meta == {
                "user": "alice",
                "via": requests[0].socket_id,
                "phx_ref": meta["phx_ref"],
            }
            # Events cannot change the key either: the hook updates the channel's own presence.
            alice.reply(alice.request("status", {"status": "away", "key": "mallory"}))
            assert presence.list(TOPIC).keys() == {"alice"}
            assert metas(presence.list(TOPIC), "alice")[0]["status"] == "away"
            bob.joined()

        first_request, second_request = requests
        assert first_request.topic == TOPIC
        assert first_request.payload == claim
        assert first_request.params == {"vsn": "2.0.0", "user": "alice"}
        assert second_request.params["user"] == "bob"
        assert first_request.socket_id != second_request.socket_id

    serve(app, scenario)


def test_a_rejected_join() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with connect(client) as anonymous:  # no user: the hook refuses
            assert anonymous.join() == (
                "1",
                "1",
                TOPIC,
                "phx_reply",
                {"status": "error", "response": {"reason": "unauthorized"}},
            )
            # Not joined: an event on the topic is an unmatched topic (null join_ref).
            ref = anonymous.request("echo")
            assert anonymous.reply(ref) == (
                None,
                ref,
                TOPIC,
                "phx_reply",
                {"status": "error", "response": {"reason": "unmatched topic"}},
            )
            anonymous.heartbeat()
        assert node_of(app).topics() == []

    serve(app, scenario)


@pytest.mark.parametrize("topic", ["room:boom", "room:weird"])
def test_a_join_hook_that_raises_or_misbehaves_is_join_crashed(topic: str) -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            assert alice.join(topic)[4] == {
                "status": "error",
                "response": {"reason": "join crashed"},
            }
            alice.heartbeat()  # the socket goes on
            alice.joined()
            assert node_of(app).topics() == [TOPIC]

    serve(app, scenario)


@pytest.mark.parametrize("topic", ["room:big", "room:unsendable"])
def test_a_join_that_cannot_be_tracked_or_answered_is_join_crashed(topic: str) -> None:
    # room:big: the meta is over max_meta_bytes (LimitExceeded inside the endpoint);
    # room:unsendable: the hook's response is no JSON. Either way nothing is tracked.
    app = make_app()

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        portal = portal_of(client)
        watcher = portal.call(presence.subscribe, topic)
        with connect(client, "alice") as alice:
            assert alice.join(topic)[4] == {
                "status": "error",
                "response": {"reason": "join crashed"},
            }
            assert presence.list(topic) == {}
            alice.heartbeat()
            # Not even a join and a leave went out: the next diff of the topic is this one.
            portal.call(presence.track, "probe", topic, "probe", {})
            diff: TopicDiff = portal.call(first, watcher)
            assert diff.joins.keys() == {"probe"}
            assert diff.leaves == {}
            # The channel is not joined: events are unmatched.
            ref = alice.request("echo", topic=topic)
            assert alice.reply(ref, topic)[4]["response"] == {"reason": "unmatched topic"}
        watcher.close()

    serve(app, scenario)


def test_a_join_without_a_key_only_watches() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        with connect(client, "alice") as alice:
            reply = alice.join("room:watch")
            assert reply[4] == {"status": "ok", "response": {"watching": True}}
            assert alice.state("room:watch") == {}
            portal_of(client).call(presence.track, "c", "room:watch", "carol", {})
            assert alice.diff("room:watch")["joins"].keys() == {"carol"}
            assert presence.list("room:watch").keys() == {"carol"}

    serve(app, scenario)


# ---------------------------------------------------------------------------- leaving


def test_leave_untracks_and_closes_the_channel() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        with connect(client, "alice") as alice, connect(client, "bob") as bob:
            alice.joined()
            bob.joined()
            bob_presence = presence.list(TOPIC)["bob"]
            ref = bob.request("phx_leave")
            assert bob.reply(ref) == ("1", ref, TOPIC, "phx_reply", OK)
            assert bob.take("phx_close") == ("1", "1", TOPIC, "phx_close", {})
            assert alice.next_leave() == {"joins": {}, "leaves": {"bob": bob_presence}}
            assert presence.list(TOPIC).keys() == {"alice"}
            # bob's channel is gone, his socket is not.
            ref = bob.request("echo")
            assert bob.reply(ref)[4]["response"] == {"reason": "unmatched topic"}
            bob.heartbeat()

    serve(app, scenario)


def test_closing_a_socket_untracks_all_its_channels() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        with connect(client, "alice") as alice:
            alice.joined()
            alice.joined("room:other")
            with connect(client, "bob") as bob:
                bob.joined()
                bob.joined("room:other")
                alice.wait_for(TOPIC, {"alice", "bob"})
                alice.wait_for("room:other", {"alice", "bob"})
            assert alice.wait_for(TOPIC, {"alice"}).keys() == {"alice"}
            alice.wait_for("room:other", {"alice"})
            assert presence.list(TOPIC).keys() == presence.list("room:other").keys() == {"alice"}

    serve(app, scenario)


def test_rejoining_a_topic_replaces_the_channel_and_its_presence() -> None:
    # socket.ex: a phx_join of a joined topic shuts the old channel down (phx_close with the
    # old join_ref) and joins anew; here the old presence leaves and the new one joins.
    app = make_app()

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        with connect(client, "alice") as alice, connect(client, "bob") as bob:
            alice.joined()
            bob.joined()
            alice.wait_for(TOPIC, {"alice", "bob"})
            (old,) = metas(presence.list(TOPIC), "bob")
            bob.send("5", "5", TOPIC, "phx_join", {})
            assert bob.take("phx_close") == ("1", "1", TOPIC, "phx_close", {})
            assert bob.reply("5") == (
                "5",
                "5",
                TOPIC,
                "phx_reply",
                {"status": "ok", "response": {"you": "bob"}},
            )
            bob.join_refs[TOPIC] = "5"
            state = bob.state()  # with the new join_ref
            (new,) = metas(state, "bob")
            assert new["phx_ref"] != old["phx_ref"]
            left, joined = alice.diff(), alice.diff()
            assert left == {"joins": {}, "leaves": {"bob": {"metas": [old]}}}
            assert joined == {"joins": {"bob": {"metas": [new]}}, "leaves": {}}
            assert metas(presence.list(TOPIC), "bob") == [new]
            # Messages of the old join are stale: ignored, not answered.
            bob.send("1", "old", TOPIC, "echo", {})
            bob.heartbeat()
            assert bob.find("phx_reply", TOPIC, "old") is None

    serve(app, scenario)


# ---------------------------------------------------------------------------- events


def test_the_event_hook_answers_events() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            alice.joined()
            ref = alice.request("echo", {"a": [1, "b"]})
            assert alice.reply(ref) == (
                "1",
                ref,
                TOPIC,
                "phx_reply",
                {"status": "ok", "response": {"echo": {"a": [1, "b"]}}},
            )
            crashed = {"status": "error", "response": {"reason": "event crashed"}}
            for event in ("boom", "weird", "nan"):
                assert alice.reply(alice.request(event))[4] == crashed, event
            assert alice.reply(alice.request("other"))[4] == {
                "status": "error",
                "response": {"reason": "unknown event"},
            }
            # None: no reply. Frames are answered in order, so the heartbeat's reply coming
            # first shows that none was sent.
            silent = alice.request("silent")
            alice.send("1", None, TOPIC, "echo", {})  # no ref: nothing to answer either
            alice.heartbeat()
            assert alice.find("phx_reply", TOPIC, silent) is None
            assert [frame for frame in alice.pending if frame[3] == "phx_reply"] == []
            assert node_of(app).list(TOPIC).keys() == {"alice"}  # the channel lives on

    serve(app, scenario)


def test_without_an_event_hook_events_are_unhandled() -> None:
    app = make_app(on_event=None)

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            alice.joined()
            ref = alice.request("echo")
            assert alice.reply(ref) == (
                "1",
                ref,
                TOPIC,
                "phx_reply",
                {"status": "error", "response": {"reason": "unhandled event"}},
            )

    serve(app, scenario)


def test_an_update_through_the_event_hook_is_one_diff_with_phx_ref_prev() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice, connect(client, "bob") as bob:
            alice.joined()
            bob.joined()
            alice.wait_for(TOPIC, {"alice", "bob"})
            (old,) = metas(alice.views[TOPIC], "bob")
            ref = bob.request("status", {"status": "away"})
            assert bob.reply(ref)[4] == {"status": "ok", "response": {"status": "away"}}
            update = alice.next_leave()
            assert update["leaves"] == {"bob": {"metas": [old]}}
            (new,) = metas(update["joins"], "bob")
            assert new == {
                **old,
                "status": "away",
                "phx_ref": new["phx_ref"],
                "phx_ref_prev": old["phx_ref"],
            }
            assert metas(alice.views[TOPIC], "bob") == [new]

    serve(app, scenario)


# ---------------------------------------------------------------------------- V1


@pytest.mark.parametrize("vsn", ["1.0.0", None])
def test_v1_sockets_get_v1_frames(vsn: str | None) -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with connect(client, "alice", vsn=vsn) as alice, connect(client, "bob") as bob:
            assert alice.v1
            ref = str(next(alice.refs))
            alice.send(None, ref, TOPIC, "phx_join", {})
            assert alice.reply(ref) == (
                None,
                ref,
                TOPIC,
                "phx_reply",
                {"status": "ok", "response": {"you": "alice"}},
            )
            assert alice.state().keys() == {"alice"}  # decode() checked: no join_ref key
            alice.heartbeat()
            bob.joined()  # a V2 socket on the same topic
            assert alice.wait_for(TOPIC, {"alice", "bob"}).keys() == {"alice", "bob"}
            ref = alice.request("echo", {"v": 1})
            assert alice.reply(ref)[4] == {"status": "ok", "response": {"echo": {"v": 1}}}
            ref = alice.request("phx_leave")
            assert alice.reply(ref) == (None, ref, TOPIC, "phx_reply", OK)
            assert alice.take("phx_close") == (None, None, TOPIC, "phx_close", {})
            bob.wait_for(TOPIC, {"bob"})

    serve(app, scenario)


# ---------------------------------------------------------------------------- hostile clients


@pytest.mark.parametrize(
    ("frame", "close_code"),
    [
        pytest.param(b"\x00\x01", 1003, id="binary"),
        pytest.param("not json", 1008, id="malformed-json"),
        pytest.param(
            '{"topic":"room:lobby","event":"x","payload":{},"ref":"1"}', 1008, id="v1-on-v2"
        ),
        pytest.param('["1","1","room:lobby","phx_join"]', 1008, id="four-elements"),
        pytest.param('["1","2","room:lobby","echo",{"n":"\\udc00"}]', 1007, id="lone-surrogate"),
    ],
)
def test_a_bad_frame_closes_that_socket_only(frame: str | bytes, close_code: int) -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        with connect(client, "alice") as alice:
            alice.joined()
            with connect(client, "mallory") as mallory:
                mallory.joined()
                alice.wait_for(TOPIC, {"alice", "mallory"})
                if isinstance(frame, bytes):
                    mallory.ws.send_bytes(frame)
                else:
                    mallory.ws.send_text(frame)
                assert mallory.closed() == close_code
            # mallory's channel was untracked; alice goes on.
            alice.wait_for(TOPIC, {"alice"})
            alice.heartbeat()
            assert presence.list(TOPIC).keys() == {"alice"}

    serve(app, scenario)


def test_an_oversized_frame_closes_with_1009() -> None:
    app = make_app(limits=SocketLimits(max_frame_bytes=200))

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            alice.joined()
            alice.reply(alice.request("echo", {"s": "x" * 100}))  # under the limit
            alice.request("echo", {"s": "é" * 100})  # 100 characters, 200 bytes + the rest
            assert alice.closed() == 1009
        assert node_of(app).topics() == []

    serve(app, scenario)


def test_a_flood_beyond_the_rate_closes_with_1008() -> None:
    app = make_app(limits=SocketLimits(burst=5, messages_per_second=0.01))

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            for _ in range(5):
                alice.heartbeat()
            alice.send(None, "6", "phoenix", "heartbeat", {})
            assert alice.closed() == 1008
            assert alice.pending == []  # the sixth frame was not answered

    serve(app, scenario)


def test_a_slow_socket_starts_over_from_a_fresh_state() -> None:
    # Each channel buffers at most max_buffered presences of diffs. Three tracks in one go
    # (no await in between, so the socket cannot read any of them) overflow alice's buffer:
    # she gets a fresh presence_state, with her channel's join_ref, instead of the backlog.
    app = make_app(limits=SocketLimits(max_buffered=1))

    def crowd(presence: Presence) -> None:
        for n in range(3):
            presence.track(f"conn-x{n}", TOPIC, f"x{n}", {"n": n})

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        portal = portal_of(client)
        with connect(client, "alice") as alice:
            alice.joined()
            portal.call(crowd, presence)
            fresh = alice.state()
            assert fresh.keys() == {"alice", "x0", "x1", "x2"}
            backlog = [frame for frame in alice.pending if frame[3] == "presence_diff"]
            assert all(frame[4]["joins"].keys() <= {"alice"} for frame in backlog), backlog
            # The new subscription carries on from that state.
            portal.call(presence.untrack_conn, "conn-x0")
            assert alice.next_leave()["leaves"].keys() == {"x0"}
            assert alice.views[TOPIC].keys() == {"alice", "x1", "x2"}

    serve(app, scenario)


def test_a_silent_client_is_closed_and_its_presences_leave() -> None:
    # Phoenix's websocket timeout (60 s after the last frame received; phoenix.js sends a
    # heartbeat every 30 s): a client gone without a FIN must not stay present forever.
    app = make_app(limits=SocketLimits(idle_timeout=0.2))

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            alice.joined()
            assert node_of(app).list(TOPIC).keys() == {"alice"}
            assert alice.closed() == 1000  # as Cowboy closes an idle websocket
        assert node_of(app).list(TOPIC) == {}

    serve(app, scenario)


@pytest.mark.parametrize("limit", ["max_channels", "max_frame_bytes", "burst", "max_buffered"])
@pytest.mark.parametrize("bad", [0, 1.5, True])
def test_socket_limits_counts_are_ints(limit: str, bad: object) -> None:
    options: dict[str, Any] = {limit: bad}
    with pytest.raises(LocalProtocolError):
        SocketLimits(**options)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "60"])
def test_socket_limits_times_are_positive_numbers(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        SocketLimits(idle_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        SocketLimits(messages_per_second=bad)  # type: ignore[arg-type]
    assert SocketLimits(idle_timeout=None).idle_timeout is None


# ---------------------------------------------------------------------------- the node


def test_the_node_stopping_closes_sockets_with_1001_and_untracks() -> None:
    app = make_app()
    nodes = Nodes({"n1": app})

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        portal = portal_of(client)
        with connect(client, "alice", node="n1") as alice:
            alice.joined()
            watcher = portal.call(presence.subscribe, TOPIC)
            portal.call(nodes.stop, "n1")  # the endpoint's lifespan shutdown
            assert alice.closed() == 1001
        # alice's channel was untracked while the node still ran: its subscribers saw her leave.
        diffs: list[TopicDiff] = portal.call(drain, watcher)
        assert [(set(diff.joins), set(diff.leaves)) for diff in diffs] == [(set(), {"alice"})]
        assert presence.closed
        assert app.presence is None
        with pytest.raises(WebSocketDisconnect) as refused, connect(client, "bob", node="n1"):
            pass
        assert refused.value.code == 1013  # try again later

    serve(nodes, scenario)


def test_app_presence_is_the_running_node() -> None:
    app = make_app()
    assert app.presence is None
    seen: list[Presence] = []

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        seen.append(presence)
        assert not presence.closed
        assert app.socket.presence is presence
        with connect(client, "alice") as alice:
            alice.joined()
            assert app.socket.open_sockets == 1
            assert presence.list(TOPIC).keys() == {"alice"}

    serve(app, scenario)
    assert app.presence is None
    assert seen[0].closed


@pytest.mark.parametrize("vsn", ["3.0.0", "", "2", "banana"])
def test_an_unsupported_vsn_is_refused_before_accept(vsn: str) -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with pytest.raises(WebSocketDisconnect) as refused, connect(client, "alice", vsn=vsn):
            pass
        assert refused.value.code == 1008
        assert app.socket.open_sockets == 0

    serve(app, scenario)


def test_a_websocket_on_another_path_is_refused() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with pytest.raises(WebSocketDisconnect) as refused:
            client.websocket_connect("/elsewhere/websocket?vsn=2.0.0").__enter__()
        assert refused.value.code == 1008
        assert client.get("/").status_code == 404  # page=False: no page either

    serve(app, scenario)


# ---------------------------------------------------------------------------- two nodes


def test_two_nodes_share_presences_and_a_stopped_node_leaves_at_once() -> None:
    hub = MemoryHub()
    apps = {
        name: make_app(hub=hub, name=name, config=SLOW_FAILURE_DETECTION) for name in ("n1", "n2")
    }
    nodes = Nodes(apps)

    def scenario(client: TestClient) -> None:
        n1, n2 = node_of(apps["n1"]), node_of(apps["n2"])
        portal = portal_of(client)
        with connect(client, "alice", node="n1") as alice:
            alice.joined()
            with connect(client, "bob", node="n2") as bob:
                bob.joined()
                # dave is tracked on n2 without a socket: only n2's departure can remove him.
                portal.call(n2.track, "conn-dave", TOPIC, "dave", {"direct": True})
                # Remote diffs reach the sockets of each node (decode() checks null refs).
                alice.wait_for(TOPIC, {"alice", "bob", "dave"})
                bob.wait_for(TOPIC, {"alice", "bob", "dave"})
                bob.reply(bob.request("status", {"status": "away"}))
                while metas(alice.views[TOPIC], "bob")[0].get("status") != "away":
                    alice.pending.append(alice.read())
                assert len(metas(alice.views[TOPIC], "bob")) == 1

                portal.call(nodes.stop, "n2")
                assert bob.closed() == 1001
            # The down period is 30 s: n2 left gracefully, so its presences left n1 at once.
            assert alice.wait_for(TOPIC, {"alice"}).keys() == {"alice"}
            assert n1.list(TOPIC).keys() == {"alice"}
            assert "n2" not in n1.replicas()
            assert n2.closed

    serve(nodes, scenario)


# ---------------------------------------------------------------------------- real servers


class WSClient(Frames):
    """A minimal websocket client: wsproto over an anyio TCP stream (asyncio or trio)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        super().__init__(v1=False)
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.eof = False

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, port: int, target: str) -> AsyncIterator[WSClient]:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            client = cls(stream)
            await client.write(Request(host=f"127.0.0.1:{port}", target=target))
            event = await client.event()
            assert isinstance(event, AcceptConnection), event
            try:
                yield client
            finally:
                await client.aclose()

    async def write(self, event: Event) -> None:
        await self.stream.send(self.ws.send(event))

    async def event(self) -> Event:
        while not self.events:
            if self.eof:
                raise Closed(1006)
            try:
                data: bytes | None = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data, self.eof = None, True
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    async def send(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any = None
    ) -> None:
        text = self.encode(join_ref, ref, topic, event, {} if payload is None else payload)
        await self.write(TextMessage(data=text))

    async def read(self) -> Frame:
        parts: list[str] = []
        while True:
            event = await self.event()
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return self.decode("".join(parts))
            elif isinstance(event, Ping):
                await self.write(event.response())
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self.write(event.response())
                raise Closed(event.code)
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def take(self, event: str, topic: str = TOPIC, *, ref: Any = None) -> Frame:
        found = self.find(event, topic, ref)
        while found is None:
            frame = await self.read()
            if frame[3] == event and frame[2] == topic and (ref is None or frame[1] == ref):
                return frame
            self.pending.append(frame)
        return found

    async def join(self) -> Any:
        ref = str(next(self.refs))
        await self.send(ref, ref, TOPIC, "phx_join", {})
        assert (await self.take("phx_reply", ref=ref))[4]["status"] == "ok"
        self.join_refs[TOPIC] = ref
        join_ref, _, _, _, state = await self.take("presence_state")
        assert join_ref == ref
        return state

    async def wait_for(self, keys: set[str]) -> None:
        while set(self.views.get(TOPIC, {})) != keys:
            self.pending.append(await self.read())

    async def closed(self) -> int:
        try:
            while True:
                self.pending.append(await self.read())
        except Closed as closed:
            return closed.code

    async def aclose(self) -> None:
        if self.ws.state is ConnectionState.OPEN:
            await self.write(CloseConnection(code=1000))
            with contextlib.suppress(Closed):
                await self.closed()


async def smoke(port: int) -> None:
    """Two clients see each other join, update and leave; a bad frame closes its socket."""
    path = "/socket/websocket?vsn=2.0.0&user="
    async with WSClient.connect(port, path + "alice") as alice:
        assert (await alice.join()).keys() == {"alice"}
        async with WSClient.connect(port, path + "bob") as bob:
            assert (await bob.join()).keys() == {"alice", "bob"}
            await alice.wait_for({"alice", "bob"})
            await bob.send("1", "2", TOPIC, "status", {"status": "away"})
            assert (await bob.take("phx_reply", ref="2"))[4]["status"] == "ok"
            while "phx_ref_prev" not in metas(alice.views[TOPIC], "bob")[0]:
                alice.pending.append(await alice.read())
            await alice.send(None, "9", "phoenix", "heartbeat", {})
            assert await alice.take("phx_reply", "phoenix", ref="9") == (
                None,
                "9",
                "phoenix",
                "phx_reply",
                OK,
            )
        await alice.wait_for({"alice"})  # bob's socket closed: his channel left
        async with WSClient.connect(port, path + "mallory") as mallory:
            await mallory.write(TextMessage(data="not json"))
            assert await mallory.closed() == 1008


def test_under_uvicorn_with_wsproto() -> None:
    async def main() -> None:
        app = make_app()
        server = uvicorn.Server(
            uvicorn.Config(app, ws="wsproto", lifespan="on", log_config=None, log_level="warning")
        )
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            try:
                with anyio.fail_after(DEADLINE):
                    await smoke(port)
            finally:
                server.should_exit = True
                with anyio.fail_after(DEADLINE):
                    await serving
        assert app.presence is None  # the lifespan stopped the node

    asyncio.run(main())


def test_under_hypercorn_on_trio() -> None:
    async def main() -> None:
        app = make_app(open_node=anyio_driver.open_node)
        asgi: Any = app  # Hypercorn's ASGI types are stricter than PhoenixApp's signature
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(hypercorn_serve, asgi, config, shutdown_trigger=stop.wait)
            )
            port = int(binds[0].rsplit(":", 1)[1])
            try:
                with trio.fail_after(DEADLINE):
                    await smoke(port)
            finally:
                stop.set()
        assert app.presence is None

    trio.run(main)
