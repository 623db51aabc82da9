"""Who is in each chat room, pushed live to websockets: presence in a Starlette app on asyncio.

Serve it with ``uvicorn examples.starlette_app:app`` (or ``python examples/starlette_app.py``) and
open websockets to ``ws://127.0.0.1:8000/ws/lobby?user=alice``. Each socket gets the room's
presences once, as Phoenix's ``presence_state`` push, then every change as a ``presence_diff``
push: the messages phoenix.js's ``Presence`` consumes. A text message ``{"status": "away"}``
from the client updates its presence.

The presence node runs on the asyncio driver for the app's lifetime (its lifespan). Here it is a
single node on a private in-memory bus; give ``open_node`` a transport that spans processes and
every server process shares one view of the rooms. A fetch hook adds each user's profile to the
presences the sockets receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from presence_adapters import ConnectionScope, Presence, SubscriptionOverflow
from presence_adapters.drivers.asyncio import open_node
from presence_core import PresenceMap

MAX_BEHIND = 1_000
"""How many presences a socket may fall behind before it starts over from a presence_state."""

PROFILES = {"alice": {"name": "Alice Liddell"}, "bob": {"name": "Bob Marley"}}
"""Stands in for a table of user profiles."""


async def load_profiles(users: Iterable[str]) -> dict[str, dict[str, str]]:
    """Stands in for one database query that loads many profiles at once."""
    await asyncio.sleep(0)
    return {user: PROFILES.get(user, {"name": user}) for user in users}


async def fetch_profiles(topic: str, presences: PresenceMap) -> dict[str, dict[str, Any]]:
    """The fetch hook (Phoenix Presence's ``fetch/2``): one query per batch of presences."""
    profiles = await load_profiles(presences)
    # Each key keeps its "metas" (the replicated state) and gains the user's profile beside them.
    return {user: {**presence, "user": profiles[user]} for user, presence in presences.items()}


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Presence]]:
    # The node lives exactly as long as the app: leaving this block announces our departure to
    # the other nodes (graceful permdown) and closes the transport.
    async with open_node(fetch=fetch_profiles) as presence:
        yield {"presence": presence}  # every request sees it as request.state.presence


async def push(websocket: WebSocket, topic: str, event: str, payload: object) -> None:
    """One push, shaped as Phoenix's JSON serializer shapes it (no reply ref: it is a push)."""
    await websocket.send_text(
        json.dumps({"topic": topic, "event": event, "payload": payload, "ref": None})
    )


async def push_presences(websocket: WebSocket, presence: Presence, topic: str) -> None:
    """Push the topic's presences, then every diff, until the node stops."""
    while True:
        try:
            async with presence.subscribe(topic, max_buffered=MAX_BEHIND) as diffs:
                # Subscribe first, then read the state, with no await in between (fetched_list
                # reads the list before its first await): nothing can change the topic between
                # the two, so the state plus the diffs that follow miss nothing.
                await push(websocket, topic, "presence_state", await presence.fetched_list(topic))
                async for diff in diffs:
                    await push(websocket, topic, "presence_diff", diff.payload)
        except SubscriptionOverflow:
            # This socket fell too far behind and its buffered diffs were dropped: start over
            # from a fresh presence_state (phoenix.js turns it into the joins and leaves missed).
            continue
        await websocket.close(code=1001)  # the node stopped: the server is going away
        return


async def listen(websocket: WebSocket, conn: ConnectionScope, topic: str, user: str) -> None:
    """Apply the client's status changes until it disconnects."""
    async for text in websocket.iter_text():  # ends when the client disconnects
        try:
            message = json.loads(text)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("status"), str):
            conn.update(topic, user, {"status": message["status"][:64]})


async def until_first_returns(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines until one returns or raises, cancel the others, and re-raise."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # asyncio.wait, not gather: if we are cancelled meanwhile, the CancelledError raised is
        # our own, not one of the children's (an anyio cancel scope around us, as in Starlette,
        # recognises only its own).
        await asyncio.wait(tasks)
    for task in done:
        task.result()


async def room_socket(websocket: WebSocket) -> None:
    presence: Presence = websocket.state.presence
    topic = f"room:{websocket.path_params['room']}"
    user = websocket.query_params.get("user")
    if not user:
        await websocket.close(code=1008)  # policy violation: we need to know who you are
        return
    await websocket.accept()
    # The scope untracks this socket's presences when it exits: on disconnect, on an error, and
    # when the server cancels the handler.
    async with presence.connection() as conn:
        conn.track(topic, user, {"status": "online"})
        with contextlib.suppress(WebSocketDisconnect):  # the client left while we pushed
            await until_first_returns(
                push_presences(websocket, presence, topic), listen(websocket, conn, topic, user)
            )


app = Starlette(routes=[WebSocketRoute("/ws/{room}", room_socket)], lifespan=lifespan)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
