"""The agent interface: registry, make(), request checks, predicted figures, device layouts."""

from __future__ import annotations

import pytest
from conftest import chain, cluster

import agents
from agents.base import Agent, BaseAgent, register
from agents.layouts import device_layouts, is_uniform
from pipeenv.cluster import Link, load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.simulator import simulate

ALL = [
    "uniform-layers",
    "balanced-params",
    "balanced-time",
    "data-parallel",
    "random",
    "pipedream-dp",
    "exhaustive",
    "local-search",
]


def test_every_agent_is_registered_with_one_line():
    assert set(ALL) <= set(agents.names())
    descriptions = agents.describe()
    for name in ALL:
        assert descriptions[name] and "\n" not in descriptions[name]


@pytest.mark.parametrize("name", ALL)
def test_make_builds_an_agent(name):
    agent = agents.make(name)
    assert isinstance(agent, Agent)
    assert agent.name == name


def test_unknown_agent_is_refused_with_the_known_names():
    with pytest.raises(PipeenvError, match=r"agent 'nope' is unknown \(known: uniform-layers"):
        agents.make("nope")


def test_unknown_option_is_refused_naming_it():
    with pytest.raises(PipeenvError, match=r"option 'sead' is unknown \(known options: seed\)"):
        agents.make("random", sead=1)
    with pytest.raises(PipeenvError, match=r"option 'seed' is unknown \(known options: none\)"):
        agents.make("balanced-time", seed=1)


@pytest.mark.parametrize(
    ("name", "options", "rule"),
    [
        ("random", {"seed": "x"}, "'seed' must be an integer"),
        ("random", {"seed": -1}, "'seed' must be >= 0"),
        ("pipedream-dp", {"max_downsets": 1}, "'max_downsets' must be >= 2"),
        ("exhaustive", {"max_plans": 0}, "'max_plans' must be >= 1"),
        ("local-search", {"temperature": 0}, "'temperature' must be > 0"),
        ("local-search", {"start": "random"}, "'start' must be 'best' or one of"),
    ],
)
def test_bad_option_values_are_refused(name, options, rule):
    with pytest.raises(PipeenvError, match=rule):
        agents.make(name, **options)


def test_a_name_registers_once():
    with pytest.raises(PipeenvError, match="'random' is already registered"):

        @register("random", "again")
        class Again(BaseAgent):
            def _plan(self, request):
                raise AssertionError

    assert agents.describe()["random"].startswith("a random topological order")


@pytest.mark.parametrize(
    ("request_fields", "rule"),
    [
        ({"num_stages": 5}, "num_stages 5 exceeds the 4 nodes"),
        ({"num_stages": 0}, "'num_stages' must be >= 1"),
        ({"microbatches": 0}, "'microbatches' must be >= 1"),
        ({"data_parallel": 2, "num_stages": 2}, "num_stages x data_parallel = 4 exceeds the 2"),
        ({"schedule": "zb-v"}, "schedule 'zb-v' is unknown"),
    ],
)
def test_impossible_requests_are_refused(request_fields, rule):
    fields = {"num_stages": 2, "microbatches": 4, **request_fields}
    with pytest.raises(PipeenvError, match=rule):
        agents.make("balanced-time").plan(chain([1, 1, 1, 1]), cluster([1, 1]), **fields)


def test_plans_carry_the_simulated_figures_and_the_agent():
    graph, devices = chain([1, 2, 3, 4]), cluster([1, 1])
    plan = agents.make("random", seed=3).plan(graph, devices, num_stages=2, microbatches=4)
    result = simulate(graph, devices, plan)
    assert plan.predicted == {
        "iteration_s": result.iteration_s,
        "throughput_samples_per_s": result.throughput_samples_per_s,
        "feasible": True,
    }
    assert plan.agent == {"name": "random", "seed": 3}
    assert plan.to_dict()["graph_hash"] == graph.graph_hash


def test_one_layout_on_identical_devices_of_one_node():
    assert is_uniform(load_cluster("8xA100-nvlink"))
    assert device_layouts(load_cluster("8xA100-nvlink"), 2, 4) == [(0, 1, 2, 3, 4, 5, 6, 7)]


def test_layouts_on_two_nodes_are_pipeline_and_stage_major():
    two_nodes = cluster([1.0] * 4, nodes=[0, 0, 1, 1], inter=Link(1e9, 1e-5))
    assert device_layouts(two_nodes, 2, 2) == [(0, 1, 2, 3), (0, 2, 1, 3)]
    assert device_layouts(two_nodes, 4, 1) == [(0, 1, 2, 3)]


def test_layouts_on_mixed_speeds_put_the_fastest_first():
    mixed = cluster([0.5, 1.0, 0.5, 1.0])
    assert device_layouts(mixed, 2, 1) == [(0, 1), (1, 3)]
