"""Analytic counts of one operator-graph node: FLOPs, bytes moved, bytes kept.

Each node is re-run in isolation, usually on the meta device (no memory, no time). FLOPs are
counted with :class:`torch.utils.flop_counter.FlopCounterMode`, forward and backward (gradients
of the node's inputs that need them and of every parameter it uses); bytes moved are the bytes
read and written by every non-view aten op it dispatches (no fusion across ops); activation bytes
are the bytes of the tensors autograd saves for its backward, captured with
``saved_tensors_hooks`` (parameters and buffers excluded).

A module with ``fx_fused = True`` (the GNMT LSTM layers, which cuDNN runs as fused kernels that
keep the recurrent weights on chip) moves its inputs, parameters, outputs and saved tensors once
per pass instead: forward ``inputs + params + output + saved``, backward ``grad output + saved +
params + grad inputs + grad params``. Its FLOPs are still counted op by op.

Scaled dot-product attention is counted as the fused kernel PyTorch runs on GPUs and CPUs (flash
attention: Q, K, V and the output move, the attention matrix does not) rather than the unfused
math path the meta device would take: :class:`_FusedAttention` redirects it. Its FLOPs are those
of the full (unmasked) attention, as ``torch.utils.flop_counter`` counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from pipeenv.errors import PipeenvError
from pipeenv.zoo.trace import NodeCall, tensor_bytes

__all__ = ["NodeCounts", "count_node", "detach_like", "grad_targets"]


@dataclass(frozen=True)
class NodeCounts:
    """Analytic counts of one node, per microbatch.

    :param flops_fwd: forward FLOPs.
    :param flops_bwd: backward FLOPs.
    :param bytes_fwd: bytes read and written by the forward ops.
    :param bytes_bwd: bytes read and written by the backward ops.
    :param output_bytes: bytes of the node's output.
    :param param_bytes: bytes of the node's parameters.
    :param activation_bytes: bytes autograd keeps for the node's backward.
    :param shared: parameters the node uses but does not own (tied weights).
    """

    flops_fwd: int
    flops_bwd: int
    bytes_fwd: int
    bytes_bwd: int
    output_bytes: int
    param_bytes: int
    activation_bytes: int
    shared: tuple[torch.nn.Parameter, ...] = ()


def _is_view(func: torch._ops.OpOverload) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


class _BytesMode(TorchDispatchMode):
    """Sums the bytes of the tensor arguments and results of every non-view aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not _is_view(func) and func is not torch.ops.aten.detach.default:
            self.bytes += tensor_bytes((args, kwargs, out))
        return out


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    if attn_mask is not None or dropout_p or enable_gqa:
        raise PipeenvError("costs: attention with a mask, dropout or GQA is not supported")
    out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, is_causal=is_causal, scale=scale
    )[0]
    assert isinstance(out, torch.Tensor)
    return out


class _FusedAttention(TorchFunctionMode):
    """Runs ``F.scaled_dot_product_attention`` as the fused CPU flash kernel on cpu and meta."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # On CUDA the real kernels are fused already and the flop counter knows them.
        if func is F.scaled_dot_product_attention and args[0].device.type in ("cpu", "meta"):
            return _attention(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _flash_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    return int(sdpa_flop_count(query, key, value))


def _flash_backward_flops(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any
) -> int:
    return int(sdpa_backward_flop_count(grad_out, query, key, value))


_FLOP_MAPPING = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_backward_flops,
}


def detach_like(value: Any) -> Any:
    """A copy of the arguments cut from the full run's autograd graph, with the same flags."""

    def detach(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().requires_grad_(x.requires_grad)
        return x

    return tree_map(detach, value)


def _autograd_leaves(outs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The leaf tensors (detached inputs, parameters, tied ones too) the outputs depend on."""
    leaves: dict[int, torch.Tensor] = {}
    seen: set[Any] = set()
    stack = [t.grad_fn for t in outs if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.setdefault(id(variable), variable)
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    leaves.update({id(t): t for t in outs if t.grad_fn is None})
    return list(leaves.values())


def grad_targets(output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(outputs needing grad, their seed gradients, leaf tensors to differentiate against)."""
    outs = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad]
    seeds = [torch.ones_like(t) for t in outs]
    return outs, seeds, _autograd_leaves(outs)


def count_node(call: NodeCall, params: Sequence[torch.nn.Parameter]) -> NodeCounts:
    """Count FLOPs, bytes moved and kept bytes of one node by re-running it in isolation.

    :param call: the node with the arguments of a full run (:func:`~pipeenv.zoo.trace.run_nodes`).
    :param params: the parameters the node owns.
    """
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    if call.node.op == "placeholder":
        out_bytes = tensor_bytes(call.output)
        return NodeCounts(0, 0, 0, 0, out_bytes, 0, 0)
    args, kwargs = detach_like((call.args, call.kwargs))
    kept: dict[int, int] = {}
    excluded = {t.untyped_storage()._cdata for t in params}
    if isinstance(call.fn, torch.nn.Module):
        excluded |= {b.untyped_storage()._cdata for b in call.fn.buffers()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        is_param = isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter)
        if key not in excluded and not is_param:
            kept[key] = t.untyped_storage().nbytes()
        return t

    with _FusedAttention():
        fwd_flops = FlopCounterMode(display=False, custom_mapping=_FLOP_MAPPING)
        with saved_tensors_hooks(pack, lambda t: t), fwd_flops, _BytesMode() as fwd_bytes:
            output = call.fn(*args, **kwargs)
        outs, seeds, wrt = grad_targets(output)
        bwd_flops = FlopCounterMode(display=False, custom_mapping=_FLOP_MAPPING)
        bwd_bytes = _BytesMode()
        if outs and wrt:
            with bwd_flops, bwd_bytes:
                torch.autograd.grad(outs, wrt, seeds, allow_unused=True)
    activation_bytes = sum(kept.values())
    bytes_fwd, bytes_bwd = fwd_bytes.bytes, bwd_bytes.bytes
    if getattr(call.fn, "fx_fused", False):
        in_bytes = tensor_bytes((args, kwargs))
        grad_in_bytes = tensor_bytes([t for t in wrt if all(t is not p for p in params)])
        out_bytes = tensor_bytes(output)
        bytes_fwd = in_bytes + param_bytes + out_bytes + activation_bytes
        bytes_bwd = out_bytes + activation_bytes + 2 * param_bytes + grad_in_bytes
    return NodeCounts(
        flops_fwd=int(fwd_flops.get_total_flops()),
        flops_bwd=int(bwd_flops.get_total_flops()),
        bytes_fwd=bytes_fwd,
        bytes_bwd=bytes_bwd,
        output_bytes=tensor_bytes(output),
        param_bytes=param_bytes,
        activation_bytes=activation_bytes,
        shared=tuple(
            t for t in wrt if isinstance(t, torch.nn.Parameter) and all(t is not p for p in params)
        ),
    )
