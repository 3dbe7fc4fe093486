"""Plans (``pipeenv.plan/v1``, SPEC §3): stage assignment, devices, schedule; validation; I/O.

A plan names nodes by id. Agents and environments that work on arrays build plans with
:meth:`Plan.from_stages`, which keeps the stage array in the graph's canonical order so the
simulator never goes back through the id mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeenv.errors import PipeenvError
from pipeenv.jsonio import check_format, read_json, write_json
from pipeenv.schedules import schedule_code

if TYPE_CHECKING:
    from pipeenv.cluster import Cluster
    from pipeenv.graph import OperatorGraph

__all__ = ["FORMAT", "Plan", "load_plan"]

FORMAT = "pipeenv.plan/v1"


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise PipeenvError(f"plan: field '{field}' must be an integer, got {value!r}")
    if value < 1:
        raise PipeenvError(f"plan: field '{field}' must be >= 1, got {value}")
    return int(value)


class Plan:
    """A partition of a graph into pipeline stages placed on devices (SPEC §3).

    :param stage_of: stage of every node id.
    :param num_stages: S; stages are ``0 .. S-1``.
    :param devices: ``S * data_parallel`` device indices; replica r of stage s runs on
        ``devices[r * S + s]``.
    :param data_parallel: R, replicas of the whole pipeline.
    :param microbatches: M per replica and iteration.
    :param schedule: ``gpipe`` or ``1f1b``.
    :param graph: graph name (informative).
    :param cluster: cluster name (informative).
    :param graph_hash: :attr:`OperatorGraph.graph_hash` of the graph the plan was made for; when
        present, applying the plan to another graph is refused.
    :param predicted: simulator figures at export time (informative; recomputed on use).
    :param agent: who made the plan (informative).
    """

    def __init__(
        self,
        stage_of: Mapping[str, int],
        *,
        num_stages: int,
        devices: Iterable[int],
        data_parallel: int = 1,
        microbatches: int = 1,
        schedule: str = "1f1b",
        graph: str = "",
        cluster: str = "",
        graph_hash: str | None = None,
        predicted: Mapping[str, Any] | None = None,
        agent: Mapping[str, Any] | None = None,
    ) -> None:
        self.num_stages = _positive_int(num_stages, "num_stages")
        self.data_parallel = _positive_int(data_parallel, "data_parallel")
        self.microbatches = _positive_int(microbatches, "microbatches")
        schedule_code(schedule)
        self.schedule = schedule
        self.devices: tuple[int, ...] = tuple(devices)
        for i, d in enumerate(self.devices):
            if isinstance(d, bool) or not isinstance(d, int | np.integer):
                raise PipeenvError(
                    f"plan: field 'devices': entry {i} must be an integer, got {d!r}"
                )
        self.devices = tuple(int(d) for d in self.devices)
        self.graph = graph
        self.cluster = cluster
        self.graph_hash = graph_hash
        self.predicted = dict(predicted) if predicted else None
        self.agent = dict(agent) if agent else None
        self._stage_of: dict[str, int] | None = dict(stage_of)
        self._stages: np.ndarray | None = None
        self._stages_graph: OperatorGraph | None = None
        self._checked: tuple[OperatorGraph, Cluster] | None = None
        self._devices_array: np.ndarray | None = None

    @classmethod
    def from_stages(
        cls, graph: OperatorGraph, stages: np.ndarray | Iterable[int], /, **fields: Any
    ) -> Plan:
        """A plan from a stage array in ``graph``'s canonical order (the fast path for agents).

        ``fields`` are the other constructor arguments; ``graph`` and ``graph_hash`` default to
        the graph's.
        """
        arr = np.ascontiguousarray(stages, dtype=np.int64)
        if arr.shape != (graph.num_nodes,):
            raise PipeenvError(
                f"plan: stage array has shape {arr.shape}, the graph has {graph.num_nodes} nodes"
            )
        fields.setdefault("graph", graph.name)
        fields.setdefault("graph_hash", graph.graph_hash)
        plan = cls({}, **fields)
        plan._stage_of = None
        arr.setflags(write=False)
        plan._stages, plan._stages_graph = arr, graph
        return plan

    # ------------------------------------------------------------------------------ accessors
    @property
    def stage_of(self) -> dict[str, int]:
        """Stage of every node id."""
        if self._stage_of is None:
            assert self._stages is not None and self._stages_graph is not None
            self._stage_of = dict(zip(self._stages_graph.order, self._stages.tolist(), strict=True))
        return self._stage_of

    def stages(self, graph: OperatorGraph) -> np.ndarray:
        """Stage array in ``graph``'s canonical order (cached per graph).

        :raises PipeenvError: when a node of the graph has no stage or the plan names an unknown
            node.
        """
        if self._stages is not None and self._stages_graph is graph:
            return self._stages
        stage_of = self.stage_of
        for nid in stage_of:
            if nid not in graph:
                raise PipeenvError(
                    f"plan: field 'stage_of': unknown node {nid!r} (not in graph {graph.name!r})"
                )
        out = np.empty(graph.num_nodes, dtype=np.int64)
        for i, nid in enumerate(graph.order):
            if nid not in stage_of:
                raise PipeenvError(f"plan: field 'stage_of': node {nid!r} has no stage")
            s = stage_of[nid]
            if isinstance(s, bool) or not isinstance(s, int | np.integer):
                raise PipeenvError(
                    f"plan: field 'stage_of': node {nid!r}: stage must be an integer, got {s!r}"
                )
            out[i] = s
        out.setflags(write=False)
        self._stages, self._stages_graph = out, graph
        return out

    @property
    def devices_array(self) -> np.ndarray:
        """``devices`` as a read-only int64 array (cached)."""
        if self._devices_array is None:
            arr = np.array(self.devices, dtype=np.int64)
            arr.setflags(write=False)
            self._devices_array = arr
        return self._devices_array

    def device_of(self, stage: int, replica: int = 0) -> int:
        """Device index of replica ``replica`` of stage ``stage``."""
        return self.devices[replica * self.num_stages + stage]

    # ----------------------------------------------------------------------------- validation
    def validate(self, graph: OperatorGraph, cluster: Cluster | None = None) -> None:
        """Check every rule of SPEC §3 against ``graph`` (and ``cluster`` for devices).

        :raises PipeenvError: naming the rule and the node, edge, stage or device.
        """
        if cluster is not None and self._checked is not None:
            if self._checked[0] is graph and self._checked[1] is cluster:
                return
        if self.graph_hash is not None and self.graph_hash != graph.graph_hash:
            raise PipeenvError(
                f"plan: field 'graph_hash' {self.graph_hash[:19]}... does not match graph "
                f"{graph.name!r} ({graph.graph_hash[:19]}...): the plan was made for another graph"
            )
        stages = self.stages(graph)
        num_stages = self.num_stages
        bad = np.flatnonzero((stages < 0) | (stages >= num_stages))
        if bad.size:
            nid = graph.order[bad[0]]
            raise PipeenvError(
                f"plan: node {nid!r}: stage {stages[bad[0]]} is out of range 0..{num_stages - 1}"
            )
        counts = np.bincount(stages, minlength=num_stages)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise PipeenvError(f"plan: stage {empty[0]} is empty (every stage needs a node)")
        a = graph.arrays
        backward = np.flatnonzero(stages[a.edge_src] > stages[a.edge_dst])
        if backward.size:
            u, v = graph.order[a.edge_src[backward[0]]], graph.order[a.edge_dst[backward[0]]]
            raise PipeenvError(
                f"plan: edge ({u!r}, {v!r}) goes backward: stage {stages[a.edge_src[backward[0]]]}"
                f" -> {stages[a.edge_dst[backward[0]]]}"
            )
        need = num_stages * self.data_parallel
        if len(self.devices) != need:
            raise PipeenvError(
                f"plan: field 'devices' lists {len(self.devices)} devices, needs num_stages x "
                f"data_parallel = {need}"
            )
        seen: dict[int, int] = {}
        for i, d in enumerate(self.devices):
            if d in seen:
                raise PipeenvError(f"plan: device {d} is used twice (entries {seen[d]} and {i})")
            seen[d] = i
            if d < 0 or (cluster is not None and d >= cluster.num_devices):
                limit = f"0..{cluster.num_devices - 1}" if cluster is not None else ">= 0"
                raise PipeenvError(f"plan: device {d} is out of range {limit}")
        if cluster is not None:
            self._checked = (graph, cluster)

    # ------------------------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Plan:
        """A plan from a ``pipeenv.plan/v1`` dict (graph-independent checks only)."""
        check_format(dict(doc), FORMAT, "plan")
        for key in ("num_stages", "stage_of", "devices", "microbatches", "schedule"):
            if key not in doc:
                raise PipeenvError(f"plan: missing required field '{key}'")
        if not isinstance(doc["stage_of"], Mapping):
            raise PipeenvError("plan: field 'stage_of' must be an object {node id: stage}")
        if not isinstance(doc["devices"], list):
            raise PipeenvError("plan: field 'devices' must be a list of device indices")
        schedule = doc["schedule"]
        schedule_code(schedule)
        for nid, s in doc["stage_of"].items():
            if isinstance(s, bool) or not isinstance(s, int):
                raise PipeenvError(
                    f"plan: field 'stage_of': node {nid!r}: stage must be an integer, got {s!r}"
                )
        return cls(
            doc["stage_of"],
            num_stages=doc["num_stages"],
            devices=doc["devices"],
            data_parallel=doc.get("data_parallel", 1),
            microbatches=doc["microbatches"],
            schedule=schedule,
            graph=str(doc.get("graph", "")),
            cluster=str(doc.get("cluster", "")),
            graph_hash=doc.get("graph_hash"),
            predicted=doc.get("predicted"),
            agent=doc.get("agent"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The plan as a ``pipeenv.plan/v1`` dict."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "graph": self.graph,
            "cluster": self.cluster,
            "num_stages": self.num_stages,
            "stage_of": dict(self.stage_of),
            "devices": list(self.devices),
            "data_parallel": self.data_parallel,
            "microbatches": self.microbatches,
            "schedule": self.schedule,
        }
        if self.graph_hash is not None:
            d["graph_hash"] = self.graph_hash
        if self.predicted is not None:
            d["predicted"] = self.predicted
        if self.agent is not None:
            d["agent"] = self.agent
        return d

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a ``pipeenv.plan/v1`` JSON file."""
        return cls.from_dict(read_json(path, "plan"))

    def save(self, path: str | Path, *, overwrite: bool = True) -> None:
        """Write the plan as ``pipeenv.plan/v1`` JSON."""
        write_json(path, self.to_dict(), overwrite=overwrite)

    def _settings(self) -> dict[str, Any]:
        """Every constructor field but ``stage_of``, ``graph`` and ``graph_hash``."""
        return {
            "num_stages": self.num_stages,
            "devices": self.devices,
            "data_parallel": self.data_parallel,
            "microbatches": self.microbatches,
            "schedule": self.schedule,
            "cluster": self.cluster,
            "predicted": self.predicted,
            "agent": self.agent,
        }

    def replace(self, **changes: Any) -> Plan:
        """A copy with some fields changed (``stage_of``, ``devices``, ``predicted``, ...)."""
        fields = {**self._settings(), "graph": self.graph, "graph_hash": self.graph_hash}
        stage_of = changes.pop("stage_of", None)
        fields.update(changes)
        if stage_of is None and self._stage_of is None and self._stages_graph is not None:
            return Plan.from_stages(self._stages_graph, self._stages, **fields)  # type: ignore[arg-type]
        return Plan(self.stage_of if stage_of is None else stage_of, **fields)

    def with_stages(self, graph: OperatorGraph, stages: np.ndarray | Iterable[int]) -> Plan:
        """The same pipeline (devices, schedule, ...) with ``stages`` on ``graph`` (canonical
        order); ``graph`` and ``graph_hash`` become ``graph``'s (e.g. after coarsening)."""
        return Plan.from_stages(graph, stages, **self._settings())

    def __repr__(self) -> str:
        return (
            f"Plan(graph={self.graph!r}, S={self.num_stages}, R={self.data_parallel}, "
            f"M={self.microbatches}, {self.schedule})"
        )


def load_plan(path: str | Path) -> Plan:
    """Read a ``pipeenv.plan/v1`` JSON file (see :class:`Plan`)."""
    return Plan.load(path)
