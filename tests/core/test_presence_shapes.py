"""Phoenix.Presence's shapes (SPEC §5.2): presences grouped by key, diff payloads.

The frames that carry them to clients are tested with the endpoint (tests/phoenix).
"""

from __future__ import annotations

from presence_core import Entry, JSONValue, PresenceDiff, ReplicaRef, group, presence_diff_payload

TOPIC = "room:lobby"
N1 = ReplicaRef("n1", 1)
N2 = ReplicaRef("n2", 1)


def entry(
    key: str,
    meta: dict[str, JSONValue],
    *,
    conn: str = "c1",
    owner: ReplicaRef = N1,
    clock: int = 1,
) -> Entry:
    return Entry(TOPIC, key, conn, meta, owner, clock)


ALICE = entry("alice", {"online_at": "1712345678", "phx_ref": "GOw10tf291z-WgCy"}, clock=1)
BOB = entry("bob", {"online_at": "1712345690", "phx_ref": "GOw10xQOqFn-WgCx"}, conn="c2", clock=2)


# ---------------------------------------------------------------------------- shapes in general


def test_payload_always_has_joins_and_leaves() -> None:
    assert presence_diff_payload(PresenceDiff(topic=TOPIC)) == {"joins": {}, "leaves": {}}
    assert presence_diff_payload(PresenceDiff(topic=TOPIC, joins=[ALICE], leaves=[BOB])) == {
        "joins": {"alice": {"metas": [ALICE.meta]}},
        "leaves": {"bob": {"metas": [BOB.meta]}},
    }


def test_group_sorts_keys_and_orders_metas_by_owner_then_conn() -> None:
    entries = [
        entry("zed", {"i": 0}, conn="a", owner=N2, clock=1),
        entry("amy", {"i": 1}, conn="c2", owner=N2, clock=2),
        entry("amy", {"i": 2}, conn="c9", owner=N1, clock=3),
        entry("amy", {"i": 3}, conn="c10", owner=N1, clock=4),
        entry("bob", {"i": 4}, conn="c1", owner=N1, clock=5),
        entry("amy", {"i": 5}, conn="c1", owner=ReplicaRef("n1", 0), clock=6),
    ]
    grouped = group(entries)
    assert list(grouped) == ["amy", "bob", "zed"]
    assert [m["i"] for m in grouped["amy"]["metas"]] == [5, 3, 2, 1]
    assert grouped == group(reversed(entries))
