"""Which devices run which stage: the candidate device layouts agents try.

A plan lists ``S * R`` devices; replica r of stage s runs on ``devices[r * S + s]`` (SPEC §3).
Two arrangements of an ordered device list are tried:

- **pipeline-major**: replica r's pipeline takes the r-th block of S consecutive devices, so
  stage-to-stage transfers stay within a block (a node, on the presets) and the all-reduce of a
  stage crosses blocks;
- **stage-major**: stage s's R replicas take the s-th block of R consecutive devices, so the
  all-reduce stays within a block and the transfers cross blocks.

Device orders tried: the cluster's own order, and (when speeds differ) fastest first, so that
``S * R`` smaller than the cluster uses its fastest devices. On a cluster of identical devices on
one node every layout simulates the same, and only the first is returned.
"""

from __future__ import annotations

import numpy as np

from pipeenv.cluster import Cluster

__all__ = ["default_devices", "device_layouts", "is_uniform"]


def is_uniform(cluster: Cluster) -> bool:
    """True when every device has the same speed and memory and all sit on one node."""
    return bool(
        np.all(cluster.speed == cluster.speed[0])
        and np.all(cluster.memory_bytes == cluster.memory_bytes[0])
        and cluster.num_nodes == 1
    )


def default_devices(num_stages: int, replicas: int) -> tuple[int, ...]:
    """The first ``S * R`` devices in the cluster's order, pipeline-major."""
    return tuple(range(num_stages * replicas))


def _arrange(
    order: list[int], num_stages: int, replicas: int, stage_major: bool
) -> tuple[int, ...]:
    if not stage_major:
        return tuple(order[: num_stages * replicas])
    return tuple(order[s * replicas + r] for r in range(replicas) for s in range(num_stages))


def device_layouts(cluster: Cluster, num_stages: int, replicas: int) -> list[tuple[int, ...]]:
    """Distinct candidate ``devices`` lists for S stages and R replicas (see module doc).

    :param cluster: the devices.
    :param num_stages: S.
    :param replicas: R (``S * R`` must not exceed the cluster's devices).
    """
    identity = list(range(cluster.num_devices))
    if is_uniform(cluster):
        return [default_devices(num_stages, replicas)]
    orders = [identity]
    if not np.all(cluster.speed == cluster.speed[0]):
        orders.append(sorted(identity, key=lambda d: -cluster.speed[d]))
    layouts: list[tuple[int, ...]] = []
    for order in orders:
        for stage_major in (False, True) if replicas > 1 else (False,):
            layout = _arrange(order, num_stages, replicas, stage_major)
            if layout not in layouts:
                layouts.append(layout)
    return layouts
