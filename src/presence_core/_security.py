"""Authenticated replication and rejected messages (``docs/security.rst``).

Theory of operation
===================

Without a key, anything that can publish on the bus is a member: the tracker checks what a
member could possibly have produced (see ``_claims`` and the tracker), but it cannot tell a
forged heartbeat of replica ``c`` from a real one. With a :class:`Keyring`, every replica message
travels *sealed*: a frame that names the key, the origin replica and a per-origin counter, and
an HMAC-SHA256 over all of it and the message's bytes::

    magic "pcA1" | key id length (1) | key id | name length (2) | name | vsn (8) | counter (8)
                 | mac (32) | the encoded message

Integers are unsigned big-endian. The receiver (:func:`unseal`) checks the frame's shape, finds
the key by its id (the current key and any other key of the keyring are accepted, so keys can be
rotated without a flag day), and compares the MAC in constant time. Only then is the message
decoded, and its ``sender`` must be the frame's origin: a member's message cannot be re-sent as
another's.

Replay: the counter grows by one with every message a tracker incarnation seals. The receiver
keeps, per origin, a :class:`ReplayWindow`: the highest counter seen and which of the
:data:`REPLAY_WINDOW` below it were seen, so messages reordered by the network are accepted once
each, and a captured message re-sent later is refused. The tracker remembers the windows of
:data:`REPLAY_MEMORY` origins, past their permdown, so that replaying a dead replica's heartbeat
does not bring it back.

Everything here is a pure function of the key and the bytes (``hmac`` and ``hashlib`` from the
standard library): no clock, no randomness, no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from typing import Any, Final

import attrs

from ._errors import InvalidArgument, RemoteProtocolError, shown
from ._vclock import ReplicaRef

__all__ = [
    "AuthenticationError",
    "Key",
    "Keyring",
    "MessageRejected",
    "RejectReason",
    "ReplayWindow",
    "Sealed",
    "seal",
    "seal_overhead",
    "unseal",
]

MAGIC: Final = b"pcA1"
"""The first bytes of a sealed frame (presence-core, authenticated, version 1)."""

MAC_BYTES: Final = 32
"""HMAC-SHA256's output."""

MIN_SECRET_BYTES: Final = 16
"""Shortest secret a :class:`Key` accepts (128 bits)."""

MAX_KEY_ID_BYTES: Final = 64
"""Longest key id."""

REPLAY_WINDOW: Final = 4096
"""How many counters below the highest one seen a :class:`ReplayWindow` tells apart."""

REPLAY_MEMORY: Final = 4096
"""How many origins' replay windows a tracker remembers (the least recently heard go first)."""

_MAX_WIRE_INT: Final = 2**63 - 1
_FIXED: Final = len(MAGIC) + 1 + 2 + 8 + 8 + MAC_BYTES


class RejectReason(enum.Enum):
    """Why a tracker refused a message (:class:`MessageRejected`, ``TrackerStats.rejected``).

    Reasons marked *normal* (:attr:`normal`) also happen in an honest cluster whose network
    duplicates, reorders or delays messages; a steady stream of them is still worth a look. The
    others never happen in an honest, well-configured cluster: they mean a broken or hostile
    peer, or keys or limits that differ between nodes.
    """

    #: The bytes are not a valid message (``receive`` also raises ``RemoteProtocolError``).
    MALFORMED = "malformed"
    #: Not sealed by a key of our keyring, or its sender is not the sealed origin.
    UNAUTHENTICATED = "unauthenticated"
    #: A sealed message already received. Normal: the network duplicated it.
    REPLAYED = "replayed"
    #: A sealed message older than the replay window can tell apart from a replay: a captured
    #: message replayed long after, or the messages of a node restarted with its old ``vsn``
    #: (its counter starts again at 1; give every start a new ``vsn``).
    TOO_OLD = "too_old"
    #: From an incarnation that was retired (it restarted or left). Normal: late messages.
    STALE = "stale"
    #: A transfer reply to no request we are waiting for, or from another replica than the one
    #: asked. Normal now and then: a late duplicate part of a reply already complete.
    UNSOLICITED = "unsolicited"
    #: A transfer request from a replica we have no record of (never heard from, or forgotten).
    #: Normal now and then: the request overtook the requester's first heartbeat.
    UNKNOWN_REQUESTER = "unknown_requester"
    #: A transfer request sooner than one broadcast period after the last one answered.
    #: Normal now and then: the network duplicated a request.
    RATE_LIMITED = "rate_limited"
    #: A new replica while ``max_replicas`` are known and none of them is down.
    TOO_MANY_REPLICAS = "too_many_replicas"
    #: Accepting it would keep more than a limit allows (cloud dots, parts of one message).
    OVER_LIMIT = "over_limit"

    @property
    def normal(self) -> bool:
        """True for the reasons an honest cluster also produces now and then."""
        return self in _NORMAL


_NORMAL: Final = frozenset(
    {
        RejectReason.REPLAYED,
        RejectReason.STALE,
        RejectReason.UNSOLICITED,
        RejectReason.UNKNOWN_REQUESTER,
        RejectReason.RATE_LIMITED,
    }
)


@attrs.frozen(kw_only=True)
class MessageRejected:
    """A message from another replica was refused: counted, and not applied at all.

    Attributes:
        reason: why.
        sender: the replica the message claims to come from, when it could be read (for an
            unauthenticated message this is only a claim).
        detail: a human-readable explanation, with the figures involved.
    """

    reason: RejectReason
    sender: ReplicaRef | None
    detail: str


class AuthenticationError(RemoteProtocolError):
    """A sealed frame could not be authenticated (:func:`unseal`).

    Attributes:
        reason: :attr:`RejectReason.UNAUTHENTICATED`, always (kept for uniform handling).
        replica: the origin's name when the frame's header could be read.
    """

    reason = RejectReason.UNAUTHENTICATED


def _key_id(_instance: object, _attribute: object, value: Any) -> None:
    if type(value) is not str or not value or not value.isascii() or not value.isprintable():
        raise InvalidArgument(f"Key.id must be a non-empty printable ASCII str, not {shown(value)}")
    if len(value) > MAX_KEY_ID_BYTES:
        raise InvalidArgument(f"Key.id is {len(value)} bytes, over {MAX_KEY_ID_BYTES}")


def _secret(_instance: object, _attribute: object, value: Any) -> None:
    if type(value) is not bytes:
        raise InvalidArgument(f"Key.secret must be bytes, not {type(value).__name__}")
    if len(value) < MIN_SECRET_BYTES:
        raise InvalidArgument(
            f"Key.secret is {len(value)} bytes: at least {MIN_SECRET_BYTES} are needed"
        )


@attrs.frozen
class Key:
    """One shared secret and the id that names it on the wire.

    Attributes:
        id: printable ASCII, 1 to 64 characters (for example ``"2026-12"``); it is not secret.
        secret: at least 16 bytes, the same on every node (never printed by ``repr``).

    Raises:
        InvalidArgument: an id or a secret out of those bounds.
    """

    id: str = attrs.field(validator=_key_id)
    secret: bytes = attrs.field(validator=_secret, repr=False)


def _current(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, Key):
        raise InvalidArgument(f"Keyring.current must be a Key, not {type(value).__name__}")


def _others(value: Any) -> tuple[Key, ...]:
    if isinstance(value, Key) or not isinstance(value, (tuple, list)):
        raise InvalidArgument(f"Keyring.accepted must be a tuple of Keys, not {shown(value)}")
    keys = tuple(value)
    for key in keys:
        if not isinstance(key, Key):
            raise InvalidArgument(f"Keyring.accepted must hold Keys, not {type(key).__name__}")
    return keys


@attrs.frozen
class Keyring:
    """The keys of one tracker: it seals with ``current`` and accepts every key it holds.

    To rotate keys without refusing a single message, roll the cluster twice: first give every
    node the new key in ``accepted`` (it still seals with the old one), then make the new key
    ``current`` with the old one in ``accepted``; the old key can go once every node seals with
    the new one. (Sealing with a key the other nodes do not accept yet would get every message
    refused until they do.)

    Attributes:
        current: the key messages are sealed with (and accepted).
        accepted: further keys accepted, the previous or the next one during a rotation.

    Raises:
        InvalidArgument: something that is not a Key, or two keys with one id but different
            secrets.
    """

    current: Key = attrs.field(validator=_current)
    accepted: tuple[Key, ...] = attrs.field(default=(), converter=_others)

    def __attrs_post_init__(self) -> None:
        by_id: dict[str, bytes] = {}
        for key in (self.current, *self.accepted):
            if by_id.setdefault(key.id, key.secret) != key.secret:
                raise InvalidArgument(f"two keys with id {key.id!r} have different secrets")

    def find(self, key_id: str) -> Key | None:
        """The key named ``key_id``, or ``None`` if this keyring does not hold it."""
        for key in (self.current, *self.accepted):
            if key.id == key_id:
                return key
        return None


@attrs.frozen(kw_only=True)
class Sealed:
    """What :func:`unseal` found in an authentic frame.

    Attributes:
        key_id: the id of the key it was sealed with.
        origin: the replica that sealed it.
        counter: its place in the origin's sequence (from 1).
        body: the encoded message.
    """

    key_id: str
    origin: ReplicaRef
    counter: int
    body: bytes


def seal_overhead(origin: ReplicaRef, key: Key) -> int:
    """How many bytes :func:`seal` adds to a message of ``origin`` sealed with ``key``."""
    return _FIXED + len(key.id) + len(origin.name.encode())


def _header(key: Key, origin: ReplicaRef, counter: int) -> bytes:
    kid = key.id.encode("ascii")
    name = origin.name.encode()
    return b"".join(
        (
            MAGIC,
            len(kid).to_bytes(1, "big"),
            kid,
            len(name).to_bytes(2, "big"),
            name,
            origin.vsn.to_bytes(8, "big"),
            counter.to_bytes(8, "big"),
        )
    )


def seal(body: bytes, *, key: Key, origin: ReplicaRef, counter: int) -> bytes:
    """Frame ``body`` (an encoded message of ``origin``) with ``key``'s MAC.

    Raises:
        InvalidArgument: an argument of the wrong type, a counter outside ``1..2**63-1``, a vsn
            above ``2**63-1`` or a name longer than 65,535 UTF-8 bytes.
    """
    if type(body) is not bytes:
        raise InvalidArgument(f"body must be bytes, not {type(body).__name__}")
    if not isinstance(key, Key):
        raise InvalidArgument(f"key must be a Key, not {type(key).__name__}")
    if not isinstance(origin, ReplicaRef):
        raise InvalidArgument(f"origin must be a ReplicaRef, not {type(origin).__name__}")
    if type(counter) is not int or not 1 <= counter <= _MAX_WIRE_INT:
        raise InvalidArgument(f"counter must be an int from 1 to 2**63 - 1, not {shown(counter)}")
    if origin.vsn > _MAX_WIRE_INT:
        raise InvalidArgument(f"origin.vsn is {shown(origin.vsn)}, above 2**63 - 1")
    try:
        if len(origin.name.encode()) > 0xFFFF:
            raise InvalidArgument("origin.name is longer than 65,535 bytes")
    except UnicodeEncodeError:
        raise InvalidArgument("origin.name is not valid Unicode (a lone surrogate)") from None
    header = _header(key, origin, counter)
    mac = hmac.new(key.secret, header, hashlib.sha256)
    mac.update(body)
    return b"".join((header, mac.digest(), body))


def unseal(data: bytes | bytearray | memoryview, keyring: Keyring) -> Sealed:
    """Check a sealed frame and return what it carries.

    It costs one HMAC over the bytes and nothing else: the message inside is not decoded.

    Raises:
        AuthenticationError: the frame is malformed, names a key the keyring does not hold,
            or its MAC is wrong (it was altered, or sealed with another secret).
        InvalidArgument: ``data`` is not bytes-like or ``keyring`` is not a Keyring.
    """
    if not isinstance(keyring, Keyring):
        raise InvalidArgument(f"keyring must be a Keyring, not {type(keyring).__name__}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"data must be bytes-like, not {type(data).__name__}")
    raw = bytes(data)
    if raw[:4] != MAGIC:
        raise AuthenticationError("sealed frame: no seal (replication requires a key here)")
    at = 4
    if len(raw) < _FIXED:
        raise AuthenticationError(f"sealed frame: {len(raw)} bytes, shorter than any seal")
    kid_size = raw[at]
    at += 1
    kid_bytes = raw[at : at + kid_size]
    at += kid_size
    name_size = int.from_bytes(raw[at : at + 2], "big")
    at += 2
    name_bytes = raw[at : at + name_size]
    at += name_size
    if len(raw) < at + 16 + MAC_BYTES or not kid_bytes or not name_bytes:
        raise AuthenticationError("sealed frame: truncated header")
    vsn = int.from_bytes(raw[at : at + 8], "big")
    counter = int.from_bytes(raw[at + 8 : at + 16], "big")
    at += 16
    try:
        kid = kid_bytes.decode("ascii")
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationError("sealed frame: key id or origin name is not text") from None
    key = keyring.find(kid)
    if key is None:
        raise AuthenticationError(f"sealed frame: unknown key id {kid!r}", replica=name)
    mac = hmac.new(key.secret, raw[:at], hashlib.sha256)
    mac.update(memoryview(raw)[at + MAC_BYTES :])
    if not hmac.compare_digest(mac.digest(), raw[at : at + MAC_BYTES]):
        raise AuthenticationError(f"sealed frame: wrong MAC under key {kid!r}", replica=name)
    # Authentic from here on: the fields were written by a holder of the key.
    if vsn > _MAX_WIRE_INT or not 1 <= counter <= _MAX_WIRE_INT:
        raise AuthenticationError("sealed frame: vsn or counter out of range", replica=name)
    return Sealed(
        key_id=kid, origin=ReplicaRef(name, vsn), counter=counter, body=raw[at + MAC_BYTES :]
    )


class ReplayWindow:
    """The counters seen from one origin: each is accepted once, in any order within a window.

    The highest counter seen and a bitmap of the :data:`REPLAY_WINDOW` below it (the same idea
    as IPsec's anti-replay window). A counter further below than that is refused: it cannot be
    told from a replay.
    """

    __slots__ = ("_seen", "highest")

    def __init__(self) -> None:
        self.highest = 0
        self._seen = 0  # bit i: counter ``highest - i`` was seen

    def too_old(self, counter: int) -> bool:
        """True if ``counter`` is too far below the highest one seen to tell (a pure query)."""
        return self.highest - counter >= REPLAY_WINDOW

    def accept(self, counter: int) -> bool:
        """Record ``counter``; False (and nothing recorded) if it was seen or is too old."""
        if counter > self.highest:
            shift = counter - self.highest
            self._seen = ((self._seen << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.highest = counter
            return True
        offset = self.highest - counter
        if offset >= REPLAY_WINDOW or self._seen >> offset & 1:
            return False
        self._seen |= 1 << offset
        return True


_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1
