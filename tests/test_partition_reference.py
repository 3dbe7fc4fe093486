"""The time-balanced contiguous partition (linear partition problem)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeenv.errors import PipeenvError
from pipeenv.partition_reference import balanced_contiguous


@pytest.mark.parametrize(
    ("weights", "stages", "expected"),
    [
        ([1, 2, 3, 4, 5, 6], 2, [0, 0, 0, 0, 1, 1]),
        ([1, 2, 3, 4, 5, 6], 3, [0, 0, 0, 1, 1, 2]),
        ([5, 1, 1, 1], 2, [0, 1, 1, 1]),
        ([1, 1, 1, 1], 4, [0, 1, 2, 3]),
        ([10, 1, 1, 1, 1], 3, [0, 1, 1, 1, 2]),
        ([0, 0, 0], 2, [0, 0, 1]),
        ([7], 1, [0]),
    ],
)
def test_exact_cases(weights: list[float], stages: int, expected: list[int]) -> None:
    assert balanced_contiguous(weights, stages).tolist() == expected


def best_bottleneck(weights: np.ndarray, stages: int) -> float:
    n = len(weights)
    best = np.inf
    for cuts in itertools.combinations(range(1, n), stages - 1):
        bounds = (0, *cuts, n)
        best = min(best, max(weights[a:b].sum() for a, b in itertools.pairwise(bounds)))
    return float(best)


@pytest.mark.parametrize("seed", range(25))
def test_optimal_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    stages = int(rng.integers(1, n + 1))
    weights = rng.uniform(0, 1, n) * (rng.random(n) < 0.8)
    out = balanced_contiguous(weights, stages)
    assert out.tolist() == sorted(out.tolist())
    assert set(out.tolist()) == set(range(stages))
    sums = np.bincount(out, weights=weights, minlength=stages)
    assert sums.max() == pytest.approx(best_bottleneck(weights, stages), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("weights", "stages", "message"),
    [
        ([], 1, "non-empty 1-D"),
        ([1.0, -1.0], 1, "finite and >= 0"),
        ([1.0, float("nan")], 1, "finite and >= 0"),
        ([1.0, 2.0], 3, "must be in 1..2"),
        ([1.0, 2.0], 0, "must be in 1..2"),
        ([1.0, 2.0], 1.5, "must be an integer"),
    ],
)
def test_errors(weights: list[float], stages: int, message: str) -> None:
    with pytest.raises(PipeenvError, match=message):
        balanced_contiguous(weights, stages)
