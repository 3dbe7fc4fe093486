"""One rank of a validation: ``torch.distributed.pipelining`` stage, schedule, timing, numerics.

One process (rank) per stage replica: replica r of stage s is rank ``r * S + s``, as device
``devices[r * S + s]`` of the plan (SPEC §3). Each rank builds the zoo model from its fixed seed,
lowers the plan (:mod:`pipeenv.validate.lowering`), keeps its stage, wraps it in a
``PipelineStage`` and runs the plan's schedule (``ScheduleGPipe`` or ``Schedule1F1B``) on its
replica's share of one fixed batch. After each step the stages that share a tied weight sum its
gradient, and the replicas of each stage average their gradients (all-reduce).

Iteration 0 is the numerics check: rank 0 gathers loss and gradients and compares them with the
plain model (:mod:`pipeenv.validate.numerics`). Timing: ``warmup`` iterations, then
the median of ``iters`` iteration times (each rank's time from a common barrier to the end of its
gradient all-reduce; the slowest rank counts) and of each stage's forward and backward compute
time per microbatch (``forward_one_chunk`` / ``backward_one_chunk``, communication waits
excluded). Every rank also keeps the start and end of each of its forward and backward ops in
the median iteration (the measured timeline, times from the rank's own exit from the barrier).
Python's garbage collector is frozen and paused from the first iteration on, as the profiler
pauses it, so that neither side times a collection of the other's garbage; and each rank keeps
the memory it frees (:func:`pipeenv.zoo.measure.keep_freed_memory`), as the profiler does, so
that no op pays for faulting in pages a previous op handed back.

:func:`run_rank` is the code of one rank, the same whether :func:`pipeenv.validate.launch.launch`
started it on this host or ``torchrun`` across hosts.
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from pipeenv.errors import PipeenvError
from pipeenv.plan import Plan
from pipeenv.validate.lowering import LoweredPlan, lower
from pipeenv.validate.numerics import batch, check_numerics, reference_gradients
from pipeenv.zoo.measure import keep_freed_memory

__all__ = ["Measurement", "RunConfig", "run_rank"]


@dataclass(frozen=True)
class RunConfig:
    """What to run.

    :param model: zoo model name.
    :param plan: the plan as a ``pipeenv.plan/v1`` dict.
    :param backend: ``gloo`` or ``nccl``.
    :param device: ``cpu`` or ``cuda``.
    :param microbatch_size: samples per microbatch.
    :param iters: timed iterations (>= 1).
    :param warmup: untimed iterations before them (>= 0); iteration 0 is the numerics check.
    :param timeout_s: limit for the whole run and for any collective.
    :param threads: torch intra-op threads per rank.
    """

    model: str
    plan: dict[str, Any]
    backend: str = "gloo"
    device: str = "cpu"
    microbatch_size: int = 8
    iters: int = 10
    warmup: int = 3
    timeout_s: float = 300.0
    threads: int = 1


@dataclass(frozen=True)
class Measurement:
    """What the ranks measured (filled on rank 0).

    :param iteration_s: median iteration time (seconds).
    :param iteration_samples_s: every timed iteration's time.
    :param stage_forward_s: per stage, median forward compute time per microbatch (replica 0).
    :param stage_backward_s: per stage, median backward compute time per microbatch.
    :param stage_forward_cpu_s: the same forward times in CPU seconds of the rank's thread
        (on a CPU host shared with other processes, the part of the wall time it computed).
    :param stage_backward_cpu_s: likewise for the backward.
    :param loss: mean microbatch loss of iteration 0.
    :param reference_loss: the plain model's.
    :param numerics: per-tensor check (see :func:`check_numerics`).
    :param environment: torch version, backend, devices, thread counts, hosts.
    :param tied: weights shared across stages (``name``, ``owner``, ``stages``).
    :param unaccounted: ``[node id, boundary]`` relayed beyond SPEC §4's boundary sets.
    :param timeline: the ops of the median iteration on every rank, as the simulator's timeline
        events (``replica``, ``kind`` forward/backward, ``stage``, ``microbatch``, ``device``,
        ``start``, ``end``; seconds from the rank's exit from the iteration's barrier).
    :param stage_busy_s: per stage, the compute time of replica 0 in the median iteration.
    """

    iteration_s: float
    iteration_samples_s: list[float]
    stage_forward_s: list[float]
    stage_backward_s: list[float]
    stage_forward_cpu_s: list[float]
    stage_backward_cpu_s: list[float]
    loss: float
    reference_loss: float
    numerics: dict[str, Any]
    environment: dict[str, Any]
    tied: list[dict[str, Any]]
    unaccounted: list[list[Any]]
    timeline: list[dict[str, Any]]
    stage_busy_s: list[float]


# ------------------------------------------------------------------------------------ helpers
def _device(config: RunConfig, local_rank: int, plan: Plan, rank: int) -> torch.device:
    if config.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PipeenvError(f"validate: device {config.device!r} requested but CUDA is absent")
    # Under torchrun each host numbers its GPUs by LOCAL_RANK; on one host the plan's devices.
    index = local_rank if "LOCAL_RANK" in os.environ else plan.devices[rank]
    if index >= torch.cuda.device_count():
        raise PipeenvError(
            f"validate: rank {rank} needs cuda:{index}, this host has "
            f"{torch.cuda.device_count()} GPUs"
        )
    return torch.device("cuda", index)


def _set_determinism(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _flat_allreduce_mean(grads: list[torch.Tensor], group: Any, size: int) -> None:
    if not grads or size == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat.div_(size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


# ------------------------------------------------------------------------------------ one rank
def _stage_examples(lowered: Any, example: tuple[torch.Tensor, ...]) -> list[tuple[Any, Any]]:
    """Example (inputs, outputs) of every stage with the right requires_grad, for static
    PipelineStage metadata; buffers are restored so the run starts from the seeded state."""
    modules = lowered.modules
    saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    examples = []
    values: tuple[torch.Tensor, ...] = example
    with torch.enable_grad():
        for module in modules:
            inputs = tuple(v.detach().requires_grad_(v.requires_grad) for v in values)
            out = module(*inputs)
            outs = out if isinstance(out, tuple) else (out,)
            outputs = tuple(o.detach().requires_grad_(o.requires_grad) for o in outs)
            examples.append((inputs, outputs if len(outputs) > 1 else outputs[0]))
            values = outputs
    with torch.no_grad():
        for b, v in saved:
            b.copy_(v)
    return examples


def run_rank(config: RunConfig, rank: int, world_size: int, init_method: str) -> Measurement | None:
    """Everything one rank does; returns the :class:`Measurement` on rank 0, None elsewhere.

    :param init_method: ``tcp://host:port`` (local launch) or ``env://`` (torchrun).
    :raises PipeenvError: when the world size does not match the plan or the numerics fail to
        be gathered.
    """
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from pipeenv import zoo

    plan = Plan.from_dict(config.plan)
    num_stages, replicas, m = plan.num_stages, plan.data_parallel, plan.microbatches
    if world_size != num_stages * replicas:
        raise PipeenvError(
            f"validate: {world_size} ranks, the plan needs num_stages x data_parallel = "
            f"{num_stages * replicas}"
        )
    stage, replica = rank % num_stages, rank // num_stages
    kept_freed_memory = keep_freed_memory() > 0  # as the profiler does: no page faults per op
    _set_determinism(config.threads)
    device = _device(config, int(os.environ.get("LOCAL_RANK", rank)), plan, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        config.backend,
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=config.timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    try:
        pp_groups = [
            dist.new_group([r * num_stages + s for s in range(num_stages)]) for r in range(replicas)
        ]
        dp_groups = [
            dist.new_group([r * num_stages + s for r in range(replicas)]) for s in range(num_stages)
        ]
        gm, graph = zoo.traced(config.model, "cpu", config.microbatch_size)
        example = zoo.example_inputs(config.model, config.microbatch_size, "cpu")
        lowered = lower(gm, graph, plan, example)
        tied_groups = [
            [dist.new_group([r * num_stages + s for s in t.stages]) for r in range(replicas)]
            for t in lowered.tied
        ]
        examples = _stage_examples(lowered, example)
        module = lowered.modules[stage].to(device)
        ex_in, ex_out = examples[stage]

        def to_dev(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(device)
            return tuple(t.to(device) for t in x)

        pipe_stage = PipelineStage(
            module,
            stage,
            num_stages,
            device,
            input_args=to_dev(ex_in),
            output_args=to_dev(ex_out),
            group=pp_groups[replica],
        )
        fwd_times: list[float] = []
        bwd_times: list[float] = []
        fwd_cpu: list[float] = []
        bwd_cpu: list[float] = []
        ops: list[tuple[str, int, float, float]] = []  # this iteration's (kind, mb, start, end)
        began = [0.0]  # when this iteration left its barrier
        _time_method(pipe_stage, "forward_one_chunk", fwd_times, fwd_cpu, ops, "forward")
        _time_method(pipe_stage, "backward_one_chunk", bwd_times, bwd_cpu, ops, "backward")
        schedule_cls = ScheduleGPipe if plan.schedule == "gpipe" else Schedule1F1B
        schedule = schedule_cls(pipe_stage, m, loss_fn=zoo.loss_fn(config.model))
        inputs, targets = batch(config.model, config.microbatch_size, m * replicas, device)
        share = slice(
            replica * m * config.microbatch_size, (replica + 1) * m * config.microbatch_size
        )
        my_inputs, my_targets = tuple(t[share] for t in inputs), targets[share]
        params = [p for p in module.parameters() if p.requires_grad]
        tied_params = {
            id(gm.get_parameter(t.name)): groups[replica]
            for t, groups in zip(lowered.tied, tied_groups, strict=True)
            if stage in t.stages
        }

        def iteration() -> tuple[float, list[float]]:
            for p in params:
                p.grad = None
            losses: list[Any] = []
            dist.barrier(group=None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ops.clear()
            start = time.perf_counter()
            began[0] = start
            kwargs: dict[str, Any] = {"return_outputs": False}
            if stage == num_stages - 1:
                kwargs.update(target=my_targets, losses=losses)
            schedule.step(*(my_inputs if stage == 0 else ()), **kwargs)
            for p in params:
                if id(p) in tied_params and p.grad is not None:
                    dist.all_reduce(p.grad, group=tied_params[id(p)])
            _flat_allreduce_mean(
                [p.grad for p in params if p.grad is not None], dp_groups[stage], replicas
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start, [float(x.detach()) for x in losses]

        gc.collect()
        gc.freeze()  # the model, the stage and the schedule: never scanned again
        gc.disable()
        try:
            _, losses0 = iteration()
            owned = set(dict(module.body.named_parameters()))
            grads0 = (
                {
                    f"{name}": p.grad.detach().cpu().clone()
                    for name, p in _model_names(gm, module.body, owned).items()
                    if p.grad is not None
                }
                if replica == 0
                else {}
            )
            for _ in range(config.warmup - 1 if config.warmup > 0 else 0):
                iteration()
            for sink in (fwd_times, bwd_times, fwd_cpu, bwd_cpu):
                sink.clear()
            load_before = _load_average()
            durations, op_lists = [], []
            for _ in range(config.iters):
                durations.append(iteration()[0])
                op_lists.append([(k, mb, a - began[0], b - began[0]) for k, mb, a, b in ops])
        finally:
            gc.enable()
            gc.unfreeze()
        local = {
            "rank": rank,
            "stage": stage,
            "replica": replica,
            "device_index": plan.devices[rank],
            "durations": durations,
            "ops": op_lists,
            "forward": statistics.median(fwd_times) if fwd_times else 0.0,
            "backward": statistics.median(bwd_times) if bwd_times else 0.0,
            "forward_cpu": statistics.median(fwd_cpu) if fwd_cpu else 0.0,
            "backward_cpu": statistics.median(bwd_cpu) if bwd_cpu else 0.0,
            "cpu_share": (sum(fwd_cpu) + sum(bwd_cpu))
            / max(sum(fwd_times) + sum(bwd_times), 1e-12),
            "load_average": [load_before, _load_average()],
            "losses": losses0,
            "grads": grads0,
            "host": socket.gethostname(),
            "device": _device_name(device),
            "threads": torch.get_num_threads(),
            "keeps_freed_memory": kept_freed_memory,
        }
        gathered: list[Any] | None = [None] * world_size if rank == 0 else None
        dist.gather_object(local, gathered, dst=0)
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return None
    assert gathered is not None
    return _summarise(config, plan, gathered, device, lowered)


def _model_names(gm: torch.nn.Module, body: torch.nn.Module, owned: set[str]) -> dict[str, Any]:
    """The stage's own parameters under their names in the full model."""
    by_id = {id(p): name for name, p in gm.named_parameters()}
    return {by_id[id(p)]: p for name, p in body.named_parameters() if name in owned}


def _time_method(
    obj: Any,
    name: str,
    wall: list[float],
    cpu: list[float],
    ops: list[tuple[str, int, float, float]],
    kind: str,
) -> None:
    """Wrap ``obj.name`` (whose first argument is the microbatch index) to record its wall
    time, the CPU time of the calling thread (the share of a core the rank got: below 1 when the
    host's cores are oversubscribed) and ``(kind, microbatch, start, end)`` in ``ops``."""
    method = getattr(obj, name)

    def timed(chunk: int, *args: Any, **kwargs: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            return method(chunk, *args, **kwargs)
        finally:
            end = time.perf_counter()
            cpu.append(time.thread_time() - start_cpu)
            wall.append(end - start)
            ops.append((kind, int(chunk), start, end))

    setattr(obj, name, timed)


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def _summarise(
    config: RunConfig,
    plan: Plan,
    ranks: list[dict[str, Any]],
    device: torch.device,
    lowered: LoweredPlan,
) -> Measurement:
    num_stages = plan.num_stages
    iters = len(ranks[0]["durations"])
    # An iteration ends when its slowest rank is done.
    per_iter = [max(r["durations"][i] for r in ranks) for i in range(iters)]
    median_iter = sorted(range(iters), key=per_iter.__getitem__)[iters // 2]
    timeline = [
        {
            "replica": r["replica"],
            "kind": kind,
            "stage": r["stage"],
            "microbatch": mb,
            "device": r["device_index"],
            "start": start,
            "end": end,
        }
        for r in sorted(ranks, key=lambda r: r["rank"])
        for kind, mb, start, end in r["ops"][median_iter]
    ]
    by_stage = {r["stage"]: r for r in ranks if r["replica"] == 0}
    grads: dict[str, torch.Tensor] = {}
    for r in ranks:
        grads.update(r["grads"])
    losses = [x for r in ranks if r["stage"] == num_stages - 1 for x in r["losses"]]
    loss = sum(losses) / len(losses)
    ref_loss, reference = reference_gradients(config.model, plan, config.microbatch_size, device)
    numerics = check_numerics(grads, reference, loss, ref_loss)
    environment = {
        "torch": torch.__version__,
        "backend": config.backend,
        "device": config.device,
        "ranks": [
            {
                "rank": r["rank"],
                "stage": r["stage"],
                "replica": r["replica"],
                "host": r["host"],
                "device": r["device"],
                "threads": r["threads"],
                "keeps_freed_memory": r["keeps_freed_memory"],
            }
            for r in sorted(ranks, key=lambda r: r["rank"])
        ],
        "cpu_count": os.cpu_count(),
        "stage_cpu_share": [by_stage[s]["cpu_share"] for s in range(num_stages)],
        "load_average": [max(r["load_average"][i] for r in ranks) for i in (0, 1)],
        "config": {k: v for k, v in asdict(config).items() if k != "plan"},
    }
    return Measurement(
        iteration_s=statistics.median(per_iter),
        iteration_samples_s=per_iter,
        stage_forward_s=[by_stage[s]["forward"] for s in range(num_stages)],
        stage_backward_s=[by_stage[s]["backward"] for s in range(num_stages)],
        stage_forward_cpu_s=[by_stage[s]["forward_cpu"] for s in range(num_stages)],
        stage_backward_cpu_s=[by_stage[s]["backward_cpu"] for s in range(num_stages)],
        loss=loss,
        reference_loss=ref_loss,
        numerics=numerics,
        environment=environment,
        tied=[{"name": t.name, "owner": t.owner, "stages": list(t.stages)} for t in lowered.tied],
        unaccounted=[list(pair) for pair in lowered.unaccounted],
        timeline=timeline,
        stage_busy_s=[
            sum(end - start for _, _, start, end in by_stage[s]["ops"][median_iter])
            for s in range(num_stages)
        ],
    )
