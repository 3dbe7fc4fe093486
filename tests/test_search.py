"""exhaustive and local-search: exact enumeration counts, optimality, and the annealer's rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import chain, cluster, random_dag
from test_baselines import branchy_dag, predicted

import agents
from agents.search import FAST_BASELINES, valid_stage_arrays
from pipeenv.cluster import Link
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.simulator import simulate


def diamond() -> OperatorGraph:
    nodes = [Node(n, "op", 1.0, 1.0, 1.0, 0.0) for n in "abcd"]
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    return OperatorGraph("diamond", nodes, edges, microbatch_size=1)


def antichain(n: int) -> OperatorGraph:
    nodes = [Node(f"n{i}", "op", 1.0, 1.0, 1.0, 0.0) for i in range(n)]
    return OperatorGraph("antichain", nodes, [], microbatch_size=1)


@pytest.mark.parametrize(
    ("graph", "num_stages", "count"),
    [
        (chain([1] * 5), 2, 4),  # a cut after any of the first 4 nodes
        (chain([1] * 5), 5, 1),
        (chain([1] * 6), 3, 10),  # C(5, 2)
        (diamond(), 2, 4),  # first stage {a}, {a,b}, {a,c} or {a,b,c}
        (antichain(3), 2, 6),  # surjections of 3 nodes onto 2 stages
        (antichain(4), 3, 36),
    ],
)
def test_valid_stage_arrays_counts(graph, num_stages, count):
    arrays = valid_stage_arrays(graph, num_stages, 10_000)
    assert len(arrays) == count
    assert len({tuple(row) for row in arrays.tolist()}) == count
    a = graph.arrays
    for row in arrays:
        assert set(row.tolist()) == set(range(num_stages))
        assert np.all(row[a.edge_src] <= row[a.edge_dst])


def test_exhaustive_exact_chain():
    graph = chain([1, 2, 3, 4, 5, 6])
    plan = agents.make("exhaustive").plan(graph, cluster([1, 1]), num_stages=2, microbatches=8)
    assert plan.stages(graph).tolist() == [0, 0, 0, 0, 1, 1]
    assert plan.agent is not None and plan.agent["plans_simulated"] == 5


def test_exhaustive_refuses_too_many_plans():
    with pytest.raises(PipeenvError, match="more than 100 stage assignments"):
        agents.make("exhaustive", max_plans=100).plan(
            antichain(8), cluster([1] * 4), num_stages=4, microbatches=2
        )


@pytest.mark.parametrize("seed", range(8))
def test_exhaustive_is_at_least_as_good_as_every_agent(seed):
    rng = np.random.default_rng(seed)
    graph = branchy_dag(rng, 7) if seed % 2 else random_dag(rng, 8)
    devices = cluster([1.0, 0.5, 1.0, 0.5], nodes=[0, 0, 1, 1], intra=Link(1e4, 0.0),
                      inter=Link(1e3, 1e-3))  # fmt: skip
    request: dict[str, Any] = {
        "num_stages": 2,
        "microbatches": 4,
        "schedule": ("gpipe", "1f1b")[seed % 2],
    }
    best = simulate(graph, devices, agents.make("exhaustive").plan(graph, devices, **request))
    for name in ("uniform-layers", "balanced-params", "balanced-time", "random", "pipedream-dp"):
        other = simulate(graph, devices, agents.make(name).plan(graph, devices, **request))
        assert best.throughput_samples_per_s >= other.throughput_samples_per_s * (1 - 1e-12)


@pytest.mark.parametrize("start", [*FAST_BASELINES, "best"])
def test_local_search_is_never_worse_than_its_start(start):
    graph = random_dag(np.random.default_rng(5), 30, extra_edges=8)
    devices = cluster([1.0] * 4, intra=Link(1e5, 1e-4))
    request: dict[str, Any] = {"num_stages": 4, "microbatches": 6}
    plan = agents.make("local-search", start=start, iterations=300).plan(graph, devices, **request)
    plan.validate(graph, devices)
    names = FAST_BASELINES if start == "best" else (start,)
    for name in names:
        begin = agents.make(name).plan(graph, devices, **request)
        assert (
            predicted(plan)["throughput_samples_per_s"]
            >= predicted(begin)["throughput_samples_per_s"]
        )
    assert plan.agent is not None and plan.agent["started_from"] in names


def test_local_search_reaches_the_optimum_of_a_small_chain():
    graph = chain([9, 1, 1, 1, 1, 1, 1, 8, 2, 2])
    devices = cluster([1.0] * 3)
    request: dict[str, Any] = {"num_stages": 3, "microbatches": 8}
    start = agents.make("uniform-layers").plan(graph, devices, **request)
    found = agents.make("local-search", start="uniform-layers", iterations=500).plan(
        graph, devices, **request
    )
    exact = agents.make("exhaustive").plan(graph, devices, **request)
    assert (
        predicted(start)["throughput_samples_per_s"] < predicted(found)["throughput_samples_per_s"]
    )
    assert predicted(found)["throughput_samples_per_s"] == pytest.approx(
        predicted(exact)["throughput_samples_per_s"]
    )


def test_local_search_is_reproducible_from_its_seed():
    graph = branchy_dag(np.random.default_rng(2), 40)
    devices = cluster([1.0, 1.0, 0.5, 0.5])
    runs = [
        agents.make("local-search", seed=seed, iterations=200, start="uniform-layers").plan(
            graph, devices, num_stages=4, microbatches=4
        )
        for seed in (7, 7)
    ]
    assert runs[0].stage_of == runs[1].stage_of


def test_search_agents_are_valid_on_a_zoo_model():
    zoo = pytest.importorskip("pipeenv.zoo")
    from pipeenv.cluster import load_cluster

    graph, devices = zoo.load("tiny-gpt"), load_cluster("hetero-4xA100-4xV100")
    plan = agents.make("local-search", iterations=200).plan(
        graph, devices, num_stages=4, microbatches=8
    )
    plan.validate(graph, devices)
