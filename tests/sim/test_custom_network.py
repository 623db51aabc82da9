"""A user's own network model plugs into the simulation (the example of docs/testing.rst)."""

from __future__ import annotations

import random

from presence_adapters.simulation import Fault, NetworkModel, Scenario, Simulation
from presence_core import Message


class TwoRegions(NetworkModel):
    """Fast inside a region, slow and (unless calm) a little lossy between regions."""

    max_latency = 0.15

    def __init__(self, lossy: bool = True) -> None:
        self.lossy = lossy
        self.planned: list[tuple[str, str, str]] = []

    def region(self, node: str) -> str:
        return "eu" if node in ("n0", "n1") else "us"

    def plan(
        self, src: str, dst: str, message: Message, now: float, rng: random.Random
    ) -> list[float]:
        self.planned.append((src, dst, type(message).__name__))
        if self.region(src) == self.region(dst):
            return [rng.uniform(0.001, 0.005)]
        if self.lossy and rng.random() < 0.02:
            return []
        return [rng.uniform(0.08, 0.15)]

    def calm(self) -> NetworkModel:
        return TwoRegions(lossy=False)


NODES = ("n0", "n1", "n2", "n3")


def test_a_custom_model_carries_the_cluster_to_convergence() -> None:
    network = TwoRegions()
    result = Simulation(Scenario(nodes=NODES, seed=7, duration=30.0, network=network)).run()
    assert result.ok, result.violations
    # The model really was asked, about links across and within regions.
    links = {(src, dst) for src, dst, _ in network.planned}
    assert ("n0", "n2") in links
    assert ("n0", "n1") in links
    assert {kind for _, _, kind in network.planned} >= {"Heartbeat"}


def test_a_custom_model_survives_a_region_split() -> None:
    faults = (
        Fault(at=10.0, kind="partition", nodes=("n0", "n1"), others=("n2", "n3")),
        Fault(at=20.0, kind="heal"),
    )
    scenario = Scenario(nodes=NODES, seed=3, duration=35.0, network=TwoRegions(), faults=faults)
    result = Simulation(scenario).run()
    assert result.ok, result.violations
    assert result.metrics.worst_convergence is not None


def test_a_model_that_loses_everything_across_regions_is_caught() -> None:
    class Severed(TwoRegions):
        def plan(
            self, src: str, dst: str, message: Message, now: float, rng: random.Random
        ) -> list[float]:
            if self.region(src) != self.region(dst):
                return []
            return [0.001]

        def calm(self) -> NetworkModel:
            return Severed()

    result = Simulation(Scenario(nodes=NODES, seed=1, duration=20.0, network=Severed())).run()
    assert not result.ok
    assert {v.kind for v in result.violations} & {"convergence", "missing_presence"}
