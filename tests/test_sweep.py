"""The benchmark sweep: cells, outputs, speed-ups, failures reported per row, CLI checks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import agents
from benchmarks.sweep import Cell, SweepConfig, run_cell, run_sweep, shapes
from pipeenv.cli import main


def test_shapes_offer_powers_of_two_that_divide_the_devices():
    assert shapes("data-parallel", 8) == [(1, 8)]
    assert shapes("pipedream-dp", 8) == [(2, 4), (4, 2), (8, 1)]
    assert shapes("balanced-time", 4) == [(2, 2), (4, 1)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("bench")
    config = SweepConfig(
        models=["vgg16"],
        clusters=["4xA100-nvlink", "16xV100-25gbe"],
        schedules=["1f1b"],
        agents=["data-parallel", "balanced-time", "pipedream-dp"],
        out=out,
        progress=False,
    )
    return out, run_sweep(config)


def test_outputs_are_written(sweep):
    out, rows = sweep
    for name in (
        "results.csv",
        "results.md",
        "sweep.json",
        "speedup.png",
        "efficiency.png",
        "planning_time.png",
        "gantt_vgg16.png",
    ):
        assert (out / name).stat().st_size > 0, name
    with (out / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) == 2 * 3
    assert all(Path(out / r["plan_file"]).exists() for r in table)
    md = (out / "results.md").read_text()
    assert "## Headline" in md and "Reproduce: `pipeenv bench --quick --models vgg16" in md


def test_speedups_are_relative_to_the_same_group(sweep):
    _, rows = sweep
    by = {(r["cluster"], r["agent"]): r for r in rows}
    for cluster in ("4xA100-nvlink", "16xV100-25gbe"):
        dp = by[(cluster, "data-parallel")]
        assert dp["speedup_vs_data_parallel"] == pytest.approx(1.0)
        for agent in ("balanced-time", "pipedream-dp"):
            row = by[(cluster, agent)]
            assert row["speedup_vs_data_parallel"] == pytest.approx(
                row["throughput_samples_per_s"] / dp["throughput_samples_per_s"]
            )
            # Same global batch for every plan: R * M = 4 devices' worth of microbatches.
            assert row["data_parallel"] * row["microbatches"] == 4 * row["devices"]
        assert by[(cluster, "pipedream-dp")]["speedup_vs_pipedream"] == pytest.approx(1.0)
        assert by[(cluster, "pipedream-dp")]["throughput_samples_per_s"] >= by[
            (cluster, "balanced-time")
        ]["throughput_samples_per_s"] * (1 - 1e-9)


def test_a_failing_cell_is_reported_in_its_row(monkeypatch):
    real = agents.make

    def broken(name, **options):  # type: ignore[no-untyped-def]
        if name == "balanced-time":
            raise RuntimeError("planner exploded\nsecond line")
        return real(name, **options)

    monkeypatch.setattr(agents, "make", broken)
    row = run_cell(Cell("vgg16", "4xA100-nvlink", "1f1b", "balanced-time", 0))
    assert row["error"] == "RuntimeError: planner exploded"
    assert run_cell(Cell("vgg16", "4xA100-nvlink", "1f1b", "data-parallel", 0))["error"] == ""


def test_cli_refuses_bad_options_and_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["bench", "--models", "vgg16", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert main(["bench", "--models", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["bench", "--agents", "oracle", "--out", str(tmp_path / "x")]) == 2
    assert "unknown agent 'oracle'" in capsys.readouterr().err


def test_pipedream_profiles_join_the_sweep(tmp_path):
    from conftest import PIPEDREAM_PROFILES

    source = PIPEDREAM_PROFILES / "vgg16" / "graph.txt"
    if not source.exists():
        pytest.skip(f"{source} not present")
    (tmp_path / "profiles" / "vgg16").mkdir(parents=True)
    (tmp_path / "profiles" / "vgg16" / "graph.txt").write_text(source.read_text())
    config = SweepConfig(
        models=[], clusters=["4xA100-nvlink"], schedules=["1f1b"],
        agents=["data-parallel", "balanced-time"], out=tmp_path / "out", progress=False,
        pipedream_profiles=tmp_path / "profiles",
    )
    rows = run_sweep(config)
    assert [(r["model"], r["agent"], r["error"]) for r in rows] == [
        ("pipedream:vgg16", "data-parallel", ""),
        ("pipedream:vgg16", "balanced-time", ""),
    ]
    assert rows[0]["nodes"] == 41  # every node of the profile, Input included


def test_headline_shows_a_missing_baseline_as_a_dash():
    from benchmarks.report import headline_markdown

    row = {"model": "m", "cluster": "c", "schedule": "1f1b", "agent": "data-parallel",
           "error": "", "oom": False, "throughput_samples_per_s": 10.0, "stages": 1,
           "data_parallel": 4, "speedup_vs_data_parallel": 1.0, "speedup_vs_pipedream": ""}
    assert headline_markdown([row]).splitlines()[-1].endswith("| 1.00x | - |")
