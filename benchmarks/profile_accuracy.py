"""Does per-node profiling add up? Measured per-node times vs the measured whole model.

For ``tiny-gpt`` and ``tiny-inception`` on this CPU: the sum over nodes of the measured forward
and backward times (``pipeenv.zoo.profile``, each node timed inside whole-model passes) against
the measured forward+backward time of the whole model (``pipeenv.zoo.measure.measure_model``,
forward then backward in each pass, as in training; same seeds, same microbatch). The machine is
shared, so by default both are timed by the thread's CPU time on one torch thread (the wall
clock also counts time the scheduler gives to other work; ``--timer wall`` to see it), in
alternating rounds, and the medians over rounds compared. Target (issue 3): within 20%. Timing
nodes in isolation gave -0.2% (tiny-gpt) and -10.8% (tiny-inception) against the whole model
timed as repeated forwards and repeated backwards. Run::

    python -m benchmarks.profile_accuracy [--timer cpu|wall] [--rounds 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from pipeenv import zoo
from pipeenv.zoo.measure import measure_model

MODELS = ("tiny-gpt", "tiny-inception")
TARGET = 0.20


def compare(
    name: str, microbatch_size: int, rounds: int, repeats: int, warmup: int, timer: str
) -> tuple[int, float, float, float, float, list[float]]:
    """(nodes, node fwd, node bwd, whole fwd, whole bwd, per-round ratios), medians in seconds."""
    device = torch.device("cpu")
    model = zoo.build_model(name, "cpu", "float32")
    inputs = zoo.example_inputs(name, microbatch_size, "cpu", "float32")
    node_fwd, node_bwd, whole_fwd, whole_bwd, ratios = [], [], [], [], []
    nodes = 0
    for _ in range(rounds):
        graph = zoo.profile(
            name, "cpu", microbatch_size, repeats=repeats, warmup=warmup, timer=timer
        )
        nodes = graph.num_nodes
        node_fwd.append(float(graph.arrays.forward_s.sum()))
        node_bwd.append(float(graph.arrays.backward_s.sum()))
        forward_s, backward_s = measure_model(
            model, inputs, device, repeats=repeats, warmup=warmup, timer=timer
        )
        whole_fwd.append(forward_s)
        whole_bwd.append(backward_s)
        ratios.append((node_fwd[-1] + node_bwd[-1]) / (forward_s + backward_s) - 1)
    med = statistics.median
    return nodes, med(node_fwd), med(node_bwd), med(whole_fwd), med(whole_bwd), ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timer", choices=("cpu", "wall"), default="cpu", help="clock (cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per round (5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (2)")
    parser.add_argument("--microbatch-size", type=int, default=8, help="samples (8)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"cpu, {args.threads} thread(s), {args.timer} clock, microbatch {args.microbatch_size}, "
        f"{args.rounds} rounds "
        f"of (median of {args.repeats} after {args.warmup} warm-up runs)"
    )
    print(
        f"{'model':<15} {'nodes':>5}  {'sum of nodes ms (fwd + bwd)':>28}  "
        f"{'whole model ms (fwd + bwd)':>27}  {'rel. diff':>9}  {'per round':>22}  target"
    )
    worst = 0.0
    for name in MODELS:
        nodes, nf, nb, wf, wb, ratios = compare(
            name, args.microbatch_size, args.rounds, args.repeats, args.warmup, args.timer
        )
        rel = (nf + nb) / (wf + wb) - 1
        worst = max(worst, abs(rel))
        spread = f"{min(ratios):+.1%} .. {max(ratios):+.1%}"
        print(
            f"{name:<15} {nodes:>5}  {(nf + nb) * 1e3:>8.2f} ({nf * 1e3:7.2f} + {nb * 1e3:7.2f})  "
            f"{(wf + wb) * 1e3:>8.2f} ({wf * 1e3:7.2f} + {wb * 1e3:7.2f})  {rel:>+9.1%}  "
            f"{spread:>22}  {'ok' if abs(rel) <= TARGET else 'MISSED'}"
        )
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
