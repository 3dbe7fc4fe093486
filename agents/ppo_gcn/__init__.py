"""``ppo-gcn``: sb3-contrib's MaskablePPO with the GCN extractor on ``PipelinePartition-v0``."""

from agents.ppo_gcn.algo import PPO_GCN_HYPERPARAMETERS, PPOGCN
from agents.ppo_gcn.policies import GCNMaskablePolicy

__all__ = ["PPOGCN", "PPO_GCN_HYPERPARAMETERS", "GCNMaskablePolicy"]
