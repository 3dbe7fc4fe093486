"""A graph convolutional encoder of the environments' observations, as SB3 features extractors.

The encoder plays the part of DRL-PP's graph encoder (DRL-PP, "a deep reinforcement learning
(DRL)-based pipeline parallelism framework", https://openreview.net/forum?id=b9aCXHhdbv: a graph
encoder of the operators, followed by a recurrent model partitioner), in the GCN form of Kipf &
Welling ("Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017), made
direction-aware because the operator graph is a DAG:

1. **Embed.** Each node's features (observation ``nodes``) go through a linear layer and a ReLU.
2. **Propagate.** ``num_layers`` rounds; in each, node v receives the messages of its producers
   (forward edges) and of its consumers (backward edges), each weighted by
   ``1 / sqrt(deg_out(u) deg_in(v))`` over the real edges of edge ``u -> v`` (Kipf's symmetric
   normalisation, per direction), and

   ``h_v <- h_v + ReLU(W_self h_v + W_fwd sum_{u->v} w_uv h_u + W_bwd sum_{v->w} w_vw h_w + b)``.

   Padded nodes are held at zero and padded edges carry no message, so padding changes nothing.
3. **Read out.** :class:`GCNExtractor` (sequential env) concatenates the masked mean and max of
   the node embeddings, the embedding of the node being decided (``is_current`` column), the
   per-stage state with the action mask, and the context vector.
   :class:`NodeGCNExtractor` (one-shot env) keeps every node's embedding, for a policy that
   emits one stage distribution per node.

Everything is plain torch over the padded arrays, so it batches like any SB3 extractor.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from pipeenv.envs.observation import COL_CURRENT

__all__ = ["GCNEncoder", "GCNExtractor", "GraphConv", "NodeGCNExtractor", "edge_weights"]

_NEG = -1e9


def edge_weights(
    edges: th.Tensor, edge_mask: th.Tensor, num_nodes: int
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Flat edge endpoints and degree-normalised weights of a batch of padded edge lists.

    :param edges: ``(B, E, 2)`` producer and consumer indices (any numeric dtype).
    :param edge_mask: ``(B, E)``, nonzero for real edges.
    :param num_nodes: N, node rows per graph; endpoints are offset by ``b * N``.
    :return: ``src``, ``dst`` (``(B * E,)`` long, into the ``B * N`` flat nodes) and ``weight``
        (``(B * E,)``, ``1 / sqrt(deg_out(src) deg_in(dst))``, 0 on padded edges).
    """
    batch, num_edges = edge_mask.shape
    real = (edge_mask > 0).to(th.float32).reshape(-1)
    offset = (th.arange(batch, device=edges.device) * num_nodes).repeat_interleave(num_edges)
    src = edges[..., 0].reshape(-1).long() + offset
    dst = edges[..., 1].reshape(-1).long() + offset
    total = batch * num_nodes
    deg_out = th.zeros(total, device=real.device).index_add_(0, src, real)
    deg_in = th.zeros(total, device=real.device).index_add_(0, dst, real)
    weight = real * th.rsqrt(deg_out[src].clamp(min=1.0) * deg_in[dst].clamp(min=1.0))
    return src, dst, weight


class GraphConv(nn.Module):
    """One residual, direction-aware GCN layer (step 2 of the module docstring).

    :param width: embedding size H.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.self_linear = nn.Linear(width, width)
        self.forward_linear = nn.Linear(width, width, bias=False)
        self.backward_linear = nn.Linear(width, width, bias=False)

    def forward(
        self, h: th.Tensor, src: th.Tensor, dst: th.Tensor, weight: th.Tensor, node_mask: th.Tensor
    ) -> th.Tensor:
        """``h`` ``(B * N, H)`` after one round of messages; padded rows stay zero."""
        w = weight.unsqueeze(1)
        from_producers = th.zeros_like(h).index_add_(0, dst, w * h[src])
        from_consumers = th.zeros_like(h).index_add_(0, src, w * h[dst])
        update = th.relu(
            self.self_linear(h)
            + self.forward_linear(from_producers)
            + self.backward_linear(from_consumers)
        )
        return (h + update) * node_mask


class GCNEncoder(nn.Module):
    """Node embeddings ``(B, N, H)`` of a batch of padded graphs (steps 1 and 2).

    :param in_features: node feature columns.
    :param width: embedding size H.
    :param num_layers: rounds of message passing (the receptive field in hops).
    """

    def __init__(self, in_features: int, width: int, num_layers: int) -> None:
        super().__init__()
        if width < 1 or num_layers < 0:
            raise ValueError(
                f"GCN: width must be >= 1 and num_layers >= 0, got {width}, {num_layers}"
            )
        self.width = width
        self.embed = nn.Linear(in_features, width)
        self.layers = nn.ModuleList(GraphConv(width) for _ in range(num_layers))

    def forward(
        self, nodes: th.Tensor, node_mask: th.Tensor, edges: th.Tensor, edge_mask: th.Tensor
    ) -> th.Tensor:
        """Embeddings of every node; rows of padded nodes are zero.

        :param nodes: ``(B, N, F)`` features.
        :param node_mask: ``(B, N)``, nonzero for real nodes.
        :param edges: ``(B, E, 2)`` producer, consumer indices.
        :param edge_mask: ``(B, E)``, nonzero for real edges.
        """
        batch, num_nodes, _ = nodes.shape
        mask = (node_mask > 0).to(nodes.dtype).reshape(batch * num_nodes, 1)
        h = th.relu(self.embed(nodes.reshape(batch * num_nodes, -1))) * mask
        src, dst, weight = edge_weights(edges, edge_mask, num_nodes)
        for layer in self.layers:
            h = layer(h, src, dst, weight, mask)
        return h.reshape(batch, num_nodes, self.width)


def masked_pool(h: th.Tensor, node_mask: th.Tensor) -> th.Tensor:
    """``(B, 2H)``: mean and max of the real nodes' embeddings."""
    real = (node_mask > 0).unsqueeze(-1)
    count = real.sum(dim=1).clamp(min=1)
    mean = (h * real).sum(dim=1) / count
    peak = h.masked_fill(~real, _NEG).amax(dim=1)
    peak = th.where(real.any(dim=1), peak, th.zeros_like(peak))
    return th.cat([mean, peak], dim=1)


class _GraphExtractorBase(BaseFeaturesExtractor):
    """Shared set-up: the observation layout and the encoder."""

    def __init__(
        self, observation_space: gym.spaces.Dict, features_dim: int, width: int, num_layers: int
    ) -> None:
        super().__init__(observation_space, features_dim)
        node_space = observation_space["nodes"]
        assert node_space.shape is not None
        self.max_nodes, self.node_features = int(node_space.shape[0]), int(node_space.shape[1])
        self.encoder = GCNEncoder(self.node_features, width, num_layers)

    def encode(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Node embeddings ``(B, N, H)`` of a batch of observations."""
        return self.encoder(obs["nodes"], obs["node_mask"], obs["edges"], obs["edge_mask"])


def _flat_size(space: gym.Space) -> int:
    assert space.shape is not None
    size = 1
    for dim in space.shape:
        size *= int(dim)
    return size


class GCNExtractor(_GraphExtractorBase):
    """Features of a sequential-env observation: graph summary, current node, stage state.

    Output ``[mean(h) | max(h) | h_current | stages, action_mask | context]``, of size
    ``3 H + K (stage features + 1) + context features``.

    :param observation_space: the ``Dict`` space of ``PipelinePartition-v0``.
    :param width: embedding size H.
    :param num_layers: GCN rounds.
    """

    def __init__(
        self, observation_space: gym.spaces.Dict, *, width: int = 64, num_layers: int = 3
    ) -> None:
        stage_space = observation_space["stages"]
        assert stage_space.shape is not None
        self.max_stages, self.stage_features = (int(d) for d in stage_space.shape)
        self.width = width
        state = self.max_stages * (self.stage_features + 1)
        self.context_dim = _flat_size(observation_space["context"])
        super().__init__(observation_space, 3 * width + state + self.context_dim, width, num_layers)

    def split(
        self, features: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """The parts of :meth:`forward`'s output: ``(B, 2H)`` pooled graph, ``(B, H)`` current
        node, ``(B, K, stage features)`` stages, ``(B, K)`` action mask, ``(B, C)`` context."""
        batch, width, k = features.shape[0], self.width, self.max_stages
        ends = np.cumsum([2 * width, width, k * self.stage_features, k])
        return (
            features[:, : ends[0]],
            features[:, ends[0] : ends[1]],
            features[:, ends[1] : ends[2]].reshape(batch, k, self.stage_features),
            features[:, ends[2] : ends[3]],
            features[:, ends[3] :],
        )

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        h = self.encode(observations)
        current = observations["nodes"][:, :, COL_CURRENT].unsqueeze(-1)
        batch = h.shape[0]
        return th.cat(
            [
                masked_pool(h, observations["node_mask"]),
                (h * current).sum(dim=1),
                observations["stages"].reshape(batch, -1),
                observations["action_mask"].reshape(batch, -1).to(h.dtype),
                observations["context"].reshape(batch, -1),
            ],
            dim=1,
        )


class NodeGCNExtractor(_GraphExtractorBase):
    """Features of a one-shot observation, keeping every node: for per-node stage heads.

    Output ``[h_0 .. h_{N-1} | mean(h) | max(h) | context | action_mask]`` flattened, of size
    ``N H + 2 H + context features + N K``; :meth:`split` takes it apart again.

    :param observation_space: the ``Dict`` space of ``PipelinePartitionOneShot-v0``.
    :param width: embedding size H.
    :param num_layers: GCN rounds.
    """

    def __init__(
        self, observation_space: gym.spaces.Dict, *, width: int = 64, num_layers: int = 3
    ) -> None:
        mask_space = observation_space["action_mask"]
        assert mask_space.shape is not None
        self.max_stages = int(mask_space.shape[1])
        n = int(mask_space.shape[0])
        self.width = width
        self.context_dim = _flat_size(observation_space["context"])
        self.summary_dim = 2 * width + self.context_dim
        size = n * width + self.summary_dim + n * self.max_stages
        super().__init__(observation_space, size, width, num_layers)

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        h = self.encode(observations)
        batch = h.shape[0]
        return th.cat(
            [
                h.reshape(batch, -1),
                masked_pool(h, observations["node_mask"]),
                observations["context"].reshape(batch, -1),
                observations["action_mask"].reshape(batch, -1).to(h.dtype),
            ],
            dim=1,
        )

    def split(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``(B, N, H)`` node embeddings, ``(B, 2H + C)`` summary, ``(B, N, K)`` action mask."""
        batch, n, width = features.shape[0], self.max_nodes, self.width
        nodes_end = n * width
        summary_end = nodes_end + self.summary_dim
        return (
            features[:, :nodes_end].reshape(batch, n, width),
            features[:, nodes_end:summary_end],
            features[:, summary_end:].reshape(batch, n, self.max_stages),
        )
