"""Downset enumeration: exact small cases, brute force on random DAGs, the cap and its fallback."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.downsets import TooManyDownsets, bounded_downsets, enumerate_downsets
from pipeenv.errors import PipeenvError
from pipeenv.graph import Node, OperatorGraph
from tests.conftest import chain, random_dag


def dag(ids: str, edges: list[str], outputs: list[float] | None = None) -> OperatorGraph:
    outputs = outputs or [1.0] * len(ids)
    nodes = [Node(i, "op", 1.0, 2.0, out, 10.0) for i, out in zip(ids, outputs, strict=True)]
    return OperatorGraph("d", nodes, [(e[0], e[1]) for e in edges], microbatch_size=1)


def as_sets(g: OperatorGraph, members: np.ndarray) -> list[frozenset[str]]:
    return [frozenset(g.order[i] for i in np.flatnonzero(row)) for row in members]


def test_chain_has_prefixes_only() -> None:
    g = chain([1.0, 1.0, 1.0])
    d = enumerate_downsets(g)
    assert as_sets(g, d.members) == [frozenset(), {"n0"}, {"n0", "n1"}, {"n0", "n1", "n2"}]
    assert d.sizes.tolist() == [0, 1, 2, 3]


def test_diamond() -> None:
    g = dag("abcd", ["ab", "ac", "bd", "cd"], [1.0, 10.0, 100.0, 1000.0])
    d = enumerate_downsets(g)
    sets = as_sets(g, d.members)
    assert d.count == 6
    assert set(sets) == {frozenset(s) for s in ["", "a", "ab", "ac", "abc", "abcd"]}
    assert sets[0] == frozenset() and sets[-1] == frozenset("abcd")
    abc = sets.index(frozenset("abc"))
    assert {sets[k] for k in d.proper_subsets(abc)} == {frozenset(s) for s in ["", "a", "ab", "ac"]}
    by_set = dict(zip(sets, d.boundary_sums(g.arrays.output_bytes), strict=True))
    assert by_set[frozenset("a")] == 1.0
    assert by_set[frozenset("ab")] == 11.0  # a feeds c, b feeds d
    assert by_set[frozenset("abc")] == 110.0
    assert by_set[frozenset("abcd")] == 0.0
    assert dict(zip(sets, d.sums(g.arrays.param_bytes), strict=True))[frozenset("abc")] == 30.0


def test_independent_branches_multiply() -> None:
    g = dag("abcde", ["ab", "cd", "de"])
    assert enumerate_downsets(g).count == 3 * 4


def test_cap_raises() -> None:
    g = dag("abcdefghij", [])
    assert enumerate_downsets(g, max_downsets=1024).count == 1024
    with pytest.raises(
        TooManyDownsets, match="graph 'd' \\(10 nodes\\) has more than 1023 downsets"
    ):
        enumerate_downsets(g, max_downsets=1023)


def test_bounded_falls_back_to_coarsening() -> None:
    g = dag("abcdefghijkl", [])
    d, coarsening = bounded_downsets(g, max_downsets=100)
    assert not coarsening.is_identity
    assert d.count <= 100
    assert d.count == 2**coarsening.graph.num_nodes  # still independent groups
    exact, identity = bounded_downsets(chain([1.0] * 5), max_downsets=100)
    assert identity.is_identity and exact.count == 6


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_downsets": 1}, "max_downsets must be >= 2"), ({"shrink": 1.0}, "shrink must be in")],
)
def test_bounded_bad_options(options: dict[str, float], message: str) -> None:
    with pytest.raises(PipeenvError, match=message):
        bounded_downsets(chain([1.0]), **options)  # type: ignore[arg-type]


def brute_force(g: OperatorGraph) -> set[frozenset[str]]:
    out = set()
    for r in range(g.num_nodes + 1):
        for subset in itertools.combinations(g.order, r):
            s = set(subset)
            if all(u in s for u, v in g.edges if v in s):
                out.add(frozenset(s))
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), extra=st.integers(0, 8))
def test_matches_brute_force(seed: int, n: int, extra: int) -> None:
    rng = np.random.default_rng(seed)
    g = random_dag(rng, n, extra) if n > 1 else chain([1.0])
    # Drop some backbone edges so that graphs have parallel branches too.
    keep = [e for e in g.edges if rng.random() < 0.6]
    g = OperatorGraph("r", g.nodes, keep, microbatch_size=1)
    d = enumerate_downsets(g)
    sets = as_sets(g, d.members)
    assert len(set(sets)) == d.count
    assert set(sets) == brute_force(g)
    assert all(d.sizes[k] <= d.sizes[k + 1] for k in range(d.count - 1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), cap=st.integers(2, 60))
def test_bounded_downsets_are_downsets_of_the_original(seed: int, cap: int) -> None:
    g = dag(
        "abcdefgh",
        [
            e
            for e in ["ab", "ac", "bd", "ce", "df", "eg", "fh", "gh"]
            if np.random.default_rng(seed).random() < 0.7
        ],
    )
    d, coarsening = bounded_downsets(g, max_downsets=cap)
    assert d.count <= cap
    original = {
        frozenset(m for cid in s for m in coarsening.members[cid])
        for s in as_sets(coarsening.graph, d.members)
    }
    assert original <= brute_force(g)
