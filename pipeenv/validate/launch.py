"""Starting the ranks of a validation on this host and cleaning up after them.

One process per stage replica (``torch.multiprocessing``, spawn), meeting on a free loopback
port. The launcher watches them: when a rank exits with an error, it quotes the first rank's
error and stops every other rank; when the run exceeds its timeout, it stops them all. Ranks
are daemon processes, terminated then killed, so none outlives the launcher and nothing keeps
listening on the rendezvous port.
"""

from __future__ import annotations

import socket
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeenv.errors import PipeenvError
from pipeenv.plan import Plan
from pipeenv.validate.runner import Measurement, RunConfig, run_rank

__all__ = ["launch"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_entry(config: RunConfig, rank: int, world_size: int, port: int, out_dir: str) -> None:
    out = Path(out_dir)
    try:
        result = run_rank(config, rank, world_size, f"tcp://127.0.0.1:{port}")
        if result is not None:
            torch.save(asdict(result), out / "measurement.pt")
    except BaseException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        (out / f"rank{rank}.err").write_text(
            f"{type(exc).__name__}: {first}\n{traceback.format_exc()}"
        )
        raise SystemExit(1) from None


def launch(config: RunConfig, work_dir: str | Path, port: int | None = None) -> Measurement:
    """Run the plan on this host, one process per stage replica, and return rank 0's result.

    :param work_dir: an empty directory for the ranks' results and error files.
    :param port: loopback rendezvous port (default: a free one).
    :raises PipeenvError: when a rank fails (its first error line is quoted) or the run exceeds
        ``config.timeout_s``; every rank is terminated before it is raised.
    """
    import torch.multiprocessing as mp

    plan = Plan.from_dict(config.plan)
    world_size = plan.num_stages * plan.data_parallel
    ctx = mp.get_context("spawn")
    port = _free_port() if port is None else port
    procs = [
        ctx.Process(
            target=_rank_entry,
            args=(config, rank, world_size, port, str(work_dir)),
            daemon=True,
            name=f"pipeenv-validate-rank{rank}",
        )
        for rank in range(world_size)
    ]
    deadline = time.monotonic() + config.timeout_s
    try:
        for p in procs:
            p.start()
        while True:
            codes = [p.exitcode for p in procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                raise PipeenvError(_failure_message(Path(work_dir), failed, codes, plan))
            if all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                running = [r for r, c in enumerate(codes) if c is None]
                raise PipeenvError(
                    f"validate: timed out after {config.timeout_s:g} s (ranks {running} still "
                    "running); all ranks were stopped"
                )
            time.sleep(0.05)
    finally:
        _stop(procs)
    path = Path(work_dir) / "measurement.pt"
    if not path.exists():
        raise PipeenvError("validate: rank 0 finished without writing its measurement")
    return Measurement(**torch.load(path, weights_only=False))


def _failure_message(work_dir: Path, failed: list[int], codes: list[int | None], plan: Plan) -> str:
    # The rank that wrote its error first is the cause; the others fail on its absence.
    errors = sorted(work_dir.glob("rank*.err"), key=lambda path: path.stat().st_mtime)
    rank = int(errors[0].stem[4:]) if errors else failed[0]
    where = f"rank {rank} (stage {rank % plan.num_stages}, replica {rank // plan.num_stages})"
    if errors:
        return f"validate: {where} failed: {errors[0].read_text().splitlines()[0]}"
    return f"validate: {where} died with exit code {codes[rank]}"


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is None:  # never started
            continue
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
