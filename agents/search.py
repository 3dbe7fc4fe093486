"""Search agents scored by the simulator itself: ``exhaustive`` and ``local-search``.

``exhaustive`` enumerates every valid stage assignment (every chain of downsets
``∅ ⊊ D(1) ⊊ ... ⊊ V``), every allowed data-parallel degree and every candidate device layout
(:mod:`agents.layouts`), simulates each plan and keeps the best: the exact optimum under
:func:`pipeenv.simulate` over those layouts, the ground truth of the tests. The count grows
like ``S^n`` on wide graphs, so it is meant for graphs of up to ~14 nodes and refuses more than
``max_plans`` simulations.

``local-search`` is simulated annealing (Kirkpatrick, Gelatt & Vecchi, "Optimization by
Simulated Annealing", Science 1983) over single-node stage moves:

1. **Start** from the best plan of the fast baselines (``uniform-layers``, ``balanced-params``,
   ``balanced-time``, ``pipedream-dp``), or the one named by ``start``; its data-parallel degree
   and devices are kept.
2. **Move**: a random node goes to another stage between the largest stage of its
   predecessors and the smallest of its successors, if its stage keeps another node; every
   plan visited is valid.
3. **Accept** with the Metropolis rule on the relative change of simulated throughput, at a
   temperature cooled geometrically from ``temperature`` to ``temperature / 1000``
   (out-of-memory plans are scored at 1/1000 of their throughput).
4. **Return** the best plan seen (feasible first, then throughput), so never worse than the
   start. Runs are reproducible from ``seed``.
"""

from __future__ import annotations

import math

import numpy as np

from agents.base import BaseAgent, PlanRequest, better, check_int_option, make, register
from agents.layouts import device_layouts
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.simulator import SimResult, simulate

__all__ = ["FAST_BASELINES", "Exhaustive", "LocalSearch", "valid_stage_arrays"]

FAST_BASELINES = ("uniform-layers", "balanced-params", "balanced-time", "pipedream-dp")
_OOM_DISCOUNT = 1e-3


def valid_stage_arrays(graph: OperatorGraph, num_stages: int, max_count: int) -> np.ndarray:
    """Every valid stage array of ``graph`` with ``num_stages`` non-empty stages.

    Nodes are assigned in canonical order, each to a stage no lower than its predecessors';
    partial assignments that can no longer fill every stage are dropped.

    :return: int64 array ``(count, num_nodes)``.
    :raises PipeenvError: when more than ``max_count`` assignments (partial or complete) arise.
    """
    n = graph.num_nodes
    a = graph.arrays
    rows = np.zeros((1, 0), dtype=np.int64)
    used = np.zeros((1, num_stages), dtype=bool)
    for i in range(n):
        preds = a.pred_idx[a.pred_ptr[i] : a.pred_ptr[i + 1]]
        low = rows[:, preds].max(axis=1) if preds.size else np.zeros(len(rows), dtype=np.int64)
        counts = num_stages - low
        parent = np.repeat(np.arange(len(rows)), counts)
        offset = np.arange(len(parent)) - np.repeat(np.cumsum(counts) - counts, counts)
        value = low[parent] + offset
        rows = np.column_stack([rows[parent], value])
        used = used[parent]
        used[np.arange(len(parent)), value] = True
        alive = (num_stages - used.sum(axis=1)) <= (n - i - 1)
        rows, used = rows[alive], used[alive]
        if len(rows) > max_count:
            raise PipeenvError(
                f"agent 'exhaustive': graph {graph.name!r} ({n} nodes) has more than "
                f"{max_count} stage assignments into {num_stages} stages; raise max_plans or use "
                "pipedream-dp or local-search"
            )
    return rows


@register("exhaustive", "exact optimum under the simulator by enumeration (graphs of ~14 nodes)")
class Exhaustive(BaseAgent):
    """Every valid plan simulated; the best kept (see module docstring).

    ``data_parallel=None`` tries every R with ``S R <= devices``.

    :param max_plans: the most plans to simulate before refusing.
    """

    def __init__(self, *, max_plans: int = 200_000) -> None:
        self.max_plans = check_int_option("exhaustive", "max_plans", max_plans, minimum=1)

    def options(self) -> dict[str, int]:
        return {"max_plans": self.max_plans}

    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        graph, cluster = request.graph, request.cluster
        arrays = valid_stage_arrays(graph, request.num_stages, self.max_plans)
        setups = [
            (replicas, devices)
            for replicas in request.replica_choices()
            for devices in device_layouts(cluster, request.num_stages, replicas)
        ]
        total = len(arrays) * len(setups)
        if total > self.max_plans:
            raise PipeenvError(
                f"agent 'exhaustive': {total} plans to simulate exceed max_plans={self.max_plans}"
            )
        best: tuple[Plan, SimResult] | None = None
        for replicas, devices in setups:
            fields = request.plan_fields(
                replicas, devices, self.agent_record(plans_simulated=total)
            )
            for stages in arrays:
                plan = Plan.from_stages(graph, stages, **fields)
                result = simulate(graph, cluster, plan)
                if better(result, best[1] if best else None):
                    best = (plan, result)
        assert best is not None  # num_stages <= num_nodes, so one assignment exists
        return best


def _value(result: SimResult) -> float:
    factor = 1.0 if result.feasible else _OOM_DISCOUNT
    return factor * result.throughput_samples_per_s


@register(
    "local-search",
    "simulated annealing over single-node stage moves, from the best fast baseline",
)
class LocalSearch(BaseAgent):
    """Simulated annealing over valid single-node moves (see module docstring).

    ``data_parallel=None``: the start plan's choice (``pipedream-dp`` tries every R).

    :param iterations: number of moves proposed.
    :param seed: seed of the move generator.
    :param temperature: initial temperature, as a relative throughput loss accepted with
        probability 1/e.
    :param start: ``best`` (the best of :data:`FAST_BASELINES`) or one agent name.
    """

    def __init__(
        self,
        *,
        iterations: int = 10_000,
        seed: int = 0,
        temperature: float = 0.02,
        start: str = "best",
    ) -> None:
        self.iterations = check_int_option("local-search", "iterations", iterations)
        self.seed = check_int_option("local-search", "seed", seed)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise PipeenvError(
                f"agent 'local-search': option 'temperature' must be a number, got {temperature!r}"
            )
        if not (math.isfinite(temperature) and temperature > 0):
            raise PipeenvError(
                f"agent 'local-search': option 'temperature' must be > 0, got {temperature}"
            )
        if start != "best" and start not in FAST_BASELINES:
            raise PipeenvError(
                f"agent 'local-search': option 'start' must be 'best' or one of "
                f"{', '.join(FAST_BASELINES)}, got {start!r}"
            )
        self.temperature = float(temperature)
        self.start = start

    def options(self) -> dict[str, object]:
        return {
            "iterations": self.iterations,
            "seed": self.seed,
            "temperature": self.temperature,
            "start": self.start,
        }

    def _start(self, request: PlanRequest) -> tuple[str, Plan, SimResult]:
        best: tuple[str, Plan, SimResult] | None = None
        for name in FAST_BASELINES if self.start == "best" else (self.start,):
            plan = make(name).plan(
                request.graph,
                request.cluster,
                num_stages=request.num_stages,
                microbatches=request.microbatches,
                schedule=request.schedule,
                data_parallel=request.data_parallel,
            )
            result = simulate(request.graph, request.cluster, plan)
            if better(result, best[2] if best else None):
                best = (name, plan, result)
        assert best is not None
        return best

    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        graph, cluster = request.graph, request.cluster
        start_name, start_plan, start_result = self._start(request)
        rng = np.random.default_rng(self.seed)
        a = graph.arrays
        num_stages = request.num_stages
        fields = request.plan_fields(
            start_plan.data_parallel, start_plan.devices, self.agent_record(started_from=start_name)
        )
        stages = np.array(start_plan.stages(graph), dtype=np.int64)
        counts = np.bincount(stages, minlength=num_stages)
        current = _value(start_result)
        best_stages, best_result = stages.copy(), start_result
        for step in range(self.iterations):
            low = np.zeros(graph.num_nodes, dtype=np.int64)
            np.maximum.at(low, a.edge_dst, stages[a.edge_src])
            high = np.full(graph.num_nodes, num_stages - 1, dtype=np.int64)
            np.minimum.at(high, a.edge_src, stages[a.edge_dst])
            movable = np.flatnonzero((high > low) & (counts[stages] > 1))
            if movable.size == 0:
                break
            node = int(movable[rng.integers(movable.size)])
            old = int(stages[node])
            choices = [s for s in range(int(low[node]), int(high[node]) + 1) if s != old]
            new = choices[int(rng.integers(len(choices)))]
            stages[node] = new
            result = simulate(graph, cluster, Plan.from_stages(graph, stages.copy(), **fields))
            value = _value(result)
            temperature = self.temperature * 1e-3 ** (step / max(1, self.iterations - 1))
            change = (value - current) / current
            if change >= 0 or rng.random() < math.exp(change / temperature):
                current = value
                counts[old] -= 1
                counts[new] += 1
                if better(result, best_result):
                    best_stages, best_result = stages.copy(), result
            else:
                stages[node] = old
        return Plan.from_stages(graph, best_stages, **fields), best_result
