"""Measured costs: forward and backward time of a node, or of a whole model, on a real device.

Times are medians of ``repeats`` runs after ``warmup`` untimed ones; on CUDA the device is
synchronised around each run. The clock is the wall clock, or, with ``timer="cpu"`` on a CPU
running torch on one thread, the CPU time of the calling thread: on a machine shared with other
work that is the time the run would take alone, where the wall clock also counts the time the
scheduler gave to others. A node runs on detached copies of the arguments of a
full forward pass, with the same ``requires_grad`` flags, so its backward does the work it does
in the whole model's backward: gradients of its inputs that need them and of the parameters it
uses.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pipeenv.errors import PipeenvError
from pipeenv.zoo.counting import detach_like, grad_targets
from pipeenv.zoo.trace import NodeCall

__all__ = ["TIMERS", "measure_model", "measure_node"]

TIMERS = ("wall", "cpu")


class _Clock:
    """A clock and the synchronisation that makes it see the device's work."""

    def __init__(self, device: torch.device, timer: str) -> None:
        if timer not in TIMERS:
            raise PipeenvError(f"profile: timer must be one of {', '.join(TIMERS)}, got {timer!r}")
        if timer == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
            raise PipeenvError("profile: timer 'cpu' needs device cpu and one torch thread")
        self.now = time.thread_time if timer == "cpu" else time.perf_counter
        self.sync: Callable[[], None] = (
            torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        )

    def median(self, fn: Callable[[], Any], repeats: int, warmup: int) -> float:
        samples = []
        for i in range(warmup + repeats):
            self.sync()
            start = self.now()
            fn()
            self.sync()
            if i >= warmup:
                samples.append(self.now() - start)
        return statistics.median(samples)


def measure_node(
    call: NodeCall,
    device: torch.device,
    *,
    repeats: int = 10,
    warmup: int = 3,
    timer: str = "wall",
) -> tuple[float, float]:
    """Measured (forward_s, backward_s) of one node: median of ``repeats`` after ``warmup``.

    The forward runs with autograd recording, as in training; the backward computes the
    gradients of the node's inputs that need them and of the parameters it uses.
    """
    clock = _Clock(device, timer)
    if call.node.op == "placeholder":
        return 0.0, 0.0
    args, kwargs = detach_like((call.args, call.kwargs))
    forward_s = clock.median(lambda: call.fn(*args, **kwargs), repeats, warmup)
    outs, seeds, wrt = grad_targets(call.fn(*args, **kwargs))
    if not (outs and wrt):
        return forward_s, 0.0
    backward_s = clock.median(
        lambda: torch.autograd.grad(outs, wrt, seeds, retain_graph=True, allow_unused=True),
        repeats,
        warmup,
    )
    return forward_s, backward_s


def measure_model(
    model: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    *,
    repeats: int = 10,
    warmup: int = 3,
    timer: str = "wall",
) -> tuple[float, float]:
    """Measured (forward_s, backward_s) of the whole model, medians as in :func:`measure_node`.

    The backward seeds the output with ones and computes every parameter's gradient.
    """
    clock = _Clock(device, timer)
    params = [p for p in model.parameters() if p.requires_grad]
    forward_s = clock.median(lambda: model(*inputs), repeats, warmup)
    output = model(*inputs)
    seed = torch.ones_like(output)
    backward_s = clock.median(
        lambda: torch.autograd.grad(output, params, seed, retain_graph=True), repeats, warmup
    )
    return forward_s, backward_s
