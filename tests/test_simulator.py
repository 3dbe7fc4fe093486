"""The simulator against SPEC §4: exact hand cases, the spec's checks, and kernel == twin."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import chain, cluster, random_dag, random_stages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeenv.cluster import Cluster, Device, Link
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from pipeenv.plan import Plan
from pipeenv.schedules import op_order
from pipeenv.simulator import simulate
from pipeenv.simulator.kernel import STATUS_DEADLOCK, simulate_kernel
from pipeenv.simulator.reference import _simulate_replica

ENGINES = ["numba", "python"]
SCHEDULES = ["gpipe", "1f1b"]


def plan_of(graph: OperatorGraph, stages, **fields) -> Plan:  # type: ignore[no-untyped-def]
    num_stages = int(max(stages)) + 1
    fields.setdefault("devices", list(range(num_stages * fields.get("data_parallel", 1))))
    return Plan.from_stages(graph, np.array(stages), num_stages=num_stages, **fields)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(("num_stages", "microbatches"), [(1, 1), (2, 5), (4, 8), (4, 2), (3, 1)])
def test_uniform_stages_without_transfers(engine, schedule, num_stages, microbatches):
    # SPEC §4 check: T = (M + S - 1)(F + B) for both schedules.
    g = chain([0.5] * (2 * num_stages), [1.25] * (2 * num_stages))
    plan = plan_of(
        g, [i // 2 for i in range(2 * num_stages)], microbatches=microbatches, schedule=schedule
    )
    result = simulate(g, cluster([1.0] * num_stages), plan, engine=engine)
    assert result.iteration_s == pytest.approx(
        (microbatches + num_stages - 1) * (1.0 + 2.5), rel=1e-12
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_pure_data_parallel(engine, replicas):
    # SPEC §4 check: one stage, R replicas: T = M (F + B) + allreduce(P).
    g = chain([1.0, 2.0], [2.0, 3.0], param_bytes=1000.0)
    link = Link(100.0, 0.5)
    c = cluster([1.0] * replicas, intra=link)
    plan = plan_of(g, [0, 0], data_parallel=replicas, microbatches=4)
    result = simulate(g, c, plan, engine=engine)
    allreduce = 2 * (replicas - 1) / replicas * 2000.0 / 100.0 + 2 * (replicas - 1) * 0.5
    assert result.iteration_s == pytest.approx(4 * 8.0 + allreduce, rel=1e-12)
    assert result.throughput_samples_per_s == pytest.approx(replicas * 4 / result.iteration_s)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_two_stages_by_hand(engine, schedule):
    # F = 1, B = 2 per stage, C = 0.5 each way, M = 2: worked out on paper for both schedules.
    g = chain([1.0, 1.0], [2.0, 2.0], output_bytes=50.0)
    c = cluster([1.0, 1.0], intra=Link(100.0, 0.0))
    plan = plan_of(g, [0, 1], microbatches=2, schedule=schedule)
    result = simulate(g, c, plan, engine=engine, timeline=True)
    assert result.iteration_s == pytest.approx(10.0)
    spans = {(e.kind, e.stage, e.microbatch): (e.start, e.end) for e in result.timeline}
    assert spans[("backward", 0, 0)] == pytest.approx(
        (5.0, 7.0) if schedule == "1f1b" else (6.0, 8.0)
    )
    assert spans[("send_backward", 0, 1)] == pytest.approx((7.5, 8.0))
    assert spans[("forward", 1, 1)] == pytest.approx(
        (4.5, 5.5) if schedule == "1f1b" else (2.5, 3.5)
    )
    assert result.stages[0].send_bytes == 50 and result.stages[1].send_bytes == 0
    assert result.bubble_fraction == pytest.approx(1 - 2 * 2 * 3.0 / (2 * 10.0))


@pytest.mark.parametrize("engine", ENGINES)
def test_relayed_skip_tensor_counts_on_every_boundary(engine):
    # a -> b -> c -> d plus a -> d: a's output crosses boundaries 0, 1 and 2.
    nodes = [Node(x, "op", 1.0, 1.0, size, 0.0) for x, size in zip("abcd", [100.0, 10.0, 1.0, 7.0])]
    g = OperatorGraph(
        "skip", nodes, [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")], microbatch_size=1
    )
    result = simulate(g, cluster([1.0] * 4), plan_of(g, [0, 1, 2, 3]), engine=engine)
    assert [s.send_bytes for s in result.stages] == [100.0, 110.0, 101.0, 0.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_parallel_branches_on_different_stages(engine):
    # a -> {b, c} -> d with b on stage 1 and c on stage 2: c's input a is relayed over boundary 1.
    nodes = [Node(x, "op", 1.0, 1.0, size, 0.0) for x, size in zip("abcd", [8.0, 4.0, 2.0, 1.0])]
    g = OperatorGraph(
        "fork", nodes, [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], microbatch_size=1
    )
    plan = Plan({"a": 0, "b": 1, "c": 2, "d": 3}, num_stages=4, devices=[0, 1, 2, 3])
    result = simulate(g, cluster([1.0] * 4), plan, engine=engine)
    assert [s.send_bytes for s in result.stages] == [8.0, 12.0, 6.0, 0.0]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_memory_in_flight_and_oom(engine, schedule):
    # SPEC §4: peak in-flight is M for gpipe and min(S - s, M) for 1f1b.
    nodes = [Node(f"n{i}", "op", 1.0, 1.0, 0.0, 10.0, 100.0) for i in range(3)]
    g = OperatorGraph("m", nodes, [("n0", "n1"), ("n1", "n2")], microbatch_size=1)
    c = cluster([1.0] * 3, memory=300.0)
    result = simulate(g, c, plan_of(g, [0, 1, 2], microbatches=5, schedule=schedule), engine=engine)
    peaks = [5, 5, 5] if schedule == "gpipe" else [3, 2, 1]
    assert [s.peak_memory_bytes for s in result.stages] == [40 + p * 100 for p in peaks]
    assert [s.oom for s in result.stages] == [40 + p * 100 > 300 for p in peaks]
    assert result.feasible == all(40 + p * 100 <= 300 for p in peaks)
    assert result.stages[0].oom_excess_bytes == max(0, 40 + peaks[0] * 100 - 300)
    assert result.iteration_s > 0  # timing is still reported


@pytest.mark.parametrize("engine", ENGINES)
def test_param_memory_factor_option(engine):
    g = chain([1.0], param_bytes=100.0, output_bytes=0.0)
    result = simulate(g, cluster([1.0]), plan_of(g, [0]), engine=engine, param_memory_factor=2.5)
    assert result.stages[0].peak_memory_bytes == 250.0


@pytest.mark.parametrize("engine", ENGINES)
def test_heterogeneous_speed_divides_cost(engine):
    g = chain([1.0, 3.0], [2.0, 6.0])
    result = simulate(g, cluster([2.0, 0.5]), plan_of(g, [0, 1]), engine=engine)
    assert (result.stages[0].forward_s, result.stages[0].backward_s) == (0.5, 1.0)
    assert (result.stages[1].forward_s, result.stages[1].backward_s) == (6.0, 12.0)
    assert result.iteration_s == pytest.approx(0.5 + 6.0 + 12.0 + 1.0)


@pytest.mark.parametrize("engine", ENGINES)
def test_inter_node_link_and_allreduce_uses_slowest_link(engine):
    fast, slow = Link(1000.0, 0.0), Link(10.0, 1.0)
    g = chain([1.0, 1.0], param_bytes=100.0, output_bytes=100.0)
    c = cluster([1.0] * 4, nodes=[0, 0, 1, 1], intra=fast, inter=slow)
    # Replica 0 on devices 0, 1 (node 0); replica 1 on devices 2, 3 (node 1).
    plan = plan_of(g, [0, 1], data_parallel=2, devices=[0, 1, 2, 3])
    result = simulate(g, c, plan, engine=engine)
    allreduce = 2 * 1 / 2 * 100.0 / 10.0 + 2 * 1 * 1.0
    assert result.stages[0].allreduce_s == pytest.approx(allreduce)
    # Forward 1 + transfer 0.1 + forward 1 + backward 2 + transfer 0.1 + backward 2.
    assert result.iteration_s == pytest.approx(6.2 + allreduce)
    assert result.throughput_samples_per_s == pytest.approx(2 / result.iteration_s)


@pytest.mark.parametrize("engine", ENGINES)
def test_efficiency_against_the_bound(engine):
    # SPEC §5: one device, one stage, one microbatch, no communication: efficiency 1.
    g = chain([1.0, 2.0], microbatch_size=4)
    result = simulate(g, cluster([1.0]), plan_of(g, [0, 0]), engine=engine)
    assert result.efficiency == pytest.approx(1.0)
    two = simulate(g, cluster([1.0, 1.0]), plan_of(g, [0, 0]), engine=engine)
    assert two.efficiency == pytest.approx(0.5)  # the second device idles


def test_moving_a_node_keeps_total_forward_on_homogeneous_devices():
    rng = np.random.default_rng(3)
    g = random_dag(rng, 20, 6)
    c = cluster([1.0] * 4)
    totals = set()
    for _ in range(20):
        result = simulate(g, c, plan_of(g, random_stages(rng, g, 4)))
        totals.add(round(sum(s.forward_s for s in result.stages), 9))
    assert totals == {round(float(g.arrays.forward_s.sum()), 9)}


def test_deadlocking_order_is_reported_not_looped():
    order = np.array([[-1, 1], [1, -1]], dtype=np.int64)  # stage 0 wants B0 before F0
    g = chain([1.0, 1.0])
    a = g.arrays
    bw, lat = cluster([1.0, 1.0]).link_arrays
    table, times = np.empty((2, 8)), np.empty((1, 8, 2, 1))
    status, *_ = simulate_kernel(
        a.costs,
        a.succ_ptr,
        a.succ_idx,
        np.array([0, 1]),
        np.array([0, 1]),
        order,
        2,
        1,
        np.ones(2),
        np.full(2, 1e9),
        bw,
        lat,
        4.0,
        table,
        times,
    )
    assert status == STATUS_DEADLOCK
    with pytest.raises(PipeenvError, match="cannot complete"):
        _simulate_replica(order, [1.0, 1.0], [1.0, 1.0], [0.0], 0)


def test_simulate_rejects_invalid_plans_with_the_rule():
    g = chain([1.0, 1.0, 1.0])
    c = cluster([1.0, 1.0])
    bad = Plan({"n0": 1, "n1": 0, "n2": 1}, num_stages=2, devices=[0, 1])
    for engine in ENGINES:
        with pytest.raises(PipeenvError, match=r"edge \('n0', 'n1'\) goes backward"):
            simulate(g, c, bad, engine=engine)
    with pytest.raises(PipeenvError, match="unknown engine"):
        simulate(g, c, plan_of(g, [0, 0, 1]), engine="jax")
    with pytest.raises(PipeenvError, match="param_memory_factor"):
        simulate(g, c, plan_of(g, [0, 0, 1]), param_memory_factor=float("nan"))


def test_schedule_orders_follow_the_spec():
    assert op_order("gpipe", 2, 3).tolist() == [[1, 2, 3, -1, -2, -3]] * 2
    assert op_order("1f1b", 3, 4).tolist() == [
        [1, 2, 3, -1, 4, -2, -3, -4],
        [1, 2, -1, 3, -2, 4, -3, -4],
        [1, -1, 2, -2, 3, -3, 4, -4],
    ]
    assert op_order("1f1b", 4, 1).tolist() == [[1, -1]] * 4


# ----------------------------------------------------------------- kernel == twin, at random
@st.composite
def scenarios(draw):  # type: ignore[no-untyped-def]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 16))
    g = random_dag(rng, n, extra_edges=draw(st.integers(0, 8)) if n > 1 else 0)
    num_stages = draw(st.integers(1, min(n, 5)))
    replicas = draw(st.integers(1, 3))
    per_node = draw(st.integers(1, 4))
    num_devices = num_stages * replicas + draw(st.integers(0, 2))
    devices = [
        Device(
            f"d{i}",
            i // per_node,
            float(rng.choice([0.5, 1.0, 1.7, 3.0])),
            float(rng.choice([2e3, 1e4, 1e6])),
        )
        for i in range(num_devices)
    ]
    c = Cluster(
        "random",
        devices,
        Link(float(rng.uniform(50, 500)), float(rng.uniform(0, 0.2))),
        Link(float(rng.uniform(5, 50)), float(rng.uniform(0, 1.0))),
    )
    plan = Plan.from_stages(
        g,
        random_stages(rng, g, num_stages),
        num_stages=num_stages,
        devices=rng.permutation(num_devices)[: num_stages * replicas].tolist(),
        data_parallel=replicas,
        microbatches=draw(st.integers(1, 9)),
        schedule=draw(st.sampled_from(SCHEDULES)),
    )
    return g, c, plan, draw(st.sampled_from([0.0, 1.0, 4.0]))


def _assert_close(a, b, path="result"):  # type: ignore[no-untyped-def]
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float | int) and not isinstance(a, bool):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_kernel_equals_python_twin(scenario):
    g, c, plan, factor = scenario
    fast = simulate(g, c, plan, timeline=True, param_memory_factor=factor)
    slow = simulate(g, c, plan, timeline=True, param_memory_factor=factor, engine="python")
    _assert_close(fast.to_dict(), slow.to_dict())
    assert 0.0 < fast.efficiency <= 1.0 + 1e-12
    assert -1e-12 <= fast.bubble_fraction < 1.0


def test_repeated_calls_do_not_redo_graph_preparation(monkeypatch):
    import pipeenv.graph as graph_module

    calls = []
    real = graph_module._csr
    monkeypatch.setattr(graph_module, "_csr", lambda *a: calls.append(1) or real(*a))
    g = chain([1.0, 2.0, 3.0])
    c = cluster([1.0, 1.0])
    simulate(g, c, plan_of(g, [0, 1, 1]))
    assert len(calls) == 2  # successors and predecessors, once
    for stages in ([0, 0, 1], [0, 1, 1]):
        simulate(g, c, plan_of(g, stages))
    assert len(calls) == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_a_graph_without_compute_is_refused(engine):
    g = chain([0.0, 0.0], [0.0, 0.0], output_bytes=10.0)
    with pytest.raises(PipeenvError, match="no compute cost"):
        simulate(g, cluster([1.0, 1.0], intra=Link(100.0, 0.0)), plan_of(g, [0, 1]), engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_rounding_never_leaves_the_documented_ranges(engine):
    # One stage on one device: no bubble and efficiency 1, where the raw float formulas give
    # -2.2e-16 and 1 + 2.2e-16 for these costs.
    g = chain([0.01, 0.07, 0.13])
    result = simulate(g, cluster([1.0]), plan_of(g, [0, 0, 0], microbatches=7), engine=engine)
    assert 1.0 - result.stages[0].busy_s / result.iteration_s < 0.0  # the raw value
    assert result.bubble_fraction == 0.0
    assert result.efficiency == 1.0
