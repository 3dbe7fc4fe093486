"""`pipeenv simulate` and `pipeenv clusters`: table, SPEC §6 JSON, files, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import chain

from pipeenv.cli import main
from pipeenv.cluster import load_cluster
from pipeenv.plan import Plan
from pipeenv.simulator import simulate


@pytest.fixture
def files(tmp_path):  # type: ignore[no-untyped-def]
    graph = chain([0.001, 0.002, 0.003, 0.004], output_bytes=1e6, param_bytes=1e6)
    cluster = load_cluster("4xA100-nvlink")
    plan = Plan.from_stages(graph, [0, 0, 1, 1], num_stages=2, devices=[0, 1], microbatches=4)
    paths = {
        "graph": tmp_path / "g.json",
        "cluster": tmp_path / "c.json",
        "plan": tmp_path / "p.json",
    }
    graph.save(paths["graph"])
    cluster.save(paths["cluster"])
    plan.save(paths["plan"])
    paths["expected"] = simulate(graph, cluster, plan).to_dict()  # type: ignore[assignment]
    return paths


def args(files, *extra):  # type: ignore[no-untyped-def]
    return [
        "simulate",
        "--graph",
        str(files["graph"]),
        "--cluster",
        str(files["cluster"]),
        "--plan",
        str(files["plan"]),
        *extra,
    ]


def test_table(files, capsys):
    assert main(args(files)) == 0
    out = capsys.readouterr().out
    assert "chain on 4xA100-nvlink: 2 stages x 1 replicas, 4 microbatches, 1f1b" in out
    assert "forward_ms" in out and "feasible" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]) == 2


def test_json_is_the_result(files, capsys):
    assert main(args(files, "--json")) == 0
    assert json.loads(capsys.readouterr().out) == files["expected"]


def test_preset_name_works_like_the_file(files, capsys):
    main(args(files, "--json"))
    by_file = json.loads(capsys.readouterr().out)
    main(
        [
            "simulate",
            "--graph",
            str(files["graph"]),
            "--cluster",
            "4xA100-nvlink",
            "--plan",
            str(files["plan"]),
            "--json",
        ]
    )
    assert json.loads(capsys.readouterr().out) == by_file


def test_timeline_and_gantt_files(files, tmp_path, capsys):
    timeline, png = tmp_path / "t.json", tmp_path / "g.png"
    assert main(args(files, "--timeline", str(timeline), "--gantt", str(png))) == 0
    events = json.loads(timeline.read_text())["events"]
    assert len(events) == 2 * 4 * 2 + 2 * 4  # F and B per stage and microbatch, sends both ways
    assert max(e["end"] for e in events) == pytest.approx(files["expected"]["iteration_s"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(args(files, "--timeline", str(timeline))) == 2  # no silent overwrite
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f["graph"].write_text("{"), "graph: .* is not valid JSON"),
        (lambda f: f["graph"].unlink(), "graph: file not found"),
        (
            lambda f: f["plan"].write_text(
                json.dumps({**json.loads(f["plan"].read_text()), "schedule": "zb"})
            ),
            "unknown schedule 'zb'",
        ),
        (
            lambda f: f["plan"].write_text(
                json.dumps(
                    {
                        **json.loads(f["plan"].read_text()),
                        "stage_of": {"n0": 1, "n1": 0, "n2": 1, "n3": 1},
                        "graph_hash": None,
                    }
                )
            ),
            r"edge \('n0', 'n1'\) goes backward",
        ),
        (
            lambda f: f["plan"].write_text(
                json.dumps({**json.loads(f["plan"].read_text()), "devices": [0, 7]})
            ),
            "device 7 is out of range 0..3",
        ),
        (
            lambda f: f["cluster"].write_text(
                json.dumps({**json.loads(f["cluster"].read_text()), "devices": []})
            ),
            "at least one device",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(files, capsys, mutate, message):
    mutate(files)
    assert main(args(files)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(message, captured.err)


def test_unknown_preset_and_usage_errors(files, capsys):
    assert (
        main(
            [
                "simulate",
                "--graph",
                str(files["graph"]),
                "--cluster",
                "nope",
                "--plan",
                str(files["plan"]),
            ]
        )
        == 2
    )
    assert "neither a preset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--graph", str(files["graph"])])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "required" in err


def test_console_script_runs_without_traceback(files):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeenv",
            *args(files, "--json")[:-1],
            "--engine",
            "python",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["iteration_s"] == pytest.approx(files["expected"]["iteration_s"])
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeenv",
            "simulate",
            "--graph",
            "missing.json",
            "--cluster",
            "cpu-2",
            "--plan",
            "missing.json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr


def test_clusters_lists_presets(capsys):
    assert main(["clusters"]) == 0
    out = capsys.readouterr().out
    assert "16xV100-25gbe" in out and "cpu-2" in out
    assert main(["clusters", "--show", "cpu-2"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "pipeenv.cluster/v1"
