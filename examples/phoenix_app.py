"""Who is in each room, for phoenix.js (and Supabase-style) clients: a Phoenix endpoint in Python.

Run it with ``python examples/phoenix_app.py``: it prints a signed token for alice and one for bob,
then serves on ``http://127.0.0.1:4000`` with uvicorn and the asyncio driver (``uvicorn
examples.phoenix_app:app`` serves it too, with tokens signed by ``PRESENCE_TOKEN_SECRET``). The
same endpoint on trio, with the anyio driver: ``hypercorn --worker-class trio
examples.phoenix_app:trio_app``. ``starlette_app`` mounts it inside a Starlette application.

phoenix.js connects with ``new Socket("/socket", {params: {token}})`` and joins ``room:<name>``.
The server decides who the client is: the key it tracks is the user named by the token, which the
join hook checks (signature, expiry) before anything is tracked; nothing the client claims about
itself is trusted. A joined client may push ``status`` (``{"status": "away"}``) to change its
presence; realtime-js's ``channel.track({status: "away"})`` does the same.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

from presence_adapters.drivers.anyio import open_node as open_anyio_node
from presence_adapters.drivers.asyncio import open_node
from presence_adapters.phoenix import (
    Accept,
    ChannelEvent,
    JoinRequest,
    PhoenixSocket,
    Reject,
    Reply,
    SocketLimits,
    create_app,
)
from presence_core import JSONValue, Meta

SECRET = os.environ.get("PRESENCE_TOKEN_SECRET", "").encode() or secrets.token_bytes(32)
"""The key tokens are signed with, shared with whatever issues them (your login endpoint).
Without ``PRESENCE_TOKEN_SECRET``, a random key: tokens are valid for this process only."""

TOKEN_TTL = 12 * 3600
"""Seconds a token stays valid."""

MAX_TOKEN_CHARS = 512
ROOM = re.compile(r"(?:realtime:)?room:[a-z0-9_-]{1,64}")
"""The topics clients may join (realtime-js prefixes every topic with ``realtime:``)."""

STATUSES = frozenset({"online", "away", "busy"})
"""The statuses a client may set: the meta is the server's, so it holds only known values."""

LIMITS = SocketLimits(max_channels=10, messages_per_second=10.0, burst=50)
"""Tighter than the defaults: a page of this app joins one or two rooms and sends little."""


# ---------------------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(body: str) -> bytes:
    return hmac.new(SECRET, body.encode("ascii"), hashlib.sha256).digest()


def sign_token(user: str, *, now: float | None = None, ttl: float = TOKEN_TTL) -> str:
    """What your login endpoint hands an authenticated browser: ``<claims>.<HMAC-SHA256>``."""
    issued = time.time() if now is None else now
    claims = json.dumps({"sub": user, "exp": int(issued + ttl)}, separators=(",", ":"))
    body = _b64(claims.encode())
    return f"{body}.{_b64(_signature(body))}"


def verify_token(token: str, *, now: float | None = None) -> str | None:
    """The user a token names, or ``None`` when it is malformed, forged or expired."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    body, _, signature = token.partition(".")
    # Compare signatures in constant time, before decoding anything the client wrote.
    if not hmac.compare_digest(signature.encode(), _b64(_signature(body)).encode()):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:  # bad base64, UTF-8 or JSON
        return None
    if not isinstance(claims, dict):
        return None
    user, expires = claims.get("sub"), claims.get("exp")
    if not isinstance(user, str) or not 0 < len(user) <= 64 or type(expires) is not int:
        return None
    if expires <= (time.time() if now is None else now):
        return None
    return user


# ---------------------------------------------------------------------------- the hooks


async def on_join(request: JoinRequest) -> Accept | Reject:
    """Decide a join, and what the server tracks for it: the token's user, never a claim."""
    user = verify_token(request.params.get("token", ""))
    if user is None:
        return Reject("unauthorized")
    if not ROOM.fullmatch(request.topic):
        return Reject("no such room")
    meta: Meta = {"status": "online", "online_at": int(time.time())}
    return Accept(key=user, meta=meta, response={"user": user})


def _requested_status(event: ChannelEvent) -> object:
    payload = event.payload if isinstance(event.payload, dict) else {}
    if event.event == "status":  # phoenix.js: channel.push("status", {status: "away"})
        return payload.get("status")
    if event.event == "presence" and payload.get("event") == "track":
        # realtime-js: channel.track({status: "away"}) pushes
        # {"type": "presence", "event": "track", "payload": {"status": "away"}}
        tracked = payload.get("payload")
        return tracked.get("status") if isinstance(tracked, dict) else None
    return None


async def on_event(event: ChannelEvent) -> Reply | None:
    """Answer a joined client's events: set its status, refuse everything else."""
    if event.event not in ("status", "presence"):
        return Reply({"reason": "unknown event"}, status="error")
    status = _requested_status(event)
    if not isinstance(status, str) or status not in STATUSES or event.key is None:
        return Reply({"reason": "invalid status"}, status="error")

    def with_status(meta: dict[str, JSONValue]) -> Meta:
        return {**meta, "status": status}

    # One presence_diff goes to every socket of the room: the new meta joins, the old leaves.
    event.presence.update(event.conn, event.topic, event.key, with_status)
    return Reply({"status": status})


# ---------------------------------------------------------------------------- the applications

app = create_app(open_node, on_join=on_join, on_event=on_event, limits=LIMITS)
"""The whole application for uvicorn: its lifespan runs a node on the asyncio driver (a single
node here; ``lambda: open_node(transport)`` joins a cluster), ``/socket/websocket`` serves the
clients."""

trio_app = create_app(open_anyio_node, on_join=on_join, on_event=on_event, limits=LIMITS)
"""The same on the anyio driver, for Hypercorn on trio (or any anyio backend)."""

socket = PhoenixSocket(on_join=on_join, on_event=on_event, limits=LIMITS)
"""The endpoint alone, mounted in ``starlette_app`` below; its lifespan binds the node."""


@contextlib.asynccontextmanager
async def lifespan(application: Starlette) -> AsyncIterator[None]:
    async with open_node() as presence:
        socket.bind(presence)  # from here on, sockets are served from this node
        try:
            yield
        finally:
            socket.bind(None)  # refuse new sockets, then close the open ones (1001) and wait
            await socket.aclose()  # until their presences have left, while the node still runs


async def health(request: Request) -> PlainTextResponse:
    presence = socket.presence
    up = presence is not None and not presence.closed
    return PlainTextResponse(
        f"{socket.open_sockets} sockets\n" if up else "starting\n", status_code=200 if up else 503
    )


starlette_app = Starlette(
    routes=[Route("/health", health), WebSocketRoute("/socket/websocket", socket)],
    lifespan=lifespan,
)
"""An existing Starlette application with the endpoint mounted where phoenix.js looks for it."""


if __name__ == "__main__":
    import uvicorn

    for user in ("alice", "bob"):
        print(f"token for {user}: {sign_token(user)}")
    uvicorn.run(app, host="127.0.0.1", port=4000)
