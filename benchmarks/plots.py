"""The sweep's PNG plots (matplotlib, headless)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["draw_all", "efficiency_plot", "gantt_plots", "planning_time_plot", "speedup_plot"]


def _good(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("throughput_samples_per_s") and not r["error"]]


def _best_over_schedules(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict]:
    best: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in _good(rows):
        if r.get("oom"):
            continue
        key = (r["model"], r["cluster"], r["agent"])
        if key not in best or r["throughput_samples_per_s"] > best[key]["throughput_samples_per_s"]:
            best[key] = r
    return best


def speedup_plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Grouped bars: speed-up over data parallelism per model and agent, one panel per cluster."""
    best = _best_over_schedules(rows)
    clusters = list(dict.fromkeys(r["cluster"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    fig, axes = plt.subplots(
        len(clusters), 1, figsize=(max(8, 1.6 * len(models)), 3.2 * len(clusters)), squeeze=False
    )
    width = 0.8 / max(1, len(agents))
    for ax, cluster in zip(axes[:, 0], clusters, strict=True):
        for k, agent in enumerate(agents):
            values = [
                best[(m, cluster, agent)].get("speedup_vs_data_parallel") or 0.0
                if (m, cluster, agent) in best
                else 0.0
                for m in models
            ]
            ax.bar(np.arange(len(models)) + k * width, values, width, label=agent)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models, fontsize=8)
        ax.set_ylabel("speed-up vs DP")
        ax.set_title(cluster, fontsize=10, loc="right")
    axes[0, 0].legend(
        fontsize=7,
        ncol=min(4, len(agents)),
        loc="lower left",
        bbox_to_anchor=(0.0, 1.12),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def efficiency_plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Mean efficiency (throughput / SPEC §5 bound) over models against the device count."""
    best = _best_over_schedules(rows)
    by_agent: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (_, _, agent), r in best.items():
        by_agent[agent][int(r["devices"])].append(float(r["efficiency"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for agent, points in by_agent.items():
        xs = sorted(points)
        ax.plot(xs, [float(np.mean(points[x])) for x in xs], marker="o", label=agent)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("devices")
    ax.set_ylabel("efficiency (mean over models)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def planning_time_plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Planning seconds against graph size, log-log, one series per agent."""
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("planning_s") and r.get("nodes"):
            series[r["agent"]][int(r["nodes"])].append(float(r["planning_s"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for agent, points in series.items():
        xs = sorted(points)
        ax.plot(xs, [float(np.median(points[x])) for x in xs], marker="o", label=agent)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("graph nodes")
    ax.set_ylabel("planning time per cell (s, median)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gantt_plots(rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """A Gantt chart of the best plan per model (re-simulated with its timeline)."""
    from benchmarks.report import best_rows
    from benchmarks.sweep import _graph
    from pipeenv.cluster import load_cluster
    from pipeenv.envs.render import gantt_png
    from pipeenv.plan import load_plan
    from pipeenv.simulator import simulate

    written = []
    for model, row in best_rows(rows).items():
        if not row.get("plan_file"):
            continue
        cluster = load_cluster(row["cluster"])
        graph = _graph(model, cluster, row.get("graph_file"))
        plan = load_plan(out / row["plan_file"])
        result = simulate(graph, cluster, plan, timeline=True)
        path = out / f"gantt_{model.replace(':', '_').replace('/', '_')}.png"
        gantt_png(
            result, path, title=f"{model}: {row['agent']} on {row['cluster']} ({row['schedule']})"
        )
        written.append(path)
    return written


def draw_all(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """Every plot of the sweep into ``out``."""
    speedup_plot(rows, out / "speedup.png")
    efficiency_plot(rows, out / "efficiency.png")
    planning_time_plot(rows, out / "planning_time.png")
    gantt_plots(rows, out)
