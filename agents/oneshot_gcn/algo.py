"""``oneshot-gcn``: PPO emitting a whole plan in one step, one stage distribution per node.

DRL-PP-style one-shot placement (https://openreview.net/forum?id=b9aCXHhdbv): the policy reads
the operator graph through :class:`~agents.extractors.NodeGCNExtractor` and draws every node's
stage at once from :class:`~agents.heads.NodeStageHead`; ``PipelinePartitionOneShot-v0`` repairs
the joint choice into a valid plan and pays its reward. Trained with SB3's PPO (Schulman et al.,
arXiv:1707.06347); each update sees a batch of whole plans. Planning: :mod:`agents.learned`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.base import register
from agents.learned import LearnedAgent
from agents.oneshot_gcn.policies import NodeStagePolicy
from pipeenv.envs.base import PartitionEnvBase
from pipeenv.envs.oneshot import PipelinePartitionOneShotEnv

__all__ = ["ONESHOT_GCN_HYPERPARAMETERS", "OneShotGCN"]

#: PPO settings of ``oneshot-gcn``: one step per episode, so no discount or GAE to speak of; the
#: entropy of a plan sums over its nodes, hence a small coefficient.
ONESHOT_GCN_HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "n_steps": 16,
    "batch_size": 64,
    "n_epochs": 4,
    "gamma": 1.0,
    "gae_lambda": 1.0,
    "ent_coef": 0.001,
    "policy_kwargs": {"features_extractor_kwargs": {"width": 32, "num_layers": 3}},
}


@register("oneshot-gcn", "PPO emitting every node's stage at once from GCN embeddings (learned)")
class OneShotGCN(LearnedAgent):
    """``oneshot-gcn`` (options: :class:`~agents.learned.LearnedAgent`)."""

    algorithm = PPO
    policy_class = NodeStagePolicy
    hyperparameters = ONESHOT_GCN_HYPERPARAMETERS

    @classmethod
    def env_class(cls) -> type[PartitionEnvBase]:
        return PipelinePartitionOneShotEnv

    def act(
        self,
        model: BaseAlgorithm,
        env: PartitionEnvBase,
        obs: dict[str, np.ndarray],
        state: Any,
        episode_start: bool,
        deterministic: bool,
    ) -> tuple[Any, Any]:
        action, _ = model.policy.predict(obs, deterministic=deterministic)
        return action, None
