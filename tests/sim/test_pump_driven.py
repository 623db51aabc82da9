"""The simulator is a driver: every node runs in a Pump and what travels is encoded bytes.

So the codec is exercised by every run: the bytes trackers receive are what their peers' pumps
encoded, the metrics count those bytes, a node that cannot decode what it is sent is a
``malformed`` violation, and runs stay a pure function of their scenario.
"""

from __future__ import annotations

import json
import random
from typing import Any

import attrs

from helpers import stdout_by_hash_seed
from presence_adapters.simulation import (
    Fault,
    FaultyNetwork,
    Scenario,
    SimParams,
    SimResult,
    Simulation,
    TrackerFactory,
    Workload,
    run,
)
from presence_core import (
    Message,
    Outbound,
    ReplicaRef,
    Tracker,
    TrackerConfig,
    decode_message,
    encode_message,
)

NODES = ("n0", "n1", "n2")


def _scenario(**changes: Any) -> Scenario:
    base = Scenario(nodes=NODES, seed=9, duration=15.0, workload=Workload(rate=6.0))
    return attrs.evolve(base, **changes)


def _kinds(result: SimResult) -> set[str]:
    return {v.kind for v in result.violations}


# ----------------------------------------------------------------------------- bytes on the wire


@attrs.define
class _Wiretap:
    """What the trackers of a run were handed and what they produced, across incarnations."""

    received: list[object] = attrs.Factory(list)
    produced: list[Message] = attrs.Factory(list)

    def factory(self) -> TrackerFactory:
        tap = self

        class Tapped(Tracker):
            def receive(
                self, message: Message | bytes | bytearray | memoryview, *, now: float
            ) -> None:
                tap.received.append(message)
                super().receive(message, now=now)

            def messages_to_send(self) -> list[Outbound]:
                outbox = super().messages_to_send()
                tap.produced.extend(out.message for out in outbox)
                return outbox

        def build(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
            return Tapped(config=config, replica=replica, rng=rng)

        return build


def test_trackers_receive_the_bytes_their_peers_pumps_encoded() -> None:
    tap = _Wiretap()
    faults = [
        Fault(at=4.0, kind="crash", nodes=["n1"]),
        Fault(at=6.0, kind="restart", nodes=["n1"]),
        Fault(at=8.0, kind="pause", nodes=["n2"]),
        Fault(at=9.0, kind="resume", nodes=["n2"]),
    ]
    network = FaultyNetwork(loss=0.05, duplicate=0.1, reorder=0.1)
    result = Simulation(
        _scenario(faults=faults, network=network), tracker_factory=tap.factory(), keep_trace=True
    ).run()
    assert result.ok, result.violations
    metrics = result.metrics

    # Every delivery is bytes (never a message object handed across), and each decodes to a
    # message some tracker produced.
    assert tap.received
    assert all(type(data) is bytes for data in tap.received)
    produced = {encode_message(message) for message in tap.produced}
    assert {bytes(data) for data in tap.received if isinstance(data, bytes)} <= produced
    assert {type(decode_message(data)).__name__ for data in produced} >= {
        "Heartbeat",
        "TransferRequest",
        "TransferAck",
    }

    # The metrics count those same bytes, over every incarnation (n1 had two).
    received = sum(len(data) for data in tap.received if isinstance(data, bytes))
    assert metrics.received_bytes == received
    assert metrics.encoded_bytes == sum(len(encode_message(m)) for m in tap.produced)
    # A broadcast is encoded once but sent to every peer.
    assert sum(metrics.bytes.values()) > metrics.encoded_bytes
    assert metrics.malformed == 0
    assert metrics.unsendable == 0

    # Deliveries queued while n2 was paused are bytes too, fed in on resume.
    assert any(line.endswith("(queued)") and "->n2 " in line for line in result.trace)


def test_trace_lines_carry_the_encoded_size() -> None:
    result = Simulation(_scenario(duration=5.0), keep_trace=True).run()
    received = [line for line in result.trace if " recv " in line]
    assert received
    assert all(line.rsplit(" ", 1)[1].endswith("B") for line in received)
    sizes = [int(line.rsplit(" ", 1)[1][:-1]) for line in received]
    assert sum(sizes) == result.metrics.received_bytes


# ----------------------------------------------------------------------------- broken codecs


class _OffByOne(Tracker):
    """Broken glue: drops the last byte of every message it is handed (a framing bug)."""

    def receive(self, message: Message | bytes | bytearray | memoryview, *, now: float) -> None:
        if isinstance(message, bytes):
            message = message[:-1]
        super().receive(message, now=now)


def _on(name: str, build: TrackerFactory) -> TrackerFactory:
    """``build`` for node ``name``, plain trackers for the others."""

    def factory(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        if replica.name == name:
            return build(replica, config, rng)
        return Tracker(config=config, replica=replica, rng=rng)

    return factory


def test_bytes_a_node_cannot_decode_are_a_malformed_violation() -> None:
    def broken(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        return _OffByOne(config=config, replica=replica, rng=rng)

    result = Simulation(_scenario(), tracker_factory=_on("n2", broken)).run()
    malformed = [v for v in result.violations if v.kind == "malformed"]
    assert malformed
    assert {v.node for v in malformed} == {"n2"}
    assert "not valid JSON" not in malformed[0].detail  # the bytes were fine: n2 broke them
    assert "receiving tracker itself refused them" in malformed[0].detail
    assert result.metrics.malformed >= len(malformed)
    # n2 hears nothing, so the others' presences never reach it
    assert "missing_presence" in _kinds(result)


def test_a_codec_limit_mismatch_is_a_malformed_violation() -> None:
    """n1 decodes with a 700-byte limit its peers do not share: their larger messages bounce."""

    def small(replica: ReplicaRef, config: TrackerConfig, rng: random.Random) -> Tracker:
        config = attrs.evolve(
            config,
            max_message_bytes=700,
            max_meta_bytes=100,
            max_conn_bytes=10,
            max_topic_bytes=10,
            max_key_bytes=10,
        )
        return Tracker(config=config, replica=replica, rng=rng)

    scenario = _scenario(workload=Workload(rate=60.0))  # deltas of several presences
    result = Simulation(scenario, tracker_factory=_on("n1", small)).run()
    malformed = [v for v in result.violations if v.kind == "malformed"]
    assert malformed
    assert {v.node for v in malformed} == {"n1"}
    assert "over max_bytes=700" in malformed[0].detail
    assert result.metrics.malformed > 0
    # n1 itself splits what it sends to fit its own limit: nothing it sends bounces
    assert result.metrics.unsendable == 0

    clean = Simulation(scenario).run()
    assert clean.ok, clean.violations
    assert clean.metrics.malformed == clean.metrics.unsendable == 0


# ----------------------------------------------------------------------------- determinism

_PARAMS = SimParams(seed=8, nodes=4, duration=15.0, faults="all")


def _fingerprint(result: SimResult) -> str:
    return json.dumps({"digest": result.digest, "metrics": result.metrics.to_json()})


def test_two_runs_of_a_scenario_are_identical() -> None:
    first = run(_PARAMS, keep_trace=True)
    second = run(_PARAMS, keep_trace=True)
    assert first.trace == second.trace
    assert _fingerprint(first) == _fingerprint(second)
    assert first.metrics.encoded_bytes > 0
    assert run(attrs.evolve(_PARAMS, seed=9)).digest != first.digest


_FINGERPRINT_SCRIPT = """
import json
from presence_adapters.simulation import SimParams, run
result = run(SimParams(seed=8, nodes=4, duration=15.0, faults="all"))
print(json.dumps({"digest": result.digest, "metrics": result.metrics.to_json()}))
"""


def test_runs_do_not_depend_on_the_hash_seed() -> None:
    expected = _fingerprint(run(_PARAMS))
    outputs = stdout_by_hash_seed(_FINGERPRINT_SCRIPT, ("0", "4242"))
    assert outputs == {"0": expected, "4242": expected}
