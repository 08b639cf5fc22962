"""Probes: each fast implementation against a direct loop, determinism, packed per-image results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from negatives import probes
from negatives.data import load_dataset
from negatives.models import build_model


def _blobs(n: int, dim: int = 6, classes: int = 3, seed: int = 0):
    """Three Gaussian classes with the same centres for every ``seed`` (the sample differs)."""
    centres = 3 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_linear_probe_is_deterministic_and_its_correct_vector_matches_accuracy() -> None:
    xtr, ytr = _blobs(400)
    xte, yte = _blobs(200, seed=1)
    a = probes.linear_probe(xtr, ytr, xte, yte)
    b = probes.linear_probe(xtr, ytr, xte, yte)
    assert a["linear_accuracy"] == b["linear_accuracy"] and torch.equal(
        a["linear_correct"], b["linear_correct"]
    )
    assert a["linear_correct"].shape == (200,)
    assert a["linear_accuracy"] == pytest.approx(100 * a["linear_correct"].double().mean().item())
    assert a["linear_accuracy"] > 90  # separable blobs


def test_knn_against_a_loop() -> None:
    xtr, ytr = _blobs(120)
    xte, yte = _blobs(40, seed=2)
    got = probes.knn_classifier(xtr, ytr, xte, yte, k=5, chunk=7)
    tr, te = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)
    expected = []
    for i in range(len(te)):
        sims = (tr @ te[i]).tolist()
        nearest = sorted(range(len(tr)), key=lambda j: -sims[j])[:5]
        votes = np.bincount(ytr[nearest].numpy(), minlength=3)
        expected.append(int(np.argmax(votes)) == int(yte[i]))  # ties to the smaller label
    assert got["knn_correct"].tolist() == expected


def test_mean_classifier_against_a_loop() -> None:
    xtr, ytr = _blobs(90)
    xte, yte = _blobs(30, seed=3)
    got = probes.mean_classifier(xtr, ytr, xte, yte)
    tr, te = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)
    means = torch.stack([tr[ytr == c].mean(0) for c in range(3)])
    expected = [(int((te[i] @ means.T).argmax()) == int(yte[i])) for i in range(len(te))]
    assert got["mean_correct"].tolist() == expected


def test_each_probe_names_its_quantities_as_probe_features_does() -> None:
    """One name per quantity: a probe's own keys are the keys of the cached evaluation dict."""
    xtr, ytr = _blobs(60)
    xte, yte = _blobs(20, seed=4)
    combined = probes.probe_features(xtr, ytr, xte, yte, k=5)
    parts = (
        probes.linear_probe(xtr, ytr, xte, yte),
        probes.mean_classifier(xtr, ytr, xte, yte),
        probes.knn_classifier(xtr, ytr, xte, yte, k=5),
    )
    for part in parts:
        assert set(part) <= set(combined)
        for key, value in part.items():
            if key.endswith("_correct"):  # a tensor here, packed for JSON there
                assert probes.pack_correct(value) == combined[key]
            else:
                assert value == combined[key]
    assert set().union(*parts) | {"num_test"} == set(combined)


@pytest.mark.parametrize("size", [1, 7, 8, 9, 10000])
def test_pack_and_unpack_round_trip(size: int) -> None:
    correct = torch.rand(size, generator=torch.Generator().manual_seed(size)) < 0.8
    text = probes.pack_correct(correct)
    assert isinstance(text, str) and len(text) <= size // 6 + 4
    assert probes.unpack_correct(text, size).tolist() == correct.tolist()
    rows = probes.unpack_rows([text, text], [size, size])
    assert rows.shape == (2, size)
    table = {"linear_correct": [text, text], "num_test": [size, size]}  # a run table's columns
    assert probes.correct_matrix(table, "linear_correct").tolist() == rows.tolist()
    with pytest.raises(ValueError, match="size"):
        probes.unpack_correct(text, size + 16)


def test_bf16_features_are_close_to_float32_and_probe_dicts_are_complete(one_thread) -> None:
    data = load_dataset("digits", train_size=200, test_size=60)
    torch.manual_seed(0)
    model = build_model("cnn-small", 1, 8, width=8, proj_hidden=16, proj_dim=8)
    fp32 = probes.extract_features(model, data.train_images, precision="fp32")
    bf16 = probes.extract_features(model, data.train_images, precision="bf16")
    assert fp32.dtype == bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05)
    out = probes.evaluate_model(model, data)
    assert out["num_test"] == 60
    for probe in ("linear", "knn", "mean"):
        acc = 100 * probes.unpack_correct(out[f"{probe}_correct"], 60).mean()
        assert out[f"{probe}_accuracy"] == pytest.approx(acc)
    both = probes.evaluate_model(model, data, which=("backbone", "projection"))
    assert (
        "projection_linear_accuracy" in both and both["linear_accuracy"] == out["linear_accuracy"]
    )
    with pytest.raises(ValueError, match="which"):
        probes.evaluate_model(model, data, which=("logits",))


def test_wrong_arguments_are_named_at_the_boundary(tmp_path) -> None:
    """negatives.run(config, "digits"), evaluate_model(run, data) and a model shown images of
    another shape: errors that name the argument, not an AttributeError from inside, and no
    accuracy computed on images the model was not built for."""
    import negatives
    from negatives.data import load_dataset
    from negatives.models import build_model
    from negatives.trainconfig import TrainConfig

    data = load_dataset("digits", train_size=40, test_size=20)
    with pytest.raises(TypeError, match=r"data must be a Dataset, not str"):
        negatives.run(TrainConfig(), "digits", negatives.RunStore(tmp_path))
    with pytest.raises(TypeError, match=r"config must be a TrainConfig, not dict"):
        negatives.train_encoder({"epochs": 1}, data)
    model = build_model("cnn-small", 1, 8, width=4)
    with pytest.raises(TypeError, match=r"model must be a Module, not str.*run.load_model\(\)"):
        negatives.evaluate_model("a run", data)
    wrong = torch.zeros(5, 1, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\(1, 16, 16\) per image, but the model was built for"):
        negatives.extract_features(model, wrong)
    features = negatives.extract_features(model, data.test_images)
    assert features.shape[0] == 20 and not features.requires_grad


def test_a_run_past_the_step_cap_is_refused_with_its_estimate(monkeypatch) -> None:
    from negatives.data import load_dataset
    from negatives.train import MAX_STEPS_ENV, check_data
    from negatives.trainconfig import TrainConfig

    data = load_dataset("digits", train_size=640, test_size=20)
    huge = TrainConfig(epochs=10**9, batch_size=64)
    with pytest.raises(ValueError, match=r"epochs=1000000000 x 10 steps per epoch .* = 1e\+10"):
        check_data(huge, data)
    monkeypatch.setenv(MAX_STEPS_ENV, "1e11")
    assert check_data(huge, data) == 640
