"""PipelinePartitionOneShot-v0: spaces, repair, per-node masks, rollouts."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from env_helpers import chain, dag, random_dag, small_cluster, valid_plans
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import pipeenv
from pipeenv.envs import PipelinePartitionOneShotEnv
from pipeenv.envs.assignment import repair_stages
from pipeenv.envs.observation import ONESHOT_CONTEXT_FEATURES, STATIC_NODE_FEATURES
from pipeenv.errors import PipeenvError
from pipeenv.partition_reference import balanced_contiguous
from pipeenv.plan import Plan


def make(graph: object, **kwargs: object) -> PipelinePartitionOneShotEnv:
    kwargs.setdefault("cluster", small_cluster(8))
    kwargs.setdefault("num_stages", 3)
    kwargs.setdefault("max_nodes", 16)
    return PipelinePartitionOneShotEnv(graph=graph, **kwargs)


def padded(stages: list[int], size: int = 16) -> np.ndarray:
    return np.array(stages + [0] * (size - len(stages)), dtype=np.int64)


@pytest.mark.parametrize("render_mode", [None, "ansi"])
def test_gymnasium_and_sb3_checkers_pass(render_mode: str | None) -> None:
    env = gym.make(
        "PipelinePartitionOneShot-v0",
        graph=random_dag(12, 2),
        cluster=small_cluster(4),
        num_stages=3,
        max_nodes=16,
        render_mode=render_mode,
    ).unwrapped
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        check_env(env)
        sb3_check_env(env)


def test_spaces() -> None:
    env = make(chain(5), max_stages=4)
    assert env.action_space == gym.spaces.MultiDiscrete([4] * 16)
    obs, _ = env.reset(seed=0)
    assert obs["nodes"].shape == (16, STATIC_NODE_FEATURES)
    assert obs["context"].shape == (len(ONESHOT_CONTEXT_FEATURES),)
    assert "stages" not in obs
    assert obs["action_mask"].shape == (16, 4)
    assert env.action_masks().shape == (64,)


def test_repair_of_all_zeros_on_a_chain() -> None:
    graph = chain(5)
    a = graph.arrays
    stages, repaired = repair_stages(
        np.zeros(5, dtype=np.int64), 3, a.costs, a.pred_ptr, a.pred_idx
    )
    assert stages.tolist() == [0, 0, 0, 1, 2]
    assert repaired == 2


def test_repair_leaves_a_valid_plan_unchanged() -> None:
    graph = random_dag(30, 1)
    plans = balanced_contiguous(graph.arrays.forward_s + graph.arrays.backward_s, 4)
    env = make(graph, num_stages=4, max_nodes=32)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(padded(plans.tolist(), 32))
    assert (terminated, truncated, info["repaired_nodes"], reward) == (True, False, 0, 0.0)
    assert info["stages"].tolist() == plans.tolist()


def test_repaired_nodes_are_penalised() -> None:
    env = make(chain(5), invalid_action_penalty=0.5)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(padded([2, 2, 2, 2, 2]))
    # Node 0 must take stage 0, node 1 stage 0 or 1 (nearest to 2: 1), ...
    assert info["stages"].tolist() == [0, 1, 2, 2, 2]
    assert info["repaired_nodes"] == 2
    assert reward == pytest.approx(info["terminal_reward"] - 1.0)


def test_per_node_masks_on_a_chain() -> None:
    env = make(chain(5))
    obs, _ = env.reset(seed=0)
    assert obs["action_mask"][:6].tolist() == [
        [1, 0, 0],
        [1, 1, 0],
        [1, 1, 1],
        [0, 1, 1],
        [0, 0, 1],
        [1, 0, 0],  # padding
    ]


@pytest.mark.parametrize("seed", range(8))
def test_per_node_masks_equal_the_stages_of_valid_plans(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, num_stages = int(rng.integers(3, 7)), int(rng.integers(1, 4))
    graph = random_dag(n, seed, density=0.5)
    plans = np.array(valid_plans(graph, num_stages))
    env = make(graph, num_stages=num_stages, max_stages=3, max_nodes=8)
    obs, _ = env.reset(seed=seed)
    for v in range(n):
        expected = [int(s in set(plans[:, v].tolist())) for s in range(3)]
        assert obs["action_mask"][v].tolist() == expected


@pytest.mark.parametrize("seed", range(5))
def test_random_actions_give_valid_plans_that_match_the_simulator(seed: int) -> None:
    graph = random_dag(20 + 15 * seed, seed)
    cluster = small_cluster(8)
    env = make(graph, cluster=cluster, num_stages=2 + seed % 4, max_stages=6, max_nodes=128)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    _, reward, _, _, info = env.step(env.action_space.sample())
    plan = Plan.from_dict(info["plan"])
    plan.validate(graph, cluster)
    assert pipeenv.simulate(graph, cluster, plan).to_dict() == info["result"]
    assert reward == pytest.approx(
        info["terminal_reward"] - env.invalid_action_penalty * info["repaired_nodes"]
    )


def test_padding_rows_are_ignored() -> None:
    env = make(dag(3, [(0, 1), (1, 2)]))
    env.reset(seed=0)
    action = padded([0, 1, 2])
    action[3:] = 2
    _, _, _, _, info = env.step(action)
    assert info["repaired_nodes"] == 0


def test_action_shape_and_second_step_errors() -> None:
    env = make(chain(5))
    env.reset(seed=0)
    with pytest.raises(PipeenvError, match="16 integer stages"):
        env.step(np.zeros(5, dtype=np.int64))
    env.step(padded([0, 1, 2, 2, 2]))
    with pytest.raises(PipeenvError, match="reset"):
        env.step(padded([0, 1, 2, 2, 2]))


def test_observations_never_share_arrays() -> None:
    env = make(chain(5))
    first, _ = env.reset(seed=0)
    second, *_ = env.step(padded([0, 1, 2, 2, 2]))
    for key in first:
        assert not np.shares_memory(first[key], second[key])
