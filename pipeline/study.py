"""``python -m pipeline.study``: run algorithms × seeds of the training job, then one report over seeds.

    python -m pipeline.study grid=main seeds=[0,1,2] -- trainer.total_steps=50   # after --: job overrides

Each run is the unchanged entry point ``python -m pipeline.run algorithm=<a> seed=<s> run_dir=<dir>``
plus the study's ``overrides``, so a study measures exactly what a user runs. A run whose
``summary.json`` exists for the same arguments is skipped; an interrupted one resumes from its last
checkpoint (the job's own resume). Runs are launched locally as subprocesses or as Ray jobs on a
cluster (each with its own resources), ``max_concurrent`` at a time; a failed run is reported and
the study goes on. The report (``pipeline.study_report``) is written after every finished run.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig

from core.cli import app, fail
from core.config_files import CONFIG_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class StudyConfig:
    """A study's settings; values and documentation: configs/study/study.yaml."""

    grid: str
    grids: dict[str, list[str]]
    algorithms: Optional[list[str]]
    seeds: list[int]
    overrides: list[str]
    study_dir: str
    launcher: str
    max_concurrent: int
    address: Optional[str]
    run_timeout_s: float
    fresh_cache: bool


@dataclass
class Run:
    algorithm: str
    seed: int
    run_dir: str
    args: list

    @property
    def name(self) -> str:
        return f"{self.algorithm} seed {self.seed}"


def load(cfg) -> StudyConfig:
    """Hydra config -> validated :class:`StudyConfig` (errors name the field)."""
    from omegaconf import OmegaConf

    from core.typed import build, require
    from losses import known_algorithms

    raw = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    c = build(StudyConfig, raw)
    if c.algorithms is None:
        require(c.grid in c.grids, "grid", f"unknown grid {c.grid!r}; known: {sorted(c.grids)}")
        c.algorithms = list(c.grids[c.grid])
    unknown = [a for a in c.algorithms if a not in known_algorithms()]
    require(not unknown and bool(c.algorithms), "algorithms", f"unknown {unknown}; known: {known_algorithms()}")
    require(bool(c.seeds) and len(set(c.seeds)) == len(c.seeds), "seeds", f"need distinct seeds, got {c.seeds}")
    require(c.launcher in ("local", "ray_jobs"), "launcher", f"must be local or ray_jobs, got {c.launcher!r}")
    require(c.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {c.max_concurrent}")
    require(c.run_timeout_s > 0, "run_timeout_s", f"must be > 0, got {c.run_timeout_s}")
    c.study_dir = os.path.abspath(os.path.expanduser(c.study_dir))
    return c


def plan(c: StudyConfig) -> list[Run]:
    """One run per (algorithm, seed), seeds inner, so every algorithm gets a first seed early."""
    runs = []
    for seed in c.seeds:
        for algo in c.algorithms:
            run_dir = os.path.join(c.study_dir, algo, f"seed{seed}")
            args = [f"algorithm={algo}", f"seed={seed}", f"run_dir={run_dir}", *map(str, c.overrides)]
            runs.append(Run(algo, int(seed), run_dir, args))
    return runs


def is_finished(run: Run) -> bool:
    """True when the run wrote its summary for these exact arguments (see :func:`_mark_started`)."""
    try:
        with open(os.path.join(run.run_dir, "study_run.json")) as f:
            same = json.load(f)["args"] == run.args
    except (OSError, ValueError, KeyError):
        return False
    return same and os.path.exists(os.path.join(run.run_dir, "summary.json"))


def _mark_started(run: Run) -> None:
    os.makedirs(run.run_dir, exist_ok=True)
    summary = os.path.join(run.run_dir, "summary.json")
    if os.path.exists(summary):  # written for other arguments: stale until this run writes its own
        os.remove(summary)
    with open(os.path.join(run.run_dir, "study_run.json"), "w") as f:
        json.dump({"args": run.args}, f)


def cache_env(c: StudyConfig, run: Run) -> dict:
    """``EAPO_CACHE_DIR`` for the run: a new empty ``<run_dir>/cache`` with ``fresh_cache`` (each run
    builds its own warm start, as on a fresh machine), else inherited."""
    if not c.fresh_cache:
        return {}
    path = os.path.join(run.run_dir, "cache")
    shutil.rmtree(path, ignore_errors=True)
    return {"EAPO_CACHE_DIR": path}


class LocalLauncher:
    """Runs as subprocesses of this command; output to ``<run_dir>/job.log``."""

    def __init__(self, c: StudyConfig):
        self.c = c

    def start(self, run: Run):
        log = open(os.path.join(run.run_dir, "job.log"), "w")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.run", *run.args], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **cache_env(self.c, run)})
        return proc, log

    def poll(self, handle) -> Optional[bool]:
        """None while running, else True on success."""
        proc, log = handle
        if proc.poll() is None:
            return None
        log.close()
        return proc.returncode == 0

    def stop(self, handle) -> None:
        proc, log = handle
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


class RayJobsLauncher:
    """Runs as Ray jobs (``ray job submit`` semantics) on the cluster at ``address``.

    The working tree travels as the job's ``working_dir``; ``run_dir`` must be storage every node
    sees. Ray 2.60 token auth: set ``RAY_AUTH_MODE=token`` (and the token) in this command's environment.
    """

    def __init__(self, c: StudyConfig):
        from ray.job_submission import JobSubmissionClient

        self.c = c
        self.client = JobSubmissionClient(c.address or os.environ.get("RAY_ADDRESS"))

    def start(self, run: Run):
        entry = shlex.join(["python", "-m", "pipeline.run", *run.args])
        env = {"working_dir": REPO, "excludes": ["/runs/", "/outputs/", ".git/", "*.pyc"],
               "env_vars": cache_env(self.c, run)}
        return run, self.client.submit_job(entrypoint=entry, runtime_env=env)

    def poll(self, handle) -> Optional[bool]:
        from ray.job_submission import JobStatus

        run, job_id = handle
        status = self.client.get_job_status(job_id)
        if not status.is_terminal():
            return None
        with open(os.path.join(run.run_dir, "job.log"), "w") as f:
            f.write(self.client.get_job_logs(job_id))
        return status == JobStatus.SUCCEEDED

    def stop(self, handle) -> None:
        self.client.stop_job(handle[1])


def say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def _describe(run: Run, ok: bool, seconds: float) -> str:
    if not ok:
        return f"{run.name}: FAILED after {seconds:.0f} s (see {run.run_dir}/job.log)"
    with open(os.path.join(run.run_dir, "summary.json")) as f:
        s = json.load(f)
    return (f"{run.name}: held-out {s['heldout_accuracy_before']:.3f} -> {s['heldout_accuracy_after']:.3f} "
            f"in {s['wall_s']:.0f} s")


def execute(c: StudyConfig, runs: list[Run], on_finish=lambda: None, poll_s: float = 2.0) -> dict[str, bool]:
    """Run what is not finished, ``max_concurrent`` at a time; returns {run_dir: succeeded}."""
    launcher = LocalLauncher(c) if c.launcher == "local" else RayJobsLauncher(c)
    todo = [r for r in runs if not is_finished(r)]
    results = {r.run_dir: True for r in runs if r not in todo}
    say(f"{len(runs)} runs, {len(results)} already finished, {len(todo)} to go ({c.launcher}, "
        f"{c.max_concurrent} at a time)")
    active: dict[str, tuple] = {}
    while todo or active:
        while todo and len(active) < c.max_concurrent:
            run = todo.pop(0)
            _mark_started(run)
            say(f"start {run.name} -> {run.run_dir}")
            active[run.run_dir] = (run, launcher.start(run), time.time())
        time.sleep(poll_s)
        for key, (run, handle, t0) in list(active.items()):
            ok = launcher.poll(handle)
            if ok is None and time.time() - t0 > c.run_timeout_s:
                launcher.stop(handle)
                ok = False
            if ok is None:
                continue
            del active[key]
            results[key] = ok
            say(f"[{len(results)}/{len(runs)}] " + _describe(run, ok, time.time() - t0))
            on_finish()
    return results


def run_study(c: StudyConfig) -> dict:
    """Execute the grid and write the report; returns the report's paths and the failed runs."""
    from pipeline.study_report import write_report

    runs = plan(c)
    report = lambda: write_report(c.study_dir, c.algorithms, c.seeds)  # noqa: E731
    results = execute(c, runs, on_finish=report)
    paths = report()
    failed = [k for k, ok in results.items() if not ok]
    say(f"report: {paths['markdown']}" + (f"; {len(failed)} failed: {failed}" if failed else ""))
    return {"paths": paths, "failed": failed}


JOB_OVERRIDES: list[str] = []  # the words after `--` on the command line (see _split_argv)


def _split_argv() -> None:
    """``python -m pipeline.study grid=main -- trainer.total_steps=50``: what follows ``--`` are overrides
    of every training job (Hydra's list syntax would need them quoted)."""
    if "--" in sys.argv:
        i = sys.argv.index("--")
        JOB_OVERRIDES.extend(sys.argv[i + 1:])
        del sys.argv[i:]


@app(str(CONFIG_DIR / "study"), "study")
def main(hydra_cfg: DictConfig) -> None:
    from core.run_dir import ensure_dir
    from pipeline.config import ConfigError

    try:
        c = load(hydra_cfg)
        c.overrides = list(c.overrides) + JOB_OVERRIDES
        ensure_dir(c.study_dir, "study_dir")
    except ConfigError as err:
        fail(str(err))
    out = run_study(c)
    sys.exit(1 if out["failed"] else 0)


if __name__ == "__main__":
    _split_argv()
    main()
