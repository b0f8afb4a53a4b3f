"""The study's statistics and per-run metrics against hand computation and tabulated values."""
from __future__ import annotations

import json
import math

import pytest

from pipeline.study_metrics import (heldout_auc, heldout_points, invalid_reason, manipulation_checks,
                                    outcome_metrics, steps_to)
from pipeline.study_stats import betainc, paired_differences, paired_summary, seeds_needed, t_cdf, t_quantile

# Student's t quantiles t_{p, df} as printed in t tables (6 digits; also checked against mpmath.betainc)
TABLE = [(0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 3, 3.182446), (0.975, 4, 2.776445),
         (0.975, 9, 2.262157), (0.975, 19, 2.093024), (0.975, 30, 2.042272), (0.975, 100, 1.983972),
         (0.80, 1, 1.376382), (0.80, 3, 0.978472), (0.80, 4, 0.940965), (0.80, 9, 0.883404), (0.80, 30, 0.853767),
         (0.95, 5, 2.015048), (0.995, 10, 3.169273)]


@pytest.mark.parametrize("p,df,expected", TABLE)
def test_t_quantile_matches_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-6)  # symmetric about 0


@pytest.mark.parametrize("p", [0.6, 0.8, 0.9, 0.975, 0.999])
def test_t_quantile_matches_the_closed_forms_of_one_and_two_degrees_of_freedom(p):
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)  # Cauchy
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


def test_incomplete_beta_and_t_cdf_closed_forms():
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2, 3, 0.4) == pytest.approx(6 * 0.4 ** 2 * 0.6 ** 2 + 4 * 0.4 ** 3 * 0.6 + 0.4 ** 4)  # binomial tail
    assert t_cdf(0.0, 7) == pytest.approx(0.5)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_paired_summary_by_hand():
    """diffs [1, 3, 2, 6]: mean 12/4 = 3; deviations -2, 0, -1, 3 -> squares 4 + 0 + 1 + 9 = 14, sd = sqrt(14/3);
    se = sd/2; t_{0.975,3} = 3.182446, t_{0.80,3} = 0.978472 (tables): CI 3 ± 3.182446·se, mde80 = 4.160918·se."""
    out = paired_summary([1, 3, 2, 6])
    sd = math.sqrt(14 / 3)
    se = sd / 2  # sqrt(n) = 2
    assert out["n"] == 4 and out["mean_diff"] == pytest.approx(3.0) and out["sd_diff"] == pytest.approx(sd)
    assert out["ci95"] == pytest.approx([3 - 3.182446 * se, 3 + 3.182446 * se], abs=1e-5)
    assert out["ci95"] == pytest.approx([-0.437435, 6.437435], abs=1e-5)
    assert out["mde80"] == pytest.approx((3.182446 + 0.978472) * se, abs=1e-5)
    assert out["mde80"] == pytest.approx(4.494306, abs=1e-5)


def test_seeds_needed_to_detect_a_target_difference():
    """sd 4, target 3 points: n = 15: (t_{0.975,14} + t_{0.80,14})·4/√15 = (2.144787 + 0.868055)·4/3.872983 = 3.1116
    > 3; n = 16: (2.131450 + 0.866245)·4/4 = 2.9977 <= 3 (tables) -> 16 seeds."""
    assert seeds_needed(4.0, 3.0) == 16
    assert seeds_needed(0.0, 3.0) == 2 and seeds_needed(40.0, 0.1, max_n=300) is None


def test_paired_summary_with_fewer_than_two_seeds():
    assert paired_summary([2.5]) == {"n": 1, "mean_diff": 2.5, "sd_diff": None, "ci95": None, "mde80": None}
    assert paired_summary([]) == {"n": 0, "mean_diff": None, "sd_diff": None, "ci95": None, "mde80": None}
    assert paired_summary([1.0, 1.0])["ci95"] == [1.0, 1.0] and paired_summary([1.0, 1.0])["mde80"] == 0.0


def test_paired_differences_keep_the_seeds_both_sides_have():
    seeds, diffs = paired_differences({0: 5.0, 1: None, 2: 7.0, 3: 1.0, 4: float("nan")},
                                      {0: 4.0, 1: 3.0, 2: 9.0, 4: 1.0, 5: 2.0})
    assert seeds == [0, 2] and diffs == [1.0, -2.0]


def curve_rows(points: dict[int, float], steps: int) -> list[dict]:
    """metrics.jsonl rows of ``steps`` steps, held-out accuracy logged at {weight_version: accuracy}."""
    rows = [{"step": s, "entropy/mean": 0.1 * s} for s in range(1, steps + 1)]
    for version, acc in points.items():
        rows[version].update({"heldout/accuracy": acc, "heldout/weight_version": float(version)})
    return rows


def test_heldout_auc_and_steps_to_80_by_hand():
    """before 0.2 (replaces the in-training point at version 0), 0.5 at 10, 0.85 at 20, after 0.9 at 30:
    trapezoids 10·(0.2+0.5)/2 + 10·(0.5+0.85)/2 + 10·(0.85+0.9)/2 = 3.5 + 6.75 + 8.75 = 19; /30 steps · 100
    = 63.333 points. First point >= 0.8: step 20."""
    summary = {"heldout_accuracy_before": 0.2, "heldout_accuracy_after": 0.9, "steps": 30}
    rows = curve_rows({0: 0.21, 10: 0.5, 20: 0.85}, 30)
    xs, ys = heldout_points(summary, rows)
    assert xs == [0, 10, 20, 30] and ys == [0.2, 0.5, 0.85, 0.9]
    m = outcome_metrics(summary, rows)
    assert m["heldout_auc"] == pytest.approx(100 * 19 / 30)
    assert m["steps_to_80"] == 20 and m["final_accuracy"] == pytest.approx(90.0)
    assert m["final_entropy"] == pytest.approx(sum(0.1 * s for s in range(21, 31)) / 10)  # last 10 steps
    assert m["pass_at_k"] is None and m["avg_at_k"] is None  # not measured


def test_a_curve_that_never_reaches_80_is_censored_not_invented():
    assert steps_to([0, 10, 20], [0.2, 0.79, 0.7]) is None
    assert steps_to([0, 10], [0.85, 0.9]) == 0
    assert heldout_auc([0], [0.5]) is None and heldout_auc([0, 5], [0.2, float("nan")]) is None
    summary = {"heldout_accuracy_before": 0.2, "heldout_accuracy_after": 0.6, "steps": 4,
               "heldout_pass_at_k_after": 0.75, "heldout_avg_at_k_after": 0.5}
    m = outcome_metrics(summary, curve_rows({}, 4))
    assert m["steps_to_80"] is None and m["heldout_auc"] == pytest.approx(100 * (0.2 + 0.6) / 2)
    assert m["pass_at_k"] == pytest.approx(75.0) and m["avg_at_k"] == pytest.approx(50.0)


def test_manipulation_checks_average_over_steps_and_read_the_old_name():
    rows = [{"grad/cos_shaped_plain": 0.9, "quadrant/PHR/signal_share": 0.2, "quadrant/PHR/grad_share": 0.1},
            {"grad/cos_shaped_plain": 0.7, "clip_fraction": 0.4, "quadrant/PHR/adv_mass_share": 0.4}]
    c = manipulation_checks(rows)
    assert c["grad/cos_shaped_plain"] == pytest.approx(0.8) and c["clip_fraction"] == pytest.approx(0.4)
    assert c["quadrant/PHR/adv_mass_share"] == pytest.approx(0.3)  # 0.2 (old name) and 0.4
    assert c["quadrant/PHR/grad_share"] == pytest.approx(0.1)
    assert c["quadrant/NHR/grad_share"] is None and c["quadrant/NHR/adv_mass_share"] is None  # not logged


def test_a_run_that_trained_on_nothing_is_no_data_point():
    assert invalid_reason({"steps": 20}, 0.1) is None  # absent key: 0 skipped steps
    assert invalid_reason({"steps": 20, "no_signal_steps": 2}, 0.1) is None  # 2 <= 0.1 * 20
    reason = invalid_reason({"steps": 20, "no_signal_steps": 3}, 0.1)
    assert "3 of 20 steps" in reason and "max_no_signal_share=0.1" in reason
    assert invalid_reason({"steps": 20, "no_signal_steps": 20}, 1.0) is None


def fake_curve_run(root, algo, seed, before, points, after, steps=20, **summary):
    d = root / algo / f"seed{seed}"
    d.mkdir(parents=True)
    rows = curve_rows(points, steps)
    for r in rows:
        r.update({"reward/mean": 0.5, "quadrant/zero/token_share": 0.0})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"heldout_accuracy_before": before, "heldout_accuracy_after": after,
                                                "steps": steps, "wall_s": 5.0, **summary}))


def test_report_pairs_by_seed_and_leaves_out_invalid_runs(tmp_path):
    """4 seeds: eapo's AUC exceeds dapo's by [1, 3, 2, 6] points on seeds 0-3 (the hand-computed diffs above);
    seed 4's eapo run trained on nothing (3 of 20 steps without signal) and drops out with its pair."""
    from pipeline.study_report import write_report

    for seed, diff in enumerate([1, 3, 2, 6, 50]):
        # a flat curve at a (before = logged = after) has AUC 100·a; a 0.8 crossing only for eapo on even seeds
        base = 0.3 + 0.01 * seed
        fake_curve_run(tmp_path, "dapo", seed, base, {10: base}, base)
        arm = base + diff / 100
        extra = {"no_signal_steps": 3} if seed == 4 else {"no_signal_steps": 2}
        fake_curve_run(tmp_path, "eapo", seed, arm, {10: 0.85 if seed % 2 == 0 else arm}, arm, **extra)
    out = write_report(str(tmp_path), ["dapo", "eapo"], [0, 1, 2, 3, 4, 5], [["eapo", "dapo"]])
    assert [(e["algorithm"], e["seed"]) for e in out["excluded"]] == [("eapo", 4)]
    study = json.loads((tmp_path / "study.json").read_text())
    assert [(m["algorithm"], m["seed"]) for m in study["missing"]] == [("dapo", 5), ("eapo", 5)]
    entries = {p["metric"]: p for p in study["paired"]}
    auc = entries["heldout_auc"]
    assert auc["seeds"] == [0, 1, 2, 3] and auc["n"] == 4
    arms = [0.3 + 0.01 * s + d / 100 for s, d in enumerate([1, 3, 2, 6])]
    bump = [100 * (0.85 - a) * 10 / 20 if s % 2 == 0 else 0.0 for s, a in enumerate(arms)]  # two trapezoids
    assert auc["diffs"] == pytest.approx([d + b for d, b in zip([1, 3, 2, 6], bump)])
    final = entries["final_accuracy"]  # no bump at the end: exactly the hand-computed diffs
    assert final["diffs"] == pytest.approx([1, 3, 2, 6]) and final["mean_diff"] == pytest.approx(3.0)
    assert final["ci95"] == pytest.approx([-0.437435, 6.437435], abs=1e-5)
    assert final["mde80"] == pytest.approx(4.494306, abs=1e-5)
    steps = entries["steps_to_80"]  # dapo never reaches 0.8: every pair censored on the baseline side
    assert steps["n"] == 0 and steps["censored"] == {"arm": 2, "baseline": 4} and steps["mean_diff"] is None
    md = (tmp_path / "study.md").read_text()
    assert md.index("Primary metric (pre-declared): heldout_auc") < md.index("Secondary metrics")
    assert "| final_accuracy | eapo | dapo | 4 | +3.00 | [-0.44, +6.44] | 4.49 | 0 / 0 |" in md
    assert auc["target_difference"] == 3.0 and auc["seeds_for_target"] == seeds_needed(auc["sd_diff"], 3.0)
    assert f"| 4 | {auc['mean_diff']:+.2f} |" in md and "seeds to detect 3 points |" in md
    assert "Detection limit: at n = 4 seeds" in md and "eapo seed 4 (excluded): 3 of 20 steps" in md
    assert (tmp_path / "study_paired.png").stat().st_size > 10_000
