"""One study run's outcome metrics, manipulation checks and validity, from its summary.json and metrics.jsonl.

Outcome metrics (``METRICS``; the study's primary metric is pre-declared in configs/study/study.yaml):

- ``heldout_auc`` (points): mean held-out greedy accuracy over the training horizon. The held-out curve is
  (0, ``heldout_accuracy_before``), the logged ``heldout/accuracy`` at its ``heldout/weight_version`` (every
  ``heldout.every`` steps) and (``steps``, ``heldout_accuracy_after``); with points (x_j, y_j),
  ``AUC = 100 · Σ_j (x_{j+1} − x_j)(y_j + y_{j+1}) / 2 / steps`` (trapezoids, divided by the horizon).
- ``final_accuracy`` (points): ``100 · heldout_accuracy_after``.
- ``steps_to_80``: the first curve point x_j with y_j >= 0.8 (so a multiple of ``heldout.every``, or the last
  step); None (censored) when the curve never reaches 0.8. No value is invented for a censored run.
- ``pass_at_k`` / ``avg_at_k`` (points): held-out pass@k / avg@k after RL at the rollout temperature
  (``heldout.sample_k``); None when not measured.
- ``final_entropy`` (nats): mean ``entropy/mean`` over the last ``LAST`` steps.

Manipulation checks (``checks``; None when the run did not log them): the mean over steps of
``grad/cos_shaped_plain``, ``clip_fraction`` and per quadrant ``quadrant/<Q>/grad_share`` and
``quadrant/<Q>/adv_mass_share`` (read from ``signal_share``, its former name, in older runs).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from pipeline.report import heldout_curve

LAST = 10
QUADS = ("PHR", "PLR", "NLR", "NHR")
THRESHOLD = 0.8
#: metric -> (unit, one-line definition) of every outcome metric a run row carries under "metrics"
METRICS = {
    "heldout_auc": ("points", "mean held-out greedy accuracy over the training horizon (trapezoid AUC / steps)"),
    "final_accuracy": ("points", "held-out greedy accuracy after RL"),
    "steps_to_80": ("steps", f"first held-out measurement at >= {THRESHOLD:.0%} greedy accuracy (censored if never)"),
    "pass_at_k": ("points", "held-out pass@k after RL at the rollout temperature (heldout.sample_k samples)"),
    "avg_at_k": ("points", "held-out avg@k after RL at the rollout temperature (mean sample accuracy)"),
    "final_entropy": ("nats", f"mean token entropy over the last {LAST} steps"),
}
CHECKS = ["grad/cos_shaped_plain", "clip_fraction"] + [f"quadrant/{q}/{k}" for k in ("grad_share", "adv_mass_share")
                                                        for q in QUADS]


def _number(v) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def heldout_points(summary: dict, rows: list[dict]) -> tuple[list[int], list[float]]:
    """The held-out curve (RL updates, accuracy): step 0 before RL, the logged points, the final step."""
    xs, ys = heldout_curve(rows, (summary["steps"], summary["heldout_accuracy_after"]))
    points = dict(zip(xs, ys))
    points[0] = summary["heldout_accuracy_before"]
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def heldout_auc(xs: list[int], ys: list[float]) -> Optional[float]:
    """Trapezoid area under (xs, ys) divided by the horizon ``xs[-1]``, in points (x100); None without a
    horizon or with an unmeasured (NaN) point."""
    if len(xs) < 2 or xs[-1] <= xs[0] or any(_number(y) is None for y in ys):
        return None
    area = sum((x1 - x0) * (y0 + y1) / 2.0 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]))
    return 100.0 * area / (xs[-1] - xs[0])


def steps_to(xs: list[int], ys: list[float], threshold: float = THRESHOLD) -> Optional[int]:
    """First x whose y >= ``threshold``; None (censored) when no point reaches it."""
    return next((int(x) for x, y in zip(xs, ys) if _number(y) is not None and y >= threshold), None)


def _last_mean(rows: list[dict], key: str) -> Optional[float]:
    vals = [r[key] for r in rows[-LAST:] if key in r]
    return float(np.mean(vals)) if vals else None


def _step_mean(rows: list[dict], *keys: str) -> Optional[float]:
    """Mean over the steps that logged the first of ``keys`` present in a row (None when no step did)."""
    vals = [next(r[k] for k in keys if k in r) for r in rows if any(k in r for k in keys)]
    return float(np.mean(vals)) if vals else None


def outcome_metrics(summary: dict, rows: list[dict]) -> dict:
    """{metric: value or None} for every metric in ``METRICS`` (definitions: module docstring)."""
    xs, ys = heldout_points(summary, rows)
    after = _number(summary.get("heldout_accuracy_after"))
    pct = {k: _number(summary.get(f"heldout_{k}_after")) for k in ("pass_at_k", "avg_at_k")}
    return {"heldout_auc": heldout_auc(xs, ys), "final_accuracy": None if after is None else 100.0 * after,
            "steps_to_80": steps_to(xs, ys), **{k: None if v is None else 100.0 * v for k, v in pct.items()},
            "final_entropy": _last_mean(rows, "entropy/mean")}


def manipulation_checks(rows: list[dict]) -> dict:
    """{check: mean over steps or None} for every key in ``CHECKS`` (adv_mass_share falls back to signal_share)."""
    out = {}
    for key in CHECKS:
        old = key.replace("adv_mass_share", "signal_share")
        out[key] = _step_mean(rows, key, old) if old != key else _step_mean(rows, key)
    return out


def invalid_reason(summary: dict, max_no_signal_share: float) -> Optional[str]:
    """Why the run is not a data point, or None: more than ``max_no_signal_share`` of its steps had no token
    carrying signal (summary ``no_signal_steps``, absent = 0), i.e. it trained on nothing."""
    skipped, steps = int(summary.get("no_signal_steps") or 0), int(summary.get("steps") or 0)
    if skipped > max_no_signal_share * steps:
        return (f"{skipped} of {steps} steps had no token carrying signal (optimizer step skipped), more than "
                f"study.max_no_signal_share={max_no_signal_share:g} of them")
    return None
