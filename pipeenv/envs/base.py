"""What the two environments share: arguments, episode set-up, terminal info, render, records."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from pipeenv.cluster import Cluster
from pipeenv.envs.episode import Episode, GraphSpec, Scenario
from pipeenv.envs.observation import Layout
from pipeenv.envs.records import EpisodeRecord
from pipeenv.envs.settings import float_arg
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.simulator import SimResult, simulate

__all__ = ["PartitionEnvBase"]


class PartitionEnvBase(gym.Env[dict[str, Any], Any]):
    """Base of :class:`~pipeenv.envs.partition.PipelinePartitionEnv` and the one-shot env.

    :param graph: zoo model name, ``pipeenv.graph/v1`` file, :class:`OperatorGraph`, or a list of
        them (one drawn with ``np_random`` per reset).
    :param cluster: preset name, ``pipeenv.cluster/v1`` file or :class:`Cluster`.
    :param num_stages: pipeline stages S.
    :param microbatches: microbatches M per iteration.
    :param schedule: ``gpipe`` or ``1f1b``.
    :param data_parallel: replicas R; replica r of stage s runs on device ``r * S + s``.
    :param max_nodes: node padding of the observation; larger graphs are coarsened to it.
    :param max_stages: size of the action space per node (default ``num_stages``).
    :param max_edges: edge padding of the observation (default ``8 * max_nodes``).
    :param reward: ``log_speedup``, ``speedup`` or ``neg_iteration_s``.
    :param oom_penalty: scale of the out-of-memory penalty.
    :param invalid_action_penalty: reward subtracted per invalid (repaired) stage choice.
    :param param_memory_factor: memory bytes per parameter byte (SPEC §4).
    :param microbatch_size: samples per microbatch of zoo graphs (default: the zoo's, 8).
    :param render_mode: None, ``ansi`` or ``rgb_array``.
    :raises PipeenvError: naming the argument and the rule it breaks.
    """

    # Gymnasium declares ``metadata`` an instance attribute with a class-level default.
    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012
    env_id: ClassVar[str] = ""

    def __init__(
        self,
        graph: GraphSpec | Sequence[GraphSpec] = "resnet50",
        cluster: str | os.PathLike[str] | Cluster = "4xA100-nvlink",
        num_stages: int = 4,
        microbatches: int = 8,
        schedule: str = "1f1b",
        data_parallel: int = 1,
        max_nodes: int = 128,
        max_stages: int | None = None,
        max_edges: int | None = None,
        reward: str = "log_speedup",
        oom_penalty: float = 1.0,
        invalid_action_penalty: float = 0.01,
        param_memory_factor: float = 4.0,
        microbatch_size: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise PipeenvError(
                f"{self.env_id}: argument 'render_mode' must be None, 'ansi' or 'rgb_array', "
                f"got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.scenario = Scenario(
            self.env_id,
            graph=graph,
            cluster=cluster,
            num_stages=num_stages,
            microbatches=microbatches,
            schedule=schedule,
            data_parallel=data_parallel,
            max_nodes=max_nodes,
            max_stages=max_stages,
            max_edges=max_edges,
            reward=reward,
            oom_penalty=oom_penalty,
            param_memory_factor=param_memory_factor,
            microbatch_size=microbatch_size,
        )
        self.invalid_action_penalty = float_arg(
            self.env_id, "invalid_action_penalty", invalid_action_penalty
        )
        self.layout = Layout(
            self.scenario.max_nodes, self.scenario.max_stages, self.scenario.max_edges
        )
        self._episode: Episode | None = None
        self.plan: Plan | None = None
        self.result: SimResult | None = None
        self._actions: list[Any] = []
        self._return = 0.0
        self._invalid = 0
        self._seed: int | None = None

    # ------------------------------------------------------------------------------ accessors
    @property
    def episode(self) -> Episode:
        """The current episode (after :meth:`reset`)."""
        if self._episode is None:
            raise PipeenvError(f"{self.env_id}: call reset() before using the environment")
        return self._episode

    @property
    def graph(self) -> OperatorGraph:
        """The current episode's original graph (plans and results refer to it)."""
        return self.episode.entry.original

    @property
    def partitioned_graph(self) -> OperatorGraph:
        """The graph whose nodes the actions place (the original one, coarsened if needed)."""
        return self.episode.entry.graph

    @property
    def cluster(self) -> Cluster:
        """The current episode's cluster."""
        return self.episode.settings.cluster

    # ------------------------------------------------------------------------------- episodes
    def _start(self, seed: int | None, options: dict[str, Any] | None) -> Episode:
        super().reset(seed=seed)
        self._episode = self.scenario.episode(options, self.np_random)
        self._seed = seed
        self.plan = None
        self.result = None
        self._actions = []
        self._return = 0.0
        self._invalid = 0
        return self._episode

    def _finish(self, stages: np.ndarray, step_reward: float) -> tuple[float, dict[str, Any]]:
        """Terminal reward (plus ``step_reward``) and info of a complete assignment."""
        episode = self.episode
        reward, plan, result = self.scenario.evaluate(episode, stages)
        self.plan, self.result = plan, result
        total = reward + step_reward
        self._return += total
        entry = episode.entry
        info = {
            "plan": plan.to_dict(),
            "result": result.to_dict(),
            "reference": episode.reference.to_dict(),
            "speedup": episode.reference.iteration_s / result.iteration_s,
            "terminal_reward": reward,
            "invalid_actions": self._invalid,
            "graph": entry.original.name,
            "graph_hash": entry.original.graph_hash,
            "coarsened_nodes": None if entry.expand is None else entry.graph.num_nodes,
            "episode_return": self._return,
        }
        return total, info

    # --------------------------------------------------------------------------------- render
    def render(self) -> Any:
        """``ansi``: a per-stage table (and a text Gantt once the plan is complete);
        ``rgb_array``: a matplotlib Gantt of the simulated plan (per-stage load bars before)."""
        from pipeenv.envs import render as rendering

        if self.render_mode is None:
            gym.logger.warn(f"{self.env_id}: render() called without a render_mode")
            return None
        episode = self.episode
        if self.plan is not None:
            timed = simulate(
                self.graph,
                self.cluster,
                self.plan,
                timeline=True,
                param_memory_factor=self.scenario.param_memory_factor,
            )
            if self.render_mode == "ansi":
                table = rendering.stage_table(
                    timed, self.plan, graph=self.graph, cluster=self.cluster
                )
                return table + "\n" + rendering.gantt_text(timed)
            return rendering.gantt_rgb(timed)
        loads = self._stage_loads()
        if self.render_mode == "ansi":
            return rendering.load_table(loads, episode.settings.num_stages)
        return rendering.load_rgb(loads)

    def _stage_loads(self) -> np.ndarray:
        """``(S, 3)`` per-stage nodes, compute seconds and memory fraction placed so far (none
        here: the one-shot env places every node in its single step)."""
        return np.zeros((self.episode.settings.num_stages, 3))

    # -------------------------------------------------------------------------------- records
    def episode_record(self) -> EpisodeRecord:
        """The finished episode as a record that :func:`~pipeenv.envs.records.replay` checks.

        :raises PipeenvError: before the episode has ended.
        """
        if self.result is None:
            raise PipeenvError(f"{self.env_id}: episode_record() needs a finished episode")
        episode = self.episode
        s = episode.settings
        return EpisodeRecord(
            env_id=self.env_id,
            graph=episode.entry.label,
            graph_name=self.graph.name,
            graph_hash=self.graph.graph_hash,
            cluster=s.cluster.to_dict(),
            settings={
                "num_stages": s.num_stages,
                "microbatches": s.microbatches,
                "schedule": s.schedule,
                "data_parallel": s.data_parallel,
                "max_nodes": s.max_nodes,
                "max_stages": self.layout.max_stages,
                "max_edges": self.layout.max_edges,
                "padding_nodes": self.layout.max_nodes,
                "reward": s.reward,
                "oom_penalty": self.scenario.oom_penalty,
                "invalid_action_penalty": self.invalid_action_penalty,
                "param_memory_factor": self.scenario.param_memory_factor,
            },
            seed=self._seed,
            actions=list(self._actions),
            reward=self._return,
            iteration_s=self.result.iteration_s,
            feasible=self.result.feasible,
        )
