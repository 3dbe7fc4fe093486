"""Clusters (``pipeenv.cluster/v1``, SPEC §2): devices, links, JSON I/O and named presets.

A device's ``speed`` is relative to the device the graph's costs were taken on: an op lasts
``cost / speed``. The optional ``kind`` of a device (``a100``, ``v100``, ``cpu``, ...) tells which
zoo device preset its speed-1.0 reference is, so a benchmark can cost graphs for the right
hardware; it does not change the simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pipeenv.errors import PipeenvError
from pipeenv.jsonio import check_format, plain_number, read_json, write_json

__all__ = ["FORMAT", "PRESETS", "Cluster", "Device", "Link", "load_cluster", "preset_names"]

FORMAT = "pipeenv.cluster/v1"

GiB = 1024**3


@dataclass(frozen=True)
class Device:
    """One accelerator: ``node`` index, relative ``speed`` (> 0) and ``memory_bytes``."""

    name: str
    node: int
    speed: float
    memory_bytes: float
    kind: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "node": self.node,
            "speed": self.speed,
            "memory_bytes": plain_number(self.memory_bytes),
        }
        if self.kind:
            d["kind"] = self.kind
        return d


@dataclass(frozen=True)
class Link:
    """A full-duplex link: moving X bytes one way takes ``latency_s + X / bandwidth_Bps``."""

    bandwidth_Bps: float
    latency_s: float

    def transfer_s(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` one way."""
        return self.latency_s + nbytes / self.bandwidth_Bps

    def to_dict(self) -> dict[str, float]:
        return {"bandwidth_Bps": self.bandwidth_Bps, "latency_s": self.latency_s}


def _positive(raw: Mapping[str, Any], key: str, where: str, *, allow_zero: bool = False) -> float:
    if key not in raw:
        raise PipeenvError(f"cluster: {where}: missing required field '{key}'")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PipeenvError(
            f"cluster: {where}: field '{key}' must be a finite number, got {value!r}"
        )
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise PipeenvError(f"cluster: {where}: field '{key}' must be {bound}, got {value}")
    return float(value)


def _link(raw: Any, where: str) -> Link:
    if not isinstance(raw, Mapping):
        raise PipeenvError(f"cluster: field '{where}' must be an object")
    return Link(
        _positive(raw, "bandwidth_Bps", where), _positive(raw, "latency_s", where, allow_zero=True)
    )


class Cluster:
    """Devices grouped into nodes, with one intra-node and one inter-node link type (SPEC §2).

    :param name: cluster name.
    :param devices: the devices; a device's index is its position.
    :param intra_node: link between two devices of one node.
    :param inter_node: link between devices of different nodes (may be None on one node).
    :raises PipeenvError: on a duplicate device name, non-positive speed or memory, bad link.
    """

    def __init__(
        self,
        name: str,
        devices: Sequence[Device],
        intra_node: Link,
        inter_node: Link | None = None,
    ) -> None:
        if not devices:
            raise PipeenvError("cluster: field 'devices' must list at least one device")
        names: set[str] = set()
        for i, d in enumerate(devices):
            where = f"device {i} ({d.name!r})"
            if d.name in names:
                raise PipeenvError(f"cluster: {where}: duplicate device name")
            names.add(d.name)
            if isinstance(d.node, bool) or not isinstance(d.node, int) or d.node < 0:
                raise PipeenvError(f"cluster: {where}: field 'node' must be an integer >= 0")
            _positive(d.__dict__, "speed", where)
            _positive(d.__dict__, "memory_bytes", where)
        if inter_node is None and len({d.node for d in devices}) > 1:
            raise PipeenvError(
                "cluster: field 'inter_node' is required when devices span several nodes"
            )
        self.name = name
        self.devices: tuple[Device, ...] = tuple(devices)
        self.intra_node = intra_node
        self.inter_node = inter_node

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Cluster:
        """Build and validate a cluster from a ``pipeenv.cluster/v1`` dict."""
        check_format(dict(doc), FORMAT, "cluster")
        for key in ("name", "devices", "intra_node"):
            if key not in doc:
                raise PipeenvError(f"cluster: missing required field '{key}'")
        if not isinstance(doc["devices"], list):
            raise PipeenvError("cluster: field 'devices' must be a list")
        devices = []
        for i, raw in enumerate(doc["devices"]):
            if not isinstance(raw, Mapping):
                raise PipeenvError(f"cluster: device {i}: must be an object")
            where = f"device {i}"
            for key in ("node", "speed", "memory_bytes"):
                if key not in raw:
                    raise PipeenvError(f"cluster: {where}: missing required field '{key}'")
            node = raw["node"]
            if isinstance(node, bool) or not isinstance(node, int) or node < 0:
                raise PipeenvError(
                    f"cluster: {where}: field 'node' must be an integer >= 0, got {node!r}"
                )
            devices.append(
                Device(
                    name=str(raw.get("name", f"dev{i}")),
                    node=node,
                    speed=_positive(raw, "speed", where),
                    memory_bytes=_positive(raw, "memory_bytes", where),
                    kind=str(raw.get("kind", "")),
                )
            )
        inter = (
            _link(doc["inter_node"], "inter_node") if doc.get("inter_node") is not None else None
        )
        return cls(str(doc["name"]), devices, _link(doc["intra_node"], "intra_node"), inter)

    def to_dict(self) -> dict[str, Any]:
        """The cluster as a ``pipeenv.cluster/v1`` dict."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "devices": [dev.to_dict() for dev in self.devices],
            "intra_node": self.intra_node.to_dict(),
        }
        if self.inter_node is not None:
            d["inter_node"] = self.inter_node.to_dict()
        return d

    @classmethod
    def load(cls, path: str | Path) -> Cluster:
        """Read a ``pipeenv.cluster/v1`` JSON file."""
        return cls.from_dict(read_json(path, "cluster"))

    def save(self, path: str | Path, *, overwrite: bool = True) -> None:
        """Write the cluster as ``pipeenv.cluster/v1`` JSON."""
        write_json(path, self.to_dict(), overwrite=overwrite)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def num_nodes(self) -> int:
        return len({d.node for d in self.devices})

    def link(self, a: int, b: int) -> Link:
        """The link between devices ``a`` and ``b`` (``a != b``)."""
        if self.devices[a].node == self.devices[b].node:
            return self.intra_node
        assert self.inter_node is not None  # guaranteed by __init__ for multi-node clusters
        return self.inter_node

    @cached_property
    def speed(self) -> np.ndarray:
        """Device speeds, by device index."""
        return np.array([d.speed for d in self.devices], dtype=np.float64)

    @cached_property
    def memory_bytes(self) -> np.ndarray:
        """Device memories in bytes, by device index."""
        return np.array([d.memory_bytes for d in self.devices], dtype=np.float64)

    @cached_property
    def link_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(bandwidth, latency) matrices over device pairs; the diagonal is unused."""
        nodes = np.array([d.node for d in self.devices])
        same = nodes[:, None] == nodes[None, :]
        inter = self.inter_node or self.intra_node
        bw = np.where(same, self.intra_node.bandwidth_Bps, inter.bandwidth_Bps).astype(np.float64)
        lat = np.where(same, self.intra_node.latency_s, inter.latency_s).astype(np.float64)
        bw.setflags(write=False)
        lat.setflags(write=False)
        return bw, lat

    @property
    def reference_kind(self) -> str:
        """The ``kind`` of the speed-1.0 devices ('' when unknown)."""
        for d in self.devices:
            if d.speed == 1.0 and d.kind:
                return d.kind
        return ""

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, devices={self.num_devices}, nodes={self.num_nodes})"


# ------------------------------------------------------------------------------------ presets
# Figures, per direction of a full-duplex link, from vendor datasheets:
# - A100 SXM4 80GB: 80 GB HBM2e (81920 MiB); NVLink 3 600 GB/s bidirectional -> 300 GB/s each way
#   (NVIDIA A100 Tensor Core GPU datasheet, 2021).
# - H100 SXM5 80GB: 80 GB HBM3; NVLink 4 900 GB/s bidirectional -> 450 GB/s each way
#   (NVIDIA H100 Tensor Core GPU datasheet, 2023).
# - V100 SXM2: 16 or 32 GB HBM2; NVLink 2 is 25 GB/s each way per link; in the p3.16xlarge /
#   DGX-1 hybrid cube-mesh neighbouring GPUs share two links -> 50 GB/s each way
#   (NVIDIA Tesla V100 datasheet; DGX-1 system architecture whitepaper).
# - InfiniBand HDR: 200 Gb/s = 25 GB/s each way per port (NVIDIA ConnectX-6 datasheet).
# - 25 GbE: 25 Gb/s = 3.125 GB/s each way (AWS p3.16xlarge network, PipeDream's Cluster-B).
# Latencies are typical NCCL point-to-point figures: ~5 us over NVLink, ~10 us over InfiniBand,
# ~50 us over TCP Ethernet.
# Relative speed V100 : A100 = 125 : 312 dense fp16/bf16 tensor TFLOP/s (datasheets) = 0.40.
NVLINK3 = Link(3.0e11, 5e-6)
NVLINK4 = Link(4.5e11, 5e-6)
NVLINK2_PAIR = Link(5.0e10, 5e-6)
IB_HDR = Link(2.5e10, 1e-5)
ETH_25G = Link(3.125e9, 5e-5)
A100_MEM = 80 * GiB
H100_MEM = 80 * GiB
V100_SPEED_VS_A100 = 125.0 / 312.0

# cpu-N: one single-threaded gloo rank per device on this kind of 2-core host. The link is gloo
# over loopback TCP; its figures were measured here with benchmarks/gloo_link.py (2 ranks,
# 1 thread each, ping-pong of 4 KiB .. 64 MiB tensors, fit on relative error): two sessions of
# 3 rounds gave 2.1-3.0e9 B/s and 0.69-1.35e-4 s at load averages 1.5-3.7. The hand-off between
# two torch.distributed.pipelining stages (benchmarks/gloo_link.py --via pipelining, idle host)
# fits 1.1e-4 s + bytes / 3.4e9 B/s: 0.42 ms for 1 MB, where this link gives 0.48 ms.
CPU_GLOO_LOOPBACK = Link(2.8e9, 1.05e-4)
CPU_RANK_MEM = 8 * GiB


def _gpus(kind: str, count: int, per_node: int, memory: float, speed: float = 1.0) -> list[Device]:
    return [Device(f"{kind}-{i}", i // per_node, speed, memory, kind) for i in range(count)]


def _hetero() -> Cluster:
    devices = _gpus("a100", 4, 4, A100_MEM) + [
        Device(f"v100-{i}", 1, V100_SPEED_VS_A100, 32 * GiB, "v100") for i in range(4)
    ]
    # One intra-node link type per cluster (SPEC §2): the slower node's (V100 NVLink 2) is used.
    return Cluster("hetero-4xA100-4xV100", devices, NVLINK2_PAIR, IB_HDR)


PRESETS: dict[str, tuple[str, Callable[[], Cluster]]] = {
    "4xA100-nvlink": (
        "1 node, 4 A100 80GB over NVLink 3",
        lambda: Cluster("4xA100-nvlink", _gpus("a100", 4, 4, A100_MEM), NVLINK3),
    ),
    "8xA100-nvlink": (
        "1 node, 8 A100 80GB over NVLink 3 (DGX A100)",
        lambda: Cluster("8xA100-nvlink", _gpus("a100", 8, 8, A100_MEM), NVLINK3),
    ),
    "4xH100-nvlink": (
        "1 node, 4 H100 80GB over NVLink 4",
        lambda: Cluster("4xH100-nvlink", _gpus("h100", 4, 4, H100_MEM), NVLINK4),
    ),
    "8xH100-nvlink": (
        "1 node, 8 H100 80GB over NVLink 4 (DGX H100)",
        lambda: Cluster("8xH100-nvlink", _gpus("h100", 8, 8, H100_MEM), NVLINK4),
    ),
    "2x4xA100-ib": (
        "2 nodes x 4 A100 80GB, NVLink 3 inside, InfiniBand HDR between",
        lambda: Cluster("2x4xA100-ib", _gpus("a100", 8, 4, A100_MEM), NVLINK3, IB_HDR),
    ),
    "16xV100-25gbe": (
        "2 nodes x 8 V100 16GB (AWS p3.16xlarge, PipeDream's Cluster-B), 25 GbE between",
        lambda: Cluster("16xV100-25gbe", _gpus("v100", 16, 8, 16 * GiB), NVLINK2_PAIR, ETH_25G),
    ),
    "hetero-4xA100-4xV100": (
        "node 0: 4 A100 80GB; node 1: 4 V100 32GB (speed 0.40); InfiniBand HDR between",
        _hetero,
    ),
    "cpu-2": (
        "this host: 2 single-threaded CPU ranks over gloo loopback",
        lambda: Cluster("cpu-2", _gpus("cpu", 2, 2, CPU_RANK_MEM), CPU_GLOO_LOOPBACK),
    ),
    "cpu-4": (
        "this host: 4 single-threaded CPU ranks over gloo loopback",
        lambda: Cluster("cpu-4", _gpus("cpu", 4, 4, CPU_RANK_MEM), CPU_GLOO_LOOPBACK),
    ),
}


def preset_names() -> list[str]:
    """Names of the built-in cluster presets."""
    return list(PRESETS)


def load_cluster(path_or_preset: str | Path | Cluster) -> Cluster:
    """A preset by name, or a ``pipeenv.cluster/v1`` JSON file.

    :raises PipeenvError: when the name is neither a preset nor a readable cluster file.
    """
    if isinstance(path_or_preset, Cluster):
        return path_or_preset
    key = str(path_or_preset)
    if key in PRESETS:
        return PRESETS[key][1]()
    if not Path(key).exists() and not key.endswith(".json"):
        raise PipeenvError(
            f"cluster: {key!r} is neither a preset ({', '.join(PRESETS)}) nor a file"
        )
    return Cluster.load(key)
