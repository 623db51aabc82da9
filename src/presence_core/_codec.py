"""The wire codec: replica messages to bytes and back (DESIGN §3.3, ``docs/wire.rst``).

Theory of operation
===================

A message travels as one JSON document, UTF-8, in a versioned, self-describing envelope::

    {"clock":[["node-b",7,3]],"delta":null,"own":5,"sender":["node-a",1],"type":"heartbeat","v":2}

Encoding is canonical: object keys sorted, no whitespace, non-ASCII characters written as UTF-8
rather than escaped, every list in a fixed order (replicas by ``(name, vsn)``, entries by clock,
dots as ascending runs). So the same message always gives the same bytes, whatever the order of
the dicts and sets it was built from.

Decoding trusts nothing. Each step has its own guard, and every failure is a
:class:`RemoteProtocolError` whose message starts with the path of the offending field
(``heartbeat.clock[2].vsn: expected a non-negative int, got 'x'``):

1. size, before anything else is looked at (``max_bytes``: 1 MiB by default, since larger deltas
   and transfers travel in parts);
2. strict UTF-8;
3. nesting, before the text reaches the JSON parser: arrays and objects nested deeper than
   :data:`MAX_NESTING` are refused by a linear scan of the bytes (:func:`_nests_too_deep`). The
   parser recurses in C once per level; left to it, a deep document raises ``RecursionError`` at
   best, and crashes the process when the recursion limit was raised or the thread's stack is
   small;
4. JSON, with the non-standard constants (``NaN``, ``Infinity``), non-finite numbers (``1e400``),
   duplicate object keys and integers too long for Python's conversion limit all refused;
5. the envelope: the version first (an unknown ``v`` is refused, never guessed at), then the
   type, then the sender (so later errors can name the replica that sent them);
6. every field, with no field missing and no unknown field, ints that are ints (``true`` is not
   ``1`` here) in range, no duplicate replica or dot, dots as ascending disjoint runs whose
   expansion stays under ``max_dots`` (a DoS guard: ``[[1,9000000000000000000]]`` is 25 bytes),
   metas that are JSON objects within :func:`~presence_core._meta.copy_meta`'s rules, every entry
   inside what its payload claims to have seen, and the :class:`DecodeLimits`: a peer cannot
   send what ``Tracker.track`` would refuse here (a meta over ``max_meta_bytes`` as compact JSON,
   an identity string or a replica name too long, more replicas in one list than
   ``max_replicas``).

Entries are the bulk of a full-state transfer, so their loop checks the common case with one
combined condition and only on failure calls the slow path that works out which field is wrong.
The limits keep that loop cheap: one scan of the message bounds every string, number and literal
in it (:func:`_scalar_bounds`), so that a meta is measured as JSON, and an identity string in
UTF-8 bytes (when more characters than a quarter of its limit), only when that bound cannot rule
it out (:meth:`_Reader.entry_bounds`).

What a hostile message can cost before it is refused is bounded by ``max_bytes``: the scans are
linear, the parser never recurses past :data:`MAX_NESTING`, and the memory the parser builds is a
small multiple of the message (``tests/core/test_codec.py`` holds the worst inputs found to a
stated multiple).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from itertools import accumulate, chain
from typing import Any, Final, NoReturn, Union

import attrs

from ._errors import (
    ConfigurationError,
    LimitExceeded,
    LocalProtocolError,
    RemoteProtocolError,
    shown,
)
from ._messages import GracefulPermdown, Heartbeat, Message, TransferAck, TransferRequest
from ._meta import JSONValue, copy_meta
from ._payloads import Delta, Entry, Snapshot, SnapshotPart, _trusted, stored_entry
from ._vclock import ReplicaRef

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DOTS",
    "MAX_NESTING",
    "MAX_WIRE_INT",
    "WIRE_VERSION",
    "DecodeLimits",
    "decode_message",
    "encode_message",
]

WIRE_VERSION: Final = 2
"""The envelope version this codec writes and the only one it reads."""

DEFAULT_MAX_BYTES: Final = 1024 * 1024
"""Largest message encoded or decoded by default: 1 MiB, NATS's default ``max_payload``
(``TrackerConfig.max_message_bytes``'s default). Larger deltas and transfers travel in parts."""

DEFAULT_MAX_DOTS: Final = 65_536
"""Most dots a decoded message may hold once its runs are expanded (their sets take about 4 MB);
:func:`~presence_core.encode_parts` cuts a message that holds more into parts that do not."""

MAX_NESTING: Final = 64
"""Deepest nesting of arrays and objects a decoded message may have. The envelope puts a meta 5
levels down and a meta may nest ``MAX_DEPTH`` (32) levels, so a valid message nests at most 37
deep; 64 leaves room for a meta a few levels too deep to be refused by its path."""

MAX_WIRE_INT: Final = 2**63 - 1
"""Largest vsn, clock, dot or request id on the wire (a signed 64-bit int, for other languages)."""

_HEARTBEAT: Final = "heartbeat"
_TRANSFER_REQUEST: Final = "transfer_request"
_TRANSFER_ACK: Final = "transfer_ack"
_GRACEFUL_PERMDOWN: Final = "graceful_permdown"

_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    _HEARTBEAT: ("v", "type", "sender", "own", "clock", "delta"),
    _TRANSFER_REQUEST: ("v", "type", "request_id", "sender", "clock"),
    _TRANSFER_ACK: ("v", "type", "request_id", "sender", "payload"),
    _GRACEFUL_PERMDOWN: ("v", "type", "sender"),
}
_PART: Final = "part"
"""The optional field ``[index, count]`` of a heartbeat or transfer ack sent in parts."""
_DELTA_FIELDS: Final = ("replica", "values", "clouds", "start", "end")
_SNAPSHOT_FIELDS: Final = ("replica", "context", "clouds", "values")
_SNAPSHOT_PART_FIELDS: Final = ("replica", "context", "ranges", "clouds", "values")
_PAYLOAD_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "delta": ("kind", *_DELTA_FIELDS),
    "snapshot": ("kind", *_SNAPSHOT_FIELDS),
    "snapshot_part": ("kind", *_SNAPSHOT_PART_FIELDS),
}

# A canonical encoder never writes a \uXXXX escape for a surrogate (it writes characters as
# UTF-8), so this cheap scan of the text is almost always a miss; on a hit the parsed document
# is searched for the lone surrogate that a valid pair would not have left behind.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

# A parsed meta is a fresh dict of JSON values whose keys are strings and whose numbers are
# finite, so a flat one already satisfies copy_meta and is kept as it is; only a nested one can
# break a rule (the depth limit) and goes through copy_meta.
_CONTAINERS: Final = frozenset({dict, list})


# ---------------------------------------------------------------------------------- limits


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{attribute.name} must be an int >= 1, not {shown(value)}")


@attrs.frozen(kw_only=True)
class DecodeLimits:
    """What :func:`decode_message` accepts from another replica, beyond the wire's own rules.

    The same limits a :class:`~presence_core.Tracker` applies to its own presences
    (:class:`~presence_core.TrackerConfig`), so that a peer cannot make this replica store, and
    pass on in its transfers, what it would refuse to track itself. The defaults are
    ``TrackerConfig``'s. A message over a limit is a :class:`RemoteProtocolError` naming the
    field, like every other decoding error.

    Raises:
        ConfigurationError: a field is not an int >= 1.
    """

    max_meta_bytes: int = attrs.field(default=16384, validator=_at_least_one)
    """Largest meta, as compact JSON in UTF-8 (``phx_ref`` included), measured as
    ``Tracker.track`` measures it."""

    max_conn_bytes: int = attrs.field(default=1024, validator=_at_least_one)
    """Longest connection id of an entry, in UTF-8 bytes."""

    max_topic_bytes: int = attrs.field(default=1024, validator=_at_least_one)
    """Longest topic of an entry, in UTF-8 bytes."""

    max_key_bytes: int = attrs.field(default=1024, validator=_at_least_one)
    """Longest presence key of an entry, in UTF-8 bytes."""

    max_name_bytes: int = attrs.field(default=255, validator=_at_least_one)
    """Longest replica name anywhere in the message (sender, clocks, contexts, clouds, owners of
    values, ranges), in UTF-8 bytes."""

    max_replicas: int = attrs.field(default=1024, validator=_at_least_one)
    """Most replicas in any one list of the message: a clock (a heartbeat's without its sender,
    which travels apart), a context, clouds, the owners of values, ranges."""


_DEFAULT_LIMITS: Final = DecodeLimits()


# ---------------------------------------------------------------------------------- encoding


_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def encode_message(message: Message, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Encode a replica message as canonical JSON bytes.

    Equal messages give equal bytes, however their dicts and sets were ordered (metas compare
    by value, so ``{"n": 1}`` and ``{"n": 1.0}`` are equal but encode differently).

    Metas are written as they are stored: the codec trusts that they were validated on their way
    into the state (as :meth:`ReplicaState.join <presence_core.ReplicaState.join>` validates
    one), and only checks what JSON itself cannot write.

    Args:
        message: the message.
        max_bytes: the largest encoding allowed.

    Returns:
        The UTF-8 bytes of the JSON document.

    Raises:
        LimitExceeded: the encoding is longer than ``max_bytes``.
        LocalProtocolError: ``message`` is not a message, ``max_bytes`` is not an int >= 1, or the
            message holds something the wire cannot carry (an int out of range, a dot below 1, a
            non-str entry field, a non-JSON meta, a string that is not valid Unicode, or an entry
            its payload has not seen).
    """
    _check_limit("max_bytes", max_bytes, 1)
    document = _document(message)
    data = _serialized(document)
    if len(data) > max_bytes:
        raise LimitExceeded(
            f"{document['type']}: the encoding is {len(data)} bytes, over max_bytes={max_bytes}"
        )
    return data


def encode_unlimited(message: Message) -> bytes:
    """:func:`encode_message` without a size limit (for :func:`~presence_core.encode_parts`)."""
    return _serialized(_document(message))


def _document(message: Message) -> dict[str, object]:
    document: dict[str, object]
    if isinstance(message, Heartbeat):
        document = {
            "v": WIRE_VERSION,
            "type": _HEARTBEAT,
            "sender": _encode_ref(message.sender, "heartbeat.sender"),
            # The sender's own clock travels apart, so its name is not written twice.
            "own": None
            if message.sender not in message.clock
            else _encode_int(message.clock[message.sender], "heartbeat.own", 0),
            "clock": _encode_context(
                {r: c for r, c in message.clock.items() if r != message.sender}, "heartbeat.clock"
            ),
            "delta": None
            if message.delta is None
            else _encode_delta(message.delta, "heartbeat.delta"),
        }
        _encode_part(document, message.part, message.parts, _HEARTBEAT)
    elif isinstance(message, TransferRequest):
        document = {
            "v": WIRE_VERSION,
            "type": _TRANSFER_REQUEST,
            "request_id": _encode_int(message.request_id, "transfer_request.request_id", 0),
            "sender": _encode_ref(message.sender, "transfer_request.sender"),
            "clock": _encode_context(message.clock, "transfer_request.clock"),
        }
    elif isinstance(message, TransferAck):
        payload = message.payload
        if isinstance(payload, Delta):
            body = _encode_delta(payload, "transfer_ack.payload")
            body["kind"] = "delta"
        elif isinstance(payload, SnapshotPart):
            body = _encode_snapshot_part(payload, "transfer_ack.payload")
            body["kind"] = "snapshot_part"
        else:
            body = _encode_snapshot(payload, "transfer_ack.payload")
            body["kind"] = "snapshot"
        document = {
            "v": WIRE_VERSION,
            "type": _TRANSFER_ACK,
            "request_id": _encode_int(message.request_id, "transfer_ack.request_id", 0),
            "sender": _encode_ref(message.sender, "transfer_ack.sender"),
            "payload": body,
        }
        _encode_part(document, message.part, message.parts, _TRANSFER_ACK)
    elif isinstance(message, GracefulPermdown):
        document = {
            "v": WIRE_VERSION,
            "type": _GRACEFUL_PERMDOWN,
            "sender": _encode_ref(message.sender, "graceful_permdown.sender"),
        }
    else:
        raise LocalProtocolError(f"cannot encode a {type(message).__name__}: not a Message")
    return document


def _serialized(document: dict[str, object]) -> bytes:
    try:
        return _ENCODER.encode(document).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(
            f"{document['type']}: a string is not valid Unicode ({exc.reason}: "
            f"{exc.object[exc.start : exc.end]!r}) and cannot be encoded as UTF-8"
        ) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(
            f"{document['type']}: a meta is not JSON-compatible ({exc})"
        ) from exc


def _encode_part(document: dict[str, object], part: int, parts: int, kind: str) -> None:
    # Written only for a message sent in parts: a whole one keeps the encoding it always had.
    if parts != 1:
        document[_PART] = [
            _encode_int(part, f"{kind}.part.index", 0),
            _encode_int(parts, f"{kind}.part.count", 1),
        ]


def _check_limit(what: str, value: object, low: int) -> None:
    if type(value) is not int or value < low:
        raise LocalProtocolError(f"{what} must be an int >= {low}, not {value!r}")


def _encode_int(value: object, path: str, low: int) -> int:
    if type(value) is not int or not low <= value <= MAX_WIRE_INT:
        raise LocalProtocolError(
            f"{path}: the wire carries ints from {low} to 2**63 - 1, not {value!r}"
        )
    return value


def _encode_ref(ref: object, path: str) -> list[object]:
    if not isinstance(ref, ReplicaRef):
        raise LocalProtocolError(f"{path}: expected a ReplicaRef, not {type(ref).__name__}")
    return [ref.name, _encode_int(ref.vsn, f"{path}.vsn", 0)]


def _encode_context(context: Mapping[ReplicaRef, int], path: str) -> list[list[object]]:
    result: list[list[object]] = []
    for ref in _sorted_refs(context, path):
        result.append(
            [ref.name, _encode_int(ref.vsn, f"{path}.vsn", 0), _encode_int(context[ref], path, 0)]
        )
    return result


def _sorted_refs(mapping: Iterable[object], path: str) -> list[ReplicaRef]:
    refs: list[ReplicaRef] = []
    for ref in mapping:
        if not isinstance(ref, ReplicaRef):
            raise LocalProtocolError(f"{path}: keys must be ReplicaRefs, not {type(ref).__name__}")
        refs.append(ref)
    refs.sort()
    return refs


def _encode_runs(dots: Iterable[object], path: str) -> list[list[int]]:
    ordered: list[int] = []
    for dot in dots:
        if type(dot) is not int or not 1 <= dot <= MAX_WIRE_INT:
            raise LocalProtocolError(f"{path}: dots are ints from 1 to 2**63 - 1, not {dot!r}")
        ordered.append(dot)
    ordered.sort()
    runs: list[list[int]] = []
    run: list[int] = []
    for dot in ordered:
        if run and dot == run[1] + 1:
            run[1] = dot
        else:
            run = [dot, dot]
            runs.append(run)
    return runs


def _encode_clouds(clouds: Mapping[ReplicaRef, Iterable[int]], path: str) -> list[list[object]]:
    return [
        [ref.name, _encode_int(ref.vsn, f"{path}.vsn", 0), _encode_runs(clouds[ref], path)]
        for ref in _sorted_refs(clouds, path)
    ]


def _encode_values(
    values: Mapping[ReplicaRef, Mapping[int, Entry]],
    path: str,
    covered: Mapping[ReplicaRef, tuple[int, int]] | None,
    clouds: Mapping[ReplicaRef, frozenset[int]],
) -> list[list[object]]:
    """The entries by owner; each must be within ``covered`` (first, last] or ``clouds``.

    ``covered`` is ``None`` for a delta (clouds only); otherwise every owner must be in it.
    """
    result: list[list[object]] = []
    for owner in _sorted_refs(values, path):
        if covered is None:
            first, upto = 0, 0
        elif owner in covered:
            first, upto = covered[owner]
        else:
            raise LocalProtocolError(f"{path}: owner {_ref_text(owner)} is not in the context")
        cloud = clouds.get(owner, frozenset())
        rows = values[owner]
        entries: list[object] = []  # flat: five items per entry (see docs/wire.rst)
        for clock in sorted(rows):
            entry = rows[clock]
            # The meta as stored (the fourth item), written as it is: reading ``.meta`` would
            # copy it.
            topic, key, conn, meta, _owner, _clock = entry
            if not (
                type(clock) is int
                and 1 <= clock <= MAX_WIRE_INT
                and (first < clock <= upto or clock in cloud)
                and type(topic) is str
                and type(key) is str
                and type(conn) is str
            ):
                raise LocalProtocolError(
                    f"{path}: entry {entry!r} cannot be sent: clocks are ints from 1 to 2**63 - 1, "
                    "the payload must have seen its dot, and conn, topic and key are str"
                )
            entries += (clock, conn, topic, key, meta)
        result.append([owner.name, _encode_int(owner.vsn, f"{path}.vsn", 0), entries])
    return result


def _encode_delta(delta: Delta, path: str) -> dict[str, object]:
    start, end = delta.start, delta.end
    for ref, clock in end.items():
        if ref in start and clock < start[ref]:
            raise LocalProtocolError(
                f"{path}: the end clock {clock} of {_ref_text(ref)} is below its start clock "
                f"{start[ref]}"
            )
    return {
        "replica": _encode_ref(delta.replica, f"{path}.replica"),
        "values": _encode_values(delta.values, f"{path}.values", None, delta.clouds),
        "clouds": _encode_clouds(delta.clouds, f"{path}.clouds"),
        "start": _encode_context(start, f"{path}.start"),
        "end": _encode_context(end, f"{path}.end"),
    }


def _encode_snapshot(snapshot: Snapshot, path: str) -> dict[str, object]:
    covered = {owner: (0, clock) for owner, clock in snapshot.context.items()}
    return {
        "replica": _encode_ref(snapshot.replica, f"{path}.replica"),
        "context": _encode_context(snapshot.context, f"{path}.context"),
        "clouds": _encode_clouds(snapshot.clouds, f"{path}.clouds"),
        "values": _encode_values(snapshot.values, f"{path}.values", covered, snapshot.clouds),
    }


def _encode_snapshot_part(part: SnapshotPart, path: str) -> dict[str, object]:
    ranges = part.ranges
    covered = {owner: ranges.get(owner, (0, 0)) for owner in part.context}
    return {
        "replica": _encode_ref(part.replica, f"{path}.replica"),
        "context": _encode_context(part.context, f"{path}.context"),
        "ranges": [
            [
                ref.name,
                _encode_int(ref.vsn, f"{path}.ranges.vsn", 0),
                _encode_int(ranges[ref][0], f"{path}.ranges.first", 0),
                _encode_int(ranges[ref][1], f"{path}.ranges.last", 1),
            ]
            for ref in _sorted_refs(ranges, f"{path}.ranges")
        ],
        "clouds": _encode_clouds(part.clouds, f"{path}.clouds"),
        "values": _encode_values(part.values, f"{path}.values", covered, part.clouds),
    }


# ---------------------------------------------------------------------------------- decoding


class _BadJSON(Exception):
    """Raised from inside the JSON parser's hooks; turned into a RemoteProtocolError."""


def _reject_constant(name: str) -> NoReturn:
    raise _BadJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise _BadJSON(f"the number {text[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        duplicate = next(key for key, count in counts.items() if count > 1)
        raise _BadJSON(f"duplicate key {_show(duplicate)} in an object")
    return result


_DECODER: Final = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_reject_constant, object_pairs_hook=_unique_keys
)

# The scans of the raw bytes below work with quotes and brackets only. Bytes of UTF-8 above
# ASCII never look like ASCII, so no multi-byte character can pass for one.
_BRACKETS: Final = bytes.maketrans(b"[{]}", b"(())")
_NOT_MARKS: Final = bytes(sorted(set(range(256)).difference(b'"[]{}')))
_STRINGS: Final = re.compile(rb'"[^"]*"')
_STEPS: Final = bytes.maketrans(b"()", b"\x01\xff")
"""``(`` as +1 and ``)`` as -1, read as signed bytes."""
_PASSES: Final = 8
"""Removals of ``()`` pairs before the depth left is summed: enough for every valid message
without a nested meta (6 levels deep), and few enough to stay cheap on a hostile one."""
_ALL_BUT_QUOTES: Final = bytes(byte if byte == ord('"') else ord("a") for byte in range(256))
_SLICE: Final = 1 << 16
"""The bytes :func:`_long_runs` translates at a time."""
_RUN_STEPS: Final = (64, 256, 1024, 4096)
"""The run lengths :func:`_scalar_bounds` tries, shortest first."""
_LONG_RUN: Final = re.compile(rb'"[^"]{%d,}' % _RUN_STEPS[0])
"""A quote, then a run of the shortest step or more bytes without one."""
_LONG_RUNS: Final = 64
"""The most runs of the shortest step or more that :func:`_long_runs` lists one by one."""
_LONGEST_FLOAT: Final = 24
"""The longest ``repr`` of a float (``-2.2250738585072014e-308``)."""
_FLOAT_GROWTH: Final = 4
"""How much longer a meta can grow when written as compact JSON: a float written short, like
``1e15,`` (5 bytes), comes back as ``1000000000000000.0,`` (19 bytes); nothing else grows."""


def _neutral(data: bytes) -> bytes:
    """``data`` with every escaped backslash and escaped quote turned into ``aa``.

    Inside a string a backslash escapes the next character: pairs of backslashes first, then a
    backslash before a quote. Every quote left then starts or ends a string, and every string
    keeps its length. A backslash outside a string is not JSON, and the parser stops there.
    """
    if b"\\" not in data:
        return data
    return data.replace(b"\\\\", b"aa").replace(b'\\"', b"aa")


def _nests_too_deep(neutral: bytes) -> bool:
    """True if the arrays and objects of the text nest deeper than :data:`MAX_NESTING`.

    ``neutral`` is the message as :func:`_neutral` leaves it. A few passes over the bytes, at C
    speed and with no recursion, whatever the input. A document whose brackets past that depth
    do not pair up may be refused here too: it is not JSON either way.

    Why it is sound: with every opening bracket ``(``, every closing one ``)`` and strings taken
    out, the parser's depth at any point is the count of ``(`` minus ``)`` before it, up to the
    first ``)`` too many (where it stops). Close what is still open at the end, and every point
    of greatest depth sits inside an adjacent ``()`` pair; removing every such pair lowers the
    greatest depth by exactly one. A few such removals settle every usual message (a pass that
    removes nothing means nothing is left open); past them, the greatest depth left is the
    greatest running sum of +1 and -1.
    """
    marks = neutral.translate(_BRACKETS, _NOT_MARKS)
    if marks.count(b"(") <= MAX_NESTING:
        return False
    if b'"' in marks:
        # Strings out. Two quotes side by side are a string without brackets, or the end of one
        # string and the start of the next: removing them leaves every other quote as it was.
        if marks.count(b'""') * 2 == marks.count(b'"'):  # no string holds a bracket (usual)
            marks = marks.translate(None, b'"')
        else:
            marks = marks.replace(b'""', b"")
            marks = _STRINGS.sub(b"", marks)
            unterminated = marks.find(b'"')  # the parser stops there
            if unterminated >= 0:
                marks = marks[:unterminated]
    if b"(" * (MAX_NESTING + 1) in marks:
        return True
    marks += b")" * (marks.count(b"(") - marks.count(b")"))
    for _ in range(_PASSES):
        shorter = marks.replace(b"()", b"")
        if len(shorter) == len(marks):
            return False
        marks = shorter
    # Deeper than the passes went (a deep meta, or a hostile message): the greatest depth left,
    # in one sweep, rather than up to MAX_NESTING passes over what may still be most of the text.
    steps = memoryview(marks.translate(_STEPS)).cast("b")
    return max(accumulate(steps), default=0) > MAX_NESTING - _PASSES


def _scalar_bounds(neutral: bytes, limit: int) -> tuple[int, int | None]:
    """How many items a flat meta may have and be known to fit ``limit``, and the longest scalar.

    The first is ``-1`` if no flat meta is known to fit; the second, a bound on the compact JSON
    bytes of every string, number and literal of the message, is ``None`` if some are longer
    than every step. ``neutral`` is the message as :func:`_neutral` leaves it: every string's
    characters are one run of bytes between two quotes, and every number or literal lies in a
    run outside strings. Written as compact JSON, a string is never longer than in the text plus
    its quotes (escapes only shrink, or stay), an int never longer, a float at most
    :data:`_LONGEST_FLOAT`: so every scalar in a run shorter than ``step`` is at most ``bound``
    bytes. The few runs of ``step`` or more (:func:`_long_runs`) hold scalars of ``extra`` bytes
    in all. A flat meta of ``n`` items (``{``, ``n`` keys and values with a colon each,
    ``n - 1`` commas, ``}``) is then at most ``1 + n * (2 * bound + 2) + extra`` bytes.
    """
    runs = _long_runs(neutral)
    if runs is None:
        return -1, None
    items, longest = -1, None
    for step in _RUN_STEPS:
        longer = [(length, inside) for length, inside in runs if length >= step]
        # A run in a string is the string (and two quotes); one outside strings holds numbers
        # and literals, at most _FLOAT_GROWTH times its bytes.
        extra = sum(length + 2 if inside else _FLOAT_GROWTH * length for length, inside in longer)
        bound = max(step + 1, _LONGEST_FLOAT)  # step - 1 bytes, and two quotes
        if limit >= 2:  # not even "{}" fits a limit of 1
            items = max(items, (limit - 1 - extra) // (2 * bound + 2))
        if not longer:  # no scalar is longer: longer steps can only allow fewer items
            longest = bound
            break
    return items, longest


def _long_runs(neutral: bytes) -> list[tuple[int, bool]] | None:
    """Every run of the shortest step (64) or more bytes without a quote: its length, and
    whether it is inside a string. ``None`` if there are more than :data:`_LONG_RUNS`.

    Most messages have none, and a translated copy says so fastest; it is made a slice at a
    time (slices overlapping by a step), since one copy of a whole large message costs more in
    fresh memory than the scan itself. Where there are some, a search from quote to quote
    measures them.
    """
    step = _RUN_STEPS[0]
    needle = b"a" * step
    if not any(
        needle in neutral[start : start + _SLICE + step].translate(_ALL_BUT_QUOTES)
        for start in range(0, len(neutral), _SLICE)
    ):
        return []
    first = neutral.find(b'"')  # the run before it, if any, is outside strings
    first = len(neutral) if first < 0 else first
    runs = [(first, False)] if first >= step else []
    quotes = counted = 0  # quotes: how many before `counted`
    for run in _LONG_RUN.finditer(neutral, first):
        if len(runs) == _LONG_RUNS:
            return None
        start = run.start()  # the quote that opens the run
        quotes += neutral.count(b'"', counted, start + 1)
        counted = start + 1
        runs.append((run.end() - counted, quotes % 2 == 1))
    return runs


def _json_size(meta: dict[str, Any]) -> int:
    """The bytes of ``meta`` as compact JSON in UTF-8, as ``Tracker.track`` measures a meta."""
    text = _COMPACT.encode(meta)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def decode_message(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_dots: int = DEFAULT_MAX_DOTS,
    limits: DecodeLimits | None = None,
) -> Message:
    """Decode and validate bytes from another replica.

    Args:
        data: the bytes received.
        max_bytes: bytes longer than this are refused before being parsed.
        max_dots: the most dots the message may hold once its runs are expanded.
        limits: the sizes of metas, identity strings and replica names, and the replicas per
            list, accepted from a peer; ``None`` means ``DecodeLimits()``, the defaults.

    Returns:
        The message: a :class:`Heartbeat`, :class:`TransferRequest`, :class:`TransferAck` or
        :class:`GracefulPermdown`, equal to the one that was encoded.

    Raises:
        RemoteProtocolError: the bytes are not a valid message of this wire version, or break a
            limit. The message names the offending field; ``.replica`` is the sender's name when
            it could be read.
        LocalProtocolError: ``data`` is not bytes-like, a limit is not an int (>= 1 for
            ``max_bytes``, >= 0 for ``max_dots``), or ``limits`` is not a :class:`DecodeLimits`.
    """
    if isinstance(data, (bytes, bytearray)):
        size = len(data)
    elif isinstance(data, memoryview):
        try:
            size = data.nbytes
        except ValueError as exc:  # a released memoryview
            raise LocalProtocolError(f"cannot read the data: {exc}") from exc
    else:
        raise LocalProtocolError(
            f"data must be bytes, bytearray or memoryview, not {type(data).__name__}"
        )
    _check_limit("max_bytes", max_bytes, 1)
    _check_limit("max_dots", max_dots, 0)
    if limits is None:
        limits = _DEFAULT_LIMITS
    elif not isinstance(limits, DecodeLimits):
        raise LocalProtocolError(f"limits must be a DecodeLimits, not {type(limits).__name__}")
    if size > max_bytes:
        raise RemoteProtocolError(f"message: {size} bytes, over max_bytes={max_bytes}")
    raw = data if isinstance(data, bytes) else bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            f"message: not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    neutral = _neutral(raw)
    if _nests_too_deep(neutral):
        raise RemoteProtocolError(
            f"message: not valid JSON: it nests deeper than {MAX_NESTING} levels"
        )
    try:
        document = _DECODER.decode(text)
    except _BadJSON as exc:
        raise RemoteProtocolError(f"message: not valid JSON: {exc}") from exc
    except RecursionError as exc:  # only under a recursion limit set very low
        raise RemoteProtocolError("message: not valid JSON: it nests too deeply") from exc
    except ValueError as exc:  # json.JSONDecodeError, and ints over Python's digit limit
        raise RemoteProtocolError(f"message: not valid JSON: {exc}") from exc
    check_text = _SURROGATE_ESCAPE.search(text) is not None
    return _Reader(max_dots, check_text, limits, neutral).message(document)


def _seen_text(span: tuple[int, int]) -> str:
    first, last = span
    return f"context {last}" if first == 0 else f"range ({first}, {last}]"


def _show(value: object) -> str:
    """A short rendering of a JSON value for an error message."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if type(value) is int:
        text = str(value)
        return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"
    if type(value) is float:
        return repr(value)
    if type(value) is list:
        return f"an array of {len(value)} item{'' if len(value) == 1 else 's'}"
    if type(value) is dict:
        return f"an object of {len(value)} field{'' if len(value) == 1 else 's'}"
    return type(value).__name__  # pragma: no cover (JSON has no other types)


def _ref_text(ref: ReplicaRef) -> str:
    return f"[{ref.name!r}, {ref.vsn}]"


_Trail = Union[tuple["_Trail", Union[str, int]], None]  # noqa: UP007 (a runtime alias on 3.10)
"""A path in a JSON document, innermost step last: ``((None, "delta"), 0)`` is ``.delta[0]``."""


def _render(root: str, trail: _Trail) -> str:
    steps: list[str] = []
    while trail is not None:
        trail, step = trail
        steps.append(f"[{step}]" if type(step) is int else f".{step}")
    return root + "".join(reversed(steps))


_checked_ref: Final[Callable[[tuple[str, int]], ReplicaRef]] = partial(tuple.__new__, ReplicaRef)
"""A ReplicaRef of a name and vsn the reader checked, without ReplicaRef's checking
constructor: a clock names every replica, and most messages are clocks."""

_RECENT_REFS: Final[dict[str, ReplicaRef]] = {}
"""The refs decoded lately, by name (emptied when it holds :data:`_RECENT_REFS_MAX`): every
heartbeat's clock names the same replicas, and finding a ref costs a third of making one."""

_RECENT_REFS_MAX: Final = 4096


def _recent_ref(name: str, vsn: int) -> ReplicaRef:
    """The ref ``(name, vsn)`` (checked by the caller), made once while it stays recent."""
    ref = _RECENT_REFS.get(name)
    if ref is None or ref.vsn != vsn:
        if len(_RECENT_REFS) >= _RECENT_REFS_MAX:
            _RECENT_REFS.clear()
        ref = _RECENT_REFS[name] = _checked_ref((name, vsn))
    return ref


def _is_text(value: str) -> bool:
    return _SURROGATE.search(value) is None


class _Reader:
    """The validation of one decoded JSON document (one per message: it counts dots)."""

    __slots__ = (
        "check_text",
        "dots_left",
        "identity_chars",
        "limits",
        "max_dots",
        "name_chars",
        "neutral",
        "replica",
    )

    def __init__(
        self, max_dots: int, check_text: bool, limits: DecodeLimits, neutral: bytes
    ) -> None:
        self.max_dots = max_dots
        self.dots_left = max_dots
        self.check_text = check_text
        self.limits = limits
        self.neutral = neutral
        self.replica: str | None = None
        # A string of at most a quarter as many characters as a limit's bytes is within it
        # (UTF-8 takes at most 4 bytes a character); only a longer one is measured.
        self.name_chars = limits.max_name_bytes // 4
        self.identity_chars = (
            limits.max_conn_bytes // 4,
            limits.max_topic_bytes // 4,
            limits.max_key_bytes // 4,
        )

    def entry_bounds(self) -> tuple[int, bool]:
        """What the entries of this message can be taken with, unmeasured.

        How many items a flat meta (one of scalars only) may have and be known to fit
        ``max_meta_bytes`` (``-1``: measure every meta), and whether every string of the message
        is known to fit the limits of ``conn``, ``topic`` and ``key`` (:func:`_scalar_bounds`).
        Computed when the entries are read: a message has at most one payload, so at most once
        per message. A whole message of at most a quarter of ``max_meta_bytes`` cannot hold a
        meta over it at all (:data:`_FLOAT_GROWTH`): then no meta is measured, flat or nested
        (:meth:`meta`), and identities are measured by their characters, entry by entry (there
        are few).
        """
        limits = self.limits
        if self.small():
            # More items than a meta within the limit can hold.
            return limits.max_meta_bytes, False
        items, longest = _scalar_bounds(self.neutral, limits.max_meta_bytes)
        shortest = min(limits.max_conn_bytes, limits.max_topic_bytes, limits.max_key_bytes)
        # A string's compact JSON is its UTF-8 bytes (or more: escapes) and two quotes.
        return items, longest is not None and longest - 2 <= shortest

    def small(self) -> bool:
        """True if the message is too small to hold a meta over ``max_meta_bytes``."""
        return len(self.neutral) * _FLOAT_GROWTH <= self.limits.max_meta_bytes

    def error(self, path: str, problem: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"{path}: {problem}", replica=self.replica)

    def fail(self, path: str, problem: str) -> NoReturn:
        raise self.error(path, problem)

    def expected(self, path: str, what: str, value: object) -> NoReturn:
        self.fail(path, f"expected {what}, got {_show(value)}")

    # -------------------------------------------------------------- envelope

    def message(self, document: object) -> Message:
        if type(document) is not dict:
            self.expected("message", "a JSON object", document)
        if "v" not in document:
            self.fail("message.v", "missing field (the wire version)")
        version = document["v"]
        if type(version) is not int:
            self.expected("message.v", f"the wire version {WIRE_VERSION}", version)
        if version != WIRE_VERSION:
            self.fail(
                "message.v",
                f"unsupported wire version {_show(version)} (this codec speaks {WIRE_VERSION})",
            )
        if "type" not in document:
            self.fail("message.type", "missing field")
        kind = document["type"]
        if type(kind) is not str or kind not in _FIELDS:
            self.expected("message.type", f"one of {', '.join(_FIELDS)}", kind)
        if "sender" not in document:
            self.fail(f"{kind}.sender", "missing field")
        sender = self.ref(document["sender"], f"{kind}.sender")
        self.replica = sender.name
        names = _FIELDS[kind]
        part, parts = 0, 1
        if _PART in document and kind in (_HEARTBEAT, _TRANSFER_ACK):
            part, parts = self.part(document[_PART], f"{kind}.part")
            names = (*names, _PART)
        self.fields(document, kind, names)
        if self.check_text:
            self.find_lone_surrogate(document, kind)
        if kind == _HEARTBEAT:
            raw_delta = document["delta"]
            if raw_delta is not None and type(raw_delta) is not dict:
                self.expected("heartbeat.delta", "null or an object", raw_delta)
            clock = self.context(document["clock"], "heartbeat.clock")
            if sender in clock:
                self.fail("heartbeat.clock", "the sender's own clock belongs in heartbeat.own")
            own = document["own"]
            if own is not None:
                clock = {sender: self.number(own, "heartbeat.own", 0), **clock}
            delta = (
                None
                if raw_delta is None
                else self.delta(
                    self.fields(raw_delta, "heartbeat.delta", _DELTA_FIELDS), "heartbeat.delta"
                )
            )
            # Every field checked above: the constructor would check the clock again.
            return _trusted(
                Heartbeat, sender=sender, clock=clock, delta=delta, part=part, parts=parts
            )
        if kind == _TRANSFER_REQUEST:
            return _trusted(  # every field checked: the constructor would check the clock again
                TransferRequest,
                request_id=self.number(document["request_id"], "transfer_request.request_id", 0),
                sender=sender,
                clock=self.context(document["clock"], "transfer_request.clock"),
            )
        if kind == _TRANSFER_ACK:
            request_id = self.number(document["request_id"], "transfer_ack.request_id", 0)
            payload = self.payload(document["payload"], "transfer_ack.payload")
            if isinstance(payload, Snapshot) and parts != 1:
                self.fail(
                    "transfer_ack.part", "a snapshot is sent whole (its parts are snapshot_part)"
                )
            return TransferAck(
                request_id=request_id,
                sender=sender,
                payload=payload,
                part=part,
                parts=parts,
            )
        return GracefulPermdown(sender=sender)

    def fields(self, value: dict[str, Any], path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """``value``, once it is known to hold exactly the fields ``names``."""
        if len(value) != len(names) or not all(name in value for name in names):
            for name in names:
                if name not in value:
                    self.fail(f"{path}.{name}", "missing field")
            unknown = sorted(name for name in value if name not in names)
            self.fail(path, f"unknown field {_show(unknown[0])}")
        return value

    def part(self, value: object, path: str) -> tuple[int, int]:
        if type(value) is not list or len(value) != 2:
            self.expected(path, "[index, count]", value)
        index = self.number(value[0], f"{path}.index", 0)
        count = self.number(value[1], f"{path}.count", 0)
        if count < 2:
            self.fail(
                f"{path}.count",
                f"{count}: a message in parts has at least 2 (a whole one has no part field)",
            )
        if index >= count:
            self.fail(f"{path}.index", f"{index} is not below the count {count}")
        return index, count

    def payload(self, value: object, path: str) -> Delta | Snapshot | SnapshotPart:
        if type(value) is not dict:
            self.expected(path, "an object", value)
        if "kind" not in value:
            self.fail(f"{path}.kind", "missing field")
        kind = value["kind"]
        if type(kind) is not str or kind not in _PAYLOAD_FIELDS:
            self.expected(f"{path}.kind", "'delta', 'snapshot' or 'snapshot_part'", kind)
        self.fields(value, path, _PAYLOAD_FIELDS[kind])
        if kind == "delta":
            return self.delta(value, path)
        if kind == "snapshot_part":
            return self.snapshot_part(value, path)
        return self.snapshot(value, path)

    def find_lone_surrogate(self, document: dict[str, Any], kind: str) -> None:
        """Fail on a string or key holding a lone surrogate, anywhere in the document.

        Only run when the text has a surrogate escape. Paths are kept as linked tuples and only
        rendered on failure, so a large document costs one pass and no string building.
        """
        problem = "holds a lone surrogate: it is not valid Unicode"
        stack: list[tuple[object, _Trail]] = [(document, None)]
        while stack:
            value, trail = stack.pop()
            if type(value) is dict:
                for key, item in value.items():
                    if not _is_text(key):
                        self.fail(_render(kind, trail), f"a key {problem}")
                    stack.append((item, (trail, key)))
            elif type(value) is list:
                stack.extend((item, (trail, i)) for i, item in enumerate(value))
            elif type(value) is str and not _is_text(value):
                self.fail(_render(kind, trail), f"a string {problem}")

    # -------------------------------------------------------------- scalars and replicas

    def number(self, value: object, path: str, low: int) -> int:
        if type(value) is not int or value < low:
            self.expected(path, "a positive int" if low else "a non-negative int", value)
        if value > MAX_WIRE_INT:
            self.fail(path, f"{_show(value)} is above the wire's limit of 2**63 - 1")
        return value

    def name(self, value: object, path: str) -> str:
        if type(value) is not str or not value:
            self.expected(path, "a non-empty string", value)
        if self.check_text and not _is_text(value):
            self.fail(path, "a string holds a lone surrogate: it is not valid Unicode")
        if len(value) > self.name_chars:
            size = _utf8_size(value)
            if size > self.limits.max_name_bytes:
                self.fail(
                    path, f"{size} bytes of UTF-8, over max_name_bytes={self.limits.max_name_bytes}"
                )
        return value

    def replicas(self, value: list[Any], path: str) -> None:
        """Fail if the list ``value`` names more replicas than ``max_replicas``."""
        if len(value) > self.limits.max_replicas:
            self.fail(path, f"{len(value)} replicas, over max_replicas={self.limits.max_replicas}")

    def ref(self, value: object, path: str) -> ReplicaRef:
        if type(value) is not list or len(value) != 2:
            self.expected(path, "[name, vsn]", value)
        return self.ref_of(value[0], value[1], path)

    def ref_of(self, name: object, vsn: object, path: str) -> ReplicaRef:
        ref = self.usual_ref(name, vsn)
        if ref is None:
            ref = ReplicaRef(self.name(name, f"{path}.name"), self.number(vsn, f"{path}.vsn", 0))
        return ref

    def usual_ref(self, name: object, vsn: object) -> ReplicaRef | None:
        """The ref, if it passes every check at a glance (a short name); else None."""
        if (
            type(name) is str
            and type(vsn) is int
            and 0 < len(name) <= self.name_chars
            and 0 <= vsn <= MAX_WIRE_INT
            and (not self.check_text or _is_text(name))
        ):
            return _recent_ref(name, vsn)
        return None

    def items(self, value: object, path: str, shape: str) -> list[Any]:
        if type(value) is not list:
            self.expected(path, "an array", value)
        self.replicas(value, path)
        for i, item in enumerate(value):
            if type(item) is not list or len(item) != 3:
                self.expected(f"{path}[{i}]", shape, item)
        return value

    # -------------------------------------------------------------- causality

    def context(self, value: object, path: str) -> dict[ReplicaRef, int]:
        if type(value) is not list:
            self.expected(path, "an array", value)
        self.replicas(value, path)
        result: dict[ReplicaRef, int] = {}
        name_chars, check_text, recent = self.name_chars, self.check_text, _RECENT_REFS
        # Every heartbeat's clock names every replica: the usual item is checked inline, at a
        # glance, and only one that fails that is diagnosed (and its path built).
        for item in value:
            if type(item) is list and len(item) == 3:
                name, vsn, clock = item
                if (
                    type(name) is str
                    and type(vsn) is int
                    and type(clock) is int
                    and 0 < len(name) <= name_chars
                    and 0 <= vsn <= MAX_WIRE_INT
                    and 0 <= clock <= MAX_WIRE_INT
                    and (not check_text or _is_text(name))
                ):
                    ref = recent.get(name)
                    if ref is None or ref.vsn != vsn:
                        ref = _recent_ref(name, vsn)
                    if ref not in result:
                        result[ref] = clock
                        continue
            self.context_item(item, f"{path}[{len(result)}]", result)
        return result

    def context_item(self, item: object, where: str, result: dict[ReplicaRef, int]) -> None:
        """Add what :meth:`context`'s glance held back, or fail on what is wrong with it."""
        if type(item) is not list or len(item) != 3:
            self.expected(where, "[name, vsn, clock]", item)
        name, vsn, clock = item
        ref = self.ref_of(name, vsn, where)
        if ref in result:
            self.fail(where, f"duplicate replica {_ref_text(ref)}")
        result[ref] = self.number(clock, f"{where}.clock", 0)

    def clouds(self, value: object, path: str) -> dict[ReplicaRef, frozenset[int]]:
        result: dict[ReplicaRef, frozenset[int]] = {}
        for i, (name, vsn, runs) in enumerate(self.items(value, path, "[name, vsn, runs]")):
            where = f"{path}[{i}]"
            ref = self.ref_of(name, vsn, where)
            if ref in result:
                self.fail(where, f"duplicate replica {_ref_text(ref)}")
            if type(runs) is not list:
                self.expected(f"{where}.runs", "an array of [first, last] runs", runs)
            ranges: list[range] = []
            previous = 0
            for k, run in enumerate(runs):
                if type(run) is list and len(run) == 2:
                    first, last = run
                    if (
                        type(first) is int
                        and type(last) is int
                        and previous < first <= last <= MAX_WIRE_INT
                    ):
                        self.dots_left -= last - first + 1
                        if self.dots_left < 0:
                            self.fail(
                                f"{where}.runs[{k}]",
                                f"the message holds more than max_dots={self.max_dots} dots",
                            )
                        ranges.append(range(first, last + 1))
                        previous = last
                        continue
                self.bad_run(run, f"{where}.runs[{k}]", previous)
            if len(ranges) == 1:
                result[ref] = frozenset(ranges[0])
            else:
                result[ref] = frozenset(chain.from_iterable(ranges))
        return result

    def bad_run(self, run: object, path: str, previous: int) -> NoReturn:
        if type(run) is not list or len(run) != 2:
            self.expected(path, "a run [first, last]", run)
        first = self.number(run[0], f"{path}.first", 1)
        last = self.number(run[1], f"{path}.last", 1)
        if first > last:
            self.fail(path, f"first {first} is above last {last}")
        self.fail(
            path,
            f"run [{first}, {last}] overlaps or precedes the previous run, which ends at "
            f"{previous} (runs ascend without overlap)",
        )

    # -------------------------------------------------------------- entries

    def values(
        self,
        value: object,
        path: str,
        covered: Mapping[ReplicaRef, tuple[int, int]] | None,
        clouds: dict[ReplicaRef, frozenset[int]],
    ) -> dict[ReplicaRef, dict[int, Entry]]:
        """Entries by owner; each must be within ``covered`` (first, last] or ``clouds``.

        ``covered`` is ``None`` for a delta; otherwise it names every owner allowed.
        """
        result: dict[ReplicaRef, dict[int, Entry]] = {}
        empty: frozenset[int] = frozenset()
        groups = self.items(value, path, "[name, vsn, entries]")
        conn_chars, topic_chars, key_chars = self.identity_chars
        flat_items, identities_fit = self.entry_bounds() if groups else (0, False)
        for i, (name, vsn, entries) in enumerate(groups):
            where = f"{path}[{i}]"
            owner = self.ref_of(name, vsn, where)
            if owner in result:
                self.fail(where, f"duplicate owner {_ref_text(owner)}")
            if covered is None:
                first, upto = 0, 0
            elif owner in covered:
                first, upto = covered[owner]
            else:
                self.fail(where, f"owner {_ref_text(owner)} is not in the payload's context")
            cloud = clouds.get(owner, empty)
            if type(entries) is not list:
                self.expected(f"{where}.entries", "an array", entries)
            if len(entries) % 5:
                self.expected(
                    f"{where}.entries",
                    "an array of five items per entry: clock, conn, topic, key, meta",
                    entries,
                )
            rows: dict[int, Entry] = {}
            # One flat array per owner, not one per entry: a list per entry doubled the objects
            # a transfer's decoding leaves to the garbage collector.
            items = iter(entries)
            for j, item in enumerate(zip(items, items, items, items, items, strict=True)):
                clock, conn, topic, key, meta = item
                # The hot path: one test of everything, the diagnosis only when it fails.
                if not (
                    type(clock) is int
                    and 0 < clock <= MAX_WIRE_INT
                    and (first < clock <= upto or clock in cloud)
                    and clock not in rows
                    and type(conn) is str
                    and type(topic) is str
                    and type(key) is str
                    and type(meta) is dict
                    and (
                        identities_fit
                        or (
                            len(conn) <= conn_chars
                            and len(topic) <= topic_chars
                            and len(key) <= key_chars
                        )
                    )
                ):
                    self.check_entry(
                        item, f"{where}.entries[{j}]", owner, (first, upto), cloud, rows
                    )
                if len(meta) > flat_items or not _CONTAINERS.isdisjoint(map(type, meta.values())):
                    meta = self.meta(meta, f"{where}.entries[{j}].meta")
                # A flat meta is stored as parsed: the dict is this message's alone.
                rows[clock] = stored_entry((topic, key, conn, meta, owner, clock))
            result[owner] = rows
        return result

    def check_entry(
        self,
        item: tuple[Any, ...],
        path: str,
        owner: ReplicaRef,
        span: tuple[int, int],
        cloud: frozenset[int],
        rows: dict[int, Entry],
    ) -> None:
        """Fail on what is wrong with an entry the hot path held back.

        Returns only if nothing is: its identity strings had enough characters to need measuring
        in UTF-8 bytes, and are within their limits.
        """
        clock = self.number(item[0], f"{path}.clock", 1)
        if clock in rows:
            self.fail(f"{path}.clock", f"duplicate dot {clock} of {_ref_text(owner)}")
        for index, field in ((1, "conn"), (2, "topic"), (3, "key")):
            if type(item[index]) is not str:
                self.expected(f"{path}.{field}", "a string", item[index])
        if type(item[4]) is not dict:
            self.expected(f"{path}.meta", "an object", item[4])
        first, upto = span
        if not (first < clock <= upto or clock in cloud):
            self.fail(
                f"{path}.clock",
                f"dot {clock} of {_ref_text(owner)} is outside what the payload has seen "
                f"({_seen_text(span)}, clouds {'without it' if cloud else 'empty'})",
            )
        limits = self.limits
        for index, field, limit in (
            (1, "conn", limits.max_conn_bytes),
            (2, "topic", limits.max_topic_bytes),
            (3, "key", limits.max_key_bytes),
        ):
            size = _utf8_size(item[index])
            if size > limit:
                self.fail(
                    f"{path}.{field}", f"{size} bytes of UTF-8, over max_{field}_bytes={limit}"
                )

    def meta(self, meta: dict[str, Any], path: str) -> dict[str, JSONValue]:
        """A meta the hot path could not take as it is: nested, or with many items.

        A nested meta goes through :func:`copy_meta` (its depth); either is measured as compact
        JSON unless the message is too :meth:`small` to hold a meta over the limit.
        """
        if _CONTAINERS.isdisjoint(map(type, meta.values())):
            stored: dict[str, JSONValue] = meta
        else:
            try:
                stored = copy_meta(meta)
            except LocalProtocolError as exc:
                problem = exc.message
                if len(problem) > 200:  # the path of a deep meta
                    problem = f"{problem[:100]}...{problem[-100:]}"
                raise self.error(path, problem) from exc
        if not self.small():
            limit = self.limits.max_meta_bytes
            size = _json_size(meta)  # the parsed plain dict: the encoder's fast path, same JSON
            if size > limit:
                self.fail(path, f"{size} bytes as compact JSON, over max_meta_bytes={limit}")
        return stored

    # -------------------------------------------------------------- payloads

    def delta(self, fields: dict[str, Any], path: str) -> Delta:
        replica = self.ref(fields["replica"], f"{path}.replica")
        clouds = self.clouds(fields["clouds"], f"{path}.clouds")
        start = self.context(fields["start"], f"{path}.start")
        end = self.context(fields["end"], f"{path}.end")
        for i, (ref, clock) in enumerate(end.items()):
            if ref in start and clock < start[ref]:
                self.fail(
                    f"{path}.end[{i}].clock",
                    f"{clock} is below the start clock {start[ref]} of {_ref_text(ref)}",
                )
        values = self.values(fields["values"], f"{path}.values", None, clouds)
        # Every field checked here: the constructor would copy and check every entry again.
        return _trusted(Delta, replica=replica, values=values, clouds=clouds, start=start, end=end)

    def snapshot(self, fields: dict[str, Any], path: str) -> Snapshot:
        replica = self.ref(fields["replica"], f"{path}.replica")
        context = self.context(fields["context"], f"{path}.context")
        clouds = self.clouds(fields["clouds"], f"{path}.clouds")
        covered = {owner: (0, clock) for owner, clock in context.items()}
        values = self.values(fields["values"], f"{path}.values", covered, clouds)
        return _trusted(Snapshot, replica=replica, context=context, clouds=clouds, values=values)

    def snapshot_part(self, fields: dict[str, Any], path: str) -> SnapshotPart:
        replica = self.ref(fields["replica"], f"{path}.replica")
        context = self.context(fields["context"], f"{path}.context")
        ranges = self.ranges(fields["ranges"], f"{path}.ranges", context)
        clouds = self.clouds(fields["clouds"], f"{path}.clouds")
        covered = {owner: ranges.get(owner, (0, 0)) for owner in context}
        values = self.values(fields["values"], f"{path}.values", covered, clouds)
        return _trusted(
            SnapshotPart,
            replica=replica,
            context=context,
            ranges=ranges,
            clouds=clouds,
            values=values,
        )

    def ranges(
        self, value: object, path: str, context: dict[ReplicaRef, int]
    ) -> dict[ReplicaRef, tuple[int, int]]:
        if type(value) is not list:
            self.expected(path, "an array", value)
        self.replicas(value, path)
        result: dict[ReplicaRef, tuple[int, int]] = {}
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if type(item) is not list or len(item) != 4:
                self.expected(where, "[name, vsn, first, last]", item)
            name, vsn, first, last = item
            ref = self.ref_of(name, vsn, where)
            if ref in result:
                self.fail(where, f"duplicate replica {_ref_text(ref)}")
            if ref not in context:
                self.fail(where, f"replica {_ref_text(ref)} is not in the payload's context")
            first = self.number(first, f"{where}.first", 0)
            last = self.number(last, f"{where}.last", 1)
            if not first < last <= context[ref]:
                self.fail(
                    where,
                    f"the range ({first}, {last}] is empty or beyond the context "
                    f"{context[ref]} of {_ref_text(ref)}",
                )
            result[ref] = (first, last)
        return result
