"""What the simulator predicts for a validation run: a cached local profile on a host cluster.

The prediction the validator checks is ``simulate(profile, cluster, plan)`` (SPEC §4), where
``profile`` is the model measured node by node on the same device, at the same microbatch size
and thread count as the ranks (:func:`pipeenv.zoo.profile`), and ``cluster`` describes this host:
the ``cpu-N`` preset on CPU, or a cluster file the user measured on GPUs. Profiles are cached as
``pipeenv.graph/v1`` JSON under ``$PIPEENV_CACHE_DIR`` (default ``~/.cache/pipeenv``), keyed by
model, device, microbatch size, threads and torch version.

:func:`stage_replay` splits a validation's error in two: it runs SPEC §4 again on the stage times
the ranks measured instead of the profile's. Where the profile was wrong, the replay moves
toward the measurement; what remains between replay and measurement is what SPEC §4 does not
model in the runtime (hand-offs that hold the sending rank, receives posted only when the
schedule reaches them, Python between ops).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from pipeenv.cluster import CPU_RANK_MEM, Cluster, Device, load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.plan import Plan
from pipeenv.simulator import SimResult, simulate

__all__ = ["cache_dir", "cached_profile", "host_cluster", "stage_replay"]


def cache_dir() -> Path:
    """``$PIPEENV_CACHE_DIR``, else ``~/.cache/pipeenv``."""
    return Path(os.environ.get("PIPEENV_CACHE_DIR") or Path.home() / ".cache" / "pipeenv")


def _device_key(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        import platform

        name = f"cpu-{platform.machine()}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def cached_profile(
    model: str, device: str, microbatch_size: int, threads: int = 1, *, refresh: bool = False
) -> OperatorGraph:
    """The measured operator graph of zoo ``model`` on ``device`` (profiled once, then cached).

    :param threads: torch intra-op threads while profiling (the ranks' count).
    :param refresh: measure again even when cached.
    """
    import torch

    from pipeenv import zoo

    key = (
        f"{model}-{_device_key(device)}-mb{microbatch_size}-t{threads}-"
        f"torch{torch.__version__.replace('+', '_')}"
    )
    path = cache_dir() / "profiles" / f"{key}.json"
    if path.exists() and not refresh:
        return OperatorGraph.load(path)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        graph = zoo.profile(model, device, microbatch_size)
    finally:
        torch.set_num_threads(before)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    graph.save(tmp)
    tmp.replace(path)
    return graph


def host_cluster(plan: Plan, device: str, cluster: str | Path | None = None) -> Cluster:
    """The cluster the prediction runs on.

    :param cluster: a preset name or cluster file; by default ``cpu-N`` on CPU (N the number of
        devices the plan needs: the preset when one exists, else the same link with N devices).
    :raises PipeenvError: on CUDA without ``cluster`` (there is no preset for an unknown GPU host).
    """
    if cluster is not None:
        return load_cluster(cluster)
    if device != "cpu":
        raise PipeenvError(
            "validate: on GPUs pass --cluster, a cluster file with this host's measured links "
            "(speed 1.0 = the profiled GPU)"
        )
    count = max(max(plan.devices) + 1, len(plan.devices))
    try:
        return load_cluster(f"cpu-{count}")
    except PipeenvError:
        link = load_cluster("cpu-2").intra_node
        devices = [Device(f"cpu-{i}", 0, 1.0, CPU_RANK_MEM, "cpu") for i in range(count)]
        return Cluster(f"cpu-{count}", devices, link)


def stage_replay(
    plan: Plan,
    cluster: Cluster,
    profile: OperatorGraph,
    predicted: SimResult,
    forward_s: Sequence[float],
    backward_s: Sequence[float],
) -> SimResult:
    """SPEC §4 on measured stage times: ``plan`` simulated with stage ``s`` taking
    ``forward_s[s]`` and ``backward_s[s]`` per microbatch (seconds on its replica-0 device) and
    everything else as in ``predicted`` (the boundary bytes ``X_s``, relays included) and
    ``profile`` (parameter bytes), on the same cluster.

    The stages become a chain of one node each (node ``s`` sends ``X_s``), which SPEC §4 times
    exactly as the plan's stages.
    """
    params = [0.0] * plan.num_stages
    kept = [0.0] * plan.num_stages
    for nid, s in plan.stage_of.items():
        params[s] += profile.node(nid).param_bytes
        kept[s] += profile.node(nid).kept_bytes
    nodes = [
        Node(
            id=f"stage{s}",
            op="stage",
            forward_s=float(forward_s[s]) * cluster.devices[plan.devices[s]].speed,
            backward_s=float(backward_s[s]) * cluster.devices[plan.devices[s]].speed,
            output_bytes=predicted.stages[s].send_bytes,
            param_bytes=params[s],
            activation_bytes=kept[s],
        )
        for s in range(plan.num_stages)
    ]
    chain = OperatorGraph(
        f"{profile.name}-stages",
        nodes,
        [(f"stage{s}", f"stage{s + 1}") for s in range(plan.num_stages - 1)],
        microbatch_size=profile.microbatch_size,
        source="measured stage times",
    )
    replay = Plan(
        {f"stage{s}": s for s in range(plan.num_stages)},
        num_stages=plan.num_stages,
        devices=list(plan.devices),
        data_parallel=plan.data_parallel,
        microbatches=plan.microbatches,
        schedule=plan.schedule,
        graph=chain.name,
        graph_hash=chain.graph_hash,
    )
    return simulate(chain, cluster, replay)
