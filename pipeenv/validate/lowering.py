"""Lowering a plan onto a traced model: one ``torch.fx`` module per pipeline stage.

torch's pipeline schedules only talk between neighbouring stages, and each stage receives one
flat tuple of tensors from the stage before it. So stage ``s`` receives exactly the tensors that
cross boundary ``s-1`` and sends exactly those that cross boundary ``s``: a tensor that skips
stages is relayed, crossing every boundary between its producer and its last consumer (SPEC §4).
The boundary sets are therefore SPEC's ``X_s`` node sets, with two additions that SPEC cannot
see because they have no graph edge, listed in :attr:`LoweredPlan.unaccounted`:

- the model inputs are fed to stage 0 (the only stage torch feeds), so a placeholder assigned to
  a later stage is relayed from stage 0 to its stage;
- the loss runs on the last stage, so a model output produced earlier (possible only when some
  node does not feed the output) is relayed to it.

Weights used by a node but owned by a node of another stage (tied weights, e.g. a language-model
head reusing the token embedding) are found by an autograd probe and listed in
:attr:`LoweredPlan.tied`; each stage that uses such a weight registers it, and the runner sums
its gradient over those stages (Megatron-LM's treatment of tied embeddings). SPEC §4 does not
count that exchange either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan

__all__ = [
    "LoweredPlan",
    "StageModule",
    "StageSpec",
    "TiedWeight",
    "lower",
    "spec_boundaries",
]


@dataclass(frozen=True)
class StageSpec:
    """What one stage computes, receives and sends.

    :param stage: stage index.
    :param nodes: ids of the nodes it computes, in fx (topological) order.
    :param inputs: ids of the values it receives, in order: the model's placeholders for stage
        0 (fed by the schedule), else the previous stage's ``outputs``.
    :param outputs: ids of the values it sends to the next stage, in fx order; for the last
        stage the model's output (what the loss consumes).
    """

    stage: int
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class TiedWeight:
    """A parameter used by nodes on several stages.

    :param name: qualified parameter name in the model.
    :param owner: id of the node that owns it (whose module registers it).
    :param stages: the stages whose nodes use it, ascending.
    """

    name: str
    owner: str
    stages: tuple[int, ...]


class StageModule(nn.Module):
    """One pipeline stage: an fx module over the stage's nodes, plus the tied weights it uses.

    ``forward(*inputs)`` takes the tensors of :attr:`StageSpec.inputs` and returns those of
    :attr:`StageSpec.outputs` (a tuple, or the single output tensor on the last stage).
    """

    def __init__(self, spec: StageSpec, body: fx.GraphModule, tied: Sequence[nn.Parameter]):
        super().__init__()
        self.spec = spec
        self.body = body
        # Registered so that the stage's parameters() (gradient scaling, all-reduce) see them.
        self.tied = nn.ParameterList(list(tied))

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.body(*inputs)


@dataclass(frozen=True)
class LoweredPlan:
    """A plan lowered onto a model.

    :param stages: one :class:`StageSpec` per stage.
    :param modules: one :class:`StageModule` per stage (sharing the model's submodules).
    :param tied: weights used on several stages.
    :param unaccounted: ``(node id, boundary)`` pairs relayed beyond SPEC §4's ``X_s``.
    :param output: id of the node whose value is the model output.
    """

    stages: tuple[StageSpec, ...]
    modules: tuple[StageModule, ...]
    tied: tuple[TiedWeight, ...]
    unaccounted: tuple[tuple[str, int], ...]
    output: str


def spec_boundaries(
    graph: OperatorGraph, stage_of: Mapping[str, int], num_stages: int
) -> list[list[str]]:
    """SPEC §4's boundary sets: for each s in 0..S-2, the ids u with ``stage_of[u] <= s`` that
    have a successor v with ``stage_of[v] > s``, in the graph's canonical order."""
    last_use: dict[str, int] = {}
    for u, v in graph.edges:
        last_use[u] = max(last_use.get(u, -1), stage_of[v])
    return [
        [u for u in graph.order if stage_of[u] <= s < last_use.get(u, -1)]
        for s in range(num_stages - 1)
    ]


def _output_node(gm: fx.GraphModule) -> fx.Node:
    outputs = [n for n in gm.graph.nodes if n.op == "output"]
    value = outputs[0].args[0]
    if not isinstance(value, fx.Node):
        raise PipeenvError("lowering: the model must return a single tensor (its logits)")
    return value


def _run_example(
    gm: fx.GraphModule, example: Sequence[Any]
) -> tuple[dict[str, Any], dict[str, set[str]]]:
    """Run ``gm`` node by node on ``example``: every node's value, and for every call_module
    node the names of the parameters its output depends on (found by autograd). Buffers
    (batch-norm running statistics) are restored afterwards."""
    from pipeenv.zoo.trace import run_nodes

    saved = [(b, b.detach().clone()) for b in gm.buffers()]
    names = {id(p): name for name, p in gm.named_parameters(remove_duplicate=False)}
    params = [p for _, p in gm.named_parameters()]
    values: dict[str, Any] = {}
    used: dict[str, set[str]] = {}
    with torch.no_grad():
        for call in run_nodes(gm, example):
            node = call.node
            values[node.name] = call.output
            if node.op != "call_module":
                continue
            # Re-run the module alone on detached inputs: its output then depends on its own
            # weights only, not on those of the nodes before it.
            args = fx.node.map_aggregate(
                call.args, lambda a: a.detach() if isinstance(a, torch.Tensor) else a
            )
            with torch.enable_grad():
                out = call.fn(*args, **call.kwargs)
                leaves = [
                    t
                    for t in torch.utils._pytree.tree_leaves(out)
                    if isinstance(t, torch.Tensor) and t.requires_grad
                ]
                used[node.name] = set()
                if leaves:
                    total = torch.stack([t.float().sum() for t in leaves]).sum()
                    grads = torch.autograd.grad(total, params, allow_unused=True)
                    used[node.name] = {
                        names[id(p)] for p, g in zip(params, grads, strict=True) if g is not None
                    }
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)
    return values, used


def lower(
    gm: fx.GraphModule,
    graph: OperatorGraph,
    plan: Plan,
    example_inputs: Sequence[torch.Tensor],
) -> LoweredPlan:
    """Split ``gm`` into the stages of ``plan``.

    :param gm: the traced model (:func:`pipeenv.zoo.traced`), node ids = fx node names.
    :param graph: its operator graph (checked against the plan: ids, graph hash, SPEC §3).
    :param plan: the plan.
    :param example_inputs: one microbatch of model inputs, used to find tied weights and to
        check that only tensors cross boundaries.
    :raises PipeenvError: when the plan does not fit the graph or the model, or a non-tensor
        value would cross a boundary.
    """
    plan.validate(graph)
    fx_ids = [n.name for n in gm.graph.nodes if n.op != "output"]
    if sorted(fx_ids) != sorted(graph.order):
        raise PipeenvError(
            f"lowering: graph {graph.name!r} does not describe this model (node ids differ)"
        )
    stage_of = plan.stage_of
    num_stages = plan.num_stages
    last = num_stages - 1
    out_node = _output_node(gm)
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    placeholders = [n.name for n in nodes if n.op == "placeholder"]

    # Boundary membership: from the stage a value appears on (0 for fed inputs) up to, but not
    # including, the last stage that uses it (the loss counts as a use on the last stage).
    first_stage = {n.name: 0 if n.op == "placeholder" else stage_of[n.name] for n in nodes}
    last_use = {n.name: -1 for n in nodes}
    for n in nodes:
        for user in n.users:
            use = last if user.op == "output" else stage_of[user.name]
            last_use[n.name] = max(last_use[n.name], use)
    boundaries = [
        tuple(n.name for n in nodes if first_stage[n.name] <= s < last_use[n.name])
        for s in range(last)
    ]
    spec_sets = [set(b) for b in spec_boundaries(graph, stage_of, num_stages)]
    unaccounted = tuple((u, s) for s in range(last) for u in boundaries[s] if u not in spec_sets[s])

    values, used = _run_example(gm, example_inputs)
    for s, boundary in enumerate(boundaries):
        for u in boundary:
            if not isinstance(values[u], torch.Tensor):
                raise PipeenvError(
                    f"lowering: node {u!r} crosses boundary {s} but its value is a "
                    f"{type(values[u]).__name__}; only tensors can cross stage boundaries"
                )

    owner_of: dict[str, str] = {}
    for n in nodes:
        if n.op == "call_module":
            for pname, _ in gm.get_submodule(str(n.target)).named_parameters():
                owner_of[f"{n.target}.{pname}"] = n.name
    tied: list[TiedWeight] = []
    tied_names: dict[int, list[str]] = {s: [] for s in range(num_stages)}
    for pname in sorted(owner_of):
        owner = owner_of[pname]
        stages = {stage_of[owner]} | {stage_of[nid] for nid, ps in used.items() if pname in ps}
        if len(stages) > 1:
            tied.append(TiedWeight(pname, owner, tuple(sorted(stages))))
            for s in stages:
                if s != stage_of[owner]:
                    tied_names[s].append(pname)

    specs: list[StageSpec] = []
    modules: list[StageModule] = []
    for s in range(num_stages):
        inputs = tuple(placeholders) if s == 0 else boundaries[s - 1]
        outputs = boundaries[s] if s < last else (out_node.name,)
        spec = StageSpec(
            s,
            tuple(n.name for n in nodes if n.op != "placeholder" and stage_of[n.name] == s),
            inputs,
            outputs,
        )
        body = _stage_graph_module(gm, spec, single_output=s == last)
        tied_params = [gm.get_parameter(name) for name in tied_names[s]]
        specs.append(spec)
        modules.append(StageModule(spec, body, tied_params))
    return LoweredPlan(tuple(specs), tuple(modules), tuple(tied), unaccounted, out_node.name)


def _stage_graph_module(
    gm: fx.GraphModule, spec: StageSpec, *, single_output: bool
) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    by_name = {n.name: n for n in gm.graph.nodes}
    for nid in spec.inputs:
        env[by_name[nid]] = graph.placeholder(nid)
    computed = set(spec.nodes)
    for node in gm.graph.nodes:
        if node.name in computed:
            env[node] = graph.node_copy(node, lambda n: env[n])
    results = [env[by_name[nid]] for nid in spec.outputs]
    graph.output(results[0] if single_output else tuple(results))
    graph.lint()
    return fx.GraphModule(gm, graph, f"stage{spec.stage}")
