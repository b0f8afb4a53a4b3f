"""Running out of worker-group restarts (``trainer.max_failures``) ends ``pipeline.run`` with one line naming what
died, how many restarts, the key, where the run stands and the command that resumes it; exit code 3."""
from __future__ import annotations

import pytest

from pipeline.config import compose, resolve_paths
from pipeline.run import RESTARTS_EXHAUSTED, fail_cleanly
from tests.checkpoint_layout import write_checkpoint


@pytest.fixture
def source(tmp_path_factory):
    from task.tiny_model import build_random_policy, tiny_spec

    spec = tiny_spec(hidden_size=32, num_layers=1, intermediate_size=32)
    return build_random_policy(str(tmp_path_factory.mktemp("policy")), seed=0, spec=spec)


def _exhausted(failures: dict):
    from ray.train import WorkerGroupError

    return WorkerGroupError("\n".join(f"[Rank {r}]\n{e}" for r, e in failures.items()), failures)


def test_exhausted_restarts_end_with_one_line_and_exit_code_3(tmp_path, source, capsys):
    from ray.exceptions import ActorDiedError

    run_dir = tmp_path / "run"
    write_checkpoint(run_dir, 4, source)
    cfg = resolve_paths(compose(f"run_dir={run_dir}", "trainer.max_failures=2"))
    argv = ["/x/pipeline/run.py", f"run_dir={run_dir}", "trainer.max_failures=2"]
    with pytest.raises(SystemExit) as info:
        fail_cleanly(_exhausted({0: ActorDiedError(), 1: RuntimeError("CUDA error: out of memory")}), cfg, argv)
    assert info.value.code == RESTARTS_EXHAUSTED == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("error: training failed after 2 worker-group restarts (trainer.max_failures=2): "
                          "train worker rank 0: ActorDiedError"), err
    assert "train worker rank 1: RuntimeError: CUDA error: out of memory" in err
    assert f"the newest checkpoint is step 4 ({run_dir}/checkpoints/step_4)" in err
    assert f"run the same command again (python -m pipeline.run run_dir={run_dir} trainer.max_failures=2)" in err


def test_other_errors_keep_their_traceback(tmp_path):
    cfg = resolve_paths(compose(f"run_dir={tmp_path}"))
    with pytest.raises(KeyError):
        fail_cleanly(KeyError("x"), cfg, ["run.py"])
