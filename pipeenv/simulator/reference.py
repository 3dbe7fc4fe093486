"""The plain-Python twin of the simulator: SPEC §4 as a classical discrete-event simulation.

It shares no code with the Numba kernel beyond the schedule orders: stage costs, boundary
traffic, memory and the timeline are computed here straight from the spec's wording, with an
event queue of op completions and transfer arrivals. It is slow and exists to check the kernel
(``engine="python"``).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import numpy as np

from pipeenv.cluster import Cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.schedules import op_order

__all__ = ["ReferenceRun", "simulate_reference"]


@dataclass
class ReferenceRun:
    """Raw figures of one reference simulation (indexing: stage, then microbatch)."""

    forward_s: list[float]
    backward_s: list[float]
    send_bytes: list[float]
    busy_s: list[float]
    memory_bytes: list[float]
    oom_excess_bytes: list[float]
    allreduce_s: list[float]
    last_backward_end: list[float]
    iteration_s: float
    # (replica, kind, stage, microbatch) -> (start, end); kinds F, B, SF (stage -> stage+1),
    # SB (stage+1 -> stage).
    events: dict[tuple[int, str, int, int], tuple[float, float]] = field(default_factory=dict)


def _boundary_bytes(graph: OperatorGraph, stage_of: dict[str, int], num_stages: int) -> list[float]:
    succ: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for u, v in graph.edges:
        succ[u].append(v)
    out = []
    for s in range(num_stages - 1):
        crossing = {u for u in succ if stage_of[u] <= s and any(stage_of[v] > s for v in succ[u])}
        out.append(sum(graph.node(u).output_bytes for u in crossing))
    out.append(0.0)
    return out


def _simulate_replica(
    order: np.ndarray, fwd: list[float], bwd: list[float], comm: list[float], replica: int
) -> dict[tuple[int, str, int, int], tuple[float, float]]:
    """Event-queue simulation of one replica; raises PipeenvError on a deadlock."""
    num_stages, num_ops = order.shape
    queue = [list(order[s]) for s in range(num_stages)]
    position = [0] * num_stages
    busy_until: list[float | None] = [0.0] * num_stages  # None while an op runs
    arrived: set[tuple[str, int, int]] = set()  # ("F", s, m): forward input of stage s arrived
    channel_free = {("SF", s): 0.0 for s in range(num_stages - 1)}
    channel_free.update({("SB", s): 0.0 for s in range(num_stages - 1)})
    events: dict[tuple[int, str, int, int], tuple[float, float]] = {}
    heap: list[tuple[float, int, str, int, int]] = []
    tie = itertools.count()

    def try_start(s: int, now: float) -> None:
        if busy_until[s] is None or position[s] >= num_ops:
            return
        code = int(queue[s][position[s]])
        kind, m = ("F", code - 1) if code > 0 else ("B", -code - 1)
        if kind == "F" and s > 0 and ("F", s, m) not in arrived:
            return
        if kind == "B" and ("B", s, m) not in arrived:
            return
        duration = fwd[s] if kind == "F" else bwd[s]
        start = now
        events[(replica, kind, s, m)] = (start, start + duration)
        busy_until[s] = None
        position[s] += 1
        heapq.heappush(heap, (start + duration, next(tie), "done", s, code))

    def send(channel: str, boundary: int, m: int, ready: float) -> None:
        start = max(ready, channel_free[(channel, boundary)])
        end = start + comm[boundary]
        channel_free[(channel, boundary)] = end
        events[(replica, channel, boundary, m)] = (start, end)
        heapq.heappush(heap, (end, next(tie), channel, boundary, m))

    for s in range(num_stages):
        try_start(s, 0.0)
    while heap:
        now, _, what, s, value = heapq.heappop(heap)
        if what == "done":
            busy_until[s] = now
            if value > 0:
                m = value - 1
                if s < num_stages - 1:
                    send("SF", s, m, now)
                else:
                    arrived.add(("B", s, m))  # the last stage's backward follows its forward
            elif s > 0:
                send("SB", s - 1, -value - 1, now)
            try_start(s, now)
        elif what == "SF":
            arrived.add(("F", s + 1, value))
            try_start(s + 1, now)
        else:
            arrived.add(("B", s, value))
            try_start(s, now)
    if any(position[s] < num_ops for s in range(num_stages)):
        raise PipeenvError("simulator: the schedule's op order cannot complete (dependency cycle)")
    return events


def simulate_reference(
    graph: OperatorGraph, cluster: Cluster, plan: Plan, *, param_memory_factor: float = 4.0
) -> ReferenceRun:
    """Simulate ``plan`` following SPEC §4 literally (slow; the oracle of the kernel)."""
    plan.validate(graph, cluster)
    num_stages, replicas, micro = plan.num_stages, plan.data_parallel, plan.microbatches
    stage_of = plan.stage_of
    members: list[list[str]] = [[] for _ in range(num_stages)]
    for node in graph.nodes:
        members[stage_of[node.id]].append(node.id)
    fwd_cost = [sum(graph.node(u).forward_s for u in members[s]) for s in range(num_stages)]
    bwd_cost = [sum(graph.node(u).backward_s for u in members[s]) for s in range(num_stages)]
    params = [sum(graph.node(u).param_bytes for u in members[s]) for s in range(num_stages)]
    kept = [sum(graph.node(u).kept_bytes for u in members[s]) for s in range(num_stages)]
    send_bytes = _boundary_bytes(graph, stage_of, num_stages)
    order = op_order(plan.schedule, num_stages, micro)

    events: dict[tuple[int, str, int, int], tuple[float, float]] = {}
    forward_s: list[float] = []
    backward_s: list[float] = []
    for r in range(replicas):
        dev = [plan.device_of(s, r) for s in range(num_stages)]
        fwd = [fwd_cost[s] / cluster.devices[dev[s]].speed for s in range(num_stages)]
        bwd = [bwd_cost[s] / cluster.devices[dev[s]].speed for s in range(num_stages)]
        comm = [
            cluster.link(dev[s], dev[s + 1]).transfer_s(send_bytes[s])
            for s in range(num_stages - 1)
        ]
        if r == 0:
            forward_s, backward_s = fwd, bwd
        events.update(_simulate_replica(order, fwd, bwd, comm, r))

    memory, excess, allreduce, last_b = [], [], [], []
    for s in range(num_stages):
        counts = [1 if c > 0 else -1 for c in order[s]]
        peak = max(itertools.accumulate(counts))
        need = param_memory_factor * params[s] + peak * kept[s]
        memory.append(need)
        least = min(cluster.devices[plan.device_of(s, r)].memory_bytes for r in range(replicas))
        excess.append(max(0.0, need - least))
        last_b.append(max(events[(r, "B", s, m)][1] for r in range(replicas) for m in range(micro)))
        if replicas == 1:
            allreduce.append(0.0)
            continue
        stage_devices = [plan.device_of(s, r) for r in range(replicas)]
        links = [cluster.link(a, b) for a, b in itertools.combinations(stage_devices, 2)]
        slowest = min(links, key=lambda link: (link.bandwidth_Bps, -link.latency_s))
        allreduce.append(
            2 * (replicas - 1) / replicas * params[s] / slowest.bandwidth_Bps
            + 2 * (replicas - 1) * slowest.latency_s
        )
    iteration = max(last_b[s] + allreduce[s] for s in range(num_stages))
    return ReferenceRun(
        forward_s=forward_s,
        backward_s=backward_s,
        send_bytes=send_bytes,
        busy_s=[micro * (forward_s[s] + backward_s[s]) for s in range(num_stages)],
        memory_bytes=memory,
        oom_excess_bytes=excess,
        allreduce_s=allreduce,
        last_backward_end=last_b,
        iteration_s=iteration,
        events=events,
    )
