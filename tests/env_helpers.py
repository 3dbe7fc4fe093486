"""Graphs and rollouts shared by the environment tests (``tests/test_env_*.py``)."""

from __future__ import annotations

import itertools
from typing import Any

import gymnasium as gym
import numpy as np

from benchmarks.env_speed import random_graph
from pipeenv.cluster import Cluster, Device, Link
from pipeenv.graph import Node, OperatorGraph

GiB = 1024**3


def chain(n: int, name: str = "chain", forward_s: float = 1e-3) -> OperatorGraph:
    """``n0 -> n1 -> ... -> n{n-1}`` with equal costs."""
    nodes = [Node(f"n{i}", "op", forward_s, 2 * forward_s, 1e6, 1e6) for i in range(n)]
    edges = [(f"n{i}", f"n{i + 1}") for i in range(n - 1)]
    return OperatorGraph(name, nodes, edges, microbatch_size=8)


def dag(nodes: int, edges: list[tuple[int, int]], name: str = "dag") -> OperatorGraph:
    """A graph ``n0 .. n{nodes-1}`` with the given index edges and unit-ish costs."""
    ns = [Node(f"n{i}", "op", 1e-3 * (1 + i % 3), 2e-3, 1e6, 1e6) for i in range(nodes)]
    return OperatorGraph(name, ns, [(f"n{u}", f"n{v}") for u, v in edges], microbatch_size=8)


def random_dag(n: int, seed: int, density: float = 0.15, name: str = "random") -> OperatorGraph:
    """A connected-ish random DAG with random costs (the environment benchmark's generator)."""
    return random_graph(n, seed, density, name)


def small_cluster(devices: int = 4, memory_bytes: float = 80 * GiB) -> Cluster:
    """``devices`` speed-1 devices on one node over a 100 GB/s link."""
    return Cluster(
        f"test-{devices}",
        [Device(f"d{i}", 0, 1.0, memory_bytes) for i in range(devices)],
        Link(1e11, 1e-6),
    )


def valid_plans(graph: OperatorGraph, num_stages: int) -> list[tuple[int, ...]]:
    """Every valid stage assignment (canonical order) of a small graph, by enumeration."""
    a = graph.arrays
    out = []
    for stages in itertools.product(range(num_stages), repeat=graph.num_nodes):
        arr = np.array(stages)
        if len(set(stages)) == num_stages and np.all(arr[a.edge_src] <= arr[a.edge_dst]):
            out.append(stages)
    return out


def masked_rollout(env: gym.Env[Any, Any], seed: int) -> tuple[float, dict[str, Any], list[int]]:
    """One episode of uniformly random allowed actions: (return, last info, actions)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    total, actions = 0.0, []
    while True:
        mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
        action = int(rng.choice(np.flatnonzero(mask)))
        actions.append(action)
        _, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        assert not truncated
        if terminated:
            return total, info, actions
