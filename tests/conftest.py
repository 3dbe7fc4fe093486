"""Shared fixtures and builders for the test suite."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeenv.cluster import Cluster, Device, Link
from pipeenv.graph import Node, OperatorGraph

# Numba compiles on first use; keep the test processes single-threaded on 2-core CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PIPEDREAM_PROFILES = SHARED / "profiles" / "pipedream"


def chain(
    forward: Sequence[float],
    backward: Sequence[float] | None = None,
    *,
    output_bytes: float = 0.0,
    param_bytes: float = 0.0,
    microbatch_size: int = 1,
) -> OperatorGraph:
    """A chain n0 -> n1 -> ... with the given forward times (backward = 2x unless given)."""
    backward = backward if backward is not None else [2 * f for f in forward]
    nodes = [
        Node(f"n{i}", "op", float(f), float(b), output_bytes, param_bytes)
        for i, (f, b) in enumerate(zip(forward, backward, strict=True))
    ]
    edges = [(f"n{i}", f"n{i + 1}") for i in range(len(nodes) - 1)]
    return OperatorGraph("chain", nodes, edges, microbatch_size=microbatch_size)


def cluster(
    speeds: Sequence[float],
    *,
    nodes: Sequence[int] | None = None,
    memory: float = 1e12,
    intra: Link = Link(1e30, 0.0),
    inter: Link = Link(1e30, 0.0),
) -> Cluster:
    """A cluster with one device per speed (all on node 0 unless ``nodes`` is given)."""
    nodes = nodes if nodes is not None else [0] * len(speeds)
    devices = [
        Device(f"d{i}", nd, float(s), memory) for i, (s, nd) in enumerate(zip(speeds, nodes))
    ]
    return Cluster("test", devices, intra, inter)


def random_dag(rng: np.random.Generator, num_nodes: int, extra_edges: int = 3) -> OperatorGraph:
    """A random connected DAG: a chain backbone plus forward skip edges, random costs."""
    nodes = [
        Node(
            f"v{i}",
            "op",
            float(rng.uniform(0.1, 2.0)),
            float(rng.uniform(0.1, 4.0)),
            float(rng.integers(0, 1000)),
            float(rng.integers(0, 1000)),
            float(rng.integers(0, 1000)),
        )
        for i in range(num_nodes)
    ]
    edges = {(i, i + 1) for i in range(num_nodes - 1)}
    for _ in range(extra_edges):
        a, b = sorted(rng.choice(num_nodes, size=2, replace=False).tolist())
        edges.add((a, b))
    return OperatorGraph(
        "random", nodes, [(f"v{a}", f"v{b}") for a, b in sorted(edges)], microbatch_size=2
    )


@pytest.fixture
def tiny_chain() -> OperatorGraph:
    return chain([1.0, 1.0, 1.0, 1.0])


def random_stages(rng: np.random.Generator, graph: OperatorGraph, num_stages: int) -> np.ndarray:
    """A random valid stage array (canonical order), contiguous cuts then single-node moves."""
    n = graph.num_nodes
    cuts = np.sort(rng.choice(np.arange(1, n), size=num_stages - 1, replace=False))
    stages = np.searchsorted(cuts, np.arange(n), side="right").astype(np.int64)
    a = graph.arrays
    for _ in range(n):
        u = int(rng.integers(n))
        preds = a.pred_idx[a.pred_ptr[u] : a.pred_ptr[u + 1]]
        succs = a.succ_idx[a.succ_ptr[u] : a.succ_ptr[u + 1]]
        low = int(stages[preds].max()) if preds.size else 0
        high = int(stages[succs].min()) if succs.size else num_stages - 1
        if np.count_nonzero(stages == stages[u]) > 1:
            stages[u] = int(rng.integers(low, high + 1))
    return stages
