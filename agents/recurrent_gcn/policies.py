"""The policy of ``recurrent-gcn``: sb3-contrib's LSTM actor-critic with a masked distribution.

:class:`MaskableRecurrentGCNPolicy` is :class:`RecurrentMultiInputActorCriticPolicy` (GCN features
-> LSTM -> MLP -> logits, DRL-PP's recurrent partitioner) whose action distribution is
sb3-contrib's :class:`MaskableCategoricalDistribution`: every entry point that builds the
distribution (``forward``, ``get_distribution``, ``evaluate_actions``, ``predict``) takes
``action_masks`` and applies them, so masked stages have probability 0 and log-probability
``-inf`` in the policy's eyes (a huge negative logit in practice). As in ``ppo-gcn``'s head
(:mod:`agents.heads`), a learned prior ``w d_s`` on each stage's distance to the lowest allowed
stage is added to the logits, so the untrained policy mostly keeps the current stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.maskable.distributions import (
    MaskableDistribution,
    make_masked_proba_distribution,
)
from sb3_contrib.common.recurrent.policies import RecurrentMultiInputActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from agents.extractors import GCNExtractor
from agents.heads import STAY_PRIOR, stage_distance

__all__ = ["MaskableRecurrentGCNPolicy"]

Masks = th.Tensor | np.ndarray | None


class MaskableRecurrentGCNPolicy(RecurrentMultiInputActorCriticPolicy):
    """Recurrent multi-input actor-critic with invalid-action masking and the GCN extractor.

    Defaults: :class:`~agents.extractors.GCNExtractor`, an LSTM of 64 units for the actor and one
    for the critic, one 64-unit layer after each.

    :param kwargs: as for :class:`RecurrentMultiInputActorCriticPolicy`.
    """

    action_dist: MaskableDistribution

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", GCNExtractor)
        kwargs.setdefault("lstm_hidden_size", 64)
        kwargs.setdefault("net_arch", {"pi": [64], "vf": [64]})
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        # The parent sizes ``action_net`` from a plain categorical distribution, which has the
        # same logits layer; only the distribution object is swapped for the maskable one.
        super()._build(lr_schedule)
        self.action_dist = make_masked_proba_distribution(self.action_space)
        # Made here so that the optimizer the recurrent parent builds next includes it.
        self.stay_prior = nn.Parameter(th.tensor(STAY_PRIOR))

    def _latents(
        self, obs: Any, lstm_states: Any, episode_starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, RNNStates]:
        """Actor and critic latents after the LSTMs and MLPs, and the new LSTM states."""
        # sb3-contrib's annotations of the LSTM helpers are looser than their values.
        features: Any = self.extract_features(obs)
        if self.share_features_extractor:
            pi_features = vf_features = features
        else:
            pi_features, vf_features = features
        states_pi: Any
        states_vf: Any
        latent_pi, states_pi = self._process_sequence(
            pi_features, lstm_states.pi, episode_starts, self.lstm_actor
        )
        if self.lstm_critic is not None:
            latent_vf, states_vf = self._process_sequence(
                vf_features, lstm_states.vf, episode_starts, self.lstm_critic
            )
        elif self.shared_lstm:
            latent_vf = latent_pi.detach()
            states_vf = (states_pi[0].detach(), states_pi[1].detach())
        else:
            assert self.critic is not None
            latent_vf, states_vf = self.critic(vf_features), states_pi
        return (
            self.mlp_extractor.forward_actor(latent_pi),
            self.mlp_extractor.forward_critic(latent_vf),
            RNNStates(states_pi, states_vf),
        )

    def _masked(self, latent_pi: th.Tensor, obs: Any, action_masks: Masks) -> MaskableDistribution:
        """The action distribution: ``action_net`` logits plus the stay prior, masked."""
        logits = self.action_net(latent_pi) + self.stay_prior * stage_distance(obs["action_mask"])
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        if action_masks is not None:
            distribution.apply_masking(action_masks)
        return distribution

    def forward(  # type: ignore[override]
        self,
        obs: Any,
        lstm_states: RNNStates,
        episode_starts: th.Tensor,
        deterministic: bool = False,
        action_masks: Masks = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, RNNStates]:
        """Actions, values, log-probabilities and new LSTM states (actions drawn under masks)."""
        latent_pi, latent_vf, states = self._latents(obs, lstm_states, episode_starts)
        distribution = self._masked(latent_pi, obs, action_masks)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        values = self.value_net(latent_vf)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob, states  # type: ignore[misc]

    def get_distribution(  # type: ignore[override]
        self,
        obs: Any,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        action_masks: Masks = None,
    ) -> tuple[MaskableDistribution, tuple[th.Tensor, ...]]:
        """The masked action distribution and the actor's new LSTM states."""
        # BasePolicy's extract_features with the actor's extractor (ActorCriticPolicy's own
        # returns both actor and critic features).
        features = super(ActorCriticPolicy, self).extract_features(obs, self.pi_features_extractor)
        states: Any
        latent_pi, states = self._process_sequence(
            features, lstm_states, episode_starts, self.lstm_actor
        )
        latent_pi = self.mlp_extractor.forward_actor(latent_pi)
        return self._masked(latent_pi, obs, action_masks), states

    def evaluate_actions(  # type: ignore[override]
        self,
        obs: Any,
        actions: th.Tensor,
        lstm_states: RNNStates,
        episode_starts: th.Tensor,
        action_masks: Masks = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Values, log-probabilities of ``actions`` and entropies, under ``action_masks``."""
        latent_pi, latent_vf, _ = self._latents(obs, lstm_states, episode_starts)
        distribution = self._masked(latent_pi, obs, action_masks)
        entropy = distribution.entropy()
        assert entropy is not None
        return self.value_net(latent_vf), distribution.log_prob(actions), entropy

    def _predict(  # type: ignore[override]
        self,
        observation: Any,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        deterministic: bool = False,
        action_masks: Masks = None,
    ) -> tuple[th.Tensor, tuple[th.Tensor, ...]]:
        distribution, states = self.get_distribution(
            observation, lstm_states, episode_starts, action_masks
        )
        return distribution.get_actions(deterministic=deterministic), states

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Actions for ``observation`` (one or a batch) under ``action_masks``, and the next
        LSTM state (zeros when ``state`` is None)."""
        self.set_training_mode(False)
        obs_tensor, vectorized = self.obs_to_tensor(observation)
        first = next(iter(obs_tensor.values())) if isinstance(obs_tensor, dict) else obs_tensor
        n_envs = first.shape[0]
        if state is None:
            layers, _, hidden = self.lstm_hidden_state_shape
            zeros = np.zeros((layers, n_envs, hidden))
            state = (zeros, zeros)
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        with th.no_grad():
            states = (
                th.as_tensor(state[0], dtype=th.float32, device=self.device),
                th.as_tensor(state[1], dtype=th.float32, device=self.device),
            )
            starts = th.as_tensor(episode_start, dtype=th.float32, device=self.device)
            actions, new_states = self._predict(
                obs_tensor, states, starts, deterministic=deterministic, action_masks=action_masks
            )
        out = actions.cpu().numpy().reshape((-1, *(self.action_space.shape or ())))
        if not vectorized:
            out = out.squeeze(axis=0)
        return out, (new_states[0].cpu().numpy(), new_states[1].cpu().numpy())
