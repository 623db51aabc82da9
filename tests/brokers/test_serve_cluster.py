"""``presence serve --redis URL`` / ``--nats URL``: nodes of one broker form one cluster.

Each node is the very application ``presence serve`` runs (:func:`serve_app`), driven by
Starlette's TestClient (its lifespan opens the node and connects the transport); two of them on
one broker are two nodes of one cluster: a user who joins on one is pushed to a socket of the
other.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from nats_support import nats_url as nats_url  # the fixture, for pytest
from redis_support import redis_url as redis_url  # the fixture, for pytest

from asgi_testing import TestClient, WebSocketTestSession, run_bounded
from presence_adapters.cli import main, serve_app
from presence_core import Key, Keyring

DEADLINE = 30.0
"""Seconds a whole scenario may take (the remote join comes within one broadcast period)."""

TOPIC = "room:lobby"
SOCKET = "/socket/websocket?vsn=2.0.0"


def frame(ws: WebSocketTestSession) -> list[Any]:
    value = json.loads(ws.receive_text())
    assert isinstance(value, list)
    return value


def join(ws: WebSocketTestSession, user: str) -> dict[str, Any]:
    """Join ``TOPIC`` as ``user``: the ok reply, then the state (returned)."""
    ws.send_text(json.dumps(["1", "1", TOPIC, "phx_join", {"user": user}]))
    assert frame(ws) == ["1", "1", TOPIC, "phx_reply", {"status": "ok", "response": {}}]
    join_ref, ref, topic, event, state = frame(ws)
    assert (join_ref, ref, topic, event) == ("1", None, TOPIC, "presence_state")
    assert isinstance(state, dict)
    return state


def sees_join_of(ws: WebSocketTestSession, user: str) -> None:
    """Read pushes until one says ``user`` joined (the scenario's deadline bounds the wait)."""
    while True:
        join_ref, ref, topic, event, payload = frame(ws)
        if event == "presence_diff" and user in payload["joins"]:
            assert (join_ref, ref, topic) == (None, None, TOPIC)
            return


def two_nodes_one_cluster(
    *, redis: str | None = None, nats: str | None = None, keyring: Keyring | None = None
) -> None:
    tag = secrets.token_hex(3)  # names of their own on a broker other tests share
    first = serve_app(f"serve-a-{tag}", redis=redis, nats=nats, keyring=keyring)
    second = serve_app(f"serve-b-{tag}", redis=redis, nats=nats, keyring=keyring)

    def scenario() -> None:
        with (
            TestClient(first) as on_first,
            TestClient(second) as on_second,
            on_first.websocket_connect(SOCKET) as alice,
            on_second.websocket_connect(SOCKET) as bob,
        ):
            join(alice, "alice")
            state = join(bob, "bob")
            if "alice" not in state:  # not replicated yet: it comes as a diff
                sees_join_of(bob, "alice")
            sees_join_of(alice, "bob")
            assert first.presence is not None
            assert second.presence is not None
            assert sorted(first.presence.list(TOPIC)) == ["alice", "bob"]
            for node in (first.presence, second.presence):
                assert node.keyring == keyring
                assert not [r for r in node.stats.rejected_by_reason if not r.normal]

    run_bounded(scenario, DEADLINE)


def test_serve_nodes_over_redis_form_one_cluster(redis_url: str) -> None:
    two_nodes_one_cluster(redis=redis_url)


def test_serve_nodes_over_nats_form_one_cluster(nats_url: str) -> None:
    two_nodes_one_cluster(nats=nats_url)


def test_sealed_serve_nodes_form_one_cluster(redis_url: str) -> None:
    two_nodes_one_cluster(redis=redis_url, keyring=Keyring(Key("k", secrets.token_bytes(32))))


def test_serve_takes_one_broker_at_most(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--redis", "redis://x", "--nats", "nats://x"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
