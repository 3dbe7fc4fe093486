"""The sweep's outputs: results.csv, results.md (headline and per-cluster tables), plots."""

from __future__ import annotations

import json
import math
import os
import platform
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "best_rows",
    "headline_markdown",
    "markdown",
    "read_rows",
    "rebuild",
    "reproduce_command",
    "write_outputs",
]


def _ok(row: dict[str, Any]) -> bool:
    return bool(row.get("throughput_samples_per_s")) and not row["error"]


def _fmt(value: Any, digits: int = 2) -> str:
    if value in ("", None):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _times(value: Any) -> str:
    """A speed-up as ``1.23x``, or ``-`` when there is none (its baseline is missing or OOM)."""
    return "-" if value in ("", None) else f"{value:.2f}x"


def best_rows(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model, the feasible cell with the largest speed-up over data parallelism.

    The row's ``tied`` lists the agents whose plan is as fast in the same cluster and schedule
    (to 1e-9), so that a tie is reported as one.
    """
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not _ok(row) or row.get("oom") or row.get("speedup_vs_data_parallel") in ("", None):
            continue
        current = best.get(row["model"])
        if current is None or row["speedup_vs_data_parallel"] > current["speedup_vs_data_parallel"]:
            best[row["model"]] = row
    for model, top in best.items():
        tied = [
            r["agent"]
            for r in rows
            if (r["model"], r["cluster"], r["schedule"]) == (model, top["cluster"], top["schedule"])
            and _ok(r)
            and not r.get("oom")
            and math.isclose(
                r["throughput_samples_per_s"], top["throughput_samples_per_s"], rel_tol=1e-9
            )
        ]
        best[model] = {**top, "tied": tied}
    return best


def headline_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Per model: the best plan's speed-up over data parallelism and over PipeDream's DP."""
    lines = [
        "| model | best agent(s) | cluster | schedule | S x R | samples/s | vs data-parallel "
        "| vs pipedream-dp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, row in best_rows(rows).items():
        lines.append(
            f"| {model} | {' = '.join(row['tied'])} | {row['cluster']} | {row['schedule']} "
            f"| {row['stages']} x {row['data_parallel']} | {row['throughput_samples_per_s']:.1f} "
            f"| {_times(row['speedup_vs_data_parallel'])} | {_times(row['speedup_vs_pipedream'])} |"
        )
    return "\n".join(lines)


def _cluster_table(rows: Sequence[dict[str, Any]], cluster: str) -> list[str]:
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    lines = [
        f"### {cluster}",
        "",
        "Speed-up over data parallelism (best schedule; `OOM` = no feasible plan, "
        "`err` = the agent failed, see results.csv; where data parallelism itself is out of "
        "memory, a feasible plan shows its samples/s instead).",
        "",
        "| model | " + " | ".join(agents) + " |",
        "|---|" + "---|" * len(agents),
    ]
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["cluster"] == cluster:
            cells[(r["model"], r["agent"])].append(r)
    for model in dict.fromkeys(r["model"] for r in rows):
        entries = []
        for agent in agents:
            group = cells.get((model, agent), [])
            good = [r for r in group if _ok(r) and not r.get("oom")]
            if good:
                top = max(good, key=lambda r: r["throughput_samples_per_s"])
                speedup = top.get("speedup_vs_data_parallel")
                if speedup in ("", None):
                    entries.append(f"{top['throughput_samples_per_s']:.3g}/s")
                else:
                    entries.append(_fmt(speedup))
            elif any(_ok(r) for r in group):
                entries.append("OOM")
            else:
                entries.append("err" if group else "-")
        lines.append(f"| {model} | " + " | ".join(entries) + " |")
    return lines


def reproduce_command(config: dict[str, Any]) -> str:
    """The ``pipeenv bench`` command line that recomputes a sweep's figures."""
    parts = ["pipeenv bench", "--full" if config["mode"] == "full" else "--quick"]
    for key in ("models", "clusters", "schedules", "agents"):
        parts.append(f"--{key} " + " ".join(config[key]))
    parts.append(f"--seed {config['seed']}")
    if config.get("policy") and not config.get("policy_trained"):
        parts.append(f"--policy {config['policy']}")
    if config.get("pipedream_profiles"):
        parts.append(f"--pipedream-profiles {config['pipedream_profiles']}")
    return " ".join(parts) + " --out DIR"


def markdown(rows: Sequence[dict[str, Any]], config: dict[str, Any], wall_s: float) -> str:
    """The whole ``results.md``."""
    failed = [r for r in rows if r["error"]]
    training = config.get("policy_training_s")
    trained = f" after {training:.0f} s of ppo-gcn training" if training else ""
    parts = [
        "# pipeenv benchmark sweep",
        "",
        f"Mode `{config['mode']}`, seed {config['seed']}, {len(rows)} cells "
        f"({len(failed)} failed), {wall_s:.0f} s{trained} on {config['workers']} worker(s); "
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}.",
        "",
        f"Reproduce: `{reproduce_command(config)}`.",
        "",
        "## Headline",
        "",
        "Per model, the plan with the largest speed-up over data parallelism (same model, "
        "cluster, schedule and global batch), and its speed-up over PipeDream's planner "
        "(`pipedream-dp`, this simulator's cost model).",
        "",
        headline_markdown(rows),
        "",
        "## Per cluster",
        "",
    ]
    for cluster in dict.fromkeys(r["cluster"] for r in rows):
        parts += [*_cluster_table(rows, cluster), ""]
    if failed:
        parts += ["## Failed cells", "", "| cell | error |", "|---|---|"]
        for r in failed:
            parts.append(
                f"| {r['model']} / {r['cluster']} / {r['schedule']} / {r['agent']} "
                f"| {r['error'].replace('|', '/')} |"
            )
        parts.append("")
    parts += [
        "## Plots",
        "",
        "![speed-up](speedup.png)",
        "![efficiency](efficiency.png)",
        "![planning time](planning_time.png)",
        "",
    ]
    return "\n".join(parts)


_INT_FIELDS = ("devices", "nodes", "stages", "data_parallel", "microbatches")
_FLOAT_FIELDS = (
    "iteration_s",
    "throughput_samples_per_s",
    "speedup_vs_data_parallel",
    "speedup_vs_pipedream",
    "efficiency",
    "bubble_fraction",
    "peak_memory_bytes",
    "planning_s",
)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv``, typed as the sweep produced them."""
    import csv

    rows = []
    with path.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = dict(raw)
            for key in _INT_FIELDS:
                row[key] = int(raw[key]) if raw.get(key) else ""
            for key in _FLOAT_FIELDS:
                row[key] = float(raw[key]) if raw.get(key) else ""
            row["oom"] = raw.get("oom") == "True"
            rows.append(row)
    return rows


def rebuild(out: Path) -> None:
    """Rewrite results.md and the plots of a finished sweep from its results.csv and sweep.json
    (after a change to the report; no cell is planned again)."""
    meta = json.loads((out / "sweep.json").read_text())
    rows = read_rows(out / "results.csv")
    (out / "results.md").write_text(markdown(rows, meta["config"], meta["wall_s"]))
    from benchmarks.plots import draw_all

    draw_all(rows, out)


def write_outputs(
    rows: Sequence[dict[str, Any]], out: Path, *, config: dict[str, Any], wall_s: float
) -> None:
    """Write results.csv, results.md, sweep.json and the PNG plots into ``out``."""
    from benchmarks.plots import draw_all
    from benchmarks.sweep import write_csv

    write_csv(rows, out / "results.csv")
    (out / "results.md").write_text(markdown(rows, config, wall_s))
    (out / "sweep.json").write_text(json.dumps({"config": config, "wall_s": wall_s}, indent=1))
    draw_all(rows, out)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.report SWEEP_DIR  (rewrites results.md and plots)")
    rebuild(Path(sys.argv[1]))
