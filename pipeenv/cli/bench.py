"""``pipeenv bench``: the benchmark sweep (see :mod:`benchmarks.sweep`)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    from benchmarks.sweep import add_arguments

    p = sub.add_parser(
        "bench",
        help="sweep zoo models x clusters x schedules x agents; tables and plots",
        description="Plan every model on every cluster with every agent; write results.csv, "
        "results.md, plans/ and PNG plots into --out.",
    )
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.sweep import run_from_args

    return run_from_args(args)
