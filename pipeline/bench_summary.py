"""What ``pipeline.bench`` reports of a run's step rows: pure functions over ``metrics.jsonl``-shaped dicts.

A *steady* step is one after the first ``warmup``; a *counted* step is a steady step that trained tokens
(``train/tokens_trained`` > 0). Steps that trained on nothing (every group's rewards equal, dynamic sampling out
of rounds: ``train/no_signal``) time a pipeline that did no learning, so every figure is taken over the counted
steps only; ``no_signal_steps`` says how many steady steps were left out for that reason. The same rows and the
same rule serve the pipeline's settings and the in-run baseline (``pipeline.bench_baseline``), whose rows carry
the same keys.

Figures of one setting (:func:`summarise`, :func:`summarise_baseline`):

* ``median_s``: the median of each timed stage (``timing/*``) over the counted steps;
* ``tokens_generated``, ``tokens_trained``, ``groups_kept``: median per step and total over the counted steps
  (``rollout/tokens_generated``: every sampling round; ``train/tokens_trained``: response tokens with non-zero
  credit; ``dynamic_sampling/kept_groups``: groups that entered the loss);
* ``rollout_rounds``: sampling rounds per step (1 + ``dynamic_sampling/extra_rounds``), median and max;
* ``gen_tokens_per_s`` = total tokens generated / total ``rollout_s``; ``train_tokens_per_s`` = total tokens
  trained / total ``train_s`` (over the counted steps);
* :func:`ratio_to_baseline` = the setting's median step / the baseline's median step (below 1: faster).
"""
from __future__ import annotations

import statistics

STAGES = ("rollout_s", "reward_s", "train_s", "weight_sync_s", "step_s", "weight_wait_s", "data_wait_s",
          "handoff_s", "log_s")


def counted(rows: list[dict], warmup: int) -> tuple[list[dict], list[dict]]:
    """(steady rows, counted rows): the rows after the first ``warmup``; of those, the ones that trained tokens."""
    steady = rows[warmup:]
    return steady, [r for r in steady if r.get("train/tokens_trained", 0.0) > 0]


def _median_total(rows: list[dict], key: str) -> dict:
    values = [r.get(key, 0.0) for r in rows]
    return {"median": statistics.median(values), "total": sum(values)}


def work(rows: list[dict]) -> dict:
    """Work figures of the counted ``rows`` (module docstring); ``{}`` when there are none."""
    if not rows:
        return {}
    rounds = [1 + r.get("dynamic_sampling/extra_rounds", 0.0) for r in rows]
    generated, trained = _median_total(rows, "rollout/tokens_generated"), _median_total(rows, "train/tokens_trained")
    rollout_s = sum(r["timing/rollout_s"] for r in rows)
    train_s = sum(r["timing/train_s"] for r in rows)
    return {
        "tokens_generated": generated, "tokens_trained": trained,
        "groups_kept": _median_total(rows, "dynamic_sampling/kept_groups"),
        "rollout_rounds": {"median": statistics.median(rounds), "max": max(rounds)},
        "gen_tokens_per_s": round(generated["total"] / rollout_s, 1) if rollout_s else None,
        "train_tokens_per_s": round(trained["total"] / train_s, 1) if train_s else None,
    }


def medians(rows: list[dict]) -> dict:
    """Median seconds of every timed stage present in the counted ``rows``."""
    return {k: round(statistics.median(r[f"timing/{k}"] for r in rows), 4) for k in STAGES if f"timing/{k}" in rows[0]}


def summarise(rows: list[dict], staleness: int, warmup: int) -> dict:
    """One pipeline setting: stage medians, overhead and the ratio to its slowest stage(s) (``pipeline.bench``'s
    docstring) and the work figures, all over the counted steps. With no counted step only the counts."""
    steady, used = counted(rows, warmup)
    out = {"setting": "pipeline", "staleness": staleness, "steady_steps": len(steady), "counted_steps": len(used),
           "no_signal_steps": int(sum(r.get("train/no_signal", 0.0) for r in steady))}
    if not used:
        return out
    med = medians(used)
    stages = med["rollout_s"] + med["reward_s"] + med["train_s"] + med["weight_sync_s"]
    bound = stages if staleness == 0 else max(med["rollout_s"] + med["reward_s"], med["train_s"])
    return {**out, "median_s": med, "overhead_s": round(med["step_s"] - stages, 4),
            "overhead_share": round(1 - stages / med["step_s"], 4), "ratio": round(med["step_s"] / bound, 4),
            "ratio_to": "sum of stages" if staleness == 0 else "max(rollout + reward, train)",
            "weight_version_lag": statistics.median(r["rollout/weight_version_lag"] for r in used), **work(used)}


def summarise_baseline(rows: list[dict], warmup: int, threads: int) -> dict:
    """The in-run baseline's figures (same rule and keys as :func:`summarise`, no pipeline overhead)."""
    steady, used = counted(rows, warmup)
    out = {"setting": "baseline", "what": "HF generate + token-mean policy gradient + AdamW, one process",
           "threads": threads, "steady_steps": len(steady), "counted_steps": len(used),
           "no_signal_steps": len(steady) - len(used)}
    return {**out, "median_s": medians(used), **work(used)} if used else out


def ratio_to_baseline(setting: dict, baseline: dict) -> float | None:
    """The setting's median step over the baseline's (from the two summaries); None when either has no
    counted step."""
    if "median_s" not in setting or not baseline.get("median_s"):
        return None
    return round(setting["median_s"]["step_s"] / baseline["median_s"]["step_s"], 4)


def nothing_trained(summaries: list[dict]) -> str | None:
    """The bench's failure message when a summary has no counted step (no steady step trained a token), else None."""
    empty = [s for s in summaries if not s["counted_steps"]]
    if not empty:
        return None
    names = ", ".join(f"staleness={s['staleness']}" if s["setting"] == "pipeline" else "the baseline" for s in empty)
    steady = empty[0]["steady_steps"]
    return (f"no steady step of {names} trained a token ({steady} steady step(s), train/tokens_trained = 0): the "
            "figures would time steps that learn nothing. Use a workload whose responses fit rollout.max_tokens and "
            "whose groups have unequal rewards (the console's WARNING lines name the likely cause)")
