"""Every Hydra app ends on a configuration mistake with one line ``error: ...`` and exit code 2, before anything
starts: a misspelt key (with the closest valid keys), an unknown option of a config group, a renamed key (with
what it became), an override that does not parse, a directory the config names that cannot be created."""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.cli import command_line_problem
from core.config_files import CONFIG_DIR
from tests.conftest import REPO


def run_app(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=180)


def assert_one_error_line(proc: subprocess.CompletedProcess, *expected: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture
def uncreatable(tmp_path) -> str:
    """A directory path no one can create: its parent is a regular file."""
    (tmp_path / "file").write_text("")
    return str(tmp_path / "file" / "sub")


def call_main(module: str, args: list[str], monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in this process, for mistakes that end it before Hydra runs the app."""
    import importlib

    monkeypatch.setattr(sys, "argv", [module, *args])
    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main()
    return subprocess.CompletedProcess(args, info.value.code, "", capsys.readouterr().err)


def test_the_issue_command_line_ends_with_one_line_and_exit_code_2(tmp_path):
    proc = run_app("pipeline.run", "trainer.totl_steps=5", f"run_dir={tmp_path}/run")
    assert_one_error_line(proc, "trainer.totl_steps: unknown key; did you mean trainer.total_steps?")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module,args,expected", [
    ("pipeline.run", ["algorithm=nope"], ["algorithm=nope: no such option of algorithm", "eapo, eapo_mid, eapo_reversed, eapo_strong, eapo_wo_nhr"]),
    ("pipeline.run", ["algorithm=eapo_wo_nh"], ["did you mean eapo_wo_nhr"]),
    ("pipeline.run", ["preset=paper_qwen"], ["preset=paper_qwen: no such option of preset", "paper_qwen25_math_7b"]),
    ("pipeline.run", ["rollout.kv_cache_mb=256"], ["rollout.kv_cache_mb: unknown key: renamed to rollout.kv_cache_gb"]),
    ("pipeline.run", ["model.hidden_size=64"], ["model.hidden_size: unknown key: renamed to model.tiny.hidden_size"]),
    ("pipeline.run", ["trainer.total_steps=["], ["trainer.total_steps=[: not a valid override"]),
    ("pipeline.study", ["grdi=main"], ["grdi: unknown key; did you mean grid?"]),
    ("pipeline.bench", ["bench.stpes=3"], ["bench.stpes: unknown key; did you mean bench.steps?"]),
    ("evaluation.run", ["endpoit=http://127.0.0.1:9"], ["endpoit: unknown key; did you mean endpoint?"]),
    ("serve.run", ["engine.max_num_seqs=3"], ["engine.max_num_seqs: unknown key: renamed to engine.extra.max_num_seqs"]),
])
def test_every_app_ends_a_command_line_mistake_with_one_line(module, args, expected, monkeypatch, capsys):
    assert_one_error_line(call_main(module, args, monkeypatch, capsys), *expected)


def test_an_added_unknown_key_is_rejected_by_the_loader_with_the_closest_key():
    from pipeline import config as C
    from tests.pipeline.test_config import compose_cfg

    with pytest.raises(C.ConfigError, match=r"^trainer\.totl_steps: unknown key.*did you mean trainer\.total_steps\?"):
        C.load(compose_cfg("+trainer.totl_steps=5"))


def test_a_directory_that_cannot_be_created_is_a_config_error_naming_its_key(uncreatable):
    """pipeline.run's run_dir, pipeline.bench's run_dir, evaluation.run's output_dir: a ConfigError, raised before
    anything starts, which each app ends with one line (pipeline.run.fail_cleanly, evaluation.run.main)."""
    from core.typed import ConfigError
    from evaluation.runner import evaluate
    from pipeline import bench, run
    from pipeline.config import compose, resolve_paths

    cfg = resolve_paths(compose(f"run_dir={uncreatable}"))
    for start in (run.run, lambda c: bench.bench(c, [0], 0)):
        with pytest.raises(ConfigError, match=f"^run_dir: cannot create {uncreatable}: not a directory"):
            start(cfg)
    with pytest.raises(ConfigError, match=f"^output_dir: cannot create {uncreatable}: not a directory"):
        evaluate({"endpoint": "http://127.0.0.1:9", "model": "m", "benchmarks": ["gsm8k"], "output_dir": uncreatable})


def test_study_ends_on_a_study_dir_that_cannot_be_created_with_one_line(uncreatable):
    assert_one_error_line(run_app("pipeline.study", f"study_dir={uncreatable}", "algorithms=[grpo]", "seeds=[0]"),
                          f"study_dir: cannot create {uncreatable}: not a directory")


def test_valid_command_lines_and_hydra_own_flags_pass_the_check():
    config = str(CONFIG_DIR)
    for argv in (["algorithm=grpo", "rollout.n=4", "preset=paper_qwen25_math_7b"], ["--cfg", "job"], ["--help"],
                 ["hydra.run.dir=.", "trainer.total_steps=5"], ["-m", "algorithm=grpo,dapo"],
                 ["+trainer.extra=1"]):  # an added key is the config loader's to reject (test above)
        assert command_line_problem(config, "config", argv) is None, argv


def test_the_check_names_a_key_of_the_selected_algorithm_and_its_siblings():
    problem = command_line_problem(str(CONFIG_DIR), "config", ["algorithm=grpo", "algorithm.alpha=0.5"])
    assert problem.startswith("algorithm.alpha: unknown key; valid here: ") and "algorithm.clip_high" in problem
    assert command_line_problem(str(CONFIG_DIR), "config", ["algorithm.alpha=0.5"]) is None  # eapo has it
