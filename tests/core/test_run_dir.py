"""The run directory on real files: resume picks the newest intact checkpoint (damaged newer ones named and
demoted), metrics.jsonl survives a torn last line, and writes into a deleted or full run_dir fail naming it."""
from __future__ import annotations

import contextlib
import json
import os

import pytest

from core.checkpoint_files import COMPLETE, DAMAGED
from core.run_dir import (METRICS, MetricsLogger, RunDirError, latest_checkpoint, list_checkpoints, read_metrics,
                          require_metrics_through, resume_point, truncate_metrics)
from tests.checkpoint_layout import write_checkpoint


@pytest.fixture
def run_dir(tmp_path, source):
    for step in (10, 20, 30):
        write_checkpoint(tmp_path, step, source)
    return tmp_path


def test_resume_point_is_the_newest_intact_checkpoint(run_dir):
    warnings = []
    assert resume_point(str(run_dir), checksums=True, log=warnings.append) == (30, str(run_dir / "checkpoints/step_30"))
    assert warnings == []


def test_resume_falls_back_past_damaged_checkpoints_and_demotes_them(run_dir):
    step30, step20 = run_dir / "checkpoints/step_30", run_dir / "checkpoints/step_20"
    weights = step30 / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 3)
    (step20 / "state.json").write_text("garbage")
    warnings = []
    assert resume_point(str(run_dir), checksums=True, log=warnings.append) == (10, str(run_dir / "checkpoints/step_10"))
    assert len(warnings) == 2
    assert warnings[0].startswith(f"WARNING: checkpoint {step30} is damaged: model.safetensors has ")
    assert "truncated" in warnings[0] and "falling back" in warnings[0]
    assert warnings[1].startswith(f"WARNING: checkpoint {step20} is damaged: state.json ")
    # demoted: nothing takes them for complete any more (resume, serve follow=, pruning), files kept
    assert list_checkpoints(str(run_dir)) == [(10, str(run_dir / "checkpoints/step_10"))]
    assert latest_checkpoint(str(run_dir))[0] == 10
    assert not (step30 / COMPLETE).exists() and "model.safetensors" in (step30 / DAMAGED).read_text()
    assert weights.exists()
    assert resume_point(str(run_dir), checksums=True, log=warnings.append)[0] == 10 and len(warnings) == 2


def test_resume_falls_back_past_a_checkpoint_without_manifest(run_dir):
    step30 = run_dir / "checkpoints/step_30"
    os.unlink(step30 / "manifest.json")
    warnings = []
    step20 = str(run_dir / "checkpoints/step_20")
    assert resume_point(str(run_dir), checksums=False, log=warnings.append) == (20, step20)
    assert len(warnings) == 1 and warnings[0].startswith(f"WARNING: checkpoint {step30} is damaged: manifest.json "
                                                         "is missing"), warnings
    assert "manifest.json is missing" in (step30 / DAMAGED).read_text()


def test_no_intact_checkpoint_is_an_error_naming_the_folder(run_dir):
    for step in (10, 20, 30):
        os.unlink(run_dir / f"checkpoints/step_{step}/rng/rank0.pt")
    warnings = []
    with pytest.raises(RunDirError) as info:
        resume_point(str(run_dir), checksums=False, log=warnings.append)
    assert str(run_dir / "checkpoints") in str(info.value) and "none of the 3 complete checkpoints" in str(info.value)
    assert len(warnings) == 3 and all("rng/rank0.pt is missing" in w for w in warnings)
    assert len(list_checkpoints(str(run_dir))) == 3  # nothing demoted: the user decides


def test_no_checkpoint_is_a_fresh_start(tmp_path):
    assert resume_point(str(tmp_path), checksums=True) is None


# ---- metrics.jsonl ----------------------------------------------------------------------------------------

def write_metrics(run_dir, steps, tail: bytes = b"") -> str:
    path = os.path.join(run_dir, METRICS)
    with open(path, "wb") as f:
        f.write(b"".join(json.dumps({"step": s, "reward/mean": s / 10}).encode() + b"\n" for s in steps) + tail)
    return path


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path):
    path = write_metrics(tmp_path, [1, 2, 3], tail=b'{"step": 4, "reward/me')
    warnings = []
    assert [r["step"] for r in read_metrics(str(tmp_path), log=warnings.append)] == [1, 2, 3]
    assert warnings == [f"WARNING: {path}: line 4 is torn (22 bytes, not a complete JSON object: an interrupted "
                        "write); dropped"]


def test_a_tail_of_zero_bytes_is_a_torn_line(tmp_path):
    """Power loss on a delayed-allocation filesystem: the file grew but its last block reads as zeros."""
    write_metrics(tmp_path, [1, 2], tail=b"\x00" * 40)
    warnings = []
    assert [r["step"] for r in read_metrics(str(tmp_path), log=warnings.append)] == [1, 2]
    assert "line 3 is torn" in warnings[0]


def test_a_bad_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = write_metrics(tmp_path, [1])
    with open(path, "ab") as f:
        f.write(b"not json\n" + json.dumps({"step": 2}).encode() + b"\n")
    with pytest.raises(RunDirError) as info:
        read_metrics(str(tmp_path))
    assert str(info.value).startswith(f"{path}: line 2 is not a JSON object with a step")
    with pytest.raises(RunDirError):
        truncate_metrics(str(tmp_path), 2)
    # a line without a step is as bad as invalid JSON
    write_metrics(tmp_path, [1], tail=b'{"loss": 1}\n{"step": 3}\n')
    with pytest.raises(RunDirError, match="line 2"):
        read_metrics(str(tmp_path))


def test_truncate_drops_uncheckpointed_steps_and_the_torn_line(tmp_path):
    path = write_metrics(tmp_path, range(1, 8), tail=b'{"step": 8, "rew')
    warnings = []
    truncate_metrics(str(tmp_path), 5, log=warnings.append)
    assert [json.loads(line)["step"] for line in open(path)] == [1, 2, 3, 4, 5]
    assert len(warnings) == 1 and "line 8 is torn" in warnings[0]
    assert os.listdir(tmp_path) == [METRICS]  # replaced atomically, no temporary file left
    before = os.stat(path).st_ino
    truncate_metrics(str(tmp_path), 5)  # nothing to drop: the file is left alone
    assert os.stat(path).st_ino == before


def test_logger_fails_naming_run_dir_when_it_was_deleted(tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    logger = MetricsLogger(str(run_dir), 0, 3)
    logger.log(1, {"reward/mean": 0.5, "timing/step_s": 1.0}, sync=True)
    shutil.rmtree(run_dir)
    with pytest.raises(RunDirError) as info:
        logger.log(2, {"reward/mean": 0.5, "timing/step_s": 1.0})
    assert f"run_dir {run_dir} no longer exists" in str(info.value) and "metrics.jsonl" in str(info.value)
    assert not run_dir.exists()  # not recreated
    with contextlib.suppress(OSError):  # TensorBoard's writer thread may already have failed on the lost folder
        logger.tb.close()
    with pytest.raises(RunDirError, match=f"run_dir {run_dir} no longer exists"):
        MetricsLogger(str(run_dir), 2, 3)


def test_logger_fails_naming_metrics_file_when_it_was_deleted(tmp_path):
    logger = MetricsLogger(str(tmp_path), 0, 3)
    os.unlink(tmp_path / METRICS)
    with pytest.raises(RunDirError, match=f"{tmp_path / METRICS} was deleted"):
        logger.log(1, {"reward/mean": 0.5, "timing/step_s": 1.0})
    logger.close()


def test_logger_on_a_full_disk_names_the_file_and_the_cause(tmp_path):
    """Real ENOSPC: metrics.jsonl is a link to /dev/full, whose every write fails with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    os.symlink("/dev/full", tmp_path / METRICS)
    logger = MetricsLogger(str(tmp_path), 0, 3)
    with pytest.raises(RunDirError) as info:
        logger.log(1, {"reward/mean": 0.5, "timing/step_s": 1.0})
    assert str(info.value).startswith(f"cannot append step 1 to {tmp_path / METRICS}: no space left on device")
    logger.tb.close()


def test_every_step_up_to_the_checkpoint_has_its_line(tmp_path):
    write_metrics(tmp_path, [1, 2, 3, 4])
    require_metrics_through(str(tmp_path), 4)
    require_metrics_through(str(tmp_path / "fresh"), 0)  # a fresh run: no file, nothing required


@pytest.mark.parametrize("steps, expected", [
    ([1, 2, 3, 4, 5, 7, 8], "has no line for step 6, but the run resumes from the checkpoint of step 8"),
    ([3, 4], "has no line for steps 1-2, but"),
    ([], "has no line for steps 1-4, but"),
    ([1, 2, 2, 3, 4], "has step 2 more than once, but"),
    ([1, 3, 2, 4], "has steps out of order, but"),
])
def test_a_step_without_its_line_is_refused(tmp_path, steps, expected):
    """The issue's observed loss (steps 1-5, 7-10 after a kill between COMPLETE and the metrics line)."""
    path = write_metrics(tmp_path, steps)
    last = max(steps, default=4)
    with pytest.raises(RunDirError) as info:
        require_metrics_through(str(tmp_path), last)
    message = str(info.value)
    assert message.startswith(f"{path} {expected}"), message
    assert "\n" not in message and "move the checkpoints after step" in message
