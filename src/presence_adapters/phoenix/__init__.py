"""Serve Phoenix Channels clients (phoenix.js and clients of its protocol) from presence-core.

* :func:`create_app` / :class:`PhoenixApp`: a whole ASGI application (lifespan, websocket, page);
* :class:`PhoenixSocket`: the websocket endpoint alone, to mount in an application of your own;
* the join and event hooks' types: :class:`JoinRequest`, :class:`Accept`, :class:`Reject`,
  :class:`ChannelEvent`, :class:`Reply`; per-socket bounds: :class:`SocketLimits`; each topic's
  options: :data:`TopicOptionsHook`; the join param :data:`PRESENCE_PARAM` (``"occupancy"``:
  counts instead of presences);
* the sans-IO protocol underneath: :class:`ChannelConnection`, :class:`Serializer`,
  :class:`Message` (refs: :data:`Ref`) and the inputs it produces.

It needs anyio (``pip install 'presence-core[phoenix]'``, which also brings uvicorn).
"""

from __future__ import annotations

try:
    import anyio as _anyio  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError(
        "presence_adapters.phoenix needs anyio: pip install 'presence-core[phoenix]'"
    ) from None

from ._channel import ChannelClosed as ChannelClosed
from ._channel import ChannelConnection as ChannelConnection
from ._channel import EventReceived as EventReceived
from ._channel import Input as Input
from ._channel import JoinRequested as JoinRequested
from ._channel import Message as Message
from ._channel import ProtocolViolation as ProtocolViolation
from ._channel import Ref as Ref
from ._channel import Send as Send
from ._channel import Serializer as Serializer
from ._channel import broadcast_text as broadcast_text
from ._channel import negotiate as negotiate
from .asgi import PRESENCE_PARAM as PRESENCE_PARAM
from .asgi import Accept as Accept
from .asgi import ChannelEvent as ChannelEvent
from .asgi import EventHook as EventHook
from .asgi import JoinHook as JoinHook
from .asgi import JoinRequest as JoinRequest
from .asgi import PhoenixApp as PhoenixApp
from .asgi import PhoenixSocket as PhoenixSocket
from .asgi import Reject as Reject
from .asgi import Reply as Reply
from .asgi import SocketLimits as SocketLimits
from .asgi import TopicOptionsHook as TopicOptionsHook
from .asgi import create_app as create_app

__all__ = [
    "PRESENCE_PARAM",
    "Accept",
    "ChannelClosed",
    "ChannelConnection",
    "ChannelEvent",
    "EventHook",
    "EventReceived",
    "Input",
    "JoinHook",
    "JoinRequest",
    "JoinRequested",
    "Message",
    "PhoenixApp",
    "PhoenixSocket",
    "ProtocolViolation",
    "Ref",
    "Reject",
    "Reply",
    "Send",
    "Serializer",
    "SocketLimits",
    "TopicOptionsHook",
    "broadcast_text",
    "create_app",
    "negotiate",
]
