"""The benchmark sweep: zoo models x clusters x schedules x agents, as tables and plots.

Every cell plans one model on one cluster with one agent and one schedule, and keeps the
agent's best plan over the pipeline shapes it is offered: ``S`` stages with ``R = D / S``
replicas for every power-of-two ``S`` from 2 to the cluster's ``D`` devices (``S = 1``,
``R = D`` for ``data-parallel``). All plans of a cluster process the same global batch per
iteration, ``4 D`` microbatches (``M = 4 D / R`` per replica), so their throughputs compare
directly. Graphs are the zoo's analytic graphs costed for the cluster's device kind.

Run ``pipeenv bench --quick --out DIR`` or ``python -m benchmarks.sweep --quick --out DIR``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import traceback
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pipeenv.cluster import Cluster, load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.simulator import simulate

__all__ = [
    "CLUSTERS",
    "QUICK_MODELS",
    "Cell",
    "SweepConfig",
    "main",
    "run_cell",
    "run_sweep",
    "shapes",
]

QUICK_MODELS = ("resnet50", "vgg16", "gpt2", "inception_v3")
CLUSTERS = ("4xA100-nvlink", "2x4xA100-ib", "16xV100-25gbe", "hetero-4xA100-4xV100")
SCHEDULES = ("1f1b", "gpipe")
BASELINE_AGENTS = (
    "data-parallel",
    "random",
    "uniform-layers",
    "balanced-params",
    "balanced-time",
    "pipedream-dp",
    "local-search",
)
LEARNED_AGENT = "ppo-gcn"
MICROBATCHES_PER_DEVICE = 4

# Per-mode agent options: the quick sweep bounds the searches so that the README's main command
# ends within minutes on 2 cores.
AGENT_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"local-search": {"iterations": 300}},
    "full": {"local-search": {"iterations": 3000}},
}
# The learned agent is trained once per sweep, on the sweep's zoo models, before the cells run
# (unless --policy gives a model): a 4-stage policy on the first cluster for a fixed number of
# environment steps (a step budget, not a time limit, so the seed fixes the policy); it then
# plans every cell with up to 4 stages.
POLICY_TIMESTEPS = {"quick": 30_000, "full": 100_000}
# Node padding of the policy: the full sweep's densenet121 has too many edges at 64 nodes.
POLICY_MAX_NODES = {"quick": 64, "full": 128}
POLICY_STAGES = 4

CSV_FIELDS = (
    "model",
    "cluster",
    "devices",
    "schedule",
    "agent",
    "nodes",
    "stages",
    "data_parallel",
    "microbatches",
    "iteration_s",
    "throughput_samples_per_s",
    "speedup_vs_data_parallel",
    "speedup_vs_pipedream",
    "efficiency",
    "bubble_fraction",
    "peak_memory_bytes",
    "oom",
    "planning_s",
    "plan_file",
    "graph_file",
    "error",
)


@dataclass(frozen=True)
class Cell:
    """One planning job of the sweep."""

    model: str
    cluster: str
    schedule: str
    agent: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    graph_file: str | None = None  # a PipeDream profile, for models named "pipedream:NAME"

    @property
    def key(self) -> str:
        return f"{self.model}__{self.cluster}__{self.schedule}__{self.agent}"


@dataclass
class SweepConfig:
    """What a sweep covers and where it writes."""

    models: Sequence[str]
    clusters: Sequence[str] = CLUSTERS
    schedules: Sequence[str] = SCHEDULES
    agents: Sequence[str] = (*BASELINE_AGENTS, LEARNED_AGENT)
    workers: int = 1
    seed: int = 0
    mode: str = "quick"
    out: Path = Path("bench-out")
    policy: str | None = None
    policy_trained: bool = False
    policy_training_s: float | None = None
    pipedream_profiles: Path | None = None
    progress: bool = True


def shapes(agent: str, num_devices: int) -> list[tuple[int, int]]:
    """The (stages, replicas) pairs an agent is offered on ``num_devices`` devices."""
    if agent == "data-parallel":
        return [(1, num_devices)]
    out = []
    stages = 2
    while stages <= num_devices:
        if num_devices % stages == 0:
            out.append((stages, num_devices // stages))
        stages *= 2
    return out


def _cell_seed(seed: int, key: str) -> int:
    return zlib.crc32(f"{seed}/{key}".encode())


_GRAPHS: dict[tuple[str, str], OperatorGraph] = {}


def _graph(model: str, cluster: Cluster, graph_file: str | None = None) -> OperatorGraph:
    """The model's graph (cached per process): a zoo graph costed for the cluster's reference
    device, or the PipeDream profile ``graph_file`` as published."""
    import pipeenv.zoo

    device = cluster.reference_kind or pipeenv.zoo.DEFAULT_DEVICE
    if graph_file is not None:
        from pipeenv.graph import from_pipedream

        key = (graph_file, "profile")
        if key not in _GRAPHS:
            _GRAPHS[key] = from_pipedream(graph_file, name=model)
        return _GRAPHS[key]
    key = (model, device)
    if key not in _GRAPHS:
        _GRAPHS[key] = pipeenv.zoo.load(model, device=device)
    return _GRAPHS[key]


def _agent_options(cell: Cell) -> dict[str, Any]:
    import agents

    options = dict(cell.options)
    if "seed" in agents.option_names(cell.agent):
        options["seed"] = cell.seed
    return options


def run_cell(cell: Cell, plans_dir: Path | None = None) -> dict[str, Any]:
    """Plan and simulate one cell; a failure becomes the row's ``error``, never an exception."""
    import agents

    row: dict[str, Any] = {
        "model": cell.model,
        "cluster": cell.cluster,
        "schedule": cell.schedule,
        "agent": cell.agent,
        "error": "",
    }
    try:
        cluster = load_cluster(cell.cluster)
        graph = _graph(cell.model, cluster, cell.graph_file)
        row.update(devices=cluster.num_devices, nodes=graph.num_nodes, graph_file=cell.graph_file)
        agent = agents.make(cell.agent, **_agent_options(cell))
        best: tuple[Plan, Any] | None = None
        planning = 0.0
        failures = []
        for stages, replicas in shapes(cell.agent, cluster.num_devices):
            if stages > graph.num_nodes:
                continue
            micro = MICROBATCHES_PER_DEVICE * cluster.num_devices // replicas
            start = time.perf_counter()
            try:
                plan = agent.plan(
                    graph,
                    cluster,
                    num_stages=stages,
                    microbatches=micro,
                    schedule=cell.schedule,
                    data_parallel=replicas,
                )
            except PipeenvError as exc:
                failures.append(f"S={stages}: {exc}")
                continue
            finally:
                planning += time.perf_counter() - start
            result = simulate(graph, cluster, plan)
            if best is None or (result.feasible, result.throughput_samples_per_s) > (
                best[1].feasible,
                best[1].throughput_samples_per_s,
            ):
                best = (plan, result)
        row["planning_s"] = planning
        if best is None:
            row["error"] = "; ".join(failures) or "no pipeline shape fits this graph"
            return row
        plan, result = best
        row.update(
            stages=plan.num_stages,
            data_parallel=plan.data_parallel,
            microbatches=plan.microbatches,
            iteration_s=result.iteration_s,
            throughput_samples_per_s=result.throughput_samples_per_s,
            efficiency=result.efficiency,
            bubble_fraction=result.bubble_fraction,
            peak_memory_bytes=max(s.peak_memory_bytes for s in result.stages),
            oom=not result.feasible,
        )
        if plans_dir is not None:
            path = plans_dir / f"{cell.key.replace(':', '_').replace('/', '_')}.json"
            plan.save(path)
            row["plan_file"] = str(path.relative_to(plans_dir.parent))
    except Exception as exc:  # a failing cell is reported in its row, the sweep goes on
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        row["error"] = f"{type(exc).__name__}: {first}"
        if os.environ.get("PIPEENV_DEBUG"):
            traceback.print_exc()
    return row


def _warm_up(agent_names: Sequence[str]) -> None:
    """Compile every agent's Numba and torch paths once, so planning times measure planning."""
    import torch

    import agents
    from pipeenv.cluster import Device, Link
    from pipeenv.graph import Node

    torch.set_num_threads(1)
    nodes = [Node(f"n{i}", "op", 1e-3, 2e-3, 1e6, 1e6) for i in range(6)]
    graph = OperatorGraph(
        "warm-up", nodes, [(f"n{i}", f"n{i + 1}") for i in range(5)], microbatch_size=1
    )
    cluster = Cluster(
        "warm-up", [Device(f"d{i}", 0, 1.0, 1e12) for i in range(2)], Link(1e11, 1e-6)
    )
    for name in agent_names:
        if name == LEARNED_AGENT:
            continue
        stages = 1 if name == "data-parallel" else 2
        agents.make(name).plan(graph, cluster, num_stages=stages, microbatches=2)


def _worker(args: tuple[Cell, Path | None]) -> dict[str, Any]:
    return run_cell(*args)


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """Speed-up over data-parallel and over pipedream-dp in the same model/cluster/schedule."""
    reference: dict[tuple[str, str, str, str], float] = {}
    for row in rows:
        if row.get("throughput_samples_per_s") and not row.get("oom") and not row["error"]:
            reference[(row["model"], row["cluster"], row["schedule"], row["agent"])] = row[
                "throughput_samples_per_s"
            ]
    for row in rows:
        group = (row["model"], row["cluster"], row["schedule"])
        for base, column in (
            ("data-parallel", "speedup_vs_data_parallel"),
            ("pipedream-dp", "speedup_vs_pipedream"),
        ):
            ref = reference.get((*group, base))
            value = row.get("throughput_samples_per_s")
            row[column] = value / ref if ref and value and not row.get("oom") else ""


def cells_of(config: SweepConfig) -> list[Cell]:
    """Every cell of the sweep, in a stable order."""
    mode_options = AGENT_OPTIONS[config.mode]
    models: list[tuple[str, str | None]] = [(m, None) for m in config.models]
    if config.pipedream_profiles is not None:
        models += [
            (f"pipedream:{p.parent.name}", str(p))
            for p in sorted(config.pipedream_profiles.glob("*/graph.txt"))
        ]
    out = []
    for model, graph_file in models:
        for cluster in config.clusters:
            for schedule in config.schedules:
                for agent in config.agents:
                    options: dict[str, Any] = dict(mode_options.get(agent, {}))
                    if agent == LEARNED_AGENT and config.policy:
                        options = {"model": config.policy}
                    key = f"{model}__{cluster}__{schedule}__{agent}"
                    out.append(
                        Cell(
                            model,
                            cluster,
                            schedule,
                            agent,
                            _cell_seed(config.seed, key),
                            options,
                            graph_file,
                        )
                    )
    return out


def run_sweep(config: SweepConfig) -> list[dict[str, Any]]:
    """Run every cell (on ``config.workers`` processes) and write the outputs to ``config.out``.

    :returns: the rows of ``results.csv``.
    """
    from tqdm import tqdm

    from benchmarks.report import write_outputs

    out = Path(config.out)
    plans_dir = out / "plans"
    plans_dir.mkdir(parents=True, exist_ok=True)
    if LEARNED_AGENT in config.agents and not config.policy:
        started = time.perf_counter()
        config.policy = train_policy(config)
        config.policy_trained = True
        config.policy_training_s = time.perf_counter() - started
    cells = cells_of(config)
    jobs = [(cell, plans_dir) for cell in cells]
    bar = tqdm(
        total=len(jobs), desc="sweep", unit="cell", disable=not config.progress, file=sys.stderr
    )
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    if config.workers <= 1:
        _warm_up(config.agents)
        for job in jobs:
            rows.append(_worker(job))
            bar.update()
    else:
        with get_context("fork").Pool(
            config.workers, initializer=_warm_up, initargs=(list(config.agents),)
        ) as pool:
            for row in pool.imap_unordered(_worker, jobs, chunksize=1):
                rows.append(row)
                bar.update()
    bar.close()
    order = {cell.key: i for i, cell in enumerate(cells)}
    rows.sort(key=lambda r: order[f"{r['model']}__{r['cluster']}__{r['schedule']}__{r['agent']}"])
    _add_speedups(rows)
    write_outputs(rows, out, config=_describe(config), wall_s=time.perf_counter() - start)
    return rows


def train_policy(config: SweepConfig) -> str:
    """Train the sweep's ``ppo-gcn`` policy (see :data:`POLICY_TIMESTEPS`); its model path."""
    from agents.train import train

    models = [m for m in config.models if not m.startswith("pipedream:")]
    run_dir = Path(config.out) / "policy"
    train(
        LEARNED_AGENT,
        models,
        config.clusters[0],
        POLICY_TIMESTEPS[config.mode],
        str(run_dir),
        seed=config.seed,
        num_stages=POLICY_STAGES,
        microbatches=4 * POLICY_STAGES,
        max_nodes=POLICY_MAX_NODES[config.mode],
        force=True,
        progress_bar=config.progress,
    )
    return str(run_dir / "best_model.zip")


def _describe(config: SweepConfig) -> dict[str, Any]:
    d = asdict(config)
    d["out"] = str(config.out)
    d["pipedream_profiles"] = str(config.pipedream_profiles) if config.pipedream_profiles else None
    return d


def write_csv(rows: Iterable[dict[str, Any]], path: Path) -> None:
    """``results.csv``: one row per cell, the columns of :data:`CSV_FIELDS`."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k, "")) for k in CSV_FIELDS})


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's options (shared by ``pipeenv bench`` and ``python -m benchmarks.sweep``)."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help=f"models {', '.join(QUICK_MODELS)}; bounded searches (default)",
    )
    size.add_argument("--full", action="store_true", help="every full-size zoo model")
    parser.add_argument("--models", nargs="+", help="zoo model names (override the mode's)")
    parser.add_argument("--clusters", nargs="+", default=list(CLUSTERS), help="presets or files")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES))
    parser.add_argument(
        "--agents", nargs="+", help=f"agent names (default: all baselines and {LEARNED_AGENT})"
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--policy",
        help=f"a trained {LEARNED_AGENT} model.zip to plan with "
        "instead of training inside the sweep",
    )
    parser.add_argument(
        "--pipedream-profiles",
        type=Path,
        metavar="DIR",
        help="also plan every DIR/*/graph.txt PipeDream profile",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """A :class:`SweepConfig` from parsed :func:`add_arguments` options, checked."""
    import agents
    import pipeenv.zoo

    mode = "full" if args.full else "quick"
    if args.models:
        models = list(args.models)
    elif mode == "full":
        models = [m for m in pipeenv.zoo.names() if not m.startswith("tiny-")]
    else:
        models = list(QUICK_MODELS)
    for model in models:
        pipeenv.zoo.spec(model)
    for cluster in args.clusters:
        load_cluster(cluster)
    available = agents.names()
    chosen = (
        list(args.agents)
        if args.agents
        else [a for a in (*BASELINE_AGENTS, LEARNED_AGENT) if a in available]
    )
    for agent in chosen:
        if agent not in available:
            raise PipeenvError(f"bench: unknown agent {agent!r} (known: {', '.join(available)})")
    for schedule in args.schedules:
        if schedule not in SCHEDULES:
            raise PipeenvError(f"bench: unknown schedule {schedule!r}")
    if args.workers < 1:
        raise PipeenvError(f"bench: --workers must be >= 1, got {args.workers}")
    if args.pipedream_profiles is not None and not args.pipedream_profiles.is_dir():
        raise PipeenvError(f"bench: --pipedream-profiles {args.pipedream_profiles} is not a folder")
    if args.policy is not None and not Path(args.policy).exists():
        raise PipeenvError(f"bench: --policy {args.policy} does not exist")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise PipeenvError(f"bench: output folder {out} is not empty (pass --force to replace it)")
    return SweepConfig(
        models=models,
        clusters=list(args.clusters),
        schedules=list(args.schedules),
        agents=chosen,
        workers=args.workers,
        seed=args.seed,
        mode=mode,
        out=out,
        policy=args.policy,
        pipedream_profiles=args.pipedream_profiles,
        progress=not args.no_progress,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the sweep and print the headline table and where the files are."""
    from benchmarks.report import headline_markdown

    config = config_from_args(args)
    rows = run_sweep(config)
    print(headline_markdown(rows))
    failed = sum(1 for r in rows if r["error"])
    print(
        f"\n{len(rows)} cells ({failed} failed); results in {config.out}/: results.csv, "
        "results.md, plans/, *.png"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except PipeenvError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
