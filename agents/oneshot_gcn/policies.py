"""The policy of ``oneshot-gcn``: per-node stage logits from GCN node embeddings."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from agents.extractors import NodeGCNExtractor
from agents.heads import NodeStageHead

__all__ = ["NodeStagePolicy"]


class NodeStagePolicy(MultiInputActorCriticPolicy):
    """SB3's multi-input actor-critic for a ``MultiDiscrete`` stage-per-node action: features from
    :class:`~agents.extractors.NodeGCNExtractor`, logits from
    :class:`~agents.heads.NodeStageHead` (one shared network per node, masked by the
    observation's ``action_mask``), an identity ``action_net``.

    :param node_hidden: units of the shared node network.
    :param kwargs: as for :class:`MultiInputActorCriticPolicy` (``net_arch`` is unused).
    """

    def __init__(self, *args: Any, node_hidden: int = 64, **kwargs: Any) -> None:
        self.node_hidden = node_hidden
        kwargs.setdefault("features_extractor_class", NodeGCNExtractor)
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "node_hidden": self.node_hidden}

    def _build_mlp_extractor(self) -> None:
        assert isinstance(self.features_extractor, NodeGCNExtractor)
        self.mlp_extractor = NodeStageHead(self.features_extractor, hidden=self.node_hidden)  # type: ignore[assignment]

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
