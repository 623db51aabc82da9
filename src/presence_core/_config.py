"""TrackerConfig: Phoenix.Tracker's options, in seconds, validated on construction (SPEC §2.1)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

from ._errors import ConfigurationError, shown

__all__ = ["TrackerConfig"]

ESCAPE_FACTOR = 6
"""JSON writes one byte of an identity as up to six (a control character becomes ``\\u001f``)."""

ENTRY_OVERHEAD = 64
"""Bytes an entry takes on the wire besides its strings and meta: its clock, quotes, commas and
brackets, with room to spare."""


def _sizes(value: Iterable[int]) -> tuple[int, ...]:
    try:
        return tuple(value)
    except TypeError:
        raise ConfigurationError(
            f"max_delta_sizes must be a sequence of ints, not {shown(value)}"
        ) from None


def _seconds(what: str, value: object, *, zero: bool) -> float:
    """``value`` as finite seconds, above zero (or at it, when ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number of seconds, not {shown(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if zero and (not finite or value < 0):
        raise ConfigurationError(f"{what} must be >= 0 and finite, not {shown(value)}")
    if not zero and (not finite or value <= 0):
        raise ConfigurationError(f"{what} must be positive and finite, not {shown(value)}")
    return float(value)


def _positive_number(what: str, value: object) -> float:
    return _seconds(what, value, zero=False)


def non_negative_seconds(what: str, value: object) -> float:
    """``value`` as seconds >= 0, or a :class:`ConfigurationError` naming ``what``."""
    return _seconds(what, value, zero=True)


def _positive_int(what: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{what} must be an int >= 1, not {shown(value)}")
    return value


@attrs.frozen(kw_only=True)
class TrackerConfig:
    """How a :class:`~presence_core.Tracker` replicates and detects failures.

    Times are seconds on the adapter's monotonic clock. Defaults are Phoenix's.

    Raises:
        ConfigurationError: a value has the wrong type or is out of range, ``down_period`` is below
            twice ``broadcast_period``, or ``permdown_period`` is not larger than ``down_period``
            (the same two rules, with the same messages, as Phoenix), or one presence at its
            largest would not fit in half of ``max_message_bytes``.
    """

    broadcast_period: float = 1.5
    """Tick interval: delta broadcast, transfer sampling and down detection run once per tick."""

    max_silent_periods: int = 10
    """Ticks without a delta before an empty heartbeat goes out (so idle heartbeats come every
    ``(max_silent_periods + 1) * broadcast_period``: 16.5 s by default)."""

    down_period: float | None = None
    """A replica silent for longer than this is marked down (its presences leave, but are kept).
    ``None`` means ``broadcast_period * max_silent_periods * 2`` (30 s by default)."""

    permdown_period: float = 1200.0
    """A replica silent for longer than this is permanently down: its presences are deleted."""

    clock_sample_periods: int = 2
    """Ticks over which received clocks are collected before deciding whom to ask for a transfer."""

    max_delta_sizes: tuple[int, ...] = attrs.field(default=(100, 1000, 10000), converter=_sizes)
    """Size caps of the delta generations kept to answer transfer requests, smallest first."""

    max_meta_bytes: int = 16384
    """Largest meta (as compact JSON, ``phx_ref`` included) that ``track`` and ``update``
    accept."""

    max_conn_bytes: int = 1024
    """Longest connection id (UTF-8 bytes) that ``track`` accepts."""

    max_topic_bytes: int = 1024
    """Longest topic (UTF-8 bytes) that ``track`` accepts."""

    max_key_bytes: int = 1024
    """Longest presence key (UTF-8 bytes) that ``track`` accepts."""

    max_replica_name_bytes: int = 255
    """Longest replica name (UTF-8 bytes) this tracker takes, its own and in any message."""

    max_replicas: int = 1024
    """The most remote replicas this tracker keeps records of (up or down), and the most one
    message may name. A new replica beyond it takes the place of the one down for longest, or is
    refused while every known one is up. A new replica is also refused when the clocks of every
    known one would no longer fit in a quarter of ``max_message_bytes`` (every part of a
    message repeats up to two of them), so that no peer can make our messages too large to
    send."""

    max_cloud_dots: int = 1_048_576
    """The most dots held beyond a gap, over every replica: dots observed out of order until
    the gap is filled, plus those of the messages in parts being assembled (about 80 MB at
    most). A message that would take them over it is refused; a transfer repairs what it
    carried. The default lets an honest window of a few hundred thousand events (a reconnect
    storm: every presence leaving and joining again) travel in parts."""

    max_message_bytes: int = 1024 * 1024
    """Largest encoded replica message the codec accepts or produces: 1 MiB by default (the
    codec's ``DEFAULT_MAX_BYTES``, NATS's default ``max_payload``), so that a hostile message
    costs little to refuse. Larger deltas and
    transfers are sent in parts that each fit (drivers lower it to the transport's
    ``max_payload``). One presence must fit in half of it (:attr:`max_presence_bytes`); the
    other half is left for what every part repeats: the envelope and the clocks (see
    ``max_replicas``)."""

    leave_grace_period: float = 0.0
    """Seconds a key's last leave is held back from subscribers, in every topic without options
    of its own (:meth:`Tracker.configure_topic <presence_core.Tracker.configure_topic>`): a join
    of the same key within it turns the leave and the join into one update, or into nothing.
    ``0`` (the default) delivers every leave at once, as Phoenix does
    (``docs/grace-period.rst``)."""

    def __attrs_post_init__(self) -> None:
        non_negative_seconds("leave_grace_period", self.leave_grace_period)
        broadcast = _positive_number("broadcast_period", self.broadcast_period)
        _positive_int("max_silent_periods", self.max_silent_periods)
        _positive_int("clock_sample_periods", self.clock_sample_periods)
        _positive_int("max_meta_bytes", self.max_meta_bytes)
        _positive_int("max_conn_bytes", self.max_conn_bytes)
        _positive_int("max_topic_bytes", self.max_topic_bytes)
        _positive_int("max_key_bytes", self.max_key_bytes)
        _positive_int("max_replica_name_bytes", self.max_replica_name_bytes)
        _positive_int("max_replicas", self.max_replicas)
        _positive_int("max_cloud_dots", self.max_cloud_dots)
        _positive_int("max_message_bytes", self.max_message_bytes)
        if self.max_presence_bytes > self.max_message_bytes // 2:
            raise ConfigurationError(
                f"one presence may take {self.max_presence_bytes} bytes on the wire "
                "(max_meta_bytes plus six times max_conn_bytes, max_topic_bytes and "
                f"max_key_bytes, plus {ENTRY_OVERHEAD}), more than half of "
                f"max_message_bytes={self.max_message_bytes}: "
                "lower those limits or raise max_message_bytes"
            )
        if self.down_period is not None:
            _positive_number("down_period", self.down_period)
        down = self.effective_down_period
        permdown = _positive_number("permdown_period", self.permdown_period)
        if not self.max_delta_sizes or any(
            type(size) is not int or size < 1 for size in self.max_delta_sizes
        ):
            raise ConfigurationError(
                f"max_delta_sizes must be ints >= 1, not {shown(self.max_delta_sizes)}"
            )
        if down < 2 * broadcast:
            raise ConfigurationError(
                "down_period must be at least twice as large as the broadcast_period"
            )
        if permdown <= down:
            raise ConfigurationError("permdown_period must be at least larger than the down_period")

    @property
    def max_presence_bytes(self) -> int:
        """The most bytes one presence can take on the wire, by the limits on its fields."""
        identities = self.max_conn_bytes + self.max_topic_bytes + self.max_key_bytes
        return self.max_meta_bytes + ESCAPE_FACTOR * identities + ENTRY_OVERHEAD

    @property
    def effective_down_period(self) -> float:
        """``down_period``, or its default derived from the broadcast period when ``None``."""
        if self.down_period is None:
            return self.broadcast_period * self.max_silent_periods * 2
        return float(self.down_period)
