"""Incremental stage assignment in canonical order: action masks and per-stage running sums.

Nodes get their stages one at a time in the graph's canonical (topological) order. A stage ``s``
is allowed for the current node ``v`` iff the partial plan stays *completable*: some stage for
every remaining node gives a valid plan (SPEC §3: every edge non-decreasing, every stage
non-empty). That holds iff

1. ``s`` is not below the stage of any predecessor of ``v`` (all of them are assigned), and
2. the stages still empty after ``v`` takes ``s`` can be filled: with ``q(w)`` the lowest stage a
   remaining node ``w`` may take (the largest stage among its assigned ancestors, propagated
   along paths through unassigned nodes, and at least ``s`` when ``w`` descends from ``v``), for
   every ``k`` the number of remaining nodes with ``q(w) <= k`` is at least the number of empty
   stages ``<= k``.

Condition 2 is Hall's condition for matching empty stages to distinct remaining nodes whose
allowed stages ``[q(w), S)`` contain them; a matching can be made order-consistent by swapping
(an ancestor never has a larger ``q`` than its descendant), and every other node then takes the
largest of its ``q`` and its matched ancestors' stages. So the mask is exact, and it is never
empty once the episode starts completable (``num_nodes >= num_stages``).

The kernels work on plain arrays and keep each step at O(nodes + edges) with no Python loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["assign_node", "repair_stages", "stage_mask"]


@njit(cache=True)
def stage_mask(node, num_stages, pred_ptr, pred_idx, lower, counts, mask):
    """Fill ``mask[:num_stages]`` with the completable stages of canonical node ``node``.

    :param lower: propagated lowest stage ``q`` of every unassigned node (int64).
    :param counts: number of nodes already on each stage (int64).
    :param mask: output, int8, length >= num_stages; entries past ``num_stages`` are zeroed.
    """
    n = lower.shape[0]
    mask[:] = 0
    hist_all = np.zeros(num_stages, dtype=np.int64)
    hist_desc = np.zeros(num_stages, dtype=np.int64)
    desc = np.zeros(n, dtype=np.bool_)
    desc[node] = True
    for w in range(node + 1, n):
        hist_all[lower[w]] += 1
        for k in range(pred_ptr[w], pred_ptr[w + 1]):
            if desc[pred_idx[k]]:
                desc[w] = True
                hist_desc[lower[w]] += 1
                break
    for s in range(lower[node], num_stages):
        ok = True
        cum_all = 0
        cum_desc = 0
        need = 0
        for k in range(num_stages):
            cum_all += hist_all[k]
            cum_desc += hist_desc[k]
            available = cum_all - cum_desc if k < s else cum_all
            if counts[k] == 0 and k != s:
                need += 1
            if available < need:
                ok = False
                break
        if ok:
            mask[s] = 1


@njit(cache=True)
def assign_node(
    node,
    stage,
    costs,
    pred_ptr,
    pred_idx,
    stage_of,
    lower,
    reach,
    counts,
    sums,
    send_bytes,
):
    """Put canonical node ``node`` on ``stage`` and update the running state.

    :param costs: the graph's ``(5, n)`` cost rows (forward, backward, output, param, activation).
    :param stage_of: stage of every node, -1 while unassigned.
    :param lower: propagated lowest allowed stage of every node (raised for ``node``'s
        descendants).
    :param reach: for assigned nodes, the largest stage holding the node or one of its assigned
        consumers (its output crosses every boundary below that).
    :param counts: nodes per stage.
    :param sums: ``(4, S)`` per-stage sums of forward_s, backward_s, param_bytes and
        activation_bytes (speed 1.0).
    :param send_bytes: per-boundary bytes ``X_s`` committed so far (the final ``X_s`` once every
        node is assigned).
    """
    n = lower.shape[0]
    stage_of[node] = stage
    lower[node] = stage
    reach[node] = stage
    counts[stage] += 1
    sums[0, stage] += costs[0, node]
    sums[1, stage] += costs[1, node]
    sums[2, stage] += costs[3, node]
    sums[3, stage] += costs[4, node]
    for k in range(pred_ptr[node], pred_ptr[node + 1]):
        u = pred_idx[k]
        if stage > reach[u]:
            for b in range(reach[u], stage):
                send_bytes[b] += costs[2, u]
            reach[u] = stage
    for w in range(node + 1, n):
        for k in range(pred_ptr[w], pred_ptr[w + 1]):
            p = pred_idx[k]
            if p >= node and lower[p] > lower[w]:
                lower[w] = lower[p]


@njit(cache=True)
def repair_stages(requested, num_stages, costs, pred_ptr, pred_idx):
    """The one-shot repair: assign nodes in canonical order, each to its requested stage when
    allowed (:func:`stage_mask`), else to the nearest allowed stage (the lower one on a tie).

    :param requested: requested stage of every node (any integers).
    :return: (stages, number of nodes whose stage was changed).
    """
    n = requested.shape[0]
    stage_of = np.full(n, -1, dtype=np.int64)
    lower = np.zeros(n, dtype=np.int64)
    reach = np.zeros(n, dtype=np.int64)
    counts = np.zeros(num_stages, dtype=np.int64)
    sums = np.zeros((4, num_stages))
    send_bytes = np.zeros(num_stages)
    mask = np.zeros(num_stages, dtype=np.int8)
    repaired = 0
    for v in range(n):
        stage_mask(v, num_stages, pred_ptr, pred_idx, lower, counts, mask)
        want = requested[v]
        stage = want
        if want < 0 or want >= num_stages or mask[want] == 0:
            repaired += 1
            best = -1
            for s in range(num_stages):
                if mask[s] == 1 and (best < 0 or abs(s - want) < abs(best - want)):
                    best = s
            stage = best
        assign_node(
            v, stage, costs, pred_ptr, pred_idx, stage_of, lower, reach, counts, sums, send_bytes
        )
    return stage_of, repaired
