"""PipelinePartition-v0: registration, spaces, exact masks, invalid actions, rewards, rollouts."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from env_helpers import (
    GiB,
    chain,
    dag,
    masked_rollout,
    random_dag,
    small_cluster,
    valid_plans,
)
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import pipeenv
from pipeenv.envs import PipelinePartitionEnv, register_envs
from pipeenv.envs.observation import CONTEXT_FEATURES, NODE_FEATURES, STAGE_FEATURES
from pipeenv.envs.partition import nearest_allowed
from pipeenv.errors import PipeenvError
from pipeenv.partition_reference import balanced_contiguous
from pipeenv.plan import Plan


def make(graph: object, **kwargs: object) -> PipelinePartitionEnv:
    kwargs.setdefault("cluster", small_cluster(8))
    kwargs.setdefault("num_stages", 3)
    kwargs.setdefault("max_nodes", 32)
    return PipelinePartitionEnv(graph=graph, **kwargs)


def masks_along(env: PipelinePartitionEnv, actions: list[int]) -> list[list[int]]:
    env.reset(seed=0)
    out = []
    for a in actions:
        out.append(env.action_masks().astype(int).tolist())
        env.step(a)
    return out


# ------------------------------------------------------------------------------- registration
def test_registered_on_import() -> None:
    assert "PipelinePartition-v0" in gym.registry
    assert "PipelinePartitionOneShot-v0" in gym.registry
    register_envs()  # idempotent: no error, no duplicate warning
    assert gym.registry["PipelinePartition-v0"].entry_point == (
        "pipeenv.envs.partition:PipelinePartitionEnv"
    )


def test_make_by_module_path_in_fresh_process(tmp_path: object) -> None:
    path = f"{tmp_path}/g.json"
    chain(6).save(path)
    code = (
        "import gymnasium as gym; "
        f"env = gym.make('pipeenv:PipelinePartition-v0', graph={path!r}, num_stages=2, "
        "max_nodes=8); obs, _ = env.reset(seed=0); print(obs['node_mask'].sum())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "6"


def test_default_episode_uses_the_zoo() -> None:
    zoo = pytest.importorskip("pipeenv.zoo")
    if not (zoo.DATA_DIR / "resnet50.json").exists():
        pytest.skip("the zoo's shipped resnet50 graph is not generated yet")
    env = gym.make("PipelinePartition-v0")
    env.reset(seed=0)
    base = env.unwrapped
    assert base.graph.name == "resnet50"  # type: ignore[attr-defined]
    original, partitioned = base.graph, base.partitioned_graph  # type: ignore[attr-defined]
    assert partitioned.num_nodes == min(original.num_nodes, 128)
    assert base.cluster.name == "4xA100-nvlink"  # type: ignore[attr-defined]
    assert base.episode.settings.num_stages == 4  # type: ignore[attr-defined]
    assert base.episode.settings.microbatches == 8  # type: ignore[attr-defined]
    assert base.episode.settings.schedule == "1f1b"  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------- checkers
@pytest.mark.parametrize("render_mode", [None, "ansi"])
def test_gymnasium_and_sb3_checkers_pass(render_mode: str | None) -> None:
    env = gym.make(
        "PipelinePartition-v0",
        graph=random_dag(20, 1),
        cluster=small_cluster(4),
        num_stages=4,
        max_stages=5,
        max_nodes=32,
        render_mode=render_mode,
    ).unwrapped
    with warnings.catch_warnings():
        # SB3 advises flattening 2-D boxes; the padded node/edge tables are 2-D on purpose.
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        check_env(env)
        sb3_check_env(env)


# -------------------------------------------------------------------------------------- masks
def test_chain_allows_one_stage_per_node() -> None:
    env = make(chain(3))
    assert masks_along(env, [0, 1, 2]) == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_diamond_masks() -> None:
    # a -> b, a -> c, b -> d, c -> d with S = 3: b may go anywhere; b = 2 forces c = 1.
    env = make(dag(4, [(0, 1), (0, 2), (1, 3), (2, 3)]))
    assert masks_along(env, [0, 2, 1, 2]) == [[1, 0, 0], [1, 1, 1], [0, 1, 0], [0, 0, 1]]


def test_independent_nodes_fill_the_last_stage() -> None:
    env = make(dag(2, []), num_stages=2)
    assert masks_along(env, [1, 0]) == [[1, 1], [1, 0]]


def test_stages_beyond_num_stages_are_masked() -> None:
    env = make(chain(4), num_stages=2, max_stages=4)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, False, False, False]


@pytest.mark.parametrize("seed", range(12))
def test_masks_equal_brute_force_completability(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, num_stages = int(rng.integers(3, 7)), int(rng.integers(1, 4))
    graph = random_dag(n, seed, density=0.6)
    plans = valid_plans(graph, num_stages)
    env = make(graph, num_stages=num_stages, max_stages=3)
    env.reset(seed=seed)
    prefix: list[int] = []
    for t in range(n):
        expected = [int(any(p[: t + 1] == (*prefix, s) for p in plans)) for s in range(3)]
        assert env.action_masks().astype(int).tolist() == expected
        action = int(rng.choice(np.flatnonzero(env.action_masks())))
        prefix.append(action)
        env.step(action)


# ---------------------------------------------------------------------------- invalid actions
def test_nearest_allowed_prefers_the_lower_stage_on_ties() -> None:
    assert nearest_allowed(1, np.array([1, 0, 1])) == 0
    assert nearest_allowed(7, np.array([0, 1, 0, 0])) == 1
    assert nearest_allowed(-3, np.array([0, 0, 1])) == 2


def test_invalid_action_is_mapped_flagged_and_penalised() -> None:
    env = make(chain(3), invalid_action_penalty=0.25)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(2)
    assert (info["stage"], info["invalid_action"], reward, terminated) == (0, True, -0.25, False)
    _, reward, _, _, info = env.step(1)
    assert (info["stage"], info["invalid_action"], reward) == (1, False, 0.0)
    _, reward, terminated, _, info = env.step(np.array([10**30], dtype=object))
    assert (info["stage"], info["invalid_action"], info["invalid_actions"]) == (2, True, 2)
    assert terminated
    assert reward == pytest.approx(info["terminal_reward"] - 0.25)
    assert info["episode_return"] == pytest.approx(info["terminal_reward"] - 0.5)


def test_step_after_the_end_is_an_error() -> None:
    env = make(chain(3))
    masked_rollout(env, 0)
    with pytest.raises(PipeenvError, match="reset"):
        env.step(0)


# ------------------------------------------------------------------------------------ rewards
@pytest.mark.parametrize(
    ("mode", "expected"), [("log_speedup", 0.0), ("speedup", 1.0), ("neg_iteration_s", None)]
)
def test_reference_plan_gets_the_parity_reward(mode: str, expected: float | None) -> None:
    graph = random_dag(24, 3)
    env = make(graph, num_stages=4, reward=mode)
    env.reset(seed=0)
    stages = balanced_contiguous(graph.arrays.forward_s + graph.arrays.backward_s, 4)
    for s in stages:
        _, reward, terminated, _, info = env.step(int(s))
    assert terminated and info["invalid_actions"] == 0
    t_ref = info["reference"]["iteration_s"]
    assert info["result"]["iteration_s"] == t_ref
    assert reward == (-t_ref if expected is None else expected)


def test_out_of_memory_plan_is_penalised() -> None:
    graph = chain(6)  # 1 MB of parameters per node, 4 MB of state each with the factor
    env = make(graph, cluster=small_cluster(4, memory_bytes=9e6), num_stages=2, oom_penalty=2.0)
    env.reset(seed=0)
    for s in [0, 0, 0, 0, 0, 1]:  # stage 0: 20 MB of state + activations > 9 MB
        _, reward, _, _, info = env.step(s)
    assert not info["result"]["feasible"]
    stage0 = info["result"]["stages"][0]
    excess = stage0["oom_excess_bytes"] / 9e6
    value = math.log(info["reference"]["iteration_s"] / info["result"]["iteration_s"])
    assert reward == pytest.approx(min(value, 0.0) - 2.0 * (1.0 + excess))


# ----------------------------------------------------------------------------------- rollouts
@pytest.mark.parametrize("seed", range(6))
def test_masked_rollouts_give_valid_plans_that_match_the_simulator(seed: int) -> None:
    graph = random_dag(40 + 10 * seed, seed)
    cluster = small_cluster(8)
    env = make(
        graph,
        cluster=cluster,
        num_stages=2 + seed % 3,
        max_nodes=128,
        schedule=["1f1b", "gpipe"][seed % 2],
        data_parallel=1 + seed % 2,
    )
    total, info, _ = masked_rollout(env, seed)
    plan = Plan.from_dict(info["plan"])
    plan.validate(graph, cluster)
    assert info["invalid_actions"] == 0
    assert pipeenv.simulate(graph, cluster, plan).to_dict() == info["result"]
    assert total == info["episode_return"] == info["terminal_reward"]


def test_large_graph_is_coarsened_and_the_plan_expanded() -> None:
    graph = random_dag(300, 7)
    cluster = small_cluster(4)
    env = make(graph, cluster=cluster, num_stages=4, max_nodes=64)
    _, info, actions = masked_rollout(env, 0)
    assert len(actions) == env.partitioned_graph.num_nodes <= 64
    assert info["coarsened_nodes"] == env.partitioned_graph.num_nodes
    plan = Plan.from_dict(info["plan"])
    assert set(plan.stage_of) == set(graph.order)
    plan.validate(graph, cluster)
    assert pipeenv.simulate(graph, cluster, plan).to_dict() == info["result"]


def test_every_zoo_model_rolls_out_to_a_valid_plan() -> None:
    zoo = pytest.importorskip("pipeenv.zoo")
    shipped = [m for m in zoo.names() if (zoo.DATA_DIR / f"{m}.json").exists()]
    if not shipped:
        pytest.skip("the zoo's shipped graphs are not generated yet")
    cluster = pipeenv.load_cluster("8xA100-nvlink")
    env = PipelinePartitionEnv(graph=shipped, cluster=cluster, num_stages=4, max_nodes=128)
    for name in shipped:
        _, info, _ = masked_rollout_named(env, name)
        plan = Plan.from_dict(info["plan"])
        graph = env.graph
        plan.validate(graph, cluster)
        assert pipeenv.simulate(graph, cluster, plan).to_dict() == info["result"]


def masked_rollout_named(env: PipelinePartitionEnv, name: str) -> tuple[float, dict, list[int]]:
    rng = np.random.default_rng(0)
    env.reset(seed=0, options={"graph": name})
    total, actions = 0.0, []
    while True:
        action = int(rng.choice(np.flatnonzero(env.action_masks())))
        actions.append(action)
        _, reward, terminated, _, info = env.step(action)
        total += reward
        if terminated:
            return total, info, actions


def test_same_seed_same_episode() -> None:
    graphs = [random_dag(15, s, name=f"g{s}") for s in range(4)]

    def episode(seed: int) -> list[object]:
        env = make(graphs, num_stages=3)
        obs, _ = env.reset(seed=seed)
        trace: list[object] = [env.graph.name, obs["nodes"].tobytes()]
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            obs, reward, done, _, _ = env.step(int(rng.integers(3)))
            trace += [obs["nodes"].tobytes(), obs["stages"].tobytes(), reward]
        return trace

    assert episode(5) == episode(5)
    names = {str(episode(seed)[0]) for seed in range(12)}
    assert len(names) > 1  # the list is sampled


def test_reset_options_apply_to_one_episode() -> None:
    env = make(chain(8), num_stages=2, max_stages=4)
    env.reset(seed=0, options={"num_stages": 4, "schedule": "gpipe", "microbatches": 3})
    assert env.episode.settings.num_stages == 4
    assert env.action_masks().tolist() == [True, False, False, False]
    env.reset(seed=0)
    assert (env.episode.settings.num_stages, env.episode.settings.schedule) == (2, "1f1b")


# -------------------------------------------------------------------------------- observation
def test_observation_layout_and_size_bound() -> None:
    env = make(random_dag(256, 2), num_stages=8, max_nodes=256)
    obs, _ = env.reset(seed=0)
    assert obs["nodes"].shape == (256, len(NODE_FEATURES))
    assert obs["stages"].shape == (8, len(STAGE_FEATURES))
    assert obs["context"].shape == (len(CONTEXT_FEATURES),)
    assert obs["edges"].dtype == np.uint8 and obs["edges"].shape == (2048, 2)
    assert sum(a.nbytes for a in obs.values()) < 64 * 1024
    assert env.observation_space.contains(obs)


def test_edge_dtype_widens_past_256_nodes() -> None:
    env = make(chain(5), max_nodes=257)
    obs, _ = env.reset(seed=0)
    assert obs["edges"].dtype == np.uint16
    assert obs["edges"][:4].tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert obs["edge_mask"][:5].tolist() == [1, 1, 1, 1, 0]


def test_node_and_stage_features_on_a_chain() -> None:
    env = make(chain(4), num_stages=2, cluster=small_cluster(2))
    obs, _ = env.reset(seed=0)
    col = {name: i for i, name in enumerate(NODE_FEATURES)}
    # Balanced stage time: 4 nodes x 3 ms / 2 devices = 6 ms; each node 1 ms forward, 2 backward.
    assert obs["nodes"][:4, col["forward"]] == pytest.approx([1 / 6] * 4)
    assert obs["nodes"][:4, col["backward"]] == pytest.approx([2 / 6] * 4)
    assert obs["nodes"][:4, col["depth"]] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert obs["nodes"][:, col["is_current"]].tolist()[:5] == [1, 0, 0, 0, 0]
    obs, *_ = env.step(0)
    obs, *_ = env.step(1)
    assert obs["nodes"][:4, col["assigned"]].tolist() == [1, 1, 0, 0]
    assert obs["nodes"][:4, col["stage"]].tolist() == [0, 1, 0, 0]
    assert obs["nodes"][:4, col["min_stage"]].tolist() == [0, 1, 1, 1]
    # Stage 0 holds n0 (3 ms = 0.5 balanced), stage 1 holds n1; n0's 1 MB crossed boundary 0.
    assert obs["stages"][:, 0] == pytest.approx([0.5, 0.5])
    assert obs["stages"][0, 2] == pytest.approx(1e6 / 1e11 / 6e-3)
    assert obs["stages"][:, 3] == pytest.approx([0.25, 0.25])


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_final_stage_features_agree_with_the_simulator(schedule: str) -> None:
    graph = random_dag(60, 9)
    cluster = small_cluster(4)
    env = make(graph, cluster=cluster, num_stages=4, max_nodes=64, schedule=schedule)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    terminated = False
    while not terminated:
        obs, _, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    unit_s = graph.total_compute_s / 4  # four speed-1 devices
    stages = info["result"]["stages"]
    compute = [st["forward_s"] + st["backward_s"] for st in stages]
    assert obs["stages"][:4, 0] * unit_s == pytest.approx(compute, rel=1e-6)
    memory = [st["peak_memory_bytes"] / 80 / GiB for st in stages]
    assert obs["stages"][:4, 1] == pytest.approx(memory, rel=1e-6)
    sent = [st["send_bytes"] for st in stages[:3]]
    assert obs["stages"][:3, 2] * 1e11 * unit_s == pytest.approx(sent, rel=1e-6)


def test_observations_never_share_arrays() -> None:
    env = make(chain(5))
    first, _ = env.reset(seed=0)
    kept = {k: v.copy() for k, v in first.items()}
    second, *_ = env.step(0)
    for key in first:
        assert np.array_equal(first[key], kept[key])
        assert not np.shares_memory(first[key], second[key])


# ------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_stages": 0}, "'num_stages' must be >= 1"),
        ({"num_stages": 2.5}, "'num_stages' must be an integer"),
        ({"num_stages": 4, "max_stages": 3}, "must be <= max_stages"),
        ({"num_stages": 4, "data_parallel": 3}, "num_stages x data_parallel = 12 devices"),
        ({"num_stages": 9, "cluster": small_cluster(16)}, "exceeds the 8 nodes"),
        ({"microbatches": 0}, "'microbatches' must be >= 1"),
        ({"schedule": "zb-v"}, "'schedule' must be one of gpipe, 1f1b"),
        ({"data_parallel": 0}, "'data_parallel' must be >= 1"),
        ({"max_nodes": 1}, "'max_nodes' must be >= 2"),
        ({"max_stages": 0}, "'max_stages' must be >= 1"),
        ({"microbatch_size": 0}, "'microbatch_size' must be >= 1"),
        ({"max_edges": 3}, "more than max_edges=3"),
        ({"reward": "accuracy"}, "'reward' must be one of log_speedup"),
        ({"oom_penalty": -1.0}, "'oom_penalty' must be finite and >= 0"),
        ({"invalid_action_penalty": float("nan")}, "'invalid_action_penalty' must be finite"),
        ({"param_memory_factor": "4"}, "'param_memory_factor' must be a number"),
        ({"graph": []}, "'graph' must not be an empty list"),
        ({"graph": 3}, "'graph' must be a zoo name, a graph file"),
        ({"graph": "/nonexistent/g.json"}, "file not found"),
        ({"cluster": "no-such-cluster"}, "neither a preset"),
        ({"cluster": 5}, "'cluster' must be a preset name"),
        ({"render_mode": "human"}, "'render_mode' must be None, 'ansi' or 'rgb_array'"),
    ],
)
def test_argument_errors_name_the_rule(kwargs: dict[str, object], message: str) -> None:
    kwargs = {"graph": chain(8), "cluster": small_cluster(8), "max_nodes": 16, **kwargs}
    with pytest.raises(PipeenvError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PipelinePartitionEnv(**kwargs)


def test_unknown_zoo_name_is_an_error() -> None:
    pytest.importorskip("pipeenv.zoo")
    with pytest.raises(PipeenvError, match="neither a zoo model"):
        PipelinePartitionEnv(graph="resnet-9000", cluster=small_cluster(4))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stages": 2}, "unknown reset option 'stages'"),
        ({"max_nodes": 64}, "reset option 'max_nodes' \\(64\\) must be <= the padding"),
        ({"num_stages": 3}, "must be <= max_stages"),
    ],
)
def test_reset_option_errors(options: dict[str, object], message: str) -> None:
    env = make(chain(8), num_stages=2, max_nodes=16)
    with pytest.raises(PipeenvError, match=message):
        env.reset(options=options)


# ------------------------------------------------------------------------------------ vec envs
@pytest.mark.slow
def test_subproc_vec_env_with_two_workers_runs() -> None:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    graph = random_dag(12, 4)
    vec = SubprocVecEnv(
        [lambda: make(graph, cluster=small_cluster(4), num_stages=2) for _ in range(2)]
    )
    try:
        vec.seed(0)
        obs = vec.reset()
        assert isinstance(obs, dict)
        assert obs["nodes"].shape == (2, 32, len(NODE_FEATURES))
        finished = 0
        for _ in range(graph.num_nodes):
            masks = np.stack(vec.env_method("action_masks"))
            obs, _, dones, infos = vec.step(masks.argmax(axis=1))
            finished += int(dones.sum())
        assert finished == 2
        assert all("plan" in info for info in infos)
    finally:
        vec.close()


@pytest.mark.slow
def test_maskable_ppo_learns_a_few_steps() -> None:
    from sb3_contrib import MaskablePPO

    env = make(random_dag(12, 5), cluster=small_cluster(4), num_stages=3, max_nodes=16)
    model = MaskablePPO("MultiInputPolicy", env, n_steps=24, batch_size=24, n_epochs=1, seed=0)
    model.learn(total_timesteps=48)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, action_masks=env.action_masks())
    assert env.action_masks()[int(action)]
