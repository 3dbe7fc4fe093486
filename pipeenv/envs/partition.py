"""``PipelinePartition-v0``: place a graph's nodes on pipeline stages one step per node.

An episode visits the nodes of the partitioned graph (the original one, coarsened to
``max_nodes`` if larger) in canonical order; the action is the node's stage. The allowed stages
(``action_masks()``, also in the observation) are exactly those that keep the plan completable
(:mod:`pipeenv.envs.assignment`). Any other action is replaced by the nearest allowed stage (the
lower one on a tie), flagged in ``info["invalid_action"]``, counted, and penalised by
``invalid_action_penalty``. The last step simulates the plan and pays the terminal reward
(:mod:`pipeenv.envs.reward`); its ``info`` holds the plan, the result and the reference figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from pipeenv.envs.assignment import assign_node, stage_mask
from pipeenv.envs.base import PartitionEnvBase
from pipeenv.envs.observation import SequentialObservation
from pipeenv.errors import PipeenvError

__all__ = ["PipelinePartitionEnv", "nearest_allowed"]


def nearest_allowed(action: int, mask: np.ndarray) -> int:
    """The allowed stage closest to ``action`` (the lower one on a tie)."""
    allowed = np.flatnonzero(mask)
    return int(allowed[np.argmin(np.abs(allowed - action))])


def _action_int(action: Any) -> int:
    if isinstance(action, np.ndarray):
        if action.size != 1:
            raise PipeenvError(
                f"PipelinePartition-v0: an action is one stage, got shape {action.shape}"
            )
        action = action.reshape(-1)[0]
    try:
        return int(action)
    except (TypeError, ValueError):
        raise PipeenvError(
            f"PipelinePartition-v0: an action must be a stage index, got {action!r}"
        ) from None


class PipelinePartitionEnv(PartitionEnvBase):
    """The sequential partitioning environment (arguments: :class:`PartitionEnvBase`).

    Observation: :mod:`pipeenv.envs.observation` (``Dict`` of padded boxes). Action:
    ``Discrete(max_stages)``, the current node's stage. Reward: ``-invalid_action_penalty`` on a
    step whose action was not allowed, plus the terminal reward on the last step.
    """

    env_id = "PipelinePartition-v0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observation_space = self.layout.space(sequential=True)
        self.action_space = spaces.Discrete(self.layout.max_stages)
        self._obs = SequentialObservation(self.layout, self.scenario.param_memory_factor)
        k = self.layout.max_stages
        self._mask = np.zeros(k, dtype=np.int8)
        self._node = 0
        self._stage_of = np.zeros(0, dtype=np.int64)
        self._lower = np.zeros(0, dtype=np.int64)
        self._reach = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(k, dtype=np.int64)
        self._sums = np.zeros((4, k))
        self._send = np.zeros(k)
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            np.zeros((5, 0)),
            np.zeros(1, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; ``options`` may override the constructor's arguments for it.

        :raises PipeenvError: on an unknown option or a bad value.
        """
        episode = self._start(seed, options)
        graph = episode.entry.graph
        n = graph.num_nodes
        self._node = 0
        self._stage_of = np.full(n, -1, dtype=np.int64)
        self._lower = np.zeros(n, dtype=np.int64)
        self._reach = np.zeros(n, dtype=np.int64)
        self._counts[:] = 0
        self._sums[:] = 0.0
        self._send[:] = 0.0
        a = graph.arrays
        self._arrays = (a.costs, a.pred_ptr, a.pred_idx)
        stage_mask(
            0,
            episode.settings.num_stages,
            a.pred_ptr,
            a.pred_idx,
            self._lower,
            self._counts,
            self._mask,
        )
        self._obs.reset(episode)
        return self._obs.observe(self._mask), {"node": graph.order[0]}

    def action_masks(self) -> np.ndarray:
        """The allowed stages of the current node, as booleans (what MaskablePPO calls)."""
        return self._mask.astype(bool)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Put the current node on stage ``action`` (or the nearest allowed stage)."""
        episode = self.episode
        node, n = self._node, self._stage_of.shape[0]
        if node >= n:
            raise PipeenvError(f"{self.env_id}: the episode has ended; call reset()")
        requested = _action_int(action)
        mask = self._mask
        invalid = not (0 <= requested < mask.shape[0] and mask[requested])
        # Clipping keeps the nearest stage and the arithmetic within int64.
        clipped = min(max(requested, -1), mask.shape[0])
        stage = nearest_allowed(clipped, mask) if invalid else requested
        costs, pred_ptr, pred_idx = self._arrays
        assign_node(
            node,
            stage,
            costs,
            pred_ptr,
            pred_idx,
            self._stage_of,
            self._lower,
            self._reach,
            self._counts,
            self._sums,
            self._send,
        )
        self._obs.update(node, stage, self._lower, self._counts, self._sums, self._send)
        self._actions.append(requested)
        info: dict[str, Any] = {
            "node": episode.entry.graph.order[node],
            "stage": stage,
            "invalid_action": invalid,
        }
        reward = 0.0
        if invalid:
            self._invalid += 1
            reward = -self.invalid_action_penalty
        self._node = node + 1
        terminated = self._node == n
        if terminated:
            mask[:] = 0
            reward, final = self._finish(self._stage_of, reward)
            info.update(final)
        else:
            self._return += reward
            stage_mask(
                self._node,
                episode.settings.num_stages,
                pred_ptr,
                pred_idx,
                self._lower,
                self._counts,
                mask,
            )
        return self._obs.observe(mask), reward, terminated, False, info

    @property
    def stages(self) -> np.ndarray:
        """Stage of every node of the partitioned graph so far (-1: unassigned); a copy."""
        return self._stage_of.copy()

    def _stage_loads(self) -> np.ndarray:
        episode = self.episode
        num_stages = episode.settings.num_stages
        loads = np.zeros((num_stages, 3))
        loads[:, 0] = self._counts[:num_stages]
        loads[:, 1] = (self._sums[0, :num_stages] + self._sums[1, :num_stages]) / episode.speed
        factor = self.scenario.param_memory_factor
        loads[:, 2] = (
            factor * self._sums[2, :num_stages]
            + episode.peak_in_flight * self._sums[3, :num_stages]
        ) / episode.memory_bytes
        return loads
