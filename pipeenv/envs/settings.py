"""Arguments of the environments: checks that name the argument and rule, and the settings of
one episode (the constructor's, with ``reset(options=...)`` applied)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeenv.cluster import Cluster
from pipeenv.errors import PipeenvError

__all__ = ["OPTION_KEYS", "Settings", "float_arg", "int_arg"]

#: The arguments ``reset(options=...)`` may override for one episode.
OPTION_KEYS = (
    "graph",
    "cluster",
    "num_stages",
    "microbatches",
    "schedule",
    "data_parallel",
    "max_nodes",
    "reward",
)


def int_arg(where: str, name: str, value: Any, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum``, else a PipeenvError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise PipeenvError(f"{where}: argument '{name}' must be an integer, got {value!r}")
    if value < minimum:
        raise PipeenvError(f"{where}: argument '{name}' must be >= {minimum}, got {value}")
    return int(value)


def float_arg(where: str, name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number >= 0, else a PipeenvError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise PipeenvError(f"{where}: argument '{name}' must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise PipeenvError(f"{where}: argument '{name}' must be finite and >= 0, got {value}")
    return float(value)


@dataclass(frozen=True)
class Settings:
    """The pipeline of one episode: stages, microbatches, schedule, replicas, reward, target."""

    cluster: Cluster
    num_stages: int
    microbatches: int
    schedule: str
    data_parallel: int
    max_nodes: int
    reward: str

    @property
    def devices(self) -> tuple[int, ...]:
        """Replica r of stage s runs on device ``r * num_stages + s`` (SPEC §3)."""
        return tuple(range(self.num_stages * self.data_parallel))
