"""``pipeenv clusters``: the built-in cluster presets."""

from __future__ import annotations

import argparse
import json
import sys

from pipeenv.cluster import PRESETS, load_cluster

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clusters", help="list cluster presets", description="List cluster presets.")
    p.add_argument("--json", action="store_true", help="print each preset's cluster/v1 JSON")
    p.add_argument("--show", metavar="NAME", help="print one preset's pipeenv.cluster/v1 JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.show:
        sys.stdout.write(json.dumps(load_cluster(args.show).to_dict(), indent=1) + "\n")
        return 0
    if args.json:
        docs = [load_cluster(name).to_dict() for name in PRESETS]
        sys.stdout.write(json.dumps(docs, indent=1) + "\n")
        return 0
    width = max(len(name) for name in PRESETS)
    sys.stdout.write(f"{'name':<{width}}  devices  nodes  description\n")
    for name, (description, _) in PRESETS.items():
        c = load_cluster(name)
        sys.stdout.write(f"{name:<{width}}  {c.num_devices:>7}  {c.num_nodes:>5}  {description}\n")
    return 0
