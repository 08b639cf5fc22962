from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from negatives import config as cfg
from negatives import runs
from negatives.data import load_dataset
from negatives.train import TrainConfig, TrainingDiverged, execution, run, sweep, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_size=512, test_size=128)


@pytest.fixture(scope="module")
def latent():
    return load_dataset(
        "latent-class", num_classes=5, dim=8, noise=0.3, train_size=500, test_size=100
    )


def _tiny(**kw) -> TrainConfig:
    base = dict(
        epochs=2, batch_size=64, width=8, proj_hidden=32, proj_dim=16, queue_size=128, device="cpu"
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="simclr"),
        dict(method="simclr", negatives="random-k", num_negatives=7),
        dict(method="simclr", negatives="band", band_low=0.0, band_high=0.25),
        dict(method="simclr", negatives="no-same-class"),
        dict(method="moco"),
        dict(method="moco", negatives="band", band_low=0.05, band_high=1.0),
        dict(method="moco", negatives="random-k", num_negatives=16),
        dict(method="moco", negatives="no-same-class"),
    ],
)
def test_every_regime_trains_and_logs(digits, kw) -> None:
    out = train(_tiny(**kw), digits, progress=False)
    h = out.history
    assert h["epoch"] == [1, 2]
    assert all(math.isfinite(x) for x in h["loss"])
    if kw.get("negatives") == "no-same-class":
        assert max(h["same_class_fraction"]) == 0.0
    if kw.get("negatives") == "random-k":
        assert h["negatives_used"][-1] == pytest.approx(kw["num_negatives"])
    if kw.get("method") == "moco" and kw.get("negatives", "all") == "all":
        assert 127 <= h["negatives_used"][-1] <= 128
        # same-class rate of the whole queue is near the base rate 1/10 (digits: 10 classes)
        assert 0.02 < h["same_class_fraction"][-1] < 0.3


def test_the_querys_own_key_is_never_its_negative() -> None:
    # the queue holds the whole data set, so each query's own earlier key is always there
    small = load_dataset("digits", train_size=128, test_size=32)
    out = train(_tiny(method="moco", epochs=3, batch_size=128), small, progress=False)
    assert out.history["negatives_used"][-1] == pytest.approx(127)


def test_training_lowers_the_loss(digits) -> None:
    out = train(_tiny(epochs=6, method="simclr"), digits, progress=False)
    assert out.history["loss"][-1] < out.history["loss"][0]


def test_latent_class_positives(latent) -> None:
    out = train(_tiny(arch="mlp", positives="latent-class", batch_size=50), latent, progress=False)
    assert out.history["loss"][-1] < out.history["loss"][0]


def test_same_seed_gives_identical_results_and_another_seed_does_not(digits) -> None:
    a = train(_tiny(method="moco"), digits, progress=False)
    b = train(_tiny(method="moco"), digits, progress=False)
    c = train(_tiny(method="moco", seed=1), digits, progress=False)
    assert a.history["loss"] == b.history["loss"]
    for (ka, va), (_, vb) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert torch.equal(va, vb), ka
    assert a.history["loss"] != c.history["loss"]


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_interrupted_run_resumes_to_the_same_result(digits, tmp_path, method) -> None:
    config = _tiny(method=method, epochs=3)
    whole = train(config, digits, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    part = train(config, digits, checkpoint=ckpt, progress=False, stop_after_epochs=1)
    assert part.history["epoch"] == [1] and not part.extra["finished"]
    resumed = train(config, digits, checkpoint=ckpt, progress=False)
    assert resumed.history["epoch"] == [1, 2, 3]
    assert resumed.history["loss"] == pytest.approx(whole.history["loss"], rel=1e-6)


def test_divergence_stops_with_a_clear_error_and_keeps_the_checkpoint(digits, tmp_path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    config = _tiny(epochs=3)
    train(config, digits, checkpoint=ckpt, progress=False, stop_after_epochs=1)
    before = ckpt.read_bytes()

    # poison the weights after the first epoch so that the loss becomes NaN
    state = runs.load_torch(ckpt)
    state["model"] = {
        k: (v * math.nan if v.is_floating_point() else v) for k, v in state["model"].items()
    }
    poisoned = tmp_path / "poisoned.pt"
    runs.save_torch(poisoned, state)
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        train(config, digits, checkpoint=poisoned, progress=False)
    assert ckpt.read_bytes() == before


def test_run_cache_reuses_finished_runs_and_detects_corruption(digits, tmp_path) -> None:
    store = runs.RunStore(tmp_path)
    config = _tiny(epochs=1)
    first = run(config, digits, store, progress=False)
    result_path = store.run_dir(first.run_id) / "result.json"
    mtime = result_path.stat().st_mtime_ns
    again = run(config, digits, store, progress=False)
    assert again.run_id == first.run_id and result_path.stat().st_mtime_ns == mtime
    assert again.history == first.history
    model = again.load_model()
    assert sum(p.numel() for p in model.parameters()) > 0
    # a truncated result is detected and recomputed
    result_path.write_text(result_path.read_text()[:50])
    third = run(config, digits, store, progress=False)
    assert third.history["loss"] == pytest.approx(first.history["loss"])
    assert (store.run_dir(first.run_id) / "result.json.corrupt").exists()
    # the config and the data both name the run
    other = sweep([config.replace(seed=1)], digits, store, progress=False)[0]
    assert other.run_id != first.run_id


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="byol"), "method"),
        (dict(negatives="hardest"), "negatives"),
        (dict(negatives="random-k"), "num_negatives"),
        (dict(negatives="random-k", num_negatives=0), "num_negatives"),
        (dict(negatives="random-k", num_negatives=64, batch_size=64), "num_negatives"),
        (dict(num_negatives=5), "num_negatives"),
        (dict(band_low=0.5, band_high=0.5), "band_low"),
        (dict(band_high=1.5), "band_high"),
        (dict(temperature=0.0), "temperature"),
        (dict(epochs=0), "epochs"),
        (dict(device="tpu"), "device"),
        (dict(precision="fp16"), "precision"),
    ],
)
def test_bad_config_names_the_parameter(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_config_fields_are_plain_values() -> None:
    for f in dataclasses.fields(TrainConfig):
        assert f.type in {"str", "int", "float", "bool", "int | None"}, f


def test_bf16_autocast_trains_deterministically_and_differs_from_fp32(digits, one_thread) -> None:
    # bf16 is honoured on any CPU (emulated where not native), so this runs everywhere
    a = train(_tiny(precision="bf16"), digits, progress=False)
    b = train(_tiny(precision="bf16"), digits, progress=False)
    f = train(_tiny(precision="fp32"), digits, progress=False)
    assert a.precision == "bf16" and f.precision == "fp32"
    assert all(math.isfinite(x) for x in a.history["loss"])
    assert a.history["loss"] == b.history["loss"]
    assert a.history["loss"] != f.history["loss"]  # the autocast really changed the arithmetic
    # weights and optimiser state stay float32
    assert all(p.dtype == torch.float32 for p in a.model.parameters())


def test_auto_precision_follows_the_hardware(digits, monkeypatch, one_thread) -> None:
    monkeypatch.setattr(cfg, "native_bf16", lambda device: False)
    assert train(_tiny(epochs=1), digits, progress=False).precision == "fp32"
    monkeypatch.setattr(cfg, "native_bf16", lambda device: True)
    assert train(_tiny(epochs=1), digits, progress=False).precision == "bf16"


def test_run_identity_includes_the_resolved_precision_and_threads(
    digits, tmp_path, monkeypatch
) -> None:
    store = runs.RunStore(tmp_path)
    config = _tiny(epochs=1)
    monkeypatch.setattr(cfg, "native_bf16", lambda device: False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fp32_one = run(config, digits, store, progress=False)
        assert execution(config) == {"device": "cpu", "precision": "fp32", "cpu_threads": 1}
        assert fp32_one.result["execution"] == execution(config)
        torch.set_num_threads(2)
        fp32_two = run(config, digits, store, progress=False)
        monkeypatch.setattr(cfg, "native_bf16", lambda device: True)
        torch.set_num_threads(1)
        bf16_one = run(config, digits, store, progress=False)
    finally:
        torch.set_num_threads(before)
    ids = {fp32_one.run_id, fp32_two.run_id, bf16_one.run_id}
    assert len(ids) == 3  # a cached result is only reused under the same arithmetic


# -- MoCo's shuffle-BN -------------------------------------------------------------------------


def test_a_querys_key_is_normalised_with_other_samples_than_its_query() -> None:
    from negatives.models import SplitBatchNorm
    from negatives.train import shuffled_keys, stream_generator

    b, groups = 64, 8
    x = torch.randn(b, 5, generator=torch.Generator().manual_seed(0)) * 3
    bn = SplitBatchNorm(5, groups).train()
    q = bn(x)  # query: groups of consecutive samples, sample i in block i // 8
    k = shuffled_keys(bn, x, groups, stream_generator(0, "shuffle"))
    # the permutation the key pass used, drawn again from the same stream
    perm = torch.randperm(b, generator=stream_generator(0, "shuffle"))
    size = b // groups
    query_group = {i: set(range(i // size * size, (i // size + 1) * size)) for i in range(b)}
    position = {int(s): t for t, s in enumerate(perm)}  # sample -> row in the shuffled batch
    key_group = {
        i: {int(s) for s in perm[position[i] // size * size : (position[i] // size + 1) * size]}
        for i in range(b)
    }
    for i in range(b):
        members = sorted(key_group[i])
        mean, var = x[members].mean(0), x[members].var(0, unbiased=False)
        torch.testing.assert_close(
            k[i], (x[i] - mean) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5
        )
        assert key_group[i] != query_group[i]  # other statistics than its query's
    overlap = sum(len(key_group[i] & query_group[i]) for i in range(b)) / b
    assert overlap < size / 2  # about size / groups by chance, never the whole block
    assert not torch.allclose(q, k)
    assert torch.equal(shuffled_keys(bn, x, 1, stream_generator(0, "shuffle")), bn(x))


def test_moco_trains_with_split_batchnorm_by_default(digits) -> None:
    from negatives.models import SplitBatchNorm
    from negatives.train import MOCO_BN_GROUPS

    assert _tiny(method="moco").batchnorm_groups == MOCO_BN_GROUPS
    assert _tiny(method="simclr").batchnorm_groups == 1
    out = train(_tiny(method="moco", bn_groups=4), digits, progress=False)
    groups = {m.groups for m in out.model.modules() if isinstance(m, SplitBatchNorm)}
    assert groups == {4}
    assert {m.groups for m in out.key_model.modules() if isinstance(m, SplitBatchNorm)} == {4}
    plain = train(_tiny(method="moco", bn_groups=1), digits, progress=False)
    assert not any(isinstance(m, SplitBatchNorm) for m in plain.model.modules())
    assert out.history["loss"] != plain.history["loss"]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="simclr", bn_groups=8), "bn_groups"),
        (dict(method="moco", bn_groups=0), "bn_groups"),
        (dict(method="moco", bn_groups=40, batch_size=64), "bn_groups"),
        (dict(schedule="step"), "schedule"),
    ],
)
def test_bad_batchnorm_groups_and_schedule_are_named(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny(**kw)


# -- common random numbers ---------------------------------------------------------------------


def _recorded_views(config, data, monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(sample ids, both views stacked) of every training step of ``config``."""
    from negatives import train as train_module

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = train_module._views

    def spy(images, idx, plan, where):
        v1, v2 = original(images, idx, plan, where)
        seen.append((idx.clone(), torch.stack([v1, v2], dim=1)))
        return v1, v2

    monkeypatch.setattr(train_module, "_views", spy)
    train(config, data, progress=False)
    monkeypatch.setattr(train_module, "_views", original)
    return seen


@pytest.mark.parametrize(
    "a, b",
    [
        (dict(method="simclr"), dict(method="simclr", negatives="random-k", num_negatives=7)),
        (dict(method="moco"), dict(method="moco", negatives="band", band_low=0.0, band_high=0.1)),
        (dict(method="moco"), dict(method="moco", negatives="random-k", num_negatives=9)),
        (dict(method="moco", temperature=0.07), dict(method="moco", temperature=0.2)),
    ],
)
def test_conditions_of_a_seed_share_order_and_views(digits, monkeypatch, a, b) -> None:
    first = _recorded_views(_tiny(**a), digits, monkeypatch)
    second = _recorded_views(_tiny(**b), digits, monkeypatch)
    assert len(first) == len(second) > 0
    for (ia, va), (ib, vb) in zip(first, second, strict=True):
        assert torch.equal(ia, ib) and torch.equal(va, vb)
    other_seed = _recorded_views(_tiny(**a, seed=1), digits, monkeypatch)
    assert not torch.equal(first[-1][1], other_seed[-1][1])


def test_views_follow_the_sample_not_the_batch_size(digits, monkeypatch) -> None:
    # batch 32 and 64 see the same sample at the same position of an epoch in the same view
    small = _recorded_views(_tiny(batch_size=32, epochs=1), digits, monkeypatch)
    large = _recorded_views(_tiny(batch_size=64, epochs=1), digits, monkeypatch)
    ids_s, views_s = torch.cat([i for i, _ in small]), torch.cat([v for _, v in small])
    ids_l, views_l = torch.cat([i for i, _ in large]), torch.cat([v for _, v in large])
    n = min(len(ids_s), len(ids_l))
    assert torch.equal(ids_s[:n], ids_l[:n]) and torch.equal(views_s[:n], views_l[:n])


def test_latent_class_positives_are_shared_across_batch_sizes(latent, monkeypatch) -> None:
    cfg_ = dict(arch="mlp", positives="latent-class", epochs=1)
    small = _recorded_views(_tiny(batch_size=25, **cfg_), latent, monkeypatch)
    large = _recorded_views(_tiny(batch_size=50, **cfg_), latent, monkeypatch)
    assert torch.equal(torch.cat([i for i, _ in small]), torch.cat([i for i, _ in large]))
    # the positives (second view: another sample of the class) too
    assert torch.equal(torch.cat([v for _, v in small]), torch.cat([v for _, v in large]))
