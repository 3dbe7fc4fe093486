"""Observations of the environments: a ``Dict`` of padded ``Box`` arrays that SB3 can batch.

Keys (``N = max_nodes``, ``K = max_stages``, ``E = max_edges``, ``n`` the nodes of the graph the
agent partitions, ``S`` the episode's stages; rows past ``n``, ``S`` or the edge count are zero):

- ``nodes`` ``(N, len(NODE_FEATURES))`` float32, one row per node in canonical order. Times are
  in units of the balanced stage time ``sum(forward_s + backward_s) / sum(stage device speeds)``,
  memory in units of the smallest device memory of the pipeline:

  ``forward``, ``backward``: the node's seconds over the balanced stage time; ``output_transfer``:
  ``output_bytes`` over the slowest pipeline link's bandwidth, in balanced stage times;
  ``param_memory``: ``param_memory_factor * param_bytes``; ``activation_memory``:
  ``activation_bytes`` times the most microbatches in flight on a stage (stage 0's); ``depth``,
  ``height``: longest path from a source / to a sink, over the graph's largest; ``log_in_degree``,
  ``log_out_degree``: ``log(1 + degree)``; ``position``: canonical index over ``n - 1``.
  Sequential env only: ``assigned`` (0/1), ``stage`` (assigned stage over ``S - 1``, 0 while
  unassigned), ``is_current`` (the node this step decides), ``min_stage`` (lowest stage the node
  may still take, over ``S - 1``; its stage once assigned).
- ``edges`` ``(E, 2)``, the narrowest unsigned integer dtype holding ``N - 1``: (producer,
  consumer) canonical indices, sorted; ``edge_mask`` ``(E,)`` int8 marks the real ones.
- ``node_mask`` ``(N,)`` int8: 1 for the ``n`` real nodes.
- ``stages`` ``(K, len(STAGE_FEATURES))`` float32 (sequential env only), per stage, from the nodes
  assigned so far: ``compute`` (forward+backward seconds on the stage's device, in balanced stage
  times), ``memory`` (SPEC §4 peak memory over the stage's device memory; > 1 is out of memory),
  ``send`` (boundary bytes ``X_s`` committed so far over the link to stage s+1, in balanced stage
  times), ``nodes`` (share of the nodes), ``active`` (1 for ``s < S``).
- ``context`` float32 in [0, 1]: see :data:`CONTEXT_FEATURES` / :data:`ONESHOT_CONTEXT_FEATURES`.
- ``action_mask`` int8: ``(K,)`` allowed stages of the current node (sequential), ``(N, K)``
  allowed stages of every node (one-shot).

Unbounded ratios (time, bytes, memory) are clipped to :data:`FEATURE_CAP` so that every
observation lies in its (finite) space. Every observation holds fresh arrays: nothing returned
is ever written again by the env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from pipeenv.envs.episode import Episode

__all__ = [
    "CONTEXT_FEATURES",
    "FEATURE_CAP",
    "NODE_FEATURES",
    "ONESHOT_CONTEXT_FEATURES",
    "STAGE_FEATURES",
    "STATIC_NODE_FEATURES",
    "Layout",
    "SequentialObservation",
    "balanced_stage_s",
    "context_features",
    "edge_dtype",
    "static_node_features",
]

#: Upper bound of the node and stage features (ratios beyond it are clipped).
FEATURE_CAP = 1.0e4

NODE_FEATURES = (
    "forward",
    "backward",
    "output_transfer",
    "param_memory",
    "activation_memory",
    "depth",
    "height",
    "log_in_degree",
    "log_out_degree",
    "position",
    "assigned",
    "stage",
    "is_current",
    "min_stage",
)
#: The leading node features that do not change during an episode (the one-shot env's).
STATIC_NODE_FEATURES = 10
COL_ASSIGNED, COL_STAGE, COL_CURRENT, COL_MIN_STAGE = 10, 11, 12, 13

STAGE_FEATURES = ("compute", "memory", "send", "nodes", "active")

#: ``num_stages`` (S / K), ``progress`` (nodes assigned / n), ``num_nodes`` (n / N),
#: ``ideal_bubble`` ((S - 1) / (M + S - 1)), ``is_1f1b``, ``data_parallel`` (R / devices of the
#: cluster), ``current_min_stage`` (lowest allowed stage of the current node / (S - 1)).
CONTEXT_FEATURES = (
    "num_stages",
    "progress",
    "num_nodes",
    "ideal_bubble",
    "is_1f1b",
    "data_parallel",
    "current_min_stage",
)
ONESHOT_CONTEXT_FEATURES = ("num_stages", "num_nodes", "ideal_bubble", "is_1f1b", "data_parallel")


def edge_dtype(max_nodes: int) -> type[np.unsignedinteger[Any]]:
    """The narrowest unsigned integer dtype that holds node indices ``0 .. max_nodes-1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_nodes - 1 <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


class Layout:
    """Padding sizes of the observation and its space.

    :param max_nodes: N, node rows.
    :param max_stages: K, stage rows and actions.
    :param max_edges: E, edge rows.
    """

    def __init__(self, max_nodes: int, max_stages: int, max_edges: int) -> None:
        self.max_nodes = max_nodes
        self.max_stages = max_stages
        self.max_edges = max_edges
        self.edge_dtype = edge_dtype(max_nodes)

    def space(self, *, sequential: bool) -> spaces.Dict:
        """The observation space of the sequential (or one-shot) env."""
        n, k, e = self.max_nodes, self.max_stages, self.max_edges
        node_cols = len(NODE_FEATURES) if sequential else STATIC_NODE_FEATURES
        context = CONTEXT_FEATURES if sequential else ONESHOT_CONTEXT_FEATURES
        parts: dict[str, spaces.Space[Any]] = {
            "nodes": spaces.Box(0.0, FEATURE_CAP, (n, node_cols), np.float32),
            "node_mask": spaces.Box(0, 1, (n,), np.int8),
            "edges": spaces.Box(0, n - 1, (e, 2), self.edge_dtype),
            "edge_mask": spaces.Box(0, 1, (e,), np.int8),
            "context": spaces.Box(0.0, 1.0, (len(context),), np.float32),
            "action_mask": spaces.Box(0, 1, (k,) if sequential else (n, k), np.int8),
        }
        if sequential:
            parts["stages"] = spaces.Box(0.0, FEATURE_CAP, (k, len(STAGE_FEATURES)), np.float32)
        return spaces.Dict(parts)

    def graph_arrays(self, episode: Episode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded ``edges``, ``edge_mask`` and ``node_mask`` of the episode's graph."""
        graph = episode.entry.graph
        a = graph.arrays
        edges = np.zeros((self.max_edges, 2), dtype=self.edge_dtype)
        order = np.lexsort((a.edge_dst, a.edge_src))
        m = order.size
        edges[:m, 0] = a.edge_src[order]
        edges[:m, 1] = a.edge_dst[order]
        edge_mask = np.zeros(self.max_edges, dtype=np.int8)
        edge_mask[:m] = 1
        node_mask = np.zeros(self.max_nodes, dtype=np.int8)
        node_mask[: graph.num_nodes] = 1
        return edges, edge_mask, node_mask


def balanced_stage_s(episode: Episode) -> float:
    """Seconds of one stage of a perfectly balanced split on this pipeline's devices."""
    total = episode.entry.graph.total_compute_s
    return total / float(episode.speed.sum()) if total > 0 else 1.0


def static_node_features(episode: Episode, param_memory_factor: float) -> np.ndarray:
    """The ``(n, STATIC_NODE_FEATURES)`` float32 features that hold for a whole episode."""
    graph = episode.entry.graph
    a = graph.arrays
    unit_s = balanced_stage_s(episode)
    if episode.bandwidth_Bps.size:
        bandwidth = float(episode.bandwidth_Bps.min())
    else:
        bandwidth = episode.settings.cluster.intra_node.bandwidth_Bps
    memory = float(episode.memory_bytes.min())
    out = np.empty((graph.num_nodes, STATIC_NODE_FEATURES), dtype=np.float32)
    out[:, 0] = a.forward_s / unit_s
    out[:, 1] = a.backward_s / unit_s
    out[:, 2] = a.output_bytes / bandwidth / unit_s
    out[:, 3] = param_memory_factor * a.param_bytes / memory
    out[:, 4] = a.activation_bytes * episode.peak_in_flight.max() / memory
    np.minimum(out[:, :5], FEATURE_CAP, out=out[:, :5])
    out[:, 5:] = episode.entry.structure
    return out


def context_features(episode: Episode, layout: Layout, *, sequential: bool) -> np.ndarray:
    """The episode's context vector (``progress`` and ``current_min_stage`` start at 0)."""
    s = episode.settings
    num_stages = s.num_stages
    values = {
        "num_stages": num_stages / layout.max_stages,
        "progress": 0.0,
        "num_nodes": episode.entry.graph.num_nodes / layout.max_nodes,
        "ideal_bubble": (num_stages - 1) / (s.microbatches + num_stages - 1),
        "is_1f1b": 1.0 if s.schedule == "1f1b" else 0.0,
        "data_parallel": s.data_parallel / s.cluster.num_devices,
        "current_min_stage": 0.0,
    }
    fields = CONTEXT_FEATURES if sequential else ONESHOT_CONTEXT_FEATURES
    return np.array([values[f] for f in fields], dtype=np.float32)


class SequentialObservation:
    """The sequential env's observation, updated in place per step and copied out.

    :param layout: padding sizes.
    :param param_memory_factor: memory bytes per parameter byte.
    """

    def __init__(self, layout: Layout, param_memory_factor: float) -> None:
        self.layout = layout
        self.param_memory_factor = param_memory_factor
        n, k = layout.max_nodes, layout.max_stages
        self.nodes = np.zeros((n, len(NODE_FEATURES)), dtype=np.float32)
        self.stages = np.zeros((k, len(STAGE_FEATURES)), dtype=np.float32)
        self.context = np.zeros(len(CONTEXT_FEATURES), dtype=np.float32)
        self.edges = np.zeros((layout.max_edges, 2), dtype=layout.edge_dtype)
        self.edge_mask = np.zeros(layout.max_edges, dtype=np.int8)
        self.node_mask = np.zeros(n, dtype=np.int8)
        self._num_nodes = 0
        self._num_stages = 1
        self._stage_scale = 1.0
        self._compute_scale = np.ones(k)
        self._memory_scale = np.ones(k)
        self._send_scale = np.ones(k)
        self._param_factor = np.zeros(k)
        self._peak = np.zeros(k)

    def reset(self, episode: Episode) -> None:
        """Fill the arrays for the start of ``episode`` (no node assigned, node 0 current)."""
        layout, s = self.layout, episode.settings
        n, num_stages = episode.entry.graph.num_nodes, s.num_stages
        self._num_nodes = n
        self.nodes[:] = 0.0
        self.nodes[:n, :STATIC_NODE_FEATURES] = static_node_features(
            episode, self.param_memory_factor
        )
        self.nodes[0, COL_CURRENT] = 1.0
        self._stage_scale = 1.0 / max(num_stages - 1, 1)
        self.stages[:] = 0.0
        self.stages[:num_stages, 4] = 1.0
        unit_s = balanced_stage_s(episode)
        self._compute_scale = 1.0 / (episode.speed * unit_s)
        self._memory_scale = 1.0 / episode.memory_bytes
        self._send_scale = 1.0 / (episode.bandwidth_Bps * unit_s)
        self._peak = episode.peak_in_flight
        self._num_stages = num_stages
        self.edges[:], self.edge_mask[:], self.node_mask[:] = layout.graph_arrays(episode)
        self.context[:] = context_features(episode, layout, sequential=True)

    def update(
        self,
        node: int,
        stage: int,
        lower: np.ndarray,
        counts: np.ndarray,
        sums: np.ndarray,
        send_bytes: np.ndarray,
    ) -> None:
        """Record that canonical node ``node`` took ``stage`` (the assignment state is updated)."""
        n, num_stages = self._num_nodes, self._num_stages
        scale = self._stage_scale
        rows = self.nodes
        rows[node, COL_ASSIGNED] = 1.0
        rows[node, COL_STAGE] = stage * scale
        rows[node, COL_CURRENT] = 0.0
        rows[:n, COL_MIN_STAGE] = lower * scale
        nxt = node + 1
        if nxt < n:
            rows[nxt, COL_CURRENT] = 1.0
            self.context[6] = lower[nxt] * scale
        else:
            self.context[6] = 0.0
        self.context[1] = nxt / n
        st = self.stages
        st[:num_stages, 0] = (sums[0, :num_stages] + sums[1, :num_stages]) * self._compute_scale
        st[:num_stages, 1] = (
            self.param_memory_factor * sums[2, :num_stages] + self._peak * sums[3, :num_stages]
        ) * self._memory_scale
        st[: num_stages - 1, 2] = send_bytes[: num_stages - 1] * self._send_scale
        np.minimum(st[:, :3], FEATURE_CAP, out=st[:, :3])
        st[:num_stages, 3] = counts[:num_stages] * (1.0 / n)

    def observe(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """A fresh copy of the observation, with action mask ``mask``."""
        return {
            "nodes": self.nodes.copy(),
            "node_mask": self.node_mask.copy(),
            "edges": self.edges.copy(),
            "edge_mask": self.edge_mask.copy(),
            "context": self.context.copy(),
            "action_mask": mask.copy(),
            "stages": self.stages.copy(),
        }
