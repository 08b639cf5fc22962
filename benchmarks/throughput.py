"""Training throughput: our trainer against a reference loop written the usual way.

The reference: a torch ``DataLoader`` over PIL images with per-image torchvision transforms
(RandomResizedCrop, RandomHorizontalFlip, ColorJitter with p = 0.8, RandomGrayscale for colour),
the same model, the same NT-Xent loss, optimiser and batch size. Ours: ``negatives.train.train``
(data on the device as uint8, batched augmentation). Both count images per second with both
views (2 x batch per step), after a warm-up, in one process on the same machine.

    python benchmarks/throughput.py                     # small CNN, 28x28 Fashion-MNIST, CPU
    python benchmarks/throughput.py --device cuda --arch resnet18-cifar --dataset cifar10 --data-root /data

Prints a table (markdown) and, with ``--json PATH``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from negatives.config import resolve_device
from negatives.data import load_dataset
from negatives.losses import nt_xent
from negatives.models import build_model
from negatives.train import TrainConfig, train


class _TwoViews(Dataset):
    def __init__(self, images: torch.Tensor, transform: transforms.Compose) -> None:
        arr = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        self.pil = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.pil[i]
        return self.transform(img), self.transform(img)


def reference_transform(size: int, channels: int, strength: float = 0.5) -> transforms.Compose:
    s = strength
    jitter = (
        transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
        if channels == 3
        else transforms.ColorJitter(0.8 * s, 0.8 * s)
    )
    steps = [
        transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
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


def bench_reference(
    data, config: TrainConfig, steps: int, warmup: int, workers: int, device: str
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
    model = build_model(
        config.arch,
        images.shape[1],
        images.shape[-1],
        width=config.width,
        proj_hidden=config.proj_hidden,
        proj_dim=config.proj_dim,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, t0 = 0, 0.0
    for i, (v1, v2) in enumerate(loader):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
        _, z1 = model(v1)
        _, z2 = model(v2)
        loss = nt_xent(F.normalize(z1, dim=1), F.normalize(z2, dim=1), config.temperature).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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
        **_memory(device),
    }


def _memory(device: str) -> dict:
    if device == "cuda":
        return {
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
            "memory_kind": "GPU allocated",
        }
    return {"peak_memory_mib": _peak_rss_mib(), "memory_kind": "process peak RSS"}


def _measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    need = (args.steps + args.warmup) * args.batch_size
    data = load_dataset(args.dataset, args.data_root, train_size=need)
    config = TrainConfig(
        method="simclr", arch=args.arch, width=args.width, batch_size=args.batch_size, device=device
    )
    if args.only == "ours":
        return bench_ours(data, config, args.steps, args.warmup, device)
    return bench_reference(data, config, args.steps, args.warmup, args.workers, device)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--arch", default="cnn-small")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers of the reference loop"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    p.add_argument("--only", choices=["ours", "reference"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.only:
        print(json.dumps(_measure(args)))
        return {}
    # Each loop runs in its own process so that peak memory is its own.
    results = {}
    for which in ("ours", "reference"):
        cmd = [
            sys.executable,
            __file__,
            *(argv if argv is not None else sys.argv[1:]),
            "--only",
            which,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, ref = results["ours"], results["reference"]
    device = resolve_device(args.device)
    hw = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
    rows = [
        ("negatives.train (batched, on device)", ours),
        (f"reference (DataLoader, {args.workers} workers, per-image PIL)", ref),
    ]
    print(
        f"\nSimCLR training throughput: {args.arch}, {args.dataset}, batch {args.batch_size}, "
        f"device {device} ({hw}), torch {torch.__version__}\n"
    )
    print("| loop | images/s (both views) | peak memory (MiB) | timed steps |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in rows:
        print(
            f"| {name} | {r['images_per_s']:,.0f} | {r['peak_memory_mib']:,.0f} ({r['memory_kind']}) | {r['steps']} |"
        )
    speedup = ours["images_per_s"] / ref["images_per_s"]
    print(f"\nspeed-up: {speedup:.2f}x")
    out = {
        "ours": ours,
        "reference": ref,
        "speedup": speedup,
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
