"""The time-balanced contiguous partition: the cheap reference plan of the environments.

Split a sequence of non-negative weights (a graph's per-node forward+backward seconds in
canonical order) into ``num_stages`` contiguous, non-empty runs so that the largest run sum is
as small as possible: the linear partition problem. A contiguous split of a topological order
never sends an edge backward, so the result is always a valid plan for any DAG.

The algorithm is the classical bottleneck search (as in torchgpipe's ``balance.blockpartition``
and PipeDream's contiguous baselines): for a bound ``B``, the greedy that fills each stage with
as many nodes as fit under ``B`` while leaving one node for every later stage succeeds iff some
partition with bottleneck ``<= B`` exists; ``B`` is bisected over the run sums, and the greedy
at the smallest feasible bound gives the partition (earlier stages take as much as they can).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeenv.errors import PipeenvError

__all__ = ["balanced_contiguous"]


def _greedy_ends(prefix: np.ndarray, num_stages: int, bound: float) -> np.ndarray | None:
    """Stage end positions (exclusive) of the greedy fill under ``bound``, or None."""
    n = prefix.shape[0] - 1
    ends = np.empty(num_stages, dtype=np.int64)
    start = 0
    for s in range(num_stages):
        latest = n - (num_stages - 1 - s)
        if s == num_stages - 1:
            end = n
        else:
            # Largest end with prefix[end] - prefix[start] <= bound.
            end = int(np.searchsorted(prefix, prefix[start] + bound, side="right")) - 1
            end = min(end, latest)
        if end <= start or prefix[end] - prefix[start] > bound:
            return None
        ends[s] = end
        start = end
    return ends


def balanced_contiguous(weights: Sequence[float] | np.ndarray, num_stages: int) -> np.ndarray:
    """Stage of each position for the contiguous split minimising the largest stage sum.

    Ties between optimal splits go to the one whose earlier stages are longest, e.g.
    ``balanced_contiguous([1, 2, 3, 4, 5, 6], 2)`` is ``[0, 0, 0, 0, 1, 1]`` (sums 10 and 11).

    :param weights: non-negative weight of each position (seconds), in order.
    :param num_stages: number of stages S, ``1 <= S <= len(weights)``.
    :return: int64 array of stages ``0 .. S-1``, non-decreasing, every stage non-empty.
    :raises PipeenvError: on a negative or non-finite weight or an impossible ``num_stages``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise PipeenvError("balanced_contiguous: weights must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise PipeenvError("balanced_contiguous: weights must be finite and >= 0")
    if isinstance(num_stages, bool) or not isinstance(num_stages, int | np.integer):
        raise PipeenvError(
            f"balanced_contiguous: num_stages must be an integer, got {num_stages!r}"
        )
    if not 1 <= num_stages <= w.size:
        raise PipeenvError(
            f"balanced_contiguous: num_stages must be in 1..{w.size} (one node per stage at "
            f"least), got {num_stages}"
        )
    prefix = np.concatenate(([0.0], np.cumsum(w)))
    stages = int(num_stages)
    lo = float(w.max())
    ends = _greedy_ends(prefix, stages, lo)
    if ends is None:
        # Invariant: no split fits under lo; the greedy split under hi is the best so far.
        ends = _greedy_ends(prefix, stages, float(prefix[-1]))
        assert ends is not None
        while True:
            hi = float(np.max(np.diff(prefix[np.concatenate(([0], ends))])))
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:
                break
            trial = _greedy_ends(prefix, stages, mid)
            if trial is None:
                lo = mid
            else:
                ends = trial
    return np.repeat(np.arange(stages, dtype=np.int64), np.diff(np.concatenate(([0], ends))))
