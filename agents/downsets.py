"""Downsets of a DAG: the states of PipeDream's dynamic program.

PipeDream (Narayanan et al., SOSP 2019, §3.1) cuts a model into stages along its layers; on a
DAG the prefixes of that cut are *downsets* (sets closed under predecessors; the paper's code
represents each by its antichain of maximal nodes). A pipeline is a chain of downsets
``∅ ⊊ D1 ⊊ ... ⊊ V`` and stage ``i`` is ``D(i) \\ D(i-1)``.

**Enumeration.** Nodes are numbered in the graph's canonical (topological) order. Every non-empty
downset ``D`` is generated exactly once, from ``D`` minus its highest-numbered node ``x`` (that
node has no successor in ``D``, so ``D - {x}`` is a downset too): children of ``D`` are
``D + {v}`` for each *addable* node ``v`` (all predecessors in ``D``, ``v`` not in ``D``) with
``v > max(D)``. The addable set is updated incrementally, so a downset costs time proportional to
its frontier, not to the graph.

**The cap.** A chain of n nodes has n + 1 downsets, but parallel branches multiply them (k
independent branches of length l give (l+1)^k), which is why PipeDream's optimizer runs out of
memory on NASNet. :func:`enumerate_downsets` stops with :class:`TooManyDownsets` as soon as the
count exceeds ``max_downsets``; callers then coarsen the graph (:mod:`pipeenv.coarsen`) and
retry, which restricts the cuts to group boundaries (see :func:`bounded_downsets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeenv.coarsen import Coarsening, coarsen
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph

__all__ = [
    "DEFAULT_MAX_DOWNSETS",
    "Downsets",
    "TooManyDownsets",
    "bounded_downsets",
    "enumerate_downsets",
]

DEFAULT_MAX_DOWNSETS = 3000


class TooManyDownsets(PipeenvError):
    """The graph has more downsets than the cap allows."""


@dataclass(frozen=True)
class Downsets:
    """All downsets of a graph, smallest first (a linear extension of inclusion).

    :param graph: the graph whose nodes the columns index (canonical order).
    :param members: bool matrix ``(count, num_nodes)``; row 0 is the empty set, the last row the
        whole graph.
    """

    graph: OperatorGraph
    members: np.ndarray

    @property
    def count(self) -> int:
        return int(self.members.shape[0])

    @cached_property
    def sizes(self) -> np.ndarray:
        """Number of nodes of each downset."""
        return self.members.sum(axis=1)

    @cached_property
    def _words(self) -> np.ndarray:
        packed = np.packbits(self.members, axis=1)
        pad = (-packed.shape[1]) % 8
        if pad:
            packed = np.pad(packed, ((0, 0), (0, pad)))
        return np.ascontiguousarray(packed).view(np.uint64)

    def proper_subsets(self, j: int) -> np.ndarray:
        """Indices ``k < j`` of the downsets strictly contained in downset ``j``."""
        words = self._words
        outside = words[:j] & ~words[j]
        return np.flatnonzero(~outside.any(axis=1))

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per downset, the sum of a per-node quantity (canonical order)."""
        return self.members.astype(np.float64) @ np.asarray(values, dtype=np.float64)

    def boundary_sums(self, values: np.ndarray) -> np.ndarray:
        """Per downset ``D``, the sum of ``values`` over nodes of ``D`` with a successor outside
        ``D`` (for ``output_bytes``: the bytes that cross the cut after ``D``)."""
        a = self.graph.arrays
        crossing = self.members[:, a.edge_src] & ~self.members[:, a.edge_dst]
        leaving = np.zeros_like(self.members)
        for e in range(crossing.shape[1]):
            leaving[:, a.edge_src[e]] |= crossing[:, e]
        return leaving.astype(np.float64) @ np.asarray(values, dtype=np.float64)


def enumerate_downsets(
    graph: OperatorGraph, *, max_downsets: int = DEFAULT_MAX_DOWNSETS
) -> Downsets:
    """Every downset of ``graph`` (empty set and whole graph included), smallest first.

    :param graph: a DAG.
    :param max_downsets: the most downsets to enumerate before giving up.
    :raises TooManyDownsets: when the graph has more than ``max_downsets`` downsets.
    """
    n = graph.num_nodes
    a = graph.arrays
    preds = [a.pred_idx[a.pred_ptr[v] : a.pred_ptr[v + 1]].tolist() for v in range(n)]
    succs = [a.succ_idx[a.succ_ptr[v] : a.succ_ptr[v + 1]].tolist() for v in range(n)]
    found: list[int] = [0]
    stack: list[tuple[int, int, frozenset[int]]] = [
        (0, -1, frozenset(v for v in range(n) if not preds[v]))
    ]
    while stack:
        mask, top, addable = stack.pop()
        for v in addable:
            if v <= top:
                continue
            child = mask | (1 << v)
            grown = set(addable)
            grown.discard(v)
            for w in succs[v]:
                if all(child >> p & 1 for p in preds[w]):
                    grown.add(w)
            found.append(child)
            if len(found) > max_downsets:
                raise TooManyDownsets(
                    f"downsets: graph {graph.name!r} ({n} nodes) has more than "
                    f"{max_downsets} downsets"
                )
            stack.append((child, v, frozenset(grown)))
    found.sort(key=int.bit_count)
    nbytes = (n + 7) // 8
    raw = np.frombuffer(b"".join(m.to_bytes(nbytes, "little") for m in found), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(found), nbytes), axis=1, bitorder="little")[:, :n]
    return Downsets(graph, bits.astype(bool))


def bounded_downsets(
    graph: OperatorGraph, *, max_downsets: int = DEFAULT_MAX_DOWNSETS, shrink: float = 0.8
) -> tuple[Downsets, Coarsening]:
    """Downsets of ``graph``, coarsening it until there are at most ``max_downsets``.

    The first try is the graph itself; each next one coarsens it to ``shrink`` times the
    previous node count (:func:`pipeenv.coarsen.coarsen`); once one fits, a bisection looks for
    the largest node count in between that still fits (counts are not monotone in the node
    count, so it is the largest found, not necessarily the largest that exists). A downset of the
    coarse graph is a union of groups, hence a downset of the original graph: the result is the
    set of downsets that never split a group. What it costs: a DP over it finds the best plan
    among cuts at group boundaries, an upper bound on the true optimum (equal to it when the
    coarsening is the identity).

    :return: the downsets *of the returned coarsening's coarse graph*, and the coarsening.
    :raises PipeenvError: when ``max_downsets`` < 2 or ``shrink`` is not in (0, 1).
    """
    if max_downsets < 2:
        raise PipeenvError(f"downsets: max_downsets must be >= 2, got {max_downsets}")
    if not 0.0 < shrink < 1.0:
        raise PipeenvError(f"downsets: shrink must be in (0, 1), got {shrink}")

    def attempt(size: int) -> tuple[Downsets, Coarsening] | None:
        coarsening = coarsen(graph, size)
        try:
            return enumerate_downsets(coarsening.graph, max_downsets=max_downsets), coarsening
        except TooManyDownsets:
            return None

    failed, size = graph.num_nodes + 1, graph.num_nodes
    found = attempt(size)
    while found is None:
        failed, size = size, max(1, min(size - 1, int(size * shrink)))
        found = attempt(size)
    # Bisect between the largest size that fitted and the smallest that did not.
    fits = size
    while failed - fits > 1:
        middle = (fits + failed) // 2
        better = attempt(middle)
        if better is None:
            failed = middle
        else:
            fits, found = middle, better
    return found
