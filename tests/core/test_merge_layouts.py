"""A merge files every entry the same way whatever order a payload lists them in, and whether
the replica holds entries of the payload's owner already or not.

An extract lists an owner's entries in clock order, so their topics interleave; a payload may as
well list them topic by topic, or come back to a topic after another. Into a replica that holds
nothing of an owner, the owner's rows are filled after the identity index, less the dots dropped
on the way; otherwise before it. Every way must give the same state, and each topic keeps its
entries in payload order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from helpers import by_dot, observe_state, state_cluster
from presence_core import Delta, Entry, MergeResult, ReplicaRef, ReplicaState, Snapshot

A = ReplicaRef("a", 1)
B = ReplicaRef("b", 1)

Row = tuple[str, str, str, int]
"""``(topic, conn, key, clock)`` of an entry of A."""

# Topic by topic, as an extract lists them: c1 holds two keys in t0, and (c2, t2, u2) comes twice
# (the newer dot stays, the older never joins).
FIRST: list[Row] = [
    ("t0", "c1", "u1", 1),
    ("t0", "c2", "u2", 2),
    ("t0", "c1", "u9", 3),
    ("t1", "c1", "u1", 4),
    ("t1", "c3", "u3", 5),
    ("t2", "c2", "u2", 6),
    ("t2", "c2", "u2", 7),
]
# Then, as a delta into the replica holding the first: new entries in t0 and t2, and (c1, t1, u1)
# again with a newer dot (its old row leaves).
SECOND: list[Row] = [
    ("t0", "c3", "u3", 8),
    ("t0", "c4", "u4", 10),
    ("t1", "c1", "u1", 9),
    ("t2", "c2", "u5", 11),
]


CONNS = ("c1", "c2", "c3", "c4")


def interleaved(rows: list[Row]) -> list[Row]:
    """``rows`` taking one topic after another in turn, each topic's rows in their order."""
    topics: dict[str, list[Row]] = {}
    for row in rows:
        topics.setdefault(row[0], []).append(row)
    queues = list(topics.values())
    out: list[Row] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def values(rows: Iterable[Row]) -> dict[ReplicaRef, dict[int, Entry]]:
    return {A: {c: Entry(topic, key, conn, {"n": c}, A, c) for topic, conn, key, c in rows}}


def topics_reversed(rows: list[Row]) -> list[Row]:
    """``rows`` topic by topic, the last topic first, each topic's rows in their order."""
    return sorted(rows, key=lambda row: row[0], reverse=True)


def snapshot(rows: Iterable[Row], clock: int = 7) -> Snapshot:
    return Snapshot(replica=A, context={A: clock, B: 0}, clouds={}, values=values(rows))


def delta(rows: Iterable[Row]) -> Delta:
    window = {A: frozenset(range(8, 12))}
    return Delta(replica=A, values=values(rows), clouds=window, start={A: 7}, end={A: 11})


def view(state: ReplicaState) -> dict[str, object]:
    """The state, and each topic's, connection's and identity's entries, in their order."""
    return {
        "state": observe_state(state),
        "topics": {t: [e.dot for e in state.get_by_topic(t)] for t in ("t0", "t1", "t2")},
        "conns": {c: [e.dot for e in state.get_by_conn(c, A)] for c in CONNS},
        "ids": {
            (c, t, k): None if (e := state.get(c, t, k, A)) is None else e.dot
            for c in CONNS
            for t in ("t0", "t1", "t2")
            for k in ("u1", "u2", "u3", "u4", "u5", "u9")
        },
    }


def dots(result: MergeResult) -> tuple[list[int], list[int]]:
    return [e.clock for e in by_dot(result.joins)], [e.clock for e in by_dot(result.leaves)]


def test_interleaving_really_changes_the_runs() -> None:
    # Guards the test itself: the interleaved payloads switch topic at every entry and come back
    # to a topic they left.
    assert [row[0] for row in interleaved(FIRST)] == ["t0", "t1", "t2", "t0", "t1", "t2", "t0"]
    assert [row[0] for row in interleaved(SECOND)] == ["t0", "t1", "t2", "t0"]


@pytest.mark.parametrize("layout", [list, interleaved, topics_reversed])
def test_a_payload_is_filed_alike_in_any_order(layout: Callable[[list[Row]], list[Row]]) -> None:
    grouped, other = state_cluster(A, B)[1], state_cluster(A, B)[1]

    # Into a replica that holds nothing of A yet.
    expected = dots(grouped.merge(snapshot(FIRST)))
    assert expected == ([1, 2, 3, 4, 5, 7], [])
    assert dots(other.merge(snapshot(layout(FIRST)))) == expected
    assert view(other) == view(grouped)
    seen = view(grouped)
    assert seen["topics"] == {
        "t0": [(A, 1), (A, 2), (A, 3)],
        "t1": [(A, 4), (A, 5)],
        "t2": [(A, 7)],
    }
    assert seen["conns"] == {
        "c1": [(A, 1), (A, 3), (A, 4)],
        "c2": [(A, 2), (A, 7)],
        "c3": [(A, 5)],
        "c4": [],
    }

    # Into a replica that holds some of A already: the replaced row leaves.
    expected = dots(grouped.merge(delta(SECOND)))
    assert expected == ([8, 9, 10, 11], [4])
    assert dots(other.merge(delta(layout(SECOND)))) == expected
    assert view(other) == view(grouped)
    assert view(grouped)["topics"] == {
        "t0": [(A, 1), (A, 2), (A, 3), (A, 8), (A, 10)],
        "t1": [(A, 5), (A, 9)],
        "t2": [(A, 7), (A, 11)],
    }


@pytest.mark.parametrize("held", [False, True], ids=["nothing-of-a-held", "some-of-a-held"])
@pytest.mark.parametrize("newer_first", [False, True], ids=["older-first", "newer-first"])
def test_two_dots_of_one_identity_in_a_payload_keep_the_newer(
    held: bool, newer_first: bool
) -> None:
    # The older dot is dropped whether it comes first (replaced) or last (stale), into a replica
    # that holds nothing of A yet (whose rows are filled after the loop) or some of it.
    b = state_cluster(A, B)[1]
    if held:
        assert dots(b.merge(snapshot([("t0", "c1", "u1", 1)], clock=1))) == ([1], [])
    pair: list[Row] = [("t2", "c2", "u2", 6), ("t2", "c2", "u2", 7)]
    rows = [("t0", "c1", "u1", 1), *(pair[::-1] if newer_first else pair)]
    assert dots(b.merge(snapshot(rows))) == ([7] if held else [1, 7], [])
    assert [e.dot for e in b.get_by_topic("t2")] == [(A, 7)]
    assert [e.dot for e in b.get_by_conn("c2", A)] == [(A, 7)]
    found = b.get("c2", "t2", "u2", A)
    assert found is not None
    assert found.dot == (A, 7)
    assert sorted(e.clock for e in b.entries()) == [1, 7]
    assert len(b) == 2
