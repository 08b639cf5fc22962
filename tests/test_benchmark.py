"""The throughput benchmark runs end to end on a tiny setting and reports every loop."""

from __future__ import annotations

import json
import os
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


RECIPE = BENCH.parent / "recipe.py"
GPU_CHECK = BENCH.parent / "gpu_check.sh"


def test_recipe_study_runs_on_a_tiny_setting_and_writes_its_table(tmp_path) -> None:
    out = tmp_path / "recipe.json"
    cmd = [sys.executable, str(RECIPE), "--profile", "smoke", "--device", "cpu"]
    cmd += ["--results-dir", str(tmp_path / "results"), "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| group | method | recipe |" in res.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["group"] for r in rows} >= {"steps", "size", "baseline"}
    trained = [r for r in rows if r["group"] != "baseline"]
    assert all(0 < r["linear_accuracy"] <= 100 and r["steps"] > 0 for r in trained)
    assert all(r["num_test"] == 360 for r in rows)  # every digits test image
    assert out.with_suffix(".png").stat().st_size > 0  # the curve beside the JSON
    bad = subprocess.run(
        [sys.executable, str(RECIPE), "--groups", "colour"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--groups" in bad.stderr


def test_gpu_check_script_runs_its_steps_on_the_cpu(tmp_path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    res = subprocess.run(
        ["bash", str(GPU_CHECK), "--smoke"], capture_output=True, text=True, timeout=900, env=env
    )
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    for name in (
        "gpu-throughput-resnet18.json",
        "gpu-throughput-cnn-small.json",
        "gpu-difficulty.json",
    ):
        assert (tmp_path / name).is_file(), name
    chapter = json.loads((tmp_path / "gpu-difficulty.json").read_text())
    assert chapter["runs"] > 0 and chapter["verdicts"]
    assert "chapter 2 took" in res.stdout
    ddp = (tmp_path / "gpu-ddp.txt").read_text()
    assert "DDP on 2 processes (cpu)" in ddp and ddp.count("/result.json") >= 2


def test_step_costs_runs_on_a_tiny_setting(tmp_path) -> None:
    out = tmp_path / "steps.json"
    cmd = [sys.executable, str(BENCH.parent / "step_costs.py"), "--device", "cpu"]
    cmd += ["--dataset", "digits", "--steps", "3", "--batch-size", "32", "--queue-size", "64"]
    cmd += ["--width", "8", "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| band_mask hardest 5% alone |" in res.stdout
    data = json.loads(out.read_text())
    assert set(data["steps_ms"]) >= {"all negatives", "hardest 5%", "all negatives, no shuffle-BN"}
    assert all(v > 0 for v in data["parts_ms"].values())
