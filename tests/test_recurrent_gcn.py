"""``recurrent-gcn``: the maskable recurrent PPO (masked sampling, -inf log-probs, masks kept in
the buffer and used in the loss) and planning with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from sb3_contrib.common.maskable.utils import get_action_masks
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor

import agents
from agents.recurrent_gcn import (
    MaskableRecurrentDictRolloutBuffer,
    MaskableRecurrentGCNPolicy,
    MaskableRecurrentPPO,
    RecurrentGCN,
)
from pipeenv.cluster import load_cluster
from pipeenv.envs.partition import PipelinePartitionEnv
from pipeenv.zoo import load as load_zoo

th.set_num_threads(1)

ENV_KWARGS = {"graph": "vgg16", "cluster": "4xA100-nvlink", "num_stages": 4, "microbatches": 8,
              "max_nodes": 16}
SMALL: dict[str, Any] = {"n_steps": 32, "batch_size": 32, "n_epochs": 2}


class _MaskRecorder(BaseCallback):
    """Records the env's masks at every step, before the policy acts."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[np.ndarray] = []

    def _on_rollout_start(self) -> None:
        self.masks = [get_action_masks(self.training_env)]

    def _on_step(self) -> bool:
        self.masks.append(get_action_masks(self.training_env))
        return True


def _model(n_envs: int = 2, **hyper: int) -> MaskableRecurrentPPO:
    env = make_vec_env(PipelinePartitionEnv, n_envs=n_envs, seed=0, env_kwargs=ENV_KWARGS)
    model = RecurrentGCN.build_model(env, seed=0, **{**SMALL, **hyper})
    assert isinstance(model, MaskableRecurrentPPO)
    return model


def _zero_states(policy: MaskableRecurrentGCNPolicy, batch: int) -> RNNStates:
    shape = (policy.lstm_actor.num_layers, batch, policy.lstm_actor.hidden_size)
    zeros = (th.zeros(shape), th.zeros(shape))
    return RNNStates(zeros, zeros)


def _observations(batch: int) -> tuple[dict[str, th.Tensor], np.ndarray]:
    """A batch of real first observations with random (non-empty) masks."""
    env = PipelinePartitionEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, size=(batch, 4)).astype(bool)
    masks[np.arange(batch), rng.integers(0, 4, size=batch)] = True
    stacked = {k: np.repeat(v[None], batch, axis=0) for k, v in obs.items()}
    return obs_as_tensor(stacked, th.device("cpu")), masks  # type: ignore[return-value]


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_masked_actions_are_never_sampled(seed: int, deterministic: bool) -> None:
    policy = _model().policy
    obs, masks = _observations(256)
    th.manual_seed(seed)
    with th.no_grad():
        actions, _, log_prob, _ = policy(
            obs, _zero_states(policy, 256), th.ones(256), deterministic, action_masks=masks
        )
    chosen = masks[np.arange(256), actions.numpy()]
    assert chosen.all()
    assert th.all(th.isfinite(log_prob))


def test_masked_actions_have_minus_infinite_log_probability() -> None:
    policy = _model().policy
    obs, masks = _observations(64)
    rows, cols = np.nonzero(~masks)
    actions = th.zeros(64, dtype=th.long)
    actions[rows] = th.as_tensor(cols)
    with th.no_grad():
        _, masked_lp, masked_entropy = policy.evaluate_actions(
            obs, actions, _zero_states(policy, 64), th.ones(64), action_masks=masks
        )
        _, free_lp, free_entropy = policy.evaluate_actions(
            obs, actions, _zero_states(policy, 64), th.ones(64)
        )
    forbidden = th.as_tensor(~masks[np.arange(64), actions.numpy()])
    assert forbidden.any()
    assert th.all(masked_lp[forbidden] < -1e7)  # -inf in effect (a -1e8 logit)
    assert th.all(th.isfinite(free_lp))
    # A masked distribution spreads over fewer stages: never more entropy than the free one.
    assert th.all(masked_entropy <= free_entropy + 1e-6)


def test_the_buffer_keeps_the_masks_of_every_step() -> None:
    model = _model(n_envs=2)
    recorder = _MaskRecorder()
    model.learn(32 * 2, callback=recorder)
    buffer = model.rollout_buffer
    assert isinstance(buffer, MaskableRecurrentDictRolloutBuffer)
    # The masks the policy acted under: one per step (the last one belongs to the next rollout).
    seen = np.stack(recorder.masks[:32]).astype(np.float32)  # (n_steps, n_envs, K)
    # After training the buffer is flattened env-major, as sb3-contrib's recurrent buffers are.
    assert np.array_equal(buffer.action_masks, seen.swapaxes(0, 1).reshape(-1, 4))
    actions = buffer.actions.reshape(-1).astype(int)
    assert buffer.action_masks[np.arange(actions.size), actions].all()


def test_minibatches_carry_padded_masks_that_allow_every_stored_action() -> None:
    model = _model(n_envs=2)
    model.learn(32 * 2)
    batches = list(model.rollout_buffer.get(16))
    assert batches
    for batch in batches:
        real = batch.mask > 0
        masks = batch.action_masks
        assert masks.shape == (batch.actions.shape[0], 4)
        taken = masks[th.arange(masks.shape[0]), batch.actions.long().flatten()]
        assert th.all(taken[real] == 1)
        assert th.all(masks[~real] == 1)  # padding: everything allowed, finite log-probs


def test_the_loss_sees_the_masks() -> None:
    """Before any update, the stored log-probabilities are those of the masked policy: the
    PPO ratio is exactly 1 with the buffer's masks and not without them."""
    model = _model(n_envs=2)
    model.learn(32 * 2)
    model.n_epochs = 0  # a learn() that collects but does not update
    model.learn(32 * 2, reset_num_timesteps=False)
    policy = model.policy
    batch = next(iter(model.rollout_buffer.get(None)))
    real = batch.mask > 0
    actions = batch.actions.long().flatten()
    with th.no_grad():
        _, with_masks, _ = policy.evaluate_actions(
            batch.observations, actions, batch.lstm_states, batch.episode_starts,
            action_masks=batch.action_masks,
        )
        _, without, _ = policy.evaluate_actions(
            batch.observations, actions, batch.lstm_states, batch.episode_starts
        )
    assert th.allclose(with_masks[real], batch.old_log_prob[real], atol=1e-5)
    assert not th.allclose(without[real], batch.old_log_prob[real], atol=1e-3)


def test_training_updates_the_policy() -> None:
    model = _model()
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32 * 2)
    after = list(model.policy.parameters())
    assert any(not th.equal(a, b) for a, b in zip(before, after))


def test_a_saved_model_plans_deterministically(tmp_path: Path) -> None:
    model = _model()
    model.learn(64)
    path = tmp_path / "model.zip"
    model.save(path)
    g, c = load_zoo("vgg16"), load_cluster("4xA100-nvlink")
    plans = [
        agents.make("recurrent-gcn", model=str(path), samples=2).plan(
            g, c, num_stages=4, microbatches=8
        )
        for _ in range(2)
    ]
    plans[0].validate(g, c)
    assert plans[0].stage_of == plans[1].stage_of
    loaded = MaskableRecurrentPPO.load(path, device="cpu")
    assert isinstance(loaded.policy, MaskableRecurrentGCNPolicy)


def test_the_policy_state_carries_between_steps() -> None:
    model = _model()
    agent = agents.make("recurrent-gcn")
    assert isinstance(agent, RecurrentGCN)
    env = PipelinePartitionEnv(**ENV_KWARGS)
    obs, _ = env.reset(seed=0)
    _, state = agent.act(model, env, obs, None, True, deterministic=True)
    assert state is not None and state[0].shape == (1, 1, model.policy.lstm_actor.hidden_size)
    assert np.abs(state[0]).sum() > 0
