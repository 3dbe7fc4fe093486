"""Quality of the planning agents: simulated throughput of every agent's plan, side by side.

Two tables, for each model, cluster and schedule, with the same global batch for every plan
(8 microbatches per device per iteration: M = 8 D / R per replica):

1. **Pipeline of D stages** (S = D devices, R = 1): the partitioning problem proper. The
   ``data-parallel`` column is the one-stage plan on all D devices, for reference. Checked on the
   homogeneous presets: ``pipedream-dp`` >= every pipeline baseline (random, uniform-layers,
   balanced-params, balanced-time) and ``local-search`` >= ``pipedream-dp``.
2. **Best depth**: every agent plans for every S dividing D with R = D / S and keeps its best
   (feasible first), so the data-parallel degree is chosen by the same sweep for all agents.
   Checked likewise, with ``data-parallel`` among the baselines.

The heterogeneous preset and inception_v3 are reported side by side, unchecked. A third table
shows what ``pipedream-dp``'s state-space cap costs on branchy graphs: the same request solved
with several ``max_downsets`` values.

Run: ``python benchmarks/agents_quality.py [--iterations N] [--csv OUT.csv]``. Models not in the
zoo are skipped with a note. (``exhaustive`` is left out: zoo graphs are far beyond its ~14
nodes.)
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agents
from pipeenv.cluster import load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph

CHECKED_MODELS = ("resnet50", "vgg16", "gpt2", "bert_large")
HOMOGENEOUS = ("4xA100-nvlink", "8xA100-nvlink")
HETEROGENEOUS = ("hetero-4xA100-4xV100",)
SIDE_MODELS = ("inception_v3",)
SCHEDULES = ("gpipe", "1f1b")
PIPELINE_BASELINES = ("random", "uniform-layers", "balanced-params", "balanced-time")
BASELINES = (*PIPELINE_BASELINES, "data-parallel")
AGENTS = (*BASELINES, "pipedream-dp", "local-search")
MICROBATCHES_PER_DEVICE = 8


@dataclass(frozen=True)
class Cell:
    """An agent's best plan over the pipeline depths."""

    throughput: float
    feasible: bool
    num_stages: int
    replicas: int
    seconds: float

    def text(self) -> str:
        mark = "" if self.feasible else " OOM"
        return f"{self.throughput:,.0f} ({self.num_stages}x{self.replicas}){mark}"


def _load(name: str) -> OperatorGraph | None:
    try:
        from pipeenv import zoo
    except ModuleNotFoundError:
        print(f"note: no pipeenv.zoo; skipping {name}")
        return None
    if name not in zoo.names():
        print(f"note: {name} is not in the zoo yet; skipped")
        return None
    return zoo.load(name)


def best_cell(
    agent: str,
    graph: OperatorGraph,
    cluster_name: str,
    schedule: str,
    iterations: int,
    depths: list[int],
) -> Cell:
    """The agent's best plan over the pipeline depths (R = D / S, M = 8 S)."""
    cluster = load_cluster(cluster_name)
    devices = cluster.num_devices
    options = {"iterations": iterations} if agent == "local-search" else {}
    planner = agents.make(agent, **options)
    best: Cell | None = None
    start = time.perf_counter()
    for num_stages in depths:
        if devices % num_stages or num_stages > graph.num_nodes:
            continue
        replicas = devices // num_stages
        plan = planner.plan(
            graph,
            cluster,
            num_stages=num_stages,
            microbatches=MICROBATCHES_PER_DEVICE * num_stages,
            schedule=schedule,
            data_parallel=replicas,
        )
        assert plan.predicted is not None
        cell = Cell(
            plan.predicted["throughput_samples_per_s"],
            plan.predicted["feasible"],
            num_stages,
            replicas,
            0.0,
        )
        if best is None or _key(cell) > _key(best):
            best = cell
    assert best is not None
    seconds = time.perf_counter() - start
    return Cell(best.throughput, best.feasible, best.num_stages, best.replicas, seconds)


def _key(cell: Cell) -> tuple[bool, float]:
    return (cell.feasible, cell.throughput)


Row = tuple[str, str, str, dict[str, Cell], str]


def _verdict(cells: dict[str, Cell], baselines: tuple[str, ...], checked: bool) -> str:
    dp, ls = cells["pipedream-dp"], cells["local-search"]
    notes = []
    beaten = [b for b in baselines if _key(cells[b]) > _key(dp)]
    if beaten:
        notes.append("pipedream-dp < " + ",".join(beaten))
    if _key(ls) < _key(dp):
        notes.append("local-search < pipedream-dp")
    if not checked:
        return "-" if not notes else "(" + "; ".join(notes) + ")"
    return "FAIL: " + "; ".join(notes) if notes else "ok"


def _print_table(title: str, rows: list[Row]) -> None:
    header = ["model", "cluster", "schedule", *AGENTS, "checks"]
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model, cluster_name, schedule, cells, verdict in rows:
        texts = [cells[a].text() for a in AGENTS]
        print("| " + " | ".join([model, cluster_name, schedule, *texts, verdict]) + " |")


def run(iterations: int, csv_path: str | None) -> int:
    """Print both tables; return the number of failed checks."""
    grid = [(m, c, True) for m in CHECKED_MODELS for c in HOMOGENEOUS]
    grid += [(m, c, False) for m in SIDE_MODELS for c in HOMOGENEOUS]
    grid += [(m, c, False) for m in (*CHECKED_MODELS, *SIDE_MODELS) for c in HETEROGENEOUS]
    tables: dict[str, list[Row]] = {"pipeline": [], "best": []}
    for model, cluster_name, checked in grid:
        graph = _load(model)
        if graph is None:
            continue
        devices = load_cluster(cluster_name).num_devices
        for schedule in SCHEDULES:
            for table, pipeline_baselines in (
                ("pipeline", PIPELINE_BASELINES),
                ("best", BASELINES),
            ):
                cells = {}
                for a in AGENTS:
                    if a == "data-parallel":
                        depths = [1]
                    elif table == "pipeline":
                        depths = [devices]
                    else:
                        depths = list(range(1, devices + 1))
                    cells[a] = best_cell(a, graph, cluster_name, schedule, iterations, depths)
                verdict = _verdict(cells, pipeline_baselines, checked)
                tables[table].append((model, cluster_name, schedule, cells, verdict))
                print(f"  {table}: {model} {cluster_name} {schedule}: {verdict}", file=sys.stderr)
    _print_table("Pipeline of D stages (S = D, R = 1; data-parallel: 1 x D)", tables["pipeline"])
    _print_table("Best depth (each agent's best S x R with S R = D)", tables["best"])
    print(
        "\nSamples/s of each agent's plan (S stages x R replicas); OOM = out of memory. "
        f"Global batch: {MICROBATCHES_PER_DEVICE} microbatches per device per iteration. "
        f"local-search: {iterations} moves."
    )
    every = tables["pipeline"] + tables["best"]
    seconds = {a: sum(r[3][a].seconds for r in every) for a in AGENTS}
    print("planning time, all rows: " + ", ".join(f"{a} {s:.1f}s" for a, s in seconds.items()))
    failures = sum(r[4].startswith("FAIL") for r in every)
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["table", "model", "cluster", "schedule", "agent", "throughput_samples_per_s",
                 "feasible", "num_stages", "data_parallel", "planning_s"]
            )  # fmt: skip
            for table, rows in tables.items():
                for model, cluster_name, schedule, cells, _ in rows:
                    for a in AGENTS:
                        c = cells[a]
                        writer.writerow(
                            [table, model, cluster_name, schedule, a, c.throughput, c.feasible,
                             c.num_stages, c.replicas, c.seconds]
                        )  # fmt: skip
    print(f"checks failed: {failures}")
    return failures


BOUND_MODELS = ("inception_v3", "densenet121")
BOUND_CAPS = (300, 1000, 3000, 6000)


def bound_table() -> None:
    """pipedream-dp at several state caps on branchy graphs (8xA100-nvlink, S = 8, 1f1b)."""
    cluster = load_cluster("8xA100-nvlink")
    print("\npipedream-dp state-space cap (8xA100-nvlink, 8 stages, 1f1b, M = 64)\n")
    print("| model | nodes | max_downsets | downsets | DP nodes | samples/s | planning s |")
    print("|---|---|---|---|---|---|---|")
    for model in BOUND_MODELS:
        graph = _load(model)
        if graph is None:
            continue
        for cap in BOUND_CAPS:
            start = time.perf_counter()
            plan = agents.make("pipedream-dp", max_downsets=cap).plan(
                graph, cluster, num_stages=8, microbatches=64, data_parallel=1
            )
            seconds = time.perf_counter() - start
            assert plan.predicted is not None and plan.agent is not None
            print(
                f"| {model} | {graph.num_nodes} | {cap} | {plan.agent['downsets']} | "
                f"{plan.agent['dp_nodes']} | {plan.predicted['throughput_samples_per_s']:,.1f} | "
                f"{seconds:.1f} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000, help="local-search moves")
    parser.add_argument("--csv", default=None, help="also write the figures to this CSV")
    args = parser.parse_args(argv)
    try:
        failures = run(args.iterations, args.csv)
        bound_table()
        return 1 if failures else 0
    except PipeenvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
