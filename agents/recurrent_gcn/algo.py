"""``recurrent-gcn``: DRL-PP's recurrent partitioner as a recurrent PPO with action masking.

DRL-PP (https://openreview.net/forum?id=b9aCXHhdbv) encodes the operator graph with a graph
network and places the operators one after another with a recurrent model partitioner. Here the
encoder is :class:`~agents.extractors.GCNExtractor`, the partitioner an LSTM actor-critic
(:class:`~agents.recurrent_gcn.policies.MaskableRecurrentGCNPolicy`) stepping through
``PipelinePartition-v0`` one node at a time, trained with PPO (Schulman et al.,
arXiv:1707.06347) as sb3-contrib's ``RecurrentPPO`` does.

sb3-contrib cannot mask ``RecurrentPPO``. :class:`MaskableRecurrentPPO` adds invalid-action
masking (Huang & Ontañón, FLAIRS 2022) the way ``MaskablePPO`` does it for feed-forward
policies, on sb3-contrib's recurrent classes:

1. **Collection.** At every step the vectorised env's ``action_masks()`` are read and passed to
   the policy, so a masked stage is never drawn; the masks are stored with the step in
   :class:`~agents.recurrent_gcn.buffers.MaskableRecurrentDictRolloutBuffer`.
2. **Loss.** The minibatch sequences carry their masks, and the policy re-evaluates the stored
   actions under them, so the ratio, clipping and entropy are those of the masked policy.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from agents.base import register
from agents.learned import LearnedAgent
from agents.ppo_gcn.algo import PPO_GCN_HYPERPARAMETERS
from agents.recurrent_gcn.buffers import MaskableRecurrentDictRolloutBuffer
from agents.recurrent_gcn.policies import MaskableRecurrentGCNPolicy
from pipeenv.envs.base import PartitionEnvBase
from pipeenv.envs.partition import PipelinePartitionEnv

__all__ = ["RECURRENT_GCN_HYPERPARAMETERS", "MaskableRecurrentPPO", "RecurrentGCN"]


class MaskableRecurrentPPO(RecurrentPPO):
    """Recurrent PPO (LSTM policy) with invalid-action masking; see the module docstring.

    :param policy: :class:`MaskableRecurrentGCNPolicy` (the class or its name).
    :param env: an environment with ``action_masks()`` and a ``Dict`` observation space.
    :param kwargs: as for sb3-contrib's :class:`RecurrentPPO`.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MaskableRecurrentGCNPolicy": MaskableRecurrentGCNPolicy,
    }
    policy: MaskableRecurrentGCNPolicy
    rollout_buffer: MaskableRecurrentDictRolloutBuffer

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, MaskableRecurrentGCNPolicy):
            raise ValueError("MaskableRecurrentPPO needs a MaskableRecurrentGCNPolicy")
        if not isinstance(self.observation_space, spaces.Dict):
            raise ValueError("MaskableRecurrentPPO needs a Dict observation space")
        lstm = self.policy.lstm_actor
        self.rollout_buffer = MaskableRecurrentDictRolloutBuffer(
            self.n_steps,
            self.observation_space,
            self.action_space,
            (self.n_steps, lstm.num_layers, self.n_envs, lstm.hidden_size),
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
        )

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Fill the buffer with ``n_rollout_steps`` masked steps per env (step 1).

        :return: False when a callback stopped the rollout.
        """
        assert isinstance(rollout_buffer, MaskableRecurrentDictRolloutBuffer)
        assert self._last_obs is not None and self._last_lstm_states is not None
        if not is_masking_supported(env):
            raise ValueError("MaskableRecurrentPPO: the environment has no action_masks()")
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        lstm_states = deepcopy(self._last_lstm_states)
        dones = self._last_episode_starts
        new_obs = self._last_obs
        for _ in range(n_rollout_steps):
            action_masks = get_action_masks(env)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)
                starts = th.as_tensor(
                    self._last_episode_starts, dtype=th.float32, device=self.device
                )
                actions, values, log_probs, lstm_states = self.policy(
                    obs_tensor, lstm_states, starts, action_masks=action_masks
                )
            actions_np = actions.cpu().numpy()
            new_obs, rewards, dones, infos = env.step(actions_np)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            if isinstance(self.action_space, spaces.Discrete):
                actions_np = actions_np.reshape(-1, 1)
            self._bootstrap_truncated(rewards, dones, infos, lstm_states)
            rollout_buffer.add(
                self._last_obs,
                actions_np,
                rewards,
                self._last_episode_starts,
                values,
                log_probs,
                lstm_states=self._last_lstm_states,
                action_masks=action_masks,
            )
            self._last_obs = new_obs
            self._last_episode_starts = dones
            self._last_lstm_states = lstm_states
        with th.no_grad():
            starts = th.as_tensor(dones, dtype=th.float32, device=self.device)
            values = self.policy.predict_values(
                obs_as_tensor(new_obs, self.device), lstm_states.vf, starts
            )
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.on_rollout_end()
        return True

    def _bootstrap_truncated(
        self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]], lstm_states: Any
    ) -> None:
        """Add ``gamma V(final obs)`` to the reward of an episode cut by a time limit."""
        for idx, done in enumerate(dones):
            final = infos[idx].get("terminal_observation")
            if not (done and final is not None and infos[idx].get("TimeLimit.truncated", False)):
                continue
            final_obs = self.policy.obs_to_tensor(final)[0]
            state = (
                lstm_states.vf[0][:, idx : idx + 1, :].contiguous(),
                lstm_states.vf[1][:, idx : idx + 1, :].contiguous(),
            )
            with th.no_grad():
                start = th.zeros(1, dtype=th.float32, device=self.device)
                value = self.policy.predict_values(final_obs, state, start)[0]  # type: ignore[arg-type]
            rewards[idx] += self.gamma * float(value.item())

    def train(self) -> None:
        """PPO epochs over the buffer's padded sequences, re-evaluated under their masks."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = (
            None
            if self.clip_range_vf is None
            else self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        )
        stats: dict[str, list[float]] = {k: [] for k in ("entropy", "pg", "value", "clip", "kl")}
        loss = th.zeros(())
        continue_training = True
        for _ in range(self.n_epochs):
            kl_divs: list[float] = []
            for batch in self.rollout_buffer.get(self.batch_size):
                actions = batch.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                real = batch.mask > 1e-8  # padded sequence steps are left out of every mean
                values, log_prob, entropy = self.policy.evaluate_actions(
                    batch.observations,
                    actions,
                    batch.lstm_states,
                    batch.episode_starts,
                    action_masks=batch.action_masks,
                )
                values = values.flatten()
                advantages = batch.advantages
                if self.normalize_advantage:
                    advantages = (advantages - advantages[real].mean()) / (
                        advantages[real].std() + 1e-8
                    )
                ratio = th.exp(log_prob - batch.old_log_prob)
                surrogate = th.min(
                    advantages * ratio,
                    advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range),
                )
                policy_loss = -surrogate[real].mean()
                if clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = batch.old_values + th.clamp(
                        values - batch.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = ((batch.returns - values_pred) ** 2)[real].mean()
                entropy_loss = -entropy[real].mean()
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                with th.no_grad():
                    log_ratio = log_prob - batch.old_log_prob
                    kl = float(((th.exp(log_ratio) - 1) - log_ratio)[real].mean())
                kl_divs.append(kl)
                stats["pg"].append(policy_loss.item())
                stats["value"].append(value_loss.item())
                stats["entropy"].append(entropy_loss.item())
                stats["clip"].append(
                    float(((ratio - 1).abs() > clip_range).float()[real].mean())
                )
                if self.target_kl is not None and kl > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            stats["kl"].extend(kl_divs)
            self._n_updates += 1
            if not continue_training:
                break
        buffer = self.rollout_buffer
        for key, name in (("entropy", "entropy_loss"), ("pg", "policy_gradient_loss"),
                          ("value", "value_loss"), ("kl", "approx_kl"), ("clip", "clip_fraction")):
            if stats[key]:
                self.logger.record(f"train/{name}", float(np.mean(stats[key])))
        self.logger.record("train/loss", loss.item())
        self.logger.record(
            "train/explained_variance",
            float(explained_variance(buffer.values.flatten(), buffer.returns.flatten())),
        )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The policy's action under ``action_masks`` and its next LSTM state."""
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks)

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "MaskableRecurrentPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> MaskableRecurrentPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


#: MaskableRecurrentPPO settings of ``recurrent-gcn``: those of ``ppo-gcn`` (terminal reward,
#: so no discount), a copy so that either can be tuned alone.
RECURRENT_GCN_HYPERPARAMETERS: dict[str, Any] = deepcopy(PPO_GCN_HYPERPARAMETERS)


@register("recurrent-gcn", "DRL-PP's recurrent partitioner: masked LSTM PPO over a GCN (learned)")
class RecurrentGCN(LearnedAgent):
    """``recurrent-gcn`` (options: :class:`~agents.learned.LearnedAgent`)."""

    algorithm = MaskableRecurrentPPO
    policy_class = MaskableRecurrentGCNPolicy
    hyperparameters = RECURRENT_GCN_HYPERPARAMETERS

    @classmethod
    def env_class(cls) -> type[PartitionEnvBase]:
        return PipelinePartitionEnv

    def act(
        self,
        model: BaseAlgorithm,
        env: PartitionEnvBase,
        obs: dict[str, np.ndarray],
        state: Any,
        episode_start: bool,
        deterministic: bool,
    ) -> tuple[Any, Any]:
        assert isinstance(env, PipelinePartitionEnv) and isinstance(model, MaskableRecurrentPPO)
        action, state = model.predict(
            obs,
            state=state,
            episode_start=np.array([episode_start]),
            deterministic=deterministic,
            action_masks=env.action_masks(),
        )
        return int(action), state
