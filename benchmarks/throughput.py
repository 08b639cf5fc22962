"""Training throughput: our trainer against a reference loop written the usual way.

The reference: a torch ``DataLoader`` over PIL images with per-image torchvision transforms
(RandomResizedCrop, RandomHorizontalFlip, ColorJitter with p = 0.8, RandomGrayscale for colour),
the same model and the trainer's own training step (``negatives.train.simclr_step`` and
``update``, the optimiser of ``negatives.train.make_optimizer``) at the same batch size, in
float32. Ours:
``negatives.train.train`` (data on the device as uint8, batched augmentation) as shipped
(``precision="auto"``: bf16 autocast of the encoder where the device has native bf16) and in
float32. Both count images per second with both views (2 x batch per step), after a warm-up.

Every variant runs in its own process (so that peak memory is its own), ``--repeats`` times,
interleaved, on the same machine; the table gives the median and the range. Two controls
separate the data pipeline from the arithmetic: ours in float32, and the reference with the same
bf16 autocast as ours. The speed-up is against the fastest reference variant in float32.

    python benchmarks/throughput.py                     # small CNN, 28x28 Fashion-MNIST, CPU
    python benchmarks/throughput.py --device cuda --arch resnet18-cifar --dataset cifar10 --data-root /data
    python benchmarks/throughput.py --device cuda --arch resnet18-cifar --synthetic   # no CIFAR files

Prints a table (markdown) and, with ``--json PATH``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from negatives import augment
from negatives.config import resolve_device, resolve_precision
from negatives.data import Dataset as Dataset_
from negatives.data import load_dataset
from negatives.train import (
    Batch,
    Encoder,
    TrainConfig,
    make_optimizer,
    model_for,
    simclr_step,
    stream_generator,
    train,
    update,
)


class _TwoViews(Dataset):
    def __init__(self, images: torch.Tensor, transform: transforms.Compose) -> None:
        arr = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        self.pil = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        img = self.pil[i]
        return self.transform(img), self.transform(img), i


def reference_transform(
    size: int, channels: int, strength: float = 0.5, min_scale: float = 0.2
) -> transforms.Compose:
    """torchvision's per-image SimCLR views (crops of ``[min_scale, 1]`` of the image's area)."""
    s = strength
    jitter = (
        transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
        if channels == 3
        else transforms.ColorJitter(0.8 * s, 0.8 * s)
    )
    steps = [
        transforms.RandomResizedCrop(size, scale=(min_scale, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([jitter], p=0.8),
    ]
    if channels == 3:
        steps.append(transforms.RandomGrayscale(p=0.2))
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
    return transforms.Compose(steps)


def _peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _model(
    config: TrainConfig, images: torch.Tensor, device: str, precision: str, *, channels_last: bool
) -> tuple[Encoder, torch.optim.Optimizer]:
    """The benchmark's model (as the trainer builds it) as the trainer runs it (autocast where
    ``precision`` is bf16), and the trainer's optimiser of it."""
    model = model_for(config, images).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    encoder = Encoder(model, device, bf16=precision == "bf16", channels_last=channels_last)
    return encoder, make_optimizer(model, config)


def _step(
    encoder: Encoder,
    opt: torch.optim.Optimizer,
    batch: Batch,
    config: TrainConfig,
    mask_gen: torch.Generator,
) -> None:
    """One SimCLR training step exactly as the trainer takes it: its loss, then its update."""
    update(opt, simclr_step(encoder, batch, config, mask_gen).loss)


def bench_reference(
    data, config: TrainConfig, steps: int, warmup: int, workers: int, device: str, precision: str
) -> dict:
    torch.manual_seed(0)
    images = data.train_images[: (steps + warmup) * config.batch_size]
    ds = _TwoViews(images, reference_transform(images.shape[-1], images.shape[1], config.strength))
    loader = DataLoader(
        ds,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device == "cuda",
        persistent_workers=workers > 0,
    )
    encoder, opt = _model(config, images, device, precision, channels_last=False)
    gen, labels = stream_generator(0, "mask"), data.train_labels.to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, t0 = 0, 0.0
    for i, (v1, v2, ids) in enumerate(loader):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
        ids = ids.to(device)
        _step(encoder, opt, Batch(ids, labels[ids], v1, v2), config, gen)
        if i >= warmup:
            done += 1
        if done == steps:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "images_per_s": 2 * done * config.batch_size / seconds,
        "seconds": seconds,
        "steps": done,
        **_memory(device),
    }


def bench_ours(data, config: TrainConfig, steps: int, warmup: int, device: str) -> dict:
    n = (steps + warmup) * config.batch_size
    sub = type(data)(
        **{
            **data.__dict__,
            "train_images": data.train_images[:n],
            "train_labels": data.train_labels[:n],
        }
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # one epoch over steps + warmup batches; the first epoch includes the warm-up steps, so run
    # two epochs and time the second (history["seconds"] is per epoch)
    out = train(config.replace(epochs=2), sub, progress=False)
    seconds = out.history["seconds"][-1]
    per_epoch = n // config.batch_size
    return {
        "images_per_s": 2 * per_epoch * config.batch_size / seconds,
        "seconds": seconds,
        "steps": per_epoch,
        "precision": out.precision,
        **_memory(device),
    }


def bench_model_only(
    data, config: TrainConfig, steps: int, warmup: int, device: str, precision: str
) -> dict:
    """The ceiling of any data pipeline: the trainer's step (same model, channels-last, autocast,
    loss and optimiser) on two fixed batches of views made once, so no data work is timed."""
    torch.manual_seed(0)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    images = data.train_images[: config.batch_size].to(device)
    v1, v2 = (
        augment.augment(images, gen).contiguous(memory_format=torch.channels_last) for _ in range(2)
    )
    encoder, opt = _model(config, images, device, precision, channels_last=True)
    ids = torch.arange(config.batch_size, device=device)
    batch = Batch(ids, data.train_labels[: config.batch_size].to(device), v1, v2)
    mask_gen = stream_generator(0, "mask")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        _step(encoder, opt, batch, config, mask_gen)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "images_per_s": 2 * steps * config.batch_size / seconds,
        "seconds": seconds,
        "steps": steps,
        **_memory(device),
    }


def _cpu_name() -> str:
    """The CPU's model name and its bf16 features (they decide what bf16 autocast buys)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}{' (' + ', '.join(bf16) + ')' if bf16 else ''}"


def _memory(device: str) -> dict:
    if device == "cuda":
        return {
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
            "memory_kind": "GPU allocated",
        }
    return {"peak_memory_mib": _peak_rss_mib(), "memory_kind": "process peak RSS"}


def _variants(workers: list[int], native_bf16: bool) -> list[dict]:
    """The loops measured: ours as shipped, our training step alone (no data pipeline: the
    ceiling), the reference per worker count in float32; where ours runs in bf16, also ours in
    float32 and the reference in bf16 (the controls)."""
    out = [{"key": "ours", "loop": "ours", "precision": "auto"}]
    if native_bf16:  # else "auto" is already float32
        out.append({"key": "ours-fp32", "loop": "ours", "precision": "fp32"})
    out.append({"key": "model-only", "loop": "model-only", "precision": "auto"})
    for w in workers:
        out.append({"key": f"ref-{w}w", "loop": "reference", "workers": w, "precision": "fp32"})
    if native_bf16:
        for w in workers:
            out.append(
                {"key": f"ref-{w}w-bf16", "loop": "reference", "workers": w, "precision": "bf16"}
            )
    return out


def synthetic_data(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> Dataset_:
    """Random uint8 images of CIFAR's shape, for timing where no CIFAR files exist."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Dataset_(
        name=f"synthetic-{channels}x{size}x{size}",
        train_images=images,
        train_labels=labels,
        test_images=images[:0],
        test_labels=labels[:0],
        classes=tuple(str(c) for c in range(10)),
        fingerprint=f"synthetic-{seed}",
    )


def _measure(args: argparse.Namespace, variant: dict) -> dict:
    device = resolve_device(args.device)
    need = (args.steps + args.warmup) * args.batch_size
    if args.synthetic:
        data = synthetic_data(need)
    else:
        data = load_dataset(args.dataset, args.data_root, train_size=need)
    config = TrainConfig(
        method="simclr",
        arch=args.arch,
        width=args.width,
        batch_size=args.batch_size,
        device=device,
        precision=variant["precision"],
    )
    if variant["loop"] == "ours":
        return bench_ours(data, config, args.steps, args.warmup, device)
    if variant["loop"] == "model-only":
        precision = resolve_precision(variant["precision"], device)
        return bench_model_only(data, config, args.steps, args.warmup, device, precision)
    return bench_reference(
        data, config, args.steps, args.warmup, variant["workers"], device, variant["precision"]
    )


def _label(v: dict, precision: str) -> str:
    if v["loop"] == "model-only":
        return f"our training step alone, fixed views ({precision}): the ceiling"
    if v["loop"] == "ours":
        p = f"auto = {precision}" if v["precision"] == "auto" else v["precision"]
        return f"negatives.train ({p})"
    return f"reference, DataLoader {v['workers']} workers ({v['precision']})"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--arch", default="cnn-small")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="measurements per loop (interleaved)")
    p.add_argument(
        "--workers",
        default="0,2",
        help="DataLoader worker counts of the reference loop, comma-separated",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="random 3x32x32 images (CIFAR's shape) instead of --dataset, e.g. with no CIFAR files",
    )
    p.add_argument("--json", default=None)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("steps", "repeats", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        p.error(f"--workers={args.workers!r} must be comma-separated integers, e.g. 0,2")
    if any(w < 0 for w in workers):
        p.error(f"--workers={args.workers!r}: worker counts must be >= 0")
    if args.variant:
        print(json.dumps(_measure(args, json.loads(args.variant))))
        return {}
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    variants = _variants(workers, precision == "bf16")
    argv = list(argv if argv is not None else sys.argv[1:])
    results: dict[str, list[dict]] = {v["key"]: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            # Each measurement in its own process so that peak memory is its own.
            cmd = [sys.executable, __file__, *argv, "--variant", json.dumps(v)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{v['key']} failed:\n{proc.stderr[-3000:]}")
            results[v["key"]].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = results[v["key"]][-1]
            print(
                f"[{rep + 1}/{args.repeats}] {v['key']}: {r['images_per_s']:,.0f} images/s",
                file=sys.stderr,
                flush=True,
            )
    hw = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
    summary = {}
    for v in variants:
        rates = [r["images_per_s"] for r in results[v["key"]]]
        summary[v["key"]] = {
            "label": _label(v, precision),
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "peak_memory_mib": max(r["peak_memory_mib"] for r in results[v["key"]]),
            "memory_kind": results[v["key"]][0]["memory_kind"],
            "steps": results[v["key"]][0]["steps"],
        }
    refs = [k for k in summary if k.startswith("ref-") and not k.endswith("-bf16")]
    best_ref = max(refs, key=lambda k: summary[k]["median"])
    speedup = summary["ours"]["median"] / summary[best_ref]["median"]
    print(
        f"\nSimCLR training throughput: {args.arch}, "
        f"{'synthetic 3x32x32' if args.synthetic else args.dataset}, batch {args.batch_size}, "
        f"device {device} ({hw}), torch {torch.__version__}; "
        f"{args.repeats} interleaved measurements of {args.steps} steps per loop\n"
    )
    print("| loop | images/s (both views), median | range | peak memory (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    for s in summary.values():
        print(
            f"| {s['label']} | {s['median']:,.0f} | {s['min']:,.0f} - {s['max']:,.0f} | "
            f"{s['peak_memory_mib']:,.0f} ({s['memory_kind']}) |"
        )
    print(
        f"\nspeed-up of negatives.train ({precision}) over the fastest float32 reference "
        f"({summary[best_ref]['label']}): {speedup:.2f}x"
    )
    same = f"{best_ref}-bf16" if precision == "bf16" else best_ref
    pipeline = summary["ours"]["median"] / summary[same]["median"]
    print(
        f"at the same precision ({precision}, {summary[same]['label']}): {pipeline:.2f}x "
        "(what the data pipeline alone buys)"
    )
    ceiling = summary["model-only"]["median"] / summary[best_ref]["median"]
    print(
        f"ceiling (our training step with no data work at all) over the fastest float32 "
        f"reference: {ceiling:.2f}x; ours reaches "
        f"{summary['ours']['median'] / summary['model-only']['median']:.0%} of the ceiling"
    )
    out = {
        "summary": summary,
        "measurements": results,
        "speedup": speedup,
        "speedup_same_precision": pipeline,
        "ceiling_speedup": ceiling,
        "fastest_reference": best_ref,
        "precision": precision,
        "device": device,
        "hardware": hw,
        "args": vars(args),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
