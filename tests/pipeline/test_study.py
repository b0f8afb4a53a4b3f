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
    assert study_cfg("grid=confirmatory").algorithms == ["dapo", "eapo", "eapo_strong", "eapo_reversed"]
    assert study_cfg("grid=confirmatory").contrasts[:2] == [["eapo_strong", "dapo"], ["eapo_strong", "eapo_reversed"]]
    assert study_cfg("grid=dose").algorithms == ["dapo", "eapo", "eapo_mid", "eapo_strong"]
    assert study_cfg("algorithms=[grpo,eapo]", "seeds=[3]").algorithms == ["grpo", "eapo"]


@pytest.mark.parametrize("override,field", [("grid=nope", "grid"), ("algorithms=[nope]", "algorithms"),
                                            ("seeds=[1,1]", "seeds"), ("launcher=slurm", "launcher"),
                                            ("max_concurrent=0", "max_concurrent")])
def test_bad_study_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        study_cfg(override)


def test_contrasts_are_pre_declared_per_grid_or_given():
    assert study_cfg().contrasts == [["eapo", "dapo"], ["eapo", "grpo"], ["dapo", "grpo"]]
    assert study_cfg("grid=ablation").contrasts[0] == ["eapo_wo_phr", "eapo"]
    assert study_cfg("algorithms=[grpo,eapo,dapo]").contrasts == [["eapo", "grpo"], ["dapo", "grpo"]]  # vs the first
    assert study_cfg("algorithms=[grpo,eapo]", "contrasts=[[grpo,eapo]]").contrasts == [["grpo", "eapo"]]
    c = study_cfg()
    assert c.primary_metric == "heldout_auc" and c.max_no_signal_share == 0.1


@pytest.mark.parametrize("overrides,field", [
    (["contrasts=[[eapo,gspo]]"], "contrasts[0]"),  # not in the study
    (["contrasts=[[eapo,eapo]]"], "contrasts[0]"),
    (["contrasts=[[eapo,dapo,grpo]]"], "contrasts[0]"),
    (["contrasts=[[eapo,dapo],[eapo,dapo]]"], "contrasts"),
    (["+grids.extra=[grpo,eapo]"], "grid_contrasts.extra"),  # a grid without pre-declared contrasts
    (["grid_contrasts.main=[[eapo,gspo]]"], "grid_contrasts.main"),
    (["+grid_contrasts.nogrid=[[eapo,dapo]]"], "grid_contrasts"),
    (["primary_metric=reward"], "primary_metric"),
    (["max_no_signal_share=1.5"], "max_no_signal_share"),
    (["target_difference=0"], "target_difference"),
])
def test_bad_contrasts_and_metrics_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[")):
        study_cfg(*overrides)


def test_the_report_names_the_command_that_regenerates_the_study(tmp_path):
    import shlex

    c = study_cfg("grid=ablation", f"study_dir={tmp_path}", "seeds=[3,4]", 'overrides=["trainer.total_steps=7"]',
                  "contrasts=[[eapo_wo_nhr,eapo]]", "fresh_cache=true")
    words = shlex.split(study.study_command(c))
    assert words[:3] == ["python", "-m", "pipeline.study"] and words[-2:] == ["--", "trainer.total_steps=7"]
    again = study_cfg(*words[3:-2], 'overrides=["trainer.total_steps=7"]')
    assert again == c


def test_the_study_cache_is_emptied_at_the_start_and_kept_on_resume(tmp_path):
    c = study_cfg(f"study_dir={tmp_path}", "algorithms=[grpo,eapo]", "seeds=[0]", "fresh_cache=true")
    runs = study.plan(c)
    stale = tmp_path / "cache" / "warm_start" / "old"
    stale.mkdir(parents=True)
    cache = study.study_cache(c, runs)  # a new study: starts from nothing
    assert cache == str(tmp_path / "cache") and list((tmp_path / "cache").iterdir()) == []
    assert study.cache_env(cache) == {"EAPO_CACHE_DIR": cache}
    stale.mkdir(parents=True)
    study._mark_started(runs[0])
    assert study.study_cache(c, runs) == cache and stale.exists()  # resuming: the warm starts stay
    assert study.study_cache(study_cfg(f"study_dir={tmp_path}"), runs) is None and study.cache_env(None) == {}


def test_concurrent_runs_build_a_warm_start_once(tmp_path, monkeypatch):
    """Two runs of one seed starting together on one cache: one builds the warm start, the other waits for it."""
    import os
    import threading
    import time

    from core.config import TaskConfig, WarmStartConfig
    from task import warm_start
    from task.tiny_model import tiny_spec

    built = []

    def slow_build(path, *args):
        built.append(path)
        time.sleep(0.5)  # both callers are past the first "is it built?" check long before this ends
        os.makedirs(path)
        open(os.path.join(path, "WARM_START_DONE"), "w").close()

    monkeypatch.setattr(warm_start, "_build", slow_build)
    args = (str(tmp_path), tiny_spec(), TaskConfig(2, 0.1, 16), WarmStartConfig(1, 2, 0.1, 4, 0.5, 0.0, 0, 16), 0)
    barrier, paths = threading.Barrier(2), []

    def run():
        barrier.wait()
        paths.append(warm_start.warm_started_policy(*args, log=lambda m: None))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(built) == 1 and paths == [built[0]] * 2


def test_the_study_wall_time_adds_up_over_invocations(tmp_path):
    from pipeline.study_report import read_wall

    assert read_wall(str(tmp_path)) == {"sessions": [], "total_s": 0.0}
    first = study.StudyClock(str(tmp_path), 3)
    first.t0 -= 100  # as if started 100 s ago
    first.tick()
    idle = study.StudyClock(str(tmp_path), 0)  # nothing to run: no invocation recorded
    idle.tick()
    second = study.StudyClock(str(tmp_path), 1)
    second.t0 -= 20
    second.tick()
    wall = read_wall(str(tmp_path))
    assert [s["runs"] for s in wall["sessions"]] == [3, 1] and wall["total_s"] == pytest.approx(120, abs=1)


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
    moved = study.Run(run.algorithm, run.seed, run.run_dir, [a.replace(str(tmp_path), "/elsewhere") for a in run.args])
    assert moved.args != run.args and study.is_finished(moved)  # a study folder committed or moved keeps its runs
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
    paths = write_report(str(tmp_path), ["grpo", "eapo", "dapo"], [0, 1])["paths"]
    res = json.loads((tmp_path / "study.json").read_text())["results"]
    e = res["eapo"]
    assert e["heldout_after"]["mean"] == pytest.approx(0.75) and e["heldout_after"]["n"] == 2
    assert e["heldout_after"]["std"] == pytest.approx(np.std([0.9, 0.6], ddof=1))
    assert e["heldout_gain"]["mean"] == pytest.approx((0.7 + 0.3) / 2)
    assert e["final_reward"]["mean"] == pytest.approx((np.mean(r0[-LAST:]) + np.mean(r1[-LAST:])) / 2)
    assert e["adv_mass_share/PHR"]["mean"] == pytest.approx(0.3) and e["final_entropy"]["mean"] == pytest.approx(0.75)
    assert res["grpo"]["heldout_after"]["n"] == 1 and res["grpo"]["heldout_after"]["std"] == 0.0
    assert res["dapo"]["runs"] == []
    md = (tmp_path / "study.md").read_text()
    assert "| eapo | 2/2 | 25.0 ± 7.1 | 75.0 ± 21.2 | 50.0 ± 28.3 |" in md and "| dapo | 0/2 | – |" in md
    assert f"| eapo | 0 | 20.0 | 90.0 | +70.0 | {np.mean(r0[-LAST:]):.3f} | 20 | 10 |" in md
    for key in ("plot", "quadrants", "paired"):
        assert (tmp_path / paths[key].split("/")[-1]).stat().st_size > 10_000


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 9])
def test_running_mean_averages_the_points_inside_the_series(n):
    from pipeline.study_plots import _running_mean

    values = np.random.default_rng(n).normal(size=n)
    w = min(5, n)  # a window longer than the series shrinks to it; point i averages [i - w//2, i + (w-1)//2]
    expected = [np.mean(values[max(0, i - w // 2):i + (w - 1) // 2 + 1]) for i in range(n)]
    got = _running_mean(values, 5)
    assert got.shape == (n,)
    assert np.allclose(got, expected)


def test_a_report_of_runs_shorter_than_the_smoothing_window(tmp_path):
    """3-step runs (the CI grid): the quadrant plot's smoothing must keep the series' length."""
    fake_run(tmp_path, "eapo", 0, 0.2, 0.3, [0.1, 0.2, 0.3], [1.0] * 3, (0.4, 0.1, 0.2, 0.3))
    paths = write_report(str(tmp_path), ["eapo"], [0])["paths"]
    assert (tmp_path / paths["quadrants"].split("/")[-1]).stat().st_size > 10_000


@pytest.mark.slow
def test_study_command_runs_a_small_grid_and_resumes(tmp_path):
    """2 algorithms x 2 seeds x 3 steps of the real job, two runs at a time (two local Rays side by side; the
    seed-1 warm start is built by one run while the other waits on its lock), the paired statistics checked
    against a hand computation from the runs' own files; then the same command again skips all four."""
    cmd = [sys.executable, "-m", "pipeline.study", f"study_dir={tmp_path}", "algorithms=[grpo,eapo]", "seeds=[0,1]",
           "max_concurrent=2", "run_timeout_s=900", "--", "trainer.total_steps=3", "trainer.save_every=3",
           "heldout.size=16", "heldout.every=2", "heldout.sample_k=4"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    full = {log: log.read_text() for log in sorted(tmp_path.glob("*/seed*/job.log"))}
    logs = "".join(f"\n--- {log}\n" + text[-3000:] for log, text in full.items())
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:] + logs
    # each run's Ray Train found its own cluster (the error appears at worker-group start: read whole logs)
    assert len(full) == 4 and not [log for log, text in full.items() if "multiple active Ray instances" in text]
    out = json.loads((tmp_path / "study.json").read_text())
    res = out["results"]
    for algo in ("grpo", "eapo"):
        assert res[algo]["heldout_after"]["n"] == 2 and [r["steps"] for r in res[algo]["runs"]] == [3, 3]
    md = (tmp_path / "study.md").read_text()
    assert "| grpo | 2/2 |" in md and md.index("Primary metric (pre-declared): heldout_auc") < md.index("Secondary")
    for name in ("study.png", "study_quadrants.png", "study_paired.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    check_paired_by_hand(tmp_path, out)
    assert out["wall"]["total_s"] > 0 and "Study wall time" in md
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 already finished, 0 to go" in again.stdout


def hand_auc(run) -> float:
    """Held-out AUC in points of a 3-step run measured every 2 steps, from its own files: the trapezoid over
    (0, before), the logged point at version 2 and (3, after), divided by the 3 steps."""
    s = json.loads((run / "summary.json").read_text())
    logged = {int(r["heldout/weight_version"]): r["heldout/accuracy"] for r in map(json.loads,
              (run / "metrics.jsonl").read_text().splitlines()) if "heldout/accuracy" in r}
    assert sorted(logged) == [0, 2] and s["heldout_sample_k"] == 4
    assert 0 <= s["heldout_avg_at_k_after"] <= s["heldout_pass_at_k_after"] <= 1
    b, h2, a = s["heldout_accuracy_before"], logged[2], s["heldout_accuracy_after"]
    return 100 * (2 * (b + h2) / 2 + 1 * (h2 + a) / 2) / 3


def check_paired_by_hand(study_dir, out):
    """study.json against a hand computation: per run, the held-out AUC and pass@k from the run's own files; per
    contrast and metric, the paired differences eapo − grpo of seeds 0 and 1 and, with n = 2 (ν = 1, Student's t
    is Cauchy: t_q = tan(π (q − ½))), mean (d0 + d1)/2, sd |d0 − d1|/√2, 95% CI mean ± tan(0.475π)·|d0 − d1|/2 and
    mde80 (tan(0.475π) + tan(0.3π))·|d0 − d1|/2."""
    metrics = {}
    for algo in ("grpo", "eapo"):
        for seed in (0, 1):
            run = study_dir / algo / f"seed{seed}"
            s = json.loads((run / "summary.json").read_text())
            reported = next(r["metrics"] for r in out["results"][algo]["runs"] if r["seed"] == seed)
            assert reported["heldout_auc"] == pytest.approx(hand_auc(run))
            assert reported["pass_at_k"] == pytest.approx(100 * s["heldout_pass_at_k_after"])
            metrics[algo, seed] = reported
    assert out["contrasts"] == [["eapo", "grpo"]] and out["primary_metric"] == "heldout_auc"
    assert [p["metric"] for p in out["paired"]] == ["heldout_auc", "final_accuracy", "steps_to_80", "pass_at_k",
                                                    "avg_at_k", "final_entropy"]
    t975, t80 = np.tan(0.475 * np.pi), np.tan(0.3 * np.pi)
    for p in out["paired"]:
        pairs = [(metrics["eapo", k][p["metric"]], metrics["grpo", k][p["metric"]]) for k in (0, 1)]
        diffs = [x - y for x, y in pairs if x is not None and y is not None]
        assert (p["arm"], p["baseline"], p["n"]) == ("eapo", "grpo", len(diffs)) and p["diffs"] == pytest.approx(diffs)
        if len(diffs) < 2:
            continue
        half = abs(diffs[0] - diffs[1]) / 2
        assert p["mean_diff"] == pytest.approx(sum(diffs) / 2)
        assert p["sd_diff"] == pytest.approx(abs(diffs[0] - diffs[1]) / np.sqrt(2))
        assert p["ci95"] == pytest.approx([sum(diffs) / 2 - t975 * half, sum(diffs) / 2 + t975 * half])
        assert p["mde80"] == pytest.approx((t975 + t80) * half)
    assert next(p for p in out["paired"] if p["metric"] == "heldout_auc")["n"] == 2  # the primary: both seeds


def test_a_run_dies_with_the_study_that_started_it(tmp_path):
    """:func:`study.die_with_parent`: the study's process SIGKILLed (as a pytest timeout or the OOM killer would)
    -> each run it started gets SIGTERM instead of training on, orphaned."""
    import os
    import signal
    import time

    marker = tmp_path / "child.pid"
    child_code = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    (tmp_path / "study_like.py").write_text(
        "import subprocess, sys, time\nfrom pipeline.study import die_with_parent\n"
        f"subprocess.Popen([sys.executable, '-c', {child_code!r}], start_new_session=True, "
        "preexec_fn=die_with_parent)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(tmp_path / "study_like.py")], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 60
    while not (marker.exists() and marker.read_text()):
        assert time.time() < deadline and parent.poll() is None
        time.sleep(0.1)
    child = int(marker.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the run outlived its study by 60 s")


def test_an_interrupted_study_stops_its_active_runs(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, turned into an exit by main) while runs are active: each active run is stopped before
    the study ends. The launcher is a stand-in whose poll raises the interrupt (the fault injected here)."""
    c = study_cfg(f"study_dir={tmp_path}", "algorithms=[grpo,eapo]", "seeds=[0]", "max_concurrent=2")
    stopped = []

    class Interrupted:
        def __init__(self, *a):
            pass

        def start(self, run):
            return run.name

        def poll(self, handle):
            raise KeyboardInterrupt

        def stop(self, handle):
            stopped.append(handle)

    monkeypatch.setattr(study, "LocalLauncher", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        study.execute(c, study.plan(c), poll_s=0)
    assert sorted(stopped) == ["eapo seed 0", "grpo seed 0"]
