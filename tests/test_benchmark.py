"""The throughput benchmark runs end to end on a tiny setting and reports every loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.mark.slow
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


GPU_CHECK = BENCH.parent / "gpu_check.sh"


@pytest.mark.slow
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


SPEEDRUN = BENCH.parent / "speedrun.py"


@pytest.mark.slow
def test_speedrun_chooses_on_the_validation_split_and_records_on_the_test_set(tmp_path) -> None:
    out = tmp_path / "speedrun.json"
    cmd = [sys.executable, str(SPEEDRUN), "--profile", "smoke", "--seeds", "2", "--workers", "0"]
    cmd += ["--results-dir", str(tmp_path / "results"), "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    for title in ("The ladder", "Tried on top", "The frontier", "usual pipeline", "The record"):
        assert title in res.stdout, title
    data = json.loads(out.read_text())
    rows = data["rows"]
    # every choice is made on the held-out training images, only the record on the test set
    for group in ("ladder", "tried", "frontier", "peer"):
        mine = [r for r in rows if r["group"] == group]
        assert mine and all(r["split"] == "validation" for r in mine), group
        assert all(r["num_test"] == 300 for r in mine)  # the last 300 training images
    record = [r for r in rows if r["group"] == "record"]
    assert record and all(r["split"] == "test" and r["num_test"] == 360 for r in record)
    assert {r["seed"] for r in record} == {0, 1}
    # each budget's pick is the best frontier point that fits it, and the record trains it
    frontier = [r for r in rows if r["group"] == "frontier"]
    for s in data["record"]:
        pick = data["choices"][str(s["budget"])]
        assert (s["method"], s["epochs"]) == (pick["method"], pick["epochs"])
        assert s["linear_low"] <= s["linear_mean"] <= s["linear_high"] and s["seeds"] == 2
        # its seconds scaled to the record's 1,437 training images (22 steps an epoch, not 17)
        fits = [
            r for r in frontier
            if r["train_seconds"] * r["epochs"] * (1437 // 64) / r["steps"] <= s["budget"]
        ]  # fmt: skip
        assert s["validation_accuracy"] == max(r["linear_accuracy"] for r in fits)
    for split in ("validation", "test"):
        base = [r for r in rows if r["group"] == "baseline" and r["split"] == split]
        assert any(r["label"].startswith("raw pixels") for r in base), split
    peer = [r for r in rows if r["group"] == "peer"]
    assert len(peer) == 2 and peer[0]["steps"] == peer[1]["steps"] > 0
    assert all(r["train_seconds"] > 0 for r in peer)
    assert out.with_suffix(".png").stat().st_size > 0
    bad = subprocess.run(
        [sys.executable, str(SPEEDRUN), "--stages", "select,race"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--stages" in bad.stderr


def test_the_book_encoder_is_the_speedruns_chosen_recipe() -> None:
    # the recipe the speedrun chose on the validation split is the one every book chapter trains
    import importlib.util

    from negatives import config as cfg
    from negatives.chapters import difficulty, kscan

    spec = importlib.util.spec_from_file_location("speedrun", SPEEDRUN)
    speedrun = importlib.util.module_from_spec(spec)
    sys.modules["speedrun"] = speedrun  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(speedrun)
    finally:
        del sys.modules["speedrun"]
    chosen = {**speedrun.PREVIOUS, **speedrun.CHOSEN}
    for key in ("arch", "width", "feature_grid", "min_scale", "epochs"):
        assert cfg.BOOK_ENCODER[key] == chosen[key], key
    for base in (
        difficulty.Params.profiles["book"].base_config(),
        kscan.Params.profiles["book"].base_config(),
    ):
        for key in ("arch", "width", "feature_grid", "min_scale", "epochs", "optimizer", "lr"):
            assert getattr(base, key) == chosen[key], key
        assert base.warmup_epochs == chosen["warmup_epochs"]
