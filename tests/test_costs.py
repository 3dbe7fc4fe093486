"""Analytic costs: device presets, the roofline, node counts, re-costing; measured times."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeenv.errors import PipeenvError
from pipeenv.zoo.costs import DEVICES, get_device, retime, roofline_s
from pipeenv.zoo.counting import count_node
from pipeenv.zoo.graphs import count_graph
from pipeenv.zoo.measure import measure_model, measure_nodes
from pipeenv.zoo.trace import node_parameters, run_nodes, trace

torch.set_num_threads(1)


class _LinearReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(x))


class _Attention(nn.Module):
    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, q, q, is_causal=True)


def _counts(model: nn.Module, *inputs: torch.Tensor) -> dict[str, object]:
    gm = trace(model)
    return {c.node.name: count_node(c, node_parameters(gm, c.node)) for c in run_nodes(gm, inputs)}


@pytest.mark.parametrize(
    ("name", "dtype", "peak", "bandwidth"),
    [
        ("v100", "float16", 125e12, 900e9),
        ("v100", "float32", 15.7e12, 900e9),
        ("a100", "bfloat16", 312e12, 2039e9),
        ("a100", "float32", 19.5e12, 2039e9),
        ("h100", "bfloat16", 989.5e12, 3.35e12),
        ("h200", "float16", 989.5e12, 4.8e12),
    ],
)
def test_preset_datasheet_rates(name: str, dtype: str, peak: float, bandwidth: float) -> None:
    preset = get_device(name.upper())
    assert preset.peak_flops[dtype] == peak
    assert preset.bandwidth_Bps == bandwidth


def test_presets_cover_the_four_gpus_with_documented_efficiency() -> None:
    assert set(DEVICES) == {"v100", "a100", "h100", "h200"}
    for preset in DEVICES.values():
        assert 0 < preset.compute_efficiency <= 1 and 0 < preset.memory_efficiency <= 1
        assert preset.source.startswith("NVIDIA")


def test_roofline_compute_bound_and_memory_bound() -> None:
    a100 = get_device("a100")
    # 312e12 * 0.6 FLOP/s: 1.872e14 FLOPs take one second; 2039e9 * 0.8 B/s move 1.6312e12 B.
    assert roofline_s(1.872e14, 0, a100, "bfloat16") == pytest.approx(1.0, rel=1e-12)
    assert roofline_s(0, 1.6312e12, a100, "bfloat16") == pytest.approx(1.0, rel=1e-12)
    assert roofline_s(1.872e14, 3.2624e12, a100, "bfloat16") == pytest.approx(2.0, rel=1e-12)
    assert roofline_s(1.17e13, 0, a100, "float32") == pytest.approx(1.0, rel=1e-12)
    assert roofline_s(0, 0, a100, "float32") == 0.0


def test_roofline_rejects_unsupported_dtype_and_unknown_device() -> None:
    with pytest.raises(PipeenvError, match="'v100': dtype 'bfloat16' is not supported"):
        roofline_s(1.0, 1.0, get_device("v100"), "bfloat16")
    with pytest.raises(PipeenvError, match="unknown preset 'tpu'"):
        get_device("tpu")


def test_linear_counts_are_exact() -> None:
    counts = _counts(_LinearReLU(), torch.randn(2, 4))
    fc = counts["fc"]
    # y = x W^T + b with x [2, 4], W [3, 4]: 2*2*4*3 FLOPs; the input needs no gradient, so the
    # backward computes the weight gradient only (same FLOPs).
    assert (fc.flops_fwd, fc.flops_bwd) == (48, 48)
    assert fc.bytes_fwd == 32 + 48 + 12 + 24  # x, W, b read; y written
    assert (fc.output_bytes, fc.param_bytes, fc.activation_bytes) == (24, 60, 32)
    relu = counts["relu"]
    assert (relu.flops_fwd, relu.param_bytes, relu.activation_bytes) == (0, 0, 24)
    assert relu.bytes_fwd == 48 and relu.bytes_bwd == 72
    assert counts["x"].output_bytes == 32 and counts["x"].bytes_fwd == 0


def test_linear_backward_includes_input_gradient_when_needed() -> None:
    fc = _counts(_LinearReLU(), torch.randn(2, 4, requires_grad=True))["fc"]
    assert fc.flops_bwd == 96


class _Fused(nn.Module):
    fx_leaf = True
    fx_fused = True

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))


def test_fused_module_moves_each_tensor_once_per_pass() -> None:
    fused = _counts(nn.Sequential(_Fused()), torch.randn(2, 4))["_0"]
    # saved: x (32 B, for the weight gradient) and tanh's output (24 B)
    assert fused.activation_bytes == 56 and fused.param_bytes == 60
    assert fused.bytes_fwd == 32 + 60 + 24 + 56  # input, parameters, output, saved
    assert fused.bytes_bwd == 24 + 56 + 2 * 60  # grad output, saved, parameters and their grads
    assert (fused.flops_fwd, fused.flops_bwd) == (48, 48)


def test_attention_is_counted_as_a_fused_kernel() -> None:
    small = _counts(_Attention(), torch.empty(2, 4, 64, 16, device="meta", requires_grad=True))
    large = _counts(_Attention(), torch.empty(2, 4, 128, 16, device="meta", requires_grad=True))
    name = "scaled_dot_product_attention"
    assert small[name].flops_fwd == 4 * 2 * 4 * 64 * 64 * 16
    assert small[name].flops_bwd == 10 * 2 * 4 * 64 * 64 * 16  # 2.5x, as flash attention
    # Fused: bytes grow with the sequence, not with its square.
    assert large[name].bytes_fwd == 2 * small[name].bytes_fwd


def test_retime_matches_a_fresh_analytic_graph() -> None:
    model = _LinearReLU().to("meta")
    gm = trace(model)
    x = torch.empty(8, 4, device="meta")
    a100 = count_graph(gm, [x], "lr", microbatch_size=8, device=get_device("a100"), dtype="float32")
    h100 = count_graph(gm, [x], "lr", microbatch_size=8, device=get_device("h100"), dtype="float32")
    assert retime(a100, get_device("h100"), "float32").to_dict() == h100.to_dict()
    assert "h100" in h100.source


def test_retime_refuses_a_graph_without_counts() -> None:
    from pipeenv.graph import Node, OperatorGraph

    graph = OperatorGraph("g", [Node("a", "op", 1.0, 2.0, 0, 0)], [], microbatch_size=1)
    with pytest.raises(PipeenvError, match="node 'a': missing field 'flops_fwd'"):
        retime(graph, get_device("a100"), "float32")


class _Chain(nn.Module):
    """Three Linear+tanh layers of width 256: a few ms per pass, deterministic work."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(nn.Linear(256, 256) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


class _Sleep(torch.autograd.Function):
    """Identity that sleeps 10 ms forward and 20 ms backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return grad


class _Slow(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Sleep.apply(x)  # type: ignore[no-any-return]


class _SlowBranch(nn.Module):
    """x -> fc -> (slow, relu) -> add: the slow node on one of two parallel branches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.slow = _Slow()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.slow(h) + F.relu(h)


def test_measured_times_are_positive_medians() -> None:
    model = _LinearReLU()
    model.fc.bias.grad = torch.ones(3)
    x = torch.randn(64, 4)
    cpu = torch.device("cpu")
    times = measure_nodes(trace(model), [x], cpu, repeats=3, warmup=1)
    assert list(times) == ["x", "fc", "relu"]
    assert times["x"] == (0.0, 0.0)
    assert all(f > 0 and b > 0 for name, (f, b) in times.items() if name != "x")
    assert model.fc.weight.grad is None and torch.equal(model.fc.bias.grad, torch.ones(3))
    forward_s, backward_s = measure_model(model, [x], cpu, repeats=3, warmup=1)
    assert forward_s > 0 and backward_s > 0


def test_node_times_add_up_to_the_whole_pass() -> None:
    model = _Chain()
    x = torch.randn(128, 256)
    cpu = torch.device("cpu")
    times = measure_nodes(trace(model), [x], cpu, repeats=5, warmup=2, timer="cpu")
    forward_s, backward_s = measure_model(model, [x], cpu, repeats=5, warmup=2, timer="cpu")
    node_forward = sum(f for f, _ in times.values())
    node_backward = sum(b for _, b in times.values())
    assert node_forward == pytest.approx(forward_s, rel=0.2)
    assert node_backward == pytest.approx(backward_s, rel=0.2)


def test_time_is_charged_to_the_node_that_spends_it() -> None:
    times = measure_nodes(
        trace(_SlowBranch()), [torch.randn(2, 4)], torch.device("cpu"), repeats=3, warmup=1
    )
    assert set(times) == {"x", "fc", "slow", "relu", "add"}
    forward_s, backward_s = times.pop("slow")
    assert 0.01 <= forward_s < 0.02 and 0.02 <= backward_s < 0.03
    assert all(f < 0.005 and b < 0.005 for f, b in times.values())


def test_cpu_timer_measures_thread_time_and_needs_one_thread() -> None:
    model = _LinearReLU()
    x = torch.randn(64, 4)
    cpu = torch.device("cpu")
    forward_s, backward_s = measure_model(model, [x], cpu, repeats=3, warmup=1, timer="cpu")
    assert forward_s > 0 and backward_s > 0
    with pytest.raises(PipeenvError, match="timer must be one of wall, cpu"):
        measure_model(model, [x], cpu, timer="gpu")
    torch.set_num_threads(2)
    try:
        with pytest.raises(PipeenvError, match="timer 'cpu' needs device cpu and one torch thread"):
            measure_model(model, [x], cpu, timer="cpu")
    finally:
        torch.set_num_threads(1)


_FAULTS_SCRIPT = """
import resource, sys, torch
from pipeenv.zoo.measure import keep_freed_memory

def faults_per_round():
    counts = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(10 << 20).fill_(1.0)  # 40 MiB, freed at once
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return " ".join(map(str, counts))

print(faults_per_round(), keep_freed_memory(), faults_per_round(), sep="\\n")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_kept_freed_memory_is_reused_without_page_faults() -> None:
    """By default glibc maps a 40 MiB block afresh and unmaps it when freed, so every use
    faults its 10240 pages in; once freed memory is kept, the heap grows in the first rounds
    and later ones fault nothing."""
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    default, after = ([int(x) for x in line.split()] for line in (out[0], out[2]))
    if int(out[1]) < 40 << 20:
        pytest.skip("glibc absent, or it keeps only smaller blocks")
    assert min(default) > 10000, default
    assert after[0] > 10000 and max(after[4:]) < 50, after
