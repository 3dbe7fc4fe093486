"""Training a learned agent, with periodic evaluation against ``pipedream-dp`` and its cost.

:func:`train` (``pipeenv train``) trains ``ppo-gcn``, ``recurrent-gcn`` or ``oneshot-gcn`` on
one or several graphs (one drawn per episode) and evaluates it every ``eval_freq`` environment
steps on those graphs and on held-out ones: the agent plans each graph exactly as
``agents.make(name, model=...).plan(...)`` would (greedy episode plus ``samples`` sampled ones,
best simulated plan; :mod:`agents.learned`), and its throughput is divided by that of
``pipedream-dp`` on the same graph (as the environment loads it), cluster and pipeline.

**Training cost is a first-class figure.** For each graph, ``training_cost.json`` records the
first evaluation at which the agent reached 90%, 95% and 100% of ``pipedream-dp``'s throughput:
the environment steps and the wall time then, both the elapsed time (``wall_s``) and the time
spent training only (``train_wall_s``, evaluations left out). A threshold never reached is
``null``. The figures are as fine as ``eval_freq``.

The run directory holds ``config.json``, ``model.zip`` (the final model), ``best_model.zip``
(the best mean ratio over the training graphs), ``checkpoints/``, ``evaluations.json`` (every
evaluation), ``training_cost.json``, ``progress.csv`` (SB3's log) and, when the ``tensorboard``
package is installed, TensorBoard event files.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.logger import configure
from tqdm import tqdm

import agents
from agents.learned import DEFAULT_MAX_NODES, LearnedAgent, padding_of, training_env
from pipeenv.errors import PipeenvError
from pipeenv.simulator import SimResult

__all__ = ["THRESHOLDS", "TrainConfig", "Trainer", "train"]

#: Fractions of ``pipedream-dp``'s throughput whose training cost is recorded.
THRESHOLDS = (0.90, 0.95, 1.00)
#: Tolerance on a threshold (relative), so that a plan equal to ``pipedream-dp``'s counts as 100%.
_RATIO_TOLERANCE = 1e-9


@dataclass
class TrainConfig:
    """What ``pipeenv train`` asks for.

    :param agent: ``ppo-gcn``, ``recurrent-gcn`` or ``oneshot-gcn``.
    :param graphs: training graphs (zoo names or graph files).
    :param cluster: preset name or cluster file.
    :param timesteps: environment steps to train for.
    :param out: the run directory (must not exist unless ``force``).
    :param seed: seed of the model, the environments and the sampled evaluation episodes.
    :param n_envs: environments stepped together (one process).
    :param num_stages: pipeline stages S.
    :param microbatches: microbatches M.
    :param schedule: ``gpipe`` or ``1f1b``.
    :param data_parallel: replicas R of the training episodes and of the evaluations.
    :param eval_graphs: held-out graphs, evaluated but never trained on.
    :param eval_freq: environment steps between evaluations.
    :param checkpoint_freq: environment steps between checkpoints (0: none).
    :param samples: sampled episodes per evaluation, besides the greedy one.
    :param max_nodes: node padding (graphs are coarsened to it).
    :param time_limit_s: stop training after this many seconds of training (None: no limit).
    :param stop_ratio: stop once an evaluation reaches this fraction of ``pipedream-dp``'s
        throughput on every training graph (None: train for ``timesteps``).
    :param hyperparameters: overrides of the algorithm's settings (``n_steps``, ...).
    :param force: replace an existing run directory.
    :param progress_bar: show a tqdm progress bar.
    """

    agent: str
    graphs: list[str]
    cluster: str
    timesteps: int
    out: str
    seed: int = 0
    n_envs: int = 8
    num_stages: int = 4
    microbatches: int = 16
    schedule: str = "1f1b"
    data_parallel: int = 1
    eval_graphs: list[str] = field(default_factory=list)
    eval_freq: int = 4096
    checkpoint_freq: int = 0
    samples: int = 4
    max_nodes: int = DEFAULT_MAX_NODES
    time_limit_s: float | None = None
    stop_ratio: float | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    progress_bar: bool = True

    def check(self) -> None:
        """:raises PipeenvError: naming the first bad field."""
        if self.agent not in _learned_names():
            raise PipeenvError(
                f"train: agent {self.agent!r} is not a learned agent "
                f"(learned agents: {', '.join(_learned_names())})"
            )
        if not self.graphs:
            raise PipeenvError("train: give at least one training graph")
        overlap = sorted(set(self.graphs) & set(self.eval_graphs))
        if overlap:
            raise PipeenvError(f"train: held-out graph(s) {', '.join(overlap)} are also trained on")
        for name in ("timesteps", "n_envs", "num_stages", "microbatches", "data_parallel",
                     "eval_freq", "max_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PipeenvError(f"train: {name} must be an integer >= 1, got {value!r}")
        for name in ("seed", "checkpoint_freq", "samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PipeenvError(f"train: {name} must be an integer >= 0, got {value!r}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise PipeenvError(f"train: time_limit_s must be > 0, got {self.time_limit_s!r}")
        if self.stop_ratio is not None and not self.stop_ratio > 0:
            raise PipeenvError(f"train: stop_ratio must be > 0, got {self.stop_ratio!r}")


def _learned_names() -> list[str]:
    return [
        name
        for name in agents.names()
        if isinstance(agents.make(name), LearnedAgent)
    ]


def prepare_run_dir(out: str | Path, *, force: bool) -> Path:
    """Create the run directory ``out``.

    :raises PipeenvError: when it exists and ``force`` is False, or is not a directory.
    """
    path = Path(out)
    if path.exists():
        if not force:
            raise PipeenvError(
                f"train: run directory {str(path)!r} exists; pass --force to replace it"
            )
        if not path.is_dir():
            raise PipeenvError(f"train: {str(path)!r} exists and is not a directory")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@dataclass
class _GraphTarget:
    """One evaluated graph: its env and ``pipedream-dp``'s figures on it."""

    name: str
    held_out: bool
    env: Any
    reference_throughput: float
    reference_feasible: bool


class Trainer:
    """Runs one training (see the module docstring); :meth:`run` does it all.

    :param config: the run's settings (checked here).
    """

    def __init__(self, config: TrainConfig) -> None:
        config.check()
        self.config = config
        agent = agents.make(config.agent, seed=config.seed, samples=config.samples)
        assert isinstance(agent, LearnedAgent)
        self.agent: LearnedAgent = agent
        self.out = prepare_run_dir(config.out, force=config.force)
        self.env_kwargs: dict[str, Any] = {
            "cluster": config.cluster,
            "num_stages": config.num_stages,
            "microbatches": config.microbatches,
            "schedule": config.schedule,
            "data_parallel": config.data_parallel,
            "max_nodes": config.max_nodes,
        }
        self.evaluations: list[dict[str, Any]] = []
        self.best_mean_ratio = -np.inf
        self.eval_s = 0.0
        self.started = 0.0
        self.model: BaseAlgorithm | None = None
        self.targets: list[_GraphTarget] = []
        self.bar: tqdm | None = None

    # ------------------------------------------------------------------------ references
    def _targets(self, padding: dict[str, int]) -> list[_GraphTarget]:
        """An evaluation env per graph and ``pipedream-dp``'s throughput on it."""
        reference = agents.make("pipedream-dp")
        env_class = self.agent.env_class()
        targets = []
        graphs = [(g, False) for g in self.config.graphs]
        graphs += [(g, True) for g in self.config.eval_graphs]
        for name, held_out in graphs:
            kwargs = {**self.env_kwargs, **padding, "graph": name}
            env = env_class(**kwargs)
            env.reset(seed=0)
            plan = reference.plan(
                env.graph,
                env.cluster,
                num_stages=self.config.num_stages,
                microbatches=self.config.microbatches,
                schedule=self.config.schedule,
                data_parallel=self.config.data_parallel,
            )
            predicted = plan.predicted or {}
            targets.append(
                _GraphTarget(
                    name,
                    held_out,
                    env,
                    float(predicted["throughput_samples_per_s"]),
                    bool(predicted.get("feasible", True)),
                )
            )
        return targets

    # ------------------------------------------------------------------------ evaluation
    def evaluate(self, model: BaseAlgorithm, timesteps: int) -> dict[str, Any]:
        """Plan every graph with the current model; record and return the evaluation."""
        began = time.perf_counter()
        graphs: dict[str, Any] = {}
        for target in self.targets:
            _, result = self.agent.search(model, target.env)
            graphs[target.name] = self._graph_record(target, result)
        self.eval_s += time.perf_counter() - began
        elapsed = time.perf_counter() - self.started
        record = {
            "timesteps": timesteps,
            "wall_s": elapsed,
            "train_wall_s": elapsed - self.eval_s,
            "graphs": graphs,
        }
        self.evaluations.append(record)
        trained = [g["ratio"] for g in graphs.values() if not g["held_out"]]
        mean_ratio = float(np.mean(trained))
        record["mean_train_ratio"] = mean_ratio
        if mean_ratio > self.best_mean_ratio:
            self.best_mean_ratio = mean_ratio
            model.save(self.out / "best_model.zip")
        for name, g in graphs.items():
            model.logger.record(f"eval/{name}/ratio_to_pipedream_dp", g["ratio"])
        model.logger.record("eval/mean_train_ratio", mean_ratio)
        _write_json(self.out / "evaluations.json", self.evaluations)
        if self.bar is not None:
            self.bar.set_postfix(ratio_to_pipedream_dp=f"{mean_ratio:.3f}")
        return record

    @staticmethod
    def _graph_record(target: _GraphTarget, result: SimResult) -> dict[str, Any]:
        return {
            "held_out": target.held_out,
            "throughput_samples_per_s": result.throughput_samples_per_s,
            "iteration_s": result.iteration_s,
            "feasible": result.feasible,
            "pipedream_dp_throughput_samples_per_s": target.reference_throughput,
            "ratio": result.throughput_samples_per_s / target.reference_throughput,
        }

    def training_cost(self) -> dict[str, Any]:
        """Per graph, the first evaluation reaching each threshold (module docstring)."""
        per_graph: dict[str, Any] = {}
        for target in self.targets:
            reached: dict[str, Any] = {}
            for threshold in THRESHOLDS:
                hit = next(
                    (
                        e
                        for e in self.evaluations
                        if e["graphs"][target.name]["feasible"]
                        and e["graphs"][target.name]["ratio"] >= threshold - _RATIO_TOLERANCE
                    ),
                    None,
                )
                reached[f"{threshold:.2f}"] = None if hit is None else {
                    "timesteps": hit["timesteps"],
                    "wall_s": round(hit["wall_s"], 3),
                    "train_wall_s": round(hit["train_wall_s"], 3),
                }
            ratios = [e["graphs"][target.name]["ratio"] for e in self.evaluations]
            per_graph[target.name] = {
                "held_out": target.held_out,
                "pipedream_dp_throughput_samples_per_s": target.reference_throughput,
                "pipedream_dp_feasible": target.reference_feasible,
                "best_ratio": max(ratios),
                "final_ratio": ratios[-1],
                "reached": reached,
            }
        last = self.evaluations[-1]
        return {
            "agent": self.config.agent,
            "cluster": self.config.cluster,
            "num_stages": self.config.num_stages,
            "microbatches": self.config.microbatches,
            "schedule": self.config.schedule,
            "data_parallel": self.config.data_parallel,
            "thresholds": list(THRESHOLDS),
            "eval_freq": self.config.eval_freq,
            "timesteps": last["timesteps"],
            "wall_s": round(last["wall_s"], 3),
            "train_wall_s": round(last["train_wall_s"], 3),
            "torch_threads": th.get_num_threads(),
            "graphs": per_graph,
        }

    # ------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Train, evaluate, save; the training-cost figures (also in ``training_cost.json``)."""
        cfg = self.config
        _write_json(self.out / "config.json", asdict(cfg))
        env = training_env(
            self.agent.env_class(), {**self.env_kwargs, "graph": list(cfg.graphs)},
            cfg.n_envs, cfg.seed,
        )
        model = self.agent.build_model(env, seed=cfg.seed, **cfg.hyperparameters)
        formats = ["csv"]
        if importlib.util.find_spec("tensorboard") is not None:
            formats.append("tensorboard")
        model.set_logger(configure(str(self.out), formats))
        self.model = model
        self.targets = self._targets(padding_of(model))
        callbacks: list[BaseCallback] = [_Evaluations(self)]
        if cfg.checkpoint_freq:
            callbacks.append(
                CheckpointCallback(
                    max(cfg.checkpoint_freq // cfg.n_envs, 1),
                    str(self.out / "checkpoints"),
                    name_prefix="model",
                )
            )
        self.bar = tqdm(total=cfg.timesteps, unit="step", disable=not cfg.progress_bar,
                        desc=cfg.agent)
        callbacks.append(_Progress(self.bar))
        self.started = time.perf_counter()
        try:
            model.learn(total_timesteps=cfg.timesteps, callback=CallbackList(callbacks))
        finally:
            self.bar.close()
        if not self.evaluations or self.evaluations[-1]["timesteps"] != model.num_timesteps:
            self.evaluate(model, model.num_timesteps)
        model.save(self.out / "model.zip")
        cost = self.training_cost()
        _write_json(self.out / "training_cost.json", cost)
        env.close()
        return cost


class _Evaluations(BaseCallback):
    """Evaluates every ``eval_freq`` steps and stops at the time limit."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.trainer = trainer
        self.next_eval = 0

    def _on_training_start(self) -> None:
        self.trainer.evaluate(self.model, 0)
        self.next_eval = self.trainer.config.eval_freq

    def _on_step(self) -> bool:
        trainer = self.trainer
        if self.num_timesteps >= self.next_eval:
            record = trainer.evaluate(self.model, self.num_timesteps)
            self.next_eval += trainer.config.eval_freq
            stop = trainer.config.stop_ratio
            if stop is not None and all(
                g["feasible"] and g["ratio"] >= stop - _RATIO_TOLERANCE
                for g in record["graphs"].values()
                if not g["held_out"]
            ):
                return False
        limit = trainer.config.time_limit_s
        if limit is not None:
            trained_s = time.perf_counter() - trainer.started - trainer.eval_s
            if trained_s >= limit:
                return False
        return True


class _Progress(BaseCallback):
    """Advances a tqdm bar over environment steps (the evaluations set its postfix)."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar
        self.shown = 0

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.shown)
        self.shown = self.num_timesteps
        return True


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def train(
    agent: str,
    graphs: Sequence[str],
    cluster: str,
    timesteps: int,
    out: str,
    **options: Any,
) -> dict[str, Any]:
    """Train ``agent`` and write the run directory ``out``; the training-cost figures.

    :param options: the other fields of :class:`TrainConfig`.
    :raises PipeenvError: on a bad setting or an existing ``out`` without ``force=True``.
    """
    config = TrainConfig(agent, list(graphs), cluster, timesteps, out, **options)
    return Trainer(config).run()
