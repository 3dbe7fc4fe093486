"""The model zoo: real models as operator graphs, costed for a device.

``load(name)`` returns the shipped analytic graph of a model's default configuration in
milliseconds (``pipeenv/zoo/data/<name>.json``, written by :func:`regenerate` or
``python -m pipeenv.zoo``); another device preset re-costs the shipped counts, another
microbatch size or dtype traces the model on the meta device (seconds).

:func:`traced` gives the torch.fx GraphModule of a model together with its operator graph,
whose node ids are the fx node names (for lowering a plan onto the model), and
:func:`loss_fn`, :func:`example_inputs` and :func:`example_targets` what a training step needs.
:func:`profile` measures the per-node times on the local device instead.

Importing this module does not import torch; the functions that need it import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.zoo.costs import DTYPE_BYTES, DTYPES, get_device, retime
from pipeenv.zoo.models import MODELS, ModelSpec

if TYPE_CHECKING:
    import torch
    import torch.fx as fx
    from torch import nn

__all__ = [
    "DATA_DIR",
    "DEFAULT_DEVICE",
    "ModelSpec",
    "analytic_graph",
    "build_model",
    "example_inputs",
    "example_targets",
    "info",
    "load",
    "load_factory",
    "loss_fn",
    "names",
    "profile",
    "profile_module",
    "regenerate",
    "spec",
    "traced",
]

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_DEVICE = "a100"
_SEED = 0


def names() -> list[str]:
    """Names of the zoo's models, tiny ones first."""
    return list(MODELS)


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    :raises PipeenvError: for an unknown model.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise PipeenvError(f"zoo: unknown model {name!r} (known: {', '.join(MODELS)})") from None


def _config(
    name: str, microbatch_size: int | None, dtype: str | None
) -> tuple[ModelSpec, int, str]:
    model = spec(name)
    mb = model.microbatch_size if microbatch_size is None else microbatch_size
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1:
        raise PipeenvError(f"zoo: microbatch_size must be an integer >= 1, got {mb!r}")
    dt = model.dtype if dtype is None else dtype
    if dt not in DTYPES:
        raise PipeenvError(f"zoo: unknown dtype {dt!r} (known: {', '.join(DTYPES)})")
    return model, mb, dt


def build_model(name: str, device: str = "cpu", dtype: str | None = None) -> nn.Module:
    """Build model ``name`` in training mode, initialised from a fixed seed.

    :param device: ``"meta"`` builds without allocating weights (enough for costs); the
        full-size models need their weights' memory elsewhere (Llama-7B: 27 GB in float32).
    :param dtype: parameter dtype (the model's default when None).
    """
    import torch

    model_spec, _, dt = _config(name, None, dtype)
    torch.manual_seed(_SEED)
    with torch.device(device):
        model = model_spec.build()
    return model.to(getattr(torch, dt)).train()


def example_inputs(
    name: str, microbatch_size: int | None = None, device: str = "cpu", dtype: str | None = None
) -> tuple[torch.Tensor, ...]:
    """A microbatch of synthetic inputs (seeded): images ``N(0, 1)``, token ids uniform."""
    import torch

    model_spec, mb, dt = _config(name, microbatch_size, dtype)
    gen = torch.Generator().manual_seed(_SEED)
    inputs = []
    for item in model_spec.inputs:
        shape = (mb, *item.shape)
        if item.token_range:
            if device == "meta":
                inputs.append(torch.empty(shape, dtype=torch.long, device="meta"))
            else:
                ids = torch.randint(0, item.token_range, shape, generator=gen)
                inputs.append(ids.to(device))
        elif device == "meta":
            inputs.append(torch.empty(shape, dtype=getattr(torch, dt), device="meta"))
        else:
            inputs.append(torch.randn(shape, generator=gen).to(device, getattr(torch, dt)))
    return tuple(inputs)


def example_targets(
    name: str, microbatch_size: int | None = None, device: str = "cpu"
) -> torch.Tensor:
    """Synthetic integer labels (seeded) for a microbatch, shaped as :func:`loss_fn` expects."""
    import torch

    model_spec, mb, _ = _config(name, microbatch_size, None)
    gen = torch.Generator().manual_seed(_SEED + 1)
    labels = torch.randint(0, model_spec.classes, (mb, *model_spec.target_shape), generator=gen)
    return labels.to(device)


def _cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(output.flatten(0, -2).float(), target.flatten())


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of ``name``: mean cross-entropy of the logits against the labels."""
    spec(name)
    return _cross_entropy


def analytic_graph(
    name: str,
    device: str = DEFAULT_DEVICE,
    microbatch_size: int | None = None,
    dtype: str | None = None,
) -> OperatorGraph:
    """Trace ``name`` on the meta device and cost it with the roofline of ``device``.

    Seconds for the big models (never allocates their weights); :func:`load` is the fast path.
    """
    import torch

    from pipeenv.zoo.graphs import count_graph
    from pipeenv.zoo.trace import trace

    preset = get_device(device)
    _, mb, dt = _config(name, microbatch_size, dtype)
    if dt not in preset.peak_flops:
        raise PipeenvError(f"device {preset.name!r}: dtype {dt!r} is not supported")
    with torch.device("meta"):
        gm = trace(build_model(name, "meta", dt), name)
    inputs = example_inputs(name, mb, "meta", dt)
    return count_graph(gm, inputs, name, microbatch_size=mb, device=preset, dtype=dt)


@cache
def _shipped(name: str) -> OperatorGraph:
    path = DATA_DIR / f"{name}.json"
    if not path.exists():
        raise PipeenvError(f"zoo: model {name!r} has no shipped graph ({path} is missing)")
    return OperatorGraph.load(path)


def load(
    name: str,
    device: str = DEFAULT_DEVICE,
    microbatch_size: int | None = None,
    dtype: str | None = None,
) -> OperatorGraph:
    """The analytic operator graph of zoo model ``name``.

    :param device: device preset of the roofline times (``v100``, ``a100``, ``h100``, ``h200``).
    :param microbatch_size: samples per microbatch (default: the model's, 8).
    :param dtype: ``float32``, ``bfloat16`` or ``float16`` (default: the model's, or float16
        for a bfloat16 model on a device without bfloat16 such as the V100).
    :raises PipeenvError: for an unknown model, device or dtype.
    """
    model_spec, mb, dt = _config(name, microbatch_size, dtype)
    preset = get_device(device)
    shipped_config = mb == model_spec.microbatch_size and dt == model_spec.dtype
    if dtype is None and dt not in preset.peak_flops and "float16" in preset.peak_flops:
        # A bfloat16 model on a device without bfloat16 (V100) trains in float16: same element
        # size and FLOPs, so the shipped counts re-cost exactly.
        dt = "float16"
    if not shipped_config:
        return analytic_graph(name, device, mb, dt)
    graph = _shipped(name)
    if preset.name == DEFAULT_DEVICE:
        return graph
    return retime(graph, preset, dt)


def traced(
    name: str,
    device: str = "cpu",
    microbatch_size: int | None = None,
    dtype: str | None = None,
    graph_device: str = DEFAULT_DEVICE,
) -> tuple[fx.GraphModule, OperatorGraph]:
    """The model as a torch.fx GraphModule and its operator graph, node ids = fx node names.

    Every fx node but ``output`` is a graph node (placeholders as ``input`` nodes) and every
    parameter belongs to exactly one ``call_module`` node; graph edges are the fx data-flow
    edges. The GraphModule holds real weights on ``device`` (seeded as :func:`build_model`).

    :param graph_device: device preset of the graph's analytic costs.
    """
    from pipeenv.zoo.trace import trace

    gm = trace(build_model(name, device, dtype), name)
    graph = load(name, graph_device, microbatch_size, dtype)
    fx_names = [n.name for n in gm.graph.nodes if n.op != "output"]
    if fx_names != [n.id for n in graph.nodes]:
        raise PipeenvError(f"zoo: model {name!r}: the shipped graph does not match its trace")
    return gm, graph


def _check_local_device(device: str, repeats: int, warmup: int) -> None:
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PipeenvError(f"profile: device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipeenvError(f"profile: device {device!r} requested but CUDA is not available")
    if repeats < 1 or warmup < 0:
        raise PipeenvError("profile: repeats must be >= 1 and warmup >= 0")


def profile(
    name: str,
    device: str = "cpu",
    microbatch_size: int | None = None,
    dtype: str = "float32",
    *,
    repeats: int = 10,
    warmup: int = 3,
    timer: str = "wall",
) -> OperatorGraph:
    """The operator graph of ``name`` with forward and backward times measured per node.

    Sizes, FLOPs and bytes come from the analytic trace; each node's times are taken inside
    whole-model forward and backward passes on the local ``device`` (``cpu`` or ``cuda``),
    medians of ``repeats`` passes after ``warmup``, by the wall clock or, with ``timer="cpu"``
    (cpu, one torch thread), by the thread's CPU time (:mod:`pipeenv.zoo.measure`).

    :raises PipeenvError: for an unknown device or when CUDA is requested but absent.
    """
    import torch

    from pipeenv.zoo.graphs import measured_graph

    _, mb, dt = _config(name, microbatch_size, dtype)
    _check_local_device(device, repeats, warmup)
    analytic = load(name, DEFAULT_DEVICE, mb, dt)
    model = build_model(name, device, dt)
    inputs = example_inputs(name, mb, device, dt)
    return measured_graph(
        analytic,
        model,
        inputs,
        torch.device(device),
        repeats=repeats,
        warmup=warmup,
        timer=timer,
    )


def profile_module(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    name: str,
    device: str = "cpu",
    *,
    repeats: int = 10,
    warmup: int = 3,
    timer: str = "wall",
) -> OperatorGraph:
    """Profile any torch module (not only the zoo's): trace, count and time it per node.

    The module and ``inputs`` (one microbatch, batch dimension first) must be on ``device``.
    Counts are taken on the real tensors, so FLOPs and bytes are in ``extra`` as for the zoo;
    every parameter must live in a leaf module (see :func:`pipeenv.zoo.trace.trace`).

    :raises PipeenvError: for an untraceable model, an unsupported dtype or device.
    """
    import torch

    from pipeenv.zoo.graphs import count_graph, measured_graph
    from pipeenv.zoo.trace import trace

    _check_local_device(device, repeats, warmup)
    floating = [p.dtype for p in model.parameters() if p.is_floating_point()]
    dt = str(floating[0] if floating else torch.float32).removeprefix("torch.")
    if dt not in DTYPES:
        raise PipeenvError(f"profile: parameter dtype {dt!r} is not one of {', '.join(DTYPES)}")
    if not inputs or inputs[0].dim() == 0:
        raise PipeenvError("profile: inputs must be a non-empty sequence of batched tensors")
    model.train()
    try:
        gm = trace(model, name)
    except PipeenvError:
        raise
    except Exception as exc:  # torch.fx reports untraceable control flow in many ways
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PipeenvError(
            f"profile: model {name!r} cannot be traced by torch.fx: {first}"
        ) from None
    analytic = count_graph(
        gm,
        inputs,
        name,
        microbatch_size=int(inputs[0].shape[0]),
        device=get_device(DEFAULT_DEVICE),
        dtype=dt,
    )
    return measured_graph(
        analytic,
        model,
        inputs,
        torch.device(device),
        repeats=repeats,
        warmup=warmup,
        timer=timer,
    )


def load_factory(target: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Call ``"package.module:function"``, which returns ``(model, inputs)`` for profiling.

    :raises PipeenvError: when the module or function is missing or returns something else.
    """
    import importlib

    import torch

    module_name, _, function = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PipeenvError(f"profile: cannot load factory {target!r}: {exc}") from None
    result = factory()
    if not (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], torch.nn.Module)
        and all(isinstance(t, torch.Tensor) for t in result[1])
    ):
        raise PipeenvError(f"profile: factory {target!r} must return (module, tuple of tensors)")
    return result[0], tuple(result[1])


def info(name: str) -> dict[str, Any]:
    """A summary of ``name`` from its shipped graph: sizes, parameters, conventions, defaults."""
    model_spec = spec(name)
    graph = _shipped(name)
    element = DTYPE_BYTES[model_spec.dtype]
    return {
        "name": name,
        "family": model_spec.family,
        "tiny": model_spec.tiny,
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        "params": int(graph.total_param_bytes) // element,
        "is_chain": graph.is_chain,
        "device": DEFAULT_DEVICE,
        "dtype": model_spec.dtype,
        "microbatch_size": model_spec.microbatch_size,
        "inputs": {i.name: [model_spec.microbatch_size, *i.shape] for i in model_spec.inputs},
        "convention": model_spec.convention,
        "forward_backward_s": graph.total_compute_s,
    }


def regenerate(
    model_names: Sequence[str] | None = None, out_dir: str | Path | None = None
) -> list[Path]:
    """Write the analytic graphs of the default configurations (the shipped package data).

    :param model_names: which models (all by default).
    :param out_dir: where (``pipeenv/zoo/data`` by default).
    :returns: the files written.
    """
    target = DATA_DIR if out_dir is None else Path(out_dir)
    written = []
    for name in model_names or names():
        path = target / f"{name}.json"
        analytic_graph(name).save(path)
        written.append(path)
    _shipped.cache_clear()
    return written
