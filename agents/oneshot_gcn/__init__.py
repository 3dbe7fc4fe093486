"""``oneshot-gcn``: PPO on ``PipelinePartitionOneShot-v0`` with per-node stage logits."""

from agents.oneshot_gcn.algo import ONESHOT_GCN_HYPERPARAMETERS, OneShotGCN
from agents.oneshot_gcn.policies import NodeStagePolicy

__all__ = ["ONESHOT_GCN_HYPERPARAMETERS", "NodeStagePolicy", "OneShotGCN"]
