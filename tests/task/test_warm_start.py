"""The warm start's cache: a build killed before its final move leaves a ``<key>.tmp<pid>`` folder; the next build
(holding the lock) removes such leftovers instead of piling them up (a study's runs stopped mid-build)."""
from __future__ import annotations

import os

from core.config import TaskConfig, WarmStartConfig
from task import warm_start
from task.tiny_model import tiny_spec


def test_a_build_removes_what_killed_builds_left(tmp_path):
    args = (str(tmp_path), tiny_spec(), TaskConfig(2, 0.1, 16), WarmStartConfig(2, 4, 0.1, 8, 0.5, 0.0, 0, 16), 0)
    path = warm_start.warm_start_path(*args)
    for pid in (111, 222):  # two builds SIGKILLed mid-way
        os.makedirs(f"{path}.tmp{pid}")
        open(f"{path}.tmp{pid}/model.safetensors", "w").close()
    other = path[:-1] + ("0" if path[-1] != "0" else "1")  # another key's build in progress: not ours to remove
    os.makedirs(other + ".tmp333")
    built = warm_start.warm_started_policy(*args, log=lambda m: None)
    assert built == path and os.path.exists(os.path.join(path, "WARM_START_DONE"))
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(path), os.path.basename(path) + ".lock",
                                                   os.path.basename(other) + ".tmp333"])
