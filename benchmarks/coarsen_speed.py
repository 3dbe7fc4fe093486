"""Coarsening speed: op-level graphs of thousands of nodes down to 64-512 nodes.

Issue 3, item 5 asks for "well under a second". Prints the best of a few runs of
:func:`pipeenv.coarsen.coarsen` on a random ~3000-node DAG (a backbone with skip edges and
module paths, like a traced model) and on the real NASNet-A Large PipeDream profile (1251 nodes)
when ``../shared/profiles`` is present.

Run: ``python benchmarks/coarsen_speed.py``
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeenv.coarsen import coarsen
from pipeenv.graph import Node, OperatorGraph
from pipeenv.importers import from_pipedream

__all__ = ["main", "random_model_graph"]

NASNET = Path(__file__).resolve().parents[2] / "shared/profiles/pipedream/nasnetalarge/graph.txt"
TARGETS = (512, 256, 128, 64)


def random_model_graph(num_nodes: int = 3000, seed: int = 0) -> OperatorGraph:
    """A random DAG: a chain backbone, 1-2 skip edges back up to 20 nodes, 30 nodes per module."""
    rng = np.random.default_rng(seed)
    nodes = [
        Node(
            f"block{i // 30}.op{i % 30}",
            "op",
            float(rng.uniform(1e-4, 1e-3)),
            float(rng.uniform(2e-4, 2e-3)),
            float(rng.integers(1, 10**7)),
            float(rng.integers(0, 10**6)),
        )
        for i in range(num_nodes)
    ]
    edges = set()
    for i in range(1, num_nodes):
        edges.add((i - 1, i))
        for _ in range(int(rng.integers(0, 3))):
            edges.add((int(rng.integers(max(0, i - 20), i)), i))
    return OperatorGraph(
        "random3000",
        nodes,
        [(nodes[u].id, nodes[v].id) for u, v in sorted(edges)],
        microbatch_size=1,
    )


def _time(graph: OperatorGraph, max_nodes: int, repeats: int = 3) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = coarsen(graph, max_nodes)
        best = min(best, time.perf_counter() - start)
        size = result.graph.num_nodes
    return best, size


def main() -> None:
    graphs = [random_model_graph()]
    if NASNET.exists():
        graphs.append(from_pipedream(NASNET))
    else:
        print(f"({NASNET} not present: skipping the NASNet profile)")
    print(f"{'graph':14s} {'nodes':>6s} {'edges':>6s} {'target':>6s} {'got':>5s} {'seconds':>8s}")
    for graph in graphs:
        for target in TARGETS:
            seconds, size = _time(graph, target)
            print(
                f"{graph.name:14s} {graph.num_nodes:6d} {graph.num_edges:6d} {target:6d} "
                f"{size:5d} {seconds:8.4f}"
            )


if __name__ == "__main__":
    main()
