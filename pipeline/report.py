"""End-of-run plot of the training curves (reward, held-out accuracy, entropy, quadrants, time)."""
from __future__ import annotations

import os

QUADRANT_KEYS = [f"quadrant/{q}/token_share" for q in ("PHR", "PLR", "NLR", "NHR", "zero")]


def heldout_curve(rows: list[dict], final: tuple[int, float] | None = None) -> tuple[list[int], list[float]]:
    """(RL updates, held-out greedy accuracy) points: in-training measurements plus the final one.

    A measurement logged with step s was taken on the weights of ``heldout/weight_version``
    (= s − 1 on-policy), i.e. after that many updates.
    """
    points = {int(r["heldout/weight_version"]): r["heldout/accuracy"] for r in rows if "heldout/accuracy" in r}
    if final is not None:
        points[int(final[0])] = final[1]
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def plot_training_curves(rows: list[dict], path: str, heldout_final: tuple[int, float] | None = None) -> str | None:
    """Write a 2x3 PNG of the per-step metrics in ``rows`` to ``path``; None if there is nothing to plot."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    panels = [
        ("training reward (step's own prompts)", ["reward/mean", "reward/accuracy"]),
        ("token entropy (old policy)", ["entropy/mean"]),
        ("quadrant token share (zero: A = 0, of all tokens)", QUADRANT_KEYS),
        ("dynamic sampling", ["dynamic_sampling/filtered_share", "dynamic_sampling/unfilled_share"]),
        ("seconds", ["timing/step_s", "timing/rollout_s", "timing/train_s"]),
    ]
    flat = list(axes.flat)
    xs, ys = heldout_curve(rows, heldout_final)
    flat[1].plot(xs, ys, marker="o")
    flat[1].set_title("held-out greedy accuracy")
    flat[1].set_xlabel("RL updates")
    flat[1].set_ylim(0, 1)
    for ax, (title, keys) in zip([flat[0]] + flat[2:], panels):
        for key in keys:
            ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=key.split("/", 1)[-1])
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
