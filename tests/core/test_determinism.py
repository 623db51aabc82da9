"""Determinism: the same script with the same seeds gives the same outputs, in any process.

STYLE §3.6: the core draws randomness only from the injected rng and sorts whatever it iterates
to produce outputs, so a trace (every event and every message, with times) is a function of the
script and the seeds alone. Run the scenario twice in this process, then in fresh interpreters
under different ``PYTHONHASHSEED`` values: ``str`` hashing (and with it the iteration order of
sets and frozensets of names, topics and keys) changes, the digest must not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from helpers import Cluster, stdout_by_hash_seed

NAMES = ["alpha", "bravo", "charlie", "delta", "echo"]
TOPICS = [f"room:{word}" for word in ("kitchen", "attic", "lobby", "cellar", "garden", "hall")]


def scenario_trace(seed: int) -> list[str]:
    """Run a scripted scenario on a 5-node cluster; return the repr of every output, in order."""
    cluster = Cluster(NAMES, seed=seed)
    trace: list[str] = []

    def step(label: str) -> None:
        trace.append(f"-- {label} @ {cluster.now!r}")
        for name, events in cluster.events().items():
            trace.extend(f"{name}: {event!r}" for event in events)
        for name, tracker in cluster.trackers.items():
            trace.append(f"{name} next_deadline={tracker.next_deadline()!r}")

    cluster.advance(0.5)
    step("up")
    for i, name in enumerate(NAMES):
        for j, topic in enumerate(TOPICS):
            if (i + j) % 3:
                cluster.track(name, f"conn-{j % 4}", topic, f"user-{(i * 7 + j) % 5}", {"i": i})
    cluster.advance(0.35)
    step("tracked")
    for i, name in enumerate(NAMES[:3]):
        key = f"user-{(i * 7 + 1) % 5}"
        if cluster[name].state.get("conn-1", TOPICS[1], key) is not None:
            cluster[name].update(
                conn="conn-1",
                topic=TOPICS[1],
                key=key,
                meta=lambda m: {**m, "status": "away"},
                now=cluster.now,
            )
    cluster.advance(0.25)
    step("updated")
    # a partition {alpha, bravo} | {charlie, delta, echo}, longer than the down period
    for left in NAMES[:2]:
        for right in NAMES[2:]:
            cluster.cut.update({(left, right), (right, left)})
    cluster.track("alpha", "conn-9", TOPICS[0], "partitioned", {})
    cluster["delta"].untrack_conn(conn="conn-2", now=cluster.now)
    cluster.advance(0.9)
    step("partitioned")
    cluster.cut.clear()
    cluster.advance(1.0)
    step("healed")
    cluster.kill("charlie")
    cluster.advance(0.2)
    cluster.restart("charlie")
    cluster.track("charlie", "conn-0", TOPICS[2], "reborn", {"back": True})
    cluster.advance(0.6)
    step("restarted")
    cluster["bravo"].graceful_permdown(now=cluster.now)
    cluster.pump()
    cluster.mute.add("echo")
    cluster.advance(2.0)
    step("permdowns")
    for name, tracker in cluster.trackers.items():
        trace.append(f"{name} lists {[tracker.presences(topic) for topic in TOPICS]!r}")
        trace.append(f"{name} replicas {tracker.replicas()!r}")
    trace.extend(repr(sent) for sent in cluster.sent)
    return trace


def digest(trace: list[str]) -> str:
    return hashlib.sha256("\n".join(trace).encode()).hexdigest()


def test_the_scenario_exercises_the_protocol() -> None:
    trace = scenario_trace(0)
    text = "\n".join(trace)
    for needle in ("ReplicaUp", "ReplicaDown", "ReplicaPermdown", "PresenceDiff"):
        assert needle in text
    assert "TransferAck" in text
    assert "GracefulPermdown" in text
    assert "phx_ref_prev" in text
    assert len(trace) > 500


def test_same_script_and_seeds_give_identical_outputs() -> None:
    first = scenario_trace(3)
    second = scenario_trace(3)
    assert first == second
    assert digest(first) == digest(second)


def test_different_seeds_give_different_timings() -> None:
    assert digest(scenario_trace(0)) != digest(scenario_trace(1))


def test_outputs_do_not_depend_on_the_hash_seed() -> None:
    here = Path(__file__).resolve()
    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(here.parents[1])!r})\n"
        f"namespace = runpy.run_path({str(here)!r})\n"
        "print(namespace['digest'](namespace['scenario_trace'](2)))\n"
    )
    digests = list(stdout_by_hash_seed(code, ("0", "12345")).values())
    assert digests[0] == digests[1] == digest(scenario_trace(2))
    assert len(digests[0]) == 64
