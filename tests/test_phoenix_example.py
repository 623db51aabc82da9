"""examples/phoenix_app.py, driven by Starlette's TestClient as phoenix.js would drive it.

docs/phoenix-clients.rst includes the file whole, so what it shows is what these tests run: a join
with a signed token in the socket params (the reply, then ``presence_state`` with the join_ref,
then the ``presence_diff`` of the join with null refs), a status change through the event hook,
and the refusals (bad token, unknown room, unknown event, status not allowed). The three apps of
the file each serve one join: ``app`` (asyncio driver), ``trio_app`` (anyio driver, on trio) and
``starlette_app`` (the endpoint mounted in Starlette).

TestClient's websocket calls block without a timeout, so each scenario runs in a daemon thread
with a deadline (as in tests/test_embedding_examples.py): a hang fails the test.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Literal

import pytest

from asgi_testing import TestClient, WebSocketTestSession, load_example, run_bounded

DEADLINE = 30.0
"""Seconds a whole scenario may take (each takes well under one)."""

TOPIC = "room:lobby"


def send(
    ws: WebSocketTestSession, join_ref: str | None, ref: str, event: str, payload: Any
) -> None:
    """One V2 frame from the client: ``[join_ref, ref, topic, event, payload]``."""
    ws.send_text(json.dumps([join_ref, ref, TOPIC, event, payload]))


def receive(ws: WebSocketTestSession) -> list[Any]:
    frame = json.loads(ws.receive_text())
    assert isinstance(frame, list)
    assert len(frame) == 5, frame
    return frame


def join(ws: WebSocketTestSession, user: str) -> dict[str, Any]:
    """Join ``TOPIC`` with join_ref "1" and check the three frames that follow; return the meta."""
    send(ws, "1", "1", "phx_join", {})
    assert receive(ws) == [
        "1",
        "1",
        TOPIC,
        "phx_reply",
        {"status": "ok", "response": {"user": user}},
    ]
    join_ref, ref, topic, event, state = receive(ws)
    assert (join_ref, ref, topic, event) == ("1", None, TOPIC, "presence_state")
    assert list(state) == [user]
    (meta,) = state[user]["metas"]
    assert meta["status"] == "online"
    assert isinstance(meta["online_at"], int)
    assert isinstance(meta["phx_ref"], str)
    # The channel is subscribed before its presence is tracked: its own join comes as a diff.
    assert receive(ws) == [
        None,
        None,
        TOPIC,
        "presence_diff",
        {"joins": {user: {"metas": [meta]}}, "leaves": {}},
    ]
    return dict(meta)


def url(module: ModuleType, user: str) -> str:
    return f"/socket/websocket?vsn=2.0.0&token={module.sign_token(user)}"


APPS = [
    pytest.param("app", "asyncio", id="create_app-asyncio-driver"),
    pytest.param("trio_app", "trio", id="create_app-anyio-driver-on-trio"),
    pytest.param("starlette_app", "asyncio", id="mounted-in-starlette"),
]


@pytest.mark.parametrize(("name", "backend"), APPS)
def test_a_client_with_a_signed_token_joins_and_is_tracked(
    name: str, backend: Literal["asyncio", "trio"]
) -> None:
    module = load_example("phoenix_app.py")
    application = getattr(module, name)

    def scenario() -> None:
        with (
            TestClient(application, backend=backend) as client,
            client.websocket_connect(url(module, "alice")) as alice,
        ):
            meta = join(alice, "alice")
            # The event hook: one diff, the new meta joins and the old one leaves.
            send(alice, "1", "2", "status", {"status": "away"})
            assert receive(alice) == [
                "1",
                "2",
                TOPIC,
                "phx_reply",
                {"status": "ok", "response": {"status": "away"}},
            ]
            diff = receive(alice)[4]
            (new,) = diff["joins"]["alice"]["metas"]
            assert diff["leaves"] == {"alice": {"metas": [meta]}}
            assert (new["status"], new["phx_ref_prev"]) == ("away", meta["phx_ref"])
            # Heartbeats are answered on the "phoenix" topic, with a null join_ref.
            alice.send_text(json.dumps([None, "3", "phoenix", "heartbeat", {}]))
            assert receive(alice) == [
                None,
                "3",
                "phoenix",
                "phx_reply",
                {"status": "ok", "response": {}},
            ]

    run_bounded(scenario, DEADLINE)


def test_refusals_are_error_replies_and_track_nothing() -> None:
    module = load_example("phoenix_app.py")

    def scenario() -> None:
        with TestClient(module.app) as client:
            presence = module.app.presence
            forged = module.sign_token("mallory") + "x"
            with client.websocket_connect(f"/socket/websocket?vsn=2.0.0&token={forged}") as ws:
                send(ws, "1", "1", "phx_join", {"user": "alice"})  # a claim, not an identity
                assert receive(ws) == [
                    "1",
                    "1",
                    TOPIC,
                    "phx_reply",
                    {"status": "error", "response": {"reason": "unauthorized"}},
                ]
            with client.websocket_connect(url(module, "bob")) as ws:
                ws.send_text(json.dumps(["1", "1", "secret:plans", "phx_join", {}]))
                assert receive(ws)[4] == {"status": "error", "response": {"reason": "no such room"}}
                join(ws, "bob")
                send(ws, "1", "2", "status", {"status": "<script>"})
                assert receive(ws)[4] == {
                    "status": "error",
                    "response": {"reason": "invalid status"},
                }
                send(ws, "1", "3", "shout", {})
                assert receive(ws)[4] == {
                    "status": "error",
                    "response": {"reason": "unknown event"},
                }
                assert presence.list(TOPIC)["bob"]["metas"][0]["status"] == "online"
            assert presence.list(TOPIC) == {}  # the socket closed: its presence left

    run_bounded(scenario, DEADLINE)


def test_a_realtime_js_track_sets_the_status() -> None:
    module = load_example("phoenix_app.py")

    def scenario() -> None:
        with (
            TestClient(module.app) as client,
            client.websocket_connect(url(module, "carol")) as ws,
        ):
            join(ws, "carol")
            track = {"type": "presence", "event": "track", "payload": {"status": "busy"}}
            send(ws, "1", "2", "presence", track)
            assert receive(ws)[4] == {"status": "ok", "response": {"status": "busy"}}
            assert receive(ws)[4]["joins"]["carol"]["metas"][0]["status"] == "busy"

    run_bounded(scenario, DEADLINE)


def test_tokens_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRESENCE_TOKEN_SECRET", raising=False)  # so each load draws its own key
    module = load_example("phoenix_app.py")
    now = 1_800_000_000.0
    token = module.sign_token("alice", now=now, ttl=60)
    assert module.verify_token(token, now=now) == "alice"
    assert module.verify_token(token, now=now + 60) is None  # expired
    body, _, signature = token.partition(".")
    changed = signature[:-1] + ("B" if signature.endswith("A") else "A")
    assert module.verify_token(f"{body}.{changed}", now=now) is None  # forged
    other = load_example("phoenix_app.py")  # another process: another signing key
    assert other.verify_token(token, now=now) is None
    for junk in ("", ".", "é.é", "a" * 1000, f"{body}"):
        assert module.verify_token(junk, now=now) is None
