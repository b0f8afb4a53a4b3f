"""The report of a study: ``study.json``, ``study.md`` (mean ± std over seeds) and two plots.

Per algorithm, over the seeds whose run finished (std is the sample std, ddof = 1):
held-out greedy accuracy before and after RL and their difference; final training reward and token
entropy (means over the last ``LAST`` steps); the share of the policy-gradient signal each quadrant
carried (mean over all steps; quadrants as in ALGORITHM.md, over Â ≠ 0 tokens) and the share of
zero-advantage tokens; wall time. ``study.png``: held-out accuracy against RL updates, token entropy
and training reward against steps, mean line and ±1 std band over seeds. ``study_quadrants.png``:
per algorithm, each quadrant's signal share over steps (mean over seeds, 5-step running mean).
"""
from __future__ import annotations

import json
import os

import numpy as np

from pipeline.report import heldout_curve
from core.run_dir import read_metrics

LAST = 10
QUADS = ("PHR", "PLR", "NLR", "NHR")


def collect(study_dir: str, algorithms: list[str], seeds: list[int]) -> dict[str, list[dict]]:
    """{algorithm: [run, ...]} for finished runs: run = {seed, summary, metrics}."""
    out: dict[str, list[dict]] = {}
    for algo in algorithms:
        out[algo] = []
        for seed in seeds:
            run_dir = os.path.join(study_dir, algo, f"seed{seed}")
            path = os.path.join(run_dir, "summary.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                summary = json.load(f)
            out[algo].append({"seed": seed, "summary": summary, "metrics": read_metrics(run_dir)})
    return out


def _stat(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
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
        row[f"signal_share/{q}"] = float(np.mean([r.get(f"quadrant/{q}/signal_share", 0.0) for r in rows]))
    row["zero_token_share"] = float(np.mean([r.get("quadrant/zero/token_share", 0.0) for r in rows]))
    return row


def aggregate(runs: dict[str, list[dict]]) -> dict:
    """{algorithm: {"runs": [row], "<field>": {mean, std, n}}} (fields as in :func:`_run_row`)."""
    out = {}
    for algo, items in runs.items():
        rows = [_run_row(r) for r in items]
        out[algo] = {"runs": rows}
        fields = [k for k in (rows[0] if rows else {}) if k != "seed"]
        for key in fields:
            out[algo][key] = _stat([r[key] for r in rows])
    return out


def _pm(stat: dict, scale: float = 1.0, digits: int = 1) -> str:
    if not stat or stat["n"] == 0:
        return "–"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def markdown(agg: dict, seeds: list[int]) -> str:
    """The study table: one row per algorithm (mean ± std over the finished seeds)."""
    head = ["algorithm", "seeds", "held-out before (%)", "held-out after (%)", "gain (points)",
            f"reward (last {LAST})", f"entropy (last {LAST})"] + [f"{q} signal" for q in QUADS] + ["A=0 tokens"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo, a in agg.items():
        n = a.get("heldout_after", {}).get("n", 0)
        cells = [algo, f"{n}/{len(seeds)}", _pm(a.get("heldout_before"), 100), _pm(a.get("heldout_after"), 100),
                 _pm(a.get("heldout_gain"), 100), _pm(a.get("final_reward"), 1, 3), _pm(a.get("final_entropy"), 1, 3)]
        cells += [_pm(a.get(f"signal_share/{q}"), 1, 2) for q in QUADS] + [_pm(a.get("zero_token_share"), 1, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| algorithm | seed | held-out before (%) | held-out after (%) | gain (points) | "
              f"reward (last {LAST}) | steps | wall (s) |", "|---|---|---|---|---|---|---|---|"]
    for algo, a in agg.items():
        for r in a["runs"]:
            lines.append(f"| {algo} | {r['seed']} | {100 * r['heldout_before']:.1f} | {100 * r['heldout_after']:.1f} | "
                         f"{100 * r['heldout_gain']:+.1f} | {r['final_reward']:.3f} | {r['steps']} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


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
        for q in QUADS:
            xs, curves = _aligned(rs, f"quadrant/{q}/signal_share")
            mean = np.nanmean(np.asarray(curves, dtype=np.float64), axis=0)
            smooth = _running_mean(mean, 5)
            ax.plot(xs, smooth, label=q)
        ax.set_title(f"{algo}: signal share")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(quadrant_path, dpi=90)
    plt.close(fig)


def write_report(study_dir: str, algorithms: list[str], seeds: list[int]) -> dict[str, str]:
    """Write study.json, study.md, study.png and study_quadrants.png; returns their paths."""
    os.makedirs(study_dir, exist_ok=True)
    runs = collect(study_dir, algorithms, seeds)
    agg = aggregate(runs)
    paths = {k: os.path.join(study_dir, f) for k, f in
             (("json", "study.json"), ("markdown", "study.md"), ("plot", "study.png"),
              ("quadrants", "study_quadrants.png"))}
    with open(paths["json"], "w") as f:
        json.dump({"algorithms": algorithms, "seeds": seeds, "results": agg}, f, indent=2)
    with open(paths["markdown"], "w") as f:
        f.write(markdown(agg, seeds))
    if any(runs.values()):
        plot(runs, paths["plot"], paths["quadrants"])
    return paths
