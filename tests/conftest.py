"""Shared test settings: where the shared data lives, and a cache dir reused across tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("EAPO_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "benchmarks").is_dir():
        pytest.fail(f"shared data not found at {path} (set EAPO_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def eapo_cache_dir() -> Path:
    """Warm-start/synthetic-data cache shared by the end-to-end tests (same as the default job's)."""
    path = Path(os.environ.get("EAPO_CACHE_DIR", Path.home() / ".cache" / "eapo"))
    path.mkdir(parents=True, exist_ok=True)
    return path
