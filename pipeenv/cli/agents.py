"""``pipeenv agents`` (list the planners) and ``pipeenv plan`` (run one, write its plan)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeenv.cluster import load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph, load_graph
from pipeenv.simulator import simulate

__all__ = ["load_graph_or_zoo", "register"]


def load_graph_or_zoo(name_or_path: str) -> OperatorGraph:
    """A graph JSON file, or else the analytic graph of a zoo model of that name.

    :raises PipeenvError: when it is neither a file nor a zoo model.
    """
    path = Path(name_or_path)
    if path.exists() or name_or_path.endswith(".json"):
        return load_graph(path)
    try:
        from pipeenv import zoo
    except ModuleNotFoundError as exc:
        if exc.name != "pipeenv.zoo":
            raise
        raise PipeenvError(f"graph: {name_or_path!r} is not a file (no zoo installed)") from None
    if name_or_path not in zoo.names():
        raise PipeenvError(
            f"graph: {name_or_path!r} is neither a file nor a zoo model ({', '.join(zoo.names())})"
        )
    return zoo.load(name_or_path)


def _agent_options(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipeenvError(f"--agent-options is not valid JSON ({exc.msg})") from None
    if not isinstance(options, dict):
        raise PipeenvError("--agent-options must be a JSON object {option: value}")
    return options


def _run_list(args: argparse.Namespace) -> int:
    import agents

    descriptions = agents.describe()
    width = max(len(name) for name in descriptions)
    for name, line in descriptions.items():
        print(f"{name:<{width}}  {line}")
    return 0


def _run_plan(args: argparse.Namespace) -> int:
    import agents

    options = _agent_options(args.agent_options)
    planner = agents.make(args.agent, **options)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise PipeenvError(f"output: {out} exists (pass --force to overwrite)")
    graph = load_graph_or_zoo(args.graph)
    cluster = load_cluster(args.cluster)
    plan = planner.plan(
        graph,
        cluster,
        num_stages=args.stages,
        microbatches=args.microbatches,
        schedule=args.schedule,
        data_parallel=args.data_parallel,
    )
    result = simulate(graph, cluster, plan)
    plan.save(out, overwrite=args.force)
    feasible = "" if result.feasible else f", OUT OF MEMORY on stages {result.oom_stages}"
    print(
        f"{args.agent}: {graph.name} on {cluster.name}, {plan.num_stages} stages x "
        f"{plan.data_parallel} replicas on devices {list(plan.devices)}, "
        f"{plan.microbatches} microbatches, {plan.schedule}: iteration "
        f"{result.iteration_s * 1000:.3f} ms, {result.throughput_samples_per_s:.1f} samples/s, "
        f"efficiency {result.efficiency:.3f}, bubble {result.bubble_fraction:.3f}{feasible} "
        f"-> {out}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``agents`` and ``plan`` to the ``pipeenv`` command."""
    p = subparsers.add_parser("agents", help="list the planning agents, one line each")
    p.set_defaults(run=_run_list)

    p = subparsers.add_parser(
        "plan",
        help="partition a graph with an agent and write the plan (SPEC §3)",
        description=(
            "Run agent NAME on GRAPH and CLUSTER and write a pipeenv.plan/v1 JSON whose "
            "'predicted' field holds the simulator's figures."
        ),
    )
    p.add_argument("--graph", required=True, help="pipeenv.graph/v1 JSON file or zoo model name")
    p.add_argument("--cluster", required=True, help="pipeenv.cluster/v1 JSON file or preset name")
    p.add_argument("--stages", type=int, required=True, help="number of pipeline stages S")
    p.add_argument("--microbatches", type=int, required=True, help="microbatches M per replica")
    p.add_argument("--schedule", default="1f1b", help="gpipe or 1f1b (default 1f1b)")
    p.add_argument(
        "--data-parallel",
        type=int,
        default=None,
        help="replicas R of the pipeline (default: the agent chooses)",
    )
    p.add_argument("--agent", required=True, help="agent name (see `pipeenv agents`)")
    p.add_argument("--agent-options", default=None, help="agent options as a JSON object")
    p.add_argument("--out", required=True, help="output plan JSON")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(run=_run_plan)
