"""``python -m pipeline.study_archive SRC DST``: a study's data, small enough to commit, copied from study folder
SRC to DST: per run ``<algorithm>/seed<k>/`` its ``summary.json``, ``study_run.json`` (the run's arguments) and
``metrics.jsonl`` gzipped (``metrics.jsonl.gz``, read by ``core.run_dir.read_metrics``; ~20 KB a run), plus
``study_wall.json``. No checkpoints, logs or cache.

The study command run on DST (same algorithms, seeds, overrides; ``study_dir=DST``) then finds those runs
finished (``pipeline.study.is_finished`` ignores where a run's folder lay) and only writes the report, whose every
number is traceable to the committed rows; with more seeds it runs just the missing ones, in DST, and archiving
DST onto itself afterwards compresses their metrics.
"""
from __future__ import annotations

import gzip
import os
import shutil
import sys

from core.run_dir import METRICS

RUN_FILES = ("summary.json", "study_run.json")
STUDY_FILES = ("study_wall.json",)


def finished_runs(study_dir: str) -> list[str]:
    """``<algorithm>/seed<k>`` of every run under ``study_dir`` that wrote its summary (sorted)."""
    out = []
    for algo in sorted(os.listdir(study_dir)):
        folder = os.path.join(study_dir, algo)
        if not os.path.isdir(folder):
            continue
        out += [f"{algo}/{seed}" for seed in sorted(os.listdir(folder))
                if seed.startswith("seed") and os.path.exists(os.path.join(folder, seed, "summary.json"))]
    return out


def archive_run(src: str, dst: str) -> None:
    """One run's committed files, ``src`` -> ``dst`` (the same folder: only gzips the metrics)."""
    in_place = os.path.abspath(src) == os.path.abspath(dst)
    os.makedirs(dst, exist_ok=True)
    names = RUN_FILES if os.path.exists(os.path.join(src, METRICS)) else RUN_FILES + (METRICS + ".gz",)
    for name in () if in_place else names:  # an archived run's gzip copy travels as it is
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    plain = os.path.join(src, METRICS)
    if os.path.exists(plain):
        with open(plain, "rb") as f, gzip.GzipFile(os.path.join(dst, METRICS + ".gz"), "wb", mtime=0) as g:
            g.write(f.read())
        if in_place:
            os.remove(plain)


def archive(src: str, dst: str) -> list[str]:
    """Every finished run of study folder ``src`` and its wall-time record into ``dst``; returns the runs."""
    runs = finished_runs(src)
    for run in runs:
        archive_run(os.path.join(src, run), os.path.join(dst, run))
    for name in STUDY_FILES:
        path = os.path.join(src, name)
        if os.path.exists(path) and os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(path, os.path.join(dst, name))
    return runs


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m pipeline.study_archive SRC_STUDY_DIR DST_DIR", file=sys.stderr)
        return 2
    src, dst = argv
    if not os.path.isdir(src):
        print(f"study_archive: {src} is no study folder", file=sys.stderr)
        return 2
    runs = archive(src, dst)
    print(f"[study_archive] {len(runs)} finished runs of {src} -> {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
