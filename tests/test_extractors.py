"""The GCN extractors: shapes, degree normalisation, message directions, padding invariance."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from agents.extractors import (
    GCNEncoder,
    GCNExtractor,
    GraphConv,
    NodeGCNExtractor,
    edge_weights,
)
from agents.heads import NodeStageHead, StageLogits, StageScorer
from pipeenv.envs.oneshot import PipelinePartitionOneShotEnv
from pipeenv.envs.partition import PipelinePartitionEnv

th.set_num_threads(1)

ENV_KWARGS = {"graph": "vgg16", "cluster": "4xA100-nvlink", "num_stages": 3, "microbatches": 8,
              "max_nodes": 24, "max_stages": 4}


def _space(env: PipelinePartitionEnv | PipelinePartitionOneShotEnv) -> gym.spaces.Dict:
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    return space


def _batch(obs: dict[str, np.ndarray]) -> dict[str, th.Tensor]:
    return {k: th.as_tensor(v[None]).float() for k, v in obs.items()}


def _padded(edges: list[tuple[int, int]], num_nodes: int, max_nodes: int, max_edges: int,
            features: np.ndarray) -> tuple[th.Tensor, ...]:
    """One graph as a batch of one padded observation (zeros past the real rows)."""
    nodes = th.zeros(1, max_nodes, features.shape[1])
    nodes[0, :num_nodes] = th.as_tensor(features, dtype=th.float32)
    node_mask = th.zeros(1, max_nodes)
    node_mask[0, :num_nodes] = 1
    edge_arr = th.zeros(1, max_edges, 2)
    edge_arr[0, : len(edges)] = th.as_tensor(edges, dtype=th.float32)
    edge_mask = th.zeros(1, max_edges)
    edge_mask[0, : len(edges)] = 1
    return nodes, node_mask, edge_arr, edge_mask


def test_edge_weights_are_symmetric_degree_normalised() -> None:
    # Diamond 0 -> {1, 2} -> 3, plus a padded edge that must weigh nothing.
    edges = th.tensor([[[0, 1], [0, 2], [1, 3], [2, 3], [3, 3]]], dtype=th.float32)
    mask = th.tensor([[1, 1, 1, 1, 0]])
    src, dst, weight = edge_weights(edges, mask, num_nodes=4)
    assert src.tolist() == [0, 0, 1, 2, 3] and dst.tolist() == [1, 2, 3, 3, 3]
    expected = [1 / math.sqrt(2 * 1), 1 / math.sqrt(2 * 1), 1 / math.sqrt(1 * 2),
                1 / math.sqrt(1 * 2), 0.0]
    assert weight.tolist() == pytest.approx(expected)


def test_edge_weights_offset_each_graph_of_a_batch() -> None:
    edges = th.tensor([[[0, 1]], [[0, 1]]], dtype=th.float32)
    src, dst, _ = edge_weights(edges, th.ones(2, 1), num_nodes=3)
    assert src.tolist() == [0, 3] and dst.tolist() == [1, 4]


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("width", [4, 16])
def test_padding_does_not_change_real_embeddings(width: int, num_layers: int) -> None:
    th.manual_seed(0)
    encoder = GCNEncoder(3, width, num_layers)
    rng = np.random.default_rng(0)
    features = rng.uniform(size=(5, 3))
    edges = [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)]
    small = encoder(*_padded(edges, 5, 5, 5, features))
    nodes, node_mask, edge_arr, edge_mask = _padded(edges, 5, 9, 12, features)
    # Garbage in every padded row and edge: masked, so it must not matter.
    nodes[0, 5:] = th.rand(4, 3) * 100
    edge_arr[0, 5:] = th.randint(0, 9, (7, 2)).float()
    large = encoder(nodes, node_mask, edge_arr, edge_mask)
    assert th.allclose(small[0], large[0, :5], atol=1e-5)
    assert th.all(large[0, 5:] == 0)


def _chain_embeddings(encoder: GCNEncoder, features: np.ndarray) -> th.Tensor:
    return encoder(*_padded([(0, 1), (1, 2)], 3, 3, 2, features))[0]


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_messages_flow_along_and_against_edges(direction: str) -> None:
    """Chain 0 -> 1 -> 2, one round: node 1 hears node 0 through the forward weights and node 2
    through the backward ones; node 0 and node 2 never hear each other."""
    th.manual_seed(0)
    encoder = GCNEncoder(2, 8, 1)
    base = np.array([[0.2, 0.1], [0.3, 0.4], [0.5, 0.6]])
    source, other = (0, 2) if direction == "forward" else (2, 0)
    moved = base.copy()
    moved[source] += 5.0
    before, after = _chain_embeddings(encoder, base), _chain_embeddings(encoder, moved)
    assert not th.allclose(before[1], after[1])
    assert th.allclose(before[other], after[other])
    # Without the weights of that direction, node 1 no longer hears the perturbed node.
    layer = encoder.layers[0]
    assert isinstance(layer, GraphConv)
    silenced = layer.forward_linear if direction == "forward" else layer.backward_linear
    with th.no_grad():
        silenced.weight.zero_()
    before, after = _chain_embeddings(encoder, base), _chain_embeddings(encoder, moved)
    assert th.allclose(before[1], after[1])


@pytest.mark.parametrize("num_layers", [0, 2])
@pytest.mark.parametrize("width", [8, 32])
def test_gcn_extractor_shapes_on_the_sequential_env(width: int, num_layers: int) -> None:
    env = PipelinePartitionEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=0)
    extractor = GCNExtractor(_space(env), width=width, num_layers=num_layers)
    features = extractor(_batch(obs))
    assert features.shape == (1, extractor.features_dim)
    pooled, current, stages, mask, context = extractor.split(features)
    assert pooled.shape == (1, 2 * width) and current.shape == (1, width)
    assert stages.shape == (1, 4, 5) and mask.shape == (1, 4) and context.shape == (1, 7)
    assert mask[0].tolist() == obs["action_mask"].astype(float).tolist()
    h = extractor.encode(_batch(obs))
    assert th.allclose(current[0], h[0, 0])  # node 0 is the first decided


def test_gcn_extractor_ignores_padded_rows_of_an_observation() -> None:
    env = PipelinePartitionEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=0)
    th.manual_seed(0)
    extractor = GCNExtractor(_space(env), width=16, num_layers=2)
    garbage = {k: v.copy() for k, v in obs.items()}
    n = int(obs["node_mask"].sum())
    m = int(obs["edge_mask"].sum())
    garbage["nodes"][n:] = 7.0
    garbage["edges"][m:] = np.arange(garbage["edges"][m:].size).reshape(-1, 2) % n
    assert th.allclose(extractor(_batch(obs)), extractor(_batch(garbage)))


def test_stage_scorer_prefers_the_lowest_allowed_stage_untrained() -> None:
    env = PipelinePartitionEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=0)
    th.manual_seed(0)
    extractor = GCNExtractor(_space(env), width=8, num_layers=1)
    scorer, logits_net = StageScorer(extractor, hidden=8), StageLogits(8)
    logits = logits_net(scorer.forward_actor(extractor(_batch(obs))))[0]
    allowed = np.flatnonzero(obs["action_mask"])
    assert logits.shape == (4,)
    assert int(th.argmax(logits[allowed])) == 0  # the stay prior
    assert scorer.forward_critic(extractor(_batch(obs))).shape == (1, 64)


def test_node_extractor_and_head_on_the_one_shot_env() -> None:
    env = PipelinePartitionOneShotEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=0)
    th.manual_seed(0)
    extractor = NodeGCNExtractor(_space(env), width=8, num_layers=2)
    features = extractor(_batch(obs))
    nodes, summary, mask = extractor.split(features)
    assert nodes.shape == (1, 24, 8) and summary.shape == (1, 16 + 5) and mask.shape == (1, 24, 4)
    head = NodeStageHead(extractor, hidden=8)
    logits = head.forward_actor(features).reshape(24, 4)
    allowed = th.as_tensor(obs["action_mask"]) > 0
    assert th.all(logits[~allowed] <= -1e7)
    assert th.all(logits[allowed] > -1e7)
    n = int(obs["node_mask"].sum())
    assert th.all(logits[n:, 1:] <= -1e7)  # padded nodes: stage 0 only
