"""``presence serve``: the endpoint and the presence page from one node, as a command.

The command runs as a subprocess on a free port, as a user would run it; the test waits (with a
deadline) until it answers, fetches the page and its script, joins a room over a websocket by
hand (Phoenix protocol V2), and stops it with SIGTERM. Its topic options (``--grace``,
``--large-room``) are checked on the application it builds, under Starlette's TestClient, and
its flags are checked to reach that application.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from interop_support import POLL_INTERVAL, WebSocketClient

from asgi_testing import TestClient, WebSocketTestSession, run_bounded
from presence_adapters import cli
from presence_adapters.cli import (
    MAX_USER_CHARS,
    serve_app,
    serve_config,
    serve_on_join,
    serve_topic_options,
)
from presence_adapters.phoenix import Accept, JoinRequest, Reject
from presence_core import TopicOptions, TrackerConfig

SOCKET = "/socket/websocket?vsn=2.0.0"

START_TIMEOUT = 30.0
"""Seconds the command may take to answer its first request."""

STOP_TIMEOUT = 15.0
"""Seconds it may take to stop after SIGTERM."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``presence serve --port <free>`` running; yields its host and port."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w+", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "presence_adapters.cli", "serve", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    def output() -> str:
        log.flush()
        log.seek(0)
        return log.read()

    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"presence serve exited with {process.returncode}:\n{output()}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"presence serve did not answer in {START_TIMEOUT} s:\n{output()}")
                time.sleep(POLL_INTERVAL)
        yield "127.0.0.1", port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"presence serve did not stop on SIGTERM:\n{output()}")
        text = output()
        log.close()
    # uvicorn shuts down gracefully (the lifespan's end stops the node), then re-raises SIGTERM.
    assert process.returncode in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text, text


def test_serve_serves_the_page_and_phoenix_clients(served: tuple[str, int]) -> None:
    host, port = served
    page = httpx.get(f"http://{host}:{port}/", timeout=5.0)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Who is online" in page.text
    assert 'src="static/presence.js"' in page.text
    script = httpx.get(f"http://{host}:{port}/static/presence.js", timeout=5.0)
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "presence_state" in script.text

    alice = WebSocketClient(host, port, "/socket/websocket?vsn=2.0.0")
    bob = WebSocketClient(host, port, "/socket/websocket?vsn=2.0.0")
    try:
        alice.send_json(["1", "1", "room:lobby", "phx_join", {"user": "alice"}])
        assert alice.receive_json() == [
            "1",
            "1",
            "room:lobby",
            "phx_reply",
            {"status": "ok", "response": {}},
        ]
        join_ref, ref, topic, event, state = alice.receive_json()
        assert (join_ref, ref, topic, event) == ("1", None, "room:lobby", "presence_state")
        assert list(state) == ["alice"]
        (meta,) = state["alice"]["metas"]
        assert isinstance(meta["online_at"], int)
        assert isinstance(meta["phx_ref"], str)

        bob.send_json(["3", "3", "room:lobby", "phx_join", {"user": ""}])
        assert bob.receive_json() == [
            "3",
            "3",
            "room:lobby",
            "phx_reply",
            {"status": "error", "response": {"reason": "invalid user"}},
        ]
        bob.send_json(["4", "4", "room:lobby", "phx_join", {"user": "bob"}])
        assert bob.receive_json()[3:] == ["phx_reply", {"status": "ok", "response": {}}]
        assert set(bob.receive_json()[4]) == {"alice", "bob"}
        # alice hears of her own join, then bob's, as Phoenix broadcasts them: null join_ref and
        # ref (her state already holds her own: phoenix.js merges the two by phx_ref).
        for user in ["alice", "bob"]:
            join_ref, ref, topic, event, diff = alice.receive_json()
            assert (join_ref, ref, topic, event) == (None, None, "room:lobby", "presence_diff")
            assert list(diff["joins"]) == [user]
            assert diff["leaves"] == {}

        alice.send_json([None, "2", "phoenix", "heartbeat", {}])
        assert alice.receive_json() == [
            None,
            "2",
            "phoenix",
            "phx_reply",
            {"status": "ok", "response": {}},
        ]
    finally:
        alice.close()
        bob.close()


def join(topic: str, payload: dict[str, object]) -> Accept | Reject:
    request = JoinRequest(topic=topic, payload=payload, params={"vsn": "2.0.0"}, socket_id="s-1")
    return asyncio.run(serve_on_join(request))


def test_serve_tracks_the_user_in_rooms_only() -> None:
    accepted = join("room:lobby", {"user": "ann"})
    assert isinstance(accepted, Accept)
    assert accepted.key == "ann"
    assert set(accepted.meta) == {"online_at"}
    assert isinstance(join("room:" + "x" * 300, {"user": "a" * MAX_USER_CHARS}), Accept)

    assert join("lobby", {"user": "ann"}) == Reject("unknown topic")
    assert join("room:", {"user": "ann"}) == Reject("unknown topic")
    for user in [None, "", "   ", 42, ["ann"], "a" * (MAX_USER_CHARS + 1)]:
        assert join("room:lobby", {"user": user}) == Reject("invalid user"), user
    assert join("room:lobby", {}) == Reject("invalid user")


# ---------------------------------------------------------------------------- topic options


def test_serve_options_give_rooms_a_grace_period_and_large_rooms() -> None:
    """``serve_app(grace=..., large_rooms=...)`` (what ``--grace`` and ``--large-room`` build):
    every room holds a leaving user for the grace period (still listed, a leave held), and a
    large room batches: the joiner's own presence comes in the tick's diff, not in the state."""
    app = serve_app(grace=600.0, large_rooms=["room:big"])

    def frame(ws: WebSocketTestSession) -> list[Any]:
        value = json.loads(ws.receive_text())
        assert isinstance(value, list)
        return value

    def join_room(ws: WebSocketTestSession, topic: str, user: str) -> Any:
        ws.send_text(json.dumps(["1", "1", topic, "phx_join", {"user": user}]))
        assert frame(ws) == ["1", "1", topic, "phx_reply", {"status": "ok", "response": {}}]
        join_ref, ref, pushed, event, state = frame(ws)
        assert (join_ref, ref, pushed, event) == ("1", None, topic, "presence_state")
        return state

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():  # the scenario's deadline bounds the wait
            await anyio.sleep(POLL_INTERVAL)

    def scenario() -> None:
        with TestClient(app) as client, client.websocket_connect(SOCKET) as alice:
            presence = app.presence
            assert presence is not None
            portal = client.portal
            assert portal is not None
            assert presence.pump.tracker.config.leave_grace_period == 600.0
            assert presence.topic_options("room:lobby") == TopicOptions()
            assert join_room(alice, "room:big", "alice") == {}  # batched until the tick
            assert presence.topic_options("room:big") == TopicOptions(large_room=True)
            _, _, topic, event, diff = frame(alice)
            assert (topic, event, list(diff["joins"]), diff["leaves"]) == (
                "room:big",
                "presence_diff",
                ["alice"],
                {},
            )
            assert list(join_room(alice, "room:lobby", "alice")) == ["alice"]
            with client.websocket_connect(SOCKET) as bob:
                assert sorted(join_room(bob, "room:lobby", "bob")) == ["alice", "bob"]
            # bob is gone: his leave is held for the grace period, and he is still listed.
            portal.call(until, lambda: presence.tracker_stats().leaves_held == 1)
            assert sorted(presence.list("room:lobby")) == ["alice", "bob"]

    run_bounded(scenario, START_TIMEOUT)


def test_serve_takes_topic_options_from_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs)
        return serve_app(*args, **kwargs)

    started: list[bool] = []
    monkeypatch.setattr(cli, "serve_app", recording)
    monkeypatch.setattr(uvicorn.Server, "run", lambda server: started.append(True))
    flags = ["--grace", "2.5", "--large-room", "room:a", "--large-room", "room:b"]
    assert cli.main(["serve", "--port", "0", *flags]) == 1  # the server never started
    assert started == [True]
    assert (built[0]["grace"], built[0]["large_rooms"]) == (2.5, ["room:a", "room:b"])
    assert cli.main(["serve", "--port", "0"]) == 1
    assert (built[1]["grace"], built[1]["large_rooms"]) == (0.0, [])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--grace", "-1"], "leave_grace_period must be >= 0 and finite"),
        (["--grace", "inf"], "leave_grace_period must be >= 0 and finite"),
        (["--large-room", "lobby"], "a large room must be a topic room:NAME"),
        (["--large-room", "room:"], "a large room must be a topic room:NAME"),
    ],
)
def test_serve_refuses_bad_topic_options_before_anything_runs(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", *flags]) == 2
    assert message in capsys.readouterr().err


def test_serve_config_and_topic_options() -> None:
    assert serve_config() is None  # Phoenix's defaults
    assert serve_config(0.0) is None
    config = serve_config(5.0)
    assert config == TrackerConfig(leave_grace_period=5.0)
    assert serve_topic_options() is None
    hook = serve_topic_options(["room:big"])
    assert hook is not None
    assert hook("room:big") == TopicOptions(large_room=True)
    assert hook("room:lobby") is None
