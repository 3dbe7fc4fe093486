"""Running plans with torch.distributed.pipelining: numerics, timing fields, failures, cleanup."""

from __future__ import annotations

import itertools
import multiprocessing
import socket
from typing import Any

import pytest
import torch

from benchmarks.validator_fidelity import branch_split_plan
from pipeenv import zoo
from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph
from pipeenv.plan import Plan
from pipeenv.schedules import op_order
from pipeenv.validate import ValidationReport, validate
from pipeenv.validate.launch import launch
from pipeenv.validate.numerics import GRAD_RTOL, check_numerics
from pipeenv.validate.runner import RunConfig

pytestmark = pytest.mark.slow

MB = 2  # samples per microbatch: keeps each run to seconds on a shared 2-core host


@pytest.fixture(autouse=True)
def _profile_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PIPEENV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def _two_stages(graph: OperatorGraph, stage_of: dict[str, int], **fields: Any) -> Plan:
    return Plan(
        stage_of,
        num_stages=2,
        devices=[0, 1],
        graph=graph.name,
        graph_hash=graph.graph_hash,
        **fields,
    )


def _gpt_plan(microbatches: int = 2, schedule: str = "1f1b") -> Plan:
    graph = zoo.load("tiny-gpt", microbatch_size=MB)
    cut = graph.order.index("add_3") + 1
    stage_of = {u: int(i >= cut) for i, u in enumerate(graph.order)}
    return _two_stages(graph, stage_of, microbatches=microbatches, schedule=schedule)


def _inception_branch_plan() -> Plan:
    """The second cell's 3x3 branches on stage 1 with everything after them; its 1x1 and
    pooled branches on stage 0: stages interleave in canonical order."""
    graph = zoo.load("tiny-inception", microbatch_size=MB)
    plan = branch_split_plan(graph, 3, "gpipe")
    stages = [plan.stage_of[u] for u in graph.order]
    assert stages != sorted(stages)  # non-contiguous
    return plan


def _check_report(report: ValidationReport, plan: Plan) -> None:
    doc = report.to_dict()
    assert doc["format"] == "pipeenv.validation/v1"
    assert report.numerics_ok, doc["numerics"]["failures"]
    assert doc["numerics"]["max_grad_error"] <= GRAD_RTOL
    assert doc["numerics"]["loss"] == pytest.approx(doc["numerics"]["reference_loss"], rel=1e-5)
    assert doc["plan"]["graph_hash"] == doc["graph_hash"] == plan.graph_hash
    assert doc["predicted"]["cluster"] == "cpu-2"
    assert doc["measured"]["iteration_s"] > 0 and doc["predicted"]["iteration_s"] > 0
    for stage in doc["stages"]:
        assert stage["measured_forward_s"] > 0 and stage["measured_backward_s"] > 0
    assert [r["threads"] for r in doc["environment"]["ranks"]] == [1, 1]
    assert "numerics: OK" in report.table()
    _check_timeline(doc, plan)


def _check_timeline(doc: dict[str, Any], plan: Plan) -> None:
    """Every rank ran SPEC §4's op order for its stage; busy time is its ops' total."""
    timeline = doc["measured"]["timeline"]
    order = op_order(plan.schedule, plan.num_stages, plan.microbatches)
    for replica in range(plan.data_parallel):
        for s in range(plan.num_stages):
            ops = [e for e in timeline if e["stage"] == s and e["replica"] == replica]
            codes = [(e["microbatch"] + 1) * (1 if e["kind"] == "forward" else -1) for e in ops]
            assert codes == order[s].tolist()
            assert all(0 <= e["start"] < e["end"] for e in ops)
            assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(ops))
            assert {e["device"] for e in ops} == {plan.devices[replica * plan.num_stages + s]}
            if replica == 0:
                busy = sum(e["end"] - e["start"] for e in ops)
                assert doc["stages"][s]["measured_busy_s"] == pytest.approx(busy)


def test_tiny_gpt_two_stages_matches_plain_model():
    plan = _gpt_plan()
    report = validate("tiny-gpt", plan, microbatch_size=MB, iters=2, warmup=1, timeout_s=120)
    assert report is not None
    _check_report(report, plan)
    # The tied embedding/head weight is summed across the two stages.
    assert report.to_dict()["lowering"]["tied"] == [
        {"name": "embed.tokens.weight", "owner": "embed", "stages": [0, 1]}
    ]


def test_tiny_inception_non_contiguous_plan_matches_plain_model():
    plan = _inception_branch_plan()
    report = validate("tiny-inception", plan, microbatch_size=MB, iters=2, warmup=1, timeout_s=120)
    assert report is not None
    _check_report(report, plan)
    assert report.to_dict()["plan"]["schedule"] == "gpipe"


def test_relay_through_a_middle_stage():
    """S=3: the second cell's 1x1 branch is computed on stage 0 and relayed through stage 1 to
    its concatenation on stage 2."""
    graph = zoo.load("tiny-inception", microbatch_size=MB)
    cat = graph.order.index("cat_1")
    stage_of = {u: 0 if i < graph.order.index("cell2_branch1x1_conv") else 2 for i, u in
                enumerate(graph.order)}  # fmt: skip
    for u in graph.order[graph.order.index("cell2_branch1x1_conv") : cat]:
        stage_of[u] = 0 if "cell2_branch1x1" in u or u == "relu_8" else 1
    plan = Plan(stage_of, num_stages=3, devices=[0, 1, 2], microbatches=3,
                graph_hash=graph.graph_hash)  # fmt: skip
    with pytest.raises(PipeenvError, match="needs microbatches >= num_stages, the plan has 2 < 3"):
        validate("tiny-inception", plan.replace(microbatches=2), microbatch_size=MB)
    report = validate("tiny-inception", plan, microbatch_size=MB, iters=1, warmup=1)
    assert report is not None
    doc = report.to_dict()
    assert "relu_8" in doc["lowering"]["boundaries"][1]  # relayed over boundary 1
    assert report.numerics_ok, doc["numerics"]["failures"]


def test_data_parallel_replicas_average_gradients():
    replicated = _gpt_plan().replace(data_parallel=2, devices=[0, 1, 2, 3])
    report = validate("tiny-gpt", replicated, microbatch_size=MB, iters=1, warmup=1)
    assert report is not None
    assert report.numerics_ok, report.to_dict()["numerics"]["failures"]
    _check_timeline(report.to_dict(), replicated)
    assert report.to_dict()["predicted"]["cluster"] == "cpu-4"


def test_plan_for_another_model_is_rejected_before_launch():
    with pytest.raises(PipeenvError, match="graph_hash") as info:
        validate("tiny-inception", _gpt_plan(), microbatch_size=MB)
    assert "\n" not in str(info.value)
    unknown = Plan({"nope": 0}, num_stages=1, devices=[0])
    with pytest.raises(PipeenvError, match="unknown node 'nope'"):
        validate("tiny-gpt", unknown, microbatch_size=MB)
    assert multiprocessing.active_children() == []


def test_devices_beyond_the_cluster_are_rejected():
    plan = _gpt_plan().replace(devices=[0, 5])
    with pytest.raises(PipeenvError, match="device 5 is out of range 0..1"):
        validate("tiny-gpt", plan, microbatch_size=MB, cluster="cpu-2")


def _port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failing_ranks_are_reported_and_cleaned_up(tmp_path):
    # gloo cannot run NCCL: every rank fails at its rendezvous; the first error is quoted.
    config = RunConfig("tiny-gpt", _gpt_plan().to_dict(), backend="nccl", microbatch_size=MB)
    port = _free_port()
    with pytest.raises(PipeenvError, match=r"^validate: rank \d \(stage \d, replica 0\) failed: "):
        launch(config, tmp_path, port=port)
    assert multiprocessing.active_children() == []
    assert _port_is_closed(port)


def test_hanging_run_times_out_and_is_cleaned_up(tmp_path):
    config = RunConfig(
        "tiny-gpt", _gpt_plan().to_dict(), microbatch_size=MB, iters=100_000, timeout_s=8
    )
    port = _free_port()
    with pytest.raises(PipeenvError, match=r"timed out after 8 s .* all ranks were stopped"):
        launch(config, tmp_path, port=port)
    assert multiprocessing.active_children() == []
    assert _port_is_closed(port)


def test_check_numerics_flags_a_wrong_gradient():
    ref = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5])}
    assert check_numerics(dict(ref), ref, 1.0, 1.0)["ok"]
    off = {"w": torch.tensor([1.0, -2.0 + 1e-3]), "b": torch.tensor([0.5])}
    result = check_numerics(off, ref, 1.0, 1.0)
    assert not result["ok"] and result["worst"] == "w"
    assert result["max_grad_error"] == pytest.approx(5e-4, rel=1e-3)
    missing = check_numerics({"w": ref["w"]}, ref, 1.0, 1.0)
    assert missing["failures"] == ["b: gradient missing on the pipeline side"]
    assert not check_numerics(dict(ref), ref, 1.0, 1.001)["ok"]


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"
)
def test_tiny_gpt_two_stages_on_gpus_with_nccl(tmp_path):
    from pipeenv.cluster import Cluster, Device, Link

    cluster = Cluster(
        "local-gpus", [Device(f"gpu{i}", 0, 1.0, 8e10) for i in range(2)], Link(1e11, 1e-5)
    )
    path = tmp_path / "cluster.json"
    cluster.save(path)
    report = validate(
        "tiny-gpt",
        _gpt_plan(),
        backend="nccl",
        device="cuda",
        microbatch_size=MB,
        iters=2,
        warmup=1,
        cluster=path,
    )
    assert report is not None and report.numerics_ok
