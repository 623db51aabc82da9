"""The chat-room presence app of ``starlette_app.py`` on trio: the anyio driver, under Hypercorn.

Serve it with ``hypercorn --worker-class trio examples.starlette_trio:app`` (or ``python
examples/starlette_trio.py``) and open websockets to ``ws://127.0.0.1:8000/ws/lobby?user=alice``.
Each socket gets the room's presences once, as Phoenix's ``presence_state`` push, then every
change as a ``presence_diff`` push. A text message ``{"status": "away"}`` from the client updates
its presence.

The app itself uses anyio only (the anyio driver and a task group), so the same code also runs on
asyncio: ``hypercorn examples.starlette_trio:app``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from presence_adapters import ConnectionScope, Presence, SubscriptionOverflow
from presence_adapters.drivers.anyio import open_node

MAX_BEHIND = 1_000
"""How many presences a socket may fall behind before it starts over from a presence_state."""


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Presence]]:
    # The node's tasks run in a task group inside this block, so they live exactly as long as the
    # app; leaving it announces our departure (graceful permdown) and closes the transport.
    async with open_node() as presence:
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
                # Subscribe first, then read the state, with no await in between: nothing can
                # change the topic between the two, so the state plus the diffs that follow miss
                # nothing (a diff that came before the subscription is already in the state).
                await push(websocket, topic, "presence_state", presence.list(topic))
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
            async with anyio.create_task_group() as pushing:
                pushing.start_soon(push_presences, websocket, presence, topic)
                await listen(websocket, conn, topic, user)  # until the client disconnects
                pushing.cancel_scope.cancel()


app = Starlette(routes=[WebSocketRoute("/ws/{room}", room_socket)], lifespan=lifespan)

if __name__ == "__main__":
    import signal

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    async def main() -> None:
        config = Config()
        config.bind = ["127.0.0.1:8000"]
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def interrupted() -> None:  # Hypercorn shuts down gracefully when it returns
                async for _ in signals:
                    return

            # Starlette's ASGI types are looser than Hypercorn's; the app is a valid ASGI 3 app.
            await serve(app, config, shutdown_trigger=interrupted)  # type: ignore[arg-type]

    trio.run(main)
