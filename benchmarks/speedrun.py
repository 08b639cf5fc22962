"""The self-supervised speedrun: how far SimCLR and MoCo v2 get on two CPU cores in minutes.

Both methods on Fashion-MNIST, trained by the study's own trainer (``negatives.train.run``:
cached, so an interrupted benchmark resumes and a second call reprints its tables from the
cache), scored by the book's protocol: frozen backbone features, a linear probe (L-BFGS
logistic regression) and a k-NN (k = 20), fitted on every training image of the split.

Every choice is made on a **validation split**: the last 10,000 of the 60,000 training images
are held out (``load_dataset(..., validation=10_000)``); the encoders train on the first 50,000,
the probes are fitted on them and scored on the held-out 10,000. The test set scores only what
was chosen, once, in the record.

Stages (``--stages``, all by default):

* ``select`` (validation split): the **ladder**, from the book's previous encoder to the chosen
  recipe, one kept change at a time, with what each buys and what it costs; the changes
  **tried** on top of the chosen recipe and not kept; the **frontier**, the chosen recipe at
  more epochs. Each time budget takes the frontier point with the best validation accuracy
  whose training, scaled to the 60,000 images of the record (x 60,000 / 50,000 steps), fits it.
* ``record`` (test set): each budget's point (30, 60, 120 and 240 s of training) trained on
  all 60,000 training images with ``--seeds`` seeds and probed on the 10,000 test images, mean
  and 95% interval over seeds; the raw-pixel and random-encoder probes on the same protocol.
* ``peer`` (validation split): the usual pipeline, a PyTorch ``DataLoader`` of PIL images with
  torchvision's per-image transforms feeding the same model, loss, optimiser, schedule and
  precision (:func:`train_peer`), for the steps of our SimCLR point of the 60-second budget:
  accuracy reached per training second, both.

Seconds are the trainer's clock: wall time from the first step's set-up (MoCo's queue fill
included) to the last step, without loading the data or probing. The machine's speed varies;
the JSON records it (``hardware``).

    python benchmarks/speedrun.py                      # everything (about 50 min on 2 cores)
    python benchmarks/speedrun.py --stages record      # the record table (and the frontier)
    python benchmarks/speedrun.py --profile smoke      # a tiny check on scikit-learn's digits

Prints a markdown table per stage and writes ``benchmarks/results/speedrun-<profile>.json``
and the accuracy-against-seconds figure beside it (``speedrun-<profile>.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from negatives import probes, show, stats
from negatives.chapters.reproducibility import speedrun_figure
from negatives.data import Dataset, load_dataset
from negatives.runner import run
from negatives.runs import RunStore
from negatives.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
STAGES: tuple[str, ...] = ("select", "record", "peer")

# The book's encoder before this study (chapter 2's MoCo v2 and chapter 3's SimCLR), at the
# speedrun's temperature: a small CNN of width 48, global average pool, crops of [0.2, 1] of the
# image's area, AdamW at 2e-3 with a cosine decay, batch 256, one epoch.
PREVIOUS: dict[str, Any] = dict(
    arch="cnn-small",
    width=48,
    feature_grid=1,
    min_scale=0.2,
    strength=0.5,
    batch_size=256,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    warmup_epochs=0.0,
    temperature=0.2,
    epochs=1,
)
METHODS: dict[str, dict[str, Any]] = {
    "simclr": dict(method="simclr"),
    "moco": dict(method="moco", queue_size=4096, momentum=0.99),
}
# The kept changes, in the order the ladder adds them, each on top of those before: the chosen
# recipe is PREVIOUS with all of them (negatives.config.BOOK_ENCODER: the book's encoder).
LADDER: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the book's previous encoder: width 48, global pool", {}),
    ("width 32: a step about 2.5x cheaper on this CPU", dict(width=32)),
    ("its features on a 2x2 grid of the last map", dict(feature_grid=2)),
    ("crops of [0.4, 1] of the image", dict(min_scale=0.4)),
)
CHOSEN: dict[str, Any] = {k: v for _, change in LADDER for k, v in change.items()}
# Tried on top of the chosen recipe (one epoch) and not kept.
TRIED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("simclr", "torch.compile of the encoder", dict(compile=True)),
    ("simclr", "lr 4e-3 after a warm-up of 0.1 epoch", dict(lr=4e-3, warmup_epochs=0.1)),
    ("simclr", "batch 512, lr 4e-3", dict(batch_size=512, lr=4e-3)),
    ("simclr", "SGD (momentum 0.9), lr 0.3", dict(optimizer="sgd", lr=0.3, weight_decay=5e-4)),
    ("simclr", "temperature 0.5", dict(temperature=0.5)),
    ("simclr", "temperature 0.1", dict(temperature=0.1)),
    ("simclr", "crops of [0.6, 1]", dict(min_scale=0.6)),
    ("simclr", "jitter strength 0.8", dict(strength=0.8)),
    ("simclr", "width 48", dict(width=48)),
    ("simclr", "global pool, width 64 (256 features)", dict(feature_grid=1, width=64)),
    ("moco", "lr 4e-3 after a warm-up of 0.1 epoch", dict(lr=4e-3, warmup_epochs=0.1)),
    ("moco", "no shuffle-BN (bn_groups 1)", dict(bn_groups=1)),
    ("moco", "temperature 0.07", dict(temperature=0.07)),
)


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a profile measures: the data, the held-out split, the budgets and epochs, the
    fields every config of the profile overrides, the methods' own fields."""

    dataset: str
    validation: int
    budgets: tuple[int, ...]
    frontier_epochs: tuple[int, ...]
    overrides: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    tried: tuple[tuple[str, str, dict[str, Any]], ...]


SETTINGS: dict[str, Setting] = {
    "book": Setting("fashion-mnist", 10_000, (30, 60, 120, 240), (1, 2, 4, 8), {}, METHODS, TRIED),
    # the tests' version: digits, 8x8, a tiny CNN
    "smoke": Setting(
        "digits",
        300,
        (1, 3),
        (1, 2),
        dict(width=8, proj_hidden=32, proj_dim=16, batch_size=64),
        {"simclr": dict(method="simclr"), "moco": dict(method="moco", queue_size=256)},
        TRIED[4:5],
    ),
}


def config_of(
    setting: Setting, method: str, *changes: dict[str, Any], seed: int = 0
) -> TrainConfig:
    """:data:`PREVIOUS` for ``method`` with ``changes`` on top, in the profile's setting."""
    values = {**PREVIOUS, **setting.methods[method]}
    for change in changes:
        values.update(change)
    values.update(setting.overrides)
    return TrainConfig(**values, seed=seed)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _steps(config: TrainConfig, data: Dataset) -> int:
    return config.epochs * (int(data.train_labels.shape[0]) // config.batch_size)


def trained_row(
    group: str, label: str, config: TrainConfig, data: Dataset, store: RunStore, split: str
) -> dict[str, Any]:
    """Train (or reuse) ``config`` on ``data`` and probe its backbone on ``data``'s evaluation
    set (the held-out images or the test set): one row of the benchmark."""
    r = run(config, data, store, progress=True)
    m = probes.evaluate_run(r, data)
    return {
        "group": group,
        "method": config.method,
        "label": label,
        "split": split,
        "seed": config.seed,
        "epochs": config.epochs,
        "steps": _steps(config, data),
        "train_seconds": float(r.result["seconds"]),
        **_accuracies(m),
        "run_id": r.run_id,
        "config": dataclasses.asdict(config),
    }


def _accuracies(m: dict[str, Any]) -> dict[str, Any]:
    n = int(m["num_test"])
    return {
        "linear_accuracy": float(m["linear_accuracy"]),
        "linear_se": stats.binomial_se(float(m["linear_accuracy"]), n),
        "knn_accuracy": float(m["knn_accuracy"]),
        "num_test": n,
    }


def baseline_rows(setting: Setting, data: Dataset, store: RunStore, split: str) -> list[dict]:
    """The raw-pixel probes and a random (untrained) encoder's, of the chosen and the previous
    architecture (:func:`negatives.probes.baselines`), on ``data``'s evaluation set: the same
    protocol as a trained encoder's."""
    rows = []
    for name, change in (("chosen", CHOSEN), ("previous", {})):
        c = config_of(setting, "simclr", change)
        found = probes.baselines(c, data, store)
        if name == "chosen":
            rows.append(("raw pixels", found["raw pixels"]))
        grid = f", {c.feature_grid}x{c.feature_grid} grid" if c.feature_grid > 1 else ""
        label = f"random encoder, the {name} one (width {c.width}{grid})"
        rows.append((label, found[f"random {c.arch} encoder"]))
    return [
        {"group": "baseline", "method": "-", "label": label, "split": split, "seed": None,
         "epochs": 0, "steps": 0, "train_seconds": 0.0, **_accuracies(m), "run_id": None,
         "config": None}
        for label, m in rows
    ]  # fmt: skip


def select(setting: Setting, val: Dataset, store: RunStore) -> list[dict[str, Any]]:
    """The ladder, the tried changes and the frontier, on the validation split."""
    rows: list[dict[str, Any]] = []
    for method in setting.methods:
        changes: list[dict[str, Any]] = []
        for label, change in LADDER:
            changes.append(change)
            config = config_of(setting, method, *changes)
            rows.append(trained_row("ladder", label, config, val, store, "validation"))
    for method, label, change in setting.tried:
        config = config_of(setting, method, CHOSEN, change)
        rows.append(trained_row("tried", label, config, val, store, "validation"))
    rows += frontier(setting, val, store)
    return rows + baseline_rows(setting, val, store, "validation")


def frontier(setting: Setting, val: Dataset, store: RunStore) -> list[dict[str, Any]]:
    """The chosen recipe of each method at each of the profile's epochs (validation split)."""
    return [
        trained_row(
            "frontier",
            f"{e} epoch{'s' if e > 1 else ''}",
            config_of(setting, method, CHOSEN, {"epochs": e}),
            val,
            store,
            "validation",
        )
        for method in setting.methods
        for e in setting.frontier_epochs
    ]


def choose(points: list[dict[str, Any]], budgets: tuple[int, ...], record_size: int) -> dict:
    """Each budget's point: the frontier row with the best validation linear accuracy whose
    seconds, scaled to the record's steps (``record_size`` training images), fit in it."""

    def record_seconds(p: dict[str, Any]) -> float:
        per_epoch = record_size // p["config"]["batch_size"]
        return p["train_seconds"] * p["epochs"] * per_epoch / p["steps"]

    out = {}
    for budget in budgets:
        fits = [p for p in points if record_seconds(p) <= budget]
        if fits:
            best = max(fits, key=lambda p: p["linear_accuracy"])
            out[budget] = {"method": best["method"], "epochs": best["epochs"], "row": best}
    return out


def record(
    setting: Setting, full: Dataset, store: RunStore, chosen: dict, seeds: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each budget's point on all training images, ``seeds`` seeds, probed on the test set:
    the per-run rows and one summary per budget (mean and 95% t-interval over seeds)."""
    rows, summary = [], []
    for budget, pick in chosen.items():
        mine = []
        for seed in range(seeds):
            config = config_of(
                setting, pick["method"], CHOSEN, {"epochs": pick["epochs"]}, seed=seed
            )
            label = f"{budget} s budget: {pick['epochs']} epochs"
            mine.append(trained_row("record", label, config, full, store, "test"))
        rows += mine
        acc = [r["linear_accuracy"] for r in mine]
        mean, low, high = stats.mean_interval(acc)
        knn = stats.mean_interval([r["knn_accuracy"] for r in mine])
        secs = [r["train_seconds"] for r in mine]
        summary.append(
            {"budget": budget, "method": pick["method"], "epochs": pick["epochs"],
             "steps": mine[0]["steps"], "seeds": seeds, "seconds_mean": sum(secs) / len(secs),
             "seconds_max": max(secs), "within_budget": max(secs) <= budget,
             "linear_mean": mean, "linear_low": low, "linear_high": high,
             "knn_mean": knn[0], "knn_low": knn[1], "knn_high": knn[2],
             "validation_accuracy": pick["row"]["linear_accuracy"]}
        )  # fmt: skip
    return rows, summary


def train_peer(config: TrainConfig, data: Dataset, workers: int) -> tuple[torch.nn.Module, float]:
    """SimCLR trained the usual way: a ``DataLoader`` (``workers`` processes) of PIL images with
    torchvision's per-image transforms, the views made on the fly; the model, loss, optimiser,
    schedule and precision are the trainer's (``negatives.train``'s own step functions). Returns
    the model and the seconds from the loader's start to the last step."""
    from throughput import _TwoViews, reference_transform
    from torch.utils.data import DataLoader

    from negatives import config as cfg
    from negatives.epochs import _lr_factor
    from negatives.train import (
        Batch,
        Encoder,
        make_optimizer,
        model_for,
        simclr_step,
        stream_generator,
        update,
    )

    if config.method != "simclr":
        raise ValueError(f"the peer trains SimCLR, not method={config.method!r}")
    torch.manual_seed(config.seed)
    images = data.train_images
    size, channels = images.shape[-1], images.shape[1]
    views = reference_transform(size, channels, config.strength, config.min_scale)
    loader = DataLoader(
        _TwoViews(images, views),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
    )
    model = model_for(config, images).to(memory_format=torch.channels_last)
    bf16 = cfg.resolve_precision(config.precision, "cpu") == "bf16"
    encoder = Encoder(model, "cpu", bf16=bf16, channels_last=True)
    optimizer = make_optimizer(model, config)
    per_epoch = len(loader)
    total, warmup = per_epoch * config.epochs, int(config.warmup_epochs * per_epoch)
    mask_gen, labels = stream_generator(config.seed, "mask"), data.train_labels
    start, step = time.perf_counter(), 0
    for _ in range(config.epochs):
        for v1, v2, ids in loader:
            for g in optimizer.param_groups:
                g["lr"] = config.lr * _lr_factor(step, total, warmup, config.schedule)
            batch = Batch(ids, labels[ids], v1, v2)
            update(optimizer, simclr_step(encoder, batch, config, mask_gen).loss)
            step += 1
    return model.eval(), time.perf_counter() - start


def peer(
    setting: Setting, val: Dataset, store: RunStore, chosen: dict, workers: int
) -> list[dict[str, Any]]:
    """Our SimCLR point of the 60-second budget (or the largest budget below) and the usual
    pipeline for the same steps, on the validation split: seconds and accuracies, both."""
    budget = max((b for b in chosen if b <= 60), default=min(chosen))
    epochs = chosen[budget]["epochs"]
    config = config_of(setting, "simclr", CHOSEN, {"epochs": epochs})
    ours = trained_row("peer", "ours: data on the device, batched views", config, val, store,
                       "validation")  # fmt: skip

    def usual(**_: Any) -> dict[str, Any]:
        model, seconds = train_peer(config, val, workers)
        return {"seconds": seconds, **probes.evaluate_model(model, val)}

    m = store.cached(
        "speedrun-peer",
        usual,
        config=dataclasses.asdict(config),
        data=val,
        workers=workers,
        version=probes.PROBE_VERSION,
    )
    theirs = {
        **ours,
        "label": f"usual: DataLoader ({workers} workers), torchvision per-image transforms",
        "train_seconds": float(m["seconds"]),
        **_accuracies(m),
        "run_id": None,
    }
    return [ours, theirs]


# -- tables and the figure --------------------------------------------------------------------


def _markdown(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns.values()) + " |"]
    lines.append("| " + " | ".join("---" if k in ("label", "method", "group") else "---:"
                                   for k in columns) + " |")  # fmt: skip
    for r in rows:
        cells = []
        for k in columns:
            v = r.get(k)
            if isinstance(v, float):
                v = f"{v:,.1f}" if k.endswith("seconds") else f"{v:.2f}"
            elif isinstance(v, int) and not isinstance(v, bool):
                v = f"{v:,}"
            cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


ROW_COLUMNS = {
    "group": "group",
    "method": "method",
    "label": "recipe",
    "epochs": "epochs",
    "steps": "steps",
    "train_seconds": "train seconds",
    "linear_accuracy": "linear %",
    "linear_se": "± s.e.",
    "knn_accuracy": "k-NN %",
}


def record_markdown(summary: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> str:
    """The record table: each budget's best linear-probe test accuracy with its seeds and
    interval, and the baselines on the same protocol."""
    lines = [
        "| budget | method, recipe | train seconds (mean; max) | seeds | linear probe % "
        "[95% interval] | k-NN % | over raw pixels |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    pixels = next(b["linear_accuracy"] for b in baselines if b["label"].startswith("raw"))
    for s in summary:
        lines.append(
            f"| {s['budget']} s | {s['method']}, {s['epochs']} epoch"
            f"{'s' if s['epochs'] > 1 else ''} ({s['steps']:,} steps) | "
            f"{s['seconds_mean']:.1f}; {s['seconds_max']:.1f} | {s['seeds']} | "
            f"**{s['linear_mean']:.2f}** [{s['linear_low']:.2f}, {s['linear_high']:.2f}] | "
            f"{s['knn_mean']:.2f} | {s['linear_mean'] - pixels:+.2f} |"
        )
    for b in baselines:
        lines.append(
            f"| 0 s | {b['label']} | 0 | | {b['linear_accuracy']:.2f} | "
            f"{b['knn_accuracy']:.2f} | {b['linear_accuracy'] - pixels:+.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--profile", choices=tuple(SETTINGS), default="book")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated of {STAGES}")
    p.add_argument("--seeds", type=int, default=3, help="seeds per budget in the record")
    p.add_argument("--workers", type=int, default=2, help="the peer's DataLoader workers")
    p.add_argument("--results-dir", default="results", help="run cache (shared with the book)")
    p.add_argument("--data-root", default=None)
    p.add_argument(
        "--json", default=None, help="default: benchmarks/results/speedrun-<profile>.json"
    )
    args = p.parse_args(argv)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        p.error(f"--stages={args.stages!r}: allowed {list(STAGES)}, comma-separated")
    if args.seeds < 2:
        p.error(f"--seeds={args.seeds}: the record's interval needs at least 2")
    if args.workers < 0:
        p.error(f"--workers={args.workers} must be >= 0")

    setting = SETTINGS[args.profile]
    store = RunStore(args.results_dir)
    val = load_dataset(setting.dataset, args.data_root, validation=setting.validation)
    full = load_dataset(setting.dataset, args.data_root)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if "select" in stages:
        rows += select(setting, val, store)
        points = [r for r in rows if r["group"] == "frontier"]
    else:  # the choice needs the frontier (from the cache when it was measured)
        points = frontier(setting, val, store)
        rows += points
    chosen = choose(points, setting.budgets, int(full.train_labels.shape[0]))
    summary: list[dict[str, Any]] = []
    if "record" in stages:
        record_rows, summary = record(setting, full, store, chosen, args.seeds)
        rows += record_rows + baseline_rows(setting, full, store, "test")
    if "peer" in stages:
        rows += peer(setting, val, store, chosen, args.workers)

    hardware = f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    print(
        f"\nSpeedrun ({args.profile}): {setting.dataset}; choices on the last "
        f"{setting.validation:,} training images held out, the record on the test set; "
        f"{hardware}; torch {torch.__version__}\n"
    )
    for group, title in (
        ("ladder", "The ladder (validation split): each kept change on top of those before"),
        ("tried", "Tried on top of the chosen recipe (validation split), not kept"),
        ("frontier", "The frontier (validation split): the chosen recipe at more epochs"),
        ("peer", "Against the usual pipeline (validation split), the same steps"),
    ):
        mine = [r for r in rows if r["group"] == group]
        if mine:
            print(f"{title}\n\n{_markdown(mine, ROW_COLUMNS)}\n")
    val_base = [r for r in rows if r["group"] == "baseline" and r["split"] == "validation"]
    if val_base:
        print(f"Baselines (validation split)\n\n{_markdown(val_base, ROW_COLUMNS)}\n")
    test_base = [r for r in rows if r["group"] == "baseline" and r["split"] == "test"]
    if summary:
        print("The record (test set): the best linear probe within each training budget\n")
        print(record_markdown(summary, test_base) + "\n")
    out = {
        "profile": args.profile,
        "dataset": setting.dataset,
        "validation": setting.validation,
        "hardware": hardware,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": time.perf_counter() - t_start,
        "methods": list(setting.methods),
        "chosen_recipe": CHOSEN,
        "choices": {str(b): {k: v for k, v in c.items() if k != "row"} for b, c in chosen.items()},
        "record": summary,
        "rows": rows,
    }
    path = Path(args.json) if args.json else RESULTS / f"speedrun-{args.profile}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    show.use()
    speedrun_figure(out).savefig(path.with_suffix(".png"), dpi=110)
    print(f"wrote {path} and {path.with_suffix('.png')}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
