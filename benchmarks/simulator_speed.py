"""Simulations per second of the Numba kernel and the Python twin (issue 2's speed target).

A random 200-node DAG (a chain with skip connections), random valid non-contiguous plans,
homogeneous 16-device NVLink cluster; each ``simulate()`` call includes all Python overhead
(argument checks, array lookups, result object). Targets: kernel >= 100x the twin at
(S, M) = (8, 32), and under 20 us per call there. Run::

    python -m benchmarks.simulator_speed
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeenv.cluster import Cluster, Device, Link
from pipeenv.graph import Node, OperatorGraph
from pipeenv.plan import Plan
from pipeenv.simulator import simulate

CASES = [(4, 16), (8, 32), (16, 64)]


def random_graph(rng: np.random.Generator, num_nodes: int = 200) -> OperatorGraph:
    """A chain of ``num_nodes`` ops with a skip edge every 7 nodes, costs in ms and MB."""
    nodes = [
        Node(
            f"op{i}",
            "op",
            float(rng.uniform(1e-4, 1e-3)),
            float(rng.uniform(2e-4, 2e-3)),
            float(rng.integers(1 << 16, 1 << 24)),
            float(rng.integers(0, 1 << 24)),
        )
        for i in range(num_nodes)
    ]
    edges = [(f"op{i}", f"op{i + 1}") for i in range(num_nodes - 1)]
    edges += [(f"op{i}", f"op{i + 5}") for i in range(0, num_nodes - 5, 7)]
    return OperatorGraph("bench-200", nodes, edges, microbatch_size=8)


def random_plans(
    rng: np.random.Generator, graph: OperatorGraph, num_stages: int, microbatches: int, count: int
) -> list[Plan]:
    """``count`` valid plans: random contiguous cuts of the canonical order."""
    plans = []
    for _ in range(count):
        cuts = np.sort(rng.choice(np.arange(1, graph.num_nodes), num_stages - 1, replace=False))
        stages = np.searchsorted(cuts, np.arange(graph.num_nodes), side="right")
        plans.append(
            Plan.from_stages(
                graph,
                stages,
                num_stages=num_stages,
                devices=list(range(num_stages)),
                microbatches=microbatches,
            )
        )
    return plans


def per_call_s(
    graph: OperatorGraph, cluster: Cluster, plans: list[Plan], engine: str, budget_s: float
) -> float:
    """Mean seconds per simulate() call, cycling through ``plans`` for about ``budget_s``."""
    simulate(graph, cluster, plans[0], engine=engine)  # compile / warm caches
    calls = 0
    start = time.perf_counter()
    while True:
        for plan in plans:
            simulate(graph, cluster, plan, engine=engine)
        calls += len(plans)
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    graph = random_graph(rng)
    cluster = Cluster(
        "16-nvlink",
        [Device(f"gpu{i}", 0, 1.0, 80 * 2**30) for i in range(16)],
        Link(3e11, 5e-6),
    )
    print(f"graph: {graph.num_nodes} nodes, {graph.num_edges} edges; cluster: 16 devices")
    print(
        f"{'S':>3} {'M':>4}  {'numba us/call':>13} {'numba sims/s':>12}  "
        f"{'python us/call':>14} {'python sims/s':>13}  {'ratio':>6}"
    )
    for num_stages, microbatches in CASES:
        plans = random_plans(rng, graph, num_stages, microbatches, 64)
        fast = per_call_s(graph, cluster, plans, "numba", args.seconds)
        slow = per_call_s(graph, cluster, plans[:8], "python", args.seconds)
        print(
            f"{num_stages:>3} {microbatches:>4}  {fast * 1e6:>13.2f} {1 / fast:>12.0f}  "
            f"{slow * 1e6:>14.1f} {1 / slow:>13.0f}  {slow / fast:>6.0f}x"
        )


if __name__ == "__main__":
    main()
