"""Simulation results (``pipeenv.result/v1``, SPEC §6) and the throughput bound (SPEC §5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from pipeenv.cluster import Cluster
from pipeenv.graph import OperatorGraph
from pipeenv.jsonio import plain_number
from pipeenv.simulator.kernel import (
    COL_ALLREDUCE,
    COL_BACKWARD,
    COL_BUSY,
    COL_FORWARD,
    COL_MEMORY,
    COL_OOM_EXCESS,
    COL_SEND,
)

__all__ = ["FORMAT", "SimResult", "StageResult", "TimelineEvent", "throughput_upper_bound"]

FORMAT = "pipeenv.result/v1"


@lru_cache(maxsize=128)
def throughput_upper_bound(graph: OperatorGraph, cluster: Cluster) -> float:
    """SPEC §5: ``microbatch_size * sum_d speed[d] / sum_i (f_i + b_i)`` samples per second."""
    total = graph.total_compute_s
    if total <= 0.0:
        return float("inf")
    return graph.microbatch_size * float(cluster.speed.sum()) / total


@dataclass(frozen=True)
class StageResult:
    """One stage's figures (replica 0 for device, times and busy time)."""

    stage: int
    device: int
    forward_s: float
    backward_s: float
    send_bytes: float
    busy_s: float
    peak_memory_bytes: float
    oom: bool
    oom_excess_bytes: float
    allreduce_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "device": self.device,
            "forward_s": self.forward_s,
            "backward_s": self.backward_s,
            "send_bytes": plain_number(self.send_bytes),
            "busy_s": self.busy_s,
            "peak_memory_bytes": plain_number(self.peak_memory_bytes),
            "oom": self.oom,
            "oom_excess_bytes": plain_number(self.oom_excess_bytes),
            "allreduce_s": self.allreduce_s,
        }


@dataclass(frozen=True)
class TimelineEvent:
    """One op or transfer: ``kind`` is forward, backward, send_forward (stage -> stage+1),
    send_backward (stage+1 -> stage) or allreduce; ``device`` is the one that runs or sends it."""

    replica: int
    kind: str
    stage: int
    microbatch: int
    device: int
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "kind": self.kind,
            "stage": self.stage,
            "microbatch": self.microbatch,
            "device": self.device,
            "start": self.start,
            "end": self.end,
        }


class SimResult:
    """The outcome of one simulated iteration (SPEC §4, §6).

    Scalars are plain attributes; per-stage records are built on first access, so that a
    simulation inside an RL loop costs only what it reads. ``feasible`` is False when a stage is
    out of memory; the timing is reported all the same. ``timeline`` is None unless requested.
    """

    __slots__ = (
        "_stage_table",
        "_stages",
        "bubble_fraction",
        "devices",
        "efficiency",
        "feasible",
        "iteration_s",
        "throughput_samples_per_s",
        "timeline",
    )

    def __init__(
        self,
        *,
        iteration_s: float,
        throughput_samples_per_s: float,
        bubble_fraction: float,
        efficiency: float,
        feasible: bool,
        stage_table: np.ndarray | Sequence[StageResult],
        devices: Sequence[int] = (),
        timeline: tuple[TimelineEvent, ...] | None = None,
    ) -> None:
        self.iteration_s = iteration_s
        self.throughput_samples_per_s = throughput_samples_per_s
        self.bubble_fraction = bubble_fraction
        self.efficiency = efficiency
        self.feasible = feasible
        self.devices = devices
        self.timeline = timeline
        self._stage_table = stage_table
        self._stages: tuple[StageResult, ...] | None = None

    @property
    def stages(self) -> tuple[StageResult, ...]:
        """Per-stage records, stage 0 first."""
        if self._stages is None:
            table = self._stage_table
            if isinstance(table, np.ndarray):
                self._stages = tuple(
                    StageResult(
                        stage=s,
                        device=int(self.devices[s]),
                        forward_s=float(row[COL_FORWARD]),
                        backward_s=float(row[COL_BACKWARD]),
                        send_bytes=float(row[COL_SEND]),
                        busy_s=float(row[COL_BUSY]),
                        peak_memory_bytes=float(row[COL_MEMORY]),
                        oom=bool(row[COL_OOM_EXCESS] > 0.0),
                        oom_excess_bytes=float(row[COL_OOM_EXCESS]),
                        allreduce_s=float(row[COL_ALLREDUCE]),
                    )
                    for s, row in enumerate(table)
                )
            else:
                self._stages = tuple(table)
        return self._stages

    @property
    def oom_stages(self) -> list[int]:
        """Stages that do not fit in memory."""
        return [s.stage for s in self.stages if s.oom]

    def to_dict(self) -> dict[str, Any]:
        """The result as a ``pipeenv.result/v1`` dict (timeline included when computed)."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "iteration_s": self.iteration_s,
            "throughput_samples_per_s": self.throughput_samples_per_s,
            "bubble_fraction": self.bubble_fraction,
            "efficiency": self.efficiency,
            "feasible": self.feasible,
            "stages": [s.to_dict() for s in self.stages],
        }
        if self.timeline is not None:
            d["timeline"] = [e.to_dict() for e in self.timeline]
        return d

    def __repr__(self) -> str:
        return (
            f"SimResult(iteration_s={self.iteration_s:.6g}, "
            f"throughput={self.throughput_samples_per_s:.6g}/s, feasible={self.feasible})"
        )
