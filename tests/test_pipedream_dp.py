"""pipedream-dp: exact small cases of the downset DP, and within 5% of exhaustive."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import chain, cluster, random_dag
from test_baselines import branchy_dag, predicted

import agents
from agents.pipedream_dp import (
    StageCosts,
    chain_stages,
    downset_states,
    neighbour_chains,
    prefix_states,
    solve_chain,
)
from pipeenv.cluster import Cluster, Link, load_cluster
from pipeenv.graph import Node, OperatorGraph
from pipeenv.simulator import simulate

FAST_LINK = Link(1e30, 0.0)


def two_branches() -> OperatorGraph:
    """s -> a1 -> a2 -> t and s -> b1 -> b2 -> t, listed interleaved (s, a1, b1, a2, b2, t).

    a1 and b1 output 1e11 bytes, so only a cut after a whole branch is cheap; s is heavier than
    t, so putting branch a (not b) with s balances best: {s, a1, a2} | {b1, b2, t}. That set is
    not a prefix of the canonical order s, a1, b1, a2, b2, t.
    """
    cost = {"s": 1.5, "a1": 1.0, "b1": 2.0, "a2": 1.0, "b2": 2.0, "t": 0.5}
    out = {"s": 1.0, "a1": 1e11, "b1": 1e11, "a2": 1.0, "b2": 1.0, "t": 1.0}
    nodes = [Node(n, "op", c, c, out[n], 0.0) for n, c in cost.items()]
    edges = [("s", "a1"), ("a1", "a2"), ("a2", "t"), ("s", "b1"), ("b1", "b2"), ("b2", "t")]
    return OperatorGraph("two-branches", nodes, edges, microbatch_size=1)


def test_chain_exact():
    graph = chain([1, 2, 3, 4, 5, 6])
    plan = agents.make("pipedream-dp").plan(graph, cluster([1, 1]), num_stages=2, microbatches=8)
    assert plan.stages(graph).tolist() == [0, 0, 0, 0, 1, 1]


def test_dp_splits_parallel_branches_where_prefixes_cannot():
    graph = two_branches()
    devices = cluster([1, 1], intra=Link(1e9, 0.0))
    plan = agents.make("pipedream-dp").plan(graph, devices, num_stages=2, microbatches=4)
    assert plan.stage_of == {"s": 0, "a1": 0, "a2": 0, "b1": 1, "b2": 1, "t": 1}
    assert plan.agent is not None and plan.agent["states"] == "downsets"
    contiguous = agents.make("balanced-time").plan(graph, devices, num_stages=2, microbatches=4)
    assert predicted(plan)["iteration_s"] < predicted(contiguous)["iteration_s"] / 10


def test_dp_value_is_the_slowest_stage_per_iteration():
    graph = two_branches()
    states, _ = downset_states(graph, max_downsets=100)
    devices = cluster([1, 1], intra=Link(1e9, 0.0))
    costs = StageCosts.of(devices, (0, 1), 1, "1f1b", 4)
    value, chain_found = solve_chain(states, costs, microbatches=4, replicas=1)
    # stage 1 = b1, b2, t: 4 microbatches x (2 + 2 + 0.5) x 2 (forward and backward) seconds.
    assert value == pytest.approx(4 * 4.5 * 2)
    assert chain_found is not None
    assert chain_stages(states, chain_found).tolist() == [0, 0, 1, 0, 1, 1]


def test_memory_rule_moves_the_cut():
    # Nodes 0 and 1 hold 10 parameter bytes each: 4 x 20 = 80 > 50 bytes of memory, so the
    # balanced cut [0, 0, 1, 1] is out of memory and the DP takes [0, 1, 1, 1].
    nodes = [Node(f"n{i}", "op", 1.0, 1.0, 0.0, p, 0.0) for i, p in enumerate([10, 10, 0, 0])]
    graph = OperatorGraph(
        "mem", nodes, [(f"n{i}", f"n{i + 1}") for i in range(3)], microbatch_size=1
    )
    devices = cluster([1, 1], memory=50.0)
    plan = agents.make("pipedream-dp").plan(graph, devices, num_stages=2, microbatches=4)
    assert plan.stages(graph).tolist() == [0, 1, 1, 1]
    assert predicted(plan)["feasible"] is True
    time_only = agents.make("balanced-time").plan(graph, devices, num_stages=2, microbatches=4)
    assert predicted(time_only)["feasible"] is False


def test_no_feasible_plan_still_returns_the_best_infeasible_one():
    graph = chain([1, 1, 1, 1], param_bytes=100.0)
    plan = agents.make("pipedream-dp").plan(
        graph, cluster([1, 1], memory=10.0), num_stages=2, microbatches=2
    )
    assert predicted(plan)["feasible"] is False
    plan.validate(graph, cluster([1, 1]))


@pytest.mark.parametrize(("bandwidth", "replicas"), [(1e30, 2), (1.0, 1)])
def test_data_parallel_degree_follows_the_allreduce_cost(bandwidth, replicas):
    graph = chain([1, 1, 1, 1], param_bytes=1e3)
    devices = cluster([1] * 4, intra=Link(bandwidth, 0.0))
    plan = agents.make("pipedream-dp").plan(graph, devices, num_stages=2, microbatches=4)
    assert plan.data_parallel == replicas


def test_prefix_states_are_a_chain():
    states = prefix_states(chain([1, 1, 1]))
    assert states.count == 4
    assert states.subset.tolist() == [
        [False, False, False, False],
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
    ]
    assert neighbour_chains(states, [0, 1, 3]) == [[0, 2, 3]]
    assert neighbour_chains(states, [0, 2, 3]) == [[0, 1, 3]]


def test_bounded_state_space_on_a_wide_graph():
    # 10 parallel branches of 2 nodes between a source and a sink: 3^10 downsets.
    nodes = [Node("src", "op", 0.1, 0.1, 1.0, 0.0), Node("dst", "op", 0.1, 0.1, 1.0, 0.0)]
    edges = []
    for b in range(10):
        nodes += [
            Node(f"b{b}x", "op", 1.0, 1.0, 1.0, 0.0),
            Node(f"b{b}y", "op", 1.0, 1.0, 1.0, 0.0),
        ]
        edges += [("src", f"b{b}x"), (f"b{b}x", f"b{b}y"), (f"b{b}y", "dst")]
    graph = OperatorGraph("wide", nodes, edges, microbatch_size=1)
    plan = agents.make("pipedream-dp", max_downsets=200).plan(
        graph, cluster([1] * 4), num_stages=4, microbatches=8
    )
    plan.validate(graph, cluster([1] * 4))
    assert plan.agent is not None
    assert plan.agent["downsets"] <= 200 and plan.agent["dp_nodes"] < graph.num_nodes
    balanced = agents.make("balanced-time").plan(
        graph, cluster([1] * 4), num_stages=4, microbatches=8
    )
    assert (
        predicted(plan)["throughput_samples_per_s"]
        >= predicted(balanced)["throughput_samples_per_s"]
    )


CLUSTERS = {
    "homogeneous": cluster([1.0] * 4, intra=Link(2e3, 1e-3)),
    "mixed": cluster([1.0, 0.5, 1.0, 0.5], nodes=[0, 0, 1, 1], intra=Link(5e3, 0.0),
                     inter=Link(1e3, 1e-2), memory=4e4),
}  # fmt: skip


@pytest.mark.parametrize("seed", range(40))
def small_case(seed: int) -> tuple[OperatorGraph, Cluster, dict[str, Any]]:
    """Seeded small cases: a chain, a DAG with parallel branches, or a chain with skip edges;
    2 or 3 stages; either schedule; homogeneous or mixed devices; R given or chosen."""
    rng = np.random.default_rng(seed)
    kind = seed % 3
    if kind == 0:
        graph = chain(
            rng.uniform(0.1, 2.0, 10).tolist(),
            rng.uniform(0.1, 4.0, 10).tolist(),
            output_bytes=float(rng.integers(1, 1000)),
            param_bytes=float(rng.integers(0, 1000)),
        )
    elif kind == 1:
        graph = branchy_dag(rng, 8)
    else:
        graph = random_dag(rng, 9, extra_edges=2)
    num_stages = 2 + seed % 2
    request: dict[str, Any] = {
        "num_stages": num_stages,
        "microbatches": int(rng.integers(2, 9)),
        "schedule": ("gpipe", "1f1b")[(seed // 3) % 2],
        "data_parallel": None if num_stages == 2 and seed % 4 < 2 else 1,
    }
    return graph, CLUSTERS["mixed" if seed % 5 < 2 else "homogeneous"], request


@pytest.mark.parametrize("seed", range(48))
def test_within_five_percent_of_exhaustive(seed):
    graph, devices, request = small_case(seed)
    exact = agents.make("exhaustive").plan(graph, devices, **request)
    found = agents.make("pipedream-dp").plan(graph, devices, **request)
    found.validate(graph, devices)
    best, ours = simulate(graph, devices, exact), simulate(graph, devices, found)
    assert ours.feasible == best.feasible
    assert ours.throughput_samples_per_s >= 0.95 * best.throughput_samples_per_s


def test_pipedream_dp_on_zoo_models_beats_the_contiguous_baselines():
    zoo = pytest.importorskip("pipeenv.zoo")
    devices = load_cluster("4xA100-nvlink")
    for model in ("resnet50", "inception_v3"):
        graph = zoo.load(model)
        plan = agents.make("pipedream-dp").plan(graph, devices, num_stages=4, microbatches=8)
        plan.validate(graph, devices)
        for name in ("uniform-layers", "balanced-params", "balanced-time"):
            other = agents.make(name).plan(graph, devices, num_stages=4, microbatches=8)
            assert (
                predicted(plan)["throughput_samples_per_s"]
                >= predicted(other)["throughput_samples_per_s"]
            )
