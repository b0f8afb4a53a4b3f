"""The study command: grid, resumability, the report's numbers (against hand computation), the real thing."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from pipeline import study
from pipeline.config import ConfigError
from pipeline.study_report import LAST, write_report
from tests.conftest import REPO


def study_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs" / "study"), version_base=None):
        return study.load(compose(config_name="study", overrides=list(overrides)))


def test_default_grids_are_the_issues():
    assert study_cfg().algorithms == ["grpo", "dapo", "eapo"]
    assert study_cfg("grid=ablation").algorithms == ["eapo", "eapo_wo_phr", "eapo_wo_plr", "eapo_wo_nlr", "eapo_wo_nhr"]
    assert study_cfg("grid=isolation").algorithms == ["quadrant_phr", "quadrant_plr", "quadrant_nlr", "quadrant_nhr"]
    assert study_cfg("algorithms=[grpo,eapo]", "seeds=[3]").algorithms == ["grpo", "eapo"]


@pytest.mark.parametrize("override,field", [("grid=nope", "grid"), ("algorithms=[nope]", "algorithms"),
                                            ("seeds=[1,1]", "seeds"), ("launcher=slurm", "launcher"),
                                            ("max_concurrent=0", "max_concurrent")])
def test_bad_study_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        study_cfg(override)


def test_plan_and_resumability(tmp_path):
    c = study_cfg(f"study_dir={tmp_path}", "algorithms=[grpo,eapo]", "seeds=[0,1]", 'overrides=["trainer.total_steps=3"]')
    runs = study.plan(c)
    assert [(r.algorithm, r.seed) for r in runs] == [("grpo", 0), ("eapo", 0), ("grpo", 1), ("eapo", 1)]
    assert runs[0].args == ["algorithm=grpo", "seed=0", f"run_dir={tmp_path}/grpo/seed0", "trainer.total_steps=3"]
    run = runs[0]
    assert not study.is_finished(run)
    study._mark_started(run)
    (tmp_path / "grpo" / "seed0" / "summary.json").write_text("{}")
    assert study.is_finished(run)
    other = study.Run(run.algorithm, run.seed, run.run_dir, run.args[:-1] + ["trainer.total_steps=4"])
    assert not study.is_finished(other)  # other arguments: the run is redone (and resumes its checkpoints)
    study._mark_started(other)
    assert not (tmp_path / "grpo" / "seed0" / "summary.json").exists()


def fake_run(root, algo, seed, before, after, rewards, entropy, signal):
    d = root / algo / f"seed{seed}"
    d.mkdir(parents=True)
    rows = []
    for i, (r, h) in enumerate(zip(rewards, entropy)):
        row = {"step": i + 1, "reward/mean": r, "entropy/mean": h, "quadrant/zero/token_share": 0.5}
        row.update({f"quadrant/{q}/signal_share": s for q, s in zip(("PHR", "PLR", "NLR", "NHR"), signal)})
        if i % 5 == 0:
            row.update({"heldout/accuracy": before + (after - before) * i / len(rewards), "heldout/weight_version": i})
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"heldout_accuracy_before": before, "heldout_accuracy_after": after,
                                                "steps": len(rewards), "wall_s": 10.0}))


def test_report_numbers_match_hand_computation(tmp_path):
    r0, r1 = list(np.linspace(0, 1, 20)), list(np.linspace(0, 0.5, 20))
    fake_run(tmp_path, "eapo", 0, 0.2, 0.9, r0, [1.0] * 20, (0.4, 0.1, 0.2, 0.3))
    fake_run(tmp_path, "eapo", 1, 0.3, 0.6, r1, [0.5] * 20, (0.2, 0.3, 0.2, 0.3))
    fake_run(tmp_path, "grpo", 0, 0.25, 0.5, r1, [0.1] * 20, (0.25, 0.25, 0.25, 0.25))
    paths = write_report(str(tmp_path), ["grpo", "eapo", "dapo"], [0, 1])
    res = json.loads((tmp_path / "study.json").read_text())["results"]
    e = res["eapo"]
    assert e["heldout_after"]["mean"] == pytest.approx(0.75) and e["heldout_after"]["n"] == 2
    assert e["heldout_after"]["std"] == pytest.approx(np.std([0.9, 0.6], ddof=1))
    assert e["heldout_gain"]["mean"] == pytest.approx((0.7 + 0.3) / 2)
    assert e["final_reward"]["mean"] == pytest.approx((np.mean(r0[-LAST:]) + np.mean(r1[-LAST:])) / 2)
    assert e["signal_share/PHR"]["mean"] == pytest.approx(0.3) and e["final_entropy"]["mean"] == pytest.approx(0.75)
    assert res["grpo"]["heldout_after"]["n"] == 1 and res["grpo"]["heldout_after"]["std"] == 0.0
    assert res["dapo"]["runs"] == []
    md = (tmp_path / "study.md").read_text()
    assert "| eapo | 2/2 | 25.0 ± 7.1 | 75.0 ± 21.2 | 50.0 ± 28.3 |" in md and "| dapo | 0/2 | – |" in md
    assert f"| eapo | 0 | 20.0 | 90.0 | +70.0 | {np.mean(r0[-LAST:]):.3f} | 20 | 10 |" in md
    for key in ("plot", "quadrants"):
        assert (tmp_path / paths[key].split("/")[-1]).stat().st_size > 10_000


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 9])
def test_running_mean_averages_the_points_inside_the_series(n):
    from pipeline.study_report import _running_mean

    values = np.random.default_rng(n).normal(size=n)
    w = min(5, n)  # a window longer than the series shrinks to it; point i averages [i - w//2, i + (w-1)//2]
    expected = [np.mean(values[max(0, i - w // 2):i + (w - 1) // 2 + 1]) for i in range(n)]
    got = _running_mean(values, 5)
    assert got.shape == (n,)
    assert np.allclose(got, expected)


def test_a_report_of_runs_shorter_than_the_smoothing_window(tmp_path):
    """3-step runs (the CI grid): the quadrant plot's smoothing must keep the series' length."""
    fake_run(tmp_path, "eapo", 0, 0.2, 0.3, [0.1, 0.2, 0.3], [1.0] * 3, (0.4, 0.1, 0.2, 0.3))
    paths = write_report(str(tmp_path), ["eapo"], [0])
    assert (tmp_path / paths["quadrants"].split("/")[-1]).stat().st_size > 10_000


@pytest.mark.slow
def test_study_command_runs_a_small_grid_and_resumes(tmp_path):
    """2 algorithms x 2 seeds x 3 steps of the real job, then the same command again skips them all."""
    cmd = [sys.executable, "-m", "pipeline.study", f"study_dir={tmp_path}", "algorithms=[grpo,eapo]", "seeds=[0,1]",
           "run_timeout_s=300", "--", "trainer.total_steps=3", "trainer.save_every=3", "heldout.size=16",
           "heldout.every=2"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    logs = "".join(f"\n--- {log}\n" + log.read_text()[-3000:] for log in sorted(tmp_path.glob("*/seed*/job.log")))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:] + logs
    res = json.loads((tmp_path / "study.json").read_text())["results"]
    for algo in ("grpo", "eapo"):
        assert res[algo]["heldout_after"]["n"] == 2 and [r["steps"] for r in res[algo]["runs"]] == [3, 3]
    assert "| grpo | 2/2 |" in (tmp_path / "study.md").read_text()
    assert (tmp_path / "study.png").stat().st_size > 10_000 and (tmp_path / "study_quadrants.png").stat().st_size > 10_000
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 already finished, 0 to go" in again.stdout
