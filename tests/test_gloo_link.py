"""The hand-off arithmetic of benchmarks/gloo_link.py --via pipelining (no processes)."""

from __future__ import annotations

import pytest

from benchmarks.gloo_link import fit, handoff_times


def test_handoffs_count_only_where_the_receiver_was_waiting():
    # Stage 0 ends its forwards at 1.0, 2.0, 3.0; stage 1 starts them at 1.5 (idle before),
    # 2.6 (idle since 1.8) and 3.9, after its previous op ended at 3.2 > 3.0: it was still
    # busy when microbatch 2 was sent, so that wait is not a hand-off time.
    sender = [("F", 0, 0.0, 1.0), ("F", 1, 1.0, 2.0), ("F", 2, 2.0, 3.0)]
    receiver = [("F", 0, 1.5, 1.8), ("F", 1, 2.6, 3.2), ("F", 2, 3.9, 4.2)]
    assert handoff_times(sender, receiver, "F") == pytest.approx([0.5, 0.6])
    # Backward hand-offs go the other way and ignore forward ops.
    back_sender = [("F", 0, 0.0, 1.0), ("B", 0, 1.0, 2.0)]
    back_receiver = [("F", 0, 0.0, 1.0), ("B", 0, 2.25, 3.0)]
    assert handoff_times(back_sender, back_receiver, "B") == pytest.approx([0.25])


def test_fit_recovers_latency_and_bandwidth():
    sizes = [4096, 1 << 20, 64 << 20]
    latency, bandwidth = fit({n: 1e-4 + n / 3e9 for n in sizes})
    assert latency == pytest.approx(1e-4, rel=1e-6)
    assert bandwidth == pytest.approx(3e9, rel=1e-6)
