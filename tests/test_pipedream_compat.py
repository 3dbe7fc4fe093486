"""PipeDream's planner on its own cost model: hand-computed figures, the bound, the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeenv.cli
from agents.pipedream_compat import pipedream_plan, planning_graph
from pipeenv.cli import main
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.importers.pipedream import from_pipedream
from tests.conftest import PIPEDREAM_PROFILES

NODE = (
    "{} -- {} -- forward_compute_time={}, backward_compute_time={}, "
    "activation_size={}, parameter_size={}"
)

# A (30 ms, 100 MB params, 100 MB out) -> B (60 ms, 2 MB params, 10 MB out) -> C (90 ms),
# fed by a data-loading Input and feeding a dead-end __getitem__.
PROFILE = "\n".join(
    [
        NODE.format("node1", "Input", "5.000", "0.000", "1000.0", "0.000"),
        NODE.format(
            "node2", "Embedding(1000, 25000)", "10.000", "20.000", "100000000.0", "100000000.000"
        ),
        NODE.format(
            "node3",
            "Linear(in_features=25000, out_features=2500)",
            "20.000",
            "40.000",
            "10000000.0",
            "2000000.000",
        ),
        NODE.format(
            "node4", "LSTM(2500, 2500)", "30.000", "60.000", "[1000000.0; 1000000.0]", "0.000"
        ),
        NODE.format("node5", "__getitem__(0)", "0.000", "0.000", "1000000.0", "0.000"),
        "\tnode1 -- node2",
        "\tnode2 -- node3",
        "\tnode3 -- node4",
        "\tnode4 -- node5",
    ]
)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "toy" / "graph.txt"
    path.parent.mkdir()
    path.write_text(PROFILE)
    return path


def stages(plan: object) -> list[tuple[list[str], int]]:
    return [(list(s.nodes), s.replication) for s in plan.stages]  # type: ignore[attr-defined]


def test_planning_graph_drops_inputs_and_getitem_sinks(profile: Path) -> None:
    reduced, inputs, sinks = planning_graph(from_pipedream(profile))
    assert reduced.order == ("node2", "node3", "node4")
    assert (inputs, sinks) == (("node1",), ("node5",))


def test_straight_pipeline(profile: Path) -> None:
    g = from_pipedream(profile)
    # Cuts: A | B C -> max(0.03, 0.15); A B | C -> max(0.09, 0.09).
    two = pipedream_plan(g, 2, straight_pipeline=True)
    assert two.time_per_stage_s == pytest.approx(0.09)
    assert stages(two) == [(["node1", "node2", "node3"], 1), (["node4", "node5"], 1)]
    assert two.single_machine_time_s == pytest.approx(0.18)
    # Data parallel on 2: (0.18 + 4 * 1 * 102e6 / (1e9 * 2)) / 2.
    assert two.data_parallel_time_s == pytest.approx((0.18 + 0.204) / 2)
    assert two.speedup_over_single_machine == pytest.approx(2.0)
    three = pipedream_plan(g, 3, straight_pipeline=True)
    assert three.time_per_stage_s == pytest.approx(0.09)
    assert [s.replication for s in three.stages] == [1, 1, 1]
    assert [s.time_s for s in three.stages] == pytest.approx([0.03, 0.06, 0.09])


def test_replicated_pipeline(profile: Path) -> None:
    plan = pipedream_plan(from_pipedream(profile), 3)
    # A x1 | B C x2: max(0.03, (0.15 + 4 * 1 * 2e6 / (1e9 * 2)) / 2) = 0.077, better than
    # A|B|C (0.09), A B x1 | C x2 (0.09) and pure data parallelism (0.150667).
    assert plan.time_per_stage_s == pytest.approx(0.077)
    assert stages(plan) == [(["node1", "node2"], 1), (["node3", "node4", "node5"], 2)]
    assert plan.data_parallel_time_s == pytest.approx((0.18 + 4 * 2 * 102e6 / 3e9) / 3)
    assert plan.speedup_over_data_parallel == pytest.approx(0.150666667 / 0.077)
    assert plan.stages[1].compute_s == pytest.approx(0.15)
    assert plan.stages[1].param_bytes == 2e6
    assert (plan.stages[0].output_bytes, plan.stages[1].input_bytes) == (1e8, 1e8)
    assert plan.exact and plan.num_downsets == 4


def test_activation_compression_term(profile: Path) -> None:
    plan = pipedream_plan(from_pipedream(profile), 3, activation_compression_ratio=2.0)
    # Cut after A costs 2 * 1e8 / (1e9 * r * 2) = 0.1 / r at both of its ends, so A x1 | B C x2
    # now takes max(0.03, 0.1) = 0.1; A B x1 | C x2 takes max(0.09, 2 * 1e7 / 2e9) = 0.09.
    assert plan.time_per_stage_s == pytest.approx(0.09)
    assert stages(plan) == [(["node1", "node2", "node3"], 1), (["node4", "node5"], 2)]
    assert [s.time_s for s in plan.stages] == pytest.approx([0.09, 0.045])


def test_memory_constraint(profile: Path) -> None:
    # A stage with m machines used so far and r replicas stashes ceil((3 - m) / r) copies of
    # activations + parameters: A x1 needs 2 * 2e8 > 3e8; A B x2 | C x1 needs 1 * 2.12e8.
    g = from_pipedream(profile)
    plan = pipedream_plan(g, 3, memory_size=3e8)
    assert plan.time_per_stage_s == pytest.approx((0.09 + 4 * 102e6 / 2e9) / 2)
    assert stages(plan) == [(["node1", "node2", "node3"], 2), (["node4", "node5"], 1)]
    # Every first stage holds A (2e8), so under 1e8 only the last stage fits: PipeDream's
    # estimate stashes nothing there (m = N), hence pure data parallelism.
    only = pipedream_plan(g, 3, memory_size=1e8)
    assert stages(only) == [(["node1", "node2", "node3", "node4", "node5"], 3)]
    assert only.time_per_stage_s == pytest.approx(only.data_parallel_time_s)
    with pytest.raises(PipeenvError, match="meets the memory constraint"):
        pipedream_plan(g, 3, memory_size=1e8, straight_pipeline=True)


def test_single_machine(profile: Path) -> None:
    plan = pipedream_plan(from_pipedream(profile), 1)
    assert (
        plan.time_per_stage_s
        == plan.single_machine_time_s
        == plan.data_parallel_time_s
        == pytest.approx(0.18)
    )
    assert stages(plan) == [(["node1", "node2", "node3", "node4", "node5"], 1)]


def test_branches_can_be_separate_stages() -> None:
    nodes = [
        Node(i, "op", f, 0.0, 1.0, 0.0)
        for i, f in zip("abcd", [0.01, 0.04, 0.04, 0.01], strict=True)
    ]
    g = OperatorGraph(
        "diamond", nodes, [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], microbatch_size=1
    )
    plan = pipedream_plan(g, 4, straight_pipeline=True)
    assert plan.time_per_stage_s == pytest.approx(0.04)
    assert [s.nodes for s in plan.stages] in (
        [("a",), ("b",), ("c",), ("d",)],
        [("a",), ("c",), ("b",), ("d",)],
    )


def test_bound_coarsens_and_reports_it() -> None:
    nodes = [Node(f"v{i}", "op", 0.01, 0.02, 1.0, 0.0) for i in range(12)]
    g = OperatorGraph("wide", nodes, [], microbatch_size=1)
    plan = pipedream_plan(g, 4, straight_pipeline=True, max_downsets=64)
    assert not plan.exact and plan.num_downsets <= 64 and plan.dp_nodes < 12
    assert sorted(n for s in plan.stages for n in s.nodes) == sorted(g.order)
    assert len(plan.stages) == 4
    assert plan.time_per_stage_s >= 0.09 - 1e-12  # the unbounded optimum: 3 nodes per stage


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_machines": 0}, "number of machines must be an integer >= 1"),
        ({"bandwidth_Bps": 0.0}, "bandwidth must be > 0"),
        ({"activation_compression_ratio": -1.0}, "compression ratio must be > 0"),
        ({"memory_size": 0.0}, "memory size must be > 0"),
        ({"num_machines": 4, "straight_pipeline": True}, "meets the number of nodes"),
    ],
)
def test_bad_options(profile: Path, options: dict[str, object], message: str) -> None:
    kwargs = {"num_machines": 2, **options}
    n = kwargs.pop("num_machines")
    with pytest.raises(PipeenvError, match=message):
        pipedream_plan(from_pipedream(profile), n, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> None:
    if "pipedream" not in pipeenv.cli._COMMAND_MODULES:
        monkeypatch.setattr(
            pipeenv.cli, "_COMMAND_MODULES", (*pipeenv.cli._COMMAND_MODULES, "pipedream")
        )


@pytest.mark.usefixtures("cli")
def test_cli_json(profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipedream-plan", str(profile), "-n", "3", "-b", "1e9", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["graph"] == "toy"
    assert doc["time_per_stage_s"] == pytest.approx(0.077)
    assert doc["single_machine_time_s"] == pytest.approx(0.18)
    assert doc["data_parallel_time_s"] == pytest.approx(0.150666667)
    assert doc["speedup_over_single_machine"] == pytest.approx(0.18 / 0.077)
    assert [(s["nodes"], s["replication"]) for s in doc["stages"]] == [
        (["node1", "node2"], 1),
        (["node3", "node4", "node5"], 2),
    ]
    assert (
        main(
            [
                "pipedream-plan",
                str(profile),
                "-n",
                "3",
                "--memory-size",
                "3e8",
                "--use-memory-constraint",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["stages"][0]["replication"] == 2


@pytest.mark.usefixtures("cli")
def test_cli_text(profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipedream-plan", str(profile), "-n", "2", "--straight-pipeline"]) == 0
    out = capsys.readouterr().out
    assert "time per stage" in out and "90.000 ms" in out and "2 stages" in out


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "0"],
        ["-n", "2", "-b", "-5"],
        ["-n", "9", "--straight-pipeline"],
        ["-n", "2", "--straight-pipeline", "--use-memory-constraint", "--memory-size", "10"],
        ["-n", "2", "--use-memory-constraint", "--memory-size", "0"],
    ],
)
def test_cli_bad_input(profile: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipedream-plan", str(profile), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "error" in captured.err


@pytest.mark.usefixtures("cli")
def test_cli_bad_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("node1 -- X -- forward_compute_time=oops")
    assert main(["pipedream-plan", str(bad), "-n", "2", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"{bad}:1:" in captured.err and captured.err.count("\n") == 1


REAL = [
    "vgg16/graph.txt",
    "resnet50/graph.txt",
    "gnmt/graph.txt",
    "inception_v3/graph.txt",
    "nasnetalarge/graph.txt",
    "densenet121/graph.txt",
]


@pytest.mark.parametrize("relpath", REAL)
def test_real_profiles(relpath: str) -> None:
    path = PIPEDREAM_PROFILES / relpath
    if not path.exists():
        pytest.skip(f"{path} not present")
    g = from_pipedream(path)
    plan = pipedream_plan(g, 4, max_downsets=1000)
    assert sum(s.replication for s in plan.stages) == 4
    stage_of = {n: i for i, s in enumerate(plan.stages) for n in s.nodes}
    assert sorted(stage_of) == sorted(g.order)
    assert all(stage_of[u] <= stage_of[v] for u, v in g.edges)
    assert plan.time_per_stage_s == pytest.approx(max(s.time_s for s in plan.stages))
    assert plan.time_per_stage_s <= plan.single_machine_time_s / 2


def brute_force(g: OperatorGraph, n: int, bandwidth: float, ratio: float | None) -> float:
    """Every stage assignment and replication, costed directly from the model's definition."""
    ids = list(g.order)
    a = g.arrays
    best = float("inf")
    for num_stages in range(1, min(n, len(ids)) + 1):
        for assignment in itertools.product(range(num_stages), repeat=len(ids)):
            if len(set(assignment)) < num_stages:
                continue
            if any(
                assignment[u] > assignment[v] for u, v in zip(a.edge_src, a.edge_dst, strict=True)
            ):
                continue
            for reps in itertools.product(range(1, n + 1), repeat=num_stages):
                if sum(reps) != n:
                    continue
                worst = 0.0
                for s, r in enumerate(reps):
                    members = [i for i in range(len(ids)) if assignment[i] == s]
                    compute = sum(a.forward_s[i] + a.backward_s[i] for i in members)
                    params = sum(a.param_bytes[i] for i in members)
                    t = (compute + 4 * (r - 1) * params / (bandwidth * r)) / r
                    if ratio is not None:
                        for cut in (s - 1, s):
                            if 0 <= cut < num_stages - 1:
                                x = sum(
                                    a.output_bytes[i]
                                    for i in range(len(ids))
                                    if assignment[i] <= cut
                                    and any(
                                        assignment[v] > cut
                                        for u, v in zip(a.edge_src, a.edge_dst, strict=True)
                                        if u == i
                                    )
                                )
                                t = max(t, 2 * x / (bandwidth * r * ratio))
                    worst = max(worst, t)
                best = min(best, worst)
    return best


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 5),
    n=st.integers(1, 3),
    ratio=st.sampled_from([None, 0.5, 4.0]),
)
def test_dp_matches_brute_force(seed: int, size: int, n: int, ratio: float | None) -> None:
    rng = np.random.default_rng(seed)
    nodes = [
        Node(
            f"v{i}",
            "op",
            float(rng.uniform(0.0, 0.05)),
            float(rng.uniform(0.0, 0.1)),
            float(rng.integers(0, 10**8)),
            float(rng.integers(0, 10**8)),
        )
        for i in range(size)
    ]
    edges = [
        (f"v{i}", f"v{j}") for i in range(size) for j in range(i + 1, size) if rng.random() < 0.4
    ]
    g = OperatorGraph("r", nodes, edges, microbatch_size=1)
    plan = pipedream_plan(g, n, activation_compression_ratio=ratio)
    assert plan.time_per_stage_s == pytest.approx(brute_force(g, n, 1e9, ratio))
