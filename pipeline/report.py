"""End-of-run plot of the training curves (reward, entropy, quadrant token shares, step time)."""
from __future__ import annotations

import os


def plot_training_curves(rows: list[dict], path: str) -> str | None:
    """Write a 2x2 PNG of the per-step metrics in ``rows`` to ``path``; None if there is nothing to plot."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("reward", ["reward/mean"]),
        ("token entropy (old policy)", ["entropy/mean"]),
        ("quadrant token share", [f"quadrant/{q}/token_share" for q in ("PHR", "PLR", "NLR", "NHR")]),
        ("seconds", ["timing/step_s", "timing/rollout_s", "timing/train_s"]),
    ]
    for ax, (title, keys) in zip(axes.flat, panels):
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
