"""pipeenv.graph/v1: validation (one error per rule), canonical order, arrays, round trips."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import random_dag

from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph, load_graph

DOC = {
    "format": "pipeenv.graph/v1",
    "name": "toy",
    "microbatch_size": 4,
    "source": "hand-written",
    "nodes": [
        {
            "id": "c",
            "op": "add",
            "forward_s": 0.5,
            "backward_s": 1.0,
            "output_bytes": 8,
            "param_bytes": 0,
        },
        {
            "id": "a",
            "op": "conv",
            "forward_s": 1.0,
            "backward_s": 2.0,
            "output_bytes": 16,
            "param_bytes": 64,
            "activation_bytes": 32,
            "module": "layer1.conv",
        },
        {
            "id": "b",
            "op": "relu",
            "forward_s": 0.25,
            "backward_s": 0.25,
            "output_bytes": 16,
            "param_bytes": 0,
        },
    ],
    "edges": [["a", "b"], ["b", "c"], ["a", "c"]],
}


def with_change(path: tuple, value) -> dict:  # type: ignore[no-untyped-def,type-arg]
    doc = copy.deepcopy(DOC)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def test_canonical_order_is_topological_with_ties_by_position():
    g = OperatorGraph.from_dict(DOC)
    assert g.order == ("a", "b", "c")
    doc = copy.deepcopy(DOC)
    doc["edges"] = [["a", "b"]]  # c is free: it comes first, by position
    assert OperatorGraph.from_dict(doc).order == ("c", "a", "b")


def test_arrays_are_in_canonical_order():
    a = OperatorGraph.from_dict(DOC).arrays
    assert a.forward_s.tolist() == [1.0, 0.25, 0.5]
    assert a.activation_bytes.tolist() == [32.0, 16.0, 8.0]  # defaults to output_bytes
    assert a.succ_ptr.tolist() == [0, 2, 3, 3]
    assert a.succ_idx.tolist() == [1, 2, 2]
    assert a.pred_ptr.tolist() == [0, 0, 1, 3]
    assert a.pred_idx.tolist() == [0, 0, 1]
    with pytest.raises(ValueError):
        a.costs[0, 0] = 3.0  # read-only: shared by every simulation of the graph


def test_round_trip_keeps_everything(tmp_path):
    g = OperatorGraph.from_dict(DOC)
    path = tmp_path / "g.json"
    g.save(path)
    again = load_graph(path)
    assert again.to_dict() == g.to_dict()
    assert json.loads(path.read_text())["nodes"][1]["module"] == "layer1.conv"
    assert again.graph_hash == g.graph_hash


def test_hash_ignores_costs_but_not_structure():
    base = OperatorGraph.from_dict(DOC).graph_hash
    assert OperatorGraph.from_dict(with_change(("nodes", 0, "forward_s"), 9.0)).graph_hash == base
    assert (
        OperatorGraph.from_dict(with_change(("edges",), [["a", "b"], ["b", "c"]])).graph_hash
        != base
    )
    assert OperatorGraph.from_dict(with_change(("nodes", 0, "op"), "mul")).graph_hash != base


def test_is_chain():
    assert not OperatorGraph.from_dict(DOC).is_chain
    assert OperatorGraph.from_dict(with_change(("edges",), [["a", "b"], ["b", "c"]])).is_chain


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("format",), "pipeenv.graph/v0", "field 'format' must be 'pipeenv.graph/v1'"),
        (("nodes",), KeyError, "missing required field 'nodes'"),
        (("microbatch_size",), 0, "'microbatch_size' must be >= 1"),
        (("microbatch_size",), 2.5, "'microbatch_size' must be an integer"),
        (("nodes",), [], "at least one node"),
        (("nodes", 1, "id"), "c", "node 'c': duplicate id"),
        (("nodes", 0, "forward_s"), KeyError, "node 'c': missing required field 'forward_s'"),
        (("nodes", 0, "backward_s"), -1.0, "node 'c': field 'backward_s' must be >= 0"),
        (
            ("nodes", 0, "output_bytes"),
            float("nan"),
            "node 'c': field 'output_bytes' must be finite",
        ),
        (("nodes", 0, "param_bytes"), "12", "node 'c': field 'param_bytes' must be a number"),
        (("nodes", 2, "activation_bytes"), -4, "node 'b': field 'activation_bytes' must be >= 0"),
        (("nodes", 0, "id"), KeyError, "node #0: missing required field 'id'"),
        (("edges", 0), ["a", "zz"], r"edge \('a', 'zz'\): endpoint 'zz' is not a node"),
        (("edges", 0), ["a", "a"], "self-loop"),
        (("edges", 0), ["a", "c"], "listed twice"),
        (("edges", 0), ["c", "a"], "lies on a cycle"),
        (("edges", 0), ["a"], "edge #0: must be a pair"),
    ],
)
def test_each_rule_has_its_error(path, value, message):
    with pytest.raises(PipeenvError, match=message):
        OperatorGraph.from_dict(with_change(path, value))


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(PipeenvError, match="file not found"):
        load_graph(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(PipeenvError, match="not valid JSON"):
        load_graph(bad)


def test_random_dags_have_valid_csr():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = random_dag(rng, int(rng.integers(2, 40)), 10)
        a = g.arrays
        assert a.succ_ptr[-1] == g.num_edges == a.pred_ptr[-1]
        assert np.all(a.edge_src < a.edge_dst)  # canonical order is topological
        for u in range(g.num_nodes):
            for v in a.succ_idx[a.succ_ptr[u] : a.succ_ptr[u + 1]]:
                assert u in a.pred_idx[a.pred_ptr[v] : a.pred_ptr[v + 1]]
