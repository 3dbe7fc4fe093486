"""``recurrent-gcn``: a maskable recurrent PPO (LSTM) with the GCN extractor, DRL-PP style."""

from agents.recurrent_gcn.algo import (
    RECURRENT_GCN_HYPERPARAMETERS,
    MaskableRecurrentPPO,
    RecurrentGCN,
)
from agents.recurrent_gcn.buffers import MaskableRecurrentDictRolloutBuffer
from agents.recurrent_gcn.policies import MaskableRecurrentGCNPolicy

__all__ = [
    "RECURRENT_GCN_HYPERPARAMETERS",
    "MaskableRecurrentDictRolloutBuffer",
    "MaskableRecurrentGCNPolicy",
    "MaskableRecurrentPPO",
    "RecurrentGCN",
]
