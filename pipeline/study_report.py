"""The report of a study: ``study.json``, ``study.md`` and three plots (the numbers are computed here).

Runs: a run is a data point when it finished (``summary.json``) and is valid
(:func:`pipeline.study_metrics.invalid_reason`); the others are listed with their reason and left out of
every number below. Per run (``study.json`` ``results.<algorithm>.runs``): the outcome metrics and
manipulation checks of :mod:`pipeline.study_metrics` (``metrics``, ``checks``), and held-out greedy accuracy
before/after RL and their difference, final training reward and token entropy (means over the last ``LAST``
steps), each quadrant's mean advantage-mass share, the share of zero-advantage tokens, steps and wall time.

Statistics: per algorithm, mean ± sample std (ddof = 1) over its valid seeds; per contrast [arm, baseline]
and metric (``paired``), the paired statistics of :mod:`pipeline.study_stats` over the seeds where both runs
are valid and have a value: ``{arm, baseline, metric, unit, n, mean_diff, sd_diff, ci95: [low, high], mde80,
seeds, diffs, censored: {arm, baseline}}`` (``censored``: seeds, both runs valid, whose value on that side is
None: never reached for ``steps_to_80``, not measured otherwise). study.md: :mod:`pipeline.study_markdown`;
plots (``study.png``, ``study_quadrants.png``, ``study_paired.png``): :mod:`pipeline.study_plots`.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from core.run_dir import read_metrics
from pipeline.study_markdown import markdown
from pipeline.study_metrics import LAST, METRICS, QUADS, invalid_reason, manipulation_checks, outcome_metrics
from pipeline.study_plots import plot, plot_paired
from pipeline.study_stats import paired_differences, paired_summary, seeds_needed


def collect(study_dir: str, algorithms: list[str], seeds: list[int]) -> tuple[dict[str, list[dict]], list[dict]]:
    """({algorithm: [run, ...]} for finished runs: run = {seed, summary, metrics}; [the unfinished ones:
    {algorithm, seed, reason}])."""
    out: dict[str, list[dict]] = {}
    missing = []
    for algo in algorithms:
        out[algo] = []
        for seed in seeds:
            run_dir = os.path.join(study_dir, algo, f"seed{seed}")
            path = os.path.join(run_dir, "summary.json")
            if not os.path.exists(path):
                missing.append({"algorithm": algo, "seed": seed, "reason": "no summary.json: not run yet, running, "
                                f"or failed (see {os.path.join(run_dir, 'job.log')})"})
                continue
            with open(path) as f:
                summary = json.load(f)
            out[algo].append({"seed": seed, "summary": summary, "metrics": read_metrics(run_dir)})
    return out, missing


def split_valid(runs: dict[str, list[dict]], max_no_signal_share: float) -> tuple[dict[str, list[dict]], list[dict]]:
    """(the valid runs per algorithm, [{algorithm, seed, reason}] of the finished runs that are no data point)."""
    valid, excluded = {}, []
    for algo, items in runs.items():
        valid[algo] = []
        for run in items:
            reason = invalid_reason(run["summary"], max_no_signal_share)
            if reason:
                excluded.append({"algorithm": algo, "seed": run["seed"], "reason": reason})
            else:
                valid[algo].append(run)
    return valid, excluded


def _stat(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()) if len(v) else None,
            "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def _last(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows[-LAST:] if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def _run_row(run: dict) -> dict:
    s, rows = run["summary"], run["metrics"]
    row = {"seed": run["seed"], "heldout_before": s["heldout_accuracy_before"],
           "heldout_after": s["heldout_accuracy_after"], "final_reward": _last(rows, "reward/mean"),
           "final_entropy": _last(rows, "entropy/mean"), "wall_s": s["wall_s"], "steps": s["steps"]}
    row["heldout_gain"] = row["heldout_after"] - row["heldout_before"]
    for q in QUADS:
        row[f"adv_mass_share/{q}"] = float(np.mean([r.get(f"quadrant/{q}/adv_mass_share",
                                                          r.get(f"quadrant/{q}/signal_share", 0.0)) for r in rows]))
    row["zero_token_share"] = float(np.mean([r.get("quadrant/zero/token_share", 0.0) for r in rows]))
    row["no_signal_steps"] = int(s.get("no_signal_steps") or 0)
    row["metrics"] = outcome_metrics(s, rows)
    row["checks"] = manipulation_checks(rows)
    return row


def _nested_stat(rows: list[dict], group: str, key: str) -> dict:
    """Mean ± std over the rows whose ``row[group][key]`` is not None; ``censored``: how many are None."""
    values = [r[group][key] for r in rows if r[group][key] is not None]
    return {**_stat(values), "censored": len(rows) - len(values)}


def aggregate(runs: dict[str, list[dict]]) -> dict:
    """{algorithm: {"runs": [row], "<field>": {mean, std, n}, "metrics": {metric: {mean, std, n, censored}},
    "checks": {...}}} (fields as in :func:`_run_row`)."""
    out = {}
    for algo, items in runs.items():
        rows = [_run_row(r) for r in items]
        out[algo] = {"runs": rows}
        fields = [k for k in (rows[0] if rows else {}) if k not in ("seed", "metrics", "checks")]
        for key in fields:
            out[algo][key] = _stat([r[key] for r in rows])
        for group in ("metrics", "checks"):
            out[algo][group] = {k: _nested_stat(rows, group, k) for k in (rows[0][group] if rows else {})}
    return out


def paired(agg: dict, contrasts: list[list[str]], metrics: list[str]) -> list[dict]:
    """One entry per (contrast, metric): arm − baseline paired by seed over valid runs (module docstring)."""
    out = []
    for arm, base in contrasts:
        rows = {a: {r["seed"]: r["metrics"] for r in agg.get(a, {}).get("runs", [])} for a in (arm, base)}
        both = sorted(set(rows[arm]) & set(rows[base]))
        for metric in metrics:
            values = {a: {s: rows[a][s][metric] for s in both} for a in (arm, base)}
            seeds, diffs = paired_differences(values[arm], values[base])
            censored = {side: sum(v is None for v in values[a].values())
                        for side, a in (("arm", arm), ("baseline", base))}
            out.append({"arm": arm, "baseline": base, "metric": metric, "unit": METRICS[metric][0],
                        **paired_summary(diffs), "seeds": seeds, "diffs": diffs, "censored": censored})
    return out


def read_wall(study_dir: str) -> dict:
    """``<study_dir>/study_wall.json`` (written by ``pipeline.study.StudyClock``): {"sessions": [...]}, and
    ``total_s``, the sum of the invocations' wall times."""
    try:
        with open(os.path.join(study_dir, "study_wall.json")) as f:
            sessions = json.load(f)["sessions"]
    except (OSError, ValueError, KeyError):
        sessions = []
    return {"sessions": sessions, "total_s": float(sum(s["wall_s"] for s in sessions))}


def write_report(study_dir: str, algorithms: list[str], seeds: list[int], contrasts: Optional[list[list[str]]] = None,
                 primary_metric: str = "heldout_auc", max_no_signal_share: float = 0.1,
                 command: Optional[str] = None, target_difference: float = 3.0) -> dict:
    """Write study.json, study.md and the plots. ``contrasts`` None: each later algorithm against the first;
    ``command``: what regenerates the study (written into both); ``target_difference``: the primary metric's
    difference worth detecting (each primary entry gets ``seeds_for_target``). Returns {"paths": {json, markdown,
    plot, quadrants, paired}, "excluded": [...], "wall_s": total}."""
    os.makedirs(study_dir, exist_ok=True)
    if contrasts is None:
        contrasts = [[a, algorithms[0]] for a in algorithms[1:]]
    finished, missing = collect(study_dir, algorithms, seeds)
    runs, excluded = split_valid(finished, max_no_signal_share)
    agg = aggregate(runs)
    metrics = [primary_metric] + [m for m in METRICS if m != primary_metric]
    entries = paired(agg, contrasts, metrics)
    for p in entries:
        if p["metric"] == primary_metric:
            p["target_difference"] = target_difference
            p["seeds_for_target"] = None if p["sd_diff"] is None else seeds_needed(p["sd_diff"], target_difference)
    wall = read_wall(study_dir)
    paths = {k: os.path.join(study_dir, f) for k, f in
             (("json", "study.json"), ("markdown", "study.md"), ("plot", "study.png"),
              ("quadrants", "study_quadrants.png"), ("paired", "study_paired.png"))}
    with open(paths["json"], "w") as f:
        json.dump({"command": command, "algorithms": algorithms, "seeds": seeds, "primary_metric": primary_metric,
                   "target_difference": target_difference,
                   "contrasts": contrasts, "max_no_signal_share": max_no_signal_share,
                   "metrics": {m: {"unit": u, "definition": w} for m, (u, w) in METRICS.items()},
                   "results": agg, "paired": entries, "excluded": excluded, "missing": missing,
                   "wall": wall}, f, indent=2)
    with open(paths["markdown"], "w") as f:
        f.write(markdown(agg, seeds, entries, primary_metric, excluded, missing, wall, command, target_difference))
    if any(runs.values()):
        plot(runs, paths["plot"], paths["quadrants"])
    if entries:
        plot_paired(entries, primary_metric, paths["paired"])
    return {"paths": paths, "excluded": excluded, "wall_s": wall["total_s"]}
