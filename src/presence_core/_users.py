"""Presence per user: an event when a key's first connection joins and when its last leaves.

Phoenix reports presences per connection: a user with three tabs open is one key with three
metas, and each tab that opens or closes is a join or a leave. What a roster shows is the key:
:class:`UserView` follows one topic's diffs and reports a key only when it appears
(:class:`UserJoined`, with how many connections it has) and when it disappears
(:class:`UserLeft`), keeping each key's connection count in between (``docs/per-user.rst``).

It is a pure fold over the diffs the application receives, so it sees what they show: with a
leave grace period (``docs/grace-period.rst``), a reconnect within the period is no event at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import attrs

from ._errors import InvalidArgument
from ._events import PresenceDiff
from ._payloads import Dot, Entry

__all__ = ["UserEvent", "UserJoined", "UserLeft", "UserView"]


def _str(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not str:
        raise InvalidArgument(f"{attribute.name} must be a str, not {type(value).__name__}")


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value < 1:
        raise InvalidArgument(f"{attribute.name} must be an int >= 1, not {value!r}")


@attrs.frozen(kw_only=True)
class UserJoined:
    """A key that had no connection in the topic now has some.

    Attributes:
        topic: the topic.
        key: the key (a user id, say).
        connections: how many connections it has now (usually 1; more when several arrive in
            one diff, a large room's batch or a transfer).
    """

    topic: str = attrs.field(validator=_str)
    key: str = attrs.field(validator=_str)
    connections: int = attrs.field(validator=_positive)


@attrs.frozen(kw_only=True)
class UserLeft:
    """A key's last connection in the topic left.

    Attributes:
        topic: the topic.
        key: the key.
    """

    topic: str = attrs.field(validator=_str)
    key: str = attrs.field(validator=_str)


UserEvent = Union[UserJoined, UserLeft]  # noqa: UP007
"""What :meth:`UserView.apply` returns."""


class UserView:
    """The keys of one topic with their connection counts, kept from the topic's diffs.

    Start it from the topic's visible entries, then :meth:`apply` every
    :class:`~presence_core.PresenceDiff` of the topic, in order::

        view = UserView("room:1", tracker.state.get_by_topic("room:1"))
        ...
        for event in view.apply(diff):
            ...  # UserJoined / UserLeft

    A connection is one entry (its dot): a join of an entry already counted, or a leave of one
    never counted, changes nothing (diffs that overlap the starting entries are harmless).

    Args:
        topic: the topic whose diffs it takes.
        entries: the topic's entries to start from.

    Raises:
        InvalidArgument: ``topic`` is not a ``str``, or ``entries`` holds something that is not
            an :class:`~presence_core.Entry` of ``topic``.
    """

    def __init__(self, topic: str, entries: Iterable[Entry] = ()) -> None:
        if type(topic) is not str:
            raise InvalidArgument(f"topic must be a str, not {type(topic).__name__}")
        self.topic = topic
        connections: dict[str, set[Dot]] = {}
        for entry in entries:
            given: object = entry
            if not isinstance(given, Entry) or given.topic != topic:
                raise InvalidArgument(f"entries must be Entry of topic {topic!r}, not {given!r}")
            connections.setdefault(given.key, set()).add(given.dot)
        self._connections = connections

    def __repr__(self) -> str:
        return f"<UserView {self.topic!r} keys={len(self._connections)}>"

    def __len__(self) -> int:
        """How many keys have at least one connection."""
        return len(self._connections)

    def connections(self, key: str) -> int:
        """How many connections ``key`` has (``0`` if it is absent)."""
        dots = self._connections.get(key)
        return 0 if dots is None else len(dots)

    @property
    def counts(self) -> Mapping[str, int]:
        """Every present key with its connection count (a new dict, keys sorted)."""
        return {key: len(self._connections[key]) for key in sorted(self._connections)}

    def apply(self, diff: PresenceDiff) -> list[UserEvent]:
        """Fold one diff in (its joins first, then its leaves, as Phoenix clients do); return
        a :class:`UserJoined` for each key it brought from no connection to some and a
        :class:`UserLeft` for each it took to none, in the order the diff names the keys.

        Raises:
            InvalidArgument: ``diff`` is not a :class:`~presence_core.PresenceDiff` of this
                view's topic (nothing changes then).
        """
        if not isinstance(diff, PresenceDiff):
            raise InvalidArgument(f"diff must be a PresenceDiff, not {type(diff).__name__}")
        if diff.topic != self.topic:
            raise InvalidArgument(
                f"a diff of topic {diff.topic!r} given to the view of {self.topic!r}"
            )
        connections = self._connections
        before: dict[str, int] = {}
        for entry in diff.joins:
            dots = connections.get(entry.key)
            if dots is None:
                dots = connections[entry.key] = set()
            before.setdefault(entry.key, len(dots))
            dots.add(entry.dot)
        for entry in diff.leaves:
            dots = connections.get(entry.key)
            if dots is None:
                continue  # a leave of a key never counted
            before.setdefault(entry.key, len(dots))
            dots.discard(entry.dot)
        events: list[UserEvent] = []
        for key, count in before.items():
            dots = connections[key]
            if not dots:
                del connections[key]
                if count:
                    events.append(UserLeft(topic=self.topic, key=key))
            elif not count:
                events.append(UserJoined(topic=self.topic, key=key, connections=len(dots)))
        return events
