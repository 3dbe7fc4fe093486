"""``pipeenv import-pipedream``: convert a PipeDream ``graph.txt`` to ``pipeenv.graph/v1``."""

from __future__ import annotations

import argparse

from pipeenv.importers.pipedream import from_pipedream

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    graph = from_pipedream(
        args.profile,
        batch_size=args.batch_size,
        microbatch_size=args.microbatch_size,
        name=args.name,
    )
    graph.save(args.out, overwrite=args.force)
    print(
        f"{graph.name}: {graph.num_nodes} nodes, {graph.num_edges} edges, "
        f"forward+backward {graph.total_compute_s * 1000:.3f} ms per microbatch of "
        f"{graph.microbatch_size}, params {graph.total_param_bytes / 1e6:.1f} MB -> {args.out}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import-pipedream`` to the ``pipeenv`` command."""
    p = subparsers.add_parser(
        "import-pipedream",
        help="convert a PipeDream graph.txt profile to a pipeenv graph JSON",
        description=(
            "Convert a PipeDream graph.txt to pipeenv.graph/v1: ms -> s, activation lists summed, "
            "Input nodes kept at zero cost. Without size options costs stay per profiled "
            "minibatch; with --batch-size N --microbatch-size m they are scaled by m/N "
            "(parameters are not)."
        ),
    )
    p.add_argument("profile", help="PipeDream graph.txt")
    p.add_argument("--out", required=True, help="output graph JSON")
    p.add_argument("--batch-size", type=int, default=None, help="samples in the profiled minibatch")
    p.add_argument(
        "--microbatch-size", type=int, default=None, help="samples per microbatch to scale to"
    )
    p.add_argument("--name", default=None, help="graph name (default: folder or file name)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(run=_run)
