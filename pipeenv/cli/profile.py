"""``pipeenv profile``: measure a zoo model's per-node times on this machine."""

from __future__ import annotations

import argparse
import sys

from pipeenv.zoo.costs import DTYPES

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``profile``."""
    p = sub.add_parser(
        "profile",
        help="measure a model's per-node times",
        description="Measure a zoo model's forward and backward time per node on the local "
        "device and write its pipeenv.graph/v1 JSON.",
    )
    p.add_argument(
        "model",
        help="zoo model name (see `pipeenv zoo list`), or package.module:function returning "
        "(model, inputs) for a model of your own",
    )
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    p.add_argument("--microbatch-size", type=int, help="zoo: samples per microbatch (model's)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="zoo: dtype (float32)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per node (10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (torch's default)")
    p.add_argument(
        "--timer",
        choices=("wall", "cpu"),
        default="wall",
        help="wall clock, or the thread's CPU time (cpu, --threads 1; robust on a busy machine)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipeenv import zoo
    from pipeenv.errors import PipeenvError

    if args.threads is not None:
        if args.threads < 1:
            raise PipeenvError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if ":" in args.model:
        model, inputs = zoo.load_factory(args.model)
        name = args.model.partition(":")[2]
        graph = zoo.profile_module(
            model.to(args.device),
            [t.to(args.device) for t in inputs],
            name,
            args.device,
            repeats=args.repeats,
            warmup=args.warmup,
            timer=args.timer,
        )
    else:
        graph = zoo.profile(
            args.model,
            args.device,
            args.microbatch_size,
            args.dtype,
            repeats=args.repeats,
            warmup=args.warmup,
            timer=args.timer,
        )
    graph.save(args.out, overwrite=args.force)
    sys.stdout.write(
        f"wrote {args.out}: {graph.num_nodes} nodes, forward+backward "
        f"{graph.total_compute_s * 1e3:.3f} ms per microbatch of {graph.microbatch_size}\n"
    )
    return 0
