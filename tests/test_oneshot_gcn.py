"""``oneshot-gcn``: per-node stage logits from node embeddings, PPO on the one-shot env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.utils import obs_as_tensor

import agents
from agents.oneshot_gcn import NodeStagePolicy, OneShotGCN
from pipeenv.cluster import load_cluster
from pipeenv.envs.oneshot import PipelinePartitionOneShotEnv
from pipeenv.zoo import load as load_zoo

th.set_num_threads(1)

ENV_KWARGS = {"graph": "vgg16", "cluster": "4xA100-nvlink", "num_stages": 3, "microbatches": 8,
              "max_nodes": 16, "max_stages": 4}
SMALL: dict[str, Any] = {"n_steps": 32, "batch_size": 32, "n_epochs": 2}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = OneShotGCN.build_model(PipelinePartitionOneShotEnv(**ENV_KWARGS), seed=0, **SMALL)
    model.learn(64)
    path = tmp_path_factory.mktemp("oneshot") / "model.zip"
    model.save(path)
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_plans_respect_the_per_node_masks(model_path: Path, seed: int) -> None:
    model = PPO.load(model_path, device="cpu")
    assert isinstance(model.policy, NodeStagePolicy)
    env = PipelinePartitionOneShotEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=seed)
    th.manual_seed(seed)
    action, _ = model.policy.predict(obs, deterministic=False)
    assert action.shape == (16,)
    allowed = obs["action_mask"].astype(bool)
    assert allowed[np.arange(16), action].all()
    n = int(obs["node_mask"].sum())
    assert (action[n:] == 0).all()


def test_the_policy_emits_one_distribution_per_node(model_path: Path) -> None:
    model = PPO.load(model_path, device="cpu")
    env = PipelinePartitionOneShotEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=0)
    tensor = obs_as_tensor({k: v[None] for k, v in obs.items()}, th.device("cpu"))
    with th.no_grad():
        distribution: Any = model.policy.get_distribution(tensor)
    logits = th.stack([d.logits for d in distribution.distribution], dim=1)[0]
    assert logits.shape == (16, 4)
    # Node embeddings differ, so do their stage preferences (not one vector copied N times).
    n = int(obs["node_mask"].sum())
    assert not th.allclose(logits[0], logits[n - 1])


def test_a_saved_model_plans_deterministically(model_path: Path) -> None:
    g, c = load_zoo("vgg16"), load_cluster("4xA100-nvlink")
    plans = [
        agents.make("oneshot-gcn", model=str(model_path), samples=3).plan(
            g, c, num_stages=3, microbatches=8
        )
        for _ in range(2)
    ]
    plans[0].validate(g, c)
    assert plans[0].stage_of == plans[1].stage_of
    assert plans[0].agent is not None and plans[0].agent["name"] == "oneshot-gcn"


def test_training_changes_the_plans_it_samples() -> None:
    model = OneShotGCN.build_model(PipelinePartitionOneShotEnv(**ENV_KWARGS), seed=0, **SMALL)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64)
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters()))
