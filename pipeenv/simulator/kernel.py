"""The Numba pipeline simulator: SPEC §4 over plain arrays.

Each device runs its stage's fixed op order, so the simulation needs no event queue: ops are
taken in order per device, an op is started as soon as its one dependency (a transfer arrival,
or the stage's own forward for the last stage's backward) is known, and its start is
``max(device free, dependency met)``. Transfers on each direction of each boundary are produced
in microbatch order by one device, so a channel's FIFO order is its production order and each
transfer starts at ``max(producer end, channel free)``. A sweep over the stages that advances no
device while ops remain is a dependency cycle (deadlock) and is reported, never looped on.

The plain-Python twin in :mod:`pipeenv.simulator.reference` implements the same semantics as a
classical event-queue simulation and is the test oracle.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "COL_ALLREDUCE",
    "COL_BACKWARD",
    "COL_BUSY",
    "COL_FORWARD",
    "COL_LAST_B",
    "COL_MEMORY",
    "COL_OOM_EXCESS",
    "COL_SEND",
    "NUM_COLS",
    "STATUS_BAD_DEVICE",
    "STATUS_BAD_EDGE",
    "STATUS_BAD_STAGE",
    "STATUS_DEADLOCK",
    "STATUS_EMPTY_STAGE",
    "STATUS_OK",
    "simulate_kernel",
]

# Columns of the per-stage output array.
COL_FORWARD, COL_BACKWARD, COL_SEND, COL_BUSY = 0, 1, 2, 3
COL_MEMORY, COL_OOM_EXCESS, COL_ALLREDUCE, COL_LAST_B = 4, 5, 6, 7
NUM_COLS = 8

STATUS_OK = 0
STATUS_BAD_STAGE = 1
STATUS_EMPTY_STAGE = 2
STATUS_BAD_EDGE = 3
STATUS_BAD_DEVICE = 4
STATUS_DEADLOCK = 5

# Rows of the timeline array: op and transfer start/end per (replica, stage, microbatch).
T_F_START, T_F_END, T_B_START, T_B_END = 0, 1, 2, 3
T_SF_START, T_SF_END, T_SB_START, T_SB_END = 4, 5, 6, 7


@njit(cache=True)
def _stage_sums(costs, stages, num_stages):
    """Per-stage sums of forward, backward, param and activation costs (speed 1.0)."""
    sums = np.zeros((4, num_stages))
    for i in range(stages.shape[0]):
        s = stages[i]
        sums[0, s] += costs[0, i]
        sums[1, s] += costs[1, i]
        sums[2, s] += costs[3, i]
        sums[3, s] += costs[4, i]
    return sums


@njit(cache=True)
def _boundary_bytes(costs, succ_ptr, succ_idx, stages, num_stages):
    """X_s: bytes of every tensor produced at or before s and consumed after s (relayed)."""
    diff = np.zeros(num_stages + 1)
    for u in range(stages.shape[0]):
        last = stages[u]
        for k in range(succ_ptr[u], succ_ptr[u + 1]):
            if stages[succ_idx[k]] > last:
                last = stages[succ_idx[k]]
        if last > stages[u]:
            diff[stages[u]] += costs[2, u]
            diff[last] -= costs[2, u]
    x = np.zeros(num_stages)
    acc = 0.0
    for s in range(num_stages - 1):
        acc += diff[s]
        x[s] = acc
    return x


@njit(cache=True)
def _check(stages, succ_ptr, succ_idx, num_stages, devices, num_devices):
    """Status code of the SPEC §3 rules the kernel relies on (details come from Python)."""
    count = np.zeros(num_stages, dtype=np.int64)
    for u in range(stages.shape[0]):
        s = stages[u]
        if s < 0 or s >= num_stages:
            return STATUS_BAD_STAGE
        count[s] += 1
    for s in range(num_stages):
        if count[s] == 0:
            return STATUS_EMPTY_STAGE
    for u in range(stages.shape[0]):
        for k in range(succ_ptr[u], succ_ptr[u + 1]):
            if stages[succ_idx[k]] < stages[u]:
                return STATUS_BAD_EDGE
    used = np.zeros(num_devices, dtype=np.bool_)
    for i in range(devices.shape[0]):
        d = devices[i]
        if d < 0 or d >= num_devices or used[d]:
            return STATUS_BAD_DEVICE
        used[d] = True
    return STATUS_OK


@njit(cache=True)
def _run_replica(order, fwd, bwd, comm, times, r):
    """Simulate one replica; fills ``times[r]``; returns False on a dependency cycle."""
    num_stages, num_ops = order.shape
    ptr = np.zeros(num_stages, dtype=np.int64)
    dev_free = np.zeros(num_stages)
    fch_free = np.zeros(num_stages)
    bch_free = np.zeros(num_stages)
    t = times[r]
    t[:, :, :] = -1.0
    remaining = num_stages * num_ops
    while remaining > 0:
        progressed = False
        for s in range(num_stages):
            while ptr[s] < num_ops:
                code = order[s, ptr[s]]
                if code > 0:
                    m = code - 1
                    if s > 0:
                        ready = t[T_SF_END, s - 1, m]
                        if ready < 0.0:
                            break
                    else:
                        ready = 0.0
                    start = max(dev_free[s], ready)
                    end = start + fwd[s]
                    t[T_F_START, s, m] = start
                    t[T_F_END, s, m] = end
                    if s < num_stages - 1:
                        send = max(end, fch_free[s])
                        fch_free[s] = send + comm[s]
                        t[T_SF_START, s, m] = send
                        t[T_SF_END, s, m] = send + comm[s]
                else:
                    m = -code - 1
                    if s < num_stages - 1:
                        ready = t[T_SB_END, s, m]
                    else:
                        ready = t[T_F_END, s, m]
                    if ready < 0.0:
                        break
                    start = max(dev_free[s], ready)
                    end = start + bwd[s]
                    t[T_B_START, s, m] = start
                    t[T_B_END, s, m] = end
                    if s > 0:
                        send = max(end, bch_free[s - 1])
                        bch_free[s - 1] = send + comm[s - 1]
                        t[T_SB_START, s - 1, m] = send
                        t[T_SB_END, s - 1, m] = send + comm[s - 1]
                dev_free[s] = end
                ptr[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            return False
    return True


@njit(cache=True)
def simulate_kernel(
    costs,
    succ_ptr,
    succ_idx,
    stages,
    devices,
    order,
    num_stages,
    replicas,
    speed,
    memory,
    link_bw,
    link_lat,
    param_memory_factor,
    out,
    times,
):
    """Simulate one iteration of a plan (SPEC §4).

    :param costs: (5, N) forward_s, backward_s, output_bytes, param_bytes, activation_bytes.
    :param succ_ptr: CSR successor offsets (N + 1).
    :param succ_idx: CSR successor indices.
    :param stages: (N,) stage of each node, canonical order.
    :param devices: (S * R,) device of replica r, stage s at ``r * S + s``.
    :param order: (S, 2M) op codes (``m + 1`` forward, ``-(m + 1)`` backward).
    :param num_stages: S.
    :param replicas: R.
    :param speed: (D,) device speeds.
    :param memory: (D,) device memory bytes.
    :param link_bw: (D, D) bandwidth between devices.
    :param link_lat: (D, D) latency between devices.
    :param param_memory_factor: bytes of memory per parameter byte.
    :param out: (S, NUM_COLS) per-stage results, filled in.
    :param times: (R, 8, S, M) op and transfer start/end times, filled in.
    :returns: (status, iteration_s, replica 0's busy seconds summed over stages, any stage OOM).
    """
    status = _check(stages, succ_ptr, succ_idx, num_stages, devices, speed.shape[0])
    if status != STATUS_OK:
        return status, 0.0, 0.0, False
    microbatches = order.shape[1] // 2
    sums = _stage_sums(costs, stages, num_stages)
    x = _boundary_bytes(costs, succ_ptr, succ_idx, stages, num_stages)
    fwd = np.empty(num_stages)
    bwd = np.empty(num_stages)
    comm = np.zeros(num_stages)
    last_b = np.zeros(num_stages)
    for r in range(replicas):
        base = r * num_stages
        for s in range(num_stages):
            d = devices[base + s]
            fwd[s] = sums[0, s] / speed[d]
            bwd[s] = sums[1, s] / speed[d]
            if s < num_stages - 1:
                e = devices[base + s + 1]
                comm[s] = link_lat[d, e] + x[s] / link_bw[d, e]
        if r == 0:
            for s in range(num_stages):
                out[s, COL_FORWARD] = fwd[s]
                out[s, COL_BACKWARD] = bwd[s]
                out[s, COL_BUSY] = microbatches * (fwd[s] + bwd[s])
        if not _run_replica(order, fwd, bwd, comm, times, r):
            return STATUS_DEADLOCK, 0.0, 0.0, False
        for s in range(num_stages):
            for m in range(microbatches):
                if times[r, T_B_END, s, m] > last_b[s]:
                    last_b[s] = times[r, T_B_END, s, m]
    iteration = 0.0
    busy = 0.0
    any_oom = False
    for s in range(num_stages):
        busy += out[s, COL_BUSY]
        out[s, COL_SEND] = x[s]
        # Peak in-flight microbatches over prefixes of the stage's op order.
        live = 0
        peak = 0
        for k in range(order.shape[1]):
            live += 1 if order[s, k] > 0 else -1
            if live > peak:
                peak = live
        need = param_memory_factor * sums[2, s] + peak * sums[3, s]
        out[s, COL_MEMORY] = need
        least = np.inf
        for r in range(replicas):
            least = min(least, memory[devices[r * num_stages + s]])
        out[s, COL_OOM_EXCESS] = max(0.0, need - least)
        if need > least:
            any_oom = True
        allreduce = 0.0
        if replicas > 1:
            bw = np.inf
            lat = 0.0
            for r1 in range(replicas):
                for r2 in range(r1 + 1, replicas):
                    a = devices[r1 * num_stages + s]
                    b = devices[r2 * num_stages + s]
                    if link_bw[a, b] < bw or (link_bw[a, b] == bw and link_lat[a, b] > lat):
                        bw = link_bw[a, b]
                        lat = link_lat[a, b]
            allreduce = (
                2.0 * (replicas - 1) / replicas * sums[2, s] / bw + 2.0 * (replicas - 1) * lat
            )
        out[s, COL_ALLREDUCE] = allreduce
        out[s, COL_LAST_B] = last_b[s]
        iteration = max(iteration, last_b[s] + allreduce)
    return STATUS_OK, iteration, busy, any_oom
