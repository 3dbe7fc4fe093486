"""Measure the gloo loopback link behind the ``cpu-N`` cluster presets.

Two single-threaded ranks on 127.0.0.1 pass float32 tensors of 4 KiB .. 64 MiB, in one of two
ways:

- ``--via p2p`` (default): a ping-pong of blocking ``send``/``recv``; the one-way time of a size
  is half the median round trip. This is gloo alone.
- ``--via pipelining``: the hand-off between two stages of ``torch.distributed.pipelining``
  (``PipelineStage`` + ``ScheduleGPipe``, 8 microbatches, stages that only scale their input),
  the path the validator's ranks take. A one-way time is from the end of the sender's op
  (``forward_one_chunk`` on stage 0, ``backward_one_chunk`` on stage 1) to the start of the
  receiver's op on the same microbatch, counted only where the receiver was already waiting
  for it, so it is SPEC §4's ``C_s`` of an idle receiver: the runtime's send and receive
  bookkeeping plus gloo. Both ranks read the host's monotonic clock.

A line ``latency_s + bytes / bandwidth_Bps`` is fitted through the one-way times by least squares
on *relative* residuals (each size weighted by 1/time), so the 4 KiB points set the latency and
the large ones the bandwidth instead of the 64 MiB point dominating both. The whole measurement
is repeated ``--rounds`` times; the median fit and the spread over rounds are printed, since the
host's cores may be shared. Run::

    python -m benchmarks.gloo_link [--via p2p|pipelining] [--rounds 3] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = [4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Scale(torch.nn.Module):
    """A stage that computes next to nothing: its input times one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def _pipelining_handoffs(rank: int, repeats: int, microbatches: int = 8) -> dict[int, Any]:
    """Per size, this rank's (kind, microbatch, start, end) ops of every timed step."""
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    out: dict[int, Any] = {}
    for size in SIZES:
        n = size // 4
        example = torch.zeros(1, n)
        stage = PipelineStage(
            _Scale(),
            rank,
            2,
            torch.device("cpu"),
            input_args=(example.clone().requires_grad_(rank == 1),),
            output_args=(example.clone().requires_grad_(True),),
        )
        ops: list[tuple[str, int, float, float]] = []
        for name, kind in (("forward_one_chunk", "F"), ("backward_one_chunk", "B")):
            method = getattr(stage, name)

            def timed(
                chunk: int, *args: Any, _m: Any = method, _k: str = kind, _ops: Any = ops, **kw: Any
            ) -> Any:
                start = time.perf_counter()
                result = _m(chunk, *args, **kw)
                _ops.append((_k, int(chunk), start, time.perf_counter()))
                return result

            setattr(stage, name, timed)
        schedule = ScheduleGPipe(stage, microbatches, loss_fn=lambda out, target: out.sum())
        batch = torch.randn(microbatches, n)
        steps = []
        for i in range(repeats + 2):
            ops.clear()
            dist.barrier()
            if rank == 0:
                schedule.step(batch)
            else:
                schedule.step(target=batch)
            if i >= 2:
                steps.append(list(ops))
        out[size] = steps
    return out


def handoff_times(sender: list[Any], receiver: list[Any], kind: str) -> list[float]:
    """One-way times of ``kind`` ops passed from ``sender`` to ``receiver`` (one step's ops of
    each rank): receiver's op start minus sender's op end, where the receiver was idle."""
    sent = {mb: end for k, mb, _, end in sender if k == kind}
    times = []
    previous_end = float("-inf")
    for k, mb, start, end in receiver:
        if k == kind and mb in sent and previous_end <= sent[mb]:
            times.append(start - sent[mb])
        previous_end = end
    return times


def _rank(rank: int, port: int, repeats: int, via: str, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        if via == "pipelining":
            queue.put((rank, _pipelining_handoffs(rank, repeats)))
            return
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
            queue.put((rank, results))
    finally:
        dist.destroy_process_group()


def measure(repeats: int = 15, via: str = "p2p", timeout_s: float = 300.0) -> dict[int, float]:
    """One-way seconds per message size (one round), over ``via`` (p2p or pipelining)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, repeats, via, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        if via == "p2p":
            results = queue.get(timeout=timeout_s)[1]
        else:
            ranks = dict(queue.get(timeout=timeout_s) for _ in procs)
            results = {}
            for size in SIZES:
                times = []
                for ops0, ops1 in zip(ranks[0][size], ranks[1][size], strict=True):
                    times += handoff_times(ops0, ops1, "F") + handoff_times(ops1, ops0, "B")
                results[size] = statistics.median(times)
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
    parser.add_argument(
        "--via",
        choices=("p2p", "pipelining"),
        default="p2p",
        help="gloo send/recv ping-pong, or hand-offs between torch.distributed.pipelining stages",
    )
    args = parser.parse_args(argv)
    rounds = [measure(args.repeats, args.via) for _ in range(args.rounds)]
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
