"""Per-user and occupancy subscriptions (:meth:`Presence.users`, :meth:`Presence.watch_occupancy`)
with leave grace periods and large rooms, on one node and on several.

The synchronous tests run :class:`~presence_adapters.Presence` objects on a scripted runtime (the
clock is a number the test sets, see ``test_presence.py``); a scripted cluster moves each node's
transmissions to the others by hand, so that Hypothesis can replay any interleaving of commands,
ticks and deliveries exactly. The async tests run real nodes (the anyio driver, on asyncio and on
trio) on a :class:`~presence_adapters.MemoryHub`, under a :class:`LeakWatch` (nothing may be left
running), and wait for conditions with deadlines.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_presence import BLOCKED, ScriptedRuntime, StubControl, read_all, read_now
from waiting import DEADLINE, wait_until
from waiting import anyio_backend as anyio_backend  # the fixture, for the anyio marker

import presence_adapters.testing.driver as driver_suite
from presence_adapters import (
    MemoryHub,
    OccupancySubscription,
    Presence,
    PresenceView,
    Subscription,
    SubscriptionOverflow,
    UserSubscription,
)
from presence_adapters.drivers import anyio as anyio_driver
from presence_adapters.testing._support import LeakWatch
from presence_core import (
    LocalProtocolError,
    Occupancy,
    PresenceError,
    ReplicaRef,
    ReplicaStatus,
    TopicOptions,
    Tracker,
    TrackerConfig,
    UserEvent,
    UserJoined,
    UserLeft,
)

T = TypeVar("T")

TOPIC = "room"

CONFIG = TrackerConfig(broadcast_period=0.1, down_period=30.0, permdown_period=60.0)
"""A tick every 0.1 s; failure detection far beyond any scripted run (no replica goes down)."""

GRACE = 0.5

FAST = TrackerConfig(broadcast_period=0.02, down_period=5.0, permdown_period=10.0)
"""For the real nodes: replication within tens of milliseconds."""


# ---------------------------------------------------------------------- scaffolding


def scripted_node(
    runtime: ScriptedRuntime, name: str = "a", config: TrackerConfig = CONFIG
) -> Presence:
    tracker = Tracker(config=config, replica=ReplicaRef(name, 1), rng=random.Random(name))
    control = StubControl()
    presence = Presence(tracker, runtime, control)
    control.presence = presence
    return presence


class Cluster:
    """Scripted nodes on one scripted clock; messages move only when :meth:`exchange` runs."""

    def __init__(self, count: int, options: list[TopicOptions] | None = None) -> None:
        self.runtime = ScriptedRuntime()
        self.nodes = [scripted_node(self.runtime, name) for name in "abc"[:count]]
        for node, topic_options in zip(self.nodes, options or [], strict=False):
            node.configure_topic(TOPIC, topic_options)
        self.settle(0.5)  # every node has seen every other one up

    def advance(self, seconds: float) -> None:
        """Move the clock, and wake every node (ticks, held leaves due)."""
        self.runtime.now += seconds
        for node in self.nodes:
            node.pump.wake(now=node.pump.now(self.runtime.now))

    def exchange(self) -> None:
        """Deliver every transmission (and what the deliveries make the nodes send)."""
        moving = True
        while moving:
            moving = False
            for node in self.nodes:
                for sent in node.pump.take_transmissions():
                    moving = True
                    for other in self.nodes:
                        if other is not node and sent.to in (None, other.name):
                            other.pump.receive(sent.data, now=other.pump.now(self.runtime.now))

    def settle(self, seconds: float) -> None:
        """Tick and exchange for ``seconds``: every batch flushed, every message delivered."""
        for _ in range(round(seconds / 0.05)):
            self.advance(0.05)
            self.exchange()


def read_to_end(subscription: Subscription[T]) -> list[T]:
    """Everything left in an ended subscription (it must end after that)."""
    items: list[T] = []
    while True:
        try:
            item = read_now(subscription)
        except StopAsyncIteration:
            return items
        assert item is not BLOCKED, "the subscription has not ended"
        items.append(item)  # type: ignore[arg-type]


def live_counts(presence: Presence) -> dict[str, int]:
    return {key: len(value["metas"]) for key, value in presence.list(TOPIC).items()}


def mirror_counts(view: PresenceView) -> dict[str, int]:
    return {key: len(metas) for key, metas in view.presences.items()}


class Ledger:
    """The keys a reader of a users subscription believes present, from the events it read:
    every key's events must alternate, a join first unless it was there at the start."""

    def __init__(self, subscription: UserSubscription) -> None:
        self.subscription = subscription
        self.present = set(subscription.counts)
        self.events: list[UserEvent] = []

    def read(self) -> None:
        for event in read_all(self.subscription):
            self.events.append(event)
            if isinstance(event, UserJoined):
                assert event.key not in self.present, f"a second UserJoined: {event}"
                assert event.connections >= 1
                self.present.add(event.key)
            else:
                assert isinstance(event, UserLeft)
                assert event.key in self.present, f"a UserLeft of an absent key: {event}"
                self.present.discard(event.key)
        assert self.present == set(self.subscription.counts)


class Counts:
    """What a reader of an occupancy subscription read: never two equal values in a row."""

    def __init__(self, subscription: OccupancySubscription) -> None:
        self.subscription = subscription
        self.values: list[Occupancy] = []

    def read(self, limit: int = 1_000) -> None:
        for _ in range(limit):
            assert self.subscription.buffered <= 1
            value = read_now(self.subscription)
            if value is BLOCKED:
                return
            assert isinstance(value, Occupancy)
            if self.values:
                assert value != self.values[-1], "the same counts twice in a row"
            self.values.append(value)

    @property
    def last(self) -> Occupancy:
        return self.values[-1]


# ---------------------------------------------------------------------- users: one node


def test_users_report_a_keys_first_join_and_last_leave() -> None:
    presence = scripted_node(ScriptedRuntime())
    presence.track("c0", TOPIC, "alice", {})
    users = presence.users(TOPIC)
    assert users.counts == {"alice": 1}
    presence.track("c1", TOPIC, "alice", {})  # a second tab: no event
    presence.track("c1", TOPIC, "bob", {})
    presence.update("c0", TOPIC, "alice", {"away": True})  # an update: no event
    assert read_all(users) == [UserJoined(topic=TOPIC, key="bob", connections=1)]
    assert users.counts == {"alice": 2, "bob": 1}
    assert (users.connections("alice"), users.connections("nobody"), users.users) == (2, 0, 2)
    presence.untrack("c0", TOPIC, "alice")  # one tab of two: no event
    assert read_all(users) == []
    presence.untrack_conn("c1")  # alice's last tab and bob's only one, in one diff
    assert read_all(users) == [
        UserLeft(topic=TOPIC, key="alice"),
        UserLeft(topic=TOPIC, key="bob"),
    ]
    assert users.counts == {}
    presence.track("c2", "lobby", "carol", {})  # another topic: nothing here
    assert read_now(users) is BLOCKED


def test_a_join_of_several_connections_at_once_carries_their_count() -> None:
    """A large room's batch brings a key with all its connections: one event, their count."""
    cluster = Cluster(1, [TopicOptions(large_room=True)])
    (presence,) = cluster.nodes
    users = presence.users(TOPIC)
    for conn in ("c0", "c1", "c2"):
        presence.track(conn, TOPIC, "alice", {})
    assert read_now(users) is BLOCKED  # batched until the tick
    cluster.settle(0.2)
    assert read_all(users) == [UserJoined(topic=TOPIC, key="alice", connections=3)]


def test_a_reconnect_within_the_grace_period_is_no_user_event() -> None:
    cluster = Cluster(1, [TopicOptions(leave_grace_period=GRACE)])
    (presence,) = cluster.nodes
    presence.track("tab-1", TOPIC, "alice", {})
    users = presence.users(TOPIC)
    presence.untrack_conn("tab-1")  # alice's last connection: held for the grace period
    cluster.advance(GRACE / 2)
    presence.track("tab-2", TOPIC, "alice", {})  # she is back in time
    cluster.settle(2 * GRACE)
    assert read_all(users) == []
    assert users.counts == {"alice": 1}
    presence.untrack_conn("tab-2")  # a real leave: delivered once, when the period ends
    cluster.advance(GRACE / 2)
    assert read_all(users) == []
    assert users.counts == {"alice": 1}  # subscribers still see her
    cluster.settle(GRACE)
    assert read_all(users) == [UserLeft(topic=TOPIC, key="alice")]
    cluster.settle(2 * GRACE)
    assert read_all(users) == []


def test_a_large_room_gives_the_net_user_events_once_per_tick() -> None:
    cluster = Cluster(1, [TopicOptions(large_room=True)])
    (presence,) = cluster.nodes
    users = presence.users(TOPIC)
    for index in range(5):
        presence.track(f"c{index}", TOPIC, f"k{index}", {})
    presence.track("flash", TOPIC, "flash", {})
    presence.untrack_conn("flash")  # joined and left within the tick: nothing at all
    assert read_now(users) is BLOCKED
    cluster.settle(0.2)
    events = read_all(users)
    assert sorted(events, key=repr) == [
        UserJoined(topic=TOPIC, key=f"k{index}", connections=1) for index in range(5)
    ]
    assert users.counts == {f"k{index}": 1 for index in range(5)}


# ---------------------------------------------------------------------- users: bounds and ends


def test_a_users_subscription_overflows_past_max_buffered_events() -> None:
    presence = scripted_node(ScriptedRuntime())
    users = presence.users(TOPIC, max_buffered=2)
    presence.track("c0", TOPIC, "k0", {})
    presence.track("c1", TOPIC, "k1", {})
    assert users.buffered == 2
    presence.track("c1", TOPIC, "k0", {})  # k0's second connection: no event, no weight
    assert users.buffered == 2
    presence.track("c2", TOPIC, "k2", {})  # a third event does not fit
    assert users.closed
    assert users.buffered == 0
    with pytest.raises(SubscriptionOverflow) as raised:
        read_now(users)
    assert (raised.value.topic, raised.value.limit) == (TOPIC, 2)
    with pytest.raises(StopAsyncIteration):
        read_now(users)
    frozen = users.counts
    presence.track("c3", TOPIC, "k3", {})
    assert users.counts == frozen  # an ended subscription's view stops following


def test_the_events_of_one_diff_enter_an_empty_buffer_together() -> None:
    presence = scripted_node(ScriptedRuntime())
    for index in range(4):
        presence.track("bulk", TOPIC, f"k{index}", {})
    users = presence.users(TOPIC, max_buffered=2)
    presence.untrack_conn("bulk")  # one diff, four UserLeft: they go in together
    assert users.buffered == 4
    assert not users.closed
    assert [event.key for event in read_all(users)] == ["k0", "k1", "k2", "k3"]
    presence.track("one", TOPIC, "k0", {})
    for index in range(4):
        presence.track("bulk", TOPIC, f"k{index + 1}", {})
    with pytest.raises(SubscriptionOverflow):  # 1 held + 1 + 1 + 1 > 2
        read_now(users)


def test_close_and_node_stop_end_users_and_occupancy() -> None:
    presence = scripted_node(ScriptedRuntime())
    users, occupancy = presence.users(TOPIC), presence.watch_occupancy(TOPIC)
    presence.track("c", TOPIC, "alice", {})
    users.close()
    occupancy.close()
    users.close()  # idempotent
    presence.track("c", TOPIC, "bob", {})  # after close: nothing more is kept
    assert read_to_end(users) == [UserJoined(topic=TOPIC, key="alice", connections=1)]
    assert read_to_end(occupancy) == [Occupancy(topic=TOPIC, keys=1, presences=1)]

    users, occupancy = presence.users(TOPIC), presence.watch_occupancy(TOPIC)
    presence.track("c", TOPIC, "carol", {})
    presence._close()  # the node stops: what is buffered is still read, then the end
    assert read_to_end(users) == [UserJoined(topic=TOPIC, key="carol", connections=1)]
    assert read_to_end(occupancy) == [Occupancy(topic=TOPIC, keys=3, presences=3)]
    late: list[Subscription[Any]] = [presence.users(TOPIC), presence.watch_occupancy(TOPIC)]
    late += [users, occupancy]
    for subscription in late:
        assert subscription.closed
        with pytest.raises(StopAsyncIteration):
            read_now(subscription)
    assert "closed" in repr(presence)


# ---------------------------------------------------------------------- occupancy: one node


def test_occupancy_starts_with_the_counts_and_keeps_only_the_latest() -> None:
    presence = scripted_node(ScriptedRuntime())
    presence.track("c0", TOPIC, "alice", {})
    occupancy = presence.watch_occupancy(TOPIC)
    assert occupancy.max_buffered == 1
    assert read_all(occupancy) == [Occupancy(topic=TOPIC, keys=1, presences=1)]
    for index in range(50):  # an unread value is replaced: never more than one, no overflow
        presence.track(f"c{index + 1}", TOPIC, "alice" if index % 2 else f"k{index}", {})
        assert occupancy.buffered == 1
    assert read_all(occupancy) == [presence.occupancy(TOPIC)]
    assert presence.occupancy(TOPIC) == Occupancy(topic=TOPIC, keys=26, presences=51)
    presence.update("c0", TOPIC, "alice", {"v": 2})  # a diff, but the same counts: nothing
    assert read_now(occupancy) is BLOCKED
    presence.track("extra", TOPIC, "zed", {})
    presence.untrack_conn("extra")  # a change and back before the read: nothing to tell
    assert occupancy.buffered == 0
    assert read_now(occupancy) is BLOCKED
    assert "buffered=0/1" in repr(occupancy)


def test_occupancy_counts_held_keys_until_their_grace_ends() -> None:
    cluster = Cluster(1, [TopicOptions(leave_grace_period=GRACE)])
    (presence,) = cluster.nodes
    presence.track("c0", TOPIC, "alice", {})
    presence.track("c1", TOPIC, "bob", {})
    counts = Counts(presence.watch_occupancy(TOPIC))
    counts.read()
    assert counts.values == [Occupancy(topic=TOPIC, keys=2, presences=2)]
    presence.untrack_conn("c0")  # held: alice still counts
    cluster.advance(GRACE / 2)
    counts.read()
    assert len(counts.values) == 1
    cluster.settle(GRACE)
    counts.read()
    assert counts.values[1:] == [Occupancy(topic=TOPIC, keys=1, presences=1)]


def test_a_large_rooms_occupancy_changes_once_per_tick() -> None:
    cluster = Cluster(1, [TopicOptions(large_room=True)])
    (presence,) = cluster.nodes
    counts = Counts(presence.watch_occupancy(TOPIC))
    counts.read()
    for index in range(20):
        presence.track(f"c{index}", TOPIC, f"k{index % 7}", {})
    counts.read()
    assert counts.values == [Occupancy(topic=TOPIC, keys=0, presences=0)]  # not before the tick
    cluster.settle(0.2)
    counts.read()
    assert counts.values[1:] == [Occupancy(topic=TOPIC, keys=7, presences=20)]


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.users(1),
        lambda p: p.users(None),
        lambda p: p.users(TOPIC, max_buffered=0),
        lambda p: p.users(TOPIC, max_buffered=1.5),
        lambda p: p.users(TOPIC, max_buffered=True),
        lambda p: p.watch_occupancy(b"room"),
        lambda p: p.watch_occupancy(["room"]),
        lambda p: p.users(TOPIC).connections(5),
    ],
)
def test_wrong_arguments_are_local_protocol_errors_and_change_nothing(
    call: Callable[[Presence], object],
) -> None:
    presence = scripted_node(ScriptedRuntime())
    presence.track("c0", TOPIC, "alice", {})
    watcher = presence.subscribe(TOPIC)
    before = (presence.list(TOPIC), presence.occupancy(TOPIC), presence.pump.pending)
    with pytest.raises(LocalProtocolError):
        call(presence)
    presence.track("c1", TOPIC, "bob", {})
    assert len(read_all(watcher)) == 1  # the node goes on
    presence.untrack("c1", TOPIC, "bob")
    read_all(watcher)
    assert (presence.list(TOPIC), presence.occupancy(TOPIC), presence.pump.pending) == before


# ---------------------------------------------------------------------- properties, several nodes


OPTIONS = st.builds(
    TopicOptions,
    leave_grace_period=st.sampled_from([None, 0.0, 0.15, GRACE]),
    large_room=st.booleans(),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[TopicOptions], list[tuple[str, int, int, int]], int]:
    """Each node's topic options, the steps (a command on a node, time passing, messages
    moving), and after how many steps the subscriptions start."""
    nodes = draw(st.integers(1, 3))
    options = draw(st.lists(OPTIONS, min_size=nodes, max_size=nodes))
    kinds = st.sampled_from(
        ["track", "track", "track", "update", "untrack", "untrack_conn", "advance", "exchange"]
    )
    steps = draw(
        st.lists(
            st.tuples(kinds, st.integers(0, nodes - 1), st.integers(0, 3), st.integers(0, 3)),
            max_size=50,
        )
    )
    start = draw(st.integers(0, len(steps)))
    return options, steps, start


def run_step(cluster: Cluster, step: tuple[str, int, int, int]) -> None:
    kind, index, conn, key = step
    node = cluster.nodes[index]
    try:
        if kind == "track":
            node.track(f"c{conn}", TOPIC, f"k{key}", {"n": key})
        elif kind == "update":
            node.update(f"c{conn}", TOPIC, f"k{key}", {"n": -key})
        elif kind == "untrack":
            node.untrack(f"c{conn}", TOPIC, f"k{key}")
        elif kind == "untrack_conn":
            node.untrack_conn(f"c{conn}")
        elif kind == "advance":
            cluster.advance((1 + key) * 0.04)
        else:
            cluster.exchange()
    except PresenceError:
        pass  # an invalid command changes nothing


@given(scenario=scenarios())
def test_users_and_occupancy_follow_every_node(
    scenario: tuple[list[TopicOptions], list[tuple[str, int, int, int]], int],
) -> None:
    """On every node, whatever its options, and whenever the subscriptions start (a change in
    a large room's batch, a leave held, messages in flight): after every step, a view's mirror
    and a users subscription's counts equal the node's list (what the list and the diffs since
    make), a users subscription's events alternate per key, and an occupancy subscription holds
    at most one value, never repeats itself, and its last value is the counts of the list. Once
    everything is delivered and every grace period over, every node lists the same."""
    options, steps, start = scenario
    cluster = Cluster(len(options), options)
    for step in steps[:start]:
        run_step(cluster, step)
    ledgers = [Ledger(node.users(TOPIC, max_buffered=10**6)) for node in cluster.nodes]
    views = [node.view(TOPIC, max_buffered=10**6) for node in cluster.nodes]
    counts = [Counts(node.watch_occupancy(TOPIC)) for node in cluster.nodes]

    def check() -> None:
        for node, ledger, view, count in zip(cluster.nodes, ledgers, views, counts, strict=True):
            ledger.read()
            read_all(view)
            count.read()
            listed = live_counts(node)
            assert mirror_counts(view) == listed
            assert ledger.subscription.counts == listed
            occupancy = Occupancy(topic=TOPIC, keys=len(listed), presences=sum(listed.values()))
            assert node.occupancy(TOPIC) == occupancy
            assert count.last == occupancy

    check()
    for step in steps[start:]:
        run_step(cluster, step)
        check()
    cluster.settle(GRACE + 0.5)  # deliver everything, end every grace period, flush every batch
    check()
    assert all(node.tracker_stats().leaves_held == 0 for node in cluster.nodes)
    assert all(live_counts(node) == live_counts(cluster.nodes[0]) for node in cluster.nodes)


def test_a_subscriber_starting_within_a_tick_gets_no_ghost() -> None:
    """A large room's batch cancels a join and a leave within one tick: a subscriber that
    started in between, from the list, must not keep the join (the list had not shown it)."""
    cluster = Cluster(1, [TopicOptions(large_room=True)])
    (presence,) = cluster.nodes
    presence.track("c0", TOPIC, "stays", {})
    cluster.settle(0.2)
    presence.track("c1", TOPIC, "ghost", {})  # batched: not shown yet
    assert list(presence.list(TOPIC)) == ["stays"]
    assert presence.occupancy(TOPIC) == Occupancy(topic=TOPIC, keys=1, presences=1)
    assert presence.count(TOPIC) == 1
    assert presence.get_by_key(TOPIC, "ghost") == {"metas": []}
    assert list(presence.page(TOPIC).presences) == ["stays"]
    users, view = presence.users(TOPIC), presence.view(TOPIC)  # start from the list
    assert users.counts == mirror_counts(view) == {"stays": 1}
    presence.untrack_conn("c1")  # joined and left within the tick: the batch drops both
    cluster.settle(0.3)
    assert read_all(users) == []
    assert read_all(view) == []
    assert list(presence.list(TOPIC)) == ["stays"]
    assert mirror_counts(view) == {"stays": 1}
    assert users.counts == {"stays": 1}


def test_a_subscriber_starting_while_a_replica_is_down_sees_it_come_back() -> None:
    """A replica down then up within the grace period yields no diff at all (its presences come
    back with the same dots): a subscriber that started in between, from the list, must have
    them, so the list keeps a key in its grace period."""
    config = TrackerConfig(
        broadcast_period=0.1, max_silent_periods=1, down_period=0.5, permdown_period=60.0
    )
    cluster = Cluster.__new__(Cluster)
    cluster.runtime = ScriptedRuntime()
    cluster.nodes = [scripted_node(cluster.runtime, name, config) for name in "ab"]
    a, b = cluster.nodes
    a.configure_topic(TOPIC, TopicOptions(leave_grace_period=5.0))
    cluster.settle(0.5)
    b.track("c", TOPIC, "bob", {})
    cluster.settle(0.3)
    for _ in range(10):  # a partition: b's messages do not reach a, which sets b down
        cluster.advance(0.1)
    assert a.replicas()["b"].status is ReplicaStatus.DOWN
    assert a.tracker_stats().leaves_held == 1  # bob's leave is held for the grace period
    assert list(a.list(TOPIC)) == ["bob"]  # so he is still listed and counted
    assert a.occupancy(TOPIC) == Occupancy(topic=TOPIC, keys=1, presences=1)
    users, view = a.users(TOPIC), a.view(TOPIC)
    assert users.counts == mirror_counts(view) == {"bob": 1}
    cluster.settle(2.0)  # the partition heals within the grace period
    assert a.replicas()["b"].status is ReplicaStatus.UP
    assert a.tracker_stats().leaves_held == 0
    assert read_all(users) == []  # no diff at all: nothing to tell
    assert read_all(view) == []
    assert list(a.list(TOPIC)) == ["bob"]
    assert mirror_counts(view) == {"bob": 1}
    assert users.counts == {"bob": 1}


def test_a_handover_between_nodes_within_the_grace_period_is_no_user_event() -> None:
    """alice moves from node a to node b (her tab reconnects elsewhere): every node's
    subscribers see no event and unchanged counts; when she really leaves, one UserLeft."""
    options = TopicOptions(leave_grace_period=GRACE, large_room=True)
    cluster = Cluster(3, [options] * 3)
    a, b, _ = cluster.nodes
    a.track("tab", TOPIC, "alice", {})
    a.track("tab", TOPIC, "bob", {})
    cluster.settle(0.2)
    ledgers = [Ledger(node.users(TOPIC)) for node in cluster.nodes]
    counts = [Counts(node.watch_occupancy(TOPIC)) for node in cluster.nodes]
    for ledger, count in zip(ledgers, counts, strict=True):
        ledger.read()
        count.read()
        assert ledger.present == {"alice", "bob"}
    a.untrack("tab", TOPIC, "alice")
    cluster.settle(0.1)  # a's leave reaches b and c: held there too
    b.track("tab", TOPIC, "alice", {"moved": True})
    cluster.settle(GRACE + 0.2)
    for ledger, count in zip(ledgers, counts, strict=True):
        ledger.read()
        count.read()
        assert ledger.events == []
        assert ledger.subscription.counts == {"alice": 1, "bob": 1}
        assert [(value.keys, value.presences) for value in count.values] == [(2, 2)]
    b.untrack_conn("tab")
    cluster.settle(GRACE + 0.2)
    for node, ledger, count in zip(cluster.nodes, ledgers, counts, strict=True):
        ledger.read()
        count.read()
        assert ledger.events == [UserLeft(topic=TOPIC, key="alice")]
        assert [(value.keys, value.presences) for value in count.values] == [(2, 2), (1, 1)]
        assert live_counts(node) == {"bob": 1}


# ---------------------------------------------------------------------- real nodes


async def collect(subscription: Subscription[T], into: list[T]) -> None:
    """Read ``subscription`` into ``into`` until it ends."""
    async for item in subscription:
        into.append(item)


def by_key(events: list[UserEvent]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event in events:
        out.setdefault(event.key, []).append(type(event).__name__)
    return out


@pytest.mark.anyio
async def test_users_and_occupancy_on_three_real_nodes() -> None:
    """Three nodes (the anyio driver) on a memory hub, every one with a grace period and
    batching: node a's subscribers see alice arrive once, move from b to c without leaving,
    and bob leave once, after his grace period."""
    options = TopicOptions(leave_grace_period=1.0, large_room=True)
    events: list[UserEvent] = []
    values: list[Occupancy] = []
    with LeakWatch() as watch:
        hub = MemoryHub()
        async with driver_suite._cluster(anyio_driver.open_node, hub, "abc", FAST) as nodes:
            a, b, c = nodes
            for node in nodes:
                node.configure_topic(TOPIC, options)
            users, occupancy = a.users(TOPIC), a.watch_occupancy(TOPIC)
            async with anyio.create_task_group() as readers:
                readers.start_soon(collect, users, events)
                readers.start_soon(collect, occupancy, values)
                b.track("tab-1", TOPIC, "alice", {})
                b.track("tab-2", TOPIC, "bob", {})
                await wait_until(
                    lambda: users.counts == {"alice": 1, "bob": 1}, "a counts alice and bob"
                )
                b.untrack_conn("tab-1")  # alice's tab reconnects to c: a handover
                c.track("tab-3", TOPIC, "alice", {"moved": True})
                await wait_until(
                    lambda: (
                        [m.get("moved") for m in a.get_by_key(TOPIC, "alice")["metas"]] == [True]
                    ),
                    "a lists alice's new tab alone",
                )
                b.untrack_conn("tab-2")  # bob leaves for good
                await wait_until(
                    lambda: users.counts == {"alice": 1}, "bob's leave, after his grace period"
                )
                await wait_until(
                    lambda: values[-1:] == [Occupancy(topic=TOPIC, keys=1, presences=1)],
                    "the last count",
                )
                users.close()
                occupancy.close()
    watch.check("the test")
    assert by_key(events) == {"alice": ["UserJoined"], "bob": ["UserJoined", "UserLeft"]}
    assert values[0] == Occupancy(topic=TOPIC, keys=0, presences=0)
    assert all(earlier != later for earlier, later in itertools.pairwise(values))
    assert Occupancy(topic=TOPIC, keys=2, presences=2) in values


@pytest.mark.anyio
async def test_waiting_readers_end_when_the_node_stops() -> None:
    ended: list[str] = []

    async def read(subscription: Subscription[Any], name: str) -> None:
        async for _ in subscription:
            pass
        ended.append(name)

    with LeakWatch() as watch:
        async with anyio.create_task_group() as readers:
            async with anyio_driver.open_node(config=FAST) as node:
                node.configure_topic(TOPIC, TopicOptions(large_room=True))
                users, occupancy = node.users(TOPIC), node.watch_occupancy(TOPIC)
                readers.start_soon(read, users, "users")
                readers.start_soon(read, occupancy, "occupancy")
                node.track("c", TOPIC, "alice", {})
                await wait_until(lambda: users.counts == {"alice": 1}, "the batch")
                await wait_until(lambda: occupancy.buffered == 0, "the count read")
            await wait_until(lambda: len(ended) == 2, "both readers end")
    watch.check("the test")
    assert sorted(ended) == ["occupancy", "users"]
    assert users.closed
    assert occupancy.closed


@pytest.mark.anyio
async def test_a_slow_occupancy_reader_skips_values_and_never_falls_behind() -> None:
    with LeakWatch() as watch:
        async with anyio_driver.open_node(config=FAST) as node:
            occupancy = node.watch_occupancy(TOPIC)
            for index in range(500):
                node.track(f"c{index}", TOPIC, f"k{index % 50}", {})
                assert occupancy.buffered == 1
            with anyio.fail_after(DEADLINE):
                assert await occupancy.__anext__() == Occupancy(topic=TOPIC, keys=50, presences=500)
            got: list[Occupancy] = []
            async with anyio.create_task_group() as readers:
                readers.start_soon(collect, occupancy, got)
                await anyio.wait_all_tasks_blocked()
                node.untrack_conn("c0")  # wakes the waiting reader
                await wait_until(lambda: len(got) == 1, "the new count")
                occupancy.close()
            assert got == [Occupancy(topic=TOPIC, keys=50, presences=499)]
    watch.check("the test")
