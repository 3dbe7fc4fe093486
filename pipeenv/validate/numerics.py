"""The numerics check of a validation: the plain model's loss and gradients, and the comparison.

The reference runs the unpipelined model in one process on the plan's batch, microbatch by
microbatch (batch norm sees the same microbatches as the pipeline), with gradients summed over a
replica's microbatches and divided by M (the schedules' ``scale_grads``), then averaged over
replicas, as the data-parallel all-reduce does.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeenv.plan import Plan

__all__ = ["GRAD_RTOL", "LOSS_RTOL", "batch", "check_numerics", "reference_gradients"]

# float32 tolerance of the numerics check. The pipelined and the plain model run the same
# kernels on the same microbatches; only the order of a few sums differs (tied-weight gradients
# summed across stages, replica gradients all-reduced), so errors are a few ulps of the
# largest entries. A tensor passes when max|g - g_ref| <= GRAD_RTOL * max|g_ref| (scale-relative,
# so near-zero entries of a large gradient do not fail on rounding); the loss when
# |l - l_ref| <= LOSS_RTOL * max(1, |l_ref|).
GRAD_RTOL = 1e-4
LOSS_RTOL = 1e-5


def batch(
    model: str, microbatch_size: int, count: int, device: torch.device
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """``count`` microbatches of the fixed synthetic batch (same on every run and rank)."""
    from pipeenv import zoo

    inputs = zoo.example_inputs(model, microbatch_size * count, "cpu")
    targets = zoo.example_targets(model, microbatch_size * count, "cpu")
    return tuple(t.to(device) for t in inputs), targets.to(device)


def reference_gradients(
    model: str, plan: Plan, microbatch_size: int, device: torch.device
) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of the plain model on the plan's batch, as the pipeline computes them.

    Each replica's M microbatches run one by one; gradients are summed over a replica's
    microbatches and divided by M (the schedule's ``scale_grads``), then averaged over replicas.

    :returns: mean microbatch loss, gradient of every parameter by qualified name.
    """
    from pipeenv import zoo

    gm, _ = zoo.traced(model, "cpu", microbatch_size)
    gm.to(device)
    loss_fn = zoo.loss_fn(model)
    m, r = plan.microbatches, plan.data_parallel
    inputs, targets = batch(model, microbatch_size, m * r, device)
    losses: list[float] = []
    total: dict[str, torch.Tensor] = {}
    for replica in range(r):
        gm.zero_grad(set_to_none=True)
        for k in range(m):
            lo = (replica * m + k) * microbatch_size
            sl = slice(lo, lo + microbatch_size)
            loss = loss_fn(gm(*(t[sl] for t in inputs)), targets[sl])
            loss.backward()
            losses.append(float(loss.detach()))
        for name, p in gm.named_parameters():
            if p.grad is not None:
                g = p.grad.detach() / m
                total[name] = g if name not in total else total[name] + g
    return sum(losses) / len(losses), {k: (v / r).cpu() for k, v in total.items()}


def check_numerics(
    grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], loss: float, ref_loss: float
) -> dict[str, Any]:
    """Compare gradients and loss with the reference (tolerances in the module docstring).

    :returns: ``{"ok", "loss_error", "max_grad_error", "worst", "tensors", "failures"}``; errors
        are scale-relative (``max|g - g_ref| / max|g_ref|``).
    """
    failures: list[str] = []
    worst, worst_name = 0.0, ""
    for name in sorted(set(grads) | set(reference)):
        if name not in grads or name not in reference:
            side = "pipeline" if name in reference else "reference"
            failures.append(f"{name}: gradient missing on the {side} side")
            continue
        g, ref = grads[name].float(), reference[name].float()
        if g.shape != ref.shape:
            failures.append(f"{name}: shape {tuple(g.shape)} != {tuple(ref.shape)}")
            continue
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        err = float((g - ref).abs().max()) if ref.numel() else 0.0
        rel = err / scale if scale > 0 else err
        if not rel <= GRAD_RTOL:
            failures.append(f"{name}: relative error {rel:.2e} > {GRAD_RTOL:.0e}")
        if rel > worst or worst_name == "":
            worst, worst_name = rel, name
    loss_error = abs(loss - ref_loss) / max(1.0, abs(ref_loss))
    if not loss_error <= LOSS_RTOL:
        failures.append(f"loss {loss!r} vs reference {ref_loss!r}")
    return {
        "ok": not failures,
        "loss_error": loss_error,
        "max_grad_error": worst,
        "worst": worst_name,
        "tensors": len(reference),
        "failures": failures,
        "grad_rtol": GRAD_RTOL,
        "loss_rtol": LOSS_RTOL,
    }
