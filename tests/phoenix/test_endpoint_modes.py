"""The Phoenix endpoint's topic modes: occupancy-only channels, topic options (large rooms, leave
grace periods) set through ``create_app(topic_options=...)``.

Scenarios run as in ``test_endpoint.py`` (whose client and helpers they reuse): the ASGI app under
Starlette's TestClient, every scenario in a daemon thread joined with a deadline, no sleeps (a
test waits for frames, which come in order per socket). Presences the test adds or removes
directly on the node go through the TestClient's portal, in one synchronous call: nothing can
happen in between, so a large room's tick sees all of them or none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from test_endpoint import (
    CONFIG,
    DEADLINE,
    SLOW_FAILURE_DETECTION,
    TOPIC,
    Nodes,
    Peer,
    connect,
    join_hook_recording,
    node_of,
    on_event,
    on_join,
    portal_of,
    serve,
)

from asgi_testing import TestClient
from presence_adapters import MemoryHub, Presence, Transport
from presence_adapters.drivers import asyncio as asyncio_driver
from presence_adapters.phoenix import (
    PRESENCE_PARAM,
    JoinRequest,
    PhoenixApp,
    TopicOptionsHook,
    create_app,
)
from presence_core import TopicOptions, TrackerConfig

LARGE = TopicOptions(large_room=True)
BAD_MODE = {
    "status": "error",
    "response": {"reason": 'join param "presence" must be "full" or "occupancy"'},
}


def make_app(
    *,
    topic_options: TopicOptionsHook | None = None,
    config: TrackerConfig = CONFIG,
    hub: MemoryHub | None = None,
    name: str = "n1",
) -> PhoenixApp:
    def node() -> Any:
        transport: Transport | None = hub.connect(name) if hub is not None else None
        return asyncio_driver.open_node(transport, config=config)

    return create_app(node, on_join=on_join, on_event=on_event, topic_options=topic_options)


def counts(keys: int, presences: int) -> dict[str, int]:
    return {"keys": keys, "presences": presences}


def join_counting(peer: Peer, topic: str = TOPIC) -> dict[str, int]:
    """Join ``topic`` for counts only; check the reply and the first push; returns its counts."""
    reply = peer.join(topic, {PRESENCE_PARAM: "occupancy"})
    assert reply[4]["status"] == "ok", reply
    return occupancy(peer, topic)


def occupancy(peer: Peer, topic: str = TOPIC) -> dict[str, int]:
    """The next ``presence_occupancy`` push of ``topic`` (with the channel's join_ref)."""
    join_ref, ref, _, _, payload = peer.take("presence_occupancy", topic)
    assert join_ref == (None if peer.v1 else peer.join_refs[topic])
    assert ref is None
    assert isinstance(payload, dict)
    return payload


POLL_INTERVAL = 0.002
"""Seconds between two evaluations of a condition being waited for."""


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (in the app's event loop, through the portal) until ``condition()``, or fail."""
    with anyio.move_on_after(DEADLINE):
        while not condition():
            await anyio.sleep(POLL_INTERVAL)
        return
    raise AssertionError(f"timed out waiting for {what}")


def crowd(presence: Presence, *keys: str) -> None:
    for key in keys:
        presence.track(f"conn-{key}", TOPIC, key, {"n": key})


def disperse(presence: Presence, *keys: str) -> None:
    for key in keys:
        presence.untrack_conn(f"conn-{key}")


# ---------------------------------------------------------------------------- occupancy channels


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
def test_an_occupancy_channel_gets_counts_instead_of_presences(vsn: str) -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        portal = portal_of(client)
        with connect(client, "alice", vsn=vsn) as alice, connect(client, "bob", vsn=vsn) as bob:
            alice.joined()
            assert join_counting(bob) == counts(2, 2)  # bob is tracked, and counted, first
            with connect(client, "bob", vsn=vsn) as tab:  # bob's second tab: one more presence
                tab.joined()
                assert occupancy(bob) == counts(2, 3)
                # An update is a diff with the same counts: nothing for bob. The next change is
                # the next count he gets.
                alice.reply(alice.request("status", {"status": "away"}))
                portal.call(crowd, presence, "carol")
                assert occupancy(bob) == counts(3, 4)
            assert occupancy(bob) == counts(3, 3)  # the tab closed
            portal.call(disperse, presence, "carol")
            assert occupancy(bob) == counts(2, 2)
            ref = bob.request("phx_leave")
            assert bob.reply(ref)[4]["status"] == "ok"
            bob.take("phx_close")
            alice.wait_for(TOPIC, {"alice"})  # bob's presence left with his channel
            assert presence.list(TOPIC).keys() == {"alice"}
            # Whatever bob read meanwhile: no presences, ever.
            assert [f for f in bob.pending if f[3] in ("presence_state", "presence_diff")] == []
            assert TOPIC not in bob.views

    serve(app, scenario)


def test_an_occupancy_watcher_without_a_key_is_not_counted() -> None:
    app = make_app()

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice, connect(client, "bob") as bob:
            assert join_counting(alice, "room:watch") == counts(0, 0)
            bob.joined()  # another topic: nothing for alice
            portal_of(client).call(node_of(app).track, "c", "room:watch", "carol", {})
            assert occupancy(alice, "room:watch") == counts(1, 1)

    serve(app, scenario)


@pytest.mark.parametrize("mode", ["everything", "", "Occupancy", 1, None, ["occupancy"]])
def test_an_unknown_presence_mode_is_refused_before_the_join_hook(mode: object) -> None:
    requests: list[JoinRequest] = []
    app = make_app()
    app.socket.on_join = join_hook_recording(requests)

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            reply = alice.join(TOPIC, {PRESENCE_PARAM: mode})
            assert reply[4] == BAD_MODE
            assert requests == []
            assert node_of(app).list(TOPIC) == {}
            reply = alice.join(TOPIC, {PRESENCE_PARAM: "full"})  # the explicit default
            assert reply[4]["status"] == "ok"
            assert alice.state().keys() == {"alice"}
            assert [request.payload for request in requests] == [{PRESENCE_PARAM: "full"}]

    serve(app, scenario)


def test_an_occupancy_channel_ends_with_its_node() -> None:
    app = make_app()
    nodes = Nodes({"n1": app})

    def scenario(client: TestClient) -> None:
        with connect(client, "alice", node="n1") as alice:
            assert join_counting(alice) == counts(1, 1)
            portal_of(client).call(nodes.stop, "n1")
            assert alice.closed() == 1001
        assert app.presence is None

    serve(nodes, scenario)


# ---------------------------------------------------------------------------- topic options


def test_a_large_room_sends_one_presence_diff_per_tick() -> None:
    app = make_app(topic_options={TOPIC: LARGE}.get)

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        portal = portal_of(client)
        with connect(client, "alice") as alice, connect(client, "bob") as bob:
            # Her own join is in the tick's batch: not in the state yet, in the tick's diff.
            assert alice.joined() == {}
            assert presence.topic_options(TOPIC) == LARGE
            assert presence.topic_options("room:other") == TopicOptions()
            assert alice.diff()["joins"].keys() == {"alice"}
            # bob counts only: his first count is the list's, his own join still batched; the
            # tick brings it to alice's diffs and to his counts alike.
            assert join_counting(bob) == counts(1, 1)
            assert alice.diff()["joins"].keys() == {"bob"}
            assert occupancy(bob) == counts(2, 2)
            keys = [f"x{index}" for index in range(10)]
            portal.call(crowd, presence, *keys)
            diff = alice.diff()  # ten joins in one tick: one diff
            assert diff["joins"].keys() == set(keys)
            assert diff["leaves"] == {}
            assert occupancy(bob) == counts(12, 12)

            def churn() -> None:
                disperse(presence, *keys)
                crowd(presence, "flash")
                disperse(presence, "flash")  # joined and left within the tick: never shown
                crowd(presence, "marker")

            portal.call(churn)
            diff = alice.diff()
            assert diff["joins"].keys() == {"marker"}
            assert diff["leaves"].keys() == set(keys)
            assert occupancy(bob) == counts(3, 3)
            portal.call(crowd, presence, "last")
            assert alice.diff() == {"joins": {"last": presence.list(TOPIC)["last"]}, "leaves": {}}
            assert set(alice.views[TOPIC]) == {"alice", "bob", "marker", "last"}

    serve(app, scenario)


def test_a_reconnect_within_the_grace_period_is_one_diff() -> None:
    grace = TopicOptions(leave_grace_period=60.0)
    app = make_app(topic_options=lambda topic: grace if topic == TOPIC else None)

    def scenario(client: TestClient) -> None:
        presence = node_of(app)
        portal = portal_of(client)
        with connect(client, "alice") as alice:
            alice.joined()
            with connect(client, "bob") as bob:
                bob.joined()
                alice.wait_for(TOPIC, {"alice", "bob"})
                (old,) = alice.views[TOPIC]["bob"]["metas"]
            portal.call(until, lambda: presence.tracker_stats().leaves_held == 1, "bob's leave")
            with connect(client, "bob") as bob:  # the page reloads: a new socket, a new channel
                bob.joined()
                diff = alice.diff()  # no leave alone first: the leave and the join are one diff
                (new,) = presence.list(TOPIC)["bob"]["metas"]
                assert diff == {
                    "joins": {"bob": {"metas": [new]}},
                    "leaves": {"bob": {"metas": [old]}},
                }
            portal.call(until, lambda: presence.tracker_stats().leaves_held == 1, "bob's leave")
            # bob is held: still listed, as the channels were shown him. A channel joining now
            # starts from that list, and gets his leave with everyone else.
            assert presence.list(TOPIC).keys() == {"alice", "bob"}
            with connect(client, "carol") as carol:
                assert carol.joined().keys() == {"alice", "bob", "carol"}
                assert alice.diff()["joins"].keys() == {"carol"}
                carol.diff()  # her own join
                # Ending the grace period (here by turning it off) delivers the held leave.
                portal.call(presence.configure_topic, TOPIC, TopicOptions())
                for peer in (alice, carol):
                    assert peer.diff() == {"joins": {}, "leaves": {"bob": {"metas": [new]}}}
                    assert set(peer.views[TOPIC]) == {"alice", "carol"}
                assert presence.list(TOPIC).keys() == {"alice", "carol"}

    serve(app, scenario)


@pytest.mark.parametrize(
    "hook",
    [
        lambda topic: "large",
        lambda topic: {"large_room": True},
        lambda topic: 1 / 0,
    ],
    ids=["a-str", "a-dict", "raises"],
)
def test_a_topic_options_hook_that_fails_crashes_the_join(hook: Callable[[str], Any]) -> None:
    app = make_app(topic_options=hook)

    def scenario(client: TestClient) -> None:
        with connect(client, "alice") as alice:
            reply = alice.join()
            assert reply[4] == {"status": "error", "response": {"reason": "join crashed"}}
            assert node_of(app).list(TOPIC) == {}
            assert node_of(app).topic_options(TOPIC) == TopicOptions()
            alice.heartbeat()  # the socket goes on

    serve(app, scenario)


def test_a_large_room_on_two_nodes_batches_what_the_other_node_sends() -> None:
    hub = MemoryHub()
    apps = {
        name: make_app(
            topic_options={TOPIC: LARGE}.get, hub=hub, name=name, config=SLOW_FAILURE_DETECTION
        )
        for name in ("n1", "n2")
    }
    nodes = Nodes(apps)

    def scenario(client: TestClient) -> None:
        n2 = node_of(apps["n2"])
        portal = portal_of(client)
        with connect(client, "alice", node="n1") as alice, connect(client, "bob", node="n2") as bob:
            alice.joined()
            # Whether n2 has shown alice yet when bob joins depends on the ticks; bob's own join
            # waits for n2's. So his counts rise to two, one by one or at once.
            seen = [join_counting(bob)]
            while seen[-1] != counts(2, 2):
                seen.append(occupancy(bob))
            assert seen in (
                [counts(0, 0), counts(1, 1), counts(2, 2)],
                [counts(0, 0), counts(2, 2)],
                [counts(1, 1), counts(2, 2)],
            )
            alice.wait_for(TOPIC, {"alice", "bob"})
            keys = [f"x{index}" for index in range(20)]
            assert n2.topic_options(TOPIC) == LARGE  # set at bob's join, an occupancy one
            portal.call(crowd, n2, *keys)  # one delta from n2, one batch on n1
            diff = alice.diff()
            assert diff["joins"].keys() == set(keys)
            assert occupancy(bob) == counts(22, 22)
            portal.call(disperse, n2, *keys)
            assert alice.diff()["leaves"].keys() == set(keys)
            assert set(alice.views[TOPIC]) == {"alice", "bob"}
            assert occupancy(bob) == counts(2, 2)

    serve(nodes, scenario)
