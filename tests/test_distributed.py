"""One run across processes: 2 gloo ranks on the CPU against one process of the same config.

The 2-rank runs are trained once per session by :func:`two_ranks` (one spawn of 2 processes,
each on 1 thread); each test compares what they returned with a one-process run of the same
config, whose batch norm is split in the same groups.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from negatives import augment, distributed, filters, losses, rank_steps, runs
from negatives import train as train_module
from negatives.data import load_dataset
from negatives.launch import read_run_spec
from negatives.models import build_model
from negatives.train import (
    Batch,
    Checkpoint,
    Encoder,
    TrainConfig,
    check_world_size,
    simclr_step,
    stream_generator,
    train,
)

WORLD = 2
DIGITS = dict(name="digits", train_size=256, test_size=64, seed=0)
LATENT = dict(
    name="latent-class", num_classes=4, dim=8, noise=0.3, train_size=256, test_size=64, seed=0
)
BASE = dict(
    epochs=2,
    batch_size=32,
    width=8,
    proj_hidden=32,
    proj_dim=16,
    queue_size=64,
    device="cpu",
    precision="fp32",  # bf16 autocast would round the two runs' different batch shapes apart
)
# name -> (config fields, data): what the 2 ranks train, each compared with one process
SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "simclr": (dict(method="simclr", bn_groups=2), DIGITS),
    "simclr-random-k": (
        dict(method="simclr", bn_groups=2, negatives="random-k", num_negatives=9),
        DIGITS,
    ),
    "simclr-band": (
        dict(method="simclr", bn_groups=2, negatives="band", band_low=0.1, band_high=0.6),
        DIGITS,
    ),
    "moco": (dict(method="moco", bn_groups=2), DIGITS),
    "moco-random-k": (
        dict(method="moco", bn_groups=2, negatives="random-k", num_negatives=20),
        DIGITS,
    ),
    "moco-band": (
        dict(method="moco", bn_groups=4, negatives="band", band_low=0.0, band_high=0.05),
        DIGITS,
    ),
    "moco-latent": (
        # SGD: AdamW would blow up the rounding noise of the MLP's biases before batch norm,
        # whose true gradient is zero, to steps of lr
        dict(method="moco", bn_groups=2, arch="mlp", positives="latent-class", optimizer="sgd"),
        LATENT,
    ),
    "simclr-groups": (dict(method="simclr", bn_groups=2, negative_groups=2), DIGITS),
    "simclr-groups-random-k": (
        dict(
            method="simclr", bn_groups=2, negative_groups=4, negatives="random-k", num_negatives=3
        ),
        DIGITS,
    ),
}


def _config(kw: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{**BASE, **kw})


def _summary(out: train_module.TrainResult) -> dict[str, Any]:
    """What a run is compared by: its weights and buffers (both encoders), its history."""
    state = {f"model.{k}": v.detach().clone() for k, v in out.model.state_dict().items()}
    if out.key_model is not None:
        state |= {f"key.{k}": v.detach().clone() for k, v in out.key_model.state_dict().items()}
    history = {k: v for k, v in out.history.items() if k not in ("seconds", "cpu_seconds")}
    return {"state": state, "history": history, "extra": out.extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, port: int) -> dict[str, str]:
    return dict(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(WORLD),
        OMP_NUM_THREADS="1",
    )


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: every scenario, then an interrupted and resumed MoCo run."""
    os.environ.update(_rank_env(rank, port))
    torch.set_num_threads(1)
    distributed.init("cpu", timeout_seconds=120)
    try:
        data = {json.dumps(d, sort_keys=True): None for _, d in SCENARIOS.values()}
        data = {k: load_dataset(**json.loads(k)) for k in data}
        out: dict[str, Any] = {}
        for name, (kw, spec) in SCENARIOS.items():
            t0 = time.perf_counter()
            result = train(_config(kw), data[json.dumps(spec, sort_keys=True)], progress=False)
            out[name] = _summary(result) | {"seconds": time.perf_counter() - t0}
        # an interruption after one epoch, then the same call again (as run() makes it)
        saves: list[int] = []
        original = Checkpoint.save

        def save(self: Checkpoint, path: str | Path) -> None:
            saves.append(distributed.rank())
            original(self, path)

        Checkpoint.save = save  # type: ignore[method-assign]
        kw, spec = SCENARIOS["moco"]
        path = Path(out_dir) / "checkpoint.pt"  # one folder, as the run cache's
        moco_data = data[json.dumps(spec, sort_keys=True)]
        part = train(_config(kw), moco_data, checkpoint=path, progress=False, stop_after_epochs=1)
        distributed.barrier()  # rank 0 has written the checkpoint
        epochs_on_disk = Checkpoint.finished_epochs(path, _config(kw))
        resumed = train(_config(kw), moco_data, checkpoint=path, progress=False)
        Checkpoint.save = original  # type: ignore[method-assign]
        out["resume"] = {
            "part": part.history["epoch"],
            "epochs_on_disk": epochs_on_disk,
            "saves": saves,
            **_summary(resumed),
        }
        try:  # every rank refuses a config the world cannot train, before any collective
            train(_config(dict(method="moco", bn_groups=3)), moco_data, progress=False)
        except ValueError as err:
            out["refused"] = str(err)
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """Every scenario trained by 2 gloo ranks: ``{rank: {scenario: summary}}``."""
    out_dir = tmp_path_factory.mktemp("ranks")
    with pytest.MonkeyPatch.context() as mpatch:
        mpatch.setenv("OMP_NUM_THREADS", "1")  # the children's torch reads it at import
        mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return {r: torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)}


@pytest.fixture(scope="module")
def datasets() -> dict[str, Any]:
    return {
        json.dumps(d, sort_keys=True): load_dataset(**d)
        for d in (DIGITS, LATENT)  # the scenarios' data
    }


@pytest.fixture
def one_process(datasets, one_thread):
    """A one-process run of a scenario's config (1 thread, as each rank)."""

    def trained(name: str) -> dict[str, Any]:
        kw, spec = SCENARIOS[name]
        return _summary(
            train(_config(kw), datasets[json.dumps(spec, sort_keys=True)], progress=False)
        )

    return trained


# What float rounding moves between a batch computed in one piece and in two (convolutions of
# other batch shapes, sums in another order) after 16 steps: measured 2.2e-6 at most.
ATOL, RTOL = 2e-5, 2e-5


def _assert_same_run(ranks: dict[str, Any], one: dict[str, Any]) -> None:
    assert ranks["state"].keys() == one["state"].keys()
    for key, value in one["state"].items():
        torch.testing.assert_close(ranks["state"][key], value, atol=ATOL, rtol=RTOL, msg=key)
    assert ranks["history"].keys() == one["history"].keys()
    for key, value in one["history"].items():
        got, want = torch.tensor(ranks["history"][key]), torch.tensor(value)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=key, check_dtype=False)


def _assert_ranks_agree(two_ranks: dict[int, dict[str, Any]], name: str) -> None:
    """Every rank returns the whole model and the global history: rank 1's equal rank 0's."""
    zero, one = two_ranks[0][name], two_ranks[1][name]
    for key, value in zero["state"].items():
        assert torch.equal(one["state"][key], value), key
    assert one["history"] == zero["history"]


@pytest.mark.parametrize("name", ["simclr", "simclr-random-k", "simclr-band"])
def test_simclr_on_two_ranks_equals_one_process(two_ranks, one_process, name) -> None:
    _assert_ranks_agree(two_ranks, name)
    _assert_same_run(two_ranks[0][name], one_process(name))
    assert two_ranks[0][name]["extra"]["world_size"] == 2
    # every anchor saw the global batch's 31 other instances (random-k: 9; the band: 15)
    band = round(filters.band_fraction_kept(0.1, 0.6, 31) * 31)
    expected = {"simclr": 31, "simclr-random-k": 9, "simclr-band": band}[name]
    assert two_ranks[0][name]["history"]["negatives_used"] == [expected] * 2


@pytest.mark.parametrize("name", ["moco", "moco-random-k", "moco-latent"])
def test_moco_on_two_ranks_equals_one_process(two_ranks, one_process, name) -> None:
    _assert_ranks_agree(two_ranks, name)
    _assert_same_run(two_ranks[0][name], one_process(name))


def test_a_band_on_two_ranks_ranks_against_the_global_queue(two_ranks, one_process) -> None:
    _assert_ranks_agree(two_ranks, "moco-band")
    _assert_same_run(two_ranks[0]["moco-band"], one_process("moco-band"))
    # the hardest 5% of the whole global queue of 64 keys (63 or 64 valid): 4 negatives
    used = two_ranks[0]["moco-band"]["history"]["negatives_used"]
    n_kept = [round(filters.band_fraction_kept(0.0, 0.05, n) * n) for n in (63, 64)]
    assert all(min(n_kept) <= u <= max(n_kept) for u in used) and min(n_kept) == 4


@pytest.mark.parametrize("name", ["simclr-groups", "simclr-groups-random-k"])
def test_negative_groups_on_two_ranks_equal_one_process_with_the_group_mask(
    two_ranks, one_process, name
) -> None:
    _assert_ranks_agree(two_ranks, name)
    _assert_same_run(two_ranks[0][name], one_process(name))
    kw, _ = SCENARIOS[name]
    expected = kw.get("num_negatives", 32 // kw["negative_groups"] - 1)
    assert two_ranks[0][name]["history"]["negatives_used"] == [expected] * 2
    assert _config(kw).negatives_per_query == expected


def test_a_resumed_two_rank_run_equals_the_uninterrupted_one(two_ranks) -> None:
    for rank in range(WORLD):
        resume = two_ranks[rank]["resume"]
        assert resume["part"] == [1] and resume["epochs_on_disk"] == 1
        # rank 0 writes every epoch's checkpoint, the other rank never
        assert resume["saves"] == ([0, 0] if rank == 0 else [])
        for key, value in two_ranks[rank]["moco"]["state"].items():
            assert torch.equal(resume["state"][key], value), key
        assert resume["history"] == two_ranks[rank]["moco"]["history"]


# -- in one process ----------------------------------------------------------------------------


def test_the_group_mask_is_a_per_anchor_loop_over_its_group(one_thread) -> None:
    data = load_dataset(**DIGITS)
    config = _config(dict(method="simclr", batch_size=12, negative_groups=3, temperature=0.5))
    assert config.negatives_per_query == 3
    model = build_model("cnn-small", 1, 8, width=8, proj_hidden=32, proj_dim=16)
    g = torch.Generator().manual_seed(3)
    x = data.train_images[:12]
    batch = Batch(
        torch.arange(12), data.train_labels[:12], augment.augment(x, g), augment.augment(x, g)
    )
    encoder = Encoder(model, "cpu")
    z1, z2 = encoder(batch.v1).detach(), encoder(batch.v2).detach()
    step = simclr_step(encoder, batch, config, stream_generator(0, "mask"))
    # anchor view a of instance i: its positive and both views of the other 3 of i's group of 4
    z, t, total = torch.cat([z1, z2]), config.temperature, 0.0
    for a in range(24):
        i, p = a % 12, (a + 12) % 24
        negatives = [v for v in range(24) if v % 12 != i and v % 12 // 4 == i // 4]
        assert len(negatives) == 6
        logits = torch.stack([z[a] @ z[v] / t for v in [p, *negatives]])
        total += float(torch.logsumexp(logits, 0) - logits[0])
    assert float(step.loss.detach()) == pytest.approx(total / 24, rel=1e-5)
    assert step.mask.sum(1).tolist() == [3] * 12


def test_a_ranks_share_of_nt_xent_is_its_rows_of_the_whole_batchs() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    mask = torch.rand(8, 8, generator=g) < 0.6
    whole = losses.nt_xent(z1, z2, 0.3, neg_mask=mask)  # (16,)
    for rows in (slice(0, 4), slice(4, 8), slice(2, 5)):
        share = losses.nt_xent(z1, z2, 0.3, neg_mask=mask[rows], rows=rows)
        ids = torch.arange(8)[rows]
        torch.testing.assert_close(share, torch.cat([whole[ids], whole[ids + 8]]))
    with pytest.raises(ValueError, match="neg_mask"):
        losses.nt_xent(z1, z2, 0.3, neg_mask=mask, rows=slice(0, 4))


def test_the_fill_splits_a_short_batch_along_its_batchnorm_groups() -> None:
    # 30 rows in 4 groups as tensor_split cuts them: 8, 8, 7, 7; two ranks take two groups each
    assert rank_steps._group_shares(30, 4, 2) == [16, 14]
    assert rank_steps._group_shares(64, 8, 2) == [32, 32]
    assert rank_steps._group_shares(9, 4, 4) == [3, 2, 2, 2]


def test_every_rank_refuses_a_config_its_world_cannot_train(two_ranks) -> None:
    for rank in range(WORLD):
        assert "bn_groups=3 must be a multiple of the world size 2" in two_ranks[rank]["refused"]


@pytest.mark.parametrize(
    "kw, world, match",
    [
        (dict(method="moco", bn_groups=3), 2, "bn_groups=3 must be a multiple of the world size 2"),
        (dict(method="simclr"), 2, r"bn_groups=None \(method='simclr'"),
        (dict(method="moco", bn_groups=4, batch_size=30), 2, "batch_size=30"),
        (
            dict(method="simclr", bn_groups=2, negative_groups=3, batch_size=36),
            2,
            "negative_groups=3",
        ),
    ],
)
def test_a_config_that_cannot_run_on_the_world_names_the_field(kw, world, match) -> None:
    config = _config(kw)
    check_world_size(config, 1)  # any config runs in one process
    with pytest.raises(ValueError, match=match):
        check_world_size(config, world)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="moco", negative_groups=2), "negative_groups=2 .*method='moco'"),
        (dict(negative_groups=5), "negative_groups=5 must divide batch_size=32"),
        (dict(negative_groups=32), "negative_groups=32 leaves groups of one"),
        (dict(negative_groups=0), "negative_groups=0 must be >= 1"),
        (
            dict(negative_groups=4, negatives="random-k", num_negatives=8),
            "num_negatives=8 exceeds the 7 negatives",
        ),
    ],
)
def test_bad_negative_groups_are_named(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        _config(kw)


def test_simclr_may_split_its_batch_norm() -> None:
    assert _config(dict(method="simclr", bn_groups=4)).batchnorm_groups == 4
    assert _config(dict(method="simclr")).batchnorm_groups == 1
    assert _config(dict(method="moco")).batchnorm_groups == train_module.MOCO_BN_GROUPS


def test_the_run_file_is_an_object_or_a_line_of_a_plan(tmp_path) -> None:
    run = {"config": {**BASE, "method": "moco"}, "data": DIGITS, "run_id": "x", "chapter": "c"}
    one = tmp_path / "run.json"
    one.write_text(json.dumps(run, indent=2))
    spec = read_run_spec(one)
    assert spec.config == _config(dict(method="moco")) and spec.data == DIGITS
    plan = tmp_path / "plan.jsonl"
    plan.write_text("".join(json.dumps({**run, "index": i}) + "\n" for i in range(3)))
    assert read_run_spec(plan, 2).source["index"] == 2
    with pytest.raises(ValueError, match="choose one with --index"):
        read_run_spec(plan)
    with pytest.raises(ValueError, match="index=3 must be <= 2"):
        read_run_spec(plan, 3)
    one.write_text(json.dumps({**run, "config": {"method": "moco", "batch": 4}}))
    with pytest.raises(ValueError, match="config has no field batch"):
        read_run_spec(one)


# -- the command line --------------------------------------------------------------------------


def test_the_command_line_trains_a_plan_line_on_two_ranks(tmp_path) -> None:
    config = _config(dict(method="moco", bn_groups=2, epochs=1))
    entry = {"config": dataclasses.asdict(config), "data": DIGITS, "chapter": "test", "index": 0}
    plan = tmp_path / "plan.jsonl"
    plan.write_text(json.dumps(entry) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD)),
        *("--master-addr", "127.0.0.1", "--master-port", str(_free_port())),
        *("-m", "negatives.train", "--config", str(plan), "--index", "0"),
        *("--results", str(tmp_path / "results"), "--quiet"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("run ")]
    assert len(lines) == 1, res.stdout  # rank 0 alone prints
    run_id, where = lines[0][4:].split(": ")
    result = runs.RunStore(tmp_path / "results").result(run_id)
    assert result is not None and Path(where).is_file()
    assert result["execution"]["world_size"] == WORLD and result["history"]["epoch"] == [1]
    # the same command again finds the finished run in the cache
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and f"run {run_id}:" in again.stdout


def test_the_command_line_explains_itself() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "negatives.train", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0
    assert "torchrun --nproc-per-node" in res.stdout and "--index" in res.stdout


def test_without_a_process_group_the_collectives_are_identities() -> None:
    x = torch.randn(3, 2)
    assert distributed.all_gather(x) is x and distributed.all_gather_with_grad(x) is x
    assert torch.equal(distributed.all_reduce(x, "mean"), x)
    y = copy.deepcopy(x)
    distributed.average_([y])
    assert torch.equal(x, y) and not distributed.launched() and distributed.world_size() == 1
