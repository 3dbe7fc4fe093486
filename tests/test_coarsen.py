"""Coarsening: DAG kept, costs summed, mapping complete, plans expand to valid plans."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeenv.coarsen import Coarsening, coarsen
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.plan import Plan
from tests.conftest import chain, random_dag


def graph(nodes: list[tuple[str, float]], edges: list[tuple[str, str]]) -> OperatorGraph:
    """Nodes (id, output_bytes) with forward 1, backward 2, params 5, activation 7."""
    return OperatorGraph(
        "g",
        [Node(i, "op", 1.0, 2.0, out, 5.0, 7.0) for i, out in nodes],
        edges,
        microbatch_size=4,
        source="s",
    )


def boundary_bytes(g: OperatorGraph, stages: np.ndarray, num_stages: int) -> list[float]:
    """X_s of SPEC §4: bytes of distinct nodes at or before s with a consumer after s."""
    a = g.arrays
    out = []
    for s in range(num_stages - 1):
        cross = (stages[a.edge_src] <= s) & (stages[a.edge_dst] > s)
        out.append(float(a.output_bytes[np.unique(a.edge_src[cross])].sum()))
    return out


def test_identity_when_small_enough() -> None:
    g = chain([1.0, 2.0, 3.0])
    c = coarsen(g, 3)
    assert c.is_identity and c.graph is g
    assert c.members == {"n0": ("n0",), "n1": ("n1",), "n2": ("n2",)}
    plan = Plan({"n0": 0, "n1": 0, "n2": 1}, num_stages=2, devices=[0, 1])
    assert c.expand_plan(plan).stage_of == plan.stage_of


def test_chain_merges_lightest_links_first() -> None:
    g = chain([1.0] * 6, output_bytes=10.0, param_bytes=3.0)
    c = g.coarsen(3)
    assert c.members == {"n0+1": ("n0", "n1"), "n2+1": ("n2", "n3"), "n4+1": ("n4", "n5")}
    assert c.coarse_of["n3"] == "n2+1"
    assert c.graph.order == ("n0+1", "n2+1", "n4+1")
    assert c.graph.edges == (("n0+1", "n2+1"), ("n2+1", "n4+1"))
    node = c.graph.node("n2+1")
    assert (node.forward_s, node.backward_s, node.param_bytes) == (2.0, 4.0, 6.0)
    assert node.output_bytes == 10.0  # only n3's output leaves the group
    assert node.activation_bytes == 20.0
    assert (c.graph.name, c.graph.microbatch_size) == ("chain", 1)


def test_module_prefix_and_output_rule() -> None:
    g = graph(
        [("blk.x", 10.0), ("blk.y", 20.0), ("out.z", 40.0)],
        [("blk.x", "blk.y"), ("blk.x", "out.z"), ("blk.y", "out.z")],
    )
    c = coarsen(g, 2)
    assert c.members == {"blk.x+1": ("blk.x", "blk.y"), "out.z": ("out.z",)}
    grouped = c.graph.node("blk.x+1")
    assert grouped.output_bytes == 30.0  # both members feed out.z
    assert grouped.extra == {"members": 2, "module": "blk"}
    assert (
        grouped.forward_s,
        grouped.backward_s,
        grouped.param_bytes,
        grouped.activation_bytes,
    ) == (2.0, 4.0, 10.0, 14.0)
    assert c.graph.node("out.z") is g.node("out.z")
    assert c.graph.source == "s" and c.graph.microbatch_size == 4


def test_module_field_wins_over_id() -> None:
    nodes = [
        Node(f"v{i}", "op", 1.0, 1.0, 1.0, 0.0, extra={"module": m})
        for i, m in enumerate(["a.p", "b.q", "b.r", "c.s"])
    ]
    g = OperatorGraph(
        "m", nodes, [("v0", "v1"), ("v0", "v2"), ("v1", "v3"), ("v2", "v3")], microbatch_size=1
    )
    assert coarsen(g, 3).members["v1+1"] == ("v1", "v2")


def test_sink_group_output_is_its_sinks() -> None:
    g = graph([("a", 1.0), ("b", 2.0), ("c", 4.0)], [("a", "b"), ("a", "c")])
    c = coarsen(g, 1)
    (only,) = c.graph.nodes
    assert c.members[only.id] == ("a", "b", "c")
    assert only.output_bytes == 6.0


def test_parallel_branches_merge_adjacent_in_order() -> None:
    # a -> {b, c} -> d: no chain link, no prefix; adjacent merges keep a DAG.
    g = graph(
        [("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0)],
        [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    )
    c = coarsen(g, 2)
    assert c.graph.num_nodes == 2
    assert sorted(c.members.values()) == [("a", "b"), ("c", "d")]


def test_expand_and_restrict_plan() -> None:
    g = chain([1.0] * 6)
    c = g.coarsen(3)
    coarse_plan = Plan(
        {"n0+1": 0, "n2+1": 1, "n4+1": 1},
        num_stages=2,
        devices=[3, 5],
        microbatches=4,
        schedule="gpipe",
        graph_hash=c.graph.graph_hash,
        agent={"name": "x"},
    )
    plan = c.expand_plan(coarse_plan)
    plan.validate(g)
    assert plan.stage_of == {"n0": 0, "n1": 0, "n2": 1, "n3": 1, "n4": 1, "n5": 1}
    assert (plan.devices, plan.microbatches, plan.schedule, plan.agent) == (
        (3, 5),
        4,
        "gpipe",
        {"name": "x"},
    )
    assert plan.graph_hash == g.graph_hash
    back = c.restrict_plan(plan)
    assert back.stage_of == coarse_plan.stage_of and back.graph_hash == c.graph.graph_hash


def test_restrict_refuses_a_split_group() -> None:
    c = chain([1.0] * 6).coarsen(3)
    plan = Plan({f"n{i}": int(i >= 1) for i in range(6)}, num_stages=2, devices=[0, 1])
    with pytest.raises(
        PipeenvError,
        match="group 'n0\\+1' is split by the plan: member 'n0' on stage 0, member 'n1' on stage 1",
    ):
        c.restrict_plan(plan)


def test_expand_needs_every_coarse_node() -> None:
    c = chain([1.0] * 6).coarsen(3)
    with pytest.raises(PipeenvError, match="node 'n4\\+1' has no stage"):
        c.expand_plan(Plan({"n0+1": 0, "n2+1": 0}, num_stages=1, devices=[0]))


@pytest.mark.parametrize("bad", [0, -3, True])
def test_bad_max_nodes(bad: int) -> None:
    with pytest.raises(PipeenvError, match="max_nodes must be an integer >= 1"):
        coarsen(chain([1.0, 1.0]), bad)


def check(g: OperatorGraph, c: Coarsening, max_nodes: int) -> None:
    assert c.graph.num_nodes == min(max_nodes, g.num_nodes)
    assert set(c.coarse_of) == set(g.order)
    assert sorted(m for ms in c.members.values() for m in ms) == sorted(g.order)
    assert all(c.coarse_of[m] == cid for cid, ms in c.members.items() for m in ms)
    np.testing.assert_allclose(
        c.graph.arrays.costs[[0, 1, 3, 4]].sum(axis=1), g.arrays.costs[[0, 1, 3, 4]].sum(axis=1)
    )
    coarse_edges = set(c.graph.edges)
    for u, v in g.edges:
        cu, cv = c.coarse_of[u], c.coarse_of[v]
        assert cu == cv or (cu, cv) in coarse_edges
    for cid, ms in c.members.items():
        succ = {v for u, v in g.edges if u in ms and v not in ms}
        leaving = sum(
            g.node(u).output_bytes for u in ms if any(x == u and y not in ms for x, y in g.edges)
        )
        if succ:
            assert c.graph.node(cid).output_bytes == pytest.approx(leaving)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 40),
    extra=st.integers(0, 30),
    frac=st.floats(0.05, 1.0),
)
def test_random_dags(seed: int, n: int, extra: int, frac: float) -> None:
    rng = np.random.default_rng(seed)
    g = random_dag(rng, n, extra)
    max_nodes = max(1, int(n * frac))
    c = coarsen(g, max_nodes)
    check(g, c, max_nodes)
    # A random valid coarse plan (contiguous in canonical order) expands to a valid plan whose
    # boundary traffic is at least the coarse one's: the rule never under-counts.
    k = c.graph.num_nodes
    num_stages = int(rng.integers(1, k + 1))
    cuts = (
        np.sort(rng.choice(np.arange(1, k), size=num_stages - 1, replace=False))
        if num_stages > 1
        else []
    )
    stages = np.searchsorted(np.asarray(cuts), np.arange(k), side="right")
    coarse_plan = Plan.from_stages(
        c.graph, stages, num_stages=num_stages, devices=range(num_stages)
    )
    coarse_plan.validate(c.graph)
    plan = c.expand_plan(coarse_plan)
    plan.validate(g)
    x_coarse = boundary_bytes(c.graph, stages, num_stages)
    x_orig = boundary_bytes(g, plan.stages(g), num_stages)
    assert all(xc >= xo - 1e-9 for xc, xo in zip(x_coarse, x_orig, strict=True))


def test_chain_groups_keep_boundary_traffic_exact() -> None:
    g = chain([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], output_bytes=3.0)
    c = g.coarsen(4)
    stages = np.array([0, 1, 1, 2])
    plan = c.expand_plan(Plan.from_stages(c.graph, stages, num_stages=3, devices=[0, 1, 2]))
    assert boundary_bytes(c.graph, stages, 3) == boundary_bytes(g, plan.stages(g), 3) == [3.0, 3.0]


def test_thousands_of_nodes_well_under_a_second() -> None:
    g = random_dag(np.random.default_rng(0), 3000, 3000)
    for max_nodes in (512, 64):
        start = time.perf_counter()
        c = g.coarsen(max_nodes)
        assert time.perf_counter() - start < 1.0
        assert c.graph.num_nodes == max_nodes
