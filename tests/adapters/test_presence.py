"""The application API (:class:`~presence_adapters.Presence`) without a driver.

A Presence is built on a real tracker and a stub driver. The synchronous tests run on a scripted
runtime (its clock is a number the test sets) and read subscriptions with :func:`read_now`, which
steps the read coroutine by hand and reports when it would have to wait; the async tests run on
asyncio and trio with the real runtime primitives.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from waiting import anyio_backend as anyio_backend  # the fixture, for the anyio marker
from waiting import next_item, wait_until

from presence_adapters import (
    FetchHookError,
    NodeClosed,
    Presence,
    PresenceView,
    Subscription,
    SubscriptionOverflow,
    TopicDiff,
)
from presence_adapters._runtime import AsyncEvent, AsyncLock, Runtime, current_runtime
from presence_core import (
    Heartbeat,
    JSONValue,
    Key,
    Keyring,
    LocalProtocolError,
    PresenceError,
    PresenceMap,
    RejectReason,
    ReplicaDown,
    ReplicaRef,
    ReplicaUp,
    Tracker,
    TrackerConfig,
    encode_message,
)

T = TypeVar("T")

CONFIG = TrackerConfig(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5)


# ---------------------------------------------------------------------- scaffolding


class StubControl:
    """The driver side of a Presence: counts pokes; abandoning just closes."""

    def __init__(self) -> None:
        self.pokes = 0
        self.presence: Presence | None = None

    def poke(self) -> None:
        self.pokes += 1

    async def abandon(self) -> None:
        assert self.presence is not None
        self.presence._close()


class _Suspend:
    def __await__(self) -> Generator[str, None, None]:
        yield "waiting"


class FlagEvent:
    """An event a synchronous test can set; waiting on it suspends (see :func:`read_now`)."""

    def __init__(self) -> None:
        self.flag = False

    def set(self) -> None:
        self.flag = True

    def is_set(self) -> bool:
        return self.flag

    async def wait(self) -> None:
        await _Suspend()


class ScriptedRuntime:
    """A runtime whose clock is :attr:`now`; it cannot really wait (no fetch hook with it)."""

    name = "scripted"

    def __init__(self) -> None:
        self.now = 0.0

    def event(self) -> AsyncEvent:
        return FlagEvent()

    def lock(self) -> AsyncLock:
        raise AssertionError("the scripted runtime has no locks")

    def clock(self) -> float:
        return self.now

    async def wait(self, event: AsyncEvent, deadline: float | None) -> bool:
        raise AssertionError("the scripted runtime cannot wait")

    async def checkpoint(self) -> None:
        raise AssertionError("the scripted runtime cannot wait")


def make_presence(
    runtime: Runtime | None = None,
    fetch: Callable[[str, PresenceMap], Awaitable[dict[str, dict[str, Any]]]] | None = None,
    name: str = "a",
) -> tuple[Presence, StubControl]:
    tracker = Tracker(config=CONFIG, replica=ReplicaRef(name, 1), rng=random.Random(0))
    control = StubControl()
    presence = Presence(
        tracker, runtime if runtime is not None else ScriptedRuntime(), control, fetch=fetch
    )
    control.presence = presence
    return presence, control


BLOCKED = object()
"""What :func:`read_now` returns when the read would have to wait."""


def read_now(subscription: Subscription[T]) -> T | object:
    """Read one item without an event loop: the item, or :data:`BLOCKED` if none is ready.

    Raises what the read raises (SubscriptionOverflow, StopAsyncIteration).
    """
    step = subscription.__anext__()
    try:
        step.send(None)
    except StopIteration as done:
        item: T = done.value
        return item
    step.close()
    return BLOCKED


def read_all(subscription: Subscription[T]) -> list[T]:
    items: list[T] = []
    while (item := read_now(subscription)) is not BLOCKED:
        items.append(item)  # type: ignore[arg-type]
    return items


def normalized(presences: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{key: metas sorted by phx_ref}``: lists and mirrors compare equal whatever the order."""
    return {
        key: sorted(value["metas"] if isinstance(value, Mapping) else value, key=_ref)
        for key, value in presences.items()
    }


def _ref(meta: Mapping[str, JSONValue]) -> str:
    return str(meta["phx_ref"])


def keys(diff: TopicDiff) -> tuple[list[str], list[str]]:
    return sorted(diff.joins), sorted(diff.leaves)


# ---------------------------------------------------------------------- buffers and overflow


def test_a_single_diff_larger_than_the_buffer_enters_an_empty_buffer() -> None:
    presence, _ = make_presence()
    for index in range(5):
        presence.track("conn", "room", f"k{index}", {})
    subscription = presence.subscribe("room", max_buffered=2)
    presence.untrack_conn("conn")  # one diff of five leaves
    assert subscription.buffered == 5
    assert not subscription.closed
    diff = read_now(subscription)
    assert isinstance(diff, TopicDiff)
    assert len(diff.leaves) == 5
    assert subscription.buffered == 0
    assert read_now(subscription) is BLOCKED
    presence.track("conn", "room", "k0", {})  # still subscribed
    assert subscription.buffered == 1


def test_a_subscription_has_one_reader_at_a_time() -> None:
    presence, _ = make_presence()
    subscription = presence.subscribe("room")
    first = subscription.__anext__()
    first.send(None)  # waits: nothing buffered yet
    second = subscription.__anext__()
    with pytest.raises(LocalProtocolError, match="one reader"):
        second.send(None)
    first.close()  # the first reader gives up (a cancellation): another may read now
    presence.track("conn", "room", "k", {})
    diff = read_now(subscription)
    assert isinstance(diff, TopicDiff)
    assert keys(diff) == (["k"], [])


def test_overflow_discards_the_buffer_at_once_and_is_signalled_once() -> None:
    presence, _ = make_presence()
    subscription = presence.subscribe("room", max_buffered=3)
    for index in range(3):
        presence.track("conn", "room", f"k{index}", {})
    assert subscription.buffered == 3
    assert not subscription.closed
    presence.track("conn", "room", "k3", {})  # the fourth presence does not fit
    assert subscription.buffered == 0
    assert subscription.closed
    with pytest.raises(SubscriptionOverflow) as raised:
        read_now(subscription)
    assert (raised.value.topic, raised.value.limit) == ("room", 3)
    assert isinstance(raised.value, PresenceError)
    with pytest.raises(StopAsyncIteration):
        read_now(subscription)
    presence.track("conn", "room", "k4", {})  # nothing is buffered for it any more
    assert subscription.buffered == 0


def test_a_large_diff_overflows_a_buffer_that_holds_something() -> None:
    presence, _ = make_presence()
    for index in range(4):
        presence.track("bulk", "room", f"k{index}", {})
    subscription = presence.subscribe("room", max_buffered=4)
    presence.track("single", "room", "one", {})
    presence.untrack_conn("bulk")  # 1 held + 4 > 4
    with pytest.raises(SubscriptionOverflow):
        read_now(subscription)


def test_resynchronise_after_an_overflow_with_subscribe_and_list() -> None:
    presence, _ = make_presence()
    slow = presence.subscribe("room", max_buffered=1)
    presence.track("c1", "room", "alice", {})
    presence.track("c2", "room", "bob", {})
    with pytest.raises(SubscriptionOverflow):
        read_now(slow)
    again = presence.subscribe("room", max_buffered=1)
    state = normalized(presence.list("room"))  # no await between the two: nothing in between
    presence.untrack("c1", "room", "alice")
    presence.track("c3", "room", "carol", {})
    with pytest.raises(SubscriptionOverflow):
        read_now(again)  # 1 held + 1 > 1: a subscriber must keep up, even after a resync
    again = presence.subscribe("room")
    state = normalized(presence.list("room"))
    presence.update("c3", "room", "carol", {"v": 2})
    for diff in read_all(again):
        for key, value in diff.joins.items():
            state.setdefault(key, []).extend(value["metas"])
        for key, value in diff.leaves.items():
            state[key] = [meta for meta in state[key] if meta not in value["metas"]]
    assert normalized(state) == normalized(presence.list("room"))


def test_replica_events_are_buffered_by_count() -> None:
    runtime = ScriptedRuntime()
    presence, _ = make_presence(runtime)
    events = presence.replica_events(max_buffered=1)
    peer = Tracker(config=CONFIG, replica=ReplicaRef("b", 7), rng=random.Random(1))
    peer.handle_timer(now=0.0)
    peer.handle_timer(now=10 * CONFIG.broadcast_period)  # an empty heartbeat by now
    (heartbeat,) = peer.messages_to_send()
    pump = presence.pump
    pump.receive(encode_message(heartbeat.message), now=pump.now(0.0))
    assert events.buffered == 1
    pump.wake(now=pump.now(CONFIG.effective_down_period + 1.0))  # b is down: a second event
    with pytest.raises(SubscriptionOverflow) as raised:
        read_now(events)
    assert raised.value.topic is None
    assert raised.value.limit == 1

    events = presence.replica_events()
    pump.receive(encode_message(heartbeat.message), now=pump.now(1.5))
    up = read_now(events)
    assert isinstance(up, ReplicaUp)
    assert up.replica == ReplicaRef("b", 7)
    pump.wake(now=pump.now(1.5 + CONFIG.effective_down_period + 0.01))
    down = read_now(events)
    assert isinstance(down, ReplicaDown)


def test_unsendable_messages_are_counted_not_streamed() -> None:
    """A message too large even in parts is a count and a log line, not a replica event."""
    small = attrs.evolve(
        CONFIG,
        max_message_bytes=700,
        max_meta_bytes=100,
        max_conn_bytes=10,
        max_topic_bytes=10,
        max_key_bytes=10,
    )
    tracker = Tracker(config=small, replica=ReplicaRef("a", 1), rng=random.Random(0))
    control = StubControl()
    presence = Presence(tracker, ScriptedRuntime(), control)
    control.presence = presence
    events = presence.replica_events()
    pump = presence.pump
    # Ten replicas whose names alone outgrow a heartbeat's clock. Peers cannot do this (the
    # tracker refuses replicas whose clocks would not fit), so the state is filled directly.
    for i in range(10):
        tracker.state.replica_up(ReplicaRef(f"{'p' * 100}{i}", 1))
    presence.track("conn", "room", "alice", {})
    deadline = pump.deadline
    assert deadline is not None
    pump.wake(now=pump.now(deadline))
    assert presence.stats.unsendable == 1
    assert read_now(events) is BLOCKED


KEY_1 = Key("key-1", bytes(range(32)))
KEY_2 = Key("key-2", bytes(range(32, 64)))


def sealed_presence(keyring: Keyring | None) -> Presence:
    tracker = Tracker(
        config=CONFIG, replica=ReplicaRef("a", 1), rng=random.Random(0), keyring=keyring
    )
    control = StubControl()
    presence = Presence(tracker, ScriptedRuntime(), control)
    control.presence = presence
    return presence


def test_refused_messages_are_counted_not_streamed() -> None:
    """A message the tracker refuses is a count and a log line, not a replica event."""
    presence = sealed_presence(Keyring(KEY_1))
    events = presence.replica_events()
    pump = presence.pump
    unsealed = encode_message(Heartbeat(sender=ReplicaRef("b", 1), clock={}))
    pump.receive(unsealed, now=pump.now(0.0))
    assert presence.stats.rejected_by_reason == {RejectReason.UNAUTHENTICATED: 1}
    assert presence.tracker_stats().rejected == {RejectReason.UNAUTHENTICATED: 1}
    assert presence.tracker_stats().received == 1
    assert read_now(events) is BLOCKED
    assert presence.replicas() == {}


def test_keys_rotate_through_the_presence() -> None:
    presence = sealed_presence(Keyring(KEY_1))
    assert presence.keyring == Keyring(KEY_1)
    presence.set_keyring(Keyring(KEY_1, accepted=(KEY_2,)))
    assert presence.keyring == Keyring(KEY_1, accepted=(KEY_2,))
    presence.track("conn", "room", "alice", {})
    deadline = presence.pump.deadline
    assert deadline is not None
    presence.pump.wake(now=presence.pump.now(deadline))
    (sent,) = presence.pump.take_transmissions()
    assert sent.data.startswith(b"pcA1")
    assert b"key-1" in sent.data[:16]  # still sealed with the first key
    with pytest.raises(LocalProtocolError, match="keyring must be a Keyring"):
        presence.set_keyring(KEY_2)  # type: ignore[arg-type]
    assert presence.keyring == Keyring(KEY_1, accepted=(KEY_2,))  # unchanged
    presence._close()
    with pytest.raises(NodeClosed):
        presence.set_keyring(Keyring(KEY_2))


def test_a_node_without_a_keyring_cannot_start_sealing() -> None:
    presence = sealed_presence(None)
    assert presence.keyring is None
    with pytest.raises(LocalProtocolError, match="started without a keyring"):
        presence.set_keyring(Keyring(KEY_1))
    assert presence.keyring is None


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """Commands on one topic (tracks, updates, untracks, whole connections leaving) and reads."""
    kinds = st.sampled_from(["track", "track", "update", "untrack", "untrack_conn", "read"])
    return draw(
        st.lists(st.tuples(kinds, st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=40)
    )


@given(ops=operations(), limit=st.integers(1, 6))
def test_subscription_buffer_invariants(ops: list[tuple[str, int, int]], limit: int) -> None:
    """Held presences never exceed max(limit, the largest single diff); what is delivered is a
    prefix of every diff, in order; anything less is signalled by one overflow; a view's mirror
    always equals list()."""
    runtime = ScriptedRuntime()
    presence, _ = make_presence(runtime)
    bounded = presence.subscribe("room", max_buffered=limit)
    reference = presence.subscribe("room", max_buffered=10**9)
    view = presence.view("room", max_buffered=10**9)
    emitted: list[TopicDiff] = []
    delivered: list[TopicDiff] = []
    overflows = 0
    largest = 0

    def read(count: int) -> None:
        nonlocal overflows
        for _ in range(count):
            try:
                item = read_now(bounded)
            except SubscriptionOverflow:
                overflows += 1
                continue
            except StopAsyncIteration:
                return
            if item is BLOCKED:
                return
            assert isinstance(item, TopicDiff)
            delivered.append(item)

    for kind, conn, key in ops:
        runtime.now += 0.001
        try:
            if kind == "track":
                presence.track(f"c{conn}", "room", f"k{key}", {"n": key})
            elif kind == "update":
                presence.update(f"c{conn}", "room", f"k{key}", {"n": -key})
            elif kind == "untrack":
                presence.untrack(f"c{conn}", "room", f"k{key}")
            elif kind == "untrack_conn":
                presence.untrack_conn(f"c{conn}")
            else:
                read(key)
        except PresenceError:
            pass  # an invalid command changes nothing (and emits nothing)
        new = read_all(reference)
        emitted += new
        largest = max([largest] + [len(d.event.joins) + len(d.event.leaves) for d in new])
        assert bounded.buffered <= max(limit, largest)
        read_all(view)
        assert normalized(view.presences) == normalized(presence.list("room"))
    read(len(emitted) + 2)
    assert [d.event for d in delivered] == [d.event for d in emitted[: len(delivered)]]
    if len(delivered) < len(emitted):
        assert overflows == 1
        assert bounded.closed
    else:
        assert overflows == 0


# ---------------------------------------------------------------------- views


def test_a_view_mirrors_list_after_every_diff() -> None:
    presence, _ = make_presence()
    presence.track("c0", "room", "alice", {"s": "here"})
    view = presence.view("room")
    assert normalized(view.presences) == normalized(presence.list("room"))
    steps: list[Callable[[], object]] = [
        lambda: presence.track("c1", "room", "alice", {"s": "also"}),
        lambda: presence.track("c1", "room", "bob", {"s": "here"}),
        lambda: presence.update("c0", "room", "alice", {"s": "away"}),
        lambda: presence.update("c1", "room", "bob", lambda meta: {**meta, "n": 1}),
        lambda: presence.untrack("c0", "room", "alice"),
        lambda: presence.track("c2", "lobby", "carol", {}),  # another topic: no diff here
        lambda: presence.untrack_conn("c1"),
    ]
    for step in steps:
        step()
        for _ in read_all(view):
            assert normalized(view.presences) == normalized(presence.list("room"))
    assert view.presences == {}


# ---------------------------------------------------------------------- the fetch hook


class Hook:
    """A fetch hook that records its calls and adds ``name`` next to the metas."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.gate: anyio.Event | None = None
        self.result: Callable[[PresenceMap], object] | None = None
        self.error: BaseException | None = None

    async def __call__(self, topic: str, presences: PresenceMap) -> dict[str, dict[str, Any]]:
        self.calls.append((topic, sorted(presences)))
        await anyio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if self.result is not None:
            return self.result(presences)  # type: ignore[return-value]
        return {key: {**value, "name": key.upper()} for key, value in presences.items()}


@pytest.mark.anyio
async def test_the_hook_runs_once_per_diff_whatever_the_number_of_subscribers() -> None:
    hook = Hook()
    presence, _ = make_presence(current_runtime(), fetch=hook)
    subscriptions = [presence.subscribe("room") for _ in range(3)]
    presence.track("c", "room", "alice", {"v": 1})
    presence.update("c", "room", "alice", {"v": 2})
    presence.untrack("c", "room", "alice")
    seen: list[list[TopicDiff]] = [[], [], []]

    async def consume(index: int) -> None:
        for _ in range(3):
            seen[index].append(await next_item(subscriptions[index], "a diff"))

    async with anyio.create_task_group() as group:
        for index in range(3):
            group.start_soon(consume, index)
    assert seen[0] == seen[1] == seen[2]
    assert [keys(diff) for diff in seen[0]] == [
        (["alice"], []),
        (["alice"], ["alice"]),
        ([], ["alice"]),
    ]
    assert all(
        value["name"] == "ALICE"
        for d in seen[0]
        for value in (*d.joins.values(), *d.leaves.values())
    )
    assert seen[0][1].joins["alice"]["metas"][0]["v"] == 2  # the update's join is the new meta
    assert len(hook.calls) == 4  # joins of 1, joins and leaves of 2, leaves of 3


@pytest.mark.anyio
async def test_fetched_diffs_keep_their_order() -> None:
    hook = Hook()
    presence, _ = make_presence(current_runtime(), fetch=hook)
    subscription = presence.subscribe("room")
    for index in range(10):
        presence.track("c", "room", f"k{index}", {})
    got = [await next_item(subscription, f"diff {index}") for index in range(10)]
    assert [list(diff.joins) for diff in got] == [[f"k{index}"] for index in range(10)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "result",
    [
        lambda presences: {},
        lambda presences: [presences],
        lambda presences: {key: {"name": "no metas"} for key in presences},
        lambda presences: {key: {"metas": "not a list"} for key in presences},
    ],
    ids=["drops-the-key", "not-a-dict", "drops-metas", "metas-not-a-list"],
)
async def test_a_hook_that_breaks_its_contract_raises_fetch_hook_error(
    result: Callable[[PresenceMap], object],
) -> None:
    hook = Hook()
    hook.result = result
    presence, _ = make_presence(current_runtime(), fetch=hook)
    subscription = presence.subscribe("room")
    presence.track("c", "room", "alice", {})
    with pytest.raises(FetchHookError):
        await subscription.__anext__()
    assert subscription.buffered == 1  # nothing lost: the diff is still first in line
    with pytest.raises(FetchHookError):
        await presence.fetched_list("room")
    with pytest.raises(FetchHookError):
        await presence.fetched_get_by_key("room", "alice")
    hook.result = None  # the hook is fixed: the next read fetches again and gets the diff
    diff = await subscription.__anext__()
    assert diff.joins["alice"]["name"] == "ALICE"
    assert subscription.buffered == 0


@pytest.mark.anyio
async def test_a_failing_hook_is_retried_by_the_next_read() -> None:
    hook = Hook()
    presence, _ = make_presence(current_runtime(), fetch=hook)
    first, second = presence.subscribe("room"), presence.subscribe("room")
    presence.track("c", "room", "alice", {})
    hook.error = ConnectionError("the database timed out")
    with pytest.raises(ConnectionError):
        await first.__anext__()
    diff = await second.__anext__()  # the failure was not kept: the second reader fetches
    assert diff.joins["alice"]["name"] == "ALICE"
    assert await first.__anext__() is diff  # and the first one gets the same result now
    assert len(hook.calls) == 2


@pytest.mark.anyio
async def test_a_cancelled_fetch_lets_the_next_reader_fetch() -> None:
    hook = Hook()
    presence, _ = make_presence(current_runtime(), fetch=hook)
    first, second = presence.subscribe("room"), presence.subscribe("room")
    presence.track("c", "room", "alice", {})
    hook.gate = anyio.Event()  # the first fetch hangs
    async with anyio.create_task_group() as group:
        group.start_soon(first.__anext__)
        await wait_until(lambda: len(hook.calls) == 1, "the first fetch to start")
        group.cancel_scope.cancel()
    hook.gate = None
    diff = await next_item(second, "the diff, fetched by the second reader")
    assert diff.joins["alice"]["name"] == "ALICE"
    assert len(hook.calls) == 2
    assert await next_item(first, "the diff, for the cancelled reader") is diff
    assert first.buffered == second.buffered == 0


@pytest.mark.anyio
async def test_fetched_queries() -> None:
    hook = Hook()
    presence, _ = make_presence(current_runtime(), fetch=hook)
    assert await presence.fetched_list("room") == {}
    assert hook.calls == []
    assert await presence.fetched_get_by_key("room", "nobody") == {"metas": []}
    presence.track("c", "room", "alice", {})
    listed = await presence.fetched_list("room")
    assert listed["alice"]["name"] == "ALICE"
    assert (await presence.fetched_get_by_key("room", "alice"))["name"] == "ALICE"
    plain, _ = make_presence(current_runtime())
    plain.track("c", "room", "alice", {})
    assert await plain.fetched_list("room") == plain.list("room")
    assert await plain.fetched_get_by_key("room", "alice") == plain.get_by_key("room", "alice")


# ---------------------------------------------------------------------- connection scopes


class Boom(Exception):
    pass


@pytest.mark.anyio
async def test_a_connection_scope_untracks_on_exit_exception_and_cancellation() -> None:
    presence, _ = make_presence(current_runtime())
    async with presence.connection() as conn:
        conn.track("room", "alice", {})
        presence.track(conn.conn, "lobby", "alice", {})  # under the scope's id
        assert presence.topics() == ["lobby", "room"]
    assert presence.topics() == []

    async def fail_inside() -> None:
        async with presence.connection("c-boom") as conn:
            conn.track("room", "bob", {})
            raise Boom

    with pytest.raises(Boom):
        await fail_inside()
    assert presence.topics() == []

    with anyio.CancelScope() as scope:
        async with presence.connection("c-cancel") as conn:
            conn.track("room", "carol", {})
            conn.update("room", "carol", {"v": 2})
            scope.cancel()
            await anyio.sleep_forever()
    assert presence.topics() == []


@pytest.mark.anyio
async def test_one_scope_per_connection_id() -> None:
    presence, _ = make_presence(current_runtime())
    first, second = presence.connection(), presence.connection()
    assert first.conn != second.conn
    async with presence.connection("c1") as conn:
        conn.track("room", "alice", {})
        with pytest.raises(LocalProtocolError, match="already open"):
            async with presence.connection("c1"):
                pass
        assert "alice" in presence.list("room")  # the refused scope untracked nothing
    async with presence.connection("c1") as conn:  # free again
        conn.track("room", "alice", {})
        conn.untrack("room", "alice")
        assert presence.list("room") == {}
    with pytest.raises(LocalProtocolError):
        presence.connection(5)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_scope_exiting_after_the_node_closed_is_a_no_op() -> None:
    presence, _ = make_presence(current_runtime())
    scope = presence.connection("late")
    conn = await scope.__aenter__()
    conn.track("room", "alice", {})
    await presence.abandon()
    assert presence.closed
    await scope.__aexit__(None, None, None)  # no NodeClosed
    with pytest.raises(NodeClosed):
        await presence.connection("new").__aenter__()


# ---------------------------------------------------------------------- closed node and errors


def test_a_closed_node_refuses_commands_and_answers_queries() -> None:
    presence, _ = make_presence()
    presence.track("c", "room", "alice", {})
    subscription = presence.subscribe("room")
    presence._close()
    for command in (
        lambda: presence.track("c", "room", "bob", {}),
        lambda: presence.update("c", "room", "alice", {}),
        lambda: presence.untrack("c", "room", "alice"),
        lambda: presence.untrack_conn("c"),
    ):
        with pytest.raises(NodeClosed):
            command()
    assert list(presence.list("room")) == ["alice"]
    assert presence.count("room") == 1
    assert presence.topics() == ["room"]
    assert presence.get_by_key("room", "alice")["metas"]
    with pytest.raises(StopAsyncIteration):
        read_now(subscription)
    late_ones: list[Subscription[Any]] = [
        presence.subscribe("room"),
        presence.view("room"),
        presence.replica_events(),
    ]
    for late in late_ones:
        assert late.closed
        with pytest.raises(StopAsyncIteration):
            read_now(late)
    assert "closed" in repr(presence)


def test_commands_poke_the_driver() -> None:
    presence, control = make_presence()
    presence.track("c", "room", "alice", {})
    presence.update("c", "room", "alice", {"v": 1})
    presence.untrack("c", "room", "alice")
    presence.untrack_conn("c")
    assert control.pokes == 4


def snapshot(presence: Presence) -> tuple[object, ...]:
    return (
        presence.list("room"),
        presence.topics(),
        presence.count("room"),
        presence.replicas(),
        presence.pump.pending,
        presence.stats.sent,
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.track(1, "room", "alice", {}),
        lambda p: p.track("c", 2, "alice", {}),
        lambda p: p.track("c", "room", 3, {}),
        lambda p: p.track("c", "room", "alice", {"bad": object()}),
        lambda p: p.track("c0", "room", "alice", {}),  # already tracked
        lambda p: p.update("c", "room", "nobody", {}),
        lambda p: p.update("c0", "room", "alice", "not a meta"),
        lambda p: p.untrack(None, "room", "alice"),
        lambda p: p.untrack_conn(7),
        lambda p: p.subscribe(1),
        lambda p: p.subscribe("room", max_buffered=0),
        lambda p: p.subscribe("room", max_buffered=True),
        lambda p: p.view("room", max_buffered=-1),
        lambda p: p.replica_events(max_buffered=1.5),
        lambda p: p.connection(b"bytes"),
    ],
)
def test_argument_errors_are_presence_errors_and_change_nothing(
    call: Callable[[Presence], object],
) -> None:
    presence, control = make_presence()
    subscription = presence.subscribe("room")
    presence.track("c0", "room", "alice", {"v": 0})
    before, pokes = snapshot(presence), control.pokes
    with pytest.raises(PresenceError):
        call(presence)
    assert snapshot(presence) == before
    assert control.pokes == pokes
    assert subscription.buffered == 1  # no diff was emitted


def test_subscriptions_close_and_end() -> None:
    presence, _ = make_presence()
    subscription = presence.subscribe("room")
    presence.track("c", "room", "alice", {})
    subscription.close()
    subscription.close()  # idempotent
    presence.track("c", "room", "bob", {})  # after close: not buffered
    assert subscription.closed
    assert subscription.buffered == 1
    assert isinstance(read_now(subscription), TopicDiff)
    with pytest.raises(StopAsyncIteration):
        read_now(subscription)
    assert "buffered=0/10000" in repr(subscription)
    view = presence.view("room")
    assert isinstance(view, PresenceView)
    assert sorted(view.presences) == ["alice", "bob"]


@pytest.mark.anyio
async def test_a_waiting_reader_is_woken_by_a_diff_and_by_close() -> None:
    presence, _ = make_presence(current_runtime())
    subscription = presence.subscribe("room")
    got: list[object] = []

    async def reader() -> None:
        async with subscription:
            async for diff in subscription:
                got.append(diff)
        got.append("ended")

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        presence.track("c", "room", "alice", {})
        await wait_until(lambda: len(got) == 1, "the reader gets the diff")
        subscription.close()
    assert got[-1] == "ended"
    assert len(got) == 2
