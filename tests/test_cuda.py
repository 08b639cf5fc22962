"""The trainer, the augmentation and the probes on a GPU against the CPU (skipped without one).

``benchmarks/gpu_check.sh`` runs these (``pytest -m cuda``). GPU kernels are not bitwise
deterministic and round differently (TF32, other reduction orders), so the comparisons are
within tolerances, not exact.
"""

from __future__ import annotations

import pytest
import torch

from negatives import augment, probes
from negatives.data import load_dataset
from negatives.models import build_model
from negatives.train import TrainConfig, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_size=512, test_size=128)


def test_augmentation_on_cuda_matches_the_cpu_for_the_same_parameters() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8)
    params = augment.sample_view_params(64, 3, g, strength=0.5)
    cpu = augment.apply_view(images, params)
    gpu = augment.apply_view(images.cuda(), params.to("cuda"))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_trainer_on_cuda_follows_the_cpu(digits, method) -> None:
    kw = dict(
        method=method,
        epochs=2,
        batch_size=64,
        width=8,
        proj_hidden=32,
        proj_dim=16,
        queue_size=128,
        precision="fp32",
    )
    cpu = train(TrainConfig(device="cpu", **kw), digits, progress=False)
    gpu = train(TrainConfig(device="cuda", **kw), digits, progress=False)
    assert gpu.device == "cuda"
    # the same data stream and initialisation: the losses agree to rounding (not bitwise)
    for a, b in zip(cpu.history["loss"], gpu.history["loss"], strict=True):
        assert b == pytest.approx(a, rel=2e-2)


def test_probes_on_cuda_match_the_cpu(digits) -> None:
    torch.manual_seed(0)
    model = build_model("cnn-small", 1, 8, width=8, proj_hidden=16, proj_dim=8)
    cpu = probes.extract_features(model, digits.train_images, precision="fp32")
    gpu = probes.extract_features(model, digits.train_images, device="cuda", precision="fp32")
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    a = probes.evaluate_model(model, digits)
    b = probes.evaluate_model(model, digits, device="cuda")
    assert b["linear_accuracy"] == pytest.approx(a["linear_accuracy"], abs=2.0)
    assert b["knn_accuracy"] == pytest.approx(a["knn_accuracy"], abs=2.0)
