"""study.md of a study (:mod:`pipeline.study_report` computes what it shows): the command that regenerates it,
the pre-declared primary metric's paired table with its detection limit, the secondary metrics, the outcome
metrics and manipulation checks per algorithm, the per-algorithm and per-run tables, the runs left out and
the study's wall time."""
from __future__ import annotations

from typing import Optional

from pipeline.study_metrics import LAST, METRICS, QUADS

DIGITS = {"points": 2, "steps": 1, "nats": 4}


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
    else:
        cells.append("–" if p["sd_diff"] is None else str(p["seeds_for_target"] or "> 10000"))
    return "| " + " | ".join(cells) + " |"


def detection_line(entries: list[dict], metric: str) -> str:
    """One line: the smallest true difference of ``metric`` the study detects with 80% power."""
    mdes = [p["mde80"] for p in entries if p["mde80"] is not None]
    unit = METRICS[metric][0]
    if not mdes:
        return "Detection limit: not estimable yet (a contrast needs n >= 2 paired seeds)."
    ns = sorted({p["n"] for p in entries if p["mde80"] is not None})
    span = f"{min(mdes):.{DIGITS[unit]}f}" + (f"–{max(mdes):.{DIGITS[unit]}f}" if len(mdes) > 1 else "")
    return (f"Detection limit: at n = {'/'.join(map(str, ns))} seeds, a true difference in {metric} smaller than "
            f"{span} {unit} (mde80) is detected with less than 80% power (paired t, two-sided α = 0.05); a CI "
            f"that covers 0 is no evidence of equality below that size.")


def primary_section(entries: list[dict], primary: str, target: float) -> list[str]:
    """The primary metric's table (one row per contrast) and the detection-limit line."""
    unit, what = METRICS[primary]
    rows = [p for p in entries if p["metric"] == primary]
    head = [f"## Primary metric (pre-declared): {primary} ({unit})", "", f"{what}; arm − baseline, paired by seed.",
            "", f"| arm | baseline | n | mean diff | 95% CI | mde80 | seeds to detect {target:g} {unit} |",
            "|---|---|---|---|---|---|---|"]
    return head + [_paired_row(p, False) for p in rows] + ["", detection_line(rows, primary), ""]


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
             wall: Optional[dict] = None, command: Optional[str] = None, target: float = 3.0) -> str:
    """study.md: the command, primary metric, secondary metrics, outcome metrics, manipulation checks, the
    per-algorithm and per-run tables, the runs left out and the study's wall time."""
    lines = ["# Study", ""] + ([f"Regenerate: `{command}`", ""] if command else [])
    if entries is not None:
        lines += primary_section(entries, primary, target) + secondary_section(entries, primary)
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
