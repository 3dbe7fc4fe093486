"""``pipeenv agents`` and ``pipeenv plan``: the plan file, the summary, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import chain

import agents
from pipeenv.cli import main
from pipeenv.cluster import load_cluster
from pipeenv.plan import load_plan
from pipeenv.simulator import simulate


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    path = tmp_path / "chain.json"
    chain([1e-3, 2e-3, 3e-3, 4e-3], output_bytes=1e6, param_bytes=1e6).save(path)
    return path


def plan_args(graph_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "plan", "--graph", str(graph_file), "--cluster", "4xA100-nvlink", "--stages", "2",
        "--microbatches", "4", "--out", str(out), *extra,
    ]  # fmt: skip


def test_agents_lists_one_line_each(capsys):
    assert main(["agents"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == agents.names()


def test_plan_writes_a_plan_with_predicted_figures(graph_file, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(plan_args(graph_file, out, "--agent", "pipedream-dp", "--data-parallel", "1")) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("pipedream-dp: chain on 4xA100-nvlink, 2 stages x 1 replicas")
    assert str(out) in stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "pipeenv.plan/v1" and doc["agent"]["name"] == "pipedream-dp"
    from pipeenv.graph import load_graph

    graph, devices = load_graph(graph_file), load_cluster("4xA100-nvlink")
    result = simulate(graph, devices, load_plan(out))
    assert doc["predicted"]["iteration_s"] == pytest.approx(result.iteration_s)
    assert doc["predicted"]["throughput_samples_per_s"] == pytest.approx(
        result.throughput_samples_per_s
    )


def test_plan_passes_agent_options(graph_file, tmp_path):
    out = tmp_path / "plan.json"
    args = plan_args(graph_file, out, "--agent", "random", "--agent-options", '{"seed": 4}')
    assert main([*args, "--schedule", "gpipe"]) == 0
    doc = json.loads(out.read_text())
    assert doc["agent"] == {"name": "random", "seed": 4}
    assert doc["schedule"] == "gpipe"


def test_plan_refuses_to_overwrite_without_force(graph_file, tmp_path, capsys):
    out = tmp_path / "plan.json"
    out.write_text("keep")
    assert main(plan_args(graph_file, out, "--agent", "balanced-time")) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "exists (pass --force" in captured.err
    assert out.read_text() == "keep"
    assert main(plan_args(graph_file, out, "--agent", "balanced-time", "--force")) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--agent", "nope"], "agent 'nope' is unknown"),
        (["--agent", "random", "--agent-options", '{"sead": 1}'], "option 'sead' is unknown"),
        (["--agent", "random", "--agent-options", "[1]"], "must be a JSON object"),
        (["--agent", "random", "--agent-options", "{seed"], "is not valid JSON"),
        (["--agent", "random", "--agent-options", '{"seed": "x"}'], "must be an integer"),
        (["--agent", "data-parallel"], "num_stages must be 1"),
        (["--agent", "random", "--data-parallel", "3"], "exceeds the 4 devices"),
    ],
)
def test_bad_requests_exit_2_with_one_line(graph_file, tmp_path, capsys, extra, message):
    out = tmp_path / "plan.json"
    assert main(plan_args(graph_file, out, *extra)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert not out.exists()


def test_plan_takes_a_zoo_model_name(tmp_path):
    pytest.importorskip("pipeenv.zoo")
    out = tmp_path / "plan.json"
    args = [
        "plan", "--graph", "tiny-gpt", "--cluster", "4xA100-nvlink", "--stages", "4",
        "--microbatches", "8", "--agent", "balanced-time", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    assert json.loads(out.read_text())["graph"] == "tiny-gpt"
