"""Text and image views of a simulated plan: per-stage table, text Gantt, matplotlib Gantt.

Headless: matplotlib is used through its Agg canvas only, never pyplot's GUI backends. The CLI's
``pipeenv simulate --gantt`` reuses :func:`stage_table`, :func:`gantt_text` and
:func:`gantt_png`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeenv.cluster import Cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.simulator import SimResult

__all__ = [
    "draw_gantt",
    "gantt_png",
    "gantt_rgb",
    "gantt_text",
    "load_rgb",
    "load_table",
    "stage_table",
    "timeline_rows",
]

_GiB = 1024**3
# Colour of each timeline kind (matplotlib tab10).
_COLOURS = {"forward": "#1f77b4", "backward": "#ff7f0e", "allreduce": "#2ca02c"}
_TEXT_MARK = {"forward": "F", "backward": "B", "allreduce": "A"}


def stage_table(
    result: SimResult,
    plan: Plan | None = None,
    *,
    graph: OperatorGraph | None = None,
    cluster: Cluster | None = None,
) -> str:
    """A fixed-width table of the per-stage figures of ``result`` (SPEC §6), plus a summary.

    :param plan: when given, a first line names the graph, cluster, stages, replicas,
        microbatches and schedule (``graph`` and ``cluster`` supply the names when given).
    :param cluster: when given, a last column names each stage's device (replica 0).
    """
    lines = []
    if plan is not None:
        graph_name = graph.name if graph is not None else plan.graph
        cluster_name = cluster.name if cluster is not None else plan.cluster
        lines.append(
            f"{graph_name} on {cluster_name}: {plan.num_stages} stages x {plan.data_parallel} "
            f"replicas, {plan.microbatches} microbatches, {plan.schedule}"
        )
    lines.append(
        f"{'stage':>5} {'device':>6} {'forward_ms':>10} {'backward_ms':>11} {'send_MB':>9} "
        f"{'busy_ms':>9} {'memory_GiB':>10} {'oom':>4}" + ("  name" if cluster is not None else "")
    )
    for st in result.stages:
        lines.append(
            f"{st.stage:>5} {st.device:>6} {st.forward_s * 1e3:>10.3f} "
            f"{st.backward_s * 1e3:>11.3f} {st.send_bytes / 1e6:>9.3f} {st.busy_s * 1e3:>9.3f} "
            f"{st.peak_memory_bytes / _GiB:>10.3f} {'yes' if st.oom else 'no':>4}"
            + (f"  {cluster.devices[st.device].name}" if cluster is not None else "")
        )
    lines.append(
        f"iteration {result.iteration_s * 1e3:.3f} ms, throughput "
        f"{result.throughput_samples_per_s:.1f} samples/s, bubble {result.bubble_fraction:.1%}, "
        f"efficiency {result.efficiency:.1%}, {'feasible' if result.feasible else 'OUT OF MEMORY'}"
    )
    return "\n".join(lines)


Rows = dict[int, list[tuple[str, float, float]]]


def timeline_rows(events: Iterable[Mapping[str, Any]]) -> Rows:
    """Per device, its ``(kind, start, end)`` compute and all-reduce events, from timeline
    event dicts (the simulator's, or the validator's measured ones); transfers are left out."""
    rows: Rows = {}
    for e in events:
        if e["kind"] in _TEXT_MARK:
            rows.setdefault(int(e["device"]), []).append((e["kind"], e["start"], e["end"]))
    return dict(sorted(rows.items()))


def _device_events(result: SimResult) -> Rows:
    if result.timeline is None:
        raise PipeenvError("render: the result has no timeline (simulate with timeline=True)")
    return timeline_rows(e.to_dict() for e in result.timeline)


def draw_gantt(ax: Any, rows: Rows, span_s: float, title: str) -> None:
    """Draw ``rows`` on the matplotlib axes ``ax``: one bar row per device, ms on x."""
    from matplotlib.patches import Patch

    for y, events in enumerate(rows.values()):
        for kind in _COLOURS:
            bars = [(start * 1e3, (end - start) * 1e3) for k, start, end in events if k == kind]
            if bars:
                ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=_COLOURS[kind], edgecolor="white")
    ax.set_yticks(range(len(rows)), [f"dev {d}" for d in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("time (ms)")
    ax.set_xlim(0, span_s * 1e3)
    ax.set_title(title)
    present = {k for events in rows.values() for k, _, _ in events}
    ax.legend(
        handles=[Patch(color=c, label=k) for k, c in _COLOURS.items() if k in present],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
    )


def gantt_text(result: SimResult, width: int = 72) -> str:
    """A text Gantt chart: one row per device, ``width`` time columns over the iteration.

    A column shows ``F`` (forward), ``B`` (backward), ``A`` (all-reduce) for the op covering most
    of it, ``.`` when the device is idle.

    :raises PipeenvError: when ``result`` has no timeline or ``width`` < 1.
    """
    if width < 1:
        raise PipeenvError(f"render: width must be >= 1, got {width}")
    rows = _device_events(result)
    span = result.iteration_s
    edges = np.linspace(0.0, span, width + 1)
    lines = []
    for device, events in rows.items():
        cover = {kind: np.zeros(width) for kind in _TEXT_MARK}
        for kind, start, end in events:
            overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], start), 0, None)
            cover[kind] += overlap
        stacked = np.stack([cover[k] for k in _TEXT_MARK])
        marks = np.array(list(_TEXT_MARK.values()))[stacked.argmax(axis=0)]
        marks[stacked.max(axis=0) <= 0.0] = "."
        lines.append(f"dev{device:<3}|{''.join(marks)}|")
    lines.append(f"{'':6}0{'':>{width - 1}}{span * 1e3:.3f} ms")
    return "\n".join(lines)


def _figure(result: SimResult, title: str | None):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _device_events(result)
    fig = Figure(figsize=(8, 1.0 + 0.45 * len(rows)), dpi=80)
    FigureCanvasAgg(fig)
    summary = f"iteration {result.iteration_s * 1e3:.3f} ms, bubble {result.bubble_fraction:.1%}"
    summary += "" if result.feasible else ", out of memory"
    draw_gantt(
        fig.add_subplot(1, 1, 1),
        rows,
        result.iteration_s,
        summary if title is None else f"{title}\n{summary}",
    )
    fig.tight_layout()
    return fig


def gantt_rgb(result: SimResult, *, title: str | None = None) -> np.ndarray:
    """The Gantt chart of ``result``'s timeline as an ``(H, W, 3)`` uint8 image."""
    fig = _figure(result, title)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


def gantt_png(
    result: SimResult, path: str | Path, *, title: str | None = None, overwrite: bool = True
) -> None:
    """Write the Gantt chart of ``result``'s timeline as a PNG file.

    :param title: a first title line (e.g. graph and cluster names).
    :param overwrite: when False, refuse to replace an existing file.
    :raises PipeenvError: when the file exists and ``overwrite`` is False, or there is no
        timeline.
    """
    p = Path(path)
    if not overwrite and p.exists():
        raise PipeenvError(f"output: {p} exists (pass --force to overwrite)")
    fig = _figure(result, title)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format="png")


def load_table(loads: np.ndarray, num_stages: int) -> str:
    """A table of a partial plan: per stage, nodes, compute seconds and memory fraction.

    :param loads: ``(S, 3)`` rows of (nodes, compute seconds, memory over device memory).
    """
    lines = [f"{'stage':>5} {'nodes':>6} {'compute_ms':>10} {'memory':>7}"]
    for s in range(num_stages):
        nodes, compute_s, memory = loads[s]
        lines.append(f"{s:>5} {int(nodes):>6} {compute_s * 1e3:>10.3f} {memory:>7.1%}")
    return "\n".join(lines)


def load_rgb(loads: np.ndarray) -> np.ndarray:
    """Bars of per-stage compute seconds of a partial plan as an ``(H, W, 3)`` uint8 image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(loads.shape[0]), loads[:, 1] * 1e3, color=_COLOURS["forward"])
    ax.set_xlabel("stage")
    ax.set_ylabel("compute (ms)")
    ax.set_title("partial plan")
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()  # type: ignore[attr-defined]
