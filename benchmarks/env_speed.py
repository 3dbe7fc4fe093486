"""Speed of ``PipelinePartition-v0``: steps per second and reset time (issue 4).

A single process takes uniformly random allowed actions (``action_masks()``) on a 256-node graph
with 8 stages on ``8xA100-nvlink``; observation building and the terminal simulation are
included. Graphs: a random 256-node DAG (always) and the zoo's ``inception_v3`` coarsened to 256
nodes (when the zoo is available). Targets: >= 5,000 steps/s, reset < 5 ms after the first load.

    python benchmarks/env_speed.py [--episodes 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import gymnasium as gym
import numpy as np

import pipeenv
from pipeenv.graph import Node, OperatorGraph

__all__ = ["main", "measure", "random_graph"]


def random_graph(
    n: int = 256, seed: int = 0, density: float = 0.15, name: str | None = None
) -> OperatorGraph:
    """A random DAG with ``n`` nodes: each node fed by one of its 4 predecessors, plus skips
    from up to 12 nodes back with probability ``density / distance``."""
    rng = np.random.default_rng(seed)
    nodes = [
        Node(
            f"n{i}",
            "op",
            float(rng.uniform(1e-4, 1e-3)),
            float(rng.uniform(2e-4, 2e-3)),
            float(rng.integers(100_000, 10_000_000)),
            float(rng.integers(0, 100_000_000)),
        )
        for i in range(n)
    ]
    edges = {(f"n{rng.integers(max(0, i - 4), i)}", f"n{i}") for i in range(1, n)}
    edges |= {
        (f"n{j}", f"n{i}")
        for i in range(1, n)
        for j in range(max(0, i - 12), i)
        if rng.random() < density / (i - j)
    }
    return OperatorGraph(name or f"random-{n}", nodes, sorted(edges), microbatch_size=8)


def measure(graph: Any, episodes: int, seed: int = 0) -> dict[str, Any]:
    """Figures of ``episodes`` masked random episodes on ``graph`` (a graph or zoo name)."""
    started = time.perf_counter()
    env = gym.make(
        "PipelinePartition-v0",
        graph=graph,
        cluster="8xA100-nvlink",
        num_stages=8,
        max_nodes=256,
    )
    obs, _ = env.reset(seed=seed)
    first_load_s = time.perf_counter() - started
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    steps, reset_s, step_s = 0, 0.0, 0.0
    for _ in range(episodes):
        t0 = time.perf_counter()
        env.reset()
        t1 = time.perf_counter()
        reset_s += t1 - t0
        terminated = False
        while not terminated:
            allowed = np.flatnonzero(base.action_masks())  # type: ignore[attr-defined]
            _, _, terminated, _, _ = env.step(int(allowed[rng.integers(allowed.size)]))
            steps += 1
        step_s += time.perf_counter() - t1
    return {
        "graph": base.graph.name,  # type: ignore[attr-defined]
        "nodes": base.partitioned_graph.num_nodes,  # type: ignore[attr-defined]
        "original_nodes": base.graph.num_nodes,  # type: ignore[attr-defined]
        "stages": 8,
        "episodes": episodes,
        "steps_per_s": steps / step_s,
        "reset_ms": 1e3 * reset_s / episodes,
        "first_load_ms": 1e3 * first_load_s,
        "observation_bytes": int(sum(a.nbytes for a in obs.values())),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per graph (optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    graphs: list[Any] = [random_graph()]
    try:
        if "inception_v3" in pipeenv.zoo.names():
            graphs.append("inception_v3")
    except ModuleNotFoundError:
        pass
    measure(random_graph(32, 1), 1)  # compile the Numba kernels outside the timings
    rows = [measure(g, args.episodes) for g in graphs]
    for r in rows:
        print(
            f"{r['graph']:>14} ({r['nodes']}/{r['original_nodes']} nodes, {r['stages']} stages): "
            f"{r['steps_per_s']:,.0f} steps/s, reset {r['reset_ms']:.3f} ms, first load "
            f"{r['first_load_ms']:.1f} ms, observation {r['observation_bytes']:,} bytes"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
