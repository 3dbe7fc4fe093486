"""The validator: replay a plan with ``torch.distributed.pipelining`` and check the simulator.

:func:`validate` lowers the plan onto the zoo model (:mod:`~pipeenv.validate.lowering`), runs it
one process per stage replica (:mod:`~pipeenv.validate.launch` starts them,
:mod:`~pipeenv.validate.runner` is one rank), checks loss and gradients
against the plain model, and compares the measured times with the simulator's prediction on a
cached local profile (:mod:`~pipeenv.validate.prediction`), in a
:class:`~pipeenv.validate.report.ValidationReport`. Under ``torchrun`` (several hosts) the same
function runs as one rank of the job; rank 0 returns the report, the others None.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeenv.errors import PipeenvError
from pipeenv.plan import Plan
from pipeenv.validate.report import FORMAT, ValidationReport

__all__ = ["FORMAT", "ValidationReport", "under_torchrun", "validate"]

BACKENDS = ("gloo", "nccl")
DEVICES = ("cpu", "cuda")


def under_torchrun() -> bool:
    """True in a process started by ``torchrun`` (it sets ``TORCHELASTIC_RUN_ID``)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def validate(
    model: str,
    plan: Plan,
    *,
    backend: str = "gloo",
    device: str = "cpu",
    microbatch_size: int | None = None,
    iters: int = 10,
    warmup: int = 3,
    timeout_s: float = 300.0,
    threads: int = 1,
    cluster: str | Path | None = None,
    refresh_profile: bool = False,
) -> ValidationReport | None:
    """Run ``plan`` on zoo model ``model`` for real and report numerics and timing.

    :param backend: ``gloo`` (CPU or GPU) or ``nccl`` (GPU).
    :param device: ``cpu`` or ``cuda``.
    :param microbatch_size: samples per microbatch (the model's default when None).
    :param iters: timed iterations; ``warmup``: untimed ones first (the first of them is the
        numerics check).
    :param timeout_s: limit for the whole run; every rank is stopped when it is exceeded.
    :param threads: torch threads per rank (1 matches the ``cpu-N`` presets).
    :param cluster: cluster for the prediction (default: ``cpu-N`` on CPU; required on GPUs).
    :param refresh_profile: profile the model again even when a cached profile exists.
    :returns: the report (None on ranks other than 0 under torchrun).
    :raises PipeenvError: when the plan does not fit the model (unknown ids, wrong graph hash,
        SPEC §3), the options are invalid, a rank fails or the run times out.
    """
    from pipeenv import zoo
    from pipeenv.simulator import simulate
    from pipeenv.validate.launch import launch
    from pipeenv.validate.lowering import spec_boundaries
    from pipeenv.validate.prediction import cached_profile, host_cluster, stage_replay
    from pipeenv.validate.runner import RunConfig, run_rank

    if backend not in BACKENDS:
        raise PipeenvError(f"validate: unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if device not in DEVICES:
        raise PipeenvError(f"validate: unknown device {device!r} (known: {', '.join(DEVICES)})")
    if backend == "nccl" and device != "cuda":
        raise PipeenvError("validate: backend 'nccl' needs --device cuda")
    if iters < 1 or warmup < 0 or timeout_s <= 0 or threads < 1:
        raise PipeenvError("validate: need iters >= 1, warmup >= 0, timeout > 0, threads >= 1")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PipeenvError("validate: --device cuda requested but CUDA is not available")
        if not under_torchrun() and max(plan.devices) >= torch.cuda.device_count():
            raise PipeenvError(
                f"validate: the plan uses GPU {max(plan.devices)}, this host has "
                f"{torch.cuda.device_count()} (use torchrun for several hosts)"
            )
    mb = zoo.spec(model).microbatch_size if microbatch_size is None else microbatch_size
    graph = zoo.load(model, microbatch_size=mb)
    prediction_cluster = host_cluster(plan, device, cluster)
    plan.validate(graph, prediction_cluster)
    if plan.microbatches < plan.num_stages:
        raise PipeenvError(
            f"validate: torch's {plan.schedule} schedule needs microbatches >= num_stages, the "
            f"plan has {plan.microbatches} < {plan.num_stages}"
        )
    config = RunConfig(
        model, plan.to_dict(), backend, device, mb, iters, warmup, float(timeout_s), threads
    )
    if under_torchrun():
        result = run_rank(config, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://")
        if result is None:
            return None
        measurement: dict[str, Any] = asdict(result)
    else:
        with tempfile.TemporaryDirectory(prefix="pipeenv-validate-") as work_dir:
            measurement = asdict(launch(config, work_dir))
    profile = cached_profile(model, device, mb, threads, refresh=refresh_profile)
    predicted_result = simulate(profile, prediction_cluster, plan, timeline=True)
    replayed = stage_replay(
        plan,
        prediction_cluster,
        profile,
        predicted_result,
        measurement["stage_forward_s"],
        measurement["stage_backward_s"],
    )
    spec_sets = spec_boundaries(graph, plan.stage_of, plan.num_stages)
    lowering = {
        "boundaries": spec_sets,
        "tied": measurement["tied"],
        "unaccounted": measurement["unaccounted"],
    }
    return ValidationReport.build(
        model=model,
        microbatch_size=mb,
        plan_doc=plan.to_dict(),
        graph_hash=graph.graph_hash,
        measurement=measurement,
        predicted=predicted_result.to_dict(),
        replayed_iteration_s=replayed.iteration_s,
        cluster=prediction_cluster.name,
        profile_source=profile.source,
        lowering=lowering,
    )
