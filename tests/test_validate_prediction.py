"""The validator's prediction side: the host cluster and the replay on measured stage times."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.validator_fidelity import branch_split_plan
from pipeenv import zoo
from pipeenv.cluster import Cluster, Device, Link, load_cluster
from pipeenv.errors import PipeenvError
from pipeenv.plan import Plan
from pipeenv.simulator import simulate
from pipeenv.validate.prediction import host_cluster, stage_replay


def _branch_plan(schedule: str, data_parallel: int = 1) -> Plan:
    """tiny-inception with its second cell's 3x3 branches (and all after) on stage 1: a
    non-contiguous plan whose boundary also carries the relayed 1x1 and pooled branches."""
    graph = zoo.load("tiny-inception", microbatch_size=8)
    plan = branch_split_plan(graph, 4, schedule)
    return plan.replace(data_parallel=data_parallel, devices=list(range(2 * data_parallel)))


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("data_parallel", [1, 2])
def test_replay_on_the_profiles_own_stage_times_is_the_prediction(schedule, data_parallel):
    graph = zoo.load("tiny-inception", microbatch_size=8)
    plan = _branch_plan(schedule, data_parallel)
    cluster = load_cluster(f"cpu-{2 * data_parallel}")
    predicted = simulate(graph, cluster, plan)
    forward = [s.forward_s for s in predicted.stages]
    backward = [s.backward_s for s in predicted.stages]
    replay = stage_replay(plan, cluster, graph, predicted, forward, backward)
    assert replay.iteration_s == pytest.approx(predicted.iteration_s, rel=1e-12)
    assert [s.send_bytes for s in replay.stages] == [s.send_bytes for s in predicted.stages]
    assert [s.allreduce_s for s in replay.stages] == pytest.approx(
        [s.allreduce_s for s in predicted.stages], rel=1e-12
    )


def test_replay_follows_the_measured_stage_times():
    graph = zoo.load("tiny-inception", microbatch_size=8)
    plan = _branch_plan("gpipe")
    cluster = load_cluster("cpu-2")
    predicted = simulate(graph, cluster, plan)
    # Uniform measured stages and a free link: SPEC §4's T = (M + S - 1)(F + B).
    free = Cluster("free", cluster.devices, Link(1e30, 0.0))
    replay = stage_replay(plan, free, graph, predicted, [0.01, 0.01], [0.02, 0.02])
    assert replay.iteration_s == pytest.approx((4 + 2 - 1) * 0.03)
    # A slower device: the measured seconds are what it took there, not on a speed-1 device.
    slow = Cluster(
        "slow", [cluster.devices[0], Device("cpu-1", 0, 0.5, 8e9, "cpu")], free.intra_node
    )
    again = stage_replay(plan, slow, graph, predicted, [0.01, 0.01], [0.02, 0.02])
    assert again.iteration_s == pytest.approx(replay.iteration_s)
    assert np.isclose(again.stages[1].forward_s, 0.01)


def test_host_cluster_is_the_cpu_preset_and_needs_a_file_on_gpus():
    plan = _branch_plan("1f1b")
    assert host_cluster(plan, "cpu").name == "cpu-2"
    assert host_cluster(plan.replace(devices=[0, 2]), "cpu").num_devices == 3
    with pytest.raises(PipeenvError, match="on GPUs pass --cluster"):
        host_cluster(plan, "cuda")
