"""Per-stage op orders of the pipeline schedules (SPEC §4), as arrays for the simulator.

An order is an ``(S, 2M)`` int64 array per stage of signed codes: ``m + 1`` is the forward of
microbatch ``m`` and ``-(m + 1)`` its backward.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeenv.errors import PipeenvError

__all__ = ["SCHEDULES", "op_order", "peak_in_flight", "schedule_code"]

SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b")


def schedule_code(schedule: str) -> int:
    """Index of ``schedule`` in :data:`SCHEDULES`."""
    try:
        return SCHEDULES.index(schedule)
    except ValueError:
        raise PipeenvError(
            f"plan: field 'schedule': unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})"
        ) from None


def _stage_order(schedule: str, stage: int, num_stages: int, microbatches: int) -> list[int]:
    m_total = microbatches
    if schedule == "gpipe":
        return [m + 1 for m in range(m_total)] + [-(m + 1) for m in range(m_total)]
    # 1f1b, non-interleaved, with flush (PipeDream-Flush / Megatron-LM).
    warmup = min(num_stages - stage - 1, m_total)
    order = [m + 1 for m in range(warmup)]
    for k in range(m_total - warmup):
        order += [warmup + k + 1, -(k + 1)]
    order += [-(m + 1) for m in range(m_total - warmup, m_total)]
    return order


@lru_cache(maxsize=256)
def op_order(schedule: str, num_stages: int, microbatches: int) -> np.ndarray:
    """The ``(S, 2M)`` op-code order of every stage (read-only, cached)."""
    schedule_code(schedule)
    order = np.array(
        [_stage_order(schedule, s, num_stages, microbatches) for s in range(num_stages)],
        dtype=np.int64,
    ).reshape(num_stages, 2 * microbatches)
    order.setflags(write=False)
    return order


def peak_in_flight(order_row: np.ndarray) -> int:
    """Largest #forwards - #backwards over prefixes of one stage's order (SPEC §4 memory)."""
    return int(np.cumsum(np.sign(order_row)).max())
