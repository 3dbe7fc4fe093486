"""Lowering a plan onto an fx model: boundary sets (SPEC §4, relayed), tied weights, chaining."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from pipeenv import zoo
from pipeenv.cluster import load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.plan import Plan
from pipeenv.simulator import simulate
from pipeenv.validate.lowering import LoweredPlan, lower, spec_boundaries
from pipeenv.zoo.trace import run_nodes, tensor_bytes, to_operator_graph, trace


class Skip(nn.Module):
    """x -> a -> b -> c -> d, out = d + a (a skips two layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(4, 4) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return self.d(self.c(self.b(a))) + a


class Branches(nn.Module):
    """stem -> two parallel branches -> cat -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.left = nn.Linear(4, 3)
        self.right = nn.Linear(4, 5)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.head(torch.cat([self.left(s), self.right(s)], 1))


class Tied(nn.Module):
    """An embedding whose weight a later head reuses (held in a tuple: owned by the embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.mid = nn.Linear(4, 4)
        self.head = _Head(self.embed)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.mid(self.embed(ids)))


class _Head(nn.Module):
    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.tied = (embedding,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.tied[0].weight)


class TwoInputs(nn.Module):
    """b(a(x)) + y: the second input is only needed late."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + y


class Sized(nn.Module):
    """Uses an integer (the batch size) computed on one stage on the next."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)
        return self.b(self.a(x)).reshape(n, -1)


def _traced(
    model: nn.Module, example: tuple[torch.Tensor, ...]
) -> tuple[fx.GraphModule, OperatorGraph]:
    torch.manual_seed(0)
    gm = trace(model)
    costs = {
        call.node.name: Node(call.node.name, "op", 1e-3, 2e-3, float(tensor_bytes(call.output)), 0)
        for call in run_nodes(gm, example)
    }
    return gm, to_operator_graph(gm, "test", costs, microbatch_size=2, source="test")


def _plan(graph: OperatorGraph, stage_of: dict[str, int], num_stages: int) -> Plan:
    return Plan(
        stage_of,
        num_stages=num_stages,
        devices=list(range(num_stages)),
        microbatches=2,
        graph_hash=graph.graph_hash,
    )


def _chain(lowered: LoweredPlan, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    values = inputs
    for module in lowered.modules:
        out = module(*values)
        values = out if isinstance(out, tuple) else (out,)
    assert len(values) == 1
    return values[0]


def _assert_matches_simulator(graph: OperatorGraph, plan: Plan, lowered: LoweredPlan) -> None:
    """Bytes each stage sends = the simulator's X_s; stage s+1 receives what s sends."""
    result = simulate(graph, load_cluster("cpu-4"), plan)
    for s, spec in enumerate(lowered.stages[:-1]):
        sent = sum(graph.node(u).output_bytes for u in spec.outputs)
        assert sent == result.stages[s].send_bytes
        assert lowered.stages[s + 1].inputs == spec.outputs


def test_skip_connection_is_relayed_across_every_boundary():
    x = torch.randn(2, 4)
    gm, graph = _traced(Skip(), (x,))
    stage_of = {"x": 0, "a": 0, "b": 1, "c": 2, "d": 2, "add": 2}
    plan = _plan(graph, stage_of, 3)
    lowered = lower(gm, graph, plan, (x,))
    assert [(s.inputs, s.nodes, s.outputs) for s in lowered.stages] == [
        (("x",), ("a",), ("a",)),
        (("a",), ("b",), ("a", "b")),
        (("a", "b"), ("c", "d", "add"), ("add",)),
    ]
    assert spec_boundaries(graph, stage_of, 3) == [["a"], ["a", "b"]]
    assert lowered.unaccounted == () and lowered.tied == ()
    _assert_matches_simulator(graph, plan, lowered)
    assert torch.equal(_chain(lowered, (x,)), gm(x))


def test_parallel_branches_on_different_stages():
    x = torch.randn(2, 4)
    gm, graph = _traced(Branches(), (x,))
    # Non-contiguous: 'left' (stage 1) comes before 'right' (stage 0) in canonical order.
    stage_of = {"x": 0, "stem": 0, "left": 1, "right": 0, "cat": 1, "head": 1}
    plan = _plan(graph, stage_of, 2)
    lowered = lower(gm, graph, plan, (x,))
    assert lowered.stages[0].nodes == ("stem", "right")
    assert lowered.stages[0].outputs == ("stem", "right")
    assert lowered.stages[1].inputs == ("stem", "right")
    assert lowered.stages[1].nodes == ("left", "cat", "head")
    _assert_matches_simulator(graph, plan, lowered)
    assert torch.equal(_chain(lowered, (x,)), gm(x))


def test_tied_weight_is_registered_on_every_stage_that_uses_it():
    ids = torch.tensor([[1, 2], [3, 4]])
    gm, graph = _traced(Tied(), (ids,))
    plan = _plan(graph, {"ids": 0, "embed": 0, "mid": 1, "head": 1}, 2)
    lowered = lower(gm, graph, plan, (ids,))
    assert [(t.name, t.owner, t.stages) for t in lowered.tied] == [
        ("embed.weight", "embed", (0, 1))
    ]
    weight = gm.get_parameter("embed.weight")
    assert any(p is weight for p in lowered.modules[1].parameters())
    assert any(p is weight for p in lowered.modules[0].parameters())
    assert torch.equal(_chain(lowered, (ids,)), gm(ids))
    same_stage = lower(
        gm, graph, _plan(graph, {"ids": 0, "embed": 0, "mid": 0, "head": 1}, 2), (ids,)
    )
    assert [t.stages for t in same_stage.tied] == [(0, 1)]
    one_stage = lower(gm, graph, _plan(graph, dict.fromkeys(graph.order, 0), 1), (ids,))
    assert one_stage.tied == ()


def test_input_on_a_later_stage_is_fed_to_stage_0_and_reported():
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    gm, graph = _traced(TwoInputs(), (x, y))
    stage_of = {"x": 0, "a": 0, "y": 1, "b": 1, "add": 1}
    lowered = lower(gm, graph, _plan(graph, stage_of, 2), (x, y))
    assert [(s.inputs, s.outputs) for s in lowered.stages] == [
        (("x", "y"), ("y", "a")),
        (("y", "a"), ("add",)),
    ]
    assert spec_boundaries(graph, stage_of, 2) == [["a"]]
    assert lowered.unaccounted == (("y", 0),)
    assert torch.equal(_chain(lowered, (x, y)), gm(x, y))


def test_non_tensor_crossing_a_boundary_is_rejected():
    x = torch.randn(2, 4)
    gm, graph = _traced(Sized(), (x,))
    size_node = next(n for n in graph.order if n.startswith("size"))
    stage_of = dict.fromkeys(graph.order, 1)
    stage_of.update({"x": 0, size_node: 0, "a": 0})
    with pytest.raises(PipeenvError, match=f"node '{size_node}' crosses boundary 0 .* int"):
        lower(gm, graph, _plan(graph, stage_of, 2), (x,))


def test_plan_for_another_graph_is_rejected():
    x = torch.randn(2, 4)
    gm, graph = _traced(Skip(), (x,))
    _, other = _traced(Branches(), (x,))
    with pytest.raises(PipeenvError, match="graph_hash"):
        lower(gm, graph, _plan(other, dict.fromkeys(other.order, 0), 1), (x,))
    unknown = Plan({"x": 0, "nope": 0}, num_stages=1, devices=[0])
    with pytest.raises(PipeenvError, match="unknown node 'nope'"):
        lower(gm, graph, unknown, (x,))


def _random_plan(graph: OperatorGraph, rng: np.random.Generator, num_stages: int) -> Plan:
    """A random valid plan: random stages made monotone along edges, every stage non-empty."""
    while True:
        stage_of = {u: int(rng.integers(num_stages)) for u in graph.order}
        for u in graph.order:  # canonical order is topological
            for a, b in graph.edges:
                if a == u:
                    stage_of[b] = max(stage_of[b], stage_of[u])
        if len(set(stage_of.values())) == num_stages:
            return _plan(graph, stage_of, num_stages)


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-inception"])
def test_zoo_models_random_plans_match_spec_and_model(name):
    gm, graph = zoo.traced(name, microbatch_size=2)
    inputs = zoo.example_inputs(name, 2)
    with torch.no_grad():
        expected = gm(*inputs)
    rng = np.random.default_rng(0)
    for num_stages in (2, 3, 4):
        plan = _random_plan(graph, rng, num_stages)
        lowered = lower(gm, graph, plan, inputs)
        spec = spec_boundaries(graph, plan.stage_of, num_stages)
        for s in range(num_stages - 1):
            assert set(lowered.stages[s].outputs) == set(spec[s]) | {
                u for u, b in lowered.unaccounted if b == s
            }
        # Only model inputs placed after stage 0 are relayed beyond SPEC's sets.
        assert all(u == graph.order[0] for u, _ in lowered.unaccounted)
        if not lowered.unaccounted:
            _assert_matches_simulator(graph, plan, lowered)
        with torch.no_grad():
            assert torch.equal(_chain(lowered, inputs), expected)


def test_tiny_gpt_two_stages_tie_embedding_and_head():
    gm, graph = zoo.traced("tiny-gpt", microbatch_size=2)
    cut = graph.order.index("add_3") + 1
    stages = [0 if i < cut else 1 for i in range(graph.num_nodes)]
    plan = Plan.from_stages(graph, stages, num_stages=2, devices=[0, 1], microbatches=2)
    lowered = lower(gm, graph, plan, zoo.example_inputs("tiny-gpt", 2))
    assert [(s.inputs, s.outputs) for s in lowered.stages] == [
        (("ids",), ("add_3",)),
        (("add_3",), ("lm_head",)),
    ]
    assert [(t.name, t.owner, t.stages) for t in lowered.tied] == [
        ("embed.tokens.weight", "embed", (0, 1))
    ]
