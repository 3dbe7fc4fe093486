"""``pipeenv pipedream-plan``: PipeDream's own planner on a profile, to compare with the paper."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph, load_graph
from pipeenv.importers.pipedream import from_pipedream

__all__ = ["register"]


def _load(path: str) -> OperatorGraph:
    return load_graph(path) if Path(path).suffix == ".json" else from_pipedream(path)


def _ranges(ids: list[str]) -> str:
    """``node1-4,7,9-10`` when every id is a common prefix plus a number, else the first ids."""
    match = [re.fullmatch(r"(\D*)(\d+)", nid) for nid in ids]
    if not all(match) or len({m.group(1) for m in match if m}) != 1:
        return ", ".join(ids) if len(ids) <= 4 else f"{', '.join(ids[:3])}, ... ({len(ids)} nodes)"
    numbers = sorted(int(m.group(2)) for m in match if m)
    parts: list[str] = []
    start = prev = numbers[0]
    for cur in [*numbers[1:], None]:
        if cur is None or cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur if cur is not None else start
        prev = cur if cur is not None else prev
    prefix = match[0].group(1) if match[0] else ""
    return f"{prefix}{','.join(parts)}"


def _summary(doc: dict) -> str:
    lines = [
        f"{doc['graph']}: {doc['num_machines']} machines, B = {doc['bandwidth_Bps']:.3g} B/s"
        + (", straight pipeline" if doc["straight_pipeline"] else ""),
        f"  time per stage    {doc['time_per_stage_s'] * 1000:10.3f} ms",
        f"  data parallel     {doc['data_parallel_time_s'] * 1000:10.3f} ms",
        f"  single machine    {doc['single_machine_time_s'] * 1000:10.3f} ms",
        f"  speed-up: {doc['speedup_over_single_machine']:.2f}x over one machine, "
        f"{doc['speedup_over_data_parallel']:.2f}x over data parallel "
        "(data parallel: "
        f"{doc['data_parallel_speedup_over_single_machine']:.2f}x over one machine)",
        f"  {doc['num_stages']} stages: stage, replication, nodes, compute ms, stage time ms, ids",
    ]
    for st in doc["stages"]:
        lines.append(
            f"    {st['stage']:3d}  x{st['replication']:<3d} {len(st['nodes']):5d} "
            f"{st['compute_s'] * 1000:10.3f} {st['time_s'] * 1000:10.3f}  {_ranges(st['nodes'])}"
        )
    search = doc["search"]
    if not search["exact"]:
        lines.append(
            f"  note: too many downsets; searched {search['downsets']} downsets of a graph "
            f"coarsened to {search['dp_nodes']} nodes (best plan that cuts only between groups)"
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from agents.pipedream_compat import pipedream_plan

    if args.use_memory_constraint and not (
        math.isfinite(args.memory_size) and args.memory_size > 0
    ):
        raise PipeenvError(f"--memory-size must be > 0 bytes, got {args.memory_size}")
    plan = pipedream_plan(
        _load(args.profile),
        args.num_machines,
        bandwidth_Bps=args.bandwidth,
        straight_pipeline=args.straight_pipeline,
        activation_compression_ratio=args.activation_compression_ratio,
        memory_size=args.memory_size if args.use_memory_constraint else None,
        max_downsets=args.max_downsets,
    )
    doc = plan.to_dict()
    print(json.dumps(doc, indent=1) if args.json else _summary(doc))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pipedream-plan`` to the ``pipeenv`` command."""
    p = subparsers.add_parser(
        "pipedream-plan",
        help="PipeDream's (SOSP'19) partitioning DP on its own cost model",
        description=(
            "Reproduce PipeDream's planner on a graph.txt profile (or a pipeenv graph .json): "
            "downset DP minimising the slowest stage, machines summing to N."
        ),
    )
    p.add_argument("profile", help="PipeDream graph.txt (or pipeenv graph .json)")
    p.add_argument("-n", "--num-machines", type=int, required=True, help="machines N")
    p.add_argument(
        "-b", "--bandwidth", type=float, default=1e9, help="bytes/s between machines (1e9)"
    )
    p.add_argument("--straight-pipeline", action="store_true", help="no replication: N stages")
    p.add_argument(
        "--activation-compression-ratio",
        type=float,
        default=None,
        help="charge activation transfers, compressed by this ratio",
    )
    p.add_argument("--memory-size", type=float, default=16e9, help="bytes per machine (16e9)")
    p.add_argument(
        "--use-memory-constraint", action="store_true", help="enforce --memory-size per machine"
    )
    p.add_argument(
        "--max-downsets",
        type=int,
        default=3000,
        help="DP states before the graph is coarsened (default 3000)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(run=_run)
