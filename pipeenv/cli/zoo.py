"""``pipeenv zoo``: list, show and export the model zoo's operator graphs."""

from __future__ import annotations

import argparse
import json
import sys

from pipeenv.zoo.costs import DEVICES, DTYPES

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``zoo list``, ``zoo show`` and ``zoo export``."""
    p = sub.add_parser("zoo", help="the model zoo", description="The model zoo's operator graphs.")
    zoo_sub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    p_list = zoo_sub.add_parser("list", help="list the models", description="List the models.")
    p_list.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    p_list.set_defaults(run=run_list)
    p_show = zoo_sub.add_parser("show", help="describe one model", description="Describe a model.")
    p_show.add_argument("name", help="model name (see `pipeenv zoo list`)")
    p_show.add_argument("--json", action="store_true", help="print JSON")
    p_show.set_defaults(run=run_show)
    p_exp = zoo_sub.add_parser(
        "export",
        help="write a model's graph",
        description="Write a model's analytic pipeenv.graph/v1 JSON.",
    )
    p_exp.add_argument("name", help="model name (see `pipeenv zoo list`)")
    p_exp.add_argument("--out", required=True, help="output JSON file")
    p_exp.add_argument("--device", default="a100", choices=list(DEVICES), help="preset (a100)")
    p_exp.add_argument("--microbatch-size", type=int, help="samples per microbatch (model's)")
    p_exp.add_argument("--dtype", choices=DTYPES, help="parameter/activation dtype (model's)")
    p_exp.add_argument("--force", action="store_true", help="overwrite an existing file")
    p_exp.set_defaults(run=run_export)


def run_list(args: argparse.Namespace) -> int:
    from pipeenv import zoo

    rows = [zoo.info(name) for name in zoo.names()]
    if args.json:
        keys = (
            "name",
            "nodes",
            "edges",
            "params",
            "is_chain",
            "device",
            "dtype",
            "microbatch_size",
        )
        sys.stdout.write(json.dumps([{k: r[k] for k in keys} for r in rows], indent=1) + "\n")
        return 0
    width = max(len(r["name"]) for r in rows)
    sys.stdout.write(
        f"{'name':<{width}}  {'nodes':>5}  {'edges':>5}  {'params':>13}  chain  device  dtype     "
        "fwd+bwd ms\n"
    )
    for r in rows:
        sys.stdout.write(
            f"{r['name']:<{width}}  {r['nodes']:>5}  {r['edges']:>5}  {r['params']:>13,}  "
            f"{'yes' if r['is_chain'] else 'no':<5}  {r['device']:<6}  {r['dtype']:<8}  "
            f"{r['forward_backward_s'] * 1e3:>10.3f}\n"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    from pipeenv import zoo

    summary = zoo.info(args.name)
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
        return 0
    for key, value in summary.items():
        shown = f"{value:,}" if key == "params" else value
        if key == "forward_backward_s":
            key, shown = "forward+backward ms", f"{value * 1e3:.3f} per microbatch"
        sys.stdout.write(f"{key:>20}: {shown}\n")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pipeenv import zoo

    graph = zoo.load(args.name, args.device, args.microbatch_size, args.dtype)
    graph.save(args.out, overwrite=args.force)
    sys.stdout.write(f"wrote {args.out}: {graph.num_nodes} nodes, {graph.num_edges} edges\n")
    return 0
