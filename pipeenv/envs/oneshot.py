"""``PipelinePartitionOneShot-v0``: emit the whole plan in one step (as DRL-PP's policies do).

The action is a stage for every padded node row (``MultiDiscrete([max_stages] * max_nodes)``);
rows past the graph's nodes are ignored. **Repair**: the nodes are taken in canonical order and
each gets its requested stage when that stage keeps the plan completable (the sequential env's
mask, :mod:`pipeenv.envs.assignment`), else the nearest stage that does (the lower one on a tie).
So any action gives a valid plan, and a valid plan is left unchanged. Every changed node counts
as one invalid action: the reward is the terminal reward minus ``invalid_action_penalty`` times
the number of repaired nodes, and ``info["repaired_nodes"]`` says how many there were.

The observation is the sequential env's without the per-step state (no ``stages`` key, the
first :data:`~pipeenv.envs.observation.STATIC_NODE_FEATURES` node features, a shorter context);
its ``action_mask`` ``(max_nodes, max_stages)`` allows, per node, exactly the stages that some
valid plan gives that node: ``s`` with ``s <= n - 1 - descendants`` and
``S - 1 - s <= n - 1 - ancestors`` (stages below need distinct non-descendants, stages above
distinct non-ancestors; a topological order placing the node at a suitable position shows it is
enough). Padded rows allow stage 0 only. The per-node masks do not make a joint choice valid;
the repair does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from pipeenv.envs.assignment import repair_stages
from pipeenv.envs.base import PartitionEnvBase
from pipeenv.envs.episode import Episode
from pipeenv.envs.observation import (
    STATIC_NODE_FEATURES,
    context_features,
    static_node_features,
)
from pipeenv.errors import PipeenvError

__all__ = ["PipelinePartitionOneShotEnv", "node_stage_mask"]


def node_stage_mask(episode: Episode, max_nodes: int, max_stages: int) -> np.ndarray:
    """The ``(max_nodes, max_stages)`` int8 per-node mask of the one-shot env (module doc)."""
    entry = episode.entry
    n, num_stages = entry.graph.num_nodes, episode.settings.num_stages
    stages = np.arange(max_stages)
    low = num_stages - 1 - (n - 1 - entry.ancestors)
    high = n - 1 - entry.descendants
    mask = np.zeros((max_nodes, max_stages), dtype=np.int8)
    mask[:n] = (
        (stages[None, :] >= low[:, None])
        & (stages[None, :] <= high[:, None])
        & (stages[None, :] < num_stages)
    )
    mask[n:, 0] = 1
    return mask


class PipelinePartitionOneShotEnv(PartitionEnvBase):
    """The one-shot partitioning environment (arguments: :class:`PartitionEnvBase`)."""

    env_id = "PipelinePartitionOneShot-v0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observation_space = self.layout.space(sequential=False)
        self.action_space = spaces.MultiDiscrete(
            np.full(self.layout.max_nodes, self.layout.max_stages, dtype=np.int64)
        )
        self._mask = np.zeros((self.layout.max_nodes, self.layout.max_stages), dtype=np.int8)
        self._observation: dict[str, np.ndarray] = {}
        self._done = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``options`` may override the constructor's arguments for it."""
        episode = self._start(seed, options)
        layout = self.layout
        n = episode.entry.graph.num_nodes
        nodes = np.zeros((layout.max_nodes, STATIC_NODE_FEATURES), np.float32)
        nodes[:n] = static_node_features(episode, self.scenario.param_memory_factor)
        edges, edge_mask, node_mask = layout.graph_arrays(episode)
        self._mask = node_stage_mask(episode, layout.max_nodes, layout.max_stages)
        self._observation = {
            "nodes": nodes,
            "node_mask": node_mask,
            "edges": edges,
            "edge_mask": edge_mask,
            "context": context_features(episode, layout, sequential=False),
            "action_mask": self._mask,
        }
        self._done = False
        return self._observe(), {}

    def _observe(self) -> dict[str, np.ndarray]:
        return {key: value.copy() for key, value in self._observation.items()}

    def action_masks(self) -> np.ndarray:
        """The per-node allowed stages, flattened row by row (MaskablePPO's MultiDiscrete form)."""
        return self._mask.reshape(-1).astype(bool)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Repair ``action`` into a valid plan, simulate it and end the episode."""
        episode = self.episode
        if self._done:
            raise PipeenvError(f"{self.env_id}: the episode has ended; call reset()")
        requested = np.asarray(action)
        if requested.shape != (self.layout.max_nodes,) or not np.issubdtype(
            requested.dtype, np.integer
        ):
            raise PipeenvError(
                f"{self.env_id}: the action must be {self.layout.max_nodes} integer stages, got "
                f"shape {requested.shape} of {requested.dtype}"
            )
        graph = episode.entry.graph
        a = graph.arrays
        stages, repaired = repair_stages(
            np.clip(requested[: graph.num_nodes], -1, self.layout.max_stages).astype(np.int64),
            episode.settings.num_stages,
            a.costs,
            a.pred_ptr,
            a.pred_idx,
        )
        self._actions.append(requested.tolist())
        self._invalid = int(repaired)
        self._done = True
        reward, info = self._finish(stages, -self.invalid_action_penalty * repaired)
        info["repaired_nodes"] = int(repaired)
        info["stages"] = stages
        return self._observe(), reward, True, False, info
