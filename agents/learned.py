"""What the learned agents share: planning with a trained SB3 model through the agent interface.

A learned agent (``ppo-gcn``, ``recurrent-gcn``, ``oneshot-gcn``) is a :class:`LearnedAgent`: it
plans by running its policy on the environment built for the request, so the plan, its devices
and its simulation are exactly those of an episode of the environment.

``plan()`` works in three steps:

1. **Model.** With ``model="runs/NAME/model.zip"`` the trained model is loaded (once). Without
   it, a fresh model is trained on the requested graph, cluster and pipeline for ``timesteps``
   environment steps (``data_parallel`` as given, else 1), so a benchmark sweep can train inside
   the sweep on a bounded budget; the model is kept for later requests with the same settings.
2. **Episodes.** For every data-parallel degree R allowed by the request (``data_parallel`` if
   given, else every R with ``S R <= devices``), the policy plays one greedy episode (the most
   likely allowed stage at each step) and ``samples`` sampled episodes with torch seeds
   ``seed + 1 .. seed + samples`` (the caller's random state is left untouched).
3. **Choice.** Every episode's plan is simulated by the environment; the best one (feasible
   first, then throughput) is returned. The result is deterministic: the same agent, model and
   request give the same plan.

The observation padding (nodes N, stages K, edges E) is read from the model's observation space,
so a model plans any graph that fits it once coarsened to N nodes, with up to K stages.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from agents.base import BaseAgent, PlanRequest, better, check_int_option
from pipeenv.envs.base import PartitionEnvBase
from pipeenv.errors import PipeenvError
from pipeenv.plan import Plan
from pipeenv.simulator import SimResult

__all__ = [
    "DEFAULT_MAX_NODES",
    "DEFAULT_N_ENVS",
    "DEFAULT_TIMESTEPS",
    "LearnedAgent",
    "padding_of",
    "training_env",
]

#: Node padding of models trained by the agents and by ``pipeenv train`` unless told otherwise.
DEFAULT_MAX_NODES = 64
#: Training budget of ``plan()`` without a model: seconds on one CPU core.
DEFAULT_TIMESTEPS = 2048
#: Environments stepped together while training (in one process: batching the policy's forward
#: passes is what pays on a CPU).
DEFAULT_N_ENVS = 8


def training_env(
    env_class: type[PartitionEnvBase], env_kwargs: dict[str, Any], n_envs: int, seed: int
) -> VecEnv:
    """``n_envs`` monitored copies of ``env_class(**env_kwargs)`` in one process, seeded
    ``seed, seed + 1, ...``."""
    return make_vec_env(env_class, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)


def padding_of(model: BaseAlgorithm) -> dict[str, int]:
    """The ``max_nodes``, ``max_stages`` and ``max_edges`` of a model's observation space."""
    space = model.observation_space
    nodes, edges, mask = space["nodes"].shape, space["edges"].shape, space["action_mask"].shape  # type: ignore[index]
    return {"max_nodes": int(nodes[0]), "max_stages": int(mask[-1]), "max_edges": int(edges[0])}


class LearnedAgent(BaseAgent):
    """An agent that plans with a trained policy (see the module docstring).

    :param model: path of a saved model (``model.zip`` of ``pipeenv train``), or None to train
        one per request for ``timesteps`` steps.
    :param timesteps: training budget (environment steps) when ``model`` is None.
    :param seed: seed of the training and of the sampled episodes.
    :param samples: sampled episodes per data-parallel degree, besides the greedy one.
    :param max_nodes: node padding of models trained here (graphs are coarsened to it).
    """

    #: The SB3 algorithm class (what ``load`` is called on).
    algorithm: ClassVar[type[BaseAlgorithm]]
    #: The policy class the algorithm is built with.
    policy_class: ClassVar[type]
    #: The algorithm's default settings (``build_model`` overrides merge into them).
    hyperparameters: ClassVar[dict[str, Any]]

    def __init__(
        self,
        *,
        model: str | None = None,
        timesteps: int = DEFAULT_TIMESTEPS,
        seed: int = 0,
        samples: int = 4,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        if model is not None and not isinstance(model, str | Path):
            raise PipeenvError(f"agent {self.name!r}: option 'model' must be a path, got {model!r}")
        self.model_path = None if model is None else str(model)
        self.timesteps = check_int_option(self.name, "timesteps", timesteps, minimum=1)
        self.seed = check_int_option(self.name, "seed", seed)
        self.samples = check_int_option(self.name, "samples", samples)
        self.max_nodes = check_int_option(self.name, "max_nodes", max_nodes, minimum=2)
        self._loaded: BaseAlgorithm | None = None
        self._trained: dict[tuple[Any, ...], BaseAlgorithm] = {}

    def options(self) -> dict[str, Any]:
        if self.model_path is not None:
            return {"model": self.model_path, "seed": self.seed, "samples": self.samples}
        return {
            "timesteps": self.timesteps,
            "seed": self.seed,
            "samples": self.samples,
            "max_nodes": self.max_nodes,
        }

    # ------------------------------------------------------------------- algorithm hooks
    @classmethod
    @abstractmethod
    def env_class(cls) -> type[PartitionEnvBase]:
        """The environment the policy acts in."""

    @classmethod
    def build_model(
        cls, env: Any, *, seed: int, tensorboard_log: str | None = None, **hyper: Any
    ) -> BaseAlgorithm:
        """A fresh model of this agent's algorithm and policy on ``env`` (a gym or vec env).

        :param hyper: overrides of the algorithm's default :attr:`hyperparameters`.
        """
        settings = {**cls.hyperparameters, **hyper}
        return cls.algorithm(
            cls.policy_class, env, seed=seed, device="cpu", tensorboard_log=tensorboard_log,
            **settings,
        )

    @abstractmethod
    def act(
        self,
        model: BaseAlgorithm,
        env: PartitionEnvBase,
        obs: dict[str, np.ndarray],
        state: Any,
        episode_start: bool,
        deterministic: bool,
    ) -> tuple[Any, Any]:
        """One action of the policy in ``env`` at ``obs``, and the policy's next state."""

    # --------------------------------------------------------------------------- planning
    def load_model(self) -> BaseAlgorithm:
        """The model named by the ``model`` option (loaded once, on the CPU).

        :raises PipeenvError: when the file is missing or holds another algorithm's model.
        """
        if self._loaded is None:
            assert self.model_path is not None
            path = Path(self.model_path)
            if not path.is_file():
                raise PipeenvError(f"agent {self.name!r}: model file {str(path)!r} does not exist")
            try:
                self._loaded = self.algorithm.load(path, device="cpu")
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                raise PipeenvError(
                    f"agent {self.name!r}: cannot load {str(path)!r} as a "
                    f"{self.algorithm.__name__} model ({exc})"
                ) from None
        return self._loaded

    def make_env(
        self, request: PlanRequest, data_parallel: int, padding: dict[str, int]
    ) -> PartitionEnvBase:
        """The environment of ``request`` with ``data_parallel`` replicas and a model's padding."""
        return self.env_class()(
            graph=request.graph,
            cluster=request.cluster,
            num_stages=request.num_stages,
            microbatches=request.microbatches,
            schedule=request.schedule,
            data_parallel=data_parallel,
            max_nodes=padding["max_nodes"],
            max_stages=padding["max_stages"],
            max_edges=padding["max_edges"],
        )

    def _model_for(self, request: PlanRequest) -> BaseAlgorithm:
        if self.model_path is not None:
            return self.load_model()
        replicas = request.data_parallel or 1
        # The graph hash leaves costs out (SPEC: one plan fits every profile of a model); a
        # model trained on one profile is not reused for another.
        key = (
            request.graph.graph_hash,
            request.graph.total_compute_s,
            request.graph.total_param_bytes,
            json.dumps(request.cluster.to_dict(), sort_keys=True),
            request.num_stages,
            request.microbatches,
            request.schedule,
            replicas,
        )
        if key not in self._trained:
            env_kwargs = {
                "graph": request.graph,
                "cluster": request.cluster,
                "num_stages": request.num_stages,
                "microbatches": request.microbatches,
                "schedule": request.schedule,
                "data_parallel": replicas,
                "max_nodes": self.max_nodes,
            }
            env = training_env(self.env_class(), env_kwargs, DEFAULT_N_ENVS, self.seed)
            model = self.build_model(env, seed=self.seed)
            model.learn(total_timesteps=self.timesteps)
            env.close()
            self._trained[key] = model
        return self._trained[key]

    def episode(
        self, model: BaseAlgorithm, env: PartitionEnvBase, *, deterministic: bool, seed: int
    ) -> tuple[Plan, SimResult]:
        """Play one episode; its plan and simulation (torch seeded with ``seed`` when sampling)."""
        with th.random.fork_rng(devices=[]):
            th.manual_seed(seed)
            obs, _ = env.reset(seed=seed)
            state: Any = None
            start = True
            while True:
                action, state = self.act(model, env, obs, state, start, deterministic)
                obs, _, terminated, truncated, _ = env.step(action)
                start = False
                if terminated or truncated:
                    break
        assert env.plan is not None and env.result is not None
        return env.plan, env.result

    def search(
        self, model: BaseAlgorithm, env: PartitionEnvBase
    ) -> tuple[Plan, SimResult]:
        """The best of the greedy episode and the sampled ones (step 2 and 3)."""
        best: tuple[Plan, SimResult] | None = None
        for k in range(self.samples + 1):
            plan, result = self.episode(model, env, deterministic=k == 0, seed=self.seed + k)
            if best is None or better(result, best[1]):
                best = (plan, result)
        assert best is not None
        return best

    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        model = self._model_for(request)
        padding = padding_of(model)
        if request.num_stages > padding["max_stages"]:
            raise PipeenvError(
                f"agent {self.name!r}: the model acts on at most {padding['max_stages']} stages, "
                f"{request.num_stages} were requested"
            )
        best: tuple[Plan, SimResult] | None = None
        for replicas in request.replica_choices():
            env = self.make_env(request, replicas, padding)
            plan, result = self.search(model, env)
            if best is None or better(result, best[1]):
                best = (plan, result)
        assert best is not None
        plan, result = best
        return plan.replace(agent=self.agent_record()), result
