"""Measured costs: forward and backward time of every node, or of a whole model, on a real device.

Nodes are timed where they run in training, inside whole-model passes, as PipeDream's profiler
does (Narayanan et al., "PipeDream: Generalized Pipeline Parallelism for DNN Training", SOSP 2019,
§3.1): a node timed alone, repeated on the same inputs, finds its inputs and weights in cache
and runs faster than in sequence. Each pass

1. runs the traced model through an :class:`fx.Interpreter` that reads the clock around each
   node (forward time of the node);
2. finds the autograd nodes each fx node created (those reachable from its outputs and not from
   an earlier node's, with the ``AccumulateGrad`` of the parameters it reaches first);
3. runs the real backward of the whole model (output seeded with ones, every parameter's
   gradient accumulated as in training) with a pre-hook on each of those autograd nodes. The
   pre-hooks cut the backward into spans, one per autograd node run, each charged to the fx
   node that owns it, so the backward times of the nodes add up to the whole backward.

Per node, the medians of ``repeats`` passes after ``warmup`` untimed ones are kept. Python's
garbage collector is paused during the passes (as :mod:`timeit` does, and as the validator's
ranks do), so no node is charged for a collection of garbage it did not make. The clock is
the wall clock, or, with ``timer="cpu"`` on a CPU running torch on one thread, the CPU time of
the calling thread (the CPU autograd engine runs on it too): on a machine shared with other work
that is the time the run would take alone, where the wall clock also counts the time the
scheduler gave to others. On CUDA the marks are CUDA events on the current stream.

On a CPU, glibc hands large blocks back to the kernel when they are freed, and the next
allocation faults its pages in again (zeroed): ~2 µs per 4 KiB page, up to half of a small
convolution stage's time, and more or less of it depending on the order in which microbatches
allocate and free (a forward after another forward faults, one after a backward does not). So
the time of a node would depend on the schedule it ran in. :func:`keep_freed_memory` makes the
process keep and reuse freed memory instead, as torch's CUDA caching allocator does on GPUs;
CPU profiles call it, and so do the validator's ranks.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx as fx
from torch.utils._pytree import tree_leaves

from pipeenv.errors import PipeenvError

__all__ = ["TIMERS", "NodeTimes", "keep_freed_memory", "measure_model", "measure_nodes"]

TIMERS = ("wall", "cpu")

#: Per fx node name: (forward_s, backward_s).
NodeTimes = dict[str, tuple[float, float]]


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> int:
    """Make this process keep the memory it frees for reuse (glibc: no ``mmap`` for blocks
    below a large threshold, no trimming of the heap), so steady-state CPU compute no longer
    faults pages in.

    Process-wide and permanent: the process's resident memory stays at its peak.

    :returns: the size in bytes below which blocks are now kept (1 GiB, or 32 MiB on a glibc
        that refuses more); 0, with nothing changed, where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return 0
    if mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return 0
    for threshold in (1 << 30, 32 << 20):  # the largest glibc accepts varies with its version
        if mallopt(_M_MMAP_THRESHOLD, threshold) == 1:
            return threshold
    return 0


class _Clock:
    """Marks in time on a device (floats on CPU, CUDA events) and the seconds between two."""

    def __init__(self, device: torch.device, timer: str) -> None:
        if timer not in TIMERS:
            raise PipeenvError(f"profile: timer must be one of {', '.join(TIMERS)}, got {timer!r}")
        if timer == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
            raise PipeenvError("profile: timer 'cpu' needs device cpu and one torch thread")
        self.cuda = device.type == "cuda"
        self.now = time.thread_time if timer == "cpu" else time.perf_counter

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self.now()

    def seconds(self, start: Any, end: Any) -> float:
        """Seconds from ``start`` to ``end`` (on CUDA after :meth:`sync`)."""
        if self.cuda:
            return float(start.elapsed_time(end)) / 1e3
        return float(end - start)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@contextmanager
def _grads_kept(module: torch.nn.Module) -> Iterator[None]:
    """Let the timed passes accumulate gradients, then give the parameters theirs back; the
    garbage collector is paused meanwhile (and restored as it was)."""
    saved = [(p, p.grad) for p in module.parameters()]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with torch.enable_grad():
            yield
    finally:
        if was_enabled:
            gc.enable()
        for param, grad in saved:
            param.grad = grad


class _TimedInterpreter(fx.Interpreter):
    """Runs a GraphModule node by node, marking the clock around each node's call (the
    arguments are looked up outside the marks) and keeping its outputs' autograd nodes."""

    def __init__(self, gm: fx.GraphModule, clock: _Clock) -> None:
        super().__init__(gm)
        self.clock = clock
        self.marks: dict[str, tuple[Any, Any]] = {}
        self.grad_fns: dict[str, list[Any]] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_module":
            fn = self.fetch_attr(str(n.target))
        elif n.op == "call_method":
            fn = getattr(args[0], str(n.target))
            args = args[1:]
        else:
            fn = n.target
        start = self.clock.mark()
        result = fn(*args, **kwargs)
        self.marks[n.name] = (start, self.clock.mark())
        self.grad_fns[n.name] = [
            t.grad_fn
            for t in tree_leaves(result)
            if isinstance(t, torch.Tensor) and t.grad_fn is not None
        ]
        return result


def _owners(grad_fns: dict[str, list[Any]]) -> dict[Any, str]:
    """Each autograd node reachable from the outputs, with the first fx node that reaches it.

    ``grad_fns`` is in forward order, so a node reaches first what it created itself and the
    ``AccumulateGrad`` of the parameters it (or, for a tied weight, its first user) owns.
    """
    owner: dict[Any, str] = {}
    for name, roots in grad_fns.items():
        stack = list(roots)
        while stack:
            fn = stack.pop()
            if fn in owner:
                continue
            owner[fn] = name
            stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return owner


def _backward_times(clock: _Clock, output: Any, owner: dict[Any, str]) -> dict[str, float]:
    """Run the whole backward with a pre-hook on every owned autograd node; seconds per fx node.

    The pre-hooks cut the backward into spans, each from an autograd node's start to the next
    one's (or the end), which is charged to the fx node that owns it: the node's work and the
    engine's bookkeeping after it. One hook per autograd node rather than two halves the
    hooks' own cost, which lands in the spans.
    """
    events: list[tuple[Any, str]] = []
    handles = []
    for fn, name in owner.items():

        def pre(grad_outputs: Any, name: str = name) -> None:
            events.append((clock.mark(), name))

        handles.append(fn.register_prehook(pre))
    outs = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad]
    seeds = [torch.ones_like(t) for t in outs]
    clock.sync()
    start = clock.mark()
    torch.autograd.backward(outs, seeds)
    end = clock.mark()
    clock.sync()
    for handle in handles:
        handle.remove()
    times: dict[str, float] = {}
    if not events:
        return times
    times[events[0][1]] = clock.seconds(start, events[0][0])
    for (mark, name), (following, _) in zip(events, [*events[1:], (end, "")], strict=True):
        times[name] = times.get(name, 0.0) + clock.seconds(mark, following)
    return times


def measure_nodes(
    gm: fx.GraphModule,
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    *,
    repeats: int = 10,
    warmup: int = 3,
    timer: str = "wall",
) -> NodeTimes:
    """Measured (forward_s, backward_s) of every fx node but ``output``, timed in whole passes.

    Medians over ``repeats`` forward+backward passes after ``warmup`` untimed ones; placeholders
    take no time, a node without autograd nodes (sizes, integer arithmetic) no backward time.

    :param gm: the traced model (:func:`~pipeenv.zoo.trace.trace`), in training mode, on
        ``device``; each pass starts with ``.grad`` unset, as after ``zero_grad``, and the
        parameters get their gradients back at the end.
    :param inputs: a microbatch of inputs on ``device``.
    :param device: where it runs (cpu or cuda).
    :param repeats: timed passes.
    :param warmup: untimed passes first.
    :param timer: ``wall`` or ``cpu`` (see the module docstring).
    :raises PipeenvError: for an unknown timer, or ``cpu`` without one torch thread on cpu.
    """
    clock = _Clock(device, timer)
    if device.type == "cpu":
        keep_freed_memory()
    names = [n.name for n in gm.graph.nodes if n.op != "output"]
    forward: dict[str, list[float]] = {name: [] for name in names}
    backward: dict[str, list[float]] = {name: [] for name in names}
    with _grads_kept(gm):
        for i in range(warmup + repeats):
            gm.zero_grad(set_to_none=True)
            interpreter = _TimedInterpreter(gm, clock)
            clock.sync()
            output = interpreter.run(*inputs)
            clock.sync()
            owner = _owners(interpreter.grad_fns)
            backward_s = _backward_times(clock, output, owner)
            interpreter.grad_fns.clear()
            del output, owner
            if i < warmup:
                continue
            for name in names:
                marks = interpreter.marks.get(name)
                forward[name].append(clock.seconds(*marks) if marks else 0.0)
                backward[name].append(backward_s.get(name, 0.0))
    return {
        name: (statistics.median(forward[name]), statistics.median(backward[name]))
        for name in names
    }


def measure_model(
    model: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    *,
    repeats: int = 10,
    warmup: int = 3,
    timer: str = "wall",
) -> tuple[float, float]:
    """Measured (forward_s, backward_s) of the whole model, medians as in :func:`measure_nodes`.

    Each pass times the forward, then the backward, as a training step runs them (a forward
    repeated alone would find its weights and activations in cache). The backward seeds the
    output with ones and accumulates every parameter's gradient from ``None``, as after
    ``zero_grad`` in training; the parameters get their gradients back at the end.
    """
    clock = _Clock(device, timer)
    if device.type == "cpu":
        keep_freed_memory()
    forward, backward = [], []
    with _grads_kept(model):
        for i in range(warmup + repeats):
            model.zero_grad(set_to_none=True)
            clock.sync()
            start = clock.mark()
            output = model(*inputs)
            middle = clock.mark()
            seed = torch.ones_like(output)
            clock.sync()
            restart = clock.mark()
            output.backward(seed)
            end = clock.mark()
            clock.sync()
            if i >= warmup:
                forward.append(clock.seconds(start, middle))
                backward.append(clock.seconds(restart, end))
            del output
    return statistics.median(forward), statistics.median(backward)
