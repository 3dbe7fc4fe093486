"""Reader for PipeDream's profile format (``graph.txt``).

PipeDream (Narayanan et al., "PipeDream: Generalized Pipeline Parallelism for DNN Training",
SOSP 2019) profiles a model once and writes its layer graph as text, which its optimizer then
partitions. The file has node lines::

    nodeN -- <description> -- forward_compute_time=<ms>, backward_compute_time=<ms>,
        activation_size=<bytes>, parameter_size=<bytes>[ -- stage_id=K]

(one line each) and edge lines ``\\tnodeA -- nodeB`` (a leading tab; the output of A feeds B).
Times are milliseconds per profiled minibatch, sizes bytes per minibatch; ``activation_size`` may
be a list ``[a; b; c]`` when a module returns several tensors, and PipeDream's own reader sums it.

The conversion to ``pipeenv.graph/v1``:

- ``forward_s``/``backward_s`` = the times / 1000; ``output_bytes`` = ``activation_size`` (list
  summed); ``param_bytes`` = ``parameter_size``; ``activation_bytes`` left to default to
  ``output_bytes``. ``op`` is the description up to its first ``(``; the whole description is
  kept in the node's ``description`` field and ``stage_id`` (partitioned outputs) in
  ``stage_id``.
- ``Input*`` sources hold the data-loading time in their forward field, not compute. As in
  PipeDream's optimizer they cost nothing here: the node is kept (its output still has to reach
  the stage that consumes it), its times are zeroed, the dropped time is kept in the node's
  ``data_loading_s`` field, and ``source`` says so.
- Several sources and dead-end sinks (GNMT's ``__getitem__`` outputs) are kept as they are.
- Batch size. The file does not record it. Without size options the costs stay per profiled
  minibatch and ``microbatch_size`` is 1, standing for one minibatch; with ``batch_size=N`` only,
  ``microbatch_size`` is N and costs are unchanged; with ``batch_size=N`` and
  ``microbatch_size=m`` (m <= N) every per-sample quantity (both times, output bytes, data-loading
  time) is multiplied by m / N, which assumes costs linear in the batch (it ignores the fixed
  per-kernel overheads that make small batches relatively slower); ``param_bytes`` is not scaled.

Every parse error is one line naming ``file:line`` and what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph

__all__ = ["PipeDreamNode", "PipeDreamProfile", "from_pipedream", "read_pipedream"]

_SEPARATOR = " -- "
_FIELDS = ("forward_compute_time", "backward_compute_time", "activation_size", "parameter_size")


@dataclass(frozen=True)
class PipeDreamNode:
    """One node line, in the file's units (ms per minibatch, bytes per minibatch)."""

    id: str
    description: str
    forward_ms: float
    backward_ms: float
    activation_size: float
    parameter_size: float
    stage_id: int | None = None
    line: int = 0

    @property
    def is_input(self) -> bool:
        """True for PipeDream's data-loading pseudo-ops (``Input``, ``Input0``, ...)."""
        return self.description.startswith("Input")


@dataclass(frozen=True)
class PipeDreamProfile:
    """A parsed ``graph.txt``: nodes in file order and edges, nothing converted yet."""

    path: str
    nodes: tuple[PipeDreamNode, ...]
    edges: tuple[tuple[str, str], ...]
    edge_lines: tuple[int, ...] = ()


def _number(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PipeenvError(f"{where}: {name}={text!r} is not a number") from None
    if math.isnan(value) or math.isinf(value):
        raise PipeenvError(f"{where}: {name}={text!r} must be finite")
    if value < 0:
        raise PipeenvError(f"{where}: {name}={text!r} must be >= 0")
    return value


def _activation(text: str, where: str) -> float:
    if not text.startswith("["):
        return _number(text, where, "activation_size")
    if not text.endswith("]"):
        raise PipeenvError(f"{where}: activation_size list {text!r} has no closing ']'")
    items = text[1:-1].split(";")
    if not text[1:-1].strip():
        raise PipeenvError(f"{where}: activation_size list is empty")
    return sum(_number(item.strip(), where, "activation_size") for item in items)


def _parse_node(text: str, where: str, line: int) -> PipeDreamNode:
    tokens = text.split(_SEPARATOR)
    stage_id: int | None = None
    if len(tokens) >= 4 and tokens[-1].startswith("stage_id="):
        raw = tokens.pop()[len("stage_id=") :]
        try:
            stage_id = int(raw)
        except ValueError:
            raise PipeenvError(f"{where}: stage_id={raw!r} is not an integer") from None
        if stage_id < 0:
            raise PipeenvError(f"{where}: stage_id={raw!r} must be >= 0")
    if len(tokens) < 3:
        raise PipeenvError(
            f"{where}: node line must read 'id -- description -- forward_compute_time=..., ...'"
        )
    node_id = tokens[0].strip()
    if not node_id or any(c.isspace() for c in node_id):
        raise PipeenvError(f"{where}: bad node id {tokens[0]!r}")
    description = _SEPARATOR.join(tokens[1:-1]).strip()
    values: dict[str, str] = {}
    for item in tokens[-1].split(", "):
        key, eq, value = item.strip().partition("=")
        if not eq:
            raise PipeenvError(f"{where}: expected key=value, got {item.strip()!r}")
        if key not in _FIELDS:
            raise PipeenvError(f"{where}: unknown field {key!r} (expected {', '.join(_FIELDS)})")
        if key in values:
            raise PipeenvError(f"{where}: field {key!r} given twice")
        values[key] = value.strip()
    for key in _FIELDS:
        if key not in values:
            raise PipeenvError(f"{where}: missing field {key!r}")
    return PipeDreamNode(
        id=node_id,
        description=description,
        forward_ms=_number(values["forward_compute_time"], where, "forward_compute_time"),
        backward_ms=_number(values["backward_compute_time"], where, "backward_compute_time"),
        activation_size=_activation(values["activation_size"], where),
        parameter_size=_number(values["parameter_size"], where, "parameter_size"),
        stage_id=stage_id,
        line=line,
    )


def read_pipedream(path: str | Path) -> PipeDreamProfile:
    """Parse a PipeDream ``graph.txt`` without converting units.

    :param path: the profile file.
    :raises PipeenvError: ``file:line: ...`` on a malformed line, a duplicate node, an edge to an
        unknown node or a repeated edge; a missing or unreadable file.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise PipeenvError(f"pipedream: file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipeenvError(f"pipedream: cannot read {p}: {exc}") from None
    nodes: list[PipeDreamNode] = []
    lines_of: dict[str, int] = {}
    edges: list[tuple[str, str]] = []
    edge_lines: list[int] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        where = f"{p}:{number}"
        if not raw.strip():
            continue
        if raw.startswith("\t"):
            ends = raw.strip().split(_SEPARATOR)
            if len(ends) != 2 or not all(e.strip() for e in ends):
                raise PipeenvError(f"{where}: edge line must read '<tab>nodeA -- nodeB'")
            edges.append((ends[0].strip(), ends[1].strip()))
            edge_lines.append(number)
            continue
        node = _parse_node(raw.strip(), where, number)
        if node.id in lines_of:
            raise PipeenvError(
                f"{where}: node {node.id!r} already defined on line {lines_of[node.id]}"
            )
        lines_of[node.id] = number
        nodes.append(node)
    if not nodes:
        raise PipeenvError(f"{p}: has no node lines (not a PipeDream graph.txt?)")
    seen: dict[tuple[str, str], int] = {}
    for (u, v), number in zip(edges, edge_lines, strict=True):
        where = f"{p}:{number}"
        for end in (u, v):
            if end not in lines_of:
                raise PipeenvError(f"{where}: edge {u} -- {v}: unknown node {end!r}")
        if u == v:
            raise PipeenvError(f"{where}: edge {u} -- {v} is a self-loop")
        if (u, v) in seen:
            raise PipeenvError(f"{where}: edge {u} -- {v} already listed on line {seen[u, v]}")
        seen[u, v] = number
    return PipeDreamProfile(str(p), tuple(nodes), tuple(edges), tuple(edge_lines))


def _default_name(path: Path) -> str:
    if path.stem.startswith("graph") and path.parent.name:
        return path.parent.name + path.stem[len("graph") :]
    return path.stem


def _scale(batch_size: int | None, microbatch_size: int | None) -> tuple[int, float]:
    for name, value in (("batch_size", batch_size), ("microbatch_size", microbatch_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise PipeenvError(f"pipedream: {name} must be an integer >= 1, got {value!r}")
    if microbatch_size is not None and batch_size is None:
        raise PipeenvError(
            "pipedream: microbatch_size needs batch_size (the profiled minibatch) to scale "
            "the costs"
        )
    if batch_size is None:
        return 1, 1.0
    if microbatch_size is None:
        return batch_size, 1.0
    if microbatch_size > batch_size:
        raise PipeenvError(
            f"pipedream: microbatch_size {microbatch_size} exceeds batch_size {batch_size} "
            "(costs are only scaled down from the profiled minibatch)"
        )
    return microbatch_size, microbatch_size / batch_size


def from_pipedream(
    path: str | Path,
    *,
    batch_size: int | None = None,
    microbatch_size: int | None = None,
    name: str | None = None,
) -> OperatorGraph:
    """Read a PipeDream ``graph.txt`` as an :class:`~pipeenv.graph.OperatorGraph`.

    :param path: the profile file.
    :param batch_size: samples in the profiled minibatch (not recorded in the file).
    :param microbatch_size: samples per microbatch to scale the costs to (needs ``batch_size``).
    :param name: graph name; default the folder name for ``graph.txt`` (``resnet18_copy`` for
        ``resnet18/graph_copy.txt``), else the file stem.
    :return: the graph, costs in seconds and bytes (see the module docstring for the rules).
    :raises PipeenvError: on a malformed file (``file:line: ...``), a cycle, or bad size options.
    """
    profile = read_pipedream(path)
    mb_size, factor = _scale(batch_size, microbatch_size)
    has_pred = {v for _, v in profile.edges}
    nodes: list[Node] = []
    zeroed: list[str] = []
    for pd in profile.nodes:
        extra: dict[str, Any] = {"description": pd.description}
        forward_s, backward_s = pd.forward_ms / 1000.0 * factor, pd.backward_ms / 1000.0 * factor
        if pd.is_input and pd.id not in has_pred:
            extra["data_loading_s"] = forward_s + backward_s
            zeroed.append(f"{pd.id} ({pd.forward_ms + pd.backward_ms:g} ms)")
            forward_s = backward_s = 0.0
        if pd.stage_id is not None:
            extra["stage_id"] = pd.stage_id
        op = pd.description.split("(", 1)[0].strip() or pd.description
        nodes.append(
            Node(
                id=pd.id,
                op=op,
                forward_s=forward_s,
                backward_s=backward_s,
                output_bytes=pd.activation_size * factor,
                param_bytes=pd.parameter_size,
                extra=extra,
            )
        )
    p = Path(profile.path)
    if batch_size is None:
        per = "per profiled minibatch (batch size not recorded; microbatch_size 1 stands for it)"
    elif microbatch_size is None:
        per = f"per profiled minibatch of {batch_size} samples"
    else:
        per = (
            f"scaled linearly from the profiled minibatch of {batch_size} to "
            f"{microbatch_size} samples"
        )
    source = f"imported from PipeDream profile {p.name} ({p}); costs {per}"
    if zeroed:
        source += (
            "; Input nodes zeroed (their forward time is data loading, as PipeDream's optimizer "
            f"treats it): {', '.join(zeroed)}"
        )
    try:
        return OperatorGraph(
            name or _default_name(p), nodes, profile.edges, microbatch_size=mb_size, source=source
        )
    except PipeenvError as exc:
        raise PipeenvError(f"{p}: {exc}") from None
