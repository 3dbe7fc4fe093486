"""Validator fidelity: measured vs predicted iteration time of 2-stage plans on this host.

Four plans, each run with ``pipeenv.validate`` (numerics checked) and compared with the
simulator on a cached profile of the same model, device and microbatch size:

- ``tiny-gpt``, contiguous: the first half of the canonical order on stage 0;
- ``tiny-gpt``, split across a residual connection (stage 0 ends inside a block, so the
  residual stream and the branch both cross);
- ``tiny-inception``, contiguous: stem to ``pool1`` and the second cell on stage 0;
- ``tiny-inception``, branches split: the second cell's 1x1 and pooled branches stay on stage 0
  with everything before them, its two 3x3 branches and everything after go to stage 1 (a
  non-contiguous plan).

On CPU with gloo and one thread per rank (the ``cpu-2`` preset); with NCCL when CUDA exists
(then ``--cluster`` must describe the GPUs). The table gives, per plan and schedule, the
numerics verdict, predicted and measured iteration time, the error, its split into the part due
to the stage times (SPEC §4 replayed on the measured stage times, against the prediction) and
the rest (the runtime: measured against that replay), the relative errors of the stages'
forward and backward times and each stage's share of a core while computing (below 1 when other
processes compete for the cores; ``--min-idle`` waits for a quiet host before each attempt).

Each plan runs ``--attempts`` times (default 3); each attempt profiles the model again right
before its run (a shared host's speed drifts over minutes, and profile and run should see the
same host), and the row shows the attempt with the median error and the range of all of them;
the JSON keeps every report, measured timelines included. Both schedules run by default. Run::

    python -m benchmarks.validator_fidelity [--microbatches 4] [--iters 10] [--attempts 3]
    python -m benchmarks.validator_fidelity --device cuda --cluster gpus.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from pipeenv import zoo
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.validate import ValidationReport, validate
from pipeenv.validate.prediction import cached_profile


def contiguous_plan(graph: OperatorGraph, cut: int, microbatches: int, schedule: str) -> Plan:
    """Nodes before canonical position ``cut`` on stage 0, the rest on stage 1."""
    stages = [0 if i < cut else 1 for i in range(graph.num_nodes)]
    return Plan.from_stages(
        graph, stages, num_stages=2, devices=[0, 1], microbatches=microbatches, schedule=schedule
    )


def branch_split_plan(graph: OperatorGraph, microbatches: int, schedule: str) -> Plan:
    """tiny-inception split inside its second cell: the cell's two 3x3 branches and everything
    after its concatenation on stage 1; the stem, the first cell and the second cell's 1x1 and
    pooled branches on stage 0 (stages are not contiguous in the canonical order)."""
    stage_of = {nid: 1 if nid.startswith("cell2_branch3x3") else 0 for nid in graph.order}
    for nid in graph.order:  # canonical order is topological: one pass closes downstream
        if stage_of[nid] == 1:
            for a, b in graph.edges:
                if a == nid:
                    stage_of[b] = 1
    return Plan(
        stage_of,
        num_stages=2,
        devices=[0, 1],
        microbatches=microbatches,
        schedule=schedule,
        graph=graph.name,
        graph_hash=graph.graph_hash,
    )


def plans(microbatch_size: int, microbatches: int, schedule: str) -> list[tuple[str, str, Plan]]:
    """(model, label, plan) of the four benchmark plans."""
    gpt = zoo.load("tiny-gpt", microbatch_size=microbatch_size)
    inc = zoo.load("tiny-inception", microbatch_size=microbatch_size)
    gpt_mid = gpt.order.index("add_3") + 1
    gpt_res = gpt.order.index("h_1_attn") + 1
    inc_mid = inc.order.index("cat_1") + 1
    return [
        ("tiny-gpt", "contiguous", contiguous_plan(gpt, gpt_mid, microbatches, schedule)),
        ("tiny-gpt", "residual split", contiguous_plan(gpt, gpt_res, microbatches, schedule)),
        ("tiny-inception", "contiguous", contiguous_plan(inc, inc_mid, microbatches, schedule)),
        ("tiny-inception", "branches split", branch_split_plan(inc, microbatches, schedule)),
    ]


def idle_fraction(seconds: float = 2.0) -> float:
    """Share of all cores idle over ``seconds`` (from /proc/stat; 1.0 where it is absent)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        return fields[3] + fields[4], sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except OSError:
        return 1.0
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_idle(min_idle: float, max_wait_s: float) -> float:
    """Wait until at least ``min_idle`` of the cores are idle (or ``max_wait_s`` passed)."""
    deadline = time.monotonic() + max_wait_s
    idle = idle_fraction()
    while idle < min_idle and time.monotonic() < deadline:
        idle = idle_fraction()
    return idle


def _shares(doc: dict[str, Any]) -> str:
    shares = doc["environment"].get("stage_cpu_share") or []
    return "/".join(f"{x:.2f}" for x in shares)


def _row(
    model: str, label: str, schedule: str, report: ValidationReport, errors: list[float]
) -> str:
    d = report.to_dict()
    st = d["stages"]
    spread = f"{min(errors):+.1%}..{max(errors):+.1%}" if len(errors) > 1 else "-"
    return (
        f"{model:<15} {label:<15} {schedule:<6} {'OK' if report.numerics_ok else 'MISMATCH':<8} "
        f"{d['predicted']['iteration_s'] * 1e3:>8.1f} {d['measured']['iteration_s'] * 1e3:>8.1f} "
        f"{report.iteration_error:>+7.1%} {spread:>15} "
        f"{d['stage_time_error']:>+7.1%} {d['runtime_error']:>+7.1%} "
        f"{st[0]['forward_error']:>+5.0%}/{st[1]['forward_error']:<+5.0%} "
        f"{st[0]['backward_error']:>+5.0%}/{st[1]['backward_error']:<+5.0%} "
        f"{_shares(d):>10}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--microbatch-size", type=int, default=8)
    parser.add_argument("--microbatches", type=int, default=4)
    parser.add_argument(
        "--schedule",
        nargs="+",
        choices=("1f1b", "gpipe"),
        default=["1f1b", "gpipe"],
        help="schedules to run each plan with (default: both)",
    )
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cluster", help="cluster file for the prediction (GPUs)")
    parser.add_argument("--json", metavar="OUT.json", help="also write every report")
    parser.add_argument(
        "--min-idle",
        type=float,
        default=0.0,
        help="before each profile and run, wait until this share of the cores is idle",
    )
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds, for --min-idle")
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="profile-then-run attempts per plan; the attempt with the median error is shown",
    )
    parser.add_argument(
        "--only", metavar="TEXT", help="run only the plans whose 'model plan' contains TEXT"
    )
    parser.add_argument(
        "--cached-profile",
        action="store_true",
        help="reuse the cached profile (default: profile again right before each attempt)",
    )
    args = parser.parse_args(argv)
    backend = "nccl" if args.device == "cuda" else "gloo"
    rows, docs = [], []
    header = (
        f"{'model':<15} {'plan':<15} {'sched':<6} {'numerics':<8} {'pred ms':>8} {'meas ms':>8} "
        f"{'error':>7} {'error range':>15} {'stages':>7} {'runtime':>7} "
        f"{'F err s0/s1':>11} {'B err s0/s1':>11} "
        f"{'cpu share':>10}"
    )
    for schedule in args.schedule:
        for model, label, plan in plans(args.microbatch_size, args.microbatches, schedule):
            if args.only and args.only not in f"{model} {label}":
                continue
            reports: list[ValidationReport] = []
            for _ in range(args.attempts):
                # Profile and run back to back: a shared host's speed drifts over minutes.
                idle = wait_for_idle(args.min_idle, args.max_wait)
                if not args.cached_profile:
                    cached_profile(model, args.device, args.microbatch_size, 1, refresh=True)
                report = validate(
                    model,
                    plan,
                    backend=backend,
                    device=args.device,
                    microbatch_size=args.microbatch_size,
                    iters=args.iters,
                    warmup=args.warmup,
                    cluster=args.cluster,
                )
                assert report is not None
                reports.append(report)
                docs.append({"label": label, "idle_before": idle, **report.to_dict()})
                print(
                    _row(model, label, schedule, report, [report.iteration_error]),
                    file=sys.stderr,
                    flush=True,
                )
            errors = [r.iteration_error for r in reports]
            median = sorted(reports, key=lambda r: r.iteration_error)[len(reports) // 2]
            rows.append(_row(model, label, schedule, median, errors))
    print(
        f"{backend} on {args.device}, microbatch {args.microbatch_size}, M={args.microbatches}, "
        f"median of {args.iters} iterations after {args.warmup} warm-up; each row the median of "
        f"{args.attempts} profile-then-run attempts; {os.cpu_count()} cores"
    )
    print(header)
    print("\n".join(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(docs, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
