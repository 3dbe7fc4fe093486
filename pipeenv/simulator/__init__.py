"""Simulate a plan on a cluster (SPEC §4): the public entry point over the two engines.

``engine="numba"`` (default) runs :func:`pipeenv.simulator.kernel.simulate_kernel`;
``engine="python"`` runs the plain-Python twin in :mod:`pipeenv.simulator.reference`. Both
give the same figures (the test suite checks it to 1e-9).
"""

from __future__ import annotations

import math

import numpy as np

from pipeenv.cluster import Cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.schedules import op_order
from pipeenv.simulator.kernel import (
    COL_ALLREDUCE,
    COL_LAST_B,
    NUM_COLS,
    STATUS_DEADLOCK,
    STATUS_OK,
    T_B_END,
    T_B_START,
    T_F_END,
    T_F_START,
    T_SB_END,
    T_SB_START,
    T_SF_END,
    T_SF_START,
    simulate_kernel,
)
from pipeenv.simulator.reference import simulate_reference
from pipeenv.simulator.result import SimResult, StageResult, TimelineEvent, throughput_upper_bound

__all__ = [
    "ENGINES",
    "SimResult",
    "StageResult",
    "TimelineEvent",
    "simulate",
    "throughput_upper_bound",
]

ENGINES = ("numba", "python")


def simulate(
    graph: OperatorGraph,
    cluster: Cluster,
    plan: Plan,
    *,
    timeline: bool = False,
    param_memory_factor: float = 4.0,
    engine: str = "numba",
) -> SimResult:
    """Simulate one training iteration of ``plan`` (SPEC §4) and report it (SPEC §6).

    :param graph: the operator graph the plan partitions.
    :param cluster: devices and links.
    :param plan: stages, devices, replicas, microbatches, schedule.
    :param timeline: also return every op's and transfer's start and end.
    :param param_memory_factor: memory bytes per parameter byte (4: weights, gradients and two
        optimizer moments).
    :param engine: ``numba`` (fast) or ``python`` (the reference twin).
    :raises PipeenvError: when the plan breaks a SPEC §3 rule for this graph and cluster, or
        its schedule cannot complete.
    """
    if engine not in ENGINES:
        raise PipeenvError(f"simulate: unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    if not (math.isfinite(param_memory_factor) and param_memory_factor >= 0):
        raise PipeenvError(
            f"simulate: param_memory_factor must be a finite number >= 0, got {param_memory_factor}"
        )
    if engine == "python":
        return _simulate_python(graph, cluster, plan, timeline, param_memory_factor)
    num_stages, replicas = plan.num_stages, plan.data_parallel
    if (plan.graph_hash is not None and plan.graph_hash != graph.graph_hash) or len(
        plan.devices
    ) != num_stages * replicas:
        plan.validate(graph, cluster)
    stages = plan.stages(graph)
    a = graph.arrays
    order = op_order(plan.schedule, num_stages, plan.microbatches)
    bw, lat = cluster.link_arrays
    table = np.empty((num_stages, NUM_COLS))
    times = np.empty((replicas, 8, num_stages, plan.microbatches))
    status, iteration, busy, any_oom = simulate_kernel(
        a.costs,
        a.succ_ptr,
        a.succ_idx,
        stages,
        plan.devices_array,
        order,
        num_stages,
        replicas,
        cluster.speed,
        cluster.memory_bytes,
        bw,
        lat,
        float(param_memory_factor),
        table,
        times,
    )
    if status != STATUS_OK:
        if status == STATUS_DEADLOCK:
            raise PipeenvError(
                f"simulate: schedule {plan.schedule!r} cannot complete (dependency cycle)"
            )
        plan.validate(graph, cluster)
        raise AssertionError(f"kernel rejected a plan that validates (status {status})")
    return _result(
        graph, cluster, plan, iteration, busy, any_oom, table, times if timeline else None
    )


def _result(
    graph: OperatorGraph,
    cluster: Cluster,
    plan: Plan,
    iteration: float,
    busy: float,
    any_oom: bool,
    table: np.ndarray | list[StageResult],
    times: np.ndarray | None,
    events: tuple[TimelineEvent, ...] | None = None,
) -> SimResult:
    if graph.total_compute_s <= 0.0:
        raise PipeenvError(
            f"simulate: graph {graph.name!r} has no compute cost (all forward_s and backward_s "
            "are 0), so throughput and efficiency are undefined"
        )
    samples = plan.data_parallel * plan.microbatches * graph.microbatch_size
    throughput = samples / iteration
    if times is not None:
        events = _timeline(plan, times, table)  # type: ignore[arg-type]
    return SimResult(
        iteration_s=iteration,
        throughput_samples_per_s=throughput,
        # Clamped against float rounding only (a bubble-free plan can give -2e-16).
        bubble_fraction=max(0.0, 1.0 - busy / (plan.num_stages * iteration)),
        efficiency=min(1.0, throughput / throughput_upper_bound(graph, cluster)),
        feasible=not any_oom,
        stage_table=table,
        devices=plan.devices,
        timeline=events,
    )


_KINDS = (
    ("forward", T_F_START, T_F_END, 0),
    ("backward", T_B_START, T_B_END, 0),
    ("send_forward", T_SF_START, T_SF_END, 0),
    ("send_backward", T_SB_START, T_SB_END, 1),
)


def _timeline(plan: Plan, times: np.ndarray, table: np.ndarray) -> tuple[TimelineEvent, ...]:
    """Events from the kernel's time array, sorted by start time."""
    events: list[TimelineEvent] = []
    num_stages = plan.num_stages
    for r in range(plan.data_parallel):
        for kind, row_start, row_end, sender_offset in _KINDS:
            last = num_stages - 1 if kind.startswith("send") else num_stages
            for s in range(last):
                device = plan.device_of(s + sender_offset, r)
                for m in range(plan.microbatches):
                    events.append(
                        TimelineEvent(
                            r,
                            kind,
                            s,
                            m,
                            device,
                            float(times[r, row_start, s, m]),
                            float(times[r, row_end, s, m]),
                        )
                    )
        if plan.data_parallel > 1:
            for s in range(num_stages):
                start = float(table[s, COL_LAST_B])
                events.append(
                    TimelineEvent(
                        r,
                        "allreduce",
                        s,
                        -1,
                        plan.device_of(s, r),
                        start,
                        start + float(table[s, COL_ALLREDUCE]),
                    )
                )
    events.sort(key=lambda e: (e.start, e.replica, e.stage, e.kind, e.microbatch))
    return tuple(events)


def _simulate_python(
    graph: OperatorGraph, cluster: Cluster, plan: Plan, timeline: bool, factor: float
) -> SimResult:
    run = simulate_reference(graph, cluster, plan, param_memory_factor=factor)
    stages = [
        StageResult(
            stage=s,
            device=plan.device_of(s),
            forward_s=run.forward_s[s],
            backward_s=run.backward_s[s],
            send_bytes=run.send_bytes[s],
            busy_s=run.busy_s[s],
            peak_memory_bytes=run.memory_bytes[s],
            oom=run.oom_excess_bytes[s] > 0.0,
            oom_excess_bytes=run.oom_excess_bytes[s],
            allreduce_s=run.allreduce_s[s],
        )
        for s in range(plan.num_stages)
    ]
    events: tuple[TimelineEvent, ...] | None = None
    if timeline:
        names = {"F": "forward", "B": "backward", "SF": "send_forward", "SB": "send_backward"}
        collected = [
            TimelineEvent(r, names[kind], s, m, plan.device_of(s + (kind == "SB"), r), start, end)
            for (r, kind, s, m), (start, end) in run.events.items()
        ]
        if plan.data_parallel > 1:
            collected += [
                TimelineEvent(
                    r,
                    "allreduce",
                    s,
                    -1,
                    plan.device_of(s, r),
                    run.last_backward_end[s],
                    run.last_backward_end[s] + run.allreduce_s[s],
                )
                for r in range(plan.data_parallel)
                for s in range(plan.num_stages)
            ]
        collected.sort(key=lambda e: (e.start, e.replica, e.stage, e.kind, e.microbatch))
        events = tuple(collected)
    return _result(
        graph,
        cluster,
        plan,
        run.iteration_s,
        sum(run.busy_s),
        any(st.oom for st in stages),
        stages,
        None,
        events,
    )
