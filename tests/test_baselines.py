"""Baselines: exact small partitions, and valid plans on random graphs and zoo models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import chain, cluster, random_dag

import agents
from agents.baselines import random_topological_order, uniform_sizes
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.partition_reference import balanced_contiguous
from pipeenv.plan import Plan

PIPELINE_BASELINES = ["uniform-layers", "balanced-params", "balanced-time", "random"]


def branchy_dag(rng: np.random.Generator, num_nodes: int) -> OperatorGraph:
    """A DAG with real parallel branches: each node feeds from one or two of the last 4."""
    nodes = [
        Node(
            f"v{i}",
            "op",
            float(rng.uniform(0.1, 2.0)),
            float(rng.uniform(0.1, 4.0)),
            float(rng.integers(1, 1000)),
            float(rng.integers(0, 1000)),
        )
        for i in range(num_nodes)
    ]
    edges = set()
    for i in range(1, num_nodes):
        for _ in range(int(rng.integers(1, 3))):
            edges.add((int(rng.integers(max(0, i - 4), i)), i))
    return OperatorGraph(
        "branchy", nodes, [(f"v{a}", f"v{b}") for a, b in sorted(edges)], microbatch_size=2
    )


def stages_of(plan: Plan, graph: OperatorGraph) -> list[int]:
    return plan.stages(graph).tolist()


def predicted(plan: Plan) -> dict[str, Any]:
    """The plan's simulated figures (agents always fill them)."""
    assert plan.predicted is not None
    return plan.predicted


def test_uniform_sizes_follow_deepspeed():
    assert uniform_sizes(10, 4) == [3, 3, 2, 2]
    assert uniform_sizes(8, 4) == [2, 2, 2, 2]
    assert uniform_sizes(3, 3) == [1, 1, 1]


def test_block_partition_torchgpipe_case():
    # torchgpipe: solve([1, 2, 3, 4, 5, 6], partitions=2) == [[1, 2, 3, 4], [5, 6]]
    assert balanced_contiguous([1, 2, 3, 4, 5, 6], 2).tolist() == [0, 0, 0, 0, 1, 1]


def test_uniform_layers_exact():
    graph = chain([5, 1, 1, 1, 1, 1, 1, 1, 1, 9])
    plan = agents.make("uniform-layers").plan(graph, cluster([1] * 4), num_stages=4, microbatches=2)
    assert stages_of(plan, graph) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]


def test_balanced_time_exact():
    # forward 1..6, backward twice that: weights 3, 6, ..., 18; best cut 30 | 33.
    graph = chain([1, 2, 3, 4, 5, 6])
    plan = agents.make("balanced-time").plan(graph, cluster([1, 1]), num_stages=2, microbatches=4)
    assert stages_of(plan, graph) == [0, 0, 0, 0, 1, 1]


def test_balanced_params_exact():
    nodes = [Node(f"n{i}", "op", 1.0, 1.0, 0.0, float(p)) for i, p in enumerate([4, 1, 1, 1, 1, 4])]
    edges = [(f"n{i}", f"n{i + 1}") for i in range(5)]
    graph = OperatorGraph("params", nodes, edges, microbatch_size=1)
    plan = agents.make("balanced-params").plan(graph, cluster([1, 1]), num_stages=2, microbatches=2)
    assert stages_of(plan, graph) == [0, 0, 0, 1, 1, 1]


def test_baselines_fill_the_cluster_with_replicas_when_not_told():
    graph = chain([1, 1, 1, 1])
    plan = agents.make("balanced-time").plan(graph, cluster([1] * 5), num_stages=2, microbatches=2)
    assert plan.data_parallel == 2
    assert plan.devices == (0, 1, 2, 3)
    told = agents.make("balanced-time").plan(
        graph, cluster([1] * 5), num_stages=2, microbatches=2, data_parallel=1
    )
    assert told.data_parallel == 1 and told.devices == (0, 1)


def test_data_parallel_is_one_stage_on_every_device():
    graph = chain([1, 1, 1])
    plan = agents.make("data-parallel").plan(graph, cluster([1] * 3), num_stages=1, microbatches=2)
    assert (plan.num_stages, plan.data_parallel, plan.devices) == (1, 3, (0, 1, 2))
    assert stages_of(plan, graph) == [0, 0, 0]
    with pytest.raises(PipeenvError, match="num_stages must be 1"):
        agents.make("data-parallel").plan(graph, cluster([1] * 3), num_stages=2, microbatches=2)


def test_random_topological_order_respects_edges():
    rng = np.random.default_rng(0)
    graph = branchy_dag(rng, 30)
    position = np.empty(graph.num_nodes, dtype=np.int64)
    position[random_topological_order(graph, rng)] = np.arange(graph.num_nodes)
    a = graph.arrays
    assert np.all(position[a.edge_src] < position[a.edge_dst])


def test_random_is_reproducible_and_varies_with_the_seed():
    graph, devices = branchy_dag(np.random.default_rng(1), 20), cluster([1] * 4)
    plans = [
        agents.make("random", seed=s).plan(graph, devices, num_stages=3, microbatches=2)
        for s in (0, 0, 1, 2, 3)
    ]
    assert stages_of(plans[0], graph) == stages_of(plans[1], graph)
    assert len({tuple(stages_of(p, graph)) + p.devices for p in plans[1:]}) > 1


@pytest.mark.parametrize("name", PIPELINE_BASELINES)
@pytest.mark.parametrize("seed", range(6))
def test_baselines_are_valid_on_random_graphs(name, seed):
    rng = np.random.default_rng(seed)
    graph = branchy_dag(rng, 25) if seed % 2 else random_dag(rng, 25, extra_edges=6)
    devices = cluster([1.0, 0.5, 1.0, 0.5, 1.0, 1.0], nodes=[0, 0, 0, 1, 1, 1])
    for num_stages in (1, 2, 3, 6):
        plan = agents.make(name).plan(graph, devices, num_stages=num_stages, microbatches=3)
        plan.validate(graph, devices)
        assert plan.num_stages == num_stages
        assert plan.data_parallel == 6 // num_stages


def test_baselines_are_valid_on_zoo_models():
    zoo = pytest.importorskip("pipeenv.zoo")
    from pipeenv.cluster import load_cluster

    devices = load_cluster("8xA100-nvlink")
    for model in ("resnet50", "inception_v3", "gpt2"):
        graph = zoo.load(model)
        for name in PIPELINE_BASELINES:
            plan = agents.make(name).plan(graph, devices, num_stages=4, microbatches=8)
            plan.validate(graph, devices)
        dp = agents.make("data-parallel").plan(graph, devices, num_stages=1, microbatches=8)
        dp.validate(graph, devices)
