"""PipeDream's planner on PipeDream's own cost model (issue 5, item 3).

Narayanan et al., "PipeDream: Generalized Pipeline Parallelism for DNN Training", SOSP 2019,
§3.1 ("Partitioning Algorithm"), as its optimizer (``optimizer_graph_hierarchical.py``, one
level of machines) computes it. This is for comparing with the literature; the ``pipedream-dp``
agent costs plans with pipeenv's simulator instead.

Steps, by the paper's names:

1. **Profile.** The graph's forward+backward seconds, parameter bytes and output bytes per node
   (a PipeDream ``graph.txt`` read by :func:`pipeenv.importers.from_pipedream`). ``Input*``
   sources cost nothing and are left out of the DP (they are put in stage 0 afterwards), and
   dead-end ``__getitem__`` sinks are dropped (put with their producer afterwards), as the
   optimizer does.
2. **States.** The downsets D of the remaining DAG (:mod:`agents.downsets`): C(D) the sum of
   forward+backward seconds, P(D) the parameter bytes, X(D) the output bytes of the nodes of D
   that feed a node outside D (the boundary's antichain).
3. **Stage cost.** Stage D(j) \\ D(k) on r replicas, with bandwidth B bytes/s, takes
   ``[C(j) - C(k) + 4 (r-1) (P(j) - P(k)) / (B r)] / r`` (compute plus weight
   synchronisation). Only with an activation compression ratio R, each end of the stage that
   is a cut also costs ``2 X / (B r R)`` (X of that cut), and the stage takes the max of the
   three terms, not their sum.
4. **Dynamic program.** ``A(j, m)`` = the smallest slowest-stage time of a pipeline covering
   D(j) with m machines = min over ``D(k) ⊊ D(j)`` and r of ``max(A(k, m - r), stage(k, j, r))``,
   with ``A(∅, 0) = 0``. The answer is ``A(V, N)``: the machines sum to exactly N. With
   ``straight_pipeline`` every r is 1, so there are exactly N stages.
5. **Baselines.** Data parallelism on N machines takes ``[C + 4 (N-1) P / (B N)] / N``; a single
   machine takes C.

Memory constraint (optional, PipeDream's estimate kept as is): a stage of r replicas ending
with m machines used so far stashes ``ceil((N - m) / r)`` copies of its activation plus
parameter bytes, and must fit ``memory_size`` (so the last stage always fits).

Where this differs from the upstream code, on purpose: the states are *all* downsets (upstream
explores those reachable from its first source, which misses other sources, e.g. GNMT's);
X(D) counts exactly the bytes leaving D (upstream's augmented antichain can also count nodes whose
consumers are inside D); the first stage's output term is charged to the first stage with its own
r (upstream only charges it to the second stage). **Bound**: when the graph has more than
``max_downsets`` downsets (NASNet, Inception, GNMT), the DP runs on a coarsened graph
(:func:`agents.downsets.bounded_downsets`): the plan is the best one that never cuts inside a
group, an upper bound on the unbounded optimum; ``exact`` says whether that happened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.downsets import DEFAULT_MAX_DOWNSETS, Downsets, bounded_downsets
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph

__all__ = ["PipeDreamPlan", "PipeDreamStage", "pipedream_plan", "planning_graph"]


@dataclass(frozen=True)
class PipeDreamStage:
    """One stage of a PipeDream plan.

    :param nodes: node ids of the profile, in canonical order.
    :param replication: machines running the stage (data-parallel replicas).
    :param compute_s: forward+backward seconds of the stage on one machine.
    :param param_bytes: parameter bytes of the stage.
    :param input_bytes: X of the cut before the stage (0 for the first).
    :param output_bytes: X of the cut after the stage (0 for the last).
    :param time_s: the stage's time per minibatch under the cost model (step 3).
    """

    nodes: tuple[str, ...]
    replication: int
    compute_s: float
    param_bytes: float
    input_bytes: float
    output_bytes: float
    time_s: float


@dataclass(frozen=True)
class PipeDreamPlan:
    """The planner's answer; times are seconds per minibatch of the profile."""

    graph: str
    num_machines: int
    bandwidth_Bps: float
    straight_pipeline: bool
    activation_compression_ratio: float | None
    memory_size: float | None
    time_per_stage_s: float
    data_parallel_time_s: float
    single_machine_time_s: float
    stages: tuple[PipeDreamStage, ...]
    num_downsets: int
    dp_nodes: int
    exact: bool

    @property
    def speedup_over_single_machine(self) -> float:
        return self.single_machine_time_s / self.time_per_stage_s

    @property
    def speedup_over_data_parallel(self) -> float:
        return self.data_parallel_time_s / self.time_per_stage_s

    @property
    def data_parallel_speedup_over_single_machine(self) -> float:
        return self.single_machine_time_s / self.data_parallel_time_s

    def to_dict(self) -> dict[str, Any]:
        """The plan as the JSON object ``pipeenv pipedream-plan --json`` prints."""
        return {
            "format": "pipeenv.pipedream-plan/v1",
            "graph": self.graph,
            "num_machines": self.num_machines,
            "bandwidth_Bps": self.bandwidth_Bps,
            "straight_pipeline": self.straight_pipeline,
            "activation_compression_ratio": self.activation_compression_ratio,
            "memory_size": self.memory_size,
            "time_per_stage_s": self.time_per_stage_s,
            "data_parallel_time_s": self.data_parallel_time_s,
            "single_machine_time_s": self.single_machine_time_s,
            "speedup_over_single_machine": self.speedup_over_single_machine,
            "speedup_over_data_parallel": self.speedup_over_data_parallel,
            "data_parallel_speedup_over_single_machine": (
                self.data_parallel_speedup_over_single_machine
            ),
            "num_stages": len(self.stages),
            "stages": [
                {
                    "stage": i,
                    "replication": s.replication,
                    "nodes": list(s.nodes),
                    "compute_s": s.compute_s,
                    "param_bytes": s.param_bytes,
                    "input_bytes": s.input_bytes,
                    "output_bytes": s.output_bytes,
                    "time_s": s.time_s,
                }
                for i, s in enumerate(self.stages)
            ],
            "search": {
                "downsets": self.num_downsets,
                "dp_nodes": self.dp_nodes,
                "exact": self.exact,
            },
        }


def planning_graph(graph: OperatorGraph) -> tuple[OperatorGraph, tuple[str, ...], tuple[str, ...]]:
    """The graph the DP runs on: without ``Input*`` sources and dead-end ``__getitem__`` sinks.

    :return: the reduced graph, the dropped input ids, the dropped sink ids.
    :raises PipeenvError: when nothing is left.
    """
    a = graph.arrays
    indeg, outdeg = np.diff(a.pred_ptr), np.diff(a.succ_ptr)
    inputs, sinks = [], []
    for i, nid in enumerate(graph.order):
        op = graph.node(nid).op
        if indeg[i] == 0 and op.startswith("Input"):
            inputs.append(nid)
        elif outdeg[i] == 0 and op.startswith("__getitem__"):
            sinks.append(nid)
    dropped = set(inputs) | set(sinks)
    if not dropped:
        return graph, (), ()
    nodes = [n for n in graph.nodes if n.id not in dropped]
    if not nodes:
        raise PipeenvError(
            f"pipedream-plan: graph {graph.name!r} has only Input and __getitem__ nodes"
        )
    edges = [(u, v) for u, v in graph.edges if u not in dropped and v not in dropped]
    reduced = OperatorGraph(
        graph.name, nodes, edges, microbatch_size=graph.microbatch_size, source=graph.source
    )
    return reduced, tuple(inputs), tuple(sinks)


def _check(
    num_machines: int, bandwidth_Bps: float, ratio: float | None, memory_size: float | None
) -> None:
    if isinstance(num_machines, bool) or not isinstance(num_machines, int) or num_machines < 1:
        raise PipeenvError(
            f"pipedream-plan: number of machines must be an integer >= 1, got {num_machines!r}"
        )
    if not (math.isfinite(bandwidth_Bps) and bandwidth_Bps > 0):
        raise PipeenvError(f"pipedream-plan: bandwidth must be > 0 bytes/s, got {bandwidth_Bps}")
    if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
        raise PipeenvError(f"pipedream-plan: activation compression ratio must be > 0, got {ratio}")
    if memory_size is not None and not (memory_size > 0):
        raise PipeenvError(f"pipedream-plan: memory size must be > 0 bytes, got {memory_size}")


def pipedream_plan(
    graph: OperatorGraph,
    num_machines: int,
    *,
    bandwidth_Bps: float = 1e9,
    straight_pipeline: bool = False,
    activation_compression_ratio: float | None = None,
    memory_size: float | None = None,
    max_downsets: int = DEFAULT_MAX_DOWNSETS,
) -> PipeDreamPlan:
    """Run PipeDream's partitioning DP (see the module docstring for the model).

    :param graph: the profile (times in seconds per minibatch, sizes in bytes).
    :param num_machines: N, machines the stages' replications sum to.
    :param bandwidth_Bps: B, bytes per second between machines (PipeDream's default 1 GB/s).
    :param straight_pipeline: no replication: exactly N stages of one machine.
    :param activation_compression_ratio: R; when given, stages pay the activation-transfer term.
    :param memory_size: bytes per machine; when given, stages must fit PipeDream's estimate.
    :param max_downsets: the DP's state cap before the graph is coarsened.
    :raises PipeenvError: on a bad option, or when no plan meets the constraints (memory, or
        fewer cuts than ``--straight-pipeline`` needs).
    """
    _check(num_machines, bandwidth_Bps, activation_compression_ratio, memory_size)
    reduced, inputs, sinks = planning_graph(graph)
    coarse_sets, coarsening = bounded_downsets(reduced, max_downsets=max_downsets)
    to_coarse = np.array(
        [coarsening.graph.index[coarsening.coarse_of[nid]] for nid in reduced.order], dtype=np.int64
    )
    sets = Downsets(reduced, coarse_sets.members[:, to_coarse])
    a = reduced.arrays
    compute = sets.sums(a.forward_s + a.backward_s)
    params = sets.sums(a.param_bytes)
    stash = sets.sums(a.activation_bytes) + params
    boundary = sets.boundary_sums(a.output_bytes)
    best, choice = _solve(
        sets,
        compute,
        params,
        stash,
        boundary,
        num_machines,
        bandwidth_Bps,
        straight_pipeline,
        activation_compression_ratio,
        memory_size,
    )
    full = sets.count - 1
    if not math.isfinite(best[full, num_machines]):
        why = "the memory constraint" if memory_size is not None else "the number of nodes"
        raise PipeenvError(
            f"pipedream-plan: no plan of graph {graph.name!r} on {num_machines} machines "
            f"meets {why}"
        )
    stages: list[PipeDreamStage] = []
    j, m = full, num_machines
    while j != 0:
        k, r = (int(x) for x in choice[j, m])
        in_stage = sets.members[j] & ~sets.members[k]
        time_s = _stage_time(
            compute[j] - compute[k],
            params[j] - params[k],
            boundary[k] if k else 0.0,
            boundary[j] if j != full else 0.0,
            r,
            bandwidth_Bps,
            activation_compression_ratio,
        )
        stages.append(
            PipeDreamStage(
                nodes=tuple(reduced.order[i] for i in np.flatnonzero(in_stage)),
                replication=r,
                compute_s=float(compute[j] - compute[k]),
                param_bytes=float(params[j] - params[k]),
                input_bytes=float(boundary[k]) if k else 0.0,
                output_bytes=float(boundary[j]) if j != full else 0.0,
                time_s=time_s,
            )
        )
        j, m = k, m - r
    stages.reverse()
    stages = _put_back(graph, stages, inputs, sinks)
    total_c, total_p = float(compute[full]), float(params[full])
    n = num_machines
    return PipeDreamPlan(
        graph=graph.name,
        num_machines=n,
        bandwidth_Bps=float(bandwidth_Bps),
        straight_pipeline=straight_pipeline,
        activation_compression_ratio=activation_compression_ratio,
        memory_size=memory_size,
        time_per_stage_s=float(best[full, n]),
        data_parallel_time_s=(total_c + 4 * (n - 1) * total_p / (bandwidth_Bps * n)) / n,
        single_machine_time_s=total_c,
        stages=tuple(stages),
        num_downsets=sets.count,
        dp_nodes=coarsening.graph.num_nodes,
        exact=coarsening.is_identity,
    )


def _stage_time(
    compute_s: float,
    param_bytes: float,
    in_bytes: float,
    out_bytes: float,
    r: int,
    bandwidth: float,
    ratio: float | None,
) -> float:
    time_s = (compute_s + 4 * (r - 1) * param_bytes / (bandwidth * r)) / r
    if ratio is not None:
        time_s = max(
            time_s, 2 * in_bytes / (bandwidth * r * ratio), 2 * out_bytes / (bandwidth * r * ratio)
        )
    return float(time_s)


def _solve(
    sets: Downsets,
    compute: np.ndarray,
    params: np.ndarray,
    stash: np.ndarray,
    boundary: np.ndarray,
    n: int,
    bandwidth: float,
    straight: bool,
    ratio: float | None,
    memory_size: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 4. ``best[j, m]`` as in the module docstring; ``choice[j, m]`` = (k, r)."""
    count, full = sets.count, sets.count - 1
    best = np.full((count, n + 1), np.inf)
    best[0, 0] = 0.0
    choice = np.zeros((count, n + 1, 2), dtype=np.int64)
    replicas = np.arange(1, 2 if straight else n + 1)
    for j in range(1, count):
        ks = sets.proper_subsets(j)
        d_compute = (compute[j] - compute[ks])[:, None]
        d_params = (params[j] - params[ks])[:, None]
        stage = (d_compute + 4 * (replicas - 1) * d_params / (bandwidth * replicas)) / replicas
        if ratio is not None:
            in_term = (
                np.where(ks > 0, boundary[ks], 0.0)[:, None] * 2 / (bandwidth * replicas * ratio)
            )
            out_bytes = boundary[j] if j != full else 0.0
            stage = np.maximum(
                np.maximum(stage, in_term), 2 * out_bytes / (bandwidth * replicas * ratio)
            )
        d_stash = (stash[j] - stash[ks])[:, None]
        prev = best[ks]
        for m in range(1, n + 1):
            rs = replicas[replicas <= m]
            cand = np.maximum(prev[:, m - rs], stage[:, : rs.size])
            if memory_size is not None:
                copies = np.ceil((n - m) / rs)
                cand = np.where(copies * d_stash > memory_size, np.inf, cand)
            flat = int(np.argmin(cand))
            row, col = divmod(flat, rs.size)
            if cand[row, col] < best[j, m]:
                best[j, m] = cand[row, col]
                choice[j, m] = (ks[row], rs[col])
    return best, choice


def _put_back(
    graph: OperatorGraph,
    stages: list[PipeDreamStage],
    inputs: tuple[str, ...],
    sinks: tuple[str, ...],
) -> list[PipeDreamStage]:
    """Inputs join stage 0; a dropped sink joins the last stage of its producers."""
    if not inputs and not sinks:
        return stages
    stage_of = {nid: s for s, st in enumerate(stages) for nid in st.nodes}
    for nid in inputs:
        stage_of[nid] = 0
    pred: dict[str, list[str]] = {}
    for u, v in graph.edges:
        pred.setdefault(v, []).append(u)
    for nid in sinks:
        stage_of[nid] = max((stage_of.get(u, 0) for u in pred.get(nid, [])), default=0)
    out = []
    for s, st in enumerate(stages):
        nodes = tuple(nid for nid in graph.order if stage_of[nid] == s)
        out.append(
            PipeDreamStage(
                nodes,
                st.replication,
                st.compute_s,
                st.param_bytes,
                st.input_bytes,
                st.output_bytes,
                st.time_s,
            )
        )
    return out
