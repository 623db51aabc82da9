"""Messages too large for one transmission, split into parts that each fit (``docs/wire.rst``).

Theory of operation
===================

Only what carries entries can be split: a heartbeat's delta and a transfer ack's payload. The
other messages, and the clocks every part repeats, are small by construction (the configuration's
limits see to it), and a message that still does not fit is refused with
:class:`~presence_core.LimitExceeded`.

A payload is cut along its *units*: its entries, and the runs of cloud dots that hold no entry
(the tombstones a delta gossips on can be thousands of scattered dots). Units are ordered by
owner, then by dot, and handed out in consecutive stretches; a part covers, for each owner it
holds units of, the interval of dots from just after the previous part's last unit of that owner
to its own last one (the owner's last part reaches to the end). Owners with no unit at all (only
a context) go to the first part whole. Each part is the payload restricted to what it covers:

* a delta's part is a :class:`~presence_core.Delta` with the cloud dots and the entries of its
  intervals (its ``start`` and ``end`` are the whole delta's);
* a full state's part is a :class:`~presence_core.SnapshotPart`: its intervals below the context
  become ``ranges``, the cloud dots in them stay ``clouds``.

So every dot the payload has seen is covered by exactly one part, and every entry travels in the
part that covers its dot: a part speaks for its dots only, which makes parts safe to merge in any
order, twice, or not at all.

Sizes are measured, not guessed: the whole message is encoded first (most messages fit, and this
is their only encoding). One that does not is cut into as many even runs as its size asks for,
with a margin; a part that still does not fit (entries of uneven size) is cut in two until it
does, and only then are the parts numbered, so that ``part`` and ``parts`` are final.

Dots count too: a decoder refuses a message whose clouds expand to more than ``max_dots`` dots
(:func:`~presence_core.decode_message`), and a window of many joins and leaves can hold far more
dots than bytes (one run ``[[1,200000]]`` is 200,000 dots in 12 bytes). So a message fits when
both its encoding and its dots do; a run of cloud dots longer than ``max_dots`` is cut into runs
of at most ``max_dots`` (each its own unit), and a part is cut further before a unit that would
take its dots over ``max_dots``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import pairwise

from ._codec import DEFAULT_MAX_DOTS, encode_unlimited
from ._errors import LimitExceeded, LocalProtocolError
from ._messages import Heartbeat, Message, TransferAck
from ._payloads import Delta, Entry, Snapshot, SnapshotPart, _trusted
from ._vclock import ReplicaRef

__all__ = ["encode_parts"]

_FILL = 0.9
"""The share of ``max_bytes`` the first cut aims at, so that uneven entries rarely need a second."""

_TOP = 2**63
"""Above every dot the wire carries: the open end of an owner's last interval."""

_WIDEST_NUMBER = 2**63 - 1
"""Numbers parts while they are measured: no final ``[part, parts]`` is written longer."""

Payload = Delta | Snapshot | SnapshotPart
Cover = dict[ReplicaRef, tuple[int, int]]
"""Per owner, the dots ``(after, upto]`` one part covers."""


def encode_parts(
    message: Message, *, max_bytes: int, max_dots: int = DEFAULT_MAX_DOTS
) -> list[tuple[Message, bytes]]:
    """Encode ``message`` as one message or, if it does not fit, as parts that do.

    A message fits when its encoding is at most ``max_bytes`` and its clouds hold at most
    ``max_dots`` dots: what :func:`~presence_core.decode_message` accepts with the same limits.

    Args:
        message: the message.
        max_bytes: the largest encoding allowed for each part.
        max_dots: the most cloud dots each part may hold (the receivers' ``max_dots``).

    Returns:
        ``(message, data)`` pairs, in order: the message itself when it fits, else its parts
        (heartbeats or transfer acks with ``part`` and ``parts`` set).

    Raises:
        LimitExceeded: the message cannot be split to fit (it carries no payload, or one entry
            or dot run with the fields every part repeats is larger than ``max_bytes``).
        LocalProtocolError: as :func:`~presence_core.encode_message` raises it, or
            ``max_bytes`` or ``max_dots`` is not an int >= 1.
    """
    if type(max_bytes) is not int or max_bytes < 1:
        raise LocalProtocolError(f"max_bytes must be an int >= 1, not {max_bytes!r}")
    if type(max_dots) is not int or max_dots < 1:
        raise LocalProtocolError(f"max_dots must be an int >= 1, not {max_dots!r}")
    data = encode_unlimited(message)
    payload = _payload(message)
    dots = 0 if payload is None else _dot_count(payload)
    if len(data) <= max_bytes and dots <= max_dots:
        return [(message, data)]
    # A payload holding more dots than max_dots has at least two units (runs are cut at
    # max_dots), so a message that cannot be cut is always one too large in bytes.
    if payload is None or _unit_count(payload, max_dots) < 2:
        raise _too_large(message, len(data), max_bytes)
    count = max(
        -(-len(data) // max(1, int(max_bytes * _FILL))), -(-dots // max(1, int(max_dots * _FILL)))
    )
    pieces = _split(payload, count, max_dots)
    encoded = [_numbered(message, piece, i, len(pieces)) for i, piece in enumerate(pieces)]
    if all(
        len(data) <= max_bytes and _dot_count(piece) <= max_dots
        for piece, (_, data) in zip(pieces, encoded, strict=True)
    ):
        return encoded
    # Entries of uneven size, or dots unevenly spread: cut what does not fit in two until
    # everything does, then number.
    fitting: list[Payload] = []
    pending = list(reversed(pieces))
    while pending:
        piece = pending.pop()
        size = len(encode_unlimited(_wrap(message, piece, _WIDEST_NUMBER - 1, _WIDEST_NUMBER)))
        if size <= max_bytes and _dot_count(piece) <= max_dots:
            fitting.append(piece)
        elif _unit_count(piece, max_dots) < 2:  # one unit holds at most max_dots dots
            raise _too_large(message, size, max_bytes)
        else:
            pending.extend(reversed(_split(piece, 2, max_dots)))
    return [_numbered(message, piece, i, len(fitting)) for i, piece in enumerate(fitting)]


def _too_large(message: Message, size: int, max_bytes: int) -> LimitExceeded:
    what = type(message).__name__
    return LimitExceeded(
        f"{what}: {size} bytes, over max_bytes={max_bytes}, and it cannot be split further "
        "(what is left is one entry or dot run, or the fields every part repeats)"
    )


def _payload(message: Message) -> Payload | None:
    if isinstance(message, Heartbeat):
        return message.delta
    if isinstance(message, TransferAck):
        return message.payload
    return None


def _wrap(message: Message, payload: Payload, part: int, parts: int) -> Message:
    if isinstance(message, Heartbeat):
        assert isinstance(payload, Delta)  # a heartbeat's delta splits into deltas
        return Heartbeat(
            sender=message.sender, clock=message.clock, delta=payload, part=part, parts=parts
        )
    assert isinstance(message, TransferAck)  # only these two carry a payload
    return TransferAck(
        request_id=message.request_id,
        sender=message.sender,
        payload=payload,
        part=part,
        parts=parts,
    )


def _numbered(message: Message, payload: Payload, part: int, parts: int) -> tuple[Message, bytes]:
    numbered = _wrap(message, payload, part, parts)
    return numbered, encode_unlimited(numbered)


def _unit_count(payload: Payload, run_cap: int) -> int:
    return len(_Units(payload, run_cap).units)


def _dot_count(payload: Payload) -> int:
    """The dots of ``payload``'s clouds: what a decoder counts against its ``max_dots``."""
    return sum(map(len, payload.clouds.values()))


# ---------------------------------------------------------------------------------- cutting


class _Units:
    """What a payload can be cut between: its entries and the runs of its other cloud dots.

    A unit sits at a dot (an entry at its clock, a run at its last dot), and units are ordered
    by owner, then dot. A cut after a unit ends an interval there; the next interval of that
    owner starts just after it, so a unit is never cut and an entry travels with its dot. A run
    longer than ``run_cap`` dots is several units of at most ``run_cap`` dots each.

    ``weights`` are the cloud dots each unit brings to a part: a run its length, an entry 1 if
    its dot is in the clouds (a delta's always is), else 0.
    """

    __slots__ = ("clouds", "rows", "units", "weights")

    def __init__(self, payload: Payload, run_cap: int) -> None:
        self.rows = {owner: sorted(rows) for owner, rows in payload.values.items()}
        self.clouds = {owner: sorted(dots) for owner, dots in payload.clouds.items()}
        positions: dict[ReplicaRef, list[tuple[int, int]]] = {}
        for owner, clocks in self.rows.items():
            cloud = payload.clouds.get(owner, frozenset())
            positions[owner] = [(clock, 1 if clock in cloud else 0) for clock in clocks]
        for owner, dots in self.clouds.items():
            held = payload.values.get(owner, {})
            run_ends = positions.setdefault(owner, [])
            run = 0  # the dots of the current run so far
            for index, dot in enumerate(dots):
                if dot in held:
                    continue
                run += 1
                following = dots[index + 1] if index + 1 < len(dots) else None
                if run == run_cap or following != dot + 1 or following in held:
                    run_ends.append((dot, run))
                    run = 0
            run_ends.sort()
        ordered = [(owner, unit) for owner in sorted(positions) for unit in positions[owner]]
        self.units = [(owner, dot) for owner, (dot, _) in ordered]
        self.weights = [weight for _, (_, weight) in ordered]


def _split(payload: Payload, pieces: int, max_dots: int) -> list[Payload]:
    """``payload`` cut into at least ``pieces`` parts of about as many units each.

    A part holding more than ``max_dots`` dots is cut further, before a unit that would take it
    over, so there may be more parts than ``pieces``, but none holds too many dots.
    """
    cut = _Units(payload, max_dots)
    units, weights = cut.units, cut.weights
    count = max(1, min(pieces, len(units)))
    even = [len(units) * i // count for i in range(count + 1)]
    bounds = [0]
    for start, end in pairwise(even):
        dots = 0
        for index in range(start, end):
            if dots + weights[index] > max_dots:
                bounds.append(index)
                dots = 0
            dots += weights[index]
        bounds.append(end)
    count = len(bounds) - 1
    last_chunk: dict[ReplicaRef, int] = {}  # the last chunk holding units of each owner
    for chunk in range(count):
        for owner, _ in units[bounds[chunk] : bounds[chunk + 1]]:
            last_chunk[owner] = chunk
    covers: list[Cover] = []
    after: dict[ReplicaRef, int] = {}  # the last dot handed out so far, per owner
    for chunk in range(count):
        cover: Cover = {}
        for owner, clock in units[bounds[chunk] : bounds[chunk + 1]]:
            upto = _TOP if last_chunk[owner] == chunk else clock
            cover[owner] = (after.get(owner, 0), upto)
        after.update((owner, cover[owner][1]) for owner in cover)
        covers.append(cover)
    # Owners without units (only a context range) ride whole with the first part.
    bare = set(_owners(payload)).difference(last_chunk)
    covers[0].update((owner, (0, _TOP)) for owner in sorted(bare))
    return [_restrict(payload, cover, cut.rows, cut.clouds) for cover in covers]


def _owners(payload: Payload) -> list[ReplicaRef]:
    if isinstance(payload, Delta):
        return [*payload.clouds, *payload.values]
    if isinstance(payload, SnapshotPart):
        return [*payload.ranges, *payload.clouds, *payload.values]
    return [*payload.context, *payload.clouds, *payload.values]


def _inside(dots: Sequence[int], after: int, upto: int) -> Sequence[int]:
    """The dots of the ascending ``dots`` with ``after < dot <= upto``."""
    return dots[bisect_right(dots, after) : bisect_right(dots, upto)]


def _restrict(
    payload: Payload,
    cover: Cover,
    sorted_rows: Mapping[ReplicaRef, Sequence[int]],
    sorted_clouds: Mapping[ReplicaRef, Sequence[int]],
) -> Payload:
    """``payload`` restricted to the dots ``cover`` names (trusted: it is our own data)."""
    values: dict[ReplicaRef, dict[int, Entry]] = {}
    clouds: dict[ReplicaRef, frozenset[int]] = {}
    for owner, (after, upto) in cover.items():
        clocks = _inside(sorted_rows.get(owner, ()), after, upto)
        if clocks:
            rows = payload.values[owner]
            values[owner] = {clock: rows[clock] for clock in clocks}
        dots = _inside(sorted_clouds.get(owner, ()), after, upto)
        if dots:
            clouds[owner] = frozenset(dots)
    if isinstance(payload, Delta):
        return _trusted(
            Delta,
            replica=payload.replica,
            values=values,
            clouds=clouds,
            start=payload.start,
            end=payload.end,
        )
    if isinstance(payload, SnapshotPart):
        spans = payload.ranges
    else:
        spans = {owner: (0, clock) for owner, clock in payload.context.items() if clock}
    ranges: dict[ReplicaRef, tuple[int, int]] = {}
    for owner, (after, upto) in cover.items():
        span = spans.get(owner)
        if span is not None:
            first, last = max(after, span[0]), min(upto, span[1])
            if first < last:
                ranges[owner] = (first, last)
    return _trusted(
        SnapshotPart,
        replica=payload.replica,
        context=payload.context,
        ranges=ranges,
        clouds=clouds,
        values=values,
    )
