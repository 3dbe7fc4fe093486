"""``pipeenv simulate``: one plan on one cluster, as a table, SPEC §6 JSON, timeline or Gantt."""

from __future__ import annotations

import argparse
import json
import sys

from pipeenv.cluster import load_cluster
from pipeenv.graph import load_graph
from pipeenv.jsonio import write_json
from pipeenv.plan import load_plan
from pipeenv.simulator import ENGINES, simulate

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a plan (SPEC §4) and print its per-stage figures",
        description="Simulate one training iteration of PLAN on CLUSTER for GRAPH.",
    )
    p.add_argument("--graph", required=True, help="pipeenv.graph/v1 JSON file")
    p.add_argument("--cluster", required=True, help="pipeenv.cluster/v1 JSON file or preset name")
    p.add_argument("--plan", required=True, help="pipeenv.plan/v1 JSON file")
    p.add_argument("--json", action="store_true", help="print the pipeenv.result/v1 JSON")
    p.add_argument("--timeline", metavar="T.json", help="write every op and transfer to T.json")
    p.add_argument("--gantt", metavar="OUT.png", help="draw the timeline as a Gantt chart")
    p.add_argument("--param-memory-factor", type=float, default=4.0, help="default 4.0")
    p.add_argument("--engine", choices=ENGINES, default="numba")
    p.add_argument("--force", action="store_true", help="overwrite --timeline/--gantt files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    graph = load_graph(args.graph)
    cluster = load_cluster(args.cluster)
    plan = load_plan(args.plan)
    plan.validate(graph, cluster)
    want_timeline = bool(args.timeline or args.gantt)
    result = simulate(
        graph,
        cluster,
        plan,
        timeline=want_timeline,
        param_memory_factor=args.param_memory_factor,
        engine=args.engine,
    )
    if args.timeline:
        events = [e.to_dict() for e in result.timeline or ()]
        write_json(
            args.timeline, {"format": "pipeenv.timeline/v1", "events": events}, overwrite=args.force
        )
    if args.gantt:
        from pipeenv.envs.render import gantt_png

        gantt_png(result, args.gantt, title=f"{graph.name} on {cluster.name}", overwrite=args.force)
    if args.json:
        doc = result.to_dict()
        doc.pop("timeline", None)
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return 0
    from pipeenv.envs.render import stage_table

    sys.stdout.write(stage_table(result, plan, graph=graph, cluster=cluster) + "\n")
    return 0
