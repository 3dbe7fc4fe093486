"""``pipedream-dp``: PipeDream's dynamic program over downsets, costed with pipeenv's model.

Narayanan et al., "PipeDream: Generalized Pipeline Parallelism for DNN Training", SOSP 2019,
§3.1 ("Partitioning Algorithm"). The paper's steps, with the costs of this simulator (SPEC §4)
in place of PipeDream's own (the faithful reproduction of those is
:mod:`agents.pipedream_compat`):

1. **States.** The downsets of the DAG (sets closed under predecessors, :mod:`agents.downsets`):
   a pipeline of S stages is a chain ``∅ ⊊ D(1) ⊊ ... ⊊ D(S) = V``, stage p being
   ``D(p+1) \\ D(p)``, so a stage may hold some parallel branches and not others.
2. **Stage cost.** Stage p runs on R replica devices (R = ``data_parallel``); with the speed of
   its slowest replica ``v_p``, per iteration of M microbatches it is busy
   ``M (F + B) / v_p`` plus its gradient all-reduce ``2 (R-1)/R P / bw + 2 (R-1) lat`` over the
   slowest link between its replicas. The boundary after ``D(p)`` carries ``X(D(p))``, the
   output bytes of the nodes of ``D(p)`` with a successor outside, each microbatch, each way:
   ``M (lat + X / bw)`` on the link from stage p-1 to p. A stage whose memory
   ``4 P + peak_p A`` (SPEC §4; ``peak_p`` the schedule's in-flight microbatches at position p,
   M for gpipe, ``min(S - p, M)`` for 1f1b) exceeds its device's memory is not allowed.
3. **Dynamic program.** ``A(p, D)`` = the smallest slowest-resource time of a pipeline of p
   stages covering D = min over ``D' ⊊ D`` of
   ``max(A(p-1, D'), stage(p-1, D \\ D'), link(p-2, X(D')))``, ties broken by the shorter path
   of one microbatch (the sum of per-microbatch stage times plus both transfers of each
   boundary); the answer is ``A(S, V)``. As in PipeDream, the slowest stage sets the pace.
4. **Fill and drain** (beyond the paper). The iteration also pays for the pipeline's fill and
   drain, which weighs most when M is not much larger than S, and depends on where the slow
   stages sit: a microbatch crosses the stages before the slowest one, forward and backward,
   around that stage's M microbatches. So three more DPs give candidates: (a) the exact
   minimum of ``max_p (w_0 + ... + w_{p-1} + T_p)`` (``w_q`` the path of one microbatch through
   stage q and both transfers after it, ``T_p`` stage p's time per iteration), solved from the
   last stage back (:func:`solve_fill`); (b) the shortest path over chains whose slowest
   resource is at most ``c * A(S, V)``, for each c in ``CAP_FACTORS``; (c) step 3 on compute
   alone.
5. **Replication and re-scoring.** The data-parallel degree (every R with ``S R <= devices``
   when ``data_parallel`` is None) and the device layout (:mod:`agents.layouts`) are the outer
   loop. Every plan of steps 3-4 is simulated with :func:`pipeenv.simulate` and the best is kept
   (feasible first, then throughput).
6. **Polish.** Neither DP cost sees where in the pipeline the slow stages sit, which changes
   the fill and drain, so plans the DP ranks equal can simulate differently. The cuts of each
   of the ``POLISHED`` best plans are moved to a neighbouring state (one node more or fewer)
   while the simulated throughput improves (at most ``POLISH_EVALUATIONS`` simulations each).

**Bounding the state space.** Branchy graphs (Inception, NASNet, DenseNet) have too many
downsets for a DP quadratic in their number. Two state sets are solved, and both results
re-scored:

- the downsets of the graph coarsened until there are at most ``max_downsets``
  (:func:`agents.downsets.bounded_downsets`): cuts can split parallel branches but not a group
  of the coarsening, so on a coarsened graph the optimum is over group-aligned plans only;
- the ``n + 1`` prefixes of the canonical topological order of the full graph: every cut
  position, but stages are contiguous in that order, so branches are split only the way the
  order interleaves them.

Each DP is exact over its family. The downset family is unrestricted (every plan of S
stages) whenever the graph has at most ``max_downsets`` downsets; otherwise the plans that cut
inside a group of the coarsening and are not contiguous in the canonical order are out of
reach. What that costs is measured, not bounded: see the report of
``benchmarks/agents_quality.py`` (inception_v3 and densenet121 at several caps).
If no plan fits in memory the DP is solved again without the memory rule and the best
(infeasible) plan is returned, so the caller sees which stage overflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
from numba import njit

from agents.base import BaseAgent, PlanRequest, better, check_int_option, register, score
from agents.downsets import DEFAULT_MAX_DOWNSETS, Downsets, bounded_downsets
from agents.layouts import device_layouts
from pipeenv.cluster import Cluster
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.schedules import op_order, peak_in_flight
from pipeenv.simulator import SimResult, simulate

__all__ = [
    "PipeDreamDP",
    "StageCosts",
    "StateSet",
    "chain_stages",
    "downset_states",
    "neighbour_chains",
    "prefix_states",
    "solve_chain",
    "solve_fill",
]

PARAM_MEMORY_FACTOR = 4.0
POLISH_EVALUATIONS = 5000
POLISHED = 8
CAP_FACTORS = (1.0, 1.1, 1.5, np.inf)


@dataclass(frozen=True)
class StateSet:
    """Downsets over the original graph's nodes, with the per-downset sums the DP needs.

    :param downsets: the states (smallest first; row 0 empty, last row the whole graph).
    :param subset: ``subset[j, k]`` is True when downset k is a proper subset of downset j.
    :param kind: ``downsets`` or ``prefixes`` (informative).
    """

    downsets: Downsets
    subset: np.ndarray
    kind: str

    @property
    def count(self) -> int:
        return self.downsets.count

    @cached_property
    def sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per downset: forward+backward seconds, param bytes, kept bytes, boundary bytes."""
        a = self.downsets.graph.arrays
        d = self.downsets
        return (
            d.sums(a.forward_s + a.backward_s),
            d.sums(a.param_bytes),
            d.sums(a.activation_bytes),
            d.boundary_sums(a.output_bytes),
        )


def prefix_states(graph: OperatorGraph) -> StateSet:
    """The ``n + 1`` prefixes of the canonical order (a chain of downsets)."""
    n = graph.num_nodes
    members = np.tri(n + 1, n, k=-1, dtype=bool)
    subset = np.tri(n + 1, n + 1, k=-1, dtype=bool)
    return StateSet(Downsets(graph, members), subset, "prefixes")


def downset_states(graph: OperatorGraph, max_downsets: int) -> tuple[StateSet, int]:
    """The downsets of ``graph`` coarsened to fit ``max_downsets``, over the original nodes.

    :return: the states and the coarse graph's node count.
    """
    coarse_sets, coarsening = bounded_downsets(graph, max_downsets=max_downsets)
    to_coarse = np.array(
        [coarsening.graph.index[coarsening.coarse_of[nid]] for nid in graph.order], dtype=np.int64
    )
    downsets = Downsets(graph, coarse_sets.members[:, to_coarse])
    subset = np.zeros((downsets.count, downsets.count), dtype=bool)
    for j in range(downsets.count):
        subset[j, downsets.proper_subsets(j)] = True
    return StateSet(downsets, subset, "downsets"), coarsening.graph.num_nodes


@dataclass(frozen=True)
class StageCosts:
    """Per stage position, what the DP's stage cost depends on (one device layout).

    Arrays of length S (``link_*``: S - 1, the link from stage p to p + 1).
    """

    speed: np.ndarray
    memory: np.ndarray
    peak: np.ndarray
    allreduce_bw: np.ndarray
    allreduce_lat: np.ndarray
    link_bw: np.ndarray
    link_lat: np.ndarray

    @classmethod
    def of(
        cls,
        cluster: Cluster,
        devices: tuple[int, ...],
        replicas: int,
        schedule: str,
        microbatches: int,
    ) -> StageCosts:
        """The costs of layout ``devices`` (replica r of stage s on ``devices[r * S + s]``)."""
        num_stages = len(devices) // replicas
        grid = np.array(devices, dtype=np.int64).reshape(replicas, num_stages)
        bw, lat = cluster.link_arrays
        order = op_order(schedule, num_stages, microbatches)
        ar_bw = np.full(num_stages, np.inf)
        ar_lat = np.zeros(num_stages)
        for s in range(num_stages):
            for r1 in range(replicas):
                for r2 in range(r1 + 1, replicas):
                    a, b = grid[r1, s], grid[r2, s]
                    if bw[a, b] < ar_bw[s] or (bw[a, b] == ar_bw[s] and lat[a, b] > ar_lat[s]):
                        ar_bw[s], ar_lat[s] = bw[a, b], lat[a, b]
        # Each replica has its own links; the slowest transfer paces the pipeline.
        link_bw = np.array([bw[grid[:, s], grid[:, s + 1]].min() for s in range(num_stages - 1)])
        link_lat = np.array([lat[grid[:, s], grid[:, s + 1]].max() for s in range(num_stages - 1)])
        return cls(
            speed=cluster.speed[grid].min(axis=0),
            memory=cluster.memory_bytes[grid].min(axis=0),
            peak=np.array([peak_in_flight(order[s]) for s in range(num_stages)], dtype=np.float64),
            allreduce_bw=ar_bw,
            allreduce_lat=ar_lat,
            link_bw=link_bw.reshape(num_stages - 1),
            link_lat=link_lat.reshape(num_stages - 1),
        )


@njit(cache=True)
def _solve(
    subset, compute, params, kept, boundary,
    speed, memory, peak, ar_bw, ar_lat, link_bw, link_lat,
    microbatches, replicas, memory_factor, with_communication, cap,
):  # fmt: skip
    """Step 3: the best (primary, secondary) value of each (stages, state), and the choice.

    ``cap < 0``: primary = the slowest resource (stage busy time or link time per iteration),
    secondary = the path (one microbatch through every stage and link). ``cap >= 0``: stages
    slower than ``cap`` are refused, primary = the path, secondary = the slowest resource.
    """
    count = compute.shape[0]
    num_stages = speed.shape[0]
    primary = np.full((num_stages + 1, count), np.inf)
    secondary = np.full((num_stages + 1, count), np.inf)
    choice = np.full((num_stages + 1, count), -1, dtype=np.int64)
    primary[0, 0] = 0.0
    secondary[0, 0] = 0.0
    sync = 2.0 * (replicas - 1) / replicas
    for p in range(1, num_stages + 1):
        pos = p - 1
        for j in range(1, count):
            for k in range(j):
                if not subset[j, k] or primary[p - 1, k] == np.inf:
                    continue
                param = params[j] - params[k]
                if memory_factor * param + peak[pos] * (kept[j] - kept[k]) > memory[pos]:
                    continue
                step = (compute[j] - compute[k]) / speed[pos]
                slowest = microbatches * step
                if with_communication:
                    if replicas > 1:
                        slowest += sync * param / ar_bw[pos] + 2.0 * (replicas - 1) * ar_lat[pos]
                    if pos > 0:
                        link = link_lat[pos - 1] + boundary[k] / link_bw[pos - 1]
                        step += 2.0 * link
                        slowest = max(slowest, microbatches * link)
                if cap < 0.0:
                    first = max(primary[p - 1, k], slowest)
                    second = secondary[p - 1, k] + step
                else:
                    if slowest > cap:
                        continue
                    first = primary[p - 1, k] + step
                    second = max(secondary[p - 1, k], slowest)
                if first < primary[p, j] or (first == primary[p, j] and second < secondary[p, j]):
                    primary[p, j] = first
                    secondary[p, j] = second
                    choice[p, j] = k
    return primary, choice


@njit(cache=True)
def _solve_fill(
    subset, compute, params, kept, boundary,
    speed, memory, peak, ar_bw, ar_lat, link_bw, link_lat,
    microbatches, replicas, memory_factor,
):  # fmt: skip
    """Step 4's fill-aware DP, from the last stage back: ``G[p, k]`` for stages p.. after D(k)."""
    count = compute.shape[0]
    num_stages = speed.shape[0]
    full = count - 1
    value = np.full((num_stages + 1, count), np.inf)
    choice = np.full((num_stages + 1, count), -1, dtype=np.int64)
    value[num_stages, full] = 0.0
    sync = 2.0 * (replicas - 1) / replicas
    for p in range(num_stages - 1, -1, -1):
        for k in range(full):
            for j in range(k + 1, count):
                if not subset[j, k] or value[p + 1, j] == np.inf:
                    continue
                param = params[j] - params[k]
                if memory_factor * param + peak[p] * (kept[j] - kept[k]) > memory[p]:
                    continue
                step = (compute[j] - compute[k]) / speed[p]
                slowest = microbatches * step
                if replicas > 1:
                    slowest += sync * param / ar_bw[p] + 2.0 * (replicas - 1) * ar_lat[p]
                if p < num_stages - 1:
                    link = link_lat[p] + boundary[j] / link_bw[p]
                    step += 2.0 * link
                    slowest = max(slowest, microbatches * link)
                total = max(slowest, step + value[p + 1, j])
                if total < value[p, k]:
                    value[p, k] = total
                    choice[p, k] = j
    return value, choice


def solve_fill(
    states: StateSet,
    costs: StageCosts,
    *,
    microbatches: int,
    replicas: int,
    memory_limit: bool = True,
) -> tuple[float, list[int] | None]:
    """Step 4's fill-aware DP: minimise ``max_p (path through stages before p + stage p's time
    per iteration)``, exactly, from the last stage back.

    :return: the value (s per iteration) and the state indices ``[0, D(1), ..., V]``, or
        ``(inf, None)`` when no chain fits.
    """
    compute, params, kept, boundary = states.sums
    memory = costs.memory if memory_limit else np.full_like(costs.memory, np.inf)
    value, choice = _solve_fill(
        states.subset, compute, params, kept, boundary,
        costs.speed, memory, costs.peak, costs.allreduce_bw, costs.allreduce_lat,
        costs.link_bw, costs.link_lat,
        float(microbatches), replicas, PARAM_MEMORY_FACTOR,
    )  # fmt: skip
    if not np.isfinite(value[0, 0]):
        return float("inf"), None
    chain = [0]
    for p in range(costs.speed.shape[0]):
        chain.append(int(choice[p, chain[-1]]))
    return float(value[0, 0]), chain


def solve_chain(
    states: StateSet,
    costs: StageCosts,
    *,
    microbatches: int,
    replicas: int,
    with_communication: bool = True,
    memory_limit: bool = True,
    cap: float | None = None,
) -> tuple[float, list[int] | None]:
    """Steps 2-3 for one layout: the DP's value and its chain of states.

    :param states: the downsets to cut along.
    :param costs: per stage position, the layout's speeds, memories and links.
    :param microbatches: M.
    :param replicas: R.
    :param with_communication: include transfers and all-reduce (else compute alone).
    :param memory_limit: refuse stages that do not fit their device.
    :param cap: None: minimise the slowest resource (s per iteration). A number: minimise the
        path of one microbatch (s) over plans whose slowest resource is at most ``cap``.
    :return: the value and the state indices ``[0, D(1), ..., V]``, or
        ``(inf, None)`` when no chain fits.
    """
    compute, params, kept, boundary = states.sums
    memory = costs.memory if memory_limit else np.full_like(costs.memory, np.inf)
    best, choice = _solve(
        states.subset, compute, params, kept, boundary,
        costs.speed, memory, costs.peak, costs.allreduce_bw, costs.allreduce_lat,
        costs.link_bw, costs.link_lat,
        float(microbatches), replicas, PARAM_MEMORY_FACTOR, with_communication,
        -1.0 if cap is None else cap,
    )  # fmt: skip
    num_stages = costs.speed.shape[0]
    full = states.count - 1
    if not np.isfinite(best[num_stages, full]):
        return float("inf"), None
    chain = [full]
    for p in range(num_stages, 0, -1):
        chain.append(int(choice[p, chain[-1]]))
    return float(best[num_stages, full]), chain[::-1]


def chain_stages(states: StateSet, chain: list[int]) -> np.ndarray:
    """The stage array (canonical order) of a chain of states ``[0, D(1), ..., V]``."""
    members = states.downsets.members
    stages = np.empty(members.shape[1], dtype=np.int64)
    for p in range(1, len(chain)):
        stages[members[chain[p]] & ~members[chain[p - 1]]] = p - 1
    return stages


def neighbour_chains(states: StateSet, chain: list[int]) -> list[list[int]]:
    """Chains with one cut moved by one node: ``D(p)`` replaced by a state one node larger or
    smaller that still lies strictly between ``D(p-1)`` and ``D(p+1)``."""
    sizes = states.downsets.sizes
    sub = states.subset
    out: list[list[int]] = []
    for p in range(1, len(chain) - 1):
        lower, cut, upper = chain[p - 1], chain[p], chain[p + 1]
        near = np.flatnonzero(np.abs(sizes - sizes[cut]) == 1)
        for k in near.tolist():
            if not (sub[cut, k] or sub[k, cut]) or not (sub[k, lower] and sub[upper, k]):
                continue
            out.append([*chain[:p], k, *chain[p + 1 :]])
    return out


@register(
    "pipedream-dp",
    "PipeDream's DP over downsets (SOSP'19) with this simulator's costs; picks cuts and replicas",
)
class PipeDreamDP(BaseAgent):
    """PipeDream's partitioning DP with pipeenv's cost model (module docstring for the steps).

    ``data_parallel=None`` tries every R with ``S R <= devices`` and keeps the best simulated.

    :param max_downsets: the most downsets the DP states may have before the graph is
        coarsened (see "Bounding the state space").
    """

    def __init__(self, *, max_downsets: int = DEFAULT_MAX_DOWNSETS) -> None:
        self.max_downsets = check_int_option(
            "pipedream-dp", "max_downsets", max_downsets, minimum=2
        )

    def options(self) -> dict[str, int]:
        return {"max_downsets": self.max_downsets}

    def _state_sets(self, graph: OperatorGraph) -> tuple[list[StateSet], dict[str, int]]:
        prefixes = prefix_states(graph)
        if graph.is_chain:
            return [prefixes], {"downsets": prefixes.count, "dp_nodes": graph.num_nodes}
        downsets, coarse_nodes = downset_states(graph, self.max_downsets)
        return [downsets, prefixes], {"downsets": downsets.count, "dp_nodes": coarse_nodes}

    def _plan(self, request: PlanRequest) -> tuple[Plan, SimResult | None]:
        graph, cluster = request.graph, request.cluster
        state_sets, facts = self._state_sets(graph)
        found: list[_Candidate] = []
        for memory_limit in (True, False):
            for replicas in request.replica_choices():
                for devices in device_layouts(cluster, request.num_stages, replicas):
                    costs = StageCosts.of(
                        cluster, devices, replicas, request.schedule, request.microbatches
                    )
                    for states in state_sets:
                        for chain in _chains(states, costs, request, replicas, memory_limit):
                            found.append(_Candidate.of(request, states, chain, replicas, devices))
            if any(c.result.feasible for c in found):
                break
        # Without the memory rule every chain of S prefixes is allowed, so found is not empty.
        found.sort(key=lambda c: score(c.result), reverse=True)
        best = found[0]
        for candidate in found[:POLISHED]:
            polished = candidate.polished(request)
            if better(polished.result, best.result):
                best = polished
        record = self.agent_record(**facts, states=best.states.kind)
        fields = request.plan_fields(best.replicas, best.devices, record)
        return Plan.from_stages(graph, best.plan.stages(graph), **fields), best.result


def _chains(
    states: StateSet, costs: StageCosts, request: PlanRequest, replicas: int, memory_limit: bool
) -> list[list[int]]:
    """Steps 3-4's DP solutions for one layout, without repeats."""
    solve = partial(
        solve_chain,
        states,
        costs,
        microbatches=request.microbatches,
        replicas=replicas,
        memory_limit=memory_limit,
    )
    bottleneck, first = solve()
    found = [first, solve(with_communication=False)[1]]
    found.append(
        solve_fill(
            states,
            costs,
            microbatches=request.microbatches,
            replicas=replicas,
            memory_limit=memory_limit,
        )[1]
    )
    if first is not None:
        found += [solve(cap=bottleneck * factor)[1] for factor in CAP_FACTORS]
    unique: list[list[int]] = []
    for chain in found:
        if chain is not None and chain not in unique:
            unique.append(chain)
    return unique


@dataclass(frozen=True)
class _Candidate:
    """A chain of states on a layout, with its simulation."""

    states: StateSet
    chain: list[int]
    replicas: int
    devices: tuple[int, ...]
    plan: Plan
    result: SimResult

    @classmethod
    def of(
        cls,
        request: PlanRequest,
        states: StateSet,
        chain: list[int],
        replicas: int,
        devices: tuple[int, ...],
    ) -> _Candidate:
        fields = request.plan_fields(replicas, devices, {"name": "pipedream-dp"})
        plan = Plan.from_stages(request.graph, chain_stages(states, chain), **fields)
        result = simulate(request.graph, request.cluster, plan)
        return cls(states, chain, replicas, devices, plan, result)

    def polished(self, request: PlanRequest) -> _Candidate:
        """Step 5: move single cuts to neighbouring states while the simulation improves."""
        current = self
        improved = True
        budget = POLISH_EVALUATIONS
        while improved and budget > 0:
            improved = False
            for chain in neighbour_chains(current.states, current.chain)[:budget]:
                budget -= 1
                found = _Candidate.of(request, self.states, chain, self.replicas, self.devices)
                if better(found.result, current.result):
                    current, improved = found, True
                    break
        return current
