"""Measure the gloo loopback link behind the ``cpu-N`` cluster presets.

Two single-threaded ranks ping-pong float32 tensors of 4 KiB .. 64 MiB over gloo on 127.0.0.1;
the one-way time of a size is half the median round trip. A line ``latency_s + bytes /
bandwidth_Bps`` is fitted through them by least squares on *relative* residuals (each size
weighted by 1/time), so the 4 KiB points set the latency and the large ones the bandwidth
instead of the 64 MiB point dominating both. The whole measurement is repeated ``--rounds``
times; the median fit and the spread over rounds are printed, since the host's cores may be
shared. Run::

    python -m benchmarks.gloo_link [--rounds 3] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = [4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, port: int, repeats: int, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {}
        for size in SIZES:
            buf = torch.zeros(size // 4, dtype=torch.float32)
            trips = []
            for i in range(repeats + 2):
                dist.barrier()
                start = time.perf_counter()
                if rank == 0:
                    dist.send(buf, 1)
                    dist.recv(buf, 1)
                else:
                    dist.recv(buf, 0)
                    dist.send(buf, 0)
                if i >= 2:
                    trips.append(time.perf_counter() - start)
            results[size] = statistics.median(trips) / 2
        if rank == 0:
            queue.put(results)
    finally:
        dist.destroy_process_group()


def measure(repeats: int = 15, timeout_s: float = 300.0) -> dict[int, float]:
    """One-way seconds per message size (one round)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, repeats, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = queue.get(timeout=timeout_s)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    return dict(results)


def fit(results: dict[int, float]) -> tuple[float, float]:
    """(latency_s, bandwidth_Bps) minimising relative residuals."""
    sizes = np.array(list(results), dtype=float)
    times = np.array(list(results.values()))
    design = np.stack([np.ones_like(sizes), sizes], axis=1) / times[:, None]
    (latency, per_byte), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    return float(max(latency, 0.0)), float(1.0 / per_byte)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    rounds = [measure(args.repeats) for _ in range(args.rounds)]
    fits = [fit(r) for r in rounds]
    latency = statistics.median(f[0] for f in fits)
    bandwidth = statistics.median(f[1] for f in fits)
    print(f"{'bytes':>10}  {'one-way s (median of rounds)':>28}  {'fit s':>10}")
    for size in SIZES:
        t = statistics.median(r[size] for r in rounds)
        print(f"{size:>10}  {t:>28.3e}  {latency + size / bandwidth:>10.3e}")
    for i, (lat, bw) in enumerate(fits):
        print(f"round {i}: latency_s = {lat:.3e}, bandwidth_Bps = {bw:.3e}")
    print(f"median fit: latency_s = {latency:.3e}, bandwidth_Bps = {bandwidth:.3e}")
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
