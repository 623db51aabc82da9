"""The virtual network: what happens to a message between two nodes.

:class:`NetworkModel` decides the fate of one message on a connected link (lost, delivered after
a delay, duplicated); :class:`FaultyNetwork` is the stock model. :class:`Links` is the engine's
view of the wire: which links a partition cuts, the current model (swapped for its calm version
in the settle phase) and the seeded random stream the model draws from. What travels is the
encoded bytes; the engine keeps the decoded message alongside only to show the model and to
write trace lines.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import attrs

from presence_core import Message, encode_message

__all__ = ["FaultyNetwork", "NetworkModel", "message_size"]


def finite(what: str, value: object) -> float:
    """``value`` as a float when it is a finite real number (not a bool).

    Raises:
        ValueError: it is not (NaN, an infinity, an int beyond the float range, a str...).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, not {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


def message_size(message: Message) -> int:
    """The size of ``message`` on the wire, in bytes (the JSON codec's encoding).

    For network models, which are shown the message rather than its bytes; the simulation itself
    measures the bytes each pump encoded.
    """
    return len(encode_message(message))


class NetworkModel:
    """What happens to one message on a connected link. Subclass it to plug your own network.

    The simulation applies partitions itself (a blocked link drops everything), then asks the
    model about every other message. Draw all randomness from the ``rng`` argument, never from the
    global ``random`` module or the clock, or runs stop being reproducible.

    Attributes:
        max_latency: the longest delay :meth:`plan` can return, in virtual seconds; the invariant
            bounds are derived from it, so it must be honest.
    """

    max_latency: float = 0.05

    def plan(
        self, src: str, dst: str, message: Message, now: float, rng: random.Random
    ) -> list[float]:
        """Delivery delays (virtual seconds, ``0 <= d <= max_latency``) for one message.

        Return ``[]`` to lose it, one delay to deliver it, several to duplicate it. Reordering is
        just a later delay than the next message's.
        """
        raise NotImplementedError

    def calm(self) -> NetworkModel:
        """The model for the settle phase: the same latencies, nothing lost.

        The default is a :class:`FaultyNetwork` with no loss and no duplication whose latencies
        span ``[0, max_latency]``; override it when the model keeps other state.
        """
        return FaultyNetwork(latency_min=0.0, latency_max=self.max_latency)


@attrs.frozen(kw_only=True)
class FaultyNetwork(NetworkModel):
    """The stock network: uniform latency, independent loss, duplication and reordering.

    Attributes:
        latency_min: the smallest delay (virtual seconds).
        latency_max: the largest ordinary delay.
        loss: probability that a message is lost.
        duplicate: probability that a delivered message is delivered twice.
        reorder: probability that a message is held back by up to ``reorder_delay`` (so later
            messages overtake it).
        reorder_delay: the largest extra delay of a reordered message.

    Raises:
        ValueError: a field is not a finite number, the latencies are not
            ``0 <= latency_min <= latency_max``, a probability is outside ``[0, 1]``, or
            ``reorder_delay`` is negative.
    """

    latency_min: float = 0.001
    latency_max: float = 0.05
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.2

    def __attrs_post_init__(self) -> None:
        for name in ("latency_min", "latency_max", "loss", "duplicate", "reorder", "reorder_delay"):
            finite(name, getattr(self, name))
        if not 0 <= self.latency_min <= self.latency_max:
            raise ValueError("need 0 <= latency_min <= latency_max")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability, not {value!r}")
        if self.reorder_delay < 0:
            raise ValueError("reorder_delay must be >= 0")

    @property
    def max_latency(self) -> float:  # type: ignore[override]
        """``latency_max``, plus ``reorder_delay`` when messages can be reordered."""
        return self.latency_max + (self.reorder_delay if self.reorder > 0 else 0.0)

    def _delay(self, rng: random.Random) -> float:
        delay = rng.uniform(self.latency_min, self.latency_max)
        if self.reorder and rng.random() < self.reorder:
            delay += rng.uniform(0.0, self.reorder_delay)
        return delay

    def plan(
        self, src: str, dst: str, message: Message, now: float, rng: random.Random
    ) -> list[float]:
        if self.loss and rng.random() < self.loss:
            return []
        delays = [self._delay(rng)]
        if self.duplicate and rng.random() < self.duplicate:
            delays.append(self._delay(rng))
        return delays

    def calm(self) -> NetworkModel:
        return FaultyNetwork(latency_min=self.latency_min, latency_max=self.latency_max)


class Links:
    """The wire between the simulated nodes: cut links, the network model and its random stream.

    Args:
        model: the scenario's network model.
        rng: the stream every :meth:`NetworkModel.plan` call draws from.
    """

    def __init__(self, model: NetworkModel, rng: random.Random) -> None:
        self.model = model
        self._rng = rng
        self._cut: set[tuple[str, str]] = set()

    def cut(self, nodes: Iterable[str], others: Iterable[str], *, one_way: bool) -> None:
        """Cut every link ``nodes -> others`` (and back, unless ``one_way``)."""
        others = tuple(others)
        for a in nodes:
            for b in others:
                if a != b:
                    self._cut.add((a, b))
                    if not one_way:
                        self._cut.add((b, a))

    def heal(self) -> list[str]:
        """Restore every link; return the nodes that had one cut (sorted), if any."""
        involved = sorted({name for link in self._cut for name in link})
        self._cut = set()
        return involved

    def is_cut(self, src: str, dst: str) -> bool:
        """Whether a partition blocks ``src -> dst``."""
        return (src, dst) in self._cut

    def calm(self) -> None:
        """Switch to the model's settle-phase version (:meth:`NetworkModel.calm`)."""
        self.model = self.model.calm()

    def plan(self, src: str, dst: str, message: Message, now: float) -> list[float]:
        """The delivery delays of one message on a connected link, checked against the model.

        Raises:
            ValueError: the model returned a delay outside ``[0, max_latency]``.
        """
        delays = self.model.plan(src, dst, message, now, self._rng)
        for delay in delays:
            if not 0 <= delay <= self.model.max_latency + 1e-9:
                raise ValueError(f"network model returned delay {delay!r} outside [0, max_latency]")
        return delays
