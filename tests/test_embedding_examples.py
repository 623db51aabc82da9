"""The websocket examples, driven by Starlette's TestClient with two clients each.

``examples/starlette_app.py`` (asyncio driver, with a fetch hook) and
``examples/starlette_trio.py`` (anyio driver, run here on trio) serve ``/ws/{room}?user=NAME``:
each socket first gets Phoenix's ``presence_state`` push, then a ``presence_diff`` push per
change. docs/embedding.rst includes both files, so what it shows is what these tests run.

TestClient's websocket calls block without a timeout. So that a bug fails a test instead of
hanging the suite, every scenario runs in a daemon thread that the test waits for with a
deadline (:func:`run_bounded`); past it the test fails, and the stuck thread cannot keep the
interpreter alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Literal

import pytest
from starlette.websockets import WebSocketDisconnect

from asgi_testing import TestClient, WebSocketTestSession, load_example, run_bounded
from presence_adapters import Presence

DEADLINE = 30.0
"""Seconds a whole scenario may take (each takes well under one)."""

Backend = Literal["asyncio", "trio"]

APPS = [
    pytest.param("starlette_app.py", "asyncio", id="asyncio-driver"),
    pytest.param("starlette_trio.py", "trio", id="anyio-driver-on-trio"),
]


def presence_of(client: TestClient) -> Presence:
    """The app's presence node (the lifespan put it in the app's state)."""
    presence = client.app_state["presence"]
    assert isinstance(presence, Presence)
    return presence


def receive_push(ws: WebSocketTestSession, event: str) -> Any:
    """The next message, checked to be a Phoenix push of ``event``; returns its payload."""
    message = ws.receive_json()
    assert set(message) == {"topic", "event", "payload", "ref"}, message
    assert message["topic"] == "room:lobby"
    assert message["event"] == event, message
    assert message["ref"] is None
    return message["payload"]


def check_presences(presences: Any, keys: Iterable[str], *, fetched: bool) -> None:
    """Phoenix's shape, ``{key: {"metas": [{..., "phx_ref": ...}]}}``, with exactly ``keys``."""
    assert isinstance(presences, dict)
    assert sorted(presences) == sorted(keys)
    for key, presence in presences.items():
        assert set(presence) == ({"metas", "user"} if fetched else {"metas"})
        assert presence["metas"], key
        for meta in presence["metas"]:
            assert isinstance(meta["phx_ref"], str)
            assert isinstance(meta["status"], str)
        if fetched:  # the fetch hook of starlette_app.py adds the user's profile
            assert isinstance(presence["user"]["name"], str)


def check_diff(payload: Any, *, joins: Iterable[str], leaves: Iterable[str], fetched: bool) -> None:
    assert set(payload) == {"joins", "leaves"}
    check_presences(payload["joins"], joins, fetched=fetched)
    check_presences(payload["leaves"], leaves, fetched=fetched)


@pytest.mark.parametrize(("name", "backend"), APPS)
def test_two_sockets_see_each_other_join_change_and_leave(name: str, backend: Backend) -> None:
    app = load_example(name).app
    fetched = name == "starlette_app.py"

    def scenario() -> None:
        with TestClient(app, backend=backend) as client:
            with client.websocket_connect("/ws/lobby?user=alice") as alice:
                check_presences(receive_push(alice, "presence_state"), ["alice"], fetched=fetched)
                with client.websocket_connect("/ws/lobby?user=bob") as bob:
                    # bob's state already holds alice; alice is told that bob joined.
                    state = receive_push(bob, "presence_state")
                    check_presences(state, ["alice", "bob"], fetched=fetched)
                    joined = receive_push(alice, "presence_diff")
                    check_diff(joined, joins=["bob"], leaves=[], fetched=fetched)
                    assert joined["joins"]["bob"] == state["bob"]

                    # An update is one diff: the new meta joins, the old one leaves.
                    bob.send_json({"status": "away"})
                    update = receive_push(alice, "presence_diff")
                    check_diff(update, joins=["bob"], leaves=["bob"], fetched=fetched)
                    (new,) = update["joins"]["bob"]["metas"]
                    (old,) = update["leaves"]["bob"]["metas"]
                    assert (new["status"], old["status"]) == ("away", "online")
                    assert new["phx_ref_prev"] == old["phx_ref"]
                    assert bob.receive_json()["payload"] == update  # bob hears his own update

                # bob's socket closed: its connection scope untracked him.
                left = receive_push(alice, "presence_diff")
                check_diff(left, joins=[], leaves=["bob"], fetched=fetched)
                assert left["leaves"]["bob"]["metas"] == [new]
                assert presence_of(client).list("room:lobby").keys() == {"alice"}
            assert presence_of(client).list("room:lobby") == {}
        assert presence_of(client).closed  # the lifespan stopped the node

    run_bounded(scenario, DEADLINE)


@pytest.mark.parametrize(("name", "backend"), APPS)
def test_a_socket_without_a_user_is_refused(name: str, backend: Backend) -> None:
    app = load_example(name).app

    def scenario() -> None:
        with TestClient(app, backend=backend) as client:
            with pytest.raises(WebSocketDisconnect) as refused:
                client.websocket_connect("/ws/lobby").__enter__()
            assert refused.value.code == 1008
            assert presence_of(client).topics() == []

    run_bounded(scenario, DEADLINE)


@pytest.mark.parametrize(("name", "backend"), APPS)
def test_sockets_are_closed_when_the_node_stops(name: str, backend: Backend) -> None:
    app = load_example(name).app

    def scenario() -> None:
        with (
            TestClient(app, backend=backend) as client,
            client.websocket_connect("/ws/lobby?user=alice") as alice,
        ):
            receive_push(alice, "presence_state")
            assert client.portal is not None
            client.portal.call(presence_of(client).abandon)
            with pytest.raises(WebSocketDisconnect) as closed:
                alice.receive_json()
            assert closed.value.code == 1001  # going away

    run_bounded(scenario, DEADLINE)


def test_a_socket_that_falls_behind_starts_over_from_a_fresh_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # starlette_app.py's fetch hook runs for every diff a socket pushes. Holding it back keeps a
    # diff in alice's subscription while the node goes on; with MAX_BEHIND = 1 the next diff
    # overflows it, and her socket must start over from a presence_state.
    module = load_example("starlette_app.py")
    monkeypatch.setattr(module, "MAX_BEHIND", 1)
    release = asyncio.Event()
    load_profiles = module.load_profiles

    async def held_load_profiles(users: Iterable[str]) -> dict[str, dict[str, str]]:
        users = list(users)
        if "alice" not in users:  # a diff of the others, not a state (which holds alice)
            await release.wait()
        result: dict[str, dict[str, str]] = await load_profiles(users)
        return result

    monkeypatch.setattr(module, "load_profiles", held_load_profiles)

    def scenario() -> None:
        with TestClient(module.app, backend="asyncio") as client:
            portal = client.portal
            assert portal is not None
            presence = presence_of(client)
            with client.websocket_connect("/ws/lobby?user=alice") as alice:
                check_presences(receive_push(alice, "presence_state"), ["alice"], fetched=True)
                # Commands through the portal run on the app's loop and return once done.
                portal.call(presence.track, "conn-bob", "room:lobby", "bob", {"status": "online"})
                portal.call(presence.track, "conn-carol", "room:lobby", "carol", {"status": "x"})
                portal.call(release.set)
                state = receive_push(alice, "presence_state")
                check_presences(state, ["alice", "bob", "carol"], fetched=True)
                # The new subscription carries on from that state.
                portal.call(presence.untrack_conn, "conn-bob")
                left = receive_push(alice, "presence_diff")
                check_diff(left, joins=[], leaves=["bob"], fetched=True)

    run_bounded(scenario, DEADLINE)
