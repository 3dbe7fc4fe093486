"""Policy heads that keep the structure of the partitioning problem: one score per stage, or one
stage distribution per node, from shared weights.

SB3's actor-critic policies map features through an MLP (the ``mlp_extractor``) to a latent
vector, then through ``action_net`` to the action logits. These modules take both places:

- :class:`StageScorer` + :class:`StageLogits` (sequential env): every stage s is scored by the
  same network from its own state (compute, memory, send, share of nodes, allowed), its distance
  ``d_s = s - s_min`` to the lowest allowed stage, and what all stages share (graph summary,
  current node's embedding, context, compute placed so far). A learned prior ``w d_s``
  (``w`` starts at :data:`STAY_PRIOR`) makes the untrained policy mostly keep the current stage
  and advance now and then, so its first plans spread nodes over the stages instead of piling
  them on the last one.
- :class:`NodeStageHead` (one-shot env): every node's stage logits from its embedding and the
  graph summary, padded nodes and disallowed stages masked out.

The critic is a plain MLP on the full features in both.
"""

from __future__ import annotations

from itertools import pairwise

import torch as th
from torch import nn

from agents.extractors import GCNExtractor, NodeGCNExtractor

__all__ = ["STAY_PRIOR", "NodeStageHead", "StageLogits", "StageScorer", "mlp", "stage_distance"]

#: Initial weight of the distance to the lowest allowed stage in a stage's logit.
STAY_PRIOR = -3.0
_MASKED = -1e8


def stage_distance(mask: th.Tensor) -> th.Tensor:
    """``(B, K)``: each stage's index minus the lowest allowed one (0 when nothing is allowed).

    :param mask: ``(B, K)`` action masks, nonzero where allowed.
    """
    batch, k = mask.shape
    index = th.arange(k, device=mask.device, dtype=th.float32).expand(batch, k)
    lowest = th.where(mask > 0, index, th.full_like(index, float(k))).amin(dim=1, keepdim=True)
    lowest = th.where(lowest >= k, th.zeros_like(lowest), lowest)
    return index - lowest


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` after each."""
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


class StageScorer(nn.Module):
    """The ``mlp_extractor`` of a per-stage policy over :class:`GCNExtractor` features.

    ``forward_actor`` gives, per stage, a latent of ``hidden`` units followed by the distance
    ``d_s`` (flattened to ``(B, K (hidden + 1))``); :class:`StageLogits` turns it into logits.

    :param extractor: the features extractor whose output this reads.
    :param hidden: units of the shared stage network.
    :param critic: hidden layer sizes of the critic.
    """

    def __init__(
        self, extractor: GCNExtractor, hidden: int = 64, critic: tuple[int, ...] = (64, 64)
    ) -> None:
        super().__init__()
        # A reference, not a submodule: the extractor's weights belong to the policy.
        self.extractor = [extractor]
        self.max_stages = extractor.max_stages
        self.hidden = hidden
        shared = 3 * extractor.width + extractor.context_dim + 1
        per_stage = extractor.stage_features + 4 + shared
        self.stage_net = mlp([per_stage, hidden, hidden])
        self.critic_net = mlp([extractor.features_dim, *critic])
        self.latent_dim_pi = self.max_stages * (hidden + 1)
        self.latent_dim_vf = critic[-1]

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        pooled, current, stages, mask, context = self.extractor[0].split(features)
        batch, k = mask.shape
        distance = stage_distance(mask).to(features.dtype)
        placed = stages[:, :, 0].sum(dim=1, keepdim=True)
        shared = th.cat([pooled, current, context, placed], dim=1)
        per_stage = th.cat(
            [
                stages,
                mask.unsqueeze(-1),
                (distance / k).unsqueeze(-1),
                (distance == 0).to(features.dtype).unsqueeze(-1),
                (distance == 1).to(features.dtype).unsqueeze(-1),
                shared.unsqueeze(1).expand(batch, k, shared.shape[1]),
            ],
            dim=2,
        )
        latent = self.stage_net(per_stage)
        return th.cat([latent, distance.unsqueeze(-1)], dim=2).reshape(batch, -1)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.critic_net(features)


class StageLogits(nn.Module):
    """The ``action_net`` paired with :class:`StageScorer`: ``logit_s = v . z_s + w d_s``.

    :param hidden: the scorer's ``hidden``.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.score = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.score.weight, gain=0.01)
        nn.init.zeros_(self.score.bias)
        self.stay_prior = nn.Parameter(th.tensor(STAY_PRIOR))

    def forward(self, latent: th.Tensor) -> th.Tensor:
        per_stage = latent.reshape(latent.shape[0], -1, self.hidden + 1)
        score = self.score(per_stage[:, :, : self.hidden]).squeeze(-1)
        return score + self.stay_prior * per_stage[:, :, self.hidden]


class NodeStageHead(nn.Module):
    """The ``mlp_extractor`` of a one-shot policy: per-node stage logits, ``(B, N K)``.

    Logits come from ``[h_v | graph summary]`` through a network shared by all nodes. Stages the
    observation's action mask forbids get a huge negative logit; a node with no allowed stage (a
    padded row) gets only stage 0, so it adds nothing to log-probabilities or entropy. Use it with
    an identity ``action_net``.

    :param extractor: the features extractor whose output this reads.
    :param hidden: units of the shared node network.
    :param critic: hidden layer sizes of the critic (on the graph summary).
    """

    def __init__(
        self, extractor: NodeGCNExtractor, hidden: int = 64, critic: tuple[int, ...] = (64, 64)
    ) -> None:
        super().__init__()
        self.extractor = [extractor]
        self.max_stages = extractor.max_stages
        self.node_net = nn.Sequential(
            mlp([extractor.width + extractor.summary_dim, hidden]),
            nn.Linear(hidden, extractor.max_stages),
        )
        last = self.node_net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.orthogonal_(last.weight, gain=0.01)
        nn.init.zeros_(last.bias)
        self.critic_net = mlp([extractor.summary_dim, *critic])
        self.latent_dim_pi = extractor.max_nodes * extractor.max_stages
        self.latent_dim_vf = critic[-1]

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        nodes, summary, mask = self.extractor[0].split(features)
        batch, n, _ = nodes.shape
        inputs = th.cat([nodes, summary.unsqueeze(1).expand(batch, n, summary.shape[1])], dim=2)
        logits = self.node_net(inputs)
        allowed = mask > 0
        empty = ~allowed.any(dim=2, keepdim=True)
        first = th.zeros_like(allowed)
        first[:, :, 0] = True
        allowed = allowed | (empty & first)
        logits = th.where(allowed, logits, th.full_like(logits, _MASKED))
        return logits.reshape(batch, -1)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        _, summary, _ = self.extractor[0].split(features)
        return self.critic_net(summary)
