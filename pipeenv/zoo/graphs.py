"""Operator graphs of traced models: analytic (roofline on a device preset) or measured.

:func:`count_graph` counts every node of a traced model
(:func:`~pipeenv.zoo.counting.count_node`); the counts are kept in each node's ``extra``
(``flops_fwd``, ``flops_bwd``, ``bytes_fwd``, ``bytes_bwd``) next to the enclosing ``module``,
so :func:`~pipeenv.zoo.costs.retime` re-costs a graph for another preset without tracing.
:func:`measured_graph` replaces the times by measurements on a real device, each node timed
inside whole-model passes (:func:`~pipeenv.zoo.measure.measure_nodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.fx as fx
from torch import nn

from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.zoo.costs import DevicePreset, analytic_source, roofline_s
from pipeenv.zoo.counting import NodeCounts, count_node
from pipeenv.zoo.measure import measure_nodes
from pipeenv.zoo.trace import (
    node_module,
    node_op,
    node_parameters,
    run_nodes,
    to_operator_graph,
    trace,
)

__all__ = ["count_graph", "measured_graph"]


def _node(
    node_id: str,
    op: str,
    module: str,
    counts: NodeCounts,
    forward_s: float,
    backward_s: float,
    param_names: dict[int, str],
) -> Node:
    extra: dict[str, object] = {
        "module": module,
        "flops_fwd": counts.flops_fwd,
        "flops_bwd": counts.flops_bwd,
        "bytes_fwd": counts.bytes_fwd,
        "bytes_bwd": counts.bytes_bwd,
    }
    if counts.shared:
        # A tied weight is counted on the node that owns it; this one also needs it.
        extra["tied_params"] = sorted(param_names[id(p)] for p in counts.shared)
    return Node(
        id=node_id,
        op=op,
        forward_s=forward_s,
        backward_s=backward_s,
        output_bytes=counts.output_bytes,
        param_bytes=counts.param_bytes,
        activation_bytes=counts.activation_bytes,
        extra=extra,
    )


def count_graph(
    gm: fx.GraphModule,
    inputs: Sequence[torch.Tensor],
    name: str,
    *,
    microbatch_size: int,
    device: DevicePreset,
    dtype: str,
) -> OperatorGraph:
    """The analytic operator graph of ``gm`` (traced, with parameters, on the meta device).

    :param gm: the traced model (:func:`~pipeenv.zoo.trace.trace`), in training mode.
    :param inputs: a microbatch of inputs, on the model's device.
    :param name: graph name.
    :param microbatch_size: samples in ``inputs``.
    :param device: the preset the roofline times refer to.
    :param dtype: the dtype of parameters and activations (names a rate of ``device``).
    """
    nodes: dict[str, Node] = {}
    param_names = {id(p): name for name, p in gm.named_parameters()}
    with torch.enable_grad():
        for call in run_nodes(gm, inputs):
            counts = count_node(call, node_parameters(gm, call.node))
            nodes[call.node.name] = _node(
                call.node.name,
                node_op(gm, call.node),
                node_module(call.node),
                counts,
                roofline_s(counts.flops_fwd, counts.bytes_fwd, device, dtype),
                roofline_s(counts.flops_bwd, counts.bytes_bwd, device, dtype),
                param_names,
            )
    return to_operator_graph(
        gm, name, nodes, microbatch_size=microbatch_size, source=analytic_source(device, dtype)
    )


def measured_graph(
    analytic: OperatorGraph,
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    *,
    repeats: int = 10,
    warmup: int = 3,
    timer: str = "wall",
) -> OperatorGraph:
    """``analytic`` with each node's times measured on ``device`` (sizes and counts kept).

    :param analytic: the analytic graph of the same model and microbatch size.
    :param model: the model, on ``device``, in training mode.
    :param inputs: a microbatch of inputs on ``device``.
    :param device: where to measure (cpu or cuda).
    :param repeats: timed forward+backward passes (each node's median is kept).
    :param warmup: untimed passes first.
    :param timer: ``wall`` or ``cpu`` (see :mod:`pipeenv.zoo.measure`).
    """
    gm = trace(model, analytic.name)
    times = measure_nodes(gm, inputs, device, repeats=repeats, warmup=warmup, timer=timer)
    if set(times) != {n.id for n in analytic.nodes}:
        raise PipeenvError(f"profile: model {analytic.name!r}: traced nodes differ from its graph")
    nodes = [
        replace(n, forward_s=times[n.id][0], backward_s=times[n.id][1]) for n in analytic.nodes
    ]
    source = (
        f"measured on {device.type} (torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{timer} clock, per node inside whole forward and backward passes, median of {repeats} "
        f"after {warmup} warm-up passes), "
        "sizes from tensor metadata"
    )
    return OperatorGraph(
        analytic.name,
        nodes,
        analytic.edges,
        microbatch_size=analytic.microbatch_size,
        source=source,
    )
