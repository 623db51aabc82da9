"""The floor: the same jobs done with the simplest plain-dict Python, no CRDT bookkeeping.

:class:`PlainState` keeps what a single-node presence table needs and nothing more: per owner, a
dict keyed by ``(conn, topic, key)``, and per topic a dict keyed by ``(owner, conn, key)``. It has
no dots, no causal context, no clouds, no tombstones and no validation beyond the duplicate check a
join needs. It does keep the two promises that are part of the public contract rather than of the
CRDT: a join refuses a duplicate identity, and the stored meta is a private copy (``dict(meta)``,
the cheapest copy of a flat meta). A "delta" is the list of joins and the list of leaves since the
last broadcast; a "snapshot" is a copy of the owners' dicts.

What the CRDT costs on top of this, measured in the same run, is the price of replication.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["PlainDelta", "PlainRecord", "PlainState"]

Ident = tuple[str, str, str]
"""``(conn, topic, key)``."""


class PlainRecord(NamedTuple):
    """One presence of the floor: what an application needs to show it.

    Built with ``tuple.__new__``, which skips the Python-level ``__new__`` that
    ``NamedTuple`` generates, as the core does for its entries.
    """

    topic: str
    key: str
    conn: str
    meta: Mapping[str, object]
    owner: str


_new = tuple.__new__


class PlainDelta(NamedTuple):
    """What changed since the last broadcast: records joined, identities left."""

    owner: str
    joins: list[PlainRecord]
    leaves: list[Ident]


class PlainState:
    """A presence table as plain dicts (see the module docstring)."""

    __slots__ = ("_by_owner", "_by_topic", "_down", "_joins", "_leaves", "_mine", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._mine: dict[Ident, PlainRecord] = {}
        self._by_owner: dict[str, dict[Ident, PlainRecord]] = {name: self._mine}
        self._by_topic: dict[str, dict[tuple[str, str, str], PlainRecord]] = {}
        self._down: set[str] = set()
        self._joins: list[PlainRecord] = []
        self._leaves: list[Ident] = []

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._by_owner.values())

    def join(self, conn: str, topic: str, key: str, meta: Mapping[str, object]) -> PlainRecord:
        ident = (conn, topic, key)
        if ident in self._mine:
            raise KeyError(ident)
        record = _new(PlainRecord, (topic, key, conn, dict(meta), self.name))
        self._mine[ident] = record
        by_topic = self._by_topic.get(topic)
        if by_topic is None:
            self._by_topic[topic] = {(self.name, conn, key): record}
        else:
            by_topic[(self.name, conn, key)] = record
        self._joins.append(record)
        return record

    def leave(self, conn: str, topic: str, key: str) -> PlainRecord | None:
        ident = (conn, topic, key)
        record = self._mine.pop(ident, None)
        if record is None:
            return None
        self._unlink_topic(record)
        self._leaves.append(ident)
        return record

    def _unlink_topic(self, record: PlainRecord) -> None:
        by_topic = self._by_topic[record.topic]
        del by_topic[(record.owner, record.conn, record.key)]
        if not by_topic:
            del self._by_topic[record.topic]

    def get_by_topic(self, topic: str) -> list[PlainRecord]:
        by_topic = self._by_topic.get(topic)
        if by_topic is None:
            return []
        if not self._down:
            return list(by_topic.values())
        down = self._down
        return [record for record in by_topic.values() if record.owner not in down]

    def take_delta(self) -> PlainDelta:
        delta = PlainDelta(self.name, self._joins, self._leaves)
        self._joins = []
        self._leaves = []
        return delta

    def add_owner(self, owner: str) -> None:
        self._by_owner.setdefault(owner, {})

    def extract(self) -> dict[str, dict[Ident, PlainRecord]]:
        """A copy of every owner's records (what a full transfer would carry)."""
        return {owner: dict(rows) for owner, rows in self._by_owner.items() if rows}

    def merge(self, snapshot: Mapping[str, Mapping[Ident, PlainRecord]]) -> list[PlainRecord]:
        """Add every record not held yet (never our own); return the joins."""
        joins: list[PlainRecord] = []
        by_topics = self._by_topic
        for owner, rows in snapshot.items():
            if owner == self.name:
                continue
            mine = self._by_owner.setdefault(owner, {})
            for ident, record in rows.items():
                if ident in mine:
                    continue
                mine[ident] = record
                by_topic = by_topics.get(record.topic)
                if by_topic is None:
                    by_topics[record.topic] = {(owner, record.conn, record.key): record}
                else:
                    by_topic[(owner, record.conn, record.key)] = record
                joins.append(record)
        return joins

    def apply_delta(self, delta: PlainDelta) -> tuple[list[PlainRecord], list[PlainRecord]]:
        """Apply another replica's joins and leaves; return ``(joins, leaves)``."""
        owner = delta.owner
        mine = self._by_owner.setdefault(owner, {})
        by_topics = self._by_topic
        joins: list[PlainRecord] = []
        leaves: list[PlainRecord] = []
        for record in delta.joins:
            ident = (record.conn, record.topic, record.key)
            if ident in mine:
                continue
            mine[ident] = record
            by_topic = by_topics.get(record.topic)
            if by_topic is None:
                by_topics[record.topic] = {(owner, record.conn, record.key): record}
            else:
                by_topic[(owner, record.conn, record.key)] = record
            joins.append(record)
        for ident in delta.leaves:
            gone = mine.pop(ident, None)
            if gone is not None:
                self._unlink_topic(gone)
                leaves.append(gone)
        return joins, leaves

    def replica_down(self, owner: str) -> list[PlainRecord]:
        """Hide ``owner``'s records; return them as leaves."""
        self._down.add(owner)
        return list(self._by_owner.get(owner, {}).values())

    def remove_down_replica(self, owner: str) -> list[PlainRecord]:
        """Delete ``owner``'s records for good."""
        rows = self._by_owner.pop(owner, {})
        for record in rows.values():
            self._unlink_topic(record)
        self._down.discard(owner)
        return list(rows.values())
