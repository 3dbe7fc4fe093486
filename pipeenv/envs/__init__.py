"""The Gymnasium environments: ``PipelinePartition-v0`` and ``PipelinePartitionOneShot-v0``.

Importing :mod:`pipeenv` registers both. Gymnasium 1.x has no plugin entry points, so a fresh
process either imports pipeenv first or names the module in the id, which imports it::

    import gymnasium as gym
    env = gym.make("pipeenv:PipelinePartition-v0", graph="resnet50", num_stages=4)
"""

from __future__ import annotations

import gymnasium as gym

from pipeenv.envs.oneshot import PipelinePartitionOneShotEnv
from pipeenv.envs.partition import PipelinePartitionEnv
from pipeenv.envs.records import EpisodeRecord, ReplayResult, replay

__all__ = [
    "ENV_IDS",
    "EpisodeRecord",
    "PipelinePartitionEnv",
    "PipelinePartitionOneShotEnv",
    "ReplayResult",
    "register_envs",
    "replay",
]

ENV_IDS = {
    "PipelinePartition-v0": "pipeenv.envs.partition:PipelinePartitionEnv",
    "PipelinePartitionOneShot-v0": "pipeenv.envs.oneshot:PipelinePartitionOneShotEnv",
}


def register_envs() -> None:
    """Register both environments with Gymnasium (a no-op for ids already registered)."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)
