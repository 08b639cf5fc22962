"""The throughput benchmark runs end to end on a tiny setting and reports every loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def test_benchmark_prints_a_table_and_writes_json(tmp_path) -> None:
    out = tmp_path / "bench.json"
    args = "--dataset digits --width 8 --batch-size 32 --steps 1 --warmup 1 --repeats 1"
    cmd = [sys.executable, str(BENCH), *args.split(), "--workers", "0", "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| loop |" in res.stdout and "speed-up" in res.stdout
    data = json.loads(out.read_text())
    keys = set(data["summary"])
    assert {"ours", "model-only", "ref-0w"} <= keys
    # the float32 and same-precision controls exist exactly when ours runs in bf16
    controls = {"ours-fp32", "ref-0w-bf16"}
    assert (controls <= keys) == (data["precision"] == "bf16")
    for key, row in data["summary"].items():
        assert row["median"] > 0 and row["min"] <= row["median"] <= row["max"], key
    assert data["speedup"] > 0 and data["ceiling_speedup"] > 0


def test_benchmark_refuses_bad_arguments() -> None:
    res = subprocess.run(
        [sys.executable, str(BENCH), "--workers", "two"], capture_output=True, text=True
    )
    assert res.returncode == 2 and "--workers='two'" in res.stderr
