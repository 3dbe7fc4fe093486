"""``pipeenv validate``: a real 2-stage run, the report file, one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from pipeenv import zoo
from pipeenv.cli import main
from pipeenv.plan import Plan

MB = 2


@pytest.fixture(autouse=True)
def _profile_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PIPEENV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def gpt_plan(tmp_path):
    graph = zoo.load("tiny-gpt", microbatch_size=MB)
    cut = graph.order.index("add_3") + 1
    stages = [int(i >= cut) for i in range(graph.num_nodes)]
    path = tmp_path / "plan.json"
    Plan.from_stages(graph, stages, num_stages=2, devices=[0, 1], microbatches=2).save(path)
    return path


@pytest.mark.slow
def test_validate_writes_report_and_prints_table(gpt_plan, tmp_path, capsys):
    out, gantt = tmp_path / "report.json", tmp_path / "gantt.png"
    argv = ["validate", "--plan", str(gpt_plan), "--model", "tiny-gpt", "--microbatch-size",
            str(MB), "--iters", "2", "--warmup", "1", "--out", str(out),
            "--gantt", str(gantt)]  # fmt: skip
    assert main(argv) == 0
    assert gantt.read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "numerics: OK" in captured.out
    assert "iteration: predicted" in captured.out
    doc = json.loads(out.read_text())
    assert doc["format"] == "pipeenv.validation/v1"
    assert doc["numerics"]["ok"] is True
    assert doc["model"] == "tiny-gpt" and doc["microbatch_size"] == MB
    assert len(doc["stages"]) == 2 and doc["environment"]["backend"] == "gloo"
    kinds = {e["kind"] for e in doc["predicted"]["timeline"]}
    assert {"forward", "backward", "send_forward", "send_backward"} <= kinds
    assert {e["kind"] for e in doc["measured"]["timeline"]} == {"forward", "backward"}


@pytest.mark.parametrize("flag", ["--out", "--gantt"])
def test_existing_output_is_refused_before_running(gpt_plan, tmp_path, capsys, flag):
    mine = tmp_path / "mine"
    mine.write_text("keep me")
    argv = ["validate", "--plan", str(gpt_plan), "--model", "tiny-gpt", flag, str(mine)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err
        == f"pipeenv validate: error: output: {mine} exists (pass --force to overwrite)\n"
    )
    assert mine.read_text() == "keep me"


def test_plan_for_another_model_is_one_line_exit_2(gpt_plan, capsys):
    argv = ["validate", "--plan", str(gpt_plan), "--model", "tiny-inception"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pipeenv validate: error: plan: field 'graph_hash'")
    assert captured.err.count("\n") == 1


def test_nccl_on_cpu_is_refused(gpt_plan, capsys):
    argv = ["validate", "--plan", str(gpt_plan), "--model", "tiny-gpt", "--backend", "nccl"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "pipeenv validate: error: validate: backend 'nccl' needs --device cuda\n"
    )


def test_unknown_model_is_refused(gpt_plan, capsys):
    assert main(["validate", "--plan", str(gpt_plan), "--model", "nope"]) == 2
    assert "zoo: unknown model 'nope'" in capsys.readouterr().err


class _MismatchReport:
    numerics_ok = False

    def table(self) -> str:
        return "numerics: MISMATCH (...)\n  h.0.fc.weight: relative error 3.00e-02 > 1e-04"

    def to_dict(self) -> dict[str, bool]:
        return {"ok": False}

    def save(self, path: str) -> None:
        raise AssertionError("not asked for")


def test_numerics_mismatch_exits_1_loudly(gpt_plan, capsys, monkeypatch):
    import pipeenv.validate

    monkeypatch.setattr(pipeenv.validate, "validate", lambda *a, **k: _MismatchReport())
    assert main(["validate", "--plan", str(gpt_plan), "--model", "tiny-gpt"]) == 1
    captured = capsys.readouterr()
    assert "h.0.fc.weight: relative error" in captured.out
    assert captured.err.startswith("pipeenv validate: error: numerics mismatch")


@pytest.mark.slow
def test_same_code_path_under_torchrun(gpt_plan, tmp_path):
    """One host standing in for several: torchrun starts the ranks, rank 0 writes the report."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
           "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "pipeenv",
           "validate", "--plan", str(gpt_plan), "--model", "tiny-gpt", "--microbatch-size",
           str(MB), "--iters", "1", "--warmup", "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("numerics: OK") == 1  # printed by rank 0 only
    doc = json.loads(out.read_text())
    assert doc["numerics"]["ok"] is True
    assert [r["rank"] for r in doc["environment"]["ranks"]] == [0, 1]
