"""``pipeenv train``: train a learned agent, evaluating it against ``pipedream-dp`` as it goes.

The work is :func:`agents.train.train`; this module parses, calls it and prints the figures.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeenv.errors import PipeenvError

__all__ = ["register"]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _json_object(text: str | None, flag: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipeenvError(f"{flag} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise PipeenvError(f"{flag} must be a JSON object")
    return value


def _fmt_reached(reached: dict[str, Any] | None) -> str:
    if reached is None:
        return "not reached"
    return f"{reached['timesteps']} steps, {reached['train_wall_s']:.0f} s"


def _run(args: argparse.Namespace) -> int:
    from agents.train import train

    cost = train(
        args.agent,
        _names(args.graphs),
        args.cluster,
        args.timesteps,
        args.out,
        seed=args.seed,
        n_envs=args.n_envs,
        num_stages=args.stages,
        microbatches=args.microbatches,
        schedule=args.schedule,
        data_parallel=args.data_parallel,
        eval_graphs=_names(args.eval_graphs or ""),
        eval_freq=args.eval_freq,
        checkpoint_freq=args.checkpoint_freq,
        samples=args.samples,
        max_nodes=args.max_nodes,
        time_limit_s=args.time_limit,
        stop_ratio=args.stop_ratio,
        hyperparameters=_json_object(args.hyperparameters, "--hyperparameters"),
        force=args.force,
        progress_bar=not args.no_progress,
    )
    print(
        f"{cost['agent']}: {cost['timesteps']} steps in {cost['train_wall_s']:.0f} s of training "
        f"({cost['wall_s']:.0f} s with evaluations); model in {args.out}/model.zip"
    )
    for name, figures in cost["graphs"].items():
        kind = "held out" if figures["held_out"] else "trained"
        reached = figures["reached"]
        print(
            f"  {name} ({kind}): final {figures['final_ratio']:.3f}, best "
            f"{figures['best_ratio']:.3f} of pipedream-dp; 90%: {_fmt_reached(reached['0.90'])}; "
            f"95%: {_fmt_reached(reached['0.95'])}; 100%: {_fmt_reached(reached['1.00'])}"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``pipeenv train``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train a learned agent (ppo-gcn, recurrent-gcn, oneshot-gcn)",
        description=(
            "Train a learned agent on one or several graphs, evaluating it every --eval-freq "
            "steps against pipedream-dp on those and on held-out graphs. Writes model.zip, "
            "best_model.zip, checkpoints, evaluations.json and training_cost.json (steps and "
            "wall time to reach 90/95/100%% of pipedream-dp's throughput, per graph) to --out."
        ),
    )
    p.add_argument("--agent", required=True, help="ppo-gcn, recurrent-gcn or oneshot-gcn")
    p.add_argument(
        "--graphs", required=True, help="training graphs, comma-separated (zoo names or files)"
    )
    p.add_argument("--cluster", required=True, help="cluster preset or file")
    p.add_argument("--timesteps", type=int, required=True, help="environment steps to train for")
    p.add_argument("--out", required=True, help="run directory (refused if it exists, see --force)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=8, help="environments stepped together")
    p.add_argument("--stages", type=int, default=4, help="pipeline stages (default 4)")
    p.add_argument("--microbatches", type=int, default=16, help="microbatches (default 16)")
    p.add_argument("--schedule", default="1f1b", help="gpipe or 1f1b (default 1f1b)")
    p.add_argument("--data-parallel", type=int, default=1, help="replicas (default 1)")
    p.add_argument("--eval-graphs", help="held-out graphs, comma-separated")
    p.add_argument("--eval-freq", type=int, default=4096, help="steps between evaluations")
    p.add_argument(
        "--checkpoint-freq", type=int, default=0, help="steps between checkpoints (0: none)"
    )
    p.add_argument("--samples", type=int, default=4, help="sampled episodes per evaluation")
    p.add_argument("--max-nodes", type=int, default=64, help="node padding (graphs are coarsened)")
    p.add_argument("--time-limit", type=float, help="stop after this many seconds of training")
    p.add_argument(
        "--stop-ratio", type=float,
        help="stop once every training graph reaches this fraction of pipedream-dp",
    )
    p.add_argument("--hyperparameters", help="JSON object overriding the algorithm's settings")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run)
