"""The policy of ``ppo-gcn``: sb3-contrib's maskable multi-input actor-critic over the GCN, with
one shared scorer per stage (:mod:`agents.heads`)."""

from __future__ import annotations

from typing import Any

from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule

from agents.extractors import GCNExtractor
from agents.heads import StageLogits, StageScorer

__all__ = ["GCNMaskablePolicy"]


class GCNMaskablePolicy(MaskableMultiInputActorCriticPolicy):
    """:class:`MaskableMultiInputActorCriticPolicy` reading the graph through
    :class:`~agents.extractors.GCNExtractor` and scoring stages with
    :class:`~agents.heads.StageScorer` / :class:`~agents.heads.StageLogits`.

    :param stage_hidden: units of the shared stage network.
    :param kwargs: as for :class:`MaskableMultiInputActorCriticPolicy` (``net_arch`` is unused).
    """

    def __init__(self, *args: Any, stage_hidden: int = 64, **kwargs: Any) -> None:
        self.stage_hidden = stage_hidden
        kwargs.setdefault("features_extractor_class", GCNExtractor)
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "stage_hidden": self.stage_hidden}

    def _build_mlp_extractor(self) -> None:
        assert isinstance(self.features_extractor, GCNExtractor)
        self.mlp_extractor = StageScorer(self.features_extractor, hidden=self.stage_hidden)  # type: ignore[assignment]

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = StageLogits(self.stage_hidden)
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
