"""Tracing a torch model into an operator graph at layer granularity (``torch.fx``).

:func:`trace` symbolically traces a model with a tracer that keeps every module without
children (Conv2d, Linear, LayerNorm, Embedding, RMSNorm, ...) and every module marked
``fx_leaf = True`` (attention, LSTM layers) as one ``call_module`` node; functional ops between
them (add, cat, relu, flatten, getitem, ...) are nodes of their own. Node ids are the fx node
names, which depend only on the model's code, so they are the same in every run.
:func:`run_nodes` executes the traced graph node by node (on real or meta tensors) and
:func:`to_operator_graph` turns per-node costs into an :class:`~pipeenv.graph.OperatorGraph`:
placeholders become ``input`` nodes, the fx ``output`` node is dropped, and the edges are the fx
data-flow edges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_leaves

from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph

__all__ = [
    "LayerTracer",
    "NodeCall",
    "node_module",
    "node_op",
    "node_parameters",
    "run_nodes",
    "tensor_bytes",
    "to_operator_graph",
    "trace",
]


class LayerTracer(fx.Tracer):
    """An fx tracer whose leaves are childless modules and modules with ``fx_leaf = True``."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict):
            return False
        if getattr(m, "fx_leaf", False) or not any(True for _ in m.children()):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, name: str = "model") -> fx.GraphModule:
    """Trace ``model`` into an fx GraphModule at layer granularity.

    :param model: the module (on any device, meta included).
    :param name: model name, for error messages.
    :raises PipeenvError: when a parameter or buffer is used outside a leaf module (it would
        belong to no node).
    """
    graph = LayerTracer().trace(model)
    gm = fx.GraphModule(model, graph, name)
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            raise PipeenvError(
                f"trace: model {name!r}: tensor {node.target!r} is used outside a leaf module"
            )
    return gm


def node_op(gm: fx.GraphModule, node: fx.Node) -> str:
    """A short operator name: ``input``, the module class (lower case) or the function name."""
    if node.op == "placeholder":
        return "input"
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__.lower()
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def node_module(node: fx.Node) -> str:
    """Qualified name of the module that runs or encloses the node ('' at top level)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path)


def node_parameters(gm: fx.GraphModule, node: fx.Node) -> list[nn.Parameter]:
    """The parameters owned by the node's module (empty for functional nodes)."""
    if node.op != "call_module":
        return []
    return list(gm.get_submodule(str(node.target)).parameters())


def tensor_bytes(value: Any) -> int:
    """Bytes of all tensors in a (nested) value, each storage counted once."""
    seen: set[int] = set()
    total = 0
    for leaf in tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            key = leaf.untyped_storage()._cdata
            if key not in seen:
                seen.add(key)
                total += leaf.numel() * leaf.element_size()
    return total


@dataclass(frozen=True)
class NodeCall:
    """One fx node ready to be run again in isolation.

    :param node: the fx node.
    :param fn: what it calls (module, function or bound method wrapper).
    :param args: positional arguments, with the values computed by the full run.
    :param kwargs: keyword arguments, likewise.
    :param output: the value the node produced in the full run.
    """

    node: fx.Node
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any


def _callable(gm: fx.GraphModule, node: fx.Node) -> Callable[..., Any]:
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))
    if node.op == "call_function":
        return node.target  # type: ignore[return-value]
    method = str(node.target)
    return lambda self, *args, **kwargs: getattr(self, method)(*args, **kwargs)


def run_nodes(gm: fx.GraphModule, inputs: Sequence[Any]) -> Iterator[NodeCall]:
    """Run ``gm`` on ``inputs`` node by node, yielding each node with its arguments and output.

    Placeholders are yielded with ``fn`` the identity. The fx ``output`` node is not yielded.
    Values are dropped once their last consumer has run, so memory stays that of a forward pass.
    """
    env: dict[fx.Node, Any] = {}
    remaining = {n: len(n.users) for n in gm.graph.nodes}
    placeholders = iter(inputs)
    for node in gm.graph.nodes:
        if node.op == "output":
            return
        if node.op == "placeholder":
            value = next(placeholders)
            env[node] = value
            yield NodeCall(node, lambda x: x, (value,), {}, value)
            continue
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        assert isinstance(args, tuple) and isinstance(kwargs, dict)
        fn = _callable(gm, node)
        value = fn(*args, **kwargs)
        env[node] = value
        yield NodeCall(node, fn, args, kwargs, value)
        for producer in node.all_input_nodes:
            remaining[producer] -= 1
            if remaining[producer] == 0:
                del env[producer]


def to_operator_graph(
    gm: fx.GraphModule,
    name: str,
    costs: Mapping[str, Node],
    *,
    microbatch_size: int,
    source: str,
) -> OperatorGraph:
    """Assemble the operator graph of ``gm`` from per-node costs keyed by fx node name.

    :param gm: the traced model.
    :param name: graph name.
    :param costs: a :class:`~pipeenv.graph.Node` for every fx node except ``output``.
    :param microbatch_size: samples per microbatch the costs refer to.
    :param source: how the costs were obtained.
    """
    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        nodes.append(costs[node.name])
        edges.extend((producer.name, node.name) for producer in node.all_input_nodes)
    return OperatorGraph(name, nodes, edges, microbatch_size=microbatch_size, source=source)
