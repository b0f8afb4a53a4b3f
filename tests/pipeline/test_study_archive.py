"""A study's committed data (``pipeline.study_archive``): the archived runs give the same report as the study
folder they came from, hold only the small files, and count as finished for the study command."""
from __future__ import annotations

import json
import os

import numpy as np

from pipeline import study_archive
from pipeline.study_report import write_report
from tests.pipeline.test_study import fake_run, study_cfg
from pipeline import study


def make_study(root):
    for algo, seed, after in (("dapo", 0, 0.5), ("dapo", 1, 0.6), ("eapo", 0, 0.55), ("eapo", 1, 0.7)):
        fake_run(root, algo, seed, 0.25, after, list(np.linspace(0, after, 12)), [1.0] * 12, (0.4, 0.1, 0.2, 0.3))
        args = [f"algorithm={algo}", f"seed={seed}", f"run_dir={root}/{algo}/seed{seed}", "trainer.total_steps=12"]
        (root / algo / f"seed{seed}" / "study_run.json").write_text(json.dumps({"args": args}))
        (root / algo / f"seed{seed}" / "job.log").write_text("a log that is not archived\n")
    (root / "eapo" / "seed2").mkdir()  # started, never finished: not archived
    (root / "cache").mkdir()
    (root / "study_wall.json").write_text(json.dumps({"sessions": [{"started": 1.0, "wall_s": 5.0, "runs": 4}]}))


def report(folder) -> dict:
    write_report(str(folder), ["dapo", "eapo"], [0, 1], [["eapo", "dapo"]])
    return json.loads((folder / "study.json").read_text())


def test_archived_runs_give_the_same_report_and_only_small_files(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_study(src)
    assert study_archive.main([str(src), str(dst)]) == 0
    files = sorted(os.path.relpath(os.path.join(d, f), dst) for d, _, fs in os.walk(dst) for f in fs)
    runs = [f"{a}/seed{s}" for a in ("dapo", "eapo") for s in (0, 1)]
    assert files == sorted([f"{r}/{n}" for r in runs for n in ("metrics.jsonl.gz", "study_run.json", "summary.json")]
                           + ["study_wall.json"])
    a, b = report(src), report(dst)
    assert a["paired"] == b["paired"] and a["results"] == b["results"] and a["wall"] == b["wall"]
    assert b["paired"][0]["metric"] == "heldout_auc" and b["paired"][0]["n"] == 2  # both seeds read back


def test_archived_runs_count_as_finished_wherever_they_lie(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_study(src)
    study_archive.archive(str(src), str(dst))
    c = study_cfg(f"study_dir={dst}", "algorithms=[dapo,eapo]", "seeds=[0,1,2]", 'overrides=["trainer.total_steps=12"]')
    done = {(r.algorithm, r.seed): study.is_finished(r) for r in study.plan(c)}
    assert done == {("dapo", 0): True, ("eapo", 0): True, ("dapo", 1): True, ("eapo", 1): True,
                    ("dapo", 2): False, ("eapo", 2): False}


def test_archiving_in_place_compresses_new_runs(tmp_path):
    make_study(tmp_path)
    before = report(tmp_path)
    study_archive.archive(str(tmp_path), str(tmp_path))
    assert not (tmp_path / "dapo" / "seed0" / "metrics.jsonl").exists()
    assert (tmp_path / "dapo" / "seed0" / "metrics.jsonl.gz").exists()
    assert report(tmp_path)["paired"] == before["paired"]
    again = tmp_path.parent / (tmp_path.name + "_copy")  # an archived folder archived elsewhere: the gzip travels
    study_archive.archive(str(tmp_path), str(again))
    assert (again / "eapo" / "seed1" / "metrics.jsonl.gz").exists() and report(again)["paired"] == before["paired"]


def test_a_missing_study_folder_is_named(tmp_path, capsys):
    assert study_archive.main([str(tmp_path / "nope"), str(tmp_path / "dst")]) == 2
    assert "nope is no study folder" in capsys.readouterr().err
