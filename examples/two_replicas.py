"""Two replicas of the presence CRDT, driven by hand: no network, no clock, no threads.

Run it with ``python examples/two_replicas.py``. Each step prints what it did and what each
replica now sees in the topic ``room:lobby``. In a real deployment a Tracker does this plumbing
(heartbeats, transfers, delta broadcasts); here the "network" is a function call.
"""

from __future__ import annotations

from collections.abc import Iterable

from presence_core import Entry, MergeResult, ReplicaRef, ReplicaState

TOPIC = "room:lobby"


def describe(entry: Entry) -> str:
    where = f"{entry.owner.name}/{entry.conn}"
    return f"{entry.key:<6} {entry.topic:<13} {where:<14} {dict(entry.meta)}"


def show_entries(label: str, entries: Iterable[Entry]) -> None:
    lines = [describe(entry) for entry in entries] or ["(none)"]
    print(f"    {label:<12} {lines[0]}")
    for line in lines[1:]:
        print(f"    {'':<12} {line}")


def show_result(result: MergeResult) -> None:
    show_entries("joins", result.joins)
    show_entries("leaves", result.leaves)


def show_view(*states: ReplicaState) -> None:
    for state in states:
        show_entries(f"{state.replica.name} sees", state.get_by_topic(TOPIC))


def step(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    a = ReplicaState(ReplicaRef("node-a", 1))
    b = ReplicaState(ReplicaRef("node-b", 1))

    step("node-a and node-b learn of each other (a heartbeat would do this)")
    a.replica_up(b.replica)
    b.replica_up(a.replica)
    print(f"    {a!r}\n    {b!r}")

    step("presences join locally; nothing is replicated yet")
    a.join("conn-1", TOPIC, "alice", {"status": "online"})
    a.join("conn-2", TOPIC, "bob", {"status": "away"})
    # Connection ids only need to be unique within a replica: node-b's "conn-1" is another one.
    b.join("conn-1", TOPIC, "carol", {"status": "online"})
    b.join("conn-1", "room:kitchen", "carol", {"status": "cooking"})
    show_view(a, b)

    step("full-state transfer: each asks the other for what its clock has not seen")
    a_ref, a_context = a.clocks()
    print(f"    node-a's clock: {a_context}")
    snapshot_for_a = b.extract(a_ref, a_context)
    print("    node-a merges node-b's extract:")
    show_result(a.merge(snapshot_for_a))
    b_ref, b_context = b.clocks()
    print("    node-b merges node-a's extract:")
    show_result(b.merge(a.extract(b_ref, b_context)))
    show_view(a, b)

    step("the pending deltas carry the same joins: merging them again changes nothing")
    delta_a, delta_b = a.take_delta(), b.take_delta()
    print(f"    delta from node-a: {delta_a.size} values and dots, end clock {delta_a.end}")
    print(f"    merged into node-b: {b.merge(delta_a)!r}")
    print(f"    merged into node-a: {a.merge(delta_b)!r}")

    step("alice goes busy (update) and bob leaves, on node-a; the next delta carries both")
    old, new = a.update("conn-1", TOPIC, "alice", {"status": "busy"})
    show_entries("updated", [old, new])
    left = a.leave("conn-2", TOPIC, "bob")
    show_entries("left", [left] if left else [])
    delta_a = a.take_delta()
    print("    node-b merges node-a's delta:")
    show_result(b.merge(delta_a))
    show_view(a, b)

    step("node-b stops answering: node-a marks it down and hides its presences")
    show_entries("leaves", a.replica_down(b.replica))
    show_view(a)
    print(f"    node-a's clock now omits node-b: {a.clocks()[1]}")
    print(f"    the entries are kept, hidden: {len(a)} stored, {a.count(TOPIC)} visible")

    step("node-b comes back within the permdown period: its presences reappear")
    show_entries("joins", a.replica_up(b.replica))

    step("node-b goes down again, for good this time: node-a forgets it")
    a.replica_down(b.replica)
    removed = a.remove_down_replica(b.replica)
    print(f"    forgot {len(removed)} entries; node-a's clock: {a.clocks()[1]}")
    show_view(a)


if __name__ == "__main__":
    main()
