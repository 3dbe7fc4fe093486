"""Rendering: per-stage tables, text and image Gantt charts, both render modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from env_helpers import chain, masked_rollout, small_cluster

import pipeenv
from pipeenv.envs import PipelinePartitionEnv, PipelinePartitionOneShotEnv
from pipeenv.envs.render import gantt_png, gantt_rgb, gantt_text, stage_table
from pipeenv.errors import PipeenvError
from pipeenv.plan import Plan


def two_stage_result(timeline: bool = True) -> pipeenv.SimResult:
    graph = chain(2)  # 1 ms forward, 2 ms backward per node
    plan = Plan.from_stages(graph, [0, 1], num_stages=2, devices=[0, 1], microbatches=1)
    return pipeenv.simulate(graph, small_cluster(2), plan, timeline=timeline)


def test_text_gantt_of_one_microbatch_on_two_stages() -> None:
    result = two_stage_result()
    # F0 [0,1), send, F1 [1.01,2.01), B1 [2.01,4.01), send, B0 [4.02,6.02) ms of 6.02 ms.
    lines = gantt_text(result, width=6).splitlines()
    assert lines[0] == "dev0  |F...BB|"
    assert lines[1] == "dev1  |.FBB..|"
    assert lines[2].endswith(f"{result.iteration_s * 1e3:.3f} ms")


def test_stage_table_lists_every_stage() -> None:
    table = stage_table(two_stage_result()).splitlines()
    assert table[0].split() == [
        "stage",
        "device",
        "forward_ms",
        "backward_ms",
        "send_MB",
        "busy_ms",
        "memory_GiB",
        "oom",
    ]
    assert table[1].split()[:5] == ["0", "0", "1.000", "2.000", "1.000"]
    assert table[2].split()[:5] == ["1", "1", "1.000", "2.000", "0.000"]
    assert table[3].startswith("iteration ")


def test_stage_table_with_plan_and_cluster() -> None:
    graph = chain(2)
    plan = Plan.from_stages(graph, [0, 1], num_stages=2, devices=[0, 1], microbatches=1)
    cluster = small_cluster(2)
    table = stage_table(pipeenv.simulate(graph, cluster, plan), plan, graph=graph, cluster=cluster)
    lines = table.splitlines()
    assert lines[0] == "chain on test-2: 2 stages x 1 replicas, 1 microbatches, 1f1b"
    assert lines[1].split()[-1] == "name"
    assert lines[2].split()[-1] == "d0" and lines[3].split()[-1] == "d1"


def test_gantt_image_and_png(tmp_path: Path) -> None:
    image = gantt_rgb(two_stage_result())
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 3
    path = tmp_path / "out" / "g.png"
    gantt_png(two_stage_result(), path, title="chain on test-2")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PipeenvError, match="exists"):
        gantt_png(two_stage_result(), path, overwrite=False)


def test_gantt_needs_a_timeline_and_a_width() -> None:
    with pytest.raises(PipeenvError, match="timeline=True"):
        gantt_text(two_stage_result(timeline=False))
    with pytest.raises(PipeenvError, match="width must be >= 1"):
        gantt_text(two_stage_result(), width=0)


def test_ansi_render_before_and_after_the_plan() -> None:
    env = PipelinePartitionEnv(
        graph=chain(4), cluster=small_cluster(2), num_stages=2, max_nodes=8, render_mode="ansi"
    )
    env.reset(seed=0)
    env.step(0)
    partial = env.render()
    assert partial.splitlines()[1].split() == ["0", "1", "3.000", "0.0%"]
    masked_rollout(env, 0)
    final = env.render()
    assert "iteration" in final and "dev0" in final and "dev1" in final


@pytest.mark.parametrize("env_class", [PipelinePartitionEnv, PipelinePartitionOneShotEnv])
def test_rgb_array_render(env_class: type) -> None:
    env = env_class(
        graph=chain(4), cluster=small_cluster(2), num_stages=2, max_nodes=8, render_mode="rgb_array"
    )
    env.reset(seed=0)
    before = env.render()
    assert before.dtype == np.uint8 and before.shape[2] == 3
    if env_class is PipelinePartitionEnv:
        masked_rollout(env, 0)
    else:
        env.step(np.array([0, 0, 1, 1, 0, 0, 0, 0]))
    after = env.render()
    assert after.dtype == np.uint8 and after.shape[2] == 3
