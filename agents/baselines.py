"""The planners people use today, as baselines: random, DeepSpeed's and torchgpipe's partitions,
and plain data parallelism.

All but ``data-parallel`` cut a topological order of the graph into ``num_stages`` runs of
consecutive nodes (always valid: every edge goes forward in a topological order); they differ
in the weights they balance:

- ``random``: a random topological order cut at random places, on a random choice of devices;
- ``uniform-layers``: equal node counts, DeepSpeed's ``partition_method="uniform"``
  (``partition_uniform``: the first ``n mod S`` stages get one node more);
- ``balanced-params``: the canonical order cut to minimise the largest stage parameter bytes,
  DeepSpeed's ``partition_method="parameters"``;
- ``balanced-time``: the canonical order cut to minimise the largest stage time (forward plus
  backward seconds), torchgpipe's ``balance_by_time``. Like torchgpipe, which profiles every
  layer on one device, it balances speed-1.0 times and does not see device speeds;
- ``data-parallel``: the whole graph in one stage, replicated on every device.

``data_parallel=None``: the largest R with ``S * R <= devices`` (DeepSpeed's rule, data-parallel
size = world size / pipeline stages). Devices: the first ``S * R`` in the cluster's order,
pipeline-major (:func:`agents.layouts.default_devices`), as ranks are laid out by those
frameworks; ``random`` draws them instead. Both balanced partitions are
:func:`pipeenv.partition_reference.balanced_contiguous` (the min-max linear partition).
"""

from __future__ import annotations

import heapq
from abc import abstractmethod

import numpy as np

from agents.base import BaseAgent, PlanRequest, check_int_option, register
from agents.layouts import default_devices
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.partition_reference import balanced_contiguous
from pipeenv.plan import Plan
from pipeenv.simulator import SimResult

__all__ = [
    "BalancedParams",
    "BalancedTime",
    "DataParallel",
    "RandomPlan",
    "UniformLayers",
    "uniform_sizes",
]


def uniform_sizes(num_items: int, num_parts: int) -> list[int]:
    """DeepSpeed's ``partition_uniform`` block sizes: the first ``n mod k`` blocks get one more.

    ``uniform_sizes(10, 4) == [3, 3, 2, 2]``.
    """
    chunk, residual = divmod(num_items, num_parts)
    return [chunk + (1 if p < residual else 0) for p in range(num_parts)]


def _replicas(request: PlanRequest) -> int:
    return request.data_parallel if request.data_parallel is not None else request.max_replicas


class _Contiguous(BaseAgent):
    """A baseline that cuts the canonical order into runs, on the default devices."""

    @abstractmethod
    def _cut(self, request: PlanRequest, devices: tuple[int, ...], replicas: int) -> np.ndarray:
        """Stage of each node (canonical order), non-decreasing."""

    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        replicas = _replicas(request)
        devices = default_devices(request.num_stages, replicas)
        stages = self._cut(request, devices, replicas)
        fields = request.plan_fields(replicas, devices, self.agent_record())
        return Plan.from_stages(request.graph, stages, **fields), None


@register("uniform-layers", "equal node counts per stage (DeepSpeed partition_method='uniform')")
class UniformLayers(_Contiguous):
    """Equal node counts per stage along the canonical order (DeepSpeed ``uniform``)."""

    def _cut(self, request: PlanRequest, devices: tuple[int, ...], replicas: int) -> np.ndarray:
        sizes = uniform_sizes(request.graph.num_nodes, request.num_stages)
        return np.repeat(np.arange(request.num_stages), sizes).astype(np.int64)


@register(
    "balanced-params",
    "contiguous stages with the largest parameter bytes minimised (DeepSpeed 'parameters')",
)
class BalancedParams(_Contiguous):
    """Min-max contiguous partition of parameter bytes (DeepSpeed ``parameters``)."""

    def _cut(self, request: PlanRequest, devices: tuple[int, ...], replicas: int) -> np.ndarray:
        return balanced_contiguous(request.graph.arrays.param_bytes, request.num_stages)


@register(
    "balanced-time",
    "contiguous stages with the largest stage time minimised (torchgpipe balance_by_time)",
)
class BalancedTime(_Contiguous):
    """Min-max contiguous partition of forward+backward seconds (torchgpipe ``balance_by_time``)."""

    def _cut(self, request: PlanRequest, devices: tuple[int, ...], replicas: int) -> np.ndarray:
        a = request.graph.arrays
        return balanced_contiguous(a.forward_s + a.backward_s, request.num_stages)


@register("data-parallel", "one stage holding the whole graph, replicated on every device")
class DataParallel(BaseAgent):
    """Pure data parallelism: ``num_stages`` must be 1; R = ``data_parallel`` or every device."""

    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        if request.num_stages != 1:
            raise PipeenvError(
                f"agent {self.name!r}: num_stages must be 1 (one stage replicated on every "
                f"device), got {request.num_stages}"
            )
        replicas = _replicas(request)
        devices = default_devices(1, replicas)
        stages = np.zeros(request.graph.num_nodes, dtype=np.int64)
        fields = request.plan_fields(replicas, devices, self.agent_record())
        return Plan.from_stages(request.graph, stages, **fields), None


def random_topological_order(graph: OperatorGraph, rng: np.random.Generator) -> np.ndarray:
    """A random topological order (Kahn's algorithm, ready nodes taken by random priority)."""
    a = graph.arrays
    n = graph.num_nodes
    priority = rng.random(n)
    waiting = np.diff(a.pred_ptr).astype(np.int64)
    ready = [(priority[v], v) for v in range(n) if waiting[v] == 0]
    heapq.heapify(ready)
    order = np.empty(n, dtype=np.int64)
    for pos in range(n):
        _, u = heapq.heappop(ready)
        order[pos] = u
        for w in a.succ_idx[a.succ_ptr[u] : a.succ_ptr[u + 1]].tolist():
            waiting[w] -= 1
            if waiting[w] == 0:
                heapq.heappush(ready, (priority[w], w))
    return order


@register("random", "a random topological order cut at random places, on random devices")
class RandomPlan(BaseAgent):
    """A valid random plan: random topological order, random cuts, random devices.

    :param seed: seed of the generator (each call to ``plan`` restarts from it).
    """

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = check_int_option("random", "seed", seed)

    def options(self) -> dict[str, int]:
        return {"seed": self.seed}

    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        rng = np.random.default_rng(self.seed)
        graph, s = request.graph, request.num_stages
        order = random_topological_order(graph, rng)
        cuts = np.sort(rng.choice(np.arange(1, graph.num_nodes), size=s - 1, replace=False))
        stages = np.empty(graph.num_nodes, dtype=np.int64)
        stages[order] = np.searchsorted(cuts, np.arange(graph.num_nodes), side="right")
        replicas = _replicas(request)
        devices = rng.permutation(request.cluster.num_devices)[: s * replicas].tolist()
        fields = request.plan_fields(replicas, devices, self.agent_record())
        return Plan.from_stages(graph, stages, **fields), None
