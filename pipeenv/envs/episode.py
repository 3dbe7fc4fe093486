"""What an episode is about: the graph, cluster and pipeline settings, checked, loaded and cached.

Both environments take the same arguments (:class:`Scenario`), may override them per episode with
``reset(options=...)``, and score a finished stage assignment the same way
(:meth:`Scenario.evaluate`): the stages are expanded to the original graph when it was
coarsened, turned into a SPEC §3 plan and simulated (SPEC §4) against the reference plan.

Everything that depends only on a graph (loading, coarsening, structure) is computed once per
scenario and graph; the reference figures once per graph, cluster and pipeline settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeenv.cluster import Cluster, load_cluster
from pipeenv.envs.reward import check_reward_mode, terminal_reward
from pipeenv.envs.settings import OPTION_KEYS, Settings, float_arg, int_arg
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.partition_reference import balanced_contiguous
from pipeenv.plan import Plan
from pipeenv.schedules import SCHEDULES, op_order, peak_in_flight
from pipeenv.simulator import SimResult, simulate

__all__ = ["Episode", "GraphEntry", "GraphSpec", "Reference", "Scenario"]

GraphSpec = str | os.PathLike[str] | OperatorGraph


@dataclass(frozen=True)
class GraphEntry:
    """A loaded graph and what the environments precompute from it.

    :param label: how to load it again (``zoo:<name>@<device>/<microbatch_size>``, ``file:<path>``
        or ``object:<name>``), stored in episode records.
    :param original: the graph as given (plans and rewards refer to it).
    :param graph: the graph the agent partitions (``original`` coarsened to ``max_nodes``).
    :param expand: canonical index in ``graph`` of each original node (None when not coarsened).
    :param structure: ``(n, 5)`` float32 structural features of ``graph`` (see observation).
    :param ancestors: number of ancestors of each node of ``graph``.
    :param descendants: number of descendants of each node of ``graph``.
    """

    label: str
    original: OperatorGraph
    graph: OperatorGraph
    expand: np.ndarray | None
    structure: np.ndarray
    ancestors: np.ndarray
    descendants: np.ndarray


@dataclass(frozen=True)
class Reference:
    """The reference plan's figures (time-balanced contiguous partition, SPEC §4 simulation)."""

    iteration_s: float
    throughput_samples_per_s: float
    feasible: bool
    stages: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "balanced-time",
            "iteration_s": self.iteration_s,
            "throughput_samples_per_s": self.throughput_samples_per_s,
            "feasible": self.feasible,
        }


@dataclass(frozen=True)
class Episode:
    """One episode's graph, settings, reference and per-stage device figures."""

    entry: GraphEntry
    settings: Settings
    reference: Reference
    speed: np.ndarray
    memory_bytes: np.ndarray
    bandwidth_Bps: np.ndarray
    peak_in_flight: np.ndarray


def _structure(graph: OperatorGraph) -> np.ndarray:
    """Depth and height (longest paths, normalised), log in/out degree, canonical position."""
    a = graph.arrays
    n = graph.num_nodes
    depth = np.zeros(n)
    height = np.zeros(n)
    pred_ptr, pred_idx = a.pred_ptr.tolist(), a.pred_idx.tolist()
    succ_ptr, succ_idx = a.succ_ptr.tolist(), a.succ_idx.tolist()
    for v in range(n):
        preds = pred_idx[pred_ptr[v] : pred_ptr[v + 1]]
        if preds:
            depth[v] = 1 + max(depth[p] for p in preds)
    for v in range(n - 1, -1, -1):
        succs = succ_idx[succ_ptr[v] : succ_ptr[v + 1]]
        if succs:
            height[v] = 1 + max(height[s] for s in succs)
    out = np.empty((n, 5), dtype=np.float32)
    out[:, 0] = depth / max(depth.max(), 1.0)
    out[:, 1] = height / max(height.max(), 1.0)
    out[:, 2] = np.log1p(np.diff(a.pred_ptr))
    out[:, 3] = np.log1p(np.diff(a.succ_ptr))
    out[:, 4] = np.arange(n) / max(n - 1, 1)
    out.setflags(write=False)
    return out


def _closure_counts(graph: OperatorGraph) -> tuple[np.ndarray, np.ndarray]:
    """Number of ancestors and of descendants of every node (transitive closure, once)."""
    a = graph.arrays
    n = graph.num_nodes
    reach = np.zeros((n, n), dtype=bool)
    for v in range(n - 1, -1, -1):
        succs = a.succ_idx[a.succ_ptr[v] : a.succ_ptr[v + 1]]
        if succs.size:
            reach[v, succs] = True
            reach[v] |= reach[succs].any(axis=0)
    return reach.sum(axis=0).astype(np.int64), reach.sum(axis=1).astype(np.int64)


class Scenario:
    """The checked arguments of an environment, with the graph and reference caches.

    :param where: the environment id, for error messages.
    :param graph: a zoo model name, a ``pipeenv.graph/v1`` file, an :class:`OperatorGraph`, or a
        non-empty list of them (one is drawn with the env's ``np_random`` at each reset).
    :param cluster: a preset name, a ``pipeenv.cluster/v1`` file or a :class:`Cluster`.
    :param num_stages: pipeline stages S (``<= max_stages``; ``S * data_parallel`` devices).
    :param microbatches: microbatches M per iteration.
    :param schedule: ``gpipe`` or ``1f1b``.
    :param data_parallel: replicas R of the whole pipeline.
    :param max_nodes: the observation's node padding; larger graphs are coarsened to it.
    :param max_stages: the action space size (default ``num_stages``).
    :param max_edges: the observation's edge padding (default ``8 * max_nodes``).
    :param reward: a mode of :data:`pipeenv.envs.reward.REWARD_MODES`.
    :param oom_penalty: penalty scale of an out-of-memory plan.
    :param param_memory_factor: memory bytes per parameter byte (SPEC §4).
    :param microbatch_size: samples per microbatch of zoo graphs (default: the zoo's).
    :raises PipeenvError: naming the argument and the rule it breaks.
    """

    def __init__(
        self,
        where: str,
        *,
        graph: GraphSpec | Sequence[GraphSpec],
        cluster: str | os.PathLike[str] | Cluster,
        num_stages: int,
        microbatches: int,
        schedule: str,
        data_parallel: int,
        max_nodes: int,
        max_stages: int | None,
        max_edges: int | None,
        reward: str,
        oom_penalty: float,
        param_memory_factor: float,
        microbatch_size: int | None,
    ) -> None:
        self.where = where
        self.max_nodes = int_arg(where, "max_nodes", max_nodes, 2)
        stages = int_arg(where, "num_stages", num_stages, 1)
        self.max_stages = int_arg(
            where, "max_stages", stages if max_stages is None else max_stages, 1
        )
        self.max_edges = int_arg(
            where, "max_edges", 8 * self.max_nodes if max_edges is None else max_edges, 1
        )
        self.oom_penalty = float_arg(where, "oom_penalty", oom_penalty)
        self.param_memory_factor = float_arg(where, "param_memory_factor", param_memory_factor)
        self.microbatch_size = (
            None
            if microbatch_size is None
            else int_arg(where, "microbatch_size", microbatch_size, 1)
        )
        self._graphs: dict[tuple[Any, ...], GraphEntry] = {}
        self._references: dict[tuple[Any, ...], Reference] = {}
        self._clusters: dict[str, Cluster] = {}
        self.graph_choices = self._graph_choices(graph)
        self.defaults = self.settings(
            {
                "cluster": cluster,
                "num_stages": num_stages,
                "microbatches": microbatches,
                "schedule": schedule,
                "data_parallel": data_parallel,
                "max_nodes": self.max_nodes,
                "reward": reward,
            },
            None,
        )
        for choice in self.graph_choices:
            self.entry(choice, self.defaults)

    # ------------------------------------------------------------------------------ arguments
    def _graph_choices(self, graph: Any) -> tuple[GraphSpec, ...]:
        if isinstance(graph, list | tuple):
            if not graph:
                raise PipeenvError(f"{self.where}: argument 'graph' must not be an empty list")
            choices = tuple(graph)
        else:
            choices = (graph,)
        for g in choices:
            if not isinstance(g, str | os.PathLike | OperatorGraph):
                raise PipeenvError(
                    f"{self.where}: argument 'graph' must be a zoo name, a graph file, an "
                    f"OperatorGraph or a list of them, got {type(g).__name__}"
                )
        return choices

    def _cluster(self, cluster: Any) -> Cluster:
        if isinstance(cluster, Cluster):
            return cluster
        if not isinstance(cluster, str | os.PathLike):
            raise PipeenvError(
                f"{self.where}: argument 'cluster' must be a preset name, a cluster file or a "
                f"Cluster, got {type(cluster).__name__}"
            )
        key = os.fspath(cluster)
        if key not in self._clusters:
            self._clusters[key] = load_cluster(key)
        return self._clusters[key]

    def settings(self, options: Mapping[str, Any] | None, base: Settings | None) -> Settings:
        """The settings of an episode: ``base`` (the constructor's) with ``options`` applied.

        :raises PipeenvError: on an unknown option or a value breaking a rule.
        """
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(OPTION_KEYS))
        if unknown:
            raise PipeenvError(
                f"{self.where}: unknown reset option {unknown[0]!r} "
                f"(known: {', '.join(OPTION_KEYS)})"
            )
        where = self.where
        values: dict[str, Any] = {} if base is None else dict(base.__dict__)
        values.update({k: v for k, v in opts.items() if k != "graph"})
        cluster = self._cluster(values["cluster"])
        num_stages = int_arg(where, "num_stages", values["num_stages"], 1)
        if num_stages > self.max_stages:
            raise PipeenvError(
                f"{where}: argument 'num_stages' ({num_stages}) must be <= max_stages "
                f"({self.max_stages}), the size of the action space"
            )
        microbatches = int_arg(where, "microbatches", values["microbatches"], 1)
        schedule = values["schedule"]
        if schedule not in SCHEDULES:
            raise PipeenvError(
                f"{where}: argument 'schedule' must be one of {', '.join(SCHEDULES)}, "
                f"got {schedule!r}"
            )
        data_parallel = int_arg(where, "data_parallel", values["data_parallel"], 1)
        if num_stages * data_parallel > cluster.num_devices:
            raise PipeenvError(
                f"{where}: num_stages x data_parallel = {num_stages * data_parallel} devices, "
                f"cluster {cluster.name!r} has {cluster.num_devices}"
            )
        max_nodes = int_arg(where, "max_nodes", values["max_nodes"], 2)
        if max_nodes > self.max_nodes:
            raise PipeenvError(
                f"{where}: reset option 'max_nodes' ({max_nodes}) must be <= the padding "
                f"max_nodes={self.max_nodes} the environment was made with"
            )
        return Settings(
            cluster=cluster,
            num_stages=num_stages,
            microbatches=microbatches,
            schedule=schedule,
            data_parallel=data_parallel,
            max_nodes=max_nodes,
            reward=check_reward_mode(values["reward"], where),
        )

    # --------------------------------------------------------------------------------- graphs
    def _zoo_device(self, cluster: Cluster) -> str:
        from pipeenv.zoo.costs import DEVICES

        kind = cluster.reference_kind
        return kind if kind in DEVICES else "a100"

    def _load(self, spec: GraphSpec, settings: Settings) -> tuple[tuple[Any, ...], str, Any]:
        """(cache key, label, loader) of a graph spec."""
        if isinstance(spec, OperatorGraph):
            return ("object", id(spec)), f"object:{spec.name}", lambda: spec
        text = os.fspath(spec)
        if text.endswith(".json") or os.sep in text or Path(text).is_file():
            path = str(Path(text).resolve())
            return ("file", path), f"file:{path}", lambda: OperatorGraph.load(path)
        from pipeenv import zoo

        if text not in zoo.names():
            raise PipeenvError(
                f"{self.where}: argument 'graph': {text!r} is neither a zoo model "
                f"({', '.join(zoo.names())}) nor a graph file"
            )
        device = self._zoo_device(settings.cluster)
        mb = self.microbatch_size
        label = f"zoo:{text}@{device}" + ("" if mb is None else f"/{mb}")
        return ("zoo", text, device, mb), label, lambda: zoo.load(text, device, mb)

    def entry(self, spec: GraphSpec, settings: Settings) -> GraphEntry:
        """The (cached) graph entry of ``spec`` coarsened to ``settings.max_nodes``.

        :raises PipeenvError: when the graph cannot be loaded, has fewer nodes than stages, or
            more edges than ``max_edges`` after coarsening.
        """
        key, label, loader = self._load(spec, settings)
        full_key = (*key, settings.max_nodes)
        entry = self._graphs.get(full_key)
        if entry is None:
            original = loader()
            graph, expand = original, None
            if original.num_nodes > settings.max_nodes:
                coarsening = original.coarsen(settings.max_nodes)
                graph = coarsening.graph
                expand = np.array(
                    [graph.index[coarsening.coarse_of[nid]] for nid in original.order],
                    dtype=np.int64,
                )
                expand.setflags(write=False)
            if graph.num_edges > self.max_edges:
                raise PipeenvError(
                    f"{self.where}: graph {graph.name!r} has {graph.num_edges} edges at "
                    f"{graph.num_nodes} nodes, more than max_edges={self.max_edges}; "
                    "raise max_edges"
                )
            ancestors, descendants = _closure_counts(graph)
            entry = GraphEntry(
                label, original, graph, expand, _structure(graph), ancestors, descendants
            )
            self._graphs[full_key] = entry
        if entry.graph.num_nodes < settings.num_stages:
            raise PipeenvError(
                f"{self.where}: argument 'num_stages' ({settings.num_stages}) exceeds the "
                f"{entry.graph.num_nodes} nodes of graph {entry.graph.name!r}"
            )
        return entry

    # ------------------------------------------------------------------------------- episodes
    def episode(self, options: Mapping[str, Any] | None, rng: np.random.Generator) -> Episode:
        """Settings, graph and reference of a new episode (options apply to it only)."""
        settings = self.settings(options, self.defaults) if options else self.defaults
        if options and "graph" in options:
            choices = self._graph_choices(options["graph"])
        else:
            choices = self.graph_choices
        spec = choices[int(rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
        entry = self.entry(spec, settings)
        cluster = settings.cluster
        devices = np.array(settings.devices, dtype=np.int64).reshape(
            settings.data_parallel, settings.num_stages
        )
        stage_devices = devices[0]
        bw = cluster.link_arrays[0]
        bandwidth = np.array(
            [bw[stage_devices[s], stage_devices[s + 1]] for s in range(settings.num_stages - 1)],
            dtype=np.float64,
        )
        order = op_order(settings.schedule, settings.num_stages, settings.microbatches)
        return Episode(
            entry=entry,
            settings=settings,
            reference=self.reference(entry, settings),
            speed=cluster.speed[stage_devices],
            memory_bytes=cluster.memory_bytes[devices].min(axis=0),
            bandwidth_Bps=bandwidth,
            peak_in_flight=np.array([peak_in_flight(row) for row in order], dtype=np.float64),
        )

    def _plan(self, episode_settings: Settings, graph: OperatorGraph, stages: np.ndarray) -> Plan:
        s = episode_settings
        return Plan.from_stages(
            graph,
            stages,
            num_stages=s.num_stages,
            devices=s.devices,
            data_parallel=s.data_parallel,
            microbatches=s.microbatches,
            schedule=s.schedule,
            cluster=s.cluster.name,
            agent={"name": self.where},
        )

    def reference(self, entry: GraphEntry, settings: Settings) -> Reference:
        """The reference figures of ``entry`` under ``settings`` (cached)."""
        key = (
            entry.original,
            settings.cluster,
            settings.num_stages,
            settings.microbatches,
            settings.schedule,
            settings.data_parallel,
        )
        ref = self._references.get(key)
        if ref is None:
            original = entry.original
            stages = balanced_contiguous(
                original.arrays.forward_s + original.arrays.backward_s, settings.num_stages
            )
            result = simulate(
                original,
                settings.cluster,
                self._plan(settings, original, stages),
                param_memory_factor=self.param_memory_factor,
            )
            ref = Reference(
                result.iteration_s, result.throughput_samples_per_s, result.feasible, stages
            )
            self._references[key] = ref
        return ref

    def evaluate(self, episode: Episode, stages: np.ndarray) -> tuple[float, Plan, SimResult]:
        """Reward, plan and result of a complete stage assignment of ``episode.entry.graph``.

        :param stages: stage of each node of the partitioned graph, in its canonical order.
        """
        entry, settings = episode.entry, episode.settings
        # Plan.from_stages freezes the array it is given: hand it a copy.
        original_stages = stages.copy() if entry.expand is None else stages[entry.expand]
        plan = self._plan(settings, entry.original, original_stages)
        result = simulate(
            entry.original, settings.cluster, plan, param_memory_factor=self.param_memory_factor
        )
        oom_fraction = 0.0
        if not result.feasible:
            oom_fraction = max(
                st.oom_excess_bytes / episode.memory_bytes[st.stage] for st in result.stages
            )
        reward = terminal_reward(
            settings.reward,
            result.iteration_s,
            episode.reference.iteration_s,
            feasible=result.feasible,
            oom_fraction=oom_fraction,
            oom_penalty=self.oom_penalty,
        )
        return reward, plan, result
