"""Real phoenix.js clients work unchanged against presence_adapters.phoenix.

Two server nodes (two uvicorn servers in this process, one presence node each, on one
:class:`~presence_adapters.MemoryHub`) serve the Phoenix Channels endpoint. The Node script
``phoenix_clients.mjs`` drives several ``Socket``\\ s of the official client (the ``phoenix`` npm
package, version pinned in package-lock.json) with a phoenix.js ``Presence`` each: joins on both
nodes, refused joins, heartbeats, a presence update through a custom event, a leave, a
disconnect, a network drop with phoenix.js's own reconnect, and a reconnect with changes while
away. After every step it waits until every client's ``Presence.list()`` equals what both
servers list (``GET /list``, a route added here for the test only) and checks every frame the
clients received against what a Phoenix server sends.

The same scenario runs again with ``room:lobby`` as a large room with a leave grace period on
both nodes (``create_app(topic_options=...)``): batched ``presence_diff`` pushes, held leaves.
``phoenix_large_room.mjs`` then puts a crowd of phoenix.js clients in such a room on two nodes:
joins, leaves and disconnects at once, users moving to the other node within the grace period,
churn. Every client's ``Presence.list()`` must converge to the servers' list after each step,
clients that asked for ``{"presence": "occupancy"}`` must end each step on the servers' counts,
the watchers must receive fewer ``presence_diff`` pushes than there were changes, and no watcher
may see a user who moved within the grace period leave.

The presence page's own client is checked against phoenix.js too: ``page_sync_check.mjs`` runs
its sync functions and phoenix.js's ``Presence.syncState``/``syncDiff`` side by side on random
states and diffs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest
from interop_support import WithListRoute, run_node, serving
from interop_support import node_packages as node_packages  # the fixture

from presence_adapters import MemoryHub
from presence_adapters.drivers.asyncio import open_node
from presence_adapters.phoenix import (
    Accept,
    ChannelEvent,
    JoinRequest,
    PhoenixApp,
    Reject,
    Reply,
    create_app,
)
from presence_core import JSONValue, TopicOptions, TrackerConfig

CONFIG = TrackerConfig(broadcast_period=0.05)
"""A fast tick, so that the two nodes converge in tens of milliseconds."""

GRACE = 1.0
"""The leave grace period of the batched runs, in seconds (long enough for a client to move to
the other node and rejoin within it; each real leave takes this long to reach the clients)."""

BATCHED = TopicOptions(large_room=True, leave_grace_period=GRACE)

LARGE_ROOM = "room:big"
"""The topic of ``phoenix_large_room.mjs``."""

NODE_TIMEOUT = 60.0
"""Seconds the whole Node scenario may take (it takes a few)."""

STEPS = [
    "join",
    "rejected join",
    "heartbeat",
    "update",
    "leave",
    "disconnect",
    "network drop and automatic rejoin",
    "changes while alice-1 is away",
    "reconnect with a new join ref",
    "everyone gone",
    "frames",
]

LARGE_ROOM_STEPS = [
    "watchers",
    "crowd joins",
    "leaves and disconnects",
    "handover within the grace period",
    "churn",
    "the crowd is gone",
    "batching",
    "everyone gone",
    "frames",
]


async def on_join(request: JoinRequest) -> Accept | Reject:
    """Users join rooms under the name they give (a real app checks a token in the params)."""
    user = request.payload.get("user")
    if not request.topic.startswith("room:") or not isinstance(user, str) or not user:
        return Reject("unauthorized")
    client = request.params.get("client", "")
    return Accept(key=user, meta={"online_at": 1712345678, "client": client})


async def on_event(event: ChannelEvent) -> Reply | None:
    """``"status"`` with ``{"status": S}`` sets the sender's meta ``status`` to ``S``."""
    status = event.payload.get("status") if isinstance(event.payload, dict) else None
    if event.event != "status" or event.key is None or not isinstance(status, str):
        return Reply({"reason": "unknown event"}, status="error")

    def set_status(meta: dict[str, JSONValue]) -> dict[str, JSONValue]:
        return {**meta, "status": status}

    event.presence.update(event.conn, event.topic, event.key, set_status)
    return Reply({"status": status})


def make_app(hub: MemoryHub, name: str, options: Mapping[str, TopicOptions]) -> PhoenixApp:
    return create_app(
        lambda: open_node(hub.connect(name), config=CONFIG),
        on_join=on_join,
        on_event=on_event,
        topic_options=options.get,
    )


async def two_nodes_and_clients(
    node: str, script: str, args: list[str], options: Mapping[str, TopicOptions]
) -> tuple[int, list[dict[str, Any]], str, str]:
    hub = MemoryHub()
    apps = [make_app(hub, "n1", options), make_app(hub, "n2", options)]
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for app in apps:
            urls.append(await stack.enter_async_context(serving(WithListRoute(app))))
        environment = {"GRACE_MS": str(round(GRACE * 1000))}
        return await run_node(node, script, [*args, *urls], timeout=NODE_TIMEOUT, env=environment)


@pytest.mark.parametrize("batched", [False, True], ids=["phoenix", "batched-with-grace"])
def test_phoenix_js_clients_on_two_nodes(node_packages: str, batched: bool) -> None:
    options = {"room:lobby": BATCHED} if batched else {}
    code, lines, stdout, stderr = asyncio.run(
        two_nodes_and_clients(node_packages, "phoenix_clients.mjs", ["--updates"], options)
    )
    report = f"exit status {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert code == 0, report
    steps = [line for line in lines if "step" in line]
    assert [line["step"] for line in steps] == STEPS, report
    assert all(line["ok"] for line in steps), report
    assert lines[-1] == {"done": True, "ok": True, "ms": lines[-1]["ms"]}, report
    frames = steps[-1]
    assert frames["violations"] == [], report
    # Where the endpoint sends less than a Phoenix server would (phoenix.js does not need it).
    assert frames["observations"] == [], report
    # Every kind of frame was seen: the protocol was exercised, not only the happy path.
    assert {"phx_reply", "presence_state", "presence_diff", "phx_close"} <= set(frames["received"])


def test_phoenix_js_clients_in_a_large_room_with_grace(node_packages: str) -> None:
    code, lines, stdout, stderr = asyncio.run(
        two_nodes_and_clients(node_packages, "phoenix_large_room.mjs", [], {LARGE_ROOM: BATCHED})
    )
    report = f"exit status {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert code == 0, report
    steps = [line for line in lines if "step" in line]
    assert [line["step"] for line in steps] == LARGE_ROOM_STEPS, report
    assert all(line["ok"] for line in steps), report
    crowd = steps[1]
    for watcher, diffs in crowd["diffs"].items():
        # Without batching, each join on the watcher's node is one presence_diff.
        assert 0 < diffs < crowd["local_joins"][watcher], report
    batching = steps[-3]
    changes = batching["changes"]
    assert changes >= 100, report  # the crowd really moved
    assert all(0 < diffs < changes for diffs in batching["diffs"].values()), report
    assert all(count > 0 for count in batching["occupancies"].values()), report
    frames = steps[-1]
    assert frames["violations"] == [], report
    assert {"presence_state", "presence_diff", "presence_occupancy"} <= set(frames["received"])
    assert lines[-1] == {"done": True, "ok": True, "ms": lines[-1]["ms"]}, report


PAGE_SCRIPT = resources.files("presence_adapters.phoenix") / "static" / "presence.js"
"""The presence page's client (our own Phoenix Channels client, not phoenix.js)."""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_page_sync_matches_phoenix_js(node_packages: str, seed: int) -> None:
    """The page's syncState/syncDiff keep what phoenix.js's keep, key and meta order included,
    on random states and diffs (keys like ``__proto__`` included)."""
    with resources.as_file(PAGE_SCRIPT) as script:
        code, lines, stdout, stderr = asyncio.run(
            run_node(
                node_packages,
                "page_sync_check.mjs",
                [str(script), str(seed), "300"],
                timeout=NODE_TIMEOUT,
            )
        )
    assert code == 0, f"exit status {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert lines == [{"ok": True, "seed": seed, "rounds": 300, "steps": 2400}], stdout
