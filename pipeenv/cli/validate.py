"""``pipeenv validate``: run a plan for real and compare it with the simulator's prediction."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeenv.errors import PipeenvError
from pipeenv.plan import load_plan

__all__ = ["register"]

TORCHRUN_EXAMPLE = (
    "several hosts: torchrun --nnodes 2 --nproc-per-node 2 --node-rank K "
    "--rdzv-backend c10d --rdzv-endpoint HOST0:29500 -m pipeenv validate --plan plan.json "
    "--model tiny-gpt --backend nccl --device cuda --cluster cluster.json --out report.json"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="run a plan with torch.distributed.pipelining; check numerics and predicted times",
        description="Run PLAN on zoo model MODEL, one process per stage replica on this host "
        "(or one rank of a torchrun job), check loss and gradients against the plain model and "
        "compare measured with predicted iteration and stage times.",
        epilog=TORCHRUN_EXAMPLE,
    )
    p.add_argument("--plan", required=True, help="pipeenv.plan/v1 JSON file")
    p.add_argument("--model", required=True, help="zoo model name (pipeenv zoo list)")
    p.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--microbatch-size", type=int, help="default: the model's")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    p.add_argument("--cluster", help="cluster for the prediction (default cpu-N; GPUs: required)")
    p.add_argument(
        "--refresh-profile", action="store_true", help="profile again instead of using the cache"
    )
    p.add_argument("--out", metavar="REPORT.json", help="write the pipeenv.validation/v1 report")
    p.add_argument(
        "--gantt", metavar="PNG", help="draw the predicted and the measured timeline as a PNG"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out/--gantt files")
    p.add_argument("--json", action="store_true", help="print the report JSON, not the table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pipeenv.validate import under_torchrun, validate

    for path in (args.out, args.gantt):
        # Refused before the run, which can take minutes; under torchrun only rank 0 writes.
        if path and Path(path).exists() and not args.force and _writes(under_torchrun()):
            raise PipeenvError(f"output: {path} exists (pass --force to overwrite)")
    report = validate(
        args.model,
        load_plan(args.plan),
        backend=args.backend,
        device=args.device,
        microbatch_size=args.microbatch_size,
        iters=args.iters,
        warmup=args.warmup,
        timeout_s=args.timeout,
        threads=args.threads,
        cluster=args.cluster,
        refresh_profile=args.refresh_profile,
    )
    if report is None:  # a torchrun rank other than 0
        return 0
    if args.out:
        report.save(args.out)
    if args.gantt:
        report.gantt_png(args.gantt)
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=1) + "\n")
    else:
        sys.stdout.write(report.table() + "\n")
    if not report.numerics_ok:
        sys.stderr.write(
            "pipeenv validate: error: numerics mismatch: the pipelined model "
            "does not compute what the plain model computes\n"
        )
        return 1
    return 0


def _writes(torchrun: bool) -> bool:
    """Whether this process writes the report: always locally, rank 0 under torchrun."""
    import os

    return not torchrun or os.environ.get("RANK") == "0"
