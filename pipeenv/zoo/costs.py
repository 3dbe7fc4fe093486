"""Analytic costs: accelerator presets and the roofline time of a node.

The time of a pass doing ``flops`` and moving ``bytes`` is the roofline
``max(flops / (peak * compute_efficiency), bytes / (bandwidth * memory_efficiency))``
(Williams, Waterman & Patterson, "Roofline: an insightful visual performance model", CACM 2009),
with peak rates from the vendors' datasheets. The counts come from
:mod:`pipeenv.zoo.counting`; measured times from :mod:`pipeenv.zoo.measure`. No torch here, so
loading a shipped graph for another preset stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeenv.errors import PipeenvError
from pipeenv.graph import OperatorGraph

__all__ = [
    "DEVICES",
    "DTYPES",
    "DTYPE_BYTES",
    "DevicePreset",
    "analytic_source",
    "get_device",
    "retime",
    "roofline_s",
]

DTYPES = ("float32", "bfloat16", "float16")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Fraction of the datasheet peak a training kernel reaches. Large GEMMs reach 70-80% of the
# tensor-core peak, whole models less: Megatron-LM reports 52% of A100 peak end to end
# (Narayanan et al., SC'21), PaLM 46% (Chowdhery et al. 2022); 0.6 sits between. Streaming
# kernels reach 80-90% of HBM bandwidth (STREAM-like copies on A100/H100); 0.8 is the low end.
COMPUTE_EFFICIENCY = 0.6
MEMORY_EFFICIENCY = 0.8


@dataclass(frozen=True)
class DevicePreset:
    """Peak rates of an accelerator, from its vendor datasheet.

    :param name: preset name.
    :param peak_flops: dense peak FLOP/s per dtype name (``float32`` is the non-tensor-core
        FP32 rate, PyTorch's default for matmuls; 16-bit types are dense tensor-core rates,
        without the 2:4 sparsity factor datasheets also quote). A dtype missing here is not
        supported by the device.
    :param bandwidth_Bps: HBM bandwidth, bytes per second.
    :param memory_bytes: HBM capacity, bytes.
    :param source: the datasheet.
    :param compute_efficiency: fraction of ``peak_flops`` reached.
    :param memory_efficiency: fraction of ``bandwidth_Bps`` reached.
    """

    name: str
    peak_flops: dict[str, float]
    bandwidth_Bps: float
    memory_bytes: float
    source: str
    compute_efficiency: float = COMPUTE_EFFICIENCY
    memory_efficiency: float = MEMORY_EFFICIENCY


_T = 1e12
DEVICES: dict[str, DevicePreset] = {
    # NVIDIA Tesla V100 datasheet (SXM2 32 GB): FP32 15.7 TFLOPS, tensor (FP16) 125 TFLOPS,
    # HBM2 900 GB/s. No bfloat16.
    "v100": DevicePreset(
        "v100", {"float32": 15.7 * _T, "float16": 125 * _T}, 900e9, 32 * 2**30,
        "NVIDIA Tesla V100 datasheet, SXM2 32GB",
    ),
    # NVIDIA A100 Tensor Core GPU datasheet (SXM4 80 GB): FP32 19.5 TFLOPS, BF16/FP16 tensor
    # 312 TFLOPS dense, HBM2e 2,039 GB/s.
    "a100": DevicePreset(
        "a100", {"float32": 19.5 * _T, "bfloat16": 312 * _T, "float16": 312 * _T}, 2039e9,
        80 * 2**30, "NVIDIA A100 datasheet, SXM4 80GB",
    ),
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5 80 GB): FP32 67 TFLOPS, BF16/FP16 tensor
    # 1,979 TFLOPS with sparsity, i.e. 989.5 dense; HBM3 3.35 TB/s.
    "h100": DevicePreset(
        "h100", {"float32": 67 * _T, "bfloat16": 989.5 * _T, "float16": 989.5 * _T}, 3.35e12,
        80 * 2**30, "NVIDIA H100 datasheet, SXM5 80GB",
    ),
    # NVIDIA H200 Tensor Core GPU datasheet (SXM 141 GB): same compute as H100 SXM (FP32 67,
    # BF16/FP16 989.5 dense), HBM3e 4.8 TB/s.
    "h200": DevicePreset(
        "h200", {"float32": 67 * _T, "bfloat16": 989.5 * _T, "float16": 989.5 * _T}, 4.8e12,
        141e9, "NVIDIA H200 datasheet, SXM 141GB",
    ),
}  # fmt: skip


def get_device(name: str) -> DevicePreset:
    """The preset called ``name`` (case-insensitive).

    :raises PipeenvError: for an unknown name.
    """
    preset = DEVICES.get(name.lower())
    if preset is None:
        raise PipeenvError(f"device: unknown preset {name!r} (known: {', '.join(DEVICES)})")
    return preset


def roofline_s(flops: float, bytes_moved: float, device: DevicePreset, dtype: str) -> float:
    """Roofline time in seconds of work doing ``flops`` and moving ``bytes_moved`` bytes.

    :raises PipeenvError: when the device has no rate for ``dtype``.
    """
    peak = device.peak_flops.get(dtype)
    if peak is None:
        raise PipeenvError(f"device {device.name!r}: dtype {dtype!r} is not supported")
    return max(
        flops / (peak * device.compute_efficiency),
        bytes_moved / (device.bandwidth_Bps * device.memory_efficiency),
    )


def analytic_source(device: DevicePreset, dtype: str) -> str:
    """The ``source`` text of an analytic graph."""
    return (
        f"analytic roofline on {device.name} ({device.source}; {dtype}; compute efficiency "
        f"{device.compute_efficiency}, memory efficiency {device.memory_efficiency}), "
        "FLOPs from torch.utils.flop_counter, traced with torch.fx by pipeenv.zoo"
    )


_COUNT_KEYS = ("flops_fwd", "flops_bwd", "bytes_fwd", "bytes_bwd")


def retime(graph: OperatorGraph, device: DevicePreset, dtype: str) -> OperatorGraph:
    """The analytic graph re-costed for another device preset, from the counts in ``extra``.

    :raises PipeenvError: when a node lacks the counts (the graph is not analytic).
    """
    nodes = []
    for node in graph.nodes:
        missing = [key for key in _COUNT_KEYS if key not in node.extra]
        if missing:
            raise PipeenvError(f"graph: node {node.id!r}: missing field {missing[0]!r} to re-cost")
        nodes.append(
            replace(
                node,
                forward_s=roofline_s(
                    node.extra["flops_fwd"], node.extra["bytes_fwd"], device, dtype
                ),
                backward_s=roofline_s(
                    node.extra["flops_bwd"], node.extra["bytes_bwd"], device, dtype
                ),
            )
        )
    return OperatorGraph(
        graph.name,
        nodes,
        graph.edges,
        microbatch_size=graph.microbatch_size,
        source=analytic_source(device, dtype),
    )
