"""pipeenv.plan/v1: every SPEC §3 rule, the graph hash, round trips, the array fast path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import chain, cluster

from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.plan import Plan, load_plan

GRAPH = OperatorGraph(
    "fork",
    [Node(x, "op", 1.0, 1.0, 1.0, 1.0) for x in "abcd"],
    [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    microbatch_size=1,
)
CLUSTER = cluster([1.0] * 4)
GOOD = {"a": 0, "b": 1, "c": 2, "d": 3}


def make(**changes):  # type: ignore[no-untyped-def]
    fields = {"num_stages": 4, "devices": [0, 1, 2, 3], "microbatches": 4, "schedule": "1f1b"}
    fields.update(changes)
    stage_of = fields.pop("stage_of", GOOD)
    return Plan(stage_of, **fields)


def test_a_plan_may_split_parallel_branches():
    make().validate(GRAPH, CLUSTER)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage_of": {**GOOD, "zz": 0}}, "unknown node 'zz'"),
        ({"stage_of": {"a": 0, "b": 1, "c": 2}}, "node 'd' has no stage"),
        ({"stage_of": {**GOOD, "b": 5}}, "node 'b': stage 5 is out of range 0..3"),
        ({"stage_of": {**GOOD, "b": -1}}, "node 'b': stage -1 is out of range"),
        ({"stage_of": {**GOOD, "b": "1"}}, "node 'b': stage must be an integer"),
        ({"stage_of": {"a": 0, "b": 1, "c": 1, "d": 3}}, "stage 2 is empty"),
        (
            {"stage_of": {"a": 0, "b": 3, "c": 1, "d": 2}},
            r"edge \('b', 'd'\) goes backward: stage 3 -> 2",
        ),
        ({"devices": [0, 1, 2]}, "lists 3 devices, needs num_stages x data_parallel = 4"),
        ({"devices": [0, 1, 2, 2]}, "device 2 is used twice"),
        ({"devices": [0, 1, 2, 9]}, r"device 9 is out of range 0..3"),
        ({"graph_hash": "sha256:00"}, "does not match graph 'fork'"),
    ],
)
def test_each_rule_has_its_error(changes, message):
    with pytest.raises(PipeenvError, match=message):
        make(**changes).validate(GRAPH, CLUSTER)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schedule": "zero-bubble"}, "unknown schedule 'zero-bubble'"),
        ({"microbatches": 0}, "'microbatches' must be >= 1"),
        ({"num_stages": 0}, "'num_stages' must be >= 1"),
        ({"data_parallel": 1.5}, "'data_parallel' must be an integer"),
        ({"devices": [0, "1", 2, 3]}, "entry 1 must be an integer"),
    ],
)
def test_field_errors_at_construction(changes, message):
    with pytest.raises(PipeenvError, match=message):
        make(**changes)


def test_round_trip_and_hash(tmp_path):
    plan = make(graph="fork", cluster="test", graph_hash=GRAPH.graph_hash, agent={"name": "me"})
    plan.save(tmp_path / "p.json")
    again = load_plan(tmp_path / "p.json")
    assert again.to_dict() == plan.to_dict()
    again.validate(GRAPH, CLUSTER)
    other = chain([1.0] * 4)
    with pytest.raises(PipeenvError, match="made for another graph"):
        again.validate(other, CLUSTER)


def test_from_dict_errors(tmp_path):
    doc = make().to_dict()
    del doc["stage_of"]
    with pytest.raises(PipeenvError, match="missing required field 'stage_of'"):
        Plan.from_dict(doc)
    with pytest.raises(PipeenvError, match="'format' must be 'pipeenv.plan/v1'"):
        Plan.from_dict({**make().to_dict(), "format": "plan"})


def test_array_fast_path_matches_dict():
    plan = Plan.from_stages(GRAPH, np.array([0, 1, 2, 3]), num_stages=4, devices=[0, 1, 2, 3])
    assert plan.stage_of == GOOD
    assert plan.graph_hash == GRAPH.graph_hash
    assert plan.replace(microbatches=8).stages(GRAPH).tolist() == [0, 1, 2, 3]
    with pytest.raises(PipeenvError, match="shape"):
        Plan.from_stages(GRAPH, [0, 1], num_stages=2, devices=[0, 1])


def test_replace_keeps_the_array_fast_path_and_names():
    plan = Plan.from_stages(GRAPH, [0, 1, 2, 3], num_stages=4, devices=[0, 1, 2, 3], graph="alias")
    again = plan.replace(microbatches=2, graph="other")
    assert (again.graph, again.microbatches, again.stage_of) == ("other", 2, GOOD)
