"""Deterministic ``phx_ref`` generation from (replica name, incarnation, counter).

Phoenix builds a ref from the wall clock, a hash of the node and process, and a VM-unique integer
(SPEC §5.3). We need no clock and no entropy: a ref is a fixed prefix for the replica incarnation
followed by a per-incarnation counter, all in URL-safe base64. The prefix is 9 bytes of BLAKE2b
over the name and the incarnation, so two incarnations share a prefix with probability 2**-72;
within an incarnation the counter makes refs unique. The same inputs always give the same refs.
Clients must treat refs as opaque strings.
"""

from __future__ import annotations

import base64
import hashlib

from ._vclock import ReplicaRef

__all__ = ["RefGenerator"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class RefGenerator:
    """Makes the ``phx_ref`` strings of one replica incarnation.

    Args:
        replica: the replica incarnation.
    """

    __slots__ = ("_count", "_next", "prefix")

    def __init__(self, replica: ReplicaRef) -> None:
        seed = f"{len(replica.name)}:{replica.name}:{replica.vsn}".encode()
        self.prefix: str = _b64(hashlib.blake2b(seed, digest_size=9).digest())
        self._count = 0
        self._next: str | None = None  # the ref peek made, kept for advance

    @property
    def count(self) -> int:
        """How many refs were made so far."""
        return self._count

    def peek(self) -> str:
        """The ref :meth:`advance` will hand out next (made once, however often it is asked)."""
        ref = self._next
        if ref is None:
            count = self._count + 1
            size = max(3, (count.bit_length() + 7) // 8)
            ref = self._next = self.prefix + _b64(count.to_bytes(size, "big"))
        return ref

    def advance(self) -> str:
        """Hand out the next ref: the prefix and the next counter value (16 characters or more)."""
        ref = self.peek()
        self._count += 1
        self._next = None
        return ref
