"""The validation report (``pipeenv.validation/v1``): numerics verdict, predicted vs measured.

Relative errors are ``(measured - predicted) / predicted``: positive when the run was slower than
the simulator said.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeenv.errors import PipeenvError
from pipeenv.jsonio import write_json

__all__ = ["CPU_SHARE_WARNING", "FORMAT", "ValidationReport", "plan_hash", "relative_error"]

FORMAT = "pipeenv.validation/v1"

# Below this share of a core during its compute, a rank was kept waiting by other processes.
CPU_SHARE_WARNING = 0.9


def plan_hash(plan_doc: Mapping[str, Any]) -> str:
    """SHA-256 of what a plan decides (stages, devices, replicas, microbatches, schedule)."""
    keys = ("stage_of", "num_stages", "devices", "data_parallel", "microbatches", "schedule")
    blob = json.dumps({k: plan_doc.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def relative_error(measured: float, predicted: float) -> float:
    """``(measured - predicted) / predicted`` (inf when nothing was predicted)."""
    if predicted <= 0.0:
        return float("inf") if measured > 0.0 else 0.0
    return (measured - predicted) / predicted


@dataclass(frozen=True)
class ValidationReport:
    """One validation: what ran, whether it computed the right thing, how fast vs predicted.

    :param doc: the ``pipeenv.validation/v1`` document (see :meth:`build` for its fields).
    """

    doc: dict[str, Any]

    @classmethod
    def build(
        cls,
        *,
        model: str,
        microbatch_size: int,
        plan_doc: Mapping[str, Any],
        graph_hash: str,
        measurement: Mapping[str, Any],
        predicted: Mapping[str, Any],
        cluster: str,
        profile_source: str,
        lowering: Mapping[str, Any],
        replayed_iteration_s: float,
    ) -> ValidationReport:
        """Assemble the report.

        :param measurement: :class:`~pipeenv.validate.runner.Measurement` as a dict.
        :param predicted: the simulator's ``pipeenv.result/v1`` dict for the plan.
        :param replayed_iteration_s: SPEC §4's iteration time on the measured stage times
            (:func:`~pipeenv.validate.prediction.stage_replay`).
        :param lowering: ``{"stages": [{"inputs", "outputs"}], "tied", "unaccounted"}``.
        """
        stages = []
        for s, sim in enumerate(predicted["stages"]):
            fwd, bwd = measurement["stage_forward_s"][s], measurement["stage_backward_s"][s]
            stages.append(
                {
                    "stage": s,
                    "predicted_forward_s": sim["forward_s"],
                    "measured_forward_s": fwd,
                    "forward_error": relative_error(fwd, sim["forward_s"]),
                    "predicted_backward_s": sim["backward_s"],
                    "measured_backward_s": bwd,
                    "backward_error": relative_error(bwd, sim["backward_s"]),
                    "measured_forward_cpu_s": measurement["stage_forward_cpu_s"][s],
                    "measured_backward_cpu_s": measurement["stage_backward_cpu_s"][s],
                    "send_bytes": sim["send_bytes"],
                    "predicted_busy_s": sim["busy_s"],
                    "measured_busy_s": measurement["stage_busy_s"][s],
                }
            )
        doc = {
            "format": FORMAT,
            "model": model,
            "microbatch_size": microbatch_size,
            "plan": {
                "hash": plan_hash(plan_doc),
                "graph_hash": plan_doc.get("graph_hash"),
                **{k: plan_doc[k] for k in ("num_stages", "data_parallel", "microbatches")},
                "schedule": plan_doc["schedule"],
                "devices": list(plan_doc["devices"]),
            },
            "graph_hash": graph_hash,
            "environment": measurement["environment"],
            "numerics": {
                **measurement["numerics"],
                "loss": measurement["loss"],
                "reference_loss": measurement["reference_loss"],
            },
            "predicted": {
                "iteration_s": predicted["iteration_s"],
                "cluster": cluster,
                "profile": profile_source,
                "timeline": list(predicted.get("timeline", [])),
            },
            "measured": {
                "iteration_s": measurement["iteration_s"],
                "iteration_samples_s": list(measurement["iteration_samples_s"]),
                "timeline": list(measurement["timeline"]),
            },
            "iteration_error": relative_error(measurement["iteration_s"], predicted["iteration_s"]),
            "replayed": {
                "iteration_s": replayed_iteration_s,
                "what": "SPEC §4 on the measured per-stage forward and backward times",
            },
            # (1 + iteration_error) = (1 + stage_time_error) * (1 + runtime_error)
            "stage_time_error": relative_error(replayed_iteration_s, predicted["iteration_s"]),
            "runtime_error": relative_error(measurement["iteration_s"], replayed_iteration_s),
            "stages": stages,
            "lowering": dict(lowering),
        }
        return cls(doc)

    @property
    def numerics_ok(self) -> bool:
        """True when loss and every gradient matched the plain model."""
        return bool(self.doc["numerics"]["ok"])

    @property
    def iteration_error(self) -> float:
        """Relative error of the measured iteration time against the prediction."""
        return float(self.doc["iteration_error"])

    def to_dict(self) -> dict[str, Any]:
        return self.doc

    def save(self, path: str | Path, *, overwrite: bool = True) -> None:
        """Write the report as JSON."""
        write_json(path, self.doc, overwrite=overwrite)

    def gantt_png(self, path: str | Path, *, overwrite: bool = True) -> None:
        """Write the predicted and the measured timeline one above the other, on one time axis.

        :raises PipeenvError: when the file exists and ``overwrite`` is False.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from pipeenv.envs.render import draw_gantt, timeline_rows

        p = Path(path)
        if not overwrite and p.exists():
            raise PipeenvError(f"output: {p} exists (pass --force to overwrite)")
        d = self.doc
        predicted = timeline_rows(d["predicted"]["timeline"])
        measured = timeline_rows(d["measured"]["timeline"])
        span = max(d["predicted"]["iteration_s"], d["measured"]["iteration_s"])
        rows = max(len(predicted), len(measured), 1)
        fig = Figure(figsize=(8, 2.0 + 0.9 * rows), dpi=80)
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True)
        plan = d["plan"]
        draw_gantt(
            top,
            predicted,
            span,
            f"{d['model']}, S={plan['num_stages']} R={plan['data_parallel']} "
            f"M={plan['microbatches']} {plan['schedule']}\npredicted "
            f"{d['predicted']['iteration_s'] * 1e3:.1f} ms ({d['predicted']['cluster']})",
        )
        draw_gantt(
            bottom,
            measured,
            span,
            f"measured {d['measured']['iteration_s'] * 1e3:.1f} ms "
            f"({d['iteration_error']:+.1%}; median iteration)",
        )
        fig.tight_layout()
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, format="png")

    def table(self) -> str:
        """A readable summary: verdict, iteration and per-stage times, relative errors."""
        d = self.doc
        num = d["numerics"]
        plan = d["plan"]
        env = d["environment"]
        verdict = "OK" if num["ok"] else "MISMATCH"
        lines = [
            f"model {d['model']} (microbatch {d['microbatch_size']}), plan {plan['hash'][:19]}..., "
            f"graph {d['graph_hash'][:19]}...",
            f"S={plan['num_stages']} R={plan['data_parallel']} M={plan['microbatches']} "
            f"{plan['schedule']}; {env['backend']} on {env['device']}, torch {env['torch']}, "
            f"{env['ranks'][0]['threads']} thread(s) per rank",
            f"numerics: {verdict} (loss {num['loss']:.6g} vs {num['reference_loss']:.6g}; "
            f"max gradient error {num['max_grad_error']:.2e} of scale, tolerance "
            f"{num['grad_rtol']:.0e}, over {num['tensors']} tensors)",
        ]
        lines += [f"  {failure}" for failure in num["failures"][:10]]
        lines.append(
            f"iteration: predicted {d['predicted']['iteration_s'] * 1e3:.2f} ms, measured "
            f"{d['measured']['iteration_s'] * 1e3:.2f} ms, error {d['iteration_error']:+.1%} "
            f"(cluster {d['predicted']['cluster']})"
        )
        lines.append(
            f"error split: stage times {d['stage_time_error']:+.1%} (SPEC §4 on the measured "
            f"stage times: {d['replayed']['iteration_s'] * 1e3:.2f} ms), runtime "
            f"{d['runtime_error']:+.1%} (hand-offs and overheads SPEC §4 does not model)"
        )
        lines.append(
            f"{'stage':>5} {'F pred ms':>10} {'F meas ms':>10} {'F err':>7} {'F cpu ms':>9} "
            f"{'B pred ms':>10} {'B meas ms':>10} {'B err':>7} {'B cpu ms':>9} {'send B':>10}"
        )
        for s in d["stages"]:
            lines.append(
                f"{s['stage']:>5} {s['predicted_forward_s'] * 1e3:>10.3f} "
                f"{s['measured_forward_s'] * 1e3:>10.3f} {s['forward_error']:>+7.1%} "
                f"{s['measured_forward_cpu_s'] * 1e3:>9.3f} "
                f"{s['predicted_backward_s'] * 1e3:>10.3f} {s['measured_backward_s'] * 1e3:>10.3f} "
                f"{s['backward_error']:>+7.1%} {s['measured_backward_cpu_s'] * 1e3:>9.3f} "
                f"{s['send_bytes']:>10.0f}"
            )
        lines.append(
            "compute per iteration (busy) vs iteration, per stage: "
            + "; ".join(
                f"{s['stage']}: predicted {s['predicted_busy_s'] * 1e3:.1f} of "
                f"{d['predicted']['iteration_s'] * 1e3:.1f} ms, measured "
                f"{s['measured_busy_s'] * 1e3:.1f} of {d['measured']['iteration_s'] * 1e3:.1f} ms"
                for s in d["stages"]
            )
        )
        shares = env.get("stage_cpu_share")
        if env["device"] == "cpu" and shares:
            load = env.get("load_average", [float("nan")] * 2)
            note = (
                "; the host was oversubscribed: measured times include waiting for a core"
                if min(shares) < CPU_SHARE_WARNING
                else ""
            )
            lines.append(
                "cpu share per stage: "
                + "/".join(f"{x:.2f}" for x in shares)
                + f" (load average {load[0]:.2f} -> {load[1]:.2f}){note}"
            )
        low = d["lowering"]
        if low.get("tied") or low.get("unaccounted"):
            lines.append(
                "not in SPEC §4's traffic: "
                + "; ".join(
                    [f"tied {t['name']} on stages {t['stages']}" for t in low.get("tied", [])]
                    + [f"{u} relayed over boundary {b}" for u, b in low.get("unaccounted", [])]
                )
            )
        return "\n".join(lines)
