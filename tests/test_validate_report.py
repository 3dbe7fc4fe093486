"""The validation report: relative errors, hashes, JSON, the table (no processes started)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeenv.errors import PipeenvError
from pipeenv.validate.report import FORMAT, ValidationReport, plan_hash, relative_error

GRAPH_HASH = "sha256:" + "ab" * 32
PLAN: dict[str, Any] = {
    "format": "pipeenv.plan/v1",
    "stage_of": {"a": 0, "b": 1},
    "num_stages": 2,
    "devices": [0, 1],
    "data_parallel": 1,
    "microbatches": 4,
    "schedule": "1f1b",
    "graph_hash": GRAPH_HASH,
}


def _event(stage: int, start: float, end: float) -> dict[str, Any]:
    return {"replica": 0, "kind": "forward", "stage": stage, "microbatch": 0,
            "device": stage, "start": start, "end": end}  # fmt: skip


def _measurement(ok: bool = True) -> dict[str, Any]:
    return {
        "iteration_s": 0.33,
        "iteration_samples_s": [0.32, 0.33, 0.35],
        "stage_forward_s": [0.011, 0.02],
        "stage_backward_s": [0.02, 0.04],
        "stage_forward_cpu_s": [0.01, 0.01],
        "stage_backward_cpu_s": [0.02, 0.02],
        "loss": 2.5,
        "reference_loss": 2.5,
        "numerics": {
            "ok": ok,
            "loss_error": 0.0,
            "max_grad_error": 1e-7 if ok else 3e-2,
            "worst": "b.weight",
            "tensors": 4,
            "failures": [] if ok else ["b.weight: relative error 3.00e-02 > 1e-04"],
            "grad_rtol": 1e-4,
            "loss_rtol": 1e-5,
        },
        "environment": {
            "torch": "2.13.0",
            "backend": "gloo",
            "device": "cpu",
            "ranks": [{"rank": 0, "threads": 1}, {"rank": 1, "threads": 1}],
            "stage_cpu_share": [0.95, 0.5],
            "load_average": [1.0, 1.5],
        },
        "tied": [],
        "unaccounted": [],
        "timeline": [_event(0, 0.001, 0.012), _event(1, 0.013, 0.033)],
        "stage_busy_s": [0.124, 0.24],
    }


PREDICTED = {
    "iteration_s": 0.3,
    "stages": [
        {"forward_s": 0.01, "backward_s": 0.02, "send_bytes": 1024, "busy_s": 0.12},
        {"forward_s": 0.02, "backward_s": 0.05, "send_bytes": 0, "busy_s": 0.28},
    ],
    "timeline": [
        _event(0, 0.0, 0.01),
        {**_event(0, 0.01, 0.011), "kind": "send_forward"},
        _event(1, 0.011, 0.031),
    ],
}


def _report(ok: bool = True) -> ValidationReport:
    return ValidationReport.build(
        model="tiny-gpt",
        microbatch_size=8,
        plan_doc=PLAN,
        graph_hash=GRAPH_HASH,
        measurement=_measurement(ok),
        predicted=PREDICTED,
        cluster="cpu-2",
        profile_source="measured on cpu",
        lowering={"boundaries": [["a"]], "tied": [], "unaccounted": []},
        replayed_iteration_s=0.32,
    )


def test_relative_errors_are_measured_minus_predicted_over_predicted() -> None:
    assert relative_error(0.33, 0.3) == pytest.approx(0.1)
    assert relative_error(0.2, 0.25) == pytest.approx(-0.2)
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, 0.0) == float("inf")
    doc = _report().to_dict()
    assert doc["iteration_error"] == pytest.approx(0.1)
    assert [s["forward_error"] for s in doc["stages"]] == pytest.approx([0.1, 0.0])
    assert [s["backward_error"] for s in doc["stages"]] == pytest.approx([0.0, -0.2])
    assert [s["send_bytes"] for s in doc["stages"]] == [1024, 0]


def test_plan_hash_covers_what_the_plan_decides():
    assert plan_hash(PLAN) == plan_hash({**PLAN, "agent": {"name": "x"}, "predicted": {}})
    assert plan_hash(PLAN) != plan_hash({**PLAN, "stage_of": {"a": 0, "b": 0}})
    assert plan_hash(PLAN) != plan_hash({**PLAN, "schedule": "gpipe"})
    assert plan_hash(PLAN).startswith("sha256:") and len(plan_hash(PLAN)) == 7 + 64


def test_json_round_trip(tmp_path: Path) -> None:
    report = _report()
    path = tmp_path / "r.json"
    report.save(path)
    doc = json.loads(path.read_text())
    assert doc == report.to_dict()
    assert doc["format"] == FORMAT == "pipeenv.validation/v1"
    assert doc["plan"]["hash"] == plan_hash(PLAN) and doc["graph_hash"] == PLAN["graph_hash"]


def test_table_states_verdict_errors_and_contention():
    table = _report().table()
    assert "numerics: OK" in table
    assert "error +10.0%" in table
    assert "cpu share per stage: 0.95/0.50" in table and "oversubscribed" in table
    bad = _report(ok=False)
    assert not bad.numerics_ok
    assert "numerics: MISMATCH" in bad.table()
    assert "b.weight: relative error 3.00e-02 > 1e-04" in bad.table()


def test_busy_time_and_measured_timeline_are_reported():
    doc = _report().to_dict()
    assert [s["predicted_busy_s"] for s in doc["stages"]] == [0.12, 0.28]
    assert [s["measured_busy_s"] for s in doc["stages"]] == [0.124, 0.24]
    assert doc["measured"]["timeline"] == _measurement()["timeline"]
    table = _report().table()
    assert "0: predicted 120.0 of 300.0 ms, measured 124.0 of 330.0 ms" in table
    assert "1: predicted 280.0 of 300.0 ms, measured 240.0 of 330.0 ms" in table


def test_error_splits_into_stage_times_and_runtime():
    doc = _report().to_dict()
    assert doc["replayed"]["iteration_s"] == 0.32
    assert doc["stage_time_error"] == pytest.approx(0.32 / 0.3 - 1)
    assert doc["runtime_error"] == pytest.approx(0.33 / 0.32 - 1)
    total = (1 + doc["stage_time_error"]) * (1 + doc["runtime_error"]) - 1
    assert total == pytest.approx(doc["iteration_error"])
    line = "error split: stage times +6.7% (SPEC §4 on the measured stage times: 320.00 ms), "
    assert line + "runtime +3.1%" in _report().table()


def test_gantt_draws_predicted_and_measured_and_keeps_existing_files(tmp_path: Path):
    report = _report()
    assert report.to_dict()["predicted"]["timeline"] == PREDICTED["timeline"]
    path = tmp_path / "g.png"
    report.gantt_png(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    assert width == 640 and height > 200  # 8 inches at 80 dpi; two panels
    path.write_bytes(b"mine")
    with pytest.raises(PipeenvError, match="g.png exists \\(pass --force to overwrite\\)"):
        report.gantt_png(path, overwrite=False)
    assert path.read_bytes() == b"mine"
