"""The plots of a study: ``study.png`` held-out accuracy against RL updates, token entropy and training reward
against steps (mean and ±1 std band over seeds); ``study_quadrants.png`` per algorithm each quadrant's gradient
share over steps (``grad_share``; the advantage-mass share in runs without it), mean over seeds, 5-step running
mean; ``study_paired.png`` per contrast the per-seed differences of the primary metric (dots), their mean and
95% CI."""
from __future__ import annotations

import warnings

import numpy as np

from pipeline.report import heldout_curve
from pipeline.study_metrics import METRICS, QUADS


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
