"""Tracing at layer granularity: leaves, node ids, edges, placeholders, errors."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeenv.errors import PipeenvError
from pipeenv.graph import Node
from pipeenv.zoo.trace import (
    node_module,
    node_op,
    run_nodes,
    tensor_bytes,
    to_operator_graph,
    trace,
)

torch.set_num_threads(1)


class _Block(nn.Module):
    """Two children, so traced through unless marked."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


class _LeafBlock(_Block):
    fx_leaf: ClassVar[bool] = True


class _Diamond(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.block = _Block()
        self.leaf = _LeafBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.seq(x)
        right = self.leaf(self.block(x))
        return torch.cat([left, F.gelu(right)], dim=1)


class _LooseParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def test_leaves_are_childless_or_marked_modules_and_functions_are_nodes() -> None:
    gm = trace(_Diamond())
    names = [n.name for n in gm.graph.nodes]
    assert names == ["x", "seq_0", "seq_1", "block_a", "block_b", "leaf", "gelu", "cat", "output"]
    ops = [node_op(gm, n) for n in gm.graph.nodes if n.op != "output"]
    assert ops == ["input", "linear", "relu", "linear", "linear", "_leafblock", "gelu", "cat"]
    modules = {n.name: node_module(n) for n in gm.graph.nodes}
    assert modules["block_a"] == "block.a" and modules["leaf"] == "leaf" and modules["cat"] == ""


def test_node_ids_are_stable_across_traces() -> None:
    first = [n.name for n in trace(_Diamond()).graph.nodes]
    second = [n.name for n in trace(_Diamond()).graph.nodes]
    assert first == second


def test_operator_graph_has_fx_edges_inputs_and_no_output_node() -> None:
    gm = trace(_Diamond())
    costs = {
        n.name: Node(n.name, node_op(gm, n), 0.0, 0.0, 0, 0)
        for n in gm.graph.nodes
        if n.op != "output"
    }
    graph = to_operator_graph(gm, "diamond", costs, microbatch_size=2, source="test")
    assert set(graph.edges) == {
        ("x", "seq_0"), ("seq_0", "seq_1"), ("x", "block_a"), ("block_a", "block_b"),
        ("block_b", "leaf"), ("leaf", "gelu"), ("seq_1", "cat"), ("gelu", "cat"),
    }  # fmt: skip
    assert graph.node("x").op == "input"
    assert "output" not in graph
    assert not graph.is_chain


def test_parameter_outside_a_leaf_is_refused() -> None:
    with pytest.raises(PipeenvError, match="tensor 'scale' is used outside a leaf module"):
        trace(_LooseParameter(), "loose")


def test_run_nodes_yields_every_node_with_the_model_output_last() -> None:
    torch.manual_seed(0)
    model = _Diamond()
    x = torch.randn(3, 4)
    calls = list(run_nodes(trace(model), [x]))
    assert [c.node.name for c in calls][-1] == "cat"
    assert torch.equal(calls[-1].output, model(x))
    assert calls[0].output is x


def test_run_nodes_on_meta_tensors() -> None:
    with torch.device("meta"):
        model = _Diamond()
    calls = list(run_nodes(trace(model), [torch.empty(3, 4, device="meta")]))
    assert calls[-1].output.shape == (3, 8) and calls[-1].output.is_meta


def test_tensor_bytes_counts_each_storage_once() -> None:
    t = torch.zeros(10, 4)
    assert tensor_bytes(t) == 160
    assert tensor_bytes((t, t[2:], {"k": [t.view(40)]})) == 160
    assert tensor_bytes([t, torch.zeros(3, dtype=torch.bfloat16), 7, None]) == 166
