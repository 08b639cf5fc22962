"""What the cheap parts of a MoCo step cost, as a share of the step.

A MoCo v2 step of the book's setting (its encoder, ``config.BOOK_ENCODER``: a small CNN of width 32
with features on a 2x2 grid; batch 256, queue 4096, Fashion-MNIST) does
more than the encoder's forward and backward passes: the band regimes rank each query's queue
(``negatives.filters.band_mask``), the same-class-by-rank log ranks the queue of 64 queries
every ``RANK_LOG_EVERY`` steps, and shuffle-BN splits the batch norm into groups. This measures

* whole training steps (``negatives.train.train``, seconds per step of an epoch) of: all
  negatives, the hardest 5%, the easiest 95%, all but the hardest 0.1%, and all negatives
  without shuffle-BN (``bn_groups=1``);
* the parts alone, on the step's shapes: ``band_mask`` for each band, and the rank log's
  ranking per step (its cost divided by ``RANK_LOG_EVERY``);

and prints each as a share of the all-negatives step (the target: at most 15%).

    python benchmarks/step_costs.py                  # CPU, about 5 minutes on 2 cores
    python benchmarks/step_costs.py --device cuda

Writes ``benchmarks/results/step-costs-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from negatives import filters
from negatives.config import BOOK_ENCODER, resolve_device
from negatives.data import load_dataset
from negatives.epochs import RANK_LOG_EVERY, RANK_LOG_QUERIES, _rank_bin_same_class
from negatives.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
BANDS = {
    "hardest 5%": (0.0, 0.05),
    "easiest 95%": (0.05, 1.0),
    "all but hardest 0.1%": (0.001, 1.0),
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_part(fn, device: str, repeats: int = 30) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=60, help="training steps per variant (one epoch)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--queue-size", type=int, default=4096)
    book_width = int(BOOK_ENCODER["width"])
    p.add_argument(
        "--width", type=int, default=book_width, help=f"of the small CNN (the book's: {book_width})"
    )
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps={args.steps} must be >= 2")
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_root, train_size=args.steps * args.batch_size)
    base = TrainConfig(
        method="moco",
        width=args.width,
        feature_grid=int(BOOK_ENCODER["feature_grid"]),
        min_scale=float(BOOK_ENCODER["min_scale"]),
        epochs=2,
        batch_size=args.batch_size,
        queue_size=args.queue_size,
        temperature=0.2,
        device=device,
    )
    variants = {
        "all negatives": base,
        **{
            name: base.replace(negatives="band", band_low=lo, band_high=hi)
            for name, (lo, hi) in BANDS.items()
        },
        "all negatives, no shuffle-BN": base.replace(bn_groups=1),
    }
    steps: dict[str, float] = {}
    for name, config in variants.items():
        out = train(config, data, progress=False)
        # the second epoch: the first includes the queue fill and warm-up effects
        steps[name] = 1000 * out.history["seconds"][-1] / args.steps
        print(f"{name}: {steps[name]:.1f} ms per step", flush=True)

    g = torch.Generator(device=device).manual_seed(0)
    q = torch.nn.functional.normalize(
        torch.randn(args.batch_size, 64, device=device, generator=g), dim=1
    )
    keys = torch.nn.functional.normalize(
        torch.randn(args.queue_size, 64, device=device, generator=g), dim=1
    )
    sims = q @ keys.T  # (B, Q)
    valid = torch.ones_like(sims, dtype=torch.bool)
    valid[:, 0] = False  # a query's own key
    labels = torch.randint(0, 10, (args.batch_size,), device=device, generator=g)
    qlabels = torch.randint(0, 10, (args.queue_size,), device=device, generator=g)
    r = slice(0, RANK_LOG_QUERIES)
    same = labels[r, None] == qlabels[None, :]
    parts = {
        f"band_mask {name}": time_part(
            lambda lo=lo, hi=hi: filters.band_mask(sims, lo, hi, valid=valid), device
        )
        for name, (lo, hi) in BANDS.items()
    }
    parts["rank log (per step)"] = (
        time_part(lambda: _rank_bin_same_class(sims[r], same, valid[r]), device) / RANK_LOG_EVERY
    )
    ref = steps["all negatives"]
    hw = torch.cuda.get_device_name() if device == "cuda" else f"{os.cpu_count()}-core CPU"
    print(
        f"\nMoCo step costs: width {args.width}, batch {args.batch_size}, queue {args.queue_size}, "
        f"{args.dataset}, "
        f"{device} ({hw}), torch {torch.__version__}\n"
    )
    print("| what | ms per step | share of the all-negatives step |")
    print("| --- | ---: | ---: |")
    for name, ms in steps.items():
        print(f"| training step: {name} | {ms:.1f} | {100 * (ms - ref) / ref:+.0f}% vs all |")
    for name, ms in parts.items():
        print(f"| {name} alone | {ms:.1f} | {100 * ms / ref:.1f}% |")
    out = {
        "device": device,
        "hardware": hw,
        "steps_ms": steps,
        "parts_ms": parts,
        "args": vars(args),
    }
    path = Path(args.json) if args.json else RESULTS / f"step-costs-{device}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
