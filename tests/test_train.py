"""``agents.train`` and ``pipeenv train``: a short run of each learned agent trains, saves,
loads and plans deterministically; the run directory and the training-cost figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch as th

import agents
from agents.train import THRESHOLDS, train
from pipeenv.cli import main
from pipeenv.cluster import load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.zoo import load as load_zoo

th.set_num_threads(1)

SHORT: dict[str, Any] = {
    "num_stages": 3,
    "microbatches": 8,
    "max_nodes": 12,
    "n_envs": 2,
    "eval_freq": 128,
    "samples": 1,
    "progress_bar": False,
}
SMALL_HYPER = {
    "ppo-gcn": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "recurrent-gcn": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "oneshot-gcn": {"n_steps": 16, "batch_size": 16, "n_epochs": 2},
}


@pytest.mark.parametrize("agent", ["ppo-gcn", "recurrent-gcn", "oneshot-gcn"])
def test_a_short_run_trains_saves_loads_and_plans_deterministically(
    tmp_path: Path, agent: str
) -> None:
    out = tmp_path / "run"
    cost = train(agent, ["vgg16"], "4xA100-nvlink", 256, str(out), eval_graphs=["tiny-gpt"],
                 hyperparameters=SMALL_HYPER[agent], **SHORT)
    for name in ("config.json", "model.zip", "best_model.zip", "evaluations.json",
                 "training_cost.json", "progress.csv"):
        assert (out / name).is_file(), name
    assert cost["timesteps"] >= 256
    graph, cluster = load_zoo("vgg16"), load_cluster("4xA100-nvlink")
    plans = [
        agents.make(agent, model=str(out / "model.zip"), samples=2).plan(
            graph, cluster, num_stages=3, microbatches=8
        )
        for _ in range(2)
    ]
    plans[0].validate(graph, cluster)
    assert plans[0].stage_of == plans[1].stage_of
    assert plans[0].predicted == plans[1].predicted


def test_training_cost_figures_per_graph(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cost = train("ppo-gcn", ["vgg16"], "4xA100-nvlink", 256, str(out),
                 eval_graphs=["tiny-gpt"], hyperparameters=SMALL_HYPER["ppo-gcn"], **SHORT)
    assert cost == json.loads((out / "training_cost.json").read_text())
    evaluations = json.loads((out / "evaluations.json").read_text())
    assert [e["timesteps"] for e in evaluations][:3] == [0, 128, 256]
    assert set(cost["graphs"]) == {"vgg16", "tiny-gpt"}
    assert cost["graphs"]["tiny-gpt"]["held_out"] and not cost["graphs"]["vgg16"]["held_out"]
    for name, figures in cost["graphs"].items():
        ratios = [e["graphs"][name]["ratio"] for e in evaluations]
        assert figures["best_ratio"] == max(ratios)
        assert figures["final_ratio"] == ratios[-1]
        assert set(figures["reached"]) == {f"{t:.2f}" for t in THRESHOLDS}
        for key, hit in figures["reached"].items():
            first = next((e for e in evaluations if e["graphs"][name]["ratio"] >= float(key)), None)
            if first is None:
                assert hit is None
            else:
                assert hit["timesteps"] == first["timesteps"]
                assert 0 <= hit["train_wall_s"] <= hit["wall_s"]


def test_stop_ratio_ends_training_once_reached(tmp_path: Path) -> None:
    # Any plan reaches a tenth of pipedream-dp: the first evaluation after the start stops it.
    cost = train("ppo-gcn", ["vgg16"], "4xA100-nvlink", 100_000, str(tmp_path / "run"),
                 stop_ratio=0.1, hyperparameters=SMALL_HYPER["ppo-gcn"], **SHORT)
    assert cost["timesteps"] <= 256


def test_an_existing_run_dir_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(PipeenvError, match="--force"):
        train("ppo-gcn", ["vgg16"], "4xA100-nvlink", 64, str(out), **SHORT)
    assert (out / "keep.txt").exists()
    train("ppo-gcn", ["vgg16"], "4xA100-nvlink", 64, str(out), force=True,
          hyperparameters=SMALL_HYPER["ppo-gcn"], **SHORT)
    assert not (out / "keep.txt").exists() and (out / "model.zip").is_file()


@pytest.mark.parametrize(
    ("agent", "graphs", "options", "message"),
    [
        ("pipedream-dp", ["vgg16"], {}, "not a learned agent"),
        ("ppo-gcn", [], {}, "at least one training graph"),
        ("ppo-gcn", ["vgg16"], {"eval_graphs": ["vgg16"]}, "also trained on"),
        ("ppo-gcn", ["vgg16"], {"n_envs": 0}, "n_envs"),
        ("ppo-gcn", ["vgg16"], {"time_limit_s": 0.0}, "time_limit_s"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, agent: str, graphs: list[str], options: dict, message: str
) -> None:
    with pytest.raises(PipeenvError, match=message):
        train(agent, graphs, "4xA100-nvlink", 64, str(tmp_path / "run"), **options)
    assert not (tmp_path / "run").exists()


def test_the_cli_trains_and_prints_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--agent", "ppo-gcn", "--graphs", "vgg16", "--eval-graphs", "tiny-gpt",
            "--cluster", "4xA100-nvlink", "--timesteps", "128", "--out", str(out),
            "--stages", "3", "--microbatches", "8", "--n-envs", "2", "--max-nodes", "12",
            "--eval-freq", "128", "--samples", "1", "--no-progress",
            "--hyperparameters", json.dumps(SMALL_HYPER["ppo-gcn"])]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "vgg16 (trained)" in printed and "tiny-gpt (held out)" in printed
    assert (out / "model.zip").is_file()
    assert main(argv) == 2  # the run directory exists now
    assert "--force" in capsys.readouterr().err
