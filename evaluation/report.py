"""Evaluation outputs: results.json, a markdown table in the paper's layout and a bar chart."""
from __future__ import annotations

import json
from pathlib import Path

DISPLAY = {"aime24": "AIME24", "aime25": "AIME25", "amc23": "AMC", "math500": "MATH500",
           "minerva_math": "Minerva", "olympiadbench": "OlympiadBench", "gsm8k": "GSM8K"}


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _cell(m: dict) -> str:
    """``avg / pass``, plus how many problems were left out (prompt longer than the context, or rejected)."""
    left_out = m.get("skipped_too_long", 0) + m.get("rejected", 0)
    return f"{_pct(m['avg'])} / {_pct(m['pass'])}" + (f" ({left_out} skipped)" if left_out else "")


def markdown_table(results: dict) -> str:
    """One row per model: ``Avg@k / Pass@k`` per benchmark, then the average of the Avg@k."""
    benches = list(results["benchmarks"])
    header = ["Model"] + [
        f"{DISPLAY.get(b, b)} (Avg@{results['benchmarks'][b]['k']} / Pass@{results['benchmarks'][b]['k']})"
        for b in benches
    ] + ["Avg"]
    cells = [results["model"]] + [_cell(results["benchmarks"][b]) for b in benches] + [_pct(results["avg"])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(cells) + " |"]
    return "\n".join(lines) + "\n"


def bar_chart(results: dict, path: Path) -> None:
    """Grouped bars (Avg@k, Pass@k) per benchmark, written as PNG with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(results["benchmarks"])
    xs = range(len(benches))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(benches)), 4))
    avg = [results["benchmarks"][b]["avg"] or 0.0 for b in benches]
    pas = [results["benchmarks"][b]["pass"] or 0.0 for b in benches]
    ax.bar([x - 0.2 for x in xs], avg, width=0.4, label="Avg@k")
    ax.bar([x + 0.2 for x in xs], pas, width=0.4, label="Pass@k")
    ax.set_xticks(list(xs), [DISPLAY.get(b, b) for b in benches], rotation=20)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{results['model']}  (avg {_pct(results['avg'])})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(results: dict, out_dir: Path, plot: bool = True) -> dict:
    """Write results.json, results.md and (optionally) results.png; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(markdown_table(results))
    if plot:
        paths["png"] = out_dir / "results.png"
        bar_chart(results, paths["png"])
    return {k: str(v) for k, v in paths.items()}
