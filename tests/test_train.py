from __future__ import annotations

import copy
import dataclasses
import math
import time

import pytest
import torch
import torch.nn.functional as F

from negatives import augment, filters, runs
from negatives import config as cfg
from negatives import memory as memory_module
from negatives import steps as steps_module
from negatives import train as train_module
from negatives.data import load_dataset
from negatives.memory import device_memory
from negatives.models import SplitBatchNorm, split_batchnorm
from negatives.queue import Queue
from negatives.runner import TRAINER_VERSION, execution, run, sweep
from negatives.train import (
    MOCO_BN_GROUPS,
    RANK_LOG_EVERY,
    Batch,
    Checkpoint,
    Encoder,
    TrainConfig,
    TrainingDiverged,
    estimate_memory,
    fill_queue,
    moco_step,
    model_for,
    shuffled_keys,
    simclr_step,
    stream_generator,
    train,
)


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
def test_every_regime_trains_and_logs_the_negatives_it_kept(digits, kw) -> None:
    out = train(_tiny(**kw), digits, progress=False)
    h = out.history
    assert h["epoch"] == [1, 2]
    used, same = h["negatives_used"], h["same_class_fraction"]
    regime, simclr = kw.get("negatives", "all"), kw["method"] == "simclr"
    # per query, SimCLR has the other 63 instances of its batch; MoCo the 128 keys of its queue
    # less its own earlier key, present for the few queries seen again across an epoch's end
    if regime == "all":
        assert (used == [63, 63]) if simclr else all(127 <= u <= 128 for u in used)
    elif regime == "random-k":
        assert used == [kw["num_negatives"]] * 2
    elif regime == "band":
        lo, hi = kw["band_low"], kw["band_high"]
        counts = [round(filters.band_fraction_kept(lo, hi, n) * n) for n in (63, 127, 128)]
        assert (
            (used == [counts[0]] * 2) if simclr else all(counts[1] <= u <= counts[2] for u in used)
        )
    if regime == "no-same-class":
        assert same == [0.0, 0.0] and all(u < (63 if simclr else 128) for u in used)
    elif regime in ("all", "random-k"):  # the same-class rate is near the base rate 1/10
        assert all(0.02 < f < 0.3 for f in same)
    if not simclr:
        assert len(h["same_class_by_rank"][-1]) == len(train_module.RANK_BIN_EDGES) - 1


@pytest.mark.parametrize("queue_size, valid", [(128, [127, 127]), (256, [127, 254])])
@pytest.mark.parametrize("band", [(0.0, 1.0), (0.0, 0.05), (0.05, 1.0), (0.001, 1.0), (0.1, 0.6)])
def test_a_band_run_uses_the_bands_count_of_each_querys_valid_negatives(
    band, queue_size, valid
) -> None:
    # 128 samples, one batch of all of them per epoch: after the fill the queue holds each
    # sample's key once; a queue of 256 then holds 128 empty slots, and after the first epoch
    # each sample's key twice. A query's own keys are not its negatives, so the valid count is
    # 128 - 1, then 128 - 1 (Q = 128) or 256 - 2 (Q = 256).
    small = load_dataset("digits", train_size=128, test_size=32)
    lo, hi = band
    kw = dict(negatives="band", band_low=lo, band_high=hi) if band != (0.0, 1.0) else {}
    config = _tiny(method="moco", batch_size=128, queue_size=queue_size, **kw)
    used = train(config, small, progress=False).history["negatives_used"]
    assert used == [round(filters.band_fraction_kept(lo, hi, n) * n) for n in valid]


# -- the training step against a per-query loop ------------------------------------------------


def _naive_mask(config, sims, valid, query_labels, negative_labels, uniform) -> torch.Tensor:
    """The regime's keep-mask built one query at a time from its definition. ``uniform``: the
    (B, N) uniform numbers a random subset is drawn with (the largest k of the valid ones)."""
    b, n = sims.shape
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        candidates = [j for j in range(n) if valid[i, j]]
        if config.negatives == "all":
            kept = candidates
        elif config.negatives == "no-same-class":
            kept = [j for j in candidates if negative_labels[j] != query_labels[i]]
        elif config.negatives == "random-k":
            kept = sorted(candidates, key=lambda j: -uniform[i, j])[: config.num_negatives]
        else:  # band: rank the valid negatives hardest (most similar) first
            ranked = sorted(candidates, key=lambda j: (-sims[i, j], j))
            m = len(ranked)
            kept = [j for r, j in enumerate(ranked) if config.band_low <= r / m < config.band_high]
        mask[i, kept] = True
    return mask


REGIMES = [
    dict(negatives="all"),
    dict(negatives="no-same-class"),
    dict(negatives="random-k", num_negatives=5),
    dict(negatives="band", band_low=0.0, band_high=0.2),
    dict(negatives="band", band_low=0.1, band_high=0.7),
]


def _batch(data, b: int, ids: torch.Tensor | None = None) -> Batch:
    ids = torch.arange(b) if ids is None else ids
    g = torch.Generator().manual_seed(3)
    x = data.train_images[ids]
    return Batch(ids, data.train_labels[ids], augment.augment(x, g), augment.augment(x, g))


@pytest.mark.parametrize("kw", REGIMES)
def test_simclr_step_masks_and_loss_equal_a_per_query_loop(digits, kw) -> None:
    config = _tiny(method="simclr", batch_size=16, temperature=0.5, **kw)
    model, batch = _untrained(config, digits), _batch(digits, 16)
    encoder = Encoder(model, "cpu")
    z1, z2 = encoder(batch.v1).detach(), encoder(batch.v2).detach()  # (B, P) each
    gen = stream_generator(0, "mask")
    uniform = torch.rand((16, 16), generator=copy.deepcopy(gen))  # what the step will draw
    step = simclr_step(encoder, batch, config, gen)

    sims = torch.tensor([[float(z1[i] @ z2[j]) for j in range(16)] for i in range(16)])
    torch.testing.assert_close(step.similarities, sims)
    valid = ~torch.eye(16, dtype=torch.bool)
    assert torch.equal(step.valid, valid)
    mask = _naive_mask(config, sims, valid, batch.labels, batch.labels, uniform)
    assert torch.equal(step.mask, mask)
    # NT-Xent (Chen et al. 2020, eq. 1) over the 2B views, with both views of each kept negative
    z, t, total = torch.cat([z1, z2]), config.temperature, 0.0
    for a in range(32):
        i, p = a % 16, (a + 16) % 32
        negatives = [v for v in range(32) if v % 16 != i and mask[i, v % 16]]
        logits = torch.stack([z[a] @ z[v] / t for v in [p, *negatives]])
        total += float(torch.logsumexp(logits, 0) - logits[0])
    assert float(step.loss.detach()) == pytest.approx(total / 32, rel=1e-5)


@pytest.mark.parametrize("kw", REGIMES)
def test_moco_step_masks_and_loss_equal_a_per_query_loop(digits, kw) -> None:
    config = _tiny(method="moco", batch_size=16, queue_size=48, bn_groups=2, **kw)
    model = split_batchnorm(_untrained(config, digits), 2)
    key_model = copy.deepcopy(model)
    with torch.no_grad():  # a key encoder that has drifted from the query encoder
        for p in key_model.parameters():
            p.add_(0.1)
    theta_k = [p.clone() for p in key_model.parameters()]
    # 40 of 48 slots filled, with keys of samples 0..31: about half the batch's queries (samples
    # 0..15) find their own earlier key (once or more) in the queue, and the last 8 slots are empty
    g = torch.Generator().manual_seed(1)
    queue = Queue(48, config.proj_dim)
    ids = torch.randint(0, 32, (40,), generator=g)
    queue.enqueue(
        F.normalize(torch.randn(40, config.proj_dim, generator=g), dim=1),
        ids,
        digits.train_labels[ids],
    )
    batch = _batch(digits, 16)
    q = Encoder(copy.deepcopy(model), "cpu")(batch.v1).detach()  # (B, P)
    mask_gen, shuffle_gen = stream_generator(0, "mask"), stream_generator(0, "shuffle")
    uniform = torch.rand((16, 48), generator=copy.deepcopy(mask_gen))
    shuffle_copy = copy.deepcopy(shuffle_gen)
    step = moco_step(
        Encoder(model, "cpu"),
        Encoder(key_model, "cpu"),
        queue,
        batch,
        config,
        mask_gen,
        shuffle_gen,
    )

    sims = torch.tensor([[float(q[i] @ queue.keys[j]) for j in range(48)] for i in range(16)])
    torch.testing.assert_close(step.similarities, sims)
    valid = torch.tensor(
        [[j < 40 and queue.ids[j] != batch.ids[i] for j in range(48)] for i in range(16)]
    )
    assert torch.equal(step.valid, valid) and 0 < (~valid[:, :40]).sum() < 40
    mask = _naive_mask(config, sims, valid, batch.labels, queue.labels, uniform)
    assert torch.equal(step.mask, mask)
    # InfoNCE (He et al. 2020, eq. 1): the query's key against the kept keys of the queue
    assert step.keys is not None and len(queue) == 40  # the step reads the queue, never writes
    t, total = config.temperature, 0.0
    for i in range(16):
        logits = torch.stack([q[i] @ k / t for k in [step.keys[i], *queue.keys[mask[i]]]])
        total += float(torch.logsumexp(logits, 0) - logits[0])
    assert float(step.loss.detach()) == pytest.approx(total / 16, rel=1e-5)
    # the keys came from the key encoder after its momentum update (He et al. 2020, eq. 2)
    m = config.momentum
    for before, pk, pq in zip(theta_k, key_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(pk, m * before + (1 - m) * pq)
    keys = shuffled_keys(Encoder(key_model, "cpu"), batch.v2, 2, shuffle_copy)
    torch.testing.assert_close(step.keys, keys)


def test_fill_queue_holds_the_first_queue_size_samples_of_the_plan(digits) -> None:
    # a queue size that is no multiple of the batch size: the last batch of the fill is short
    config = _tiny(method="moco", queue_size=100, batch_size=64)
    model = _untrained(config, digits)
    plan = train_module._plan_epoch(
        512, digits.train_images, digits.train_labels, config, stream_generator(0, "data")
    )
    queue = Queue(100, config.proj_dim)
    fill_queue(queue, Encoder(model, "cpu"), digits.train_images, digits.train_labels, plan, 64)
    assert len(queue) == 100 and torch.equal(queue.ids, plan.perm[:100])
    assert torch.equal(queue.labels, digits.train_labels[plan.perm[:100]])
    used = train(config, digits, progress=False).history["negatives_used"]
    assert all(99 <= u <= 100 for u in used)


def _nearest_neighbour_accuracy(model, data) -> float:
    """Test samples whose nearest training sample (cosine of the projections) shares its class."""
    model.eval()
    with torch.no_grad():
        train_z = F.normalize(model(augment.to_float(data.train_images))[1], dim=1)
        test_z = F.normalize(model(augment.to_float(data.test_images))[1], dim=1)
    nearest = (test_z @ train_z.T).argmax(dim=1)  # (N_test,)
    return (data.train_labels[nearest] == data.test_labels).float().mean().item()


def _untrained(config, data):
    torch.manual_seed(config.seed)  # the trainer's initialisation
    return model_for(config, data.train_images)


def test_training_with_views_brings_same_class_images_together(digits, one_thread) -> None:
    # instance discrimination on augmented views learns features in which a held-out image's
    # nearest training image is more often of its class than at initialisation (0.59 -> 0.68)
    config = _tiny(epochs=6, method="simclr")
    before = _nearest_neighbour_accuracy(_untrained(config, digits), digits)
    after = _nearest_neighbour_accuracy(train(config, digits, progress=False).model, digits)
    assert after > before + 0.05


def test_latent_class_positives_teach_the_classes(latent, one_thread) -> None:
    # positives drawn from the same latent class (Saunshi et al. 2019) cluster the classes
    config = _tiny(arch="mlp", positives="latent-class", batch_size=50, epochs=3)
    before = _nearest_neighbour_accuracy(_untrained(config, latent), latent)
    after = _nearest_neighbour_accuracy(train(config, latent, progress=False).model, latent)
    assert after > before + 0.1  # 0.51 -> 0.75


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
def test_each_epochs_seconds_are_its_own_and_add_up_to_the_run(digits, method) -> None:
    # an epoch's clock must not run from the set-up of the run (only the first epoch's does:
    # MoCo's queue fill is training), or the seconds of a 4-epoch run add up to 10 epochs'
    t0 = time.perf_counter()
    out = train(_tiny(method=method, epochs=4), digits, progress=False)
    wall = time.perf_counter() - t0
    seconds = out.history["seconds"]
    assert len(seconds) == 4 and min(seconds) > 0
    assert out.seconds == pytest.approx(sum(seconds))
    assert out.seconds <= wall


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


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_the_training_log_has_every_step_once_and_changes_no_number(
    digits, tmp_path, method
) -> None:
    import csv

    config = _tiny(method=method, epochs=3)
    plain = train(config, digits, progress=False)
    log = tmp_path / "train.csv"
    ckpt = tmp_path / "ckpt.pt"
    train(config, digits, checkpoint=ckpt, progress=False, stop_after_epochs=1, log=log)
    with log.open("a") as f:  # a second epoch logged, then killed before its checkpoint
        f.write("2,999,1.0,0.001,\n")
    logged = train(config, digits, checkpoint=ckpt, progress=False, log=log)
    assert logged.history["loss"] == pytest.approx(plain.history["loss"], rel=1e-6)
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    steps = len(digits.train_labels) // config.batch_size
    assert [int(r["step"]) for r in rows] == list(range(1, 3 * steps + 1))  # each step once
    assert [int(r["epoch"]) for r in rows] == [e for e in (1, 2, 3) for _ in range(steps)]
    for epoch in (1, 2, 3):  # the epoch's mean loss in the history is the mean of its steps
        mine = [float(r["loss"]) for r in rows if int(r["epoch"]) == epoch]
        assert sum(mine) / len(mine) == pytest.approx(logged.history["loss"][epoch - 1], rel=1e-4)
    sampled = [r for r in rows if r["same_class_weight"]]
    assert len(sampled) == 3 * len(range(0, steps, RANK_LOG_EVERY))
    assert all(float(r["lr"]) > 0 for r in rows)


def test_the_checkpoint_file_keeps_its_format_and_belongs_to_one_config(digits, tmp_path) -> None:
    config = _tiny(method="moco", epochs=2)
    path = tmp_path / "ckpt.pt"
    train(config, digits, checkpoint=path, progress=False, stop_after_epochs=1)
    # a plain dict with the keys the trainer has always written, so older checkpoints resume
    raw = runs.load_torch(path)
    assert set(raw) == {f.name for f in dataclasses.fields(Checkpoint)}
    assert set(raw) == {"config", "model", "key_model", "optimizer", "queue", "generators"} | {
        "torch_rng",
        "history",
        "epoch",
        "elapsed",
    }
    state = Checkpoint.load(path, config)
    assert state is not None and state.epoch == 1 and state.history["epoch"] == [1]
    assert set(state.generators) == {"data", "mask", "shuffle"} and state.queue["num_filled"] == 128
    assert Checkpoint.load(path, config.replace(seed=1)) is None  # another run's: start afresh
    assert Checkpoint.load(tmp_path / "missing.pt", config) is None


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
    # a run whose features are pooled over a grid loads with its grid
    grid = run(config.replace(feature_grid=2), digits, store, progress=False)
    assert grid.result["model_args"]["grid"] == 2
    assert grid.load_model().backbone.out_dim == 4 * config.width * 4
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
        (dict(width=math.nan), "width=nan must be an integer"),
        (dict(queue_size=math.inf), "queue_size=inf must be an integer"),
        (dict(epochs=-math.inf), "epochs=-inf must be an integer"),
        (dict(negatives="random-k", num_negatives=math.nan), "num_negatives=nan"),
        (dict(method="moco", bn_groups=math.inf), "bn_groups=inf"),
    ],
)
def test_bad_config_names_the_parameter(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


# -- memory ------------------------------------------------------------------------------------


@pytest.fixture
def no_allocation(monkeypatch):
    """Fail the test if the trainer gets as far as building its models and queue."""

    def refuse(*args, **kwargs):
        raise AssertionError("the run allocated its models and queue before refusing")

    monkeypatch.setattr(train_module, "_build_models", refuse)
    monkeypatch.setattr(memory_module, "device_memory", lambda device: 24 * 10**9)


def test_a_queue_too_large_for_the_machine_is_refused_by_name(digits, no_allocation) -> None:
    # 10^9 keys of 16 floats with ids and labels: 80 GB; its (64, 1 + 10^9) logits: 2 TB
    # (the memory check itself: train() refuses a queue larger than the data before it)
    config = _tiny(method="moco", queue_size=10**9)
    with pytest.raises(ValueError, match="this machine has available 24.0 GB") as err:
        memory_module.check_memory(config, digits, "cpu")
    message = str(err.value)
    assert "batch_size=64, queue_size=1000000000 needs about 2,048 GB" in message
    assert "queue_size=1000000000, proj_dim=16 needs about 80.0 GB for the queue of keys" in message


def test_a_width_too_large_for_the_machine_is_refused_by_name(digits, no_allocation) -> None:
    with pytest.raises(ValueError, match=r"width=100000 needs about [\d,.]+ GB for the encoder"):
        train(_tiny(width=10**5), digits, progress=False)
    with pytest.raises(ValueError, match="width=10000000000.*too large to build"):
        train(_tiny(width=10**10), digits, progress=False)  # its parameter count overflows


def test_memory_estimate_of_a_small_run(digits) -> None:
    config = _tiny(method="moco")
    needs = {need.what: need for need in estimate_memory(config, digits)}
    assert needs["the queue of keys"].bytes == 128 * (16 * 4 + 16)
    weights = sum(p.numel() for p in model_for(config, digits.train_images).parameters())
    head = "the projection head (weights, gradients, optimiser state)"
    encoder = "the encoder (weights, gradients, optimiser state)"
    # weights, gradients, AdamW's two moments and the key encoder: 5 float32 copies
    assert needs[encoder].bytes + needs[head].bytes == 5 * 4 * weights
    assert needs["the activations kept for backward"].bytes > 0
    assert sum(n.bytes for n in needs.values()) < device_memory("cpu")
    sgd = {n.what: n.bytes for n in estimate_memory(config.replace(optimizer="sgd"), digits)}
    assert sgd[encoder] + sgd[head] == 4 * 4 * weights


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
        assert execution(config) == {
            "device": "cpu",
            "precision": "fp32",
            "cpu_threads": 1,
            "trainer": TRAINER_VERSION,
        }
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
        (dict(method="simclr", bn_groups=40, batch_size=64), "bn_groups"),
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
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = steps_module._views  # the one-process batches' views (negatives.steps.batch)

    def spy(images, plan, where):
        v1, v2 = original(images, plan, where)
        seen.append((plan.perm[where].clone(), torch.stack([v1, v2], dim=1)))
        return v1, v2

    monkeypatch.setattr(steps_module, "_views", spy)
    train(config, data, progress=False)
    monkeypatch.setattr(steps_module, "_views", original)
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


def _authors_loss(pos: float, negs: list[float], t: float, tau: float, beta: float) -> float:
    """Chuang et al. (2020) / Robinson et al. (2021)'s estimator for one anchor, in float64."""
    n, p = len(negs), math.exp(pos / t)
    neg = [math.exp(s / t) for s in negs]
    imp = [e**beta for e in neg]
    reweight = sum(i * e for i, e in zip(imp, neg, strict=True)) / (sum(imp) / n)
    ng = max((-tau * n * p + reweight) / (1 - tau), n * math.exp(-1 / t))
    return -math.log(p / (p + ng))


@pytest.mark.parametrize("kw", [dict(), dict(negatives="band", band_low=0.0, band_high=0.5)])
def test_debiased_steps_equal_a_per_anchor_loop(digits, kw) -> None:
    """The trainer's debiased, reweighted loss (tau_plus, beta) is the authors' estimator over
    each anchor's kept negatives, for SimCLR's views and for MoCo's queue."""
    config = _tiny(method="simclr", batch_size=16, temperature=0.5, tau_plus=0.1, beta=1.0, **kw)
    model, batch = _untrained(config, digits), _batch(digits, 16)
    encoder = Encoder(model, "cpu")
    z1, z2 = encoder(batch.v1).detach(), encoder(batch.v2).detach()
    step = simclr_step(encoder, batch, config, stream_generator(0, "mask"))
    z, total = torch.cat([z1, z2]).double(), 0.0
    for a in range(32):
        i, p = a % 16, (a + 16) % 32
        negs = [float(z[a] @ z[v]) for v in range(32) if v % 16 != i and step.mask[i, v % 16]]
        total += _authors_loss(float(z[a] @ z[p]), negs, 0.5, 0.1, 1.0)
    assert float(step.loss.detach()) == pytest.approx(total / 32, rel=1e-5)

    config = _tiny(
        method="moco", batch_size=16, queue_size=48, bn_groups=2, tau_plus=0.2, beta=0.5, **kw
    )
    model = split_batchnorm(_untrained(config, digits), 2)
    queue = Queue(48, config.proj_dim)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(100, 200, (48,), generator=g)
    queue.enqueue(
        F.normalize(torch.randn(48, config.proj_dim, generator=g), dim=1),
        ids,
        digits.train_labels[ids],
    )
    q = Encoder(copy.deepcopy(model), "cpu")(batch.v1).detach().double()
    step = moco_step(
        Encoder(model, "cpu"), Encoder(copy.deepcopy(model), "cpu"), queue, batch, config,
        stream_generator(0, "mask"), stream_generator(0, "shuffle"),
    )  # fmt: skip
    keys, total = queue.keys.double(), 0.0
    for i in range(16):
        negs = [float(q[i] @ keys[j]) for j in range(48) if step.mask[i, j]]
        total += _authors_loss(
            float(q[i] @ step.keys[i].double()), negs, config.temperature, 0.2, 0.5
        )
    assert float(step.loss.detach()) == pytest.approx(total / 16, rel=1e-5)


def test_debiased_runs_train_and_bad_settings_are_named(digits) -> None:
    for method in ("simclr", "moco"):
        out = train(_tiny(method=method, epochs=1, tau_plus=0.1, beta=1.0), digits, progress=False)
        plain = train(_tiny(method=method, epochs=1), digits, progress=False)
        assert math.isfinite(out.history["loss"][-1])
        assert out.history["loss"][-1] != plain.history["loss"][-1]
    with pytest.raises(ValueError, match=r"tau_plus=1\.0 must be in \[0, 1\)"):
        _tiny(tau_plus=1.0)
    with pytest.raises(ValueError, match="beta=-0.5"):
        _tiny(beta=-0.5)
    with pytest.raises(ValueError, match="no-same-class"):
        _tiny(tau_plus=0.1, negatives="no-same-class")
    with pytest.raises(ValueError, match="not implemented"):
        train_module.check_world_size(_tiny(tau_plus=0.1, bn_groups=2), 2)


def test_eqco_alpha_shift_identity_and_refusals() -> None:
    from negatives import runs

    base = TrainConfig(batch_size=64, negatives="random-k", num_negatives=15)
    eq = base.replace(eqco_alpha=63)
    assert base.negative_logit_shift == 0.0
    assert eq.negative_logit_shift == pytest.approx(math.log(63 / 15))
    # the field added later leaves the ids of earlier runs as they were, and names new ones
    plain = {k: v for k, v in dataclasses.asdict(base).items() if k != "eqco_alpha"}
    assert runs.config_hash(base, "d") == runs.config_hash(plain, "d")
    assert runs.config_hash(eq, "d") != runs.config_hash(base, "d")
    with pytest.raises(ValueError, match="eqco_alpha=63 with tau_plus"):
        base.replace(eqco_alpha=63, tau_plus=0.1)
    with pytest.raises(ValueError, match="eqco_alpha=63 with negatives='band'"):
        TrainConfig(negatives="band", band_low=0.0, band_high=0.5, eqco_alpha=63)
    with pytest.raises(ValueError, match="eqco_alpha"):
        base.replace(eqco_alpha=0)


def test_moco_logs_own_keys_and_the_replay_gives_the_same_shares(digits, one_thread) -> None:
    from negatives.queue import own_key_shares

    # a queue of 192 keys against 512 digits: some queries find an older key of their own
    config = _tiny(method="moco", queue_size=192, epochs=2)
    result = train(config, digits, progress=False)
    logged = result.history["own_key_share"]
    assert len(logged) == 2 and 0.05 < logged[1] < 0.95
    assert own_key_shares(config, digits) == pytest.approx(logged, abs=1e-9)
    assert "own_key_share" not in train(_tiny(epochs=1), digits, progress=False).history
