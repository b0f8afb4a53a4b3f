"""``python -m pipeline.study``: run algorithms × seeds of the training job, then one report over seeds.

    python -m pipeline.study grid=main seeds=[0,1,2] -- trainer.total_steps=50   # after --: job overrides

Each run is the unchanged entry point ``python -m pipeline.run algorithm=<a> seed=<s> run_dir=<dir>``
plus the study's ``overrides``, so a study measures exactly what a user runs. A run whose
``summary.json`` exists for the same arguments is skipped; an interrupted one resumes from its last
checkpoint (the job's own resume). Runs are launched locally as subprocesses or as Ray jobs on a
cluster (each with its own resources), ``max_concurrent`` at a time; a failed run is reported and
the study goes on. The report (``pipeline.study_report``: per-run metrics, paired statistics of the
pre-declared contrasts, the study's wall time) is written after every finished run. With ``fresh_cache``
all runs share one cache that starts empty (:func:`study_cache`). The command exits 1 when a run failed
or the report left one out as no data point.
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
from pipeline.study_metrics import METRICS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class StudyConfig:
    """A study's settings; values and documentation: configs/study/study.yaml."""

    grid: str
    grids: dict[str, list[str]]
    grid_contrasts: dict[str, list[list[str]]]
    algorithms: Optional[list[str]]
    contrasts: Optional[list[list[str]]]
    primary_metric: str
    target_difference: float
    max_no_signal_share: float
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
    for grid, algos in c.grids.items():  # every grid pre-declares its contrasts among its own algorithms
        require(grid in c.grid_contrasts, f"grid_contrasts.{grid}", "missing: pre-declare the grid's contrasts")
        bad = [p for p in c.grid_contrasts[grid] if not set(p) <= set(algos)]
        require(not bad, f"grid_contrasts.{grid}", f"{bad} use algorithms outside the grid {algos}")
    extra = sorted(set(c.grid_contrasts) - set(c.grids))
    require(not extra, "grid_contrasts", f"{extra} are no grid; grids: {sorted(c.grids)}")
    from_grid = c.algorithms is None
    if from_grid:
        require(c.grid in c.grids, "grid", f"unknown grid {c.grid!r}; known: {sorted(c.grids)}")
        c.algorithms = list(c.grids[c.grid])
    unknown = [a for a in c.algorithms if a not in known_algorithms()]
    require(not unknown and bool(c.algorithms), "algorithms", f"unknown {unknown}; known: {known_algorithms()}")
    c.contrasts = resolve_contrasts(c, from_grid)
    require(c.primary_metric in METRICS, "primary_metric", f"unknown {c.primary_metric!r}; known: {list(METRICS)}")
    require(c.target_difference > 0, "target_difference", f"must be > 0, got {c.target_difference}")
    require(0 <= c.max_no_signal_share <= 1, "max_no_signal_share", f"must be in [0, 1], got {c.max_no_signal_share}")
    require(bool(c.seeds) and len(set(c.seeds)) == len(c.seeds), "seeds", f"need distinct seeds, got {c.seeds}")
    require(c.launcher in ("local", "ray_jobs"), "launcher", f"must be local or ray_jobs, got {c.launcher!r}")
    require(c.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {c.max_concurrent}")
    require(c.run_timeout_s > 0, "run_timeout_s", f"must be > 0, got {c.run_timeout_s}")
    c.study_dir = os.path.abspath(os.path.expanduser(c.study_dir))
    return c


def resolve_contrasts(c: StudyConfig, from_grid: bool) -> list[list[str]]:
    """The study's [arm, baseline] pairs: ``contrasts`` if given, else the grid's ``grid_contrasts`` (when the
    algorithms are the grid's), else each later algorithm against the first. Each pair: two different
    algorithms of the study, no pair twice."""
    from core.typed import require

    if c.contrasts is not None:
        pairs, key = c.contrasts, "contrasts"
    elif from_grid:
        pairs, key = c.grid_contrasts[c.grid], f"grid_contrasts.{c.grid}"
    else:
        pairs, key = [[a, c.algorithms[0]] for a in c.algorithms[1:]], "contrasts"
    for i, pair in enumerate(pairs):
        require(len(pair) == 2 and pair[0] != pair[1], f"{key}[{i}]", f"need [arm, baseline], two different "
                                                                      f"algorithms; got {pair}")
        missing = [a for a in pair if a not in c.algorithms]
        require(not missing, f"{key}[{i}]", f"{missing} not among the study's algorithms {c.algorithms}")
    require(len({tuple(p) for p in pairs}) == len(pairs), key, f"a contrast is listed twice: {pairs}")
    return [list(p) for p in pairs]


def plan(c: StudyConfig) -> list[Run]:
    """One run per (algorithm, seed), seeds inner, so every algorithm gets a first seed early."""
    runs = []
    for seed in c.seeds:
        for algo in c.algorithms:
            run_dir = os.path.join(c.study_dir, algo, f"seed{seed}")
            args = [f"algorithm={algo}", f"seed={seed}", f"run_dir={run_dir}", *map(str, c.overrides)]
            runs.append(Run(algo, int(seed), run_dir, args))
    return runs


def _without_run_dir(args: list) -> list:
    return [a for a in args if not str(a).startswith("run_dir=")]


def is_finished(run: Run) -> bool:
    """True when the run wrote its summary for these exact arguments (see :func:`_mark_started`), wherever its
    folder lies now: ``run_dir=`` is left out of the comparison, so a study folder that was moved or committed
    (``docs/study/confirmatory``: each run's summary.json, metrics.jsonl.gz and study_run.json) still counts its
    finished runs and a later invocation adds only the missing ones."""
    try:
        with open(os.path.join(run.run_dir, "study_run.json")) as f:
            same = _without_run_dir(json.load(f)["args"]) == _without_run_dir(run.args)
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


def study_cache(c: StudyConfig, runs: list[Run]) -> Optional[str]:
    """With ``fresh_cache``: the study's own cache ``<study_dir>/cache`` (``EAPO_CACHE_DIR`` of every run), emptied
    when the study starts and kept when it resumes (a run of it was started before). Every (task, seed) warm
    start is then built once per study from nothing, by the first run that needs it (cache keys hash the
    settings and the seed; concurrent runs take turns on a file lock: ``task.warm_start``). None without
    ``fresh_cache`` (runs inherit the user's cache). Call before any run is marked started."""
    if not c.fresh_cache:
        return None
    path = os.path.join(c.study_dir, "cache")
    if not any(os.path.exists(os.path.join(r.run_dir, "study_run.json")) for r in runs):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    return path


def cache_env(cache: Optional[str]) -> dict:
    """The run's environment for the study cache (:func:`study_cache`): ``EAPO_CACHE_DIR``, or nothing."""
    return {"EAPO_CACHE_DIR": cache} if cache else {}


class StudyClock:
    """The study's wall time over all its invocations (it resumes): ``<study_dir>/study_wall.json`` holds one
    entry ``{started, wall_s, runs}`` per invocation that had runs to do (``runs``: how many); :meth:`tick`
    updates this invocation's ``wall_s``. The report sums them."""

    def __init__(self, study_dir: str, runs_to_do: int):
        from pipeline.study_report import read_wall

        self.path, self.t0 = os.path.join(study_dir, "study_wall.json"), time.time()
        self.sessions = read_wall(study_dir)["sessions"]
        self.active = runs_to_do > 0
        if self.active:
            self.sessions.append({"started": round(self.t0, 1), "wall_s": 0.0, "runs": runs_to_do})

    def tick(self) -> None:
        if not self.active:
            return
        from core.durable import write_durably

        self.sessions[-1]["wall_s"] = round(time.time() - self.t0, 1)
        write_durably(self.path, json.dumps({"sessions": self.sessions}, indent=1).encode())


def die_with_parent() -> None:
    """``preexec_fn`` of a run's process (Linux): SIGTERM it when the study's process dies, however it dies (a
    SIGKILL, a pytest timeout), so no run trains on orphaned; its own reaper then ends its Ray."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the study's own stop on exit still applies
        pass


class LocalLauncher:
    """Runs as subprocesses of this command (each in its own session, SIGTERMed if this process dies: see
    :func:`die_with_parent`); output to ``<run_dir>/job.log``."""

    def __init__(self, c: StudyConfig, cache: Optional[str] = None):
        self.c, self.cache = c, cache

    def start(self, run: Run):
        log = open(os.path.join(run.run_dir, "job.log"), "w")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.run", *run.args], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
                                env={**os.environ, **cache_env(self.cache)})
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
    sees, and so must the study cache with ``fresh_cache`` (its file lock needs a filesystem with working
    ``flock``, e.g. NFSv4). Ray 2.60 token auth: set ``RAY_AUTH_MODE=token`` (and the token) in this command's
    environment.
    """

    def __init__(self, c: StudyConfig, cache: Optional[str] = None):
        from ray.job_submission import JobSubmissionClient

        self.c, self.cache = c, cache
        self.client = JobSubmissionClient(c.address or os.environ.get("RAY_ADDRESS"))

    def start(self, run: Run):
        entry = shlex.join(["python", "-m", "pipeline.run", *run.args])
        env = {"working_dir": REPO, "excludes": ["/runs/", "/outputs/", ".git/", "*.pyc"],
               "env_vars": cache_env(self.cache)}
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


def execute(c: StudyConfig, runs: list[Run], on_finish=lambda: None, poll_s: float = 2.0,
            cache: Optional[str] = None) -> dict[str, bool]:
    """Run what is not finished, ``max_concurrent`` at a time (``cache``: :func:`study_cache`); returns
    {run_dir: succeeded}."""
    launcher = (LocalLauncher if c.launcher == "local" else RayJobsLauncher)(c, cache)
    todo = [r for r in runs if not is_finished(r)]
    results = {r.run_dir: True for r in runs if r not in todo}
    say(f"{len(runs)} runs, {len(results)} already finished, {len(todo)} to go ({c.launcher}, "
        f"{c.max_concurrent} at a time)")
    active: dict[str, tuple] = {}
    try:
        _loop(c, launcher, todo, active, results, len(runs), on_finish, poll_s)
    except BaseException:  # Ctrl-C, SIGTERM (see main), an error: no run goes on training without its study
        for run, handle, _ in active.values():
            say(f"stopping {run.name}")
            launcher.stop(handle)
        raise
    return results


def _loop(c: StudyConfig, launcher, todo: list[Run], active: dict, results: dict, total: int, on_finish,
          poll_s: float) -> None:
    """Start runs while fewer than ``max_concurrent`` are active; record each as it ends (``results``)."""
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
            say(f"[{len(results)}/{total}] " + _describe(run, ok, time.time() - t0))
            on_finish()


def study_command(c: StudyConfig) -> str:
    """The command that regenerates this study's runs and report (finished runs are skipped, so in a study
    folder that has them it only rewrites the report)."""
    def lst(items) -> str:
        return "[" + ",".join(lst(i) if isinstance(i, list) else str(i) for i in items) + "]"

    where = os.path.relpath(c.study_dir, REPO) if c.study_dir.startswith(REPO + os.sep) else c.study_dir
    words = ["python", "-m", "pipeline.study", f"grid={c.grid}", f"study_dir={where}",
             f"algorithms={lst(c.algorithms)}", f"seeds={lst(c.seeds)}",
             f"contrasts={lst(c.contrasts)}", f"primary_metric={c.primary_metric}",
             f"target_difference={c.target_difference:g}",
             f"max_no_signal_share={c.max_no_signal_share:g}", f"fresh_cache={str(c.fresh_cache).lower()}"]
    return shlex.join(words + (["--", *map(str, c.overrides)] if c.overrides else []))


def run_study(c: StudyConfig) -> dict:
    """Execute the grid and write the report; returns the report's paths and the failed runs (a job that
    failed, or a run the report excludes as no data point: see ``pipeline.study_metrics.invalid_reason``)."""
    from pipeline.study_report import write_report

    runs = plan(c)
    os.makedirs(c.study_dir, exist_ok=True)
    cache = study_cache(c, runs)
    clock = StudyClock(c.study_dir, sum(not is_finished(r) for r in runs))

    def report() -> dict:
        clock.tick()
        return write_report(c.study_dir, c.algorithms, c.seeds, c.contrasts, c.primary_metric,
                            c.max_no_signal_share, study_command(c), c.target_difference)

    results = execute(c, runs, on_finish=report, cache=cache)
    out = report()
    failed = [k for k, ok in results.items() if not ok]
    failed += [os.path.join(c.study_dir, e["algorithm"], f"seed{e['seed']}") for e in out["excluded"]]
    say(f"report: {out['paths']['markdown']} (study wall time {out['wall_s']:.0f} s)"
        + (f"; {len(failed)} failed: {failed}" if failed else ""))
    return {"paths": out["paths"], "failed": failed}


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
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # as Ctrl-C: the active runs are stopped first
    out = run_study(c)
    sys.exit(1 if out["failed"] else 0)


if __name__ == "__main__":
    _split_argv()
    main()
