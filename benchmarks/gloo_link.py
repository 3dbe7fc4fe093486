"""Measure the gloo loopback link behind the ``cpu-N`` cluster presets.

Two single-threaded ranks ping-pong tensors of 4 KiB .. 64 MiB over gloo on 127.0.0.1; the
one-way time of each size is half the median round trip, and a least-squares line
``latency_s + bytes / bandwidth_Bps`` is fitted through them. Run::

    python -m benchmarks.gloo_link
"""

from __future__ import annotations

import os
import socket
import statistics
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = [4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
REPEATS = 15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, port: int, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    for size in SIZES:
        buf = torch.zeros(size // 4, dtype=torch.float32)
        trips = []
        for i in range(REPEATS + 2):
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
    dist.destroy_process_group()


def measure() -> dict[int, float]:
    """One-way seconds per message size."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = queue.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    return dict(results)


def main() -> None:
    results = measure()
    sizes = np.array(list(results), dtype=float)
    times = np.array(list(results.values()))
    slope, intercept = np.polyfit(sizes, times, 1)
    print(f"{'bytes':>10}  {'one-way s':>10}  {'fit s':>10}")
    for size, t in results.items():
        print(f"{size:>10}  {t:>10.3e}  {intercept + slope * size:>10.3e}")
    print(f"fit: latency_s = {intercept:.3e}, bandwidth_Bps = {1 / slope:.3e}")


if __name__ == "__main__":
    main()
