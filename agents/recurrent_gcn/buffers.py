"""A recurrent rollout buffer that also keeps each step's action mask.

sb3-contrib's :class:`RecurrentDictRolloutBuffer` cuts the rollout into sequences (split at
episode starts and between environments) and pads them to one length; this subclass stores the
invalid-action mask of every step, as :class:`MaskableDictRolloutBuffer` does for feed-forward
policies, and returns it cut and padded like the other fields. Padded steps get an all-allowed
mask, so their (ignored) log-probabilities stay finite.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["MaskableRecurrentDictRolloutBuffer", "MaskableRecurrentDictRolloutBufferSamples"]


class MaskableRecurrentDictRolloutBufferSamples(NamedTuple):
    """sb3-contrib's recurrent samples plus ``action_masks`` ``(padded batch, mask dims)``."""

    observations: TensorDict
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    lstm_states: RNNStates
    episode_starts: th.Tensor
    mask: th.Tensor
    action_masks: th.Tensor


def mask_dims(action_space: spaces.Space) -> int:
    """Length of a flat action mask: one entry per choice of every discrete sub-action."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    raise ValueError(f"action masking needs a Discrete or MultiDiscrete space, got {action_space}")


class MaskableRecurrentDictRolloutBuffer(RecurrentDictRolloutBuffer):
    """:class:`RecurrentDictRolloutBuffer` that stores action masks (see the module docstring).

    Arguments as for :class:`RecurrentDictRolloutBuffer`.
    """

    action_masks: np.ndarray

    def reset(self) -> None:
        self.mask_dims = mask_dims(self.action_space)
        self.action_masks = np.ones((self.buffer_size, self.n_envs, self.mask_dims), np.float32)
        super().reset()

    def add(self, *args: Any, action_masks: np.ndarray | None = None, **kwargs: Any) -> None:
        """Store one step; ``action_masks`` ``(n_envs, mask dims)`` (None: all allowed)."""
        if action_masks is not None:
            self.action_masks[self.pos] = np.asarray(action_masks).reshape(
                self.n_envs, self.mask_dims
            )
        super().add(*args, **kwargs)

    def get(  # type: ignore[override]
        self, batch_size: int | None = None
    ) -> Generator[MaskableRecurrentDictRolloutBufferSamples, None, None]:
        if not self.generator_ready:
            # The parent flattens its own fields (env-major) the first time it is iterated.
            self.action_masks = self.swap_and_flatten(self.action_masks)
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(  # type: ignore[override]
        self,
        batch_inds: np.ndarray,
        env_change: np.ndarray,
        env: VecNormalize | None = None,
    ) -> MaskableRecurrentDictRolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env_change, env)
        # ``self.pad`` was just built for this minibatch's sequences by the parent.
        masks = self.pad(self.action_masks[batch_inds], padding_value=1.0)
        return MaskableRecurrentDictRolloutBufferSamples(
            *samples, action_masks=masks.reshape(-1, self.mask_dims)
        )
