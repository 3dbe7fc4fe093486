"""Terminal rewards of the environments, from the simulated iteration time of a plan.

``T_ref`` is the iteration time of the reference plan (the time-balanced contiguous partition of
:mod:`pipeenv.partition_reference`, same stages, devices, microbatches and schedule) and ``T`` that
of the agent's plan, both simulated on the original (uncoarsened) graph.
"""

from __future__ import annotations

import math

from pipeenv.errors import PipeenvError

__all__ = ["REWARD_MODES", "check_reward_mode", "terminal_reward"]

#: Reward modes and what a feasible plan gets.
REWARD_MODES: dict[str, str] = {
    "log_speedup": "log(T_ref / T): 0 at parity with the reference, > 0 when faster",
    "speedup": "T_ref / T: the throughput speed-up over the reference (1 at parity)",
    "neg_iteration_s": "-T: minus the iteration time in seconds",
}


def check_reward_mode(mode: object, where: str) -> str:
    """``mode`` if it is one of :data:`REWARD_MODES`.

    :raises PipeenvError: naming ``where`` and the known modes otherwise.
    """
    if not isinstance(mode, str) or mode not in REWARD_MODES:
        raise PipeenvError(
            f"{where}: argument 'reward' must be one of {', '.join(REWARD_MODES)}, got {mode!r}"
        )
    return mode


def terminal_reward(
    mode: str,
    iteration_s: float,
    reference_s: float,
    *,
    feasible: bool,
    oom_fraction: float,
    oom_penalty: float,
) -> float:
    """The reward of a finished plan.

    A feasible plan gets the value of ``mode`` (:data:`REWARD_MODES`). An infeasible one (a stage
    out of memory) gets ``min(value, 0) - oom_penalty * (1 + oom_fraction)``: never more than a
    plan at parity with the reference in the log mode, always below every feasible plan in the
    ``speedup`` mode, and lower the further it overflows.

    :param iteration_s: the plan's simulated iteration time ``T`` (seconds, > 0).
    :param reference_s: the reference plan's ``T_ref`` (seconds, > 0).
    :param feasible: False when a stage is out of memory.
    :param oom_fraction: the largest memory excess of a stage, as a fraction of its device memory.
    :param oom_penalty: the penalty scale (>= 0).
    """
    if mode == "log_speedup":
        value = math.log(reference_s / iteration_s)
    elif mode == "speedup":
        value = reference_s / iteration_s
    else:
        value = -iteration_s
    if feasible:
        return value
    return min(value, 0.0) - oom_penalty * (1.0 + oom_fraction)
