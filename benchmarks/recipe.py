"""The recipe study: probe accuracy against training seconds, for the book's encoder.

Which SimCLR / MoCo v2 recipe buys the most accuracy per CPU-second on Fashion-MNIST? Each point
trains one encoder (``negatives.train.run``: cached, so an interrupted study resumes) on a
subset of the training images and probes its frozen backbone features with the book's
protocol: a linear probe (and k-NN, k = 20) fitted on the features of **all 60,000** training
images and scored on **all 10,000** test images (binomial standard error about 0.35 points).
The knobs, one at a time around a base recipe: training steps, training-set size, learning
rate and schedule, batch size, augmentation (crop scale, jitter strength, flip; Fashion-MNIST
is grayscale, so only brightness and contrast jitter exist), width, temperature, and for MoCo
its shuffle-BN. The raw-pixel and random-encoder probes are rows of the same table.

    python benchmarks/recipe.py                       # the whole study (about 1.5 h on 2 cores)
    python benchmarks/recipe.py --groups steps,moco   # only some groups
    python benchmarks/recipe.py --profile smoke       # a tiny check on scikit-learn's digits

Prints a markdown table and writes ``benchmarks/results/recipe-<profile>.json`` and the curve of
accuracy against seconds beside it (``recipe-<profile>.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from negatives import probes, stats
from negatives.book import recipe_figure, recipe_table
from negatives.data import load_dataset
from negatives.runs import RunStore
from negatives.train import TrainConfig, run

RESULTS = Path(__file__).resolve().parent / "results"

# The base recipes: the book's encoder (small CNN, width 32) with the settings the chapters
# used before this study, on all 60,000 training images for 2 epochs (468 steps of 256).
BASE: dict[str, dict[str, Any]] = {
    "simclr": dict(method="simclr", temperature=0.5, epochs=2),
    "moco": dict(method="moco", temperature=0.2, queue_size=4096, epochs=2),
}
COMMON: dict[str, Any] = dict(
    arch="cnn-small", width=32, batch_size=256, optimizer="adamw", lr=2e-3, weight_decay=1e-4
)

# (group, method, label, overrides, training-set size or None for all)
POINTS: list[tuple[str, str, str, dict[str, Any], int | None]] = [
    ("steps", "simclr", "1 epoch", dict(epochs=1), None),
    ("steps", "simclr", "2 epochs (base)", {}, None),
    ("steps", "simclr", "4 epochs", dict(epochs=4), None),
    ("steps", "simclr", "8 epochs", dict(epochs=8), None),
    ("steps", "moco", "1 epoch", dict(epochs=1), None),
    ("steps", "moco", "2 epochs (base)", {}, None),
    ("steps", "moco", "4 epochs", dict(epochs=4), None),
    ("steps", "moco", "8 epochs", dict(epochs=8), None),
    ("size", "simclr", "5,000 images, 48 epochs", dict(epochs=48), 5000),
    ("size", "simclr", "20,000 images, 12 epochs", dict(epochs=12), 20000),
    ("lr", "simclr", "lr 1e-3", dict(lr=1e-3), None),
    ("lr", "simclr", "lr 4e-3", dict(lr=4e-3), None),
    ("lr", "simclr", "lr 8e-3", dict(lr=8e-3), None),
    ("lr", "simclr", "lr 4e-3, warm-up 0.2 epoch", dict(lr=4e-3, warmup_epochs=0.2), None),
    ("lr", "simclr", "constant lr (no decay)", dict(schedule="constant"), None),
    ("batch", "simclr", "batch 128", dict(batch_size=128), None),
    ("batch", "simclr", "batch 512", dict(batch_size=512), None),
    ("augment", "simclr", "crop scale [0.08, 1]", dict(min_scale=0.08), None),
    ("augment", "simclr", "crop scale [0.4, 1]", dict(min_scale=0.4), None),
    ("augment", "simclr", "crop scale [0.6, 1]", dict(min_scale=0.6), None),
    ("augment", "simclr", "no jitter (strength 0)", dict(strength=0.0), None),
    ("augment", "simclr", "jitter strength 1.0", dict(strength=1.0), None),
    ("augment", "simclr", "no flip", dict(flip=False), None),
    ("width", "simclr", "width 16", dict(width=16), None),
    ("width", "simclr", "width 48", dict(width=48), None),
    ("temperature", "simclr", "T 0.1", dict(temperature=0.1), None),
    ("temperature", "simclr", "T 0.2", dict(temperature=0.2), None),
    ("temperature", "moco", "T 0.07", dict(temperature=0.07), None),
    ("moco", "moco", "no shuffle-BN (bn_groups 1)", dict(bn_groups=1), None),
    ("moco", "moco", "no shuffle-BN, 4 epochs", dict(bn_groups=1, epochs=4), None),
    # the frontier: what more seconds per run buy with the best single knob (width)
    ("frontier", "simclr", "width 48, 1 epoch", dict(width=48, epochs=1), None),
    (
        "frontier",
        "simclr",
        "width 48, T 0.2, 4 epochs",
        dict(width=48, temperature=0.2, epochs=4),
        None,
    ),
    # a fixed batch of 512 at lr 4e-3 (lr x B/256)
    ("batch", "simclr", "batch 512, lr 4e-3 (lr x B/256)", dict(batch_size=512, lr=4e-3), None),
    # the book's recipe, the knee of the SimCLR curve (width 48, one epoch), as chapter 2 runs
    # MoCo (T = 0.2, the "all negatives" condition of seed 0) with and without shuffle-BN;
    # chapter 3's SimCLR at K + 1 = 256 is the frontier's "width 48, 1 epoch" above
    ("book", "moco", "chapter 2: width 48, 1 epoch", dict(width=48, epochs=1), None),
    (
        "book",
        "moco",
        "chapter 2 without shuffle-BN (bn_groups 1)",
        dict(width=48, epochs=1, bn_groups=1),
        None,
    ),
]
GROUPS = tuple(dict.fromkeys(g for g, *_ in POINTS))

# A tiny version for the test: digits, 8x8, a few steps.
SMOKE_COMMON: dict[str, Any] = dict(
    arch="cnn-small", width=8, batch_size=64, proj_hidden=32, proj_dim=16, lr=2e-3
)
SMOKE_POINTS: list[tuple[str, str, str, dict[str, Any], int | None]] = [
    ("steps", "simclr", "1 epoch", dict(method="simclr", epochs=1), None),
    ("steps", "moco", "1 epoch", dict(method="moco", epochs=1, queue_size=256), None),
    ("size", "simclr", "512 images", dict(method="simclr", epochs=2), 512),
]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _evaluate(r: Any, probe_data: Any, device: str) -> dict[str, Any]:
    return r.evaluate(
        "probes-full",
        {"data": probe_data.fingerprint, "which": "backbone", "version": probes.PROBE_VERSION},
        lambda: probes.evaluate_model(r.load_model(device), probe_data, device=device),
    )


def _row(
    group: str, method: str, label: str, config: TrainConfig, r: Any, m: dict, n_train: int
) -> dict[str, Any]:
    hist = r.history
    steps = len(hist["epoch"]) * (n_train // config.batch_size)
    n_test = int(m["num_test"])
    return {
        "group": group,
        "method": method,
        "label": label,
        "train_size": n_train,
        "steps": steps,
        "train_seconds": float(r.result["seconds"]),
        "train_cpu_seconds": float(sum(hist.get("cpu_seconds", [math.nan]))),
        "linear_accuracy": float(m["linear_accuracy"]),
        "linear_se": stats.binomial_se(m["linear_accuracy"], n_test),
        "knn_accuracy": float(m["knn_accuracy"]),
        "mean_accuracy": float(m["mean_accuracy"]),
        "num_test": n_test,
        "run_id": r.run_id,
        "config": asdict(config),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--profile", choices=("book", "smoke"), default="book")
    p.add_argument("--groups", default=None, help=f"comma-separated subset of {list(GROUPS)}")
    p.add_argument("--results-dir", default="results", help="run cache (shared with the book)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="default: benchmarks/results/recipe-<profile>.json")
    args = p.parse_args(argv)
    groups = GROUPS if args.groups is None else tuple(g.strip() for g in args.groups.split(","))
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        p.error(f"--groups: unknown {unknown}; allowed: {list(GROUPS)}")

    smoke = args.profile == "smoke"
    dataset = "digits" if smoke else "fashion-mnist"
    points = SMOKE_POINTS if smoke else [pt for pt in POINTS if pt[0] in groups]
    common = SMOKE_COMMON if smoke else COMMON
    store = RunStore(args.results_dir)
    probe_data = load_dataset(dataset, args.data_root)  # every training and test image
    device = "cpu" if args.device == "cpu" else ("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for i, (group, method, label, overrides, size) in enumerate(points):
        config = TrainConfig(
            **{**common, **BASE.get(method, {}), **overrides, "device": args.device}
        )
        data = (
            probe_data if size is None else load_dataset(dataset, args.data_root, train_size=size)
        )
        print(f"[{i + 1}/{len(points)}] {method}: {label}", file=sys.stderr, flush=True)
        r = run(config, data, store, progress=True)
        m = _evaluate(r, probe_data, device)
        rows.append(_row(group, method, label, config, r, m, int(data.train_labels.shape[0])))
    base_model = dict(arch=common["arch"], width=common["width"], proj_hidden=128, proj_dim=64)
    if smoke:
        base_model.update(proj_hidden=32, proj_dim=16)
    baselines = {
        "raw pixels": store.cached(
            "baseline-pixels", probes.pixel_baseline, data=probe_data, version=probes.PROBE_VERSION
        ),
        f"random {common['arch']} encoder (width {common['width']})": store.cached(
            "baseline-random-encoder",
            probes.random_encoder_baseline,
            data=probe_data,
            **base_model,
            seed=0,
            version=probes.PROBE_VERSION,
        ),
    }
    for label, m in baselines.items():
        rows.append(
            {
                "group": "baseline",
                "method": "-",
                "label": label,
                "train_size": 0,
                "steps": 0,
                "train_seconds": 0.0,
                "train_cpu_seconds": 0.0,
                "linear_accuracy": float(m["linear_accuracy"]),
                "linear_se": stats.binomial_se(m["linear_accuracy"], int(m["num_test"])),
                "knn_accuracy": float(m["knn_accuracy"]),
                "mean_accuracy": float(m["mean_accuracy"]),
                "num_test": int(m["num_test"]),
                "run_id": None,
                "config": None,
            }
        )

    hardware = f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    print(
        f"\nRecipe study ({args.profile}): {dataset}, probes fitted on "
        f"{probe_data.train_labels.shape[0]:,} training images' backbone features, scored on "
        f"{probe_data.test_labels.shape[0]:,} test images; {hardware}; torch {torch.__version__}\n"
    )
    print(
        "| group | method | recipe | train images | steps | train s (wall) | train CPU s "
        "| linear (%) | ± s.e. | k-NN (%) |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['group']} | {r['method']} | {r['label']} | {r['train_size']:,} | "
            f"{r['steps']:,} | {r['train_seconds']:,.0f} | {r['train_cpu_seconds']:,.0f} | "
            f"{r['linear_accuracy']:.2f} | {r['linear_se']:.2f} | {r['knn_accuracy']:.2f} |"
        )
    out = {
        "profile": args.profile,
        "dataset": dataset,
        "hardware": hardware,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    path = Path(args.json) if args.json else RESULTS / f"recipe-{args.profile}.json"
    if args.json or not smoke:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        # the curve the README shows: accuracy against seconds, beside the JSON
        import matplotlib

        matplotlib.use("Agg")
        table, _ = recipe_table(path)
        recipe_figure(table).savefig(path.with_suffix(".png"), dpi=110)
        print(f"wrote {path} and {path.with_suffix('.png')}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
