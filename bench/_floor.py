"""The floor: the same jobs done on bare dicts and tuples, with no CRDT bookkeeping.

A record is a plain ``tuple`` ``(topic, key, conn, meta, owner)`` (no class of ours per record: no
named tuple, no attrs or dataclass instance), its meta a plain ``dict``. :class:`PlainState` is
the one object, holding the dicts; what it keeps is what the workloads' queries need, the same
indexes the CRDT keeps for them:

* per owner, a dict ``(conn, topic, key) -> record``: the identity index (a join refuses a
  duplicate, a leave finds its record, a remote leave is applied) and the owner index (a replica
  going down lists, and its removal deletes, every record of that owner);
* per topic, a dict ``(owner, conn, key) -> record``: ``get_by_topic`` reads one topic without
  scanning the others.

It keeps the two promises that are part of the public contract rather than of the CRDT: a join
refuses a duplicate identity, and the stored meta is a private copy (``dict(meta)``, the cheapest
copy of a flat meta). A delta is the tuple ``(owner, joins, leaves)``: the records joined and the
identities left since the last broadcast; a snapshot is a copy of the owners' dicts.

What it leaves out, and the CRDT pays for:

* dots, the causal context, clouds and tombstones: a remote leave is matched by identity, not by
  dot, so the floor cannot tell a stale leave from a fresh one, order concurrent changes, or detect
  a gap (the CRDT's table by dot, the context and its compaction are not there);
* a delta window: the floor's delta is whatever happened since the last one, with no start and end
  clocks, so a lost or repeated delta goes unnoticed;
* validation: types, sizes and JSON-compatibility of the arguments and the meta are not checked;
  the meta copy is shallow and not frozen;
* the index of our own presences by connection (``leave_conn``, ``get_by_conn``): no workload
  queries it, so the floor does not keep it (the CRDT does, and its join checks duplicates in it
  where the floor checks them in the identity index);
* replica status beyond a set of owners that are down (no up/down/permdown life cycle, no
  incarnations);
* events and diffs: the floor returns lists of records, as the CRDT returns its entries.

What the CRDT costs on top of this, measured in the same run, is the price of replication.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PlainDelta", "PlainRecord", "PlainState", "ident"]

Ident = tuple[str, str, str]
"""``(conn, topic, key)``."""

PlainRecord = tuple[str, str, str, dict[str, object], str]
"""``(topic, key, conn, meta, owner)``: a bare tuple."""

PlainDelta = tuple[str, list[PlainRecord], list[Ident]]
"""``(owner, records joined, identities left)``."""


def ident(record: PlainRecord) -> Ident:
    """A record's ``(conn, topic, key)``."""
    return record[2], record[0], record[1]


class PlainState:
    """A presence table as plain dicts of plain tuples (see the module docstring)."""

    __slots__ = ("_by_owner", "_by_topic", "_down", "_joins", "_leaves", "_mine", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._mine: dict[Ident, PlainRecord] = {}
        self._by_owner: dict[str, dict[Ident, PlainRecord]] = {name: self._mine}
        self._by_topic: dict[str, dict[Ident, PlainRecord]] = {}
        self._down: set[str] = set()
        self._joins: list[PlainRecord] = []
        self._leaves: list[Ident] = []

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._by_owner.values())

    def join(self, conn: str, topic: str, key: str, meta: Mapping[str, object]) -> PlainRecord:
        ident = (conn, topic, key)
        mine = self._mine
        if ident in mine:
            raise KeyError(ident)
        name = self.name
        record = (topic, key, conn, dict(meta), name)
        mine[ident] = record
        by_topic = self._by_topic.get(topic)
        if by_topic is None:
            self._by_topic[topic] = {(name, conn, key): record}
        else:
            by_topic[(name, conn, key)] = record
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
        topic = record[0]
        by_topic = self._by_topic[topic]
        del by_topic[(record[4], record[2], record[1])]
        if not by_topic:
            del self._by_topic[topic]

    def get_by_topic(self, topic: str) -> list[PlainRecord]:
        by_topic = self._by_topic.get(topic)
        if by_topic is None:
            return []
        if not self._down:
            return list(by_topic.values())
        down = self._down
        return [record for record in by_topic.values() if record[4] not in down]

    def take_delta(self) -> PlainDelta:
        delta = (self.name, self._joins, self._leaves)
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
                topic = record[0]
                by_topic = by_topics.get(topic)
                if by_topic is None:
                    by_topics[topic] = {(owner, ident[0], ident[2]): record}
                else:
                    by_topic[(owner, ident[0], ident[2])] = record
                joins.append(record)
        return joins

    def apply_delta(self, delta: PlainDelta) -> tuple[list[PlainRecord], list[PlainRecord]]:
        """Apply another replica's joins and leaves; return ``(joins, leaves)``."""
        owner, joined, left = delta
        mine = self._by_owner.setdefault(owner, {})
        by_topics = self._by_topic
        joins: list[PlainRecord] = []
        leaves: list[PlainRecord] = []
        for record in joined:
            topic, key, conn = record[0], record[1], record[2]
            ident = (conn, topic, key)
            if ident in mine:
                continue
            mine[ident] = record
            by_topic = by_topics.get(topic)
            if by_topic is None:
                by_topics[topic] = {(owner, conn, key): record}
            else:
                by_topic[(owner, conn, key)] = record
            joins.append(record)
        for ident in left:
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
