"""``presence serve``: the endpoint and the presence page from one node, as a command.

The command runs as a subprocess on a free port, as a user would run it; the test waits (with a
deadline) until it answers, fetches the page and its script, joins a room over a websocket by
hand (Phoenix protocol V2), and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from interop_support import POLL_INTERVAL, WebSocketClient

from presence_adapters.cli import MAX_USER_CHARS, serve_on_join
from presence_adapters.phoenix import Accept, JoinRequest, Reject

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
