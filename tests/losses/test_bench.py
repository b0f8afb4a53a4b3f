import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_tiny():
    out = subprocess.run([sys.executable, "-m", "losses.bench", "--tokens", "64", "--hidden", "16", "--vocab", "300",
                          "--chunk", "16", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    for key in ("naive_time_s", "chunked_time_s", "naive_peak_mb", "chunked_peak_mb", "time_ratio", "mem_ratio"):
        assert res[key] >= 0, key
    assert res["tokens"] == 64 and res["vocab"] == 300 and res["dtype"] == "float32"
