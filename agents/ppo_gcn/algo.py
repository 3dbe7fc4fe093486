"""``ppo-gcn``: PPO with invalid-action masking over a GCN encoding of the partial plan.

Schulman et al., "Proximal Policy Optimization Algorithms", arXiv:1707.06347, 2017, with the
invalid-action masking of Huang & Ontañón, "A Closer Look at Invalid Action Masking in Policy
Gradient Algorithms", FLAIRS 2022, as sb3-contrib's ``MaskablePPO`` implements it. The agent
places one node per step on ``PipelinePartition-v0`` (the mask allows exactly the stages that
keep the plan completable), its policy reading the graph through
:class:`~agents.extractors.GCNExtractor` (:class:`~agents.ppo_gcn.policies.GCNMaskablePolicy`).
Planning: :mod:`agents.learned`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sb3_contrib import MaskablePPO
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.base import register
from agents.learned import LearnedAgent
from agents.ppo_gcn.policies import GCNMaskablePolicy
from pipeenv.envs.base import PartitionEnvBase
from pipeenv.envs.partition import PipelinePartitionEnv

__all__ = ["PPOGCN", "PPO_GCN_HYPERPARAMETERS"]

#: MaskablePPO settings of ``ppo-gcn`` (``n_steps`` per environment; 8 environments make a
#: 1024-step rollout). The reward is terminal and episodes are finite, hence no discount; a
#: small entropy bonus keeps the stage choices exploring. A narrow, two-round GCN: on a 2-core
#: CPU the updates, not the environment, bound the training speed.
PPO_GCN_HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "n_steps": 128,
    "batch_size": 256,
    "n_epochs": 4,
    "gamma": 1.0,
    "gae_lambda": 0.95,
    "ent_coef": 0.01,
    "policy_kwargs": {"features_extractor_kwargs": {"width": 32, "num_layers": 2}},
}


@register("ppo-gcn", "MaskablePPO over a GCN of the graph, one node per step (learned)")
class PPOGCN(LearnedAgent):
    """``ppo-gcn`` (options: :class:`~agents.learned.LearnedAgent`)."""

    algorithm = MaskablePPO
    policy_class = GCNMaskablePolicy
    hyperparameters = PPO_GCN_HYPERPARAMETERS

    @classmethod
    def env_class(cls) -> type[PartitionEnvBase]:
        return PipelinePartitionEnv

    def act(
        self,
        model: BaseAlgorithm,
        env: PartitionEnvBase,
        obs: dict[str, np.ndarray],
        state: Any,
        episode_start: bool,
        deterministic: bool,
    ) -> tuple[Any, Any]:
        assert isinstance(env, PipelinePartitionEnv)
        action, _ = model.policy.predict(  # type: ignore[call-arg]
            obs, deterministic=deterministic, action_masks=env.action_masks()
        )
        return int(action), None
