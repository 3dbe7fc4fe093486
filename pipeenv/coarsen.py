"""Graph coarsening with the id mapping back (issue 3, item 5).

Op-level graphs have thousands of nodes; agents and the downset DP want tens to hundreds. A
:class:`Coarsening` merges nodes into groups, keeps a DAG, sums the costs, and remembers which
original ids each coarse node stands for, so that a plan made on the coarse graph expands to a
valid plan on the original one (:meth:`Coarsening.expand_plan`).

The groups are built by three kinds of contraction, each of which provably keeps a DAG, applied in
this order until at most ``max_nodes`` groups remain (each step merges the pair or run with the
smallest forward+backward time first, so groups stay balanced):

1. **Chains.** An edge ``u -> v`` where ``v`` is ``u``'s only successor and ``u`` is ``v``'s only
   predecessor. No other path joins them, so the contraction makes no cycle.
2. **Module prefix.** Groups that share a module path (the node's ``module`` field, else its id,
   split on ``.`` and ``/``), deepest prefix first, and that are consecutive in the current
   topological order. A run of consecutive groups in a topological order can be merged into the
   run's slot: every path between two of them stays inside the run, and the order stays
   topological.
3. **Adjacent.** Any two groups consecutive in the current topological order (same argument).

Costs of a group: ``forward_s``, ``backward_s``, ``param_bytes`` and ``activation_bytes`` (the
members' kept bytes) are sums. ``output_bytes`` is what leaves the group: the sum of
``output_bytes`` of members with at least one successor outside the group. Then, for any cut that
does not split a group, the simulator's boundary traffic ``X_s`` (SPEC §4) on the coarse graph
equals that on the original graph whenever every outside consumer of a group lies on one side of
the cut, and otherwise over-counts by at most the bytes of the members whose consumers all lie on
the near side. A group with no successor at all (an output of the model) gets the sum of its
members that are sinks of the original graph (informative only: a sink is never transferred).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph

if TYPE_CHECKING:
    from pipeenv.plan import Plan

__all__ = ["Coarsening", "coarsen"]


@dataclass(frozen=True)
class Coarsening:
    """A coarse graph and its mapping to the original one.

    :param original: the graph that was coarsened.
    :param graph: the coarse graph (a valid DAG; same name, microbatch size and source).
    :param members: original ids of each coarse node, in the original canonical order.
    :param coarse_of: coarse id of every original id.
    """

    original: OperatorGraph
    graph: OperatorGraph
    members: dict[str, tuple[str, ...]]
    coarse_of: dict[str, str]

    @property
    def is_identity(self) -> bool:
        """True when no node was merged."""
        return self.graph is self.original

    def _index_map(self) -> np.ndarray:
        """Coarse canonical index of each original node, in original canonical order."""
        return np.array(
            [self.graph.index[self.coarse_of[nid]] for nid in self.original.order], dtype=np.int64
        )

    def expand_plan(self, plan: Plan) -> Plan:
        """The plan on the original graph that puts every member where its group is.

        Every other field is kept; ``graph`` and ``graph_hash`` become the original graph's. A
        valid coarse plan gives a valid original plan (edges inside a group stay in one stage;
        edges between groups are coarse edges).

        :raises PipeenvError: when the plan does not name every coarse node.
        """
        if self.is_identity:
            return plan.with_stages(self.original, plan.stages(self.original))
        coarse_stages = plan.stages(self.graph)
        return plan.with_stages(self.original, coarse_stages[self._index_map()])

    def restrict_plan(self, plan: Plan) -> Plan:
        """The coarse plan of an original plan that never splits a group.

        :raises PipeenvError: naming the group and two of its members on different stages.
        """
        if self.is_identity:
            return plan.with_stages(self.graph, plan.stages(self.graph))
        stages = plan.stages(self.original)
        coarse = np.full(self.graph.num_nodes, -1, dtype=np.int64)
        first: dict[int, str] = {}
        for nid, ci, s in zip(self.original.order, self._index_map(), stages, strict=True):
            if coarse[ci] == -1:
                coarse[ci], first[int(ci)] = s, nid
            elif coarse[ci] != s:
                raise PipeenvError(
                    f"coarsen: group {self.graph.order[ci]!r} is split by the plan: member "
                    f"{first[int(ci)]!r} on stage {coarse[ci]}, member {nid!r} on stage {s}"
                )
        return plan.with_stages(self.graph, coarse)



def _module_path(node: Node) -> tuple[str, ...]:
    module = node.extra.get("module")
    path = module if isinstance(module, str) and module else node.id
    return tuple(part for part in path.replace("/", ".").split(".") if part)


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


class _Groups:
    """Groups of canonical indices, their adjacency and a topological order as a linked list."""

    def __init__(self, graph: OperatorGraph) -> None:
        n = graph.num_nodes
        a = graph.arrays
        self.parent = list(range(n))
        self.weight = (a.forward_s + a.backward_s).tolist()
        self.size = [1] * n
        self.version = [0] * n
        self.succ: list[set[int]] = [set() for _ in range(n)]
        self.pred: list[set[int]] = [set() for _ in range(n)]
        for u, v in zip(a.edge_src.tolist(), a.edge_dst.tolist(), strict=True):
            self.succ[u].add(v)
            self.pred[v].add(u)
        self.prev = [i - 1 for i in range(n)]
        self.next = [i + 1 if i + 1 < n else -1 for i in range(n)]
        self.head = 0
        self.count = n
        self.path = [_module_path(graph.node(nid)) for nid in graph.order]

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def merge(self, a: int, b: int) -> None:
        """Merge group ``b`` into group ``a``; ``a``'s slot in the order is kept."""
        for s in self.succ[b]:
            self.pred[s].discard(b)
            if s != a:
                self.pred[s].add(a)
                self.succ[a].add(s)
        for p in self.pred[b]:
            self.succ[p].discard(b)
            if p != a:
                self.succ[p].add(a)
                self.pred[a].add(p)
        self.succ[a].discard(b)
        self.pred[a].discard(b)
        self.succ[b], self.pred[b] = set(), set()
        self.parent[b] = a
        self.weight[a] += self.weight[b]
        self.size[a] += self.size[b]
        self.version[a] += 1
        self.version[b] += 1
        self.path[a] = _common(self.path[a], self.path[b])
        p, q = self.prev[b], self.next[b]
        if p >= 0:
            self.next[p] = q
        else:
            self.head = q
        if q >= 0:
            self.prev[q] = p
        self.count -= 1

    def order(self) -> list[int]:
        out, g = [], self.head
        while g >= 0:
            out.append(g)
            g = self.next[g]
        return out

    # ------------------------------------------------------------------------------ the steps
    def merge_chains(self, max_nodes: int, edges: Sequence[tuple[int, int]]) -> None:
        links = [(u, v) for u, v in edges if len(self.succ[u]) == 1 and len(self.pred[v]) == 1]
        heap = [
            (self.weight[u] + self.weight[v], self.version[u], self.version[v], u, v)
            for u, v in links
        ]
        heapq.heapify(heap)
        while heap and self.count > max_nodes:
            _, va, vb, u, v = heapq.heappop(heap)
            a, b = self.find(u), self.find(v)
            if (va, vb) != (self.version[a], self.version[b]):
                heapq.heappush(
                    heap, (self.weight[a] + self.weight[b], self.version[a], self.version[b], u, v)
                )
                continue
            self.merge(a, b)

    def merge_prefixes(self, max_nodes: int) -> None:
        depth = max((len(self.path[g]) for g in self.order()), default=0)
        for d in range(depth - 1, 0, -1):
            if self.count <= max_nodes:
                return
            runs: list[list[int]] = []
            run: list[int] = []
            key: tuple[str, ...] | None = None
            for g in self.order():
                k = self.path[g][:d] if len(self.path[g]) >= d else None
                if k is not None and k == key:
                    run.append(g)
                else:
                    if len(run) > 1:
                        runs.append(run)
                    run, key = [g], k
            if len(run) > 1:
                runs.append(run)
            runs.sort(key=lambda r: sum(self.weight[g] for g in r))
            for run in runs:
                if self.count <= max_nodes:
                    return
                take = min(len(run), self.count - max_nodes + 1)
                for g in run[1:take]:
                    self.merge(run[0], g)

    def merge_adjacent(self, max_nodes: int) -> None:
        heap = []
        g = self.head
        while g >= 0 and self.next[g] >= 0:
            h = self.next[g]
            heap.append(
                (
                    self.weight[g] + self.weight[h],
                    self.size[g] + self.size[h],
                    self.version[g],
                    self.version[h],
                    g,
                    h,
                )
            )
            g = h
        heapq.heapify(heap)
        while heap and self.count > max_nodes:
            _, _, va, vb, a, b = heapq.heappop(heap)
            if self.next[a] != b or (va, vb) != (self.version[a], self.version[b]):
                continue
            self.merge(a, b)
            for x, y in ((self.prev[a], a), (a, self.next[a])):
                if x >= 0 and y >= 0:
                    heapq.heappush(
                        heap,
                        (
                            self.weight[x] + self.weight[y],
                            self.size[x] + self.size[y],
                            self.version[x],
                            self.version[y],
                            x,
                            y,
                        ),
                    )


def coarsen(graph: OperatorGraph, max_nodes: int) -> Coarsening:
    """Merge nodes of ``graph`` until at most ``max_nodes`` remain (see the module docstring).

    :param graph: the graph to coarsen.
    :param max_nodes: the largest number of coarse nodes wanted (>= 1).
    :return: the coarsening; the identity (the graph itself) when it already has at most
        ``max_nodes`` nodes.
    :raises PipeenvError: when ``max_nodes`` < 1.
    """
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise PipeenvError(f"coarsen: max_nodes must be an integer >= 1, got {max_nodes!r}")
    if graph.num_nodes <= max_nodes:
        return Coarsening(
            graph, graph, {nid: (nid,) for nid in graph.order}, {nid: nid for nid in graph.order}
        )
    a = graph.arrays
    edges = list(zip(a.edge_src.tolist(), a.edge_dst.tolist(), strict=True))
    groups = _Groups(graph)
    groups.merge_chains(max_nodes, edges)
    groups.merge_prefixes(max_nodes)
    groups.merge_adjacent(max_nodes)
    return _build(graph, groups, edges)


def _build(graph: OperatorGraph, groups: _Groups, edges: list[tuple[int, int]]) -> Coarsening:
    order = groups.order()
    slot = {g: i for i, g in enumerate(order)}
    n, k = graph.num_nodes, len(order)
    group_of = np.array([slot[groups.find(i)] for i in range(n)], dtype=np.int64)
    a = graph.arrays
    src, dst = a.edge_src, a.edge_dst
    crossing = group_of[src] != group_of[dst]
    leaves = np.zeros(n, dtype=bool)
    leaves[src[crossing]] = True
    is_sink = np.diff(a.succ_ptr) == 0
    sums = [np.bincount(group_of, weights=row, minlength=k) for row in a.costs]
    out_leaving = np.bincount(group_of, weights=a.output_bytes * leaves, minlength=k)
    out_sinks = np.bincount(group_of, weights=a.output_bytes * is_sink, minlength=k)
    has_succ = np.zeros(k, dtype=bool)
    has_succ[group_of[src[crossing]]] = True

    member_idx: list[list[int]] = [[] for _ in range(k)]
    for i in range(n):
        member_idx[group_of[i]].append(i)
    ids: list[str] = []
    taken = set(graph.order)
    nodes: list[Node] = []
    for c, idx in enumerate(member_idx):
        if len(idx) == 1:
            original = graph.node(graph.order[idx[0]])
            ids.append(original.id)
            nodes.append(original)
            continue
        path = groups.path[order[c]]
        cid = f"{graph.order[idx[0]]}+{len(idx) - 1}"
        while cid in taken:
            cid += "'"
        taken.add(cid)
        ids.append(cid)
        extra: dict[str, object] = {"members": len(idx)}
        if path:
            extra["module"] = ".".join(path)
        nodes.append(
            Node(
                id=cid,
                op="group",
                forward_s=float(sums[0][c]),
                backward_s=float(sums[1][c]),
                output_bytes=float(out_leaving[c] if has_succ[c] else out_sinks[c]),
                param_bytes=float(sums[3][c]),
                activation_bytes=float(sums[4][c]),
                extra=extra,
            )
        )
    pairs = sorted(
        {(int(group_of[u]), int(group_of[v])) for u, v in edges if group_of[u] != group_of[v]}
    )
    coarse = OperatorGraph(
        graph.name,
        nodes,
        [(ids[u], ids[v]) for u, v in pairs],
        microbatch_size=graph.microbatch_size,
        source=graph.source,
    )
    members = {ids[c]: tuple(graph.order[i] for i in idx) for c, idx in enumerate(member_idx)}
    coarse_of = {graph.order[i]: ids[group_of[i]] for i in range(n)}
    return Coarsening(graph, coarse, members, coarse_of)
