"""``ppo-gcn``: MaskablePPO over the GCN; training, masks, planning through the agent interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO

import agents
from agents.learned import padding_of
from agents.ppo_gcn import PPOGCN, GCNMaskablePolicy
from pipeenv.cluster import load_cluster
from pipeenv.envs.partition import PipelinePartitionEnv
from pipeenv.errors import PipeenvError
from pipeenv.zoo import load as load_zoo

th.set_num_threads(1)

ENV_KWARGS = {"graph": "vgg16", "cluster": "4xA100-nvlink", "num_stages": 4, "microbatches": 8,
              "max_nodes": 16}
SMALL: dict[str, Any] = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = PipelinePartitionEnv(**ENV_KWARGS)
    model = PPOGCN.build_model(env, seed=0, **SMALL)
    model.learn(256)
    path = tmp_path_factory.mktemp("ppo") / "model.zip"
    model.save(path)
    return path


def test_model_uses_the_gcn_policy_and_the_env_padding(model_path: Path) -> None:
    model = MaskablePPO.load(model_path, device="cpu")
    assert isinstance(model.policy, GCNMaskablePolicy)
    layout = PipelinePartitionEnv(**ENV_KWARGS).layout
    assert padding_of(model) == {
        "max_nodes": 16,
        "max_stages": 4,
        "max_edges": layout.max_edges,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_actions_are_always_allowed(model_path: Path, seed: int) -> None:
    agent = agents.make("ppo-gcn", model=str(model_path))
    assert isinstance(agent, PPOGCN)
    model = agent.load_model()
    env = PipelinePartitionEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=seed)
    th.manual_seed(seed)
    done = False
    while not done:
        mask = env.action_masks()
        action, _ = agent.act(model, env, obs, None, False, deterministic=False)
        assert mask[action]
        obs, _, done, _, info = env.step(action)
        assert not info["invalid_action"]
    assert info["invalid_actions"] == 0


@pytest.mark.parametrize("graph", ["vgg16", "tiny-gpt"])
def test_a_saved_model_plans_deterministically(model_path: Path, graph: str) -> None:
    g, c = load_zoo(graph), load_cluster("4xA100-nvlink")
    plans = [
        agents.make("ppo-gcn", model=str(model_path), samples=2).plan(
            g, c, num_stages=4, microbatches=8
        )
        for _ in range(2)
    ]
    for plan in plans:
        plan.validate(g, c)
        assert plan.predicted is not None and plan.predicted["throughput_samples_per_s"] > 0
        assert plan.agent is not None and plan.agent["name"] == "ppo-gcn"
    assert plans[0].stage_of == plans[1].stage_of


def test_the_plan_is_the_best_of_greedy_and_samples(model_path: Path) -> None:
    g, c = load_zoo("vgg16"), load_cluster("4xA100-nvlink")
    greedy = agents.make("ppo-gcn", model=str(model_path), samples=0)
    sampled = agents.make("ppo-gcn", model=str(model_path), samples=3)
    a = greedy.plan(g, c, num_stages=4, microbatches=8)
    b = sampled.plan(g, c, num_stages=4, microbatches=8)
    assert b.predicted is not None and a.predicted is not None
    assert b.predicted["throughput_samples_per_s"] >= a.predicted["throughput_samples_per_s"]


def test_without_a_model_it_trains_on_the_request_first() -> None:
    g, c = load_zoo("tiny-gpt"), load_cluster("4xA100-nvlink")
    plans = [
        agents.make("ppo-gcn", timesteps=128, max_nodes=12, samples=1).plan(
            g, c, num_stages=2, microbatches=4
        )
        for _ in range(2)
    ]
    plans[0].validate(g, c)
    assert plans[0].stage_of == plans[1].stage_of
    assert plans[0].agent is not None and plans[0].agent["timesteps"] == 128


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timesteps": 0}, "timesteps"),
        ({"samples": -1}, "samples"),
        ({"model": 3}, "model"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(PipeenvError, match=message):
        agents.make("ppo-gcn", **options)


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    agent = agents.make("ppo-gcn", model=str(tmp_path / "nope.zip"))
    with pytest.raises(PipeenvError, match="does not exist"):
        agent.plan(load_zoo("vgg16"), load_cluster("4xA100-nvlink"), num_stages=4, microbatches=8)


def test_more_stages_than_the_model_knows_are_refused(model_path: Path) -> None:
    agent = agents.make("ppo-gcn", model=str(model_path))
    with pytest.raises(PipeenvError, match="at most 4 stages"):
        agent.plan(load_zoo("vgg16"), load_cluster("8xA100-nvlink"), num_stages=6, microbatches=8)


def test_data_parallel_none_tries_every_replica_count(model_path: Path) -> None:
    g, c = load_zoo("vgg16"), load_cluster("8xA100-nvlink")
    plan = agents.make("ppo-gcn", model=str(model_path), samples=0).plan(
        g, c, num_stages=4, microbatches=8
    )
    fixed = [
        agents.make("ppo-gcn", model=str(model_path), samples=0).plan(
            g, c, num_stages=4, microbatches=8, data_parallel=r
        )
        for r in (1, 2)
    ]
    best = max(p.predicted["throughput_samples_per_s"] for p in fixed if p.predicted)
    assert plan.predicted is not None
    assert plan.predicted["throughput_samples_per_s"] == pytest.approx(best)
    assert np.isin(plan.data_parallel, [1, 2])
