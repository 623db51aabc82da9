"""Presences as Phoenix.Presence shows them: grouped by key (the endpoint frames them).

``{key: {"metas": [meta, ...]}}`` is the shape of ``Presence.list`` and of the ``joins`` and
``leaves`` of a ``presence_diff`` (SPEC §5.2, §5.4). Keys come out sorted and metas inside a key
are ordered by (owning replica, connection), so every replica that holds the same presences
produces the same bytes.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping

from ._errors import InvalidArgument
from ._events import PresenceDiff
from ._meta import JSONValue
from ._payloads import Entry

__all__ = ["PresenceMap", "group", "presence_diff_payload"]

PresenceMap = dict[str, dict[str, list[Mapping[str, JSONValue]]]]
"""``{key: {"metas": [meta, ...]}}``."""

_OWNER_CONN = operator.attrgetter("owner", "conn")
"""Order of the metas of one key: by owner (name, then vsn), then connection."""

_ENTRY = frozenset({Entry})


def group(entries: Iterable[Entry]) -> PresenceMap:
    """Group entries by key into Phoenix's ``{key: {"metas": [...]}}`` shape, deterministically.

    The metas are read-only (:attr:`Entry.meta <presence_core.Entry.meta>`); the dicts and lists
    around them are new, the caller's to change.

    Raises:
        InvalidArgument: ``entries`` is not an iterable of :class:`~presence_core.Entry`.
    """
    if type(entries) is not list and type(entries) is not tuple:
        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
            raise InvalidArgument(
                f"entries must be an iterable of Entry, not {type(entries).__name__}"
            )
        entries = list(entries)
    if not _ENTRY.issuperset(map(type, entries)):  # one C-level pass over a large topic
        for i, entry in enumerate(entries):
            if not isinstance(entry, Entry):
                raise InvalidArgument(
                    f"entries must hold Entry, not {type(entry).__name__} (item {i})"
                )
    # Group first and sort the keys and each key's few metas: much cheaper than sorting every
    # entry of a large topic.
    by_key: dict[str, Entry | list[Entry]] = {}
    for entry in entries:
        found = by_key.setdefault(entry.key, entry)
        if found is not entry:
            if isinstance(found, list):
                found.append(entry)
            else:
                by_key[entry.key] = [found, entry]
    result: PresenceMap = {}
    for key in sorted(by_key):
        rows = by_key[key]
        if isinstance(rows, list):
            rows.sort(key=_OWNER_CONN)
            result[key] = {"metas": [row.meta for row in rows]}
        else:
            result[key] = {"metas": [rows.meta]}
    return result


def presence_diff_payload(diff: PresenceDiff) -> dict[str, PresenceMap]:
    """The payload of a ``presence_diff`` push: ``{"joins": {...}, "leaves": {...}}``.

    Raises:
        InvalidArgument: ``diff`` is not a :class:`~presence_core.PresenceDiff`.
    """
    if not isinstance(diff, PresenceDiff):
        raise InvalidArgument(f"diff must be a PresenceDiff, not {type(diff).__name__}")
    return {"joins": group(diff.joins), "leaves": group(diff.leaves)}
