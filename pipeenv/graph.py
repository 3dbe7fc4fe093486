"""Operator graphs (``pipeenv.graph/v1``, SPEC §1): JSON I/O, validation, canonical order, arrays.

An :class:`OperatorGraph` is an immutable value. Everything the simulator and the environments
need per graph (canonical order, CSR adjacency, cost arrays) is computed once, on first use, and
cached on the value, so repeated simulations of one graph never redo it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from pipeenv.errors import PipeenvError
from pipeenv.jsonio import check_format, plain_number, read_json, write_json

if TYPE_CHECKING:
    from pipeenv.coarsen import Coarsening

__all__ = ["FORMAT", "GraphArrays", "Node", "OperatorGraph", "from_pipedream", "load_graph"]

FORMAT = "pipeenv.graph/v1"
_NODE_NUMBERS = ("forward_s", "backward_s", "output_bytes", "param_bytes")
_NODE_KNOWN = {"id", "op", *_NODE_NUMBERS, "activation_bytes"}


@dataclass(frozen=True)
class Node:
    """One operator. Times in seconds per microbatch on a speed-1.0 device, sizes in bytes.

    ``activation_bytes`` (kept for the backward pass) defaults to ``output_bytes``; ``extra``
    holds any further JSON fields (module path, FLOPs, ...) and is written back unchanged.
    """

    id: str
    op: str
    forward_s: float
    backward_s: float
    output_bytes: float
    param_bytes: float
    activation_bytes: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kept_bytes(self) -> float:
        """Bytes kept for the backward pass (``activation_bytes`` or ``output_bytes``)."""
        return self.output_bytes if self.activation_bytes is None else self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        """The node as a ``pipeenv.graph/v1`` node object."""
        d: dict[str, Any] = {
            "id": self.id,
            "op": self.op,
            "forward_s": self.forward_s,
            "backward_s": self.backward_s,
            "output_bytes": plain_number(self.output_bytes),
            "param_bytes": plain_number(self.param_bytes),
        }
        if self.activation_bytes is not None:
            d["activation_bytes"] = plain_number(self.activation_bytes)
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class GraphArrays:
    """Flat arrays in canonical order, prepared once per graph for the kernels.

    ``costs`` rows are forward_s, backward_s, output_bytes, param_bytes, activation_bytes.
    Successors of node i are ``succ_idx[succ_ptr[i]:succ_ptr[i+1]]`` (CSR), predecessors likewise.
    ``edge_src``/``edge_dst`` list every edge as canonical indices.
    """

    costs: np.ndarray
    succ_ptr: np.ndarray
    succ_idx: np.ndarray
    pred_ptr: np.ndarray
    pred_idx: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray

    @property
    def forward_s(self) -> np.ndarray:
        return self.costs[0]

    @property
    def backward_s(self) -> np.ndarray:
        return self.costs[1]

    @property
    def output_bytes(self) -> np.ndarray:
        return self.costs[2]

    @property
    def param_bytes(self) -> np.ndarray:
        return self.costs[3]

    @property
    def activation_bytes(self) -> np.ndarray:
        return self.costs[4]


def _number(raw: Any, where: str, name: str) -> float:
    if name not in raw:
        raise PipeenvError(f"graph: {where}: missing required field '{name}'")
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PipeenvError(f"graph: {where}: field '{name}' must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise PipeenvError(f"graph: {where}: field '{name}' must be finite, got {value}")
    if value < 0:
        raise PipeenvError(f"graph: {where}: field '{name}' must be >= 0, got {value}")
    return value


def _csr(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((dst, src))
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(ptr, src + 1, 1)
    return np.cumsum(ptr), dst[order].astype(np.int64)


class OperatorGraph:
    """A DAG of operators with profiled costs (SPEC §1).

    :param name: model name.
    :param nodes: the operators, in file order (ties in the canonical order follow it).
    :param edges: data-flow edges ``(producer_id, consumer_id)``.
    :param microbatch_size: samples per microbatch the costs refer to.
    :param source: how the costs were obtained (free text).
    :raises PipeenvError: on a duplicate id, dangling edge, cycle or bad value.
    """

    def __init__(
        self,
        name: str,
        nodes: Sequence[Node],
        edges: Sequence[tuple[str, str]],
        *,
        microbatch_size: int,
        source: str = "",
    ) -> None:
        if isinstance(microbatch_size, bool) or not isinstance(microbatch_size, int):
            raise PipeenvError(
                f"graph: field 'microbatch_size' must be an integer, got {microbatch_size!r}"
            )
        if microbatch_size < 1:
            raise PipeenvError(
                f"graph: field 'microbatch_size' must be >= 1, got {microbatch_size}"
            )
        if not nodes:
            raise PipeenvError("graph: field 'nodes' must list at least one node")
        self.name = name
        self.microbatch_size = microbatch_size
        self.source = source
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.edges: tuple[tuple[str, str], ...] = tuple((str(u), str(v)) for u, v in edges)
        self._position: dict[str, int] = {}
        for pos, node in enumerate(self.nodes):
            if node.id in self._position:
                raise PipeenvError(f"graph: node {node.id!r}: duplicate id")
            self._position[node.id] = pos
        seen: set[tuple[str, str]] = set()
        for u, v in self.edges:
            for end in (u, v):
                if end not in self._position:
                    raise PipeenvError(
                        f"graph: edge ({u!r}, {v!r}): endpoint {end!r} is not a node"
                    )
            if u == v:
                raise PipeenvError(
                    f"graph: edge ({u!r}, {v!r}): self-loop (the graph must be a DAG)"
                )
            if (u, v) in seen:
                raise PipeenvError(f"graph: edge ({u!r}, {v!r}): listed twice")
            seen.add((u, v))
        self.order: tuple[str, ...] = self._canonical_order()
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(self.order)}

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> OperatorGraph:
        """Build and validate a graph from a ``pipeenv.graph/v1`` dict."""
        check_format(dict(doc), FORMAT, "graph")
        for key in ("name", "microbatch_size", "nodes", "edges"):
            if key not in doc:
                raise PipeenvError(f"graph: missing required field '{key}'")
        if not isinstance(doc["nodes"], list):
            raise PipeenvError("graph: field 'nodes' must be a list")
        if not isinstance(doc["edges"], list):
            raise PipeenvError("graph: field 'edges' must be a list")
        nodes = [cls._node_from_dict(raw, i) for i, raw in enumerate(doc["nodes"])]
        edges: list[tuple[str, str]] = []
        for i, e in enumerate(doc["edges"]):
            if not (
                isinstance(e, list | tuple) and len(e) == 2 and all(isinstance(x, str) for x in e)
            ):
                raise PipeenvError(f"graph: edge #{i}: must be a pair of node ids, got {e!r}")
            edges.append((e[0], e[1]))
        return cls(
            str(doc["name"]),
            nodes,
            edges,
            microbatch_size=doc["microbatch_size"],
            source=str(doc.get("source", "")),
        )

    @staticmethod
    def _node_from_dict(raw: Any, i: int) -> Node:
        if not isinstance(raw, Mapping):
            raise PipeenvError(f"graph: node #{i}: must be an object")
        if "id" not in raw:
            raise PipeenvError(f"graph: node #{i}: missing required field 'id'")
        if not isinstance(raw["id"], str) or not raw["id"]:
            raise PipeenvError(f"graph: node #{i}: field 'id' must be a non-empty string")
        where = f"node {raw['id']!r}"
        values = {name: _number(raw, where, name) for name in _NODE_NUMBERS}
        activation = _number(raw, where, "activation_bytes") if "activation_bytes" in raw else None
        return Node(
            id=raw["id"],
            op=str(raw.get("op", "")),
            activation_bytes=activation,
            extra={k: v for k, v in raw.items() if k not in _NODE_KNOWN},
            **values,
        )

    def to_dict(self) -> dict[str, Any]:
        """The graph as a ``pipeenv.graph/v1`` dict (nodes in their original order)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "microbatch_size": self.microbatch_size,
            "source": self.source,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [list(e) for e in self.edges],
        }

    @classmethod
    def load(cls, path: str | Path) -> OperatorGraph:
        """Read a ``pipeenv.graph/v1`` JSON file."""
        return cls.from_dict(read_json(path, "graph"))

    def save(self, path: str | Path, *, overwrite: bool = True) -> None:
        """Write the graph as ``pipeenv.graph/v1`` JSON."""
        write_json(path, self.to_dict(), overwrite=overwrite)

    # ------------------------------------------------------------------------------- structure
    def _canonical_order(self) -> tuple[str, ...]:
        g = self.to_networkx()
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            u, v = cycle[0][0], cycle[0][1]
            path = " -> ".join([str(c[0]) for c in cycle] + [str(cycle[0][0])])
            raise PipeenvError(
                f"graph: edge ({u!r}, {v!r}) lies on a cycle ({path}); the graph must be a DAG"
            )
        return tuple(nx.lexicographical_topological_sort(g, key=self._position.__getitem__))

    def to_networkx(self) -> nx.DiGraph:
        """A networkx DiGraph of the graph (node attributes: the Node)."""
        g = nx.DiGraph()
        g.add_nodes_from((n.id, {"node": n}) for n in self.nodes)
        g.add_edges_from(self.edges)
        return g

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def node(self, node_id: str) -> Node:
        """The node with id ``node_id``."""
        try:
            return self.nodes[self._position[node_id]]
        except KeyError:
            raise PipeenvError(f"graph {self.name!r}: no node {node_id!r}") from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._position

    def __repr__(self) -> str:
        return f"OperatorGraph({self.name!r}, nodes={self.num_nodes}, edges={self.num_edges})"

    @cached_property
    def is_chain(self) -> bool:
        """True when consecutive canonical nodes are linked and no other edge exists."""
        a = self.arrays
        return bool(len(a.edge_src) == self.num_nodes - 1 and np.all(a.edge_dst == a.edge_src + 1))

    @cached_property
    def graph_hash(self) -> str:
        """SHA-256 of the structure: node ids, ops and edges (not costs).

        Costs are left out on purpose so that a plan made on one profile of a model (analytic A100)
        applies to another profile of the same model (measured on cpu) and is refused on any other
        graph.
        """
        doc = {
            "nodes": sorted([n.id, n.op] for n in self.nodes),
            "edges": sorted(list(e) for e in self.edges),
        }
        blob = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    @cached_property
    def arrays(self) -> GraphArrays:
        """Cost and adjacency arrays in canonical order (computed once)."""
        n = self.num_nodes
        ordered = [self.nodes[self._position[nid]] for nid in self.order]
        costs = np.array(
            [
                [nd.forward_s for nd in ordered],
                [nd.backward_s for nd in ordered],
                [nd.output_bytes for nd in ordered],
                [nd.param_bytes for nd in ordered],
                [nd.kept_bytes for nd in ordered],
            ],
            dtype=np.float64,
        ).reshape(5, n)
        src = np.array([self.index[u] for u, _ in self.edges], dtype=np.int64)
        dst = np.array([self.index[v] for _, v in self.edges], dtype=np.int64)
        succ_ptr, succ_idx = _csr(n, src, dst)
        pred_ptr, pred_idx = _csr(n, dst, src)
        for arr in (costs, succ_ptr, succ_idx, pred_ptr, pred_idx, src, dst):
            arr.setflags(write=False)
        return GraphArrays(costs, succ_ptr, succ_idx, pred_ptr, pred_idx, src, dst)

    @cached_property
    def total_compute_s(self) -> float:
        """Sum of forward and backward seconds over all nodes (speed 1.0)."""
        return float(self.arrays.costs[0].sum() + self.arrays.costs[1].sum())

    @cached_property
    def total_param_bytes(self) -> float:
        """Sum of parameter bytes over all nodes."""
        return float(self.arrays.costs[3].sum())

    def coarsen(self, max_nodes: int) -> Coarsening:
        """Merge nodes until at most ``max_nodes`` remain (see :mod:`pipeenv.coarsen`)."""
        from pipeenv.coarsen import coarsen

        return coarsen(self, max_nodes)


def load_graph(path: str | Path) -> OperatorGraph:
    """Read a ``pipeenv.graph/v1`` JSON file (see :class:`OperatorGraph`)."""
    return OperatorGraph.load(path)


def from_pipedream(
    path: str | Path,
    *,
    batch_size: int | None = None,
    microbatch_size: int | None = None,
    name: str | None = None,
) -> OperatorGraph:
    """Import a PipeDream profile ``graph.txt`` (see :mod:`pipeenv.importers.pipedream`)."""
    from pipeenv.importers.pipedream import from_pipedream as read

    return read(path, batch_size=batch_size, microbatch_size=microbatch_size, name=name)
