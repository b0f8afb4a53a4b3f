"""The report of a study: ``study.json``, ``study.md`` and three plots.

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
None: never reached for ``steps_to_80``, not measured otherwise). ``study.md`` leads with the pre-declared
primary metric's table.

Plots: ``study.png`` held-out accuracy against RL updates, token entropy and training reward against steps
(mean and ±1 std band over seeds); ``study_quadrants.png`` per algorithm each quadrant's gradient share over
steps (``grad_share``; the advantage-mass share in runs without it), mean over seeds, 5-step running mean;
``study_paired.png`` per contrast the per-seed differences of the primary metric (dots), their mean and 95% CI.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Optional

import numpy as np

from core.run_dir import read_metrics
from pipeline.report import heldout_curve
from pipeline.study_metrics import (LAST, METRICS, QUADS, invalid_reason, manipulation_checks,  # noqa: F401
                                    outcome_metrics)
from pipeline.study_stats import paired_differences, paired_summary

DIGITS = {"points": 2, "steps": 1, "nats": 4}


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
            censored = {side: sum(v is None for v in values[a].values()) for side, a in (("arm", arm), ("baseline", base))}
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


def _pm(stat: dict, scale: float = 1.0, digits: int = 1) -> str:
    if not stat or stat["n"] == 0:
        return "–"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _num(v: Optional[float], digits: int, sign: bool = False) -> str:
    return "–" if v is None else f"{v:{'+' if sign else ''}.{digits}f}"


def _paired_row(p: dict, with_metric: bool) -> str:
    d = DIGITS[p["unit"]]
    ci = "–" if p["ci95"] is None else f"[{p['ci95'][0]:+.{d}f}, {p['ci95'][1]:+.{d}f}]"
    cells = ([p["metric"]] if with_metric else []) + [p["arm"], p["baseline"], str(p["n"]),
                                                     _num(p["mean_diff"], d, True), ci, _num(p["mde80"], d)]
    if with_metric:
        cells.append(f"{p['censored']['arm']} / {p['censored']['baseline']}")
    return "| " + " | ".join(cells) + " |"


def detection_line(entries: list[dict], metric: str) -> str:
    """One line: the smallest true difference of ``metric`` the study detects with 80% power."""
    mdes = [p["mde80"] for p in entries if p["mde80"] is not None]
    unit = METRICS[metric][0]
    if not mdes:
        return f"Detection limit: not estimable yet (a contrast needs n >= 2 paired seeds)."
    ns = sorted({p["n"] for p in entries if p["mde80"] is not None})
    span = f"{min(mdes):.{DIGITS[unit]}f}" + (f"–{max(mdes):.{DIGITS[unit]}f}" if len(mdes) > 1 else "")
    return (f"Detection limit: at n = {'/'.join(map(str, ns))} seeds, a true difference in {metric} smaller than "
            f"{span} {unit} (mde80) is detected with less than 80% power (paired t, two-sided α = 0.05); a CI "
            f"that covers 0 is no evidence of equality below that size.")


def primary_section(entries: list[dict], primary: str) -> list[str]:
    unit, what = METRICS[primary]
    head = [f"## Primary metric (pre-declared): {primary} ({unit})", "", f"{what}; arm − baseline, paired by seed.",
            "", "| arm | baseline | n | mean diff | 95% CI | mde80 |", "|---|---|---|---|---|---|"]
    rows = [_paired_row(p, False) for p in entries if p["metric"] == primary]
    return head + rows + ["", detection_line([p for p in entries if p["metric"] == primary], primary), ""]


def secondary_section(entries: list[dict], primary: str) -> list[str]:
    lines = ["## Secondary metrics", "",
             "| metric | arm | baseline | n | mean diff | 95% CI | mde80 | censored (arm / baseline) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [_paired_row(p, True) for p in entries if p["metric"] != primary]
    defs = "; ".join(f"{m} ({u}): {w}" for m, (u, w) in METRICS.items() if m != primary)
    return lines + ["", f"Definitions: {defs}.", ""]


def metrics_section(agg: dict) -> list[str]:
    head = ["algorithm"] + [f"{m} ({METRICS[m][0]})" for m in METRICS]
    lines = ["## Outcome metrics per algorithm (mean ± std over valid seeds; censored in brackets)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo, a in agg.items():
        cells = [algo]
        for m in METRICS:
            st = a["metrics"].get(m)
            cell = _pm(st, 1, DIGITS[METRICS[m][0]]) if st else "–"
            cells.append(cell + (f" [{st['censored']}]" if st and st["censored"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def checks_section(agg: dict) -> list[str]:
    """Manipulation checks: one column per check any run logged."""
    present = [k for k in (next((a["checks"] for a in agg.values() if a["checks"]), {}))
               if any(a["checks"].get(k, {}).get("n") for a in agg.values())]
    if not present:
        return ["## Manipulation checks", "", "No run logged any (grad/cos_shaped_plain, clip_fraction, "
                "quadrant grad_share / adv_mass_share).", ""]
    lines = ["## Manipulation checks (mean over steps; mean ± std over seeds)", "",
             "| algorithm | " + " | ".join(present) + " |", "|" + "---|" * (len(present) + 1)]
    for algo, a in agg.items():
        lines.append("| " + " | ".join([algo] + [_pm(a["checks"].get(k), 1, 3) for k in present]) + " |")
    return lines + [""]


def overview_section(agg: dict, seeds: list[int]) -> list[str]:
    """The study table (mean ± std over the valid seeds) and one row per run."""
    head = ["algorithm", "seeds", "held-out before (%)", "held-out after (%)", "gain (points)",
            f"reward (last {LAST})", f"entropy (last {LAST})"] + [f"{q} adv mass" for q in QUADS] + ["A=0 tokens"]
    lines = ["## Per algorithm", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo, a in agg.items():
        n = a.get("heldout_after", {}).get("n", 0)
        cells = [algo, f"{n}/{len(seeds)}", _pm(a.get("heldout_before"), 100), _pm(a.get("heldout_after"), 100),
                 _pm(a.get("heldout_gain"), 100), _pm(a.get("final_reward"), 1, 3), _pm(a.get("final_entropy"), 1, 3)]
        cells += [_pm(a.get(f"adv_mass_share/{q}"), 1, 2) for q in QUADS] + [_pm(a.get("zero_token_share"), 1, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| algorithm | seed | held-out before (%) | held-out after (%) | gain (points) | "
              f"reward (last {LAST}) | steps | wall (s) |", "|---|---|---|---|---|---|---|---|"]
    for algo, a in agg.items():
        for r in a["runs"]:
            lines.append(f"| {algo} | {r['seed']} | {100 * r['heldout_before']:.1f} | {100 * r['heldout_after']:.1f} | "
                         f"{100 * r['heldout_gain']:+.1f} | {r['final_reward']:.3f} | {r['steps']} | {r['wall_s']:.0f} |")
    return lines + [""]


def markdown(agg: dict, seeds: list[int], entries: Optional[list[dict]] = None, primary: str = "heldout_auc",
             excluded: Optional[list[dict]] = None, missing: Optional[list[dict]] = None,
             wall: Optional[dict] = None, command: Optional[str] = None) -> str:
    """study.md: the command, primary metric, secondary metrics, outcome metrics, manipulation checks, the
    per-algorithm and per-run tables, the runs left out and the study's wall time."""
    lines = ["# Study", ""] + ([f"Regenerate: `{command}`", ""] if command else [])
    if entries is not None:
        lines += primary_section(entries, primary) + secondary_section(entries, primary)
    lines += metrics_section(agg) + checks_section(agg) + overview_section(agg, seeds)
    left_out = [("excluded", e) for e in excluded or []] + [("missing", e) for e in missing or []]
    if left_out:
        lines += ["## Runs left out of the statistics", ""]
        lines += [f"- {e['algorithm']} seed {e['seed']} ({kind}): {e['reason']}" for kind, e in left_out] + [""]
    if wall is not None:
        runs_s = sum(r["wall_s"] for a in agg.values() for r in a["runs"])
        lines += [f"Study wall time: {wall['total_s']:.0f} s over {len(wall['sessions'])} invocation(s) "
                  f"(sum of the valid runs' own wall times: {runs_s:.0f} s).", ""]
    return "\n".join(lines)


def _band(ax, xs, curves, label):
    arr = np.asarray(curves, dtype=np.float64)
    mean = np.nanmean(arr, axis=0)
    std = np.nanstd(arr, axis=0, ddof=1) if len(arr) > 1 else np.zeros_like(mean)
    line = ax.plot(xs, mean, label=f"{label} (n={len(arr)})")[0]
    ax.fill_between(xs, mean - std, mean + std, alpha=0.2, color=line.get_color())


def _aligned(runs: list[dict], key: str) -> tuple[list[int], list[list[float]]]:
    steps = min(len(r["metrics"]) for r in runs)
    xs = [r["step"] for r in runs[0]["metrics"][:steps]]
    return xs, [[row.get(key, np.nan) for row in r["metrics"][:steps]] for r in runs]


def _heldout_aligned(runs: list[dict]) -> tuple[list[int], list[list[float]]]:
    curves = [dict(zip(*heldout_curve(r["metrics"], (r["summary"]["steps"], r["summary"]["heldout_accuracy_after"]))))
              for r in runs]
    xs = sorted(set.intersection(*(set(c) for c in curves)))
    return xs, [[c[x] for x in xs] for c in curves]


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean that averages only the points inside the series at its edges; same length as
    ``values`` (a window longer than the series shrinks to it)."""
    window = max(1, min(window, len(values)))
    kernel = np.ones(window)
    return np.convolve(values, kernel, mode="same") / np.convolve(np.ones(len(values)), kernel, mode="same")


def _quadrant_kind(runs: list[dict]) -> str | None:
    """What the quadrant plot shows: grad_share when the runs logged it, else adv_mass_share (signal_share in
    older runs); None when they logged neither."""
    for kind in ("grad_share", "adv_mass_share", "signal_share"):
        if any(f"quadrant/{q}/{kind}" in row for r in runs for row in r["metrics"] for q in QUADS):
            return kind
    return None


def plot(runs: dict[str, list[dict]], path: str, quadrant_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = {a: r for a, r in runs.items() if r}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    panels = [("held-out greedy accuracy", "RL updates", _heldout_aligned),
              ("token entropy (old policy)", "step", lambda rs: _aligned(rs, "entropy/mean")),
              ("training reward", "step", lambda rs: _aligned(rs, "reward/mean"))]
    for ax, (title, xlabel, get) in zip(axes, panels):
        for algo, rs in done.items():
            xs, curves = get(rs)
            _band(ax, xs, curves, algo)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, max(1, len(done)), figsize=(4.2 * max(1, len(done)), 3.6), squeeze=False)
    for ax, (algo, rs) in zip(axes[0], done.items()):
        kind = _quadrant_kind(rs)
        for q in QUADS if kind else ():
            xs, curves = _aligned(rs, f"quadrant/{q}/{kind}")
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a step no run logged: NaN, not a warning
                mean = np.nanmean(np.asarray(curves, dtype=np.float64), axis=0)
            ax.plot(xs, _running_mean(mean, 5), label=q)
        ax.set_title(f"{algo}: {kind or 'no quadrant metrics'}")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        if kind:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(quadrant_path, dpi=90)
    plt.close(fig)


def plot_paired(entries: list[dict], primary: str, path: str) -> None:
    """Per contrast: the per-seed differences of ``primary`` (dots), their mean and 95% CI (bar), zero line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p for p in entries if p["metric"] == primary]
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(rows)), 4.0))
    ax.axhline(0.0, color="grey", lw=0.8)
    for i, p in enumerate(rows):
        jitter = np.linspace(-0.08, 0.08, len(p["diffs"])) if len(p["diffs"]) > 1 else np.zeros(len(p["diffs"]))
        ax.scatter(i - 0.15 + jitter, p["diffs"], s=14, alpha=0.7, color="C0")
        if p["mean_diff"] is not None:
            err = None if p["ci95"] is None else [[p["mean_diff"] - p["ci95"][0]], [p["ci95"][1] - p["mean_diff"]]]
            ax.errorbar([i + 0.15], [p["mean_diff"]], yerr=err, fmt="o", color="C3", capsize=4)
    ax.set_xticks(range(len(rows)), [f"{p['arm']}\n− {p['baseline']}\n(n={p['n']})" for p in rows], fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(f"{primary} difference ({METRICS[primary][0]})")
    ax.set_title(f"paired by seed: per-seed differences, mean and 95% CI ({primary})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(study_dir: str, algorithms: list[str], seeds: list[int], contrasts: Optional[list[list[str]]] = None,
                 primary_metric: str = "heldout_auc", max_no_signal_share: float = 0.1,
                 command: Optional[str] = None) -> dict:
    """Write study.json, study.md and the plots. ``contrasts`` None: each later algorithm against the first;
    ``command``: what regenerates the study (written into both). Returns {"paths": {json, markdown, plot, quadrants, paired}, "excluded": [...], "wall_s": total}."""
    os.makedirs(study_dir, exist_ok=True)
    if contrasts is None:
        contrasts = [[a, algorithms[0]] for a in algorithms[1:]]
    finished, missing = collect(study_dir, algorithms, seeds)
    runs, excluded = split_valid(finished, max_no_signal_share)
    agg = aggregate(runs)
    metrics = [primary_metric] + [m for m in METRICS if m != primary_metric]
    entries = paired(agg, contrasts, metrics)
    wall = read_wall(study_dir)
    paths = {k: os.path.join(study_dir, f) for k, f in
             (("json", "study.json"), ("markdown", "study.md"), ("plot", "study.png"),
              ("quadrants", "study_quadrants.png"), ("paired", "study_paired.png"))}
    with open(paths["json"], "w") as f:
        json.dump({"command": command, "algorithms": algorithms, "seeds": seeds, "primary_metric": primary_metric,
                   "contrasts": contrasts, "max_no_signal_share": max_no_signal_share,
                   "metrics": {m: {"unit": u, "definition": w} for m, (u, w) in METRICS.items()},
                   "results": agg, "paired": entries, "excluded": excluded, "missing": missing,
                   "wall": wall}, f, indent=2)
    with open(paths["markdown"], "w") as f:
        f.write(markdown(agg, seeds, entries, primary_metric, excluded, missing, wall, command))
    if any(runs.values()):
        plot(runs, paths["plot"], paths["quadrants"])
    if entries:
        plot_paired(entries, primary_metric, paths["paired"])
    return {"paths": paths, "excluded": excluded, "wall_s": wall["total_s"]}
