"""Sweeps as data, executors and the run cache as the rendezvous of many workers.

Real worker processes on real caches: several workers on one plan, a worker killed mid-run,
submitit's local executor against the notebook's own process, and a cache tampered with as a
shared file system can (files swapped, truncated, half-written).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from negatives import runner, runs, sweep
from negatives.chapters import difficulty
from negatives.checkpoint import Checkpoint
from negatives.data import load_dataset
from negatives.runner import Workers
from negatives.train import train
from negatives.trainconfig import TrainConfig

PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_size=512, test_size=200)


def _config(**kw) -> TrainConfig:
    base = dict(
        method="simclr",
        epochs=2,
        batch_size=64,
        width=8,
        proj_hidden=32,
        proj_dim=16,
        device="cpu",
        precision="fp32",
    )
    return TrainConfig(**{**base, **kw})


def _plan(data, configs, threads=1) -> list[sweep.Entry]:
    return sweep.entries("test", [(c, data) for c in configs], Workers(cpu_threads=threads))


def _worker(plan_path, results, *args) -> subprocess.Popen:
    cmd = [PY, "-m", "negatives.sweep", "run", str(plan_path), "--results", str(results), *args]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _starts(store: runs.RunStore, run_id: str) -> list[dict]:
    return [a for a in store.attempts(run_id) if a["event"] == "start"]


# -- plans ------------------------------------------------------------------------------------


def test_plan_lists_every_run_once_with_what_a_worker_needs(digits, tmp_path) -> None:
    configs = [_config(seed=s) for s in (0, 1, 0)]  # a run listed twice is planned once
    plan = _plan(digits, configs)
    assert [e.index for e in plan] == [0, 1]
    path = tmp_path / "plan.jsonl"
    sweep.write_plan(plan, path)
    back = sweep.read_plan(path)
    assert back == plan
    e = back[0]
    assert load_dataset(**e.data).fingerprint == e.fingerprint == digits.fingerprint
    assert e.execution["cpu_threads"] == 1 and e.execution["trainer"] == runner.TRAINER_VERSION
    assert e.run_id == runs.config_hash(e.config, digits.fingerprint, execution=e.execution)


def test_plan_command_matches_the_chapter(tmp_path) -> None:
    out = subprocess.run(
        [
            PY,
            "-m",
            "negatives.sweep",
            "plan",
            "difficulty",
            "--profile",
            "smoke",
            "-p",
            "seeds",
            "1",
            "-p",
            "extra_seeds",
            "0",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    P = difficulty.Params.from_profile("smoke", seeds=1, extra_seeds=0)
    assert [e["config"] for e in lines] == [_asdict(c) for c in P.plan()]
    assert {e["execution"]["cpu_threads"] for e in lines} == {1}
    bad = subprocess.run(
        [PY, "-m", "negatives.sweep", "plan", "difficulty", "-p", "seed", "1"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert (
        bad.returncode == 2 and "unknown parameter 'seed'" in bad.stderr and "seeds" in bad.stderr
    )


def _asdict(c: TrainConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(c)


def test_index_and_shard_select_entries(digits, tmp_path) -> None:
    plan = _plan(digits, [_config(seed=s, epochs=1) for s in range(5)])
    path = tmp_path / "plan.jsonl"
    sweep.write_plan(plan, path)
    res = tmp_path / "res"
    assert sweep.main(["run", str(path), "--results", str(res), "--shard", "1/2"]) == 0
    store = runs.RunStore(res)
    done = [e.index for e in plan if store.result(e.run_id) is not None]
    assert done == [1, 3]
    assert sweep.main(["run", str(path), "--results", str(res), "--index", "4"]) == 0
    assert store.result(plan[4].run_id) is not None and store.result(plan[0].run_id) is None
    with pytest.raises(SystemExit):
        sweep.main(["run", str(path), "--results", str(res), "--shard", "2/2"])
    with pytest.raises(SystemExit):
        sweep.main(["run", str(path), "--results", str(res), "--index", "5"])


def test_a_worker_refuses_a_plan_made_for_other_arithmetic(digits, tmp_path) -> None:
    (entry,) = sweep.entries(
        "test", [(_config(), digits)], Workers(device="cuda", precision="bf16")
    )
    with pytest.raises(ValueError, match="differently from the plan"):
        sweep.run_entry(entry, runs.RunStore(tmp_path))
    (entry,) = _plan(digits, [_config()])
    wrong = sweep.Entry(**{**entry.__dict__, "fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="the files differ"):
        sweep.run_entry(wrong, runs.RunStore(tmp_path))


def test_thread_share() -> None:
    assert sweep.thread_share(1, cpus=2) == 2
    assert sweep.thread_share(2, cpus=2) == 1
    assert sweep.thread_share(3, cpus=2) == 1
    assert sweep.thread_share(4, cpus=16) == 4
    with pytest.raises(ValueError, match="workers=0"):
        sweep.thread_share(0)


# -- many workers, one results folder ---------------------------------------------------------


def test_workers_on_one_plan_train_each_run_exactly_once(digits, tmp_path) -> None:
    plan = _plan(digits, [_config(seed=s, epochs=3) for s in range(6)])
    path = tmp_path / "plan.jsonl"
    sweep.write_plan(plan, path)
    res = tmp_path / "res"
    procs = [_worker(path, res) for _ in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-2000:]
    store = runs.RunStore(res)
    for e in plan:
        assert store.result(e.run_id) is not None
        events = [a["event"] for a in store.attempts(e.run_id)]
        assert events == ["start", "finished"], (e.run_id, events)
        assert not (store.run_dir(e.run_id) / "lock").exists()
    workers = {a["pid"] for e in plan for a in _starts(store, e.run_id)}
    assert len(workers) >= 2  # the work was shared, not done by one worker while others waited


def test_a_killed_worker_run_resumes_on_the_next_worker(digits, tmp_path) -> None:
    config = _config(method="moco", epochs=40, queue_size=128, bn_groups=2)
    plan = _plan(digits, [config])
    path = tmp_path / "plan.jsonl"
    sweep.write_plan(plan, path)
    res = tmp_path / "res"
    store = runs.RunStore(res)
    rid = plan[0].run_id
    first = _worker(path, res)
    deadline = time.time() + 120
    while Checkpoint.finished_epochs(store.run_dir(rid) / "checkpoint.pt", config) < 2:
        assert time.time() < deadline and first.poll() is None, "the worker ended early"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert store.result(rid) is None and (store.run_dir(rid) / "lock").exists()
    second = _worker(path, res)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out.decode()[-2000:]
    assert "is gone; taking over" in out.decode()
    starts = _starts(store, rid)
    assert len(starts) == 2 and starts[0]["from_epoch"] == 0 and starts[1]["from_epoch"] >= 2
    assert [a["event"] for a in store.attempts(rid)].count("finished") == 1
    # the resumed run is the uninterrupted run
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the plan's threads: the same run id and the same arithmetic
        whole = runner.run(config, digits, runs.RunStore(tmp_path / "whole"), progress=False)
    finally:
        torch.set_num_threads(before)
    assert whole.run_id == rid
    resumed = store.result(rid)
    assert resumed["history"]["loss"] == whole.result["history"]["loss"]


def test_two_chapter_processes_share_one_results_folder(tmp_path) -> None:
    """As a new user did: the same chapter started twice, 5 s apart, on one results folder."""
    script = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from negatives.chapters import difficulty as d\n"
        "P = d.Params.from_profile('smoke', seeds=2, extra_seeds=0, results_dir=sys.argv[1],\n"
        "    main_conditions=[['all', 0.2], ['hardest 5%', 0.2], ['easiest 95%', 0.2]])\n"
        "d.run(P, progress=False)\n"
    )
    res = tmp_path / "res"
    a = subprocess.Popen([PY, "-c", script, str(res)], env=ENV, stderr=subprocess.PIPE)
    time.sleep(5)
    b = subprocess.Popen([PY, "-c", script, str(res)], env=ENV, stderr=subprocess.PIPE)
    for p in (a, b):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    store = runs.RunStore(res)
    ids = [d.name for d in (res / "runs").iterdir()]
    assert len(ids) == 6
    for rid in ids:
        assert store.result(rid) is not None
        assert len(_starts(store, rid)) == 1, store.attempts(rid)


# -- submitit's local executor ------------------------------------------------------------------


def _small_chapter(results, **kw) -> difficulty.Params:
    return difficulty.Params.from_profile(
        "smoke",
        main_conditions=[["all", 0.2], ["hardest 5%", 0.2]],
        seeds=2,
        extra_seeds=0,
        results_dir=str(results),
        **kw,
    )


def test_submitit_local_executor_equals_the_local_executor(tmp_path) -> None:
    """The chapter with executor="submitit-local" (2 workers of 1 thread on 2 cores, in parallel)
    gives exactly the numbers of executor="local" with 1 thread, per seed."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        local = difficulty.run(_small_chapter(tmp_path / "local"), progress=False)
    finally:
        torch.set_num_threads(before)
    P = _small_chapter(tmp_path / "submitit", executor="submitit-local", workers=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "thread_share", lambda workers, cpus=None: 1)  # as on 2 cores
        engine = difficulty.run(P, progress=False)
    cols = ["condition", "seed", "run_id", "linear_accuracy", "knn_accuracy", "loss"]
    assert local["per_run"][cols].equals(engine["per_run"][cols])
    store = runs.RunStore(tmp_path / "submitit")
    pids = set()
    for rid in engine["per_run"]["run_id"]:
        a = runs.load_torch(runs.RunStore(tmp_path / "local").run_dir(rid) / "model.pt")
        b = runs.load_torch(store.run_dir(rid) / "model.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert store.result(rid)["execution"]["cpu_threads"] == 1
        pids |= {s["pid"] for s in _starts(store, rid)}
    assert os.getpid() not in pids and len(pids) == 2  # trained by the two workers


def test_wait_false_submits_then_collects_on_re_execution(tmp_path) -> None:
    P = _small_chapter(tmp_path, executor="submitit-local", workers=1, wait=False)
    with pytest.raises(sweep.RunsPending, match="re-execute"):
        difficulty.run(P, progress=False)
    plan = sweep.chapter_plan("difficulty", P, sweep.Executor.from_params(P).machine())
    store = runs.RunStore(tmp_path)
    deadline = time.time() + 300
    while any(store.result(e.run_id) is None for e in plan):
        assert time.time() < deadline
        time.sleep(1)
    T = difficulty.run(P, progress=False)  # re-executed: collects, submits nothing
    assert len(T["per_run"]) == 4
    submitted = list((tmp_path / "sweeps").glob("*.submitted.json"))
    assert len(submitted) == 1


def test_slurm_executor_submits_a_job_array(tmp_path, monkeypatch) -> None:
    """Without a cluster: a fake ``sbatch`` records what submitit would submit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\necho 'Submitted batch job 4242'\n"
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun first
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    options = {"slurm_partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8, "timeout_min": 600}
    P = _small_chapter(
        tmp_path / "res", executor="slurm", workers=3, wait=False, executor_options=options
    )
    with pytest.raises(sweep.RunsPending):
        difficulty.run(P, progress=False)
    script = (tmp_path / "submitted.sh").read_text()
    assert "#SBATCH --array=0-2%3" in script
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --cpus-per-task=8" in script
    (plan_file,) = (tmp_path / "res" / "sweeps").glob("difficulty-*.jsonl")
    plan = sweep.read_plan(plan_file)
    assert {e.execution["device"] for e in plan} == {"cuda"}  # the workers' GPUs name the runs


def test_bad_executor_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="executor='ray'"):
        difficulty.Params.from_profile("smoke", executor="ray")
    with pytest.raises(ValueError, match="workers=4 needs an executor"):
        difficulty.Params.from_profile("smoke", workers=4)
    with pytest.raises(ValueError, match="wait="):
        difficulty.Params.from_profile("smoke", wait="yes")
    with pytest.raises(ValueError, match="executor_options"):
        difficulty.Params.from_profile("smoke", executor="slurm", executor_options=[1, 2])


# -- a cache a shared cluster can trust -------------------------------------------------------


@pytest.fixture
def two_runs(digits, tmp_path):
    store = runs.RunStore(tmp_path)
    a = runner.run(_config(seed=0), digits, store, progress=False)
    b = runner.run(_config(seed=1), digits, store, progress=False)
    return store, a, b


def test_swapped_results_and_models_are_refused(digits, two_runs) -> None:
    store, a, b = two_runs
    da, db = store.run_dir(a.run_id), store.run_dir(b.run_id)
    for name in ("result.json", "model.pt"):
        tmp = da / "swap"
        (da / name).rename(tmp)
        (db / name).rename(da / name)
        tmp.rename(db / name)
    assert store.result(a.run_id) is None and store.result(b.run_id) is None
    assert (da / "result.json.corrupt").exists()
    again = runner.run(_config(seed=0), digits, store, progress=False)
    assert again.result["history"]["loss"] == a.result["history"]["loss"]
    # only model.pt swapped: the result's sha256 does not match
    store2 = runs.RunStore(store.root)
    b2 = runner.run(_config(seed=1), digits, store2, progress=False)
    da, db = store2.run_dir(again.run_id), store2.run_dir(b2.run_id)
    (da / "model.pt").rename(da / "swap")
    (db / "model.pt").rename(da / "model.pt")
    (da / "swap").rename(db / "model.pt")
    assert runs.RunStore(store.root).result(again.run_id) is None


def test_a_truncated_model_is_noticed_even_with_cached_evaluations(digits, two_runs) -> None:
    store, a, b = two_runs
    calls = []
    a.evaluate("probe", {"k": 1}, lambda: calls.append(1) or {"acc": 1.0})
    model = store.run_dir(a.run_id) / "model.pt"
    model.write_bytes(model.read_bytes()[:100])
    fresh = runs.RunStore(store.root)  # another process: nothing verified yet
    assert fresh.result(a.run_id) is None
    assert list(store.run_dir(a.run_id).glob("eval-*.json")) == []  # set aside with the model
    again = runner.run(_config(seed=0), digits, fresh, progress=False)
    again.evaluate("probe", {"k": 1}, lambda: calls.append(1) or {"acc": 1.0})
    assert len(calls) == 2
    # truncated, without evaluations: retrained, no crash when the model is loaded
    model = store.run_dir(b.run_id) / "model.pt"
    model.write_bytes(b"")
    r = runner.run(_config(seed=1), digits, runs.RunStore(store.root), progress=False)
    assert r.load_model() is not None


def test_a_checkpoint_missing_keys_is_set_aside(digits, tmp_path) -> None:
    store = runs.RunStore(tmp_path)
    config = _config(epochs=3)
    train(config, digits, checkpoint=tmp_path / "c.pt", progress=False, stop_after_epochs=1)
    state = torch.load(tmp_path / "c.pt", weights_only=False)
    del state["generators"]
    rid = runs.config_hash(config, digits.fingerprint, execution=runner.execution(config))
    store.run_dir(rid).mkdir(parents=True)
    torch.save(state, store.run_dir(rid) / "checkpoint.pt")
    r = runner.run(config, digits, store, progress=False)
    assert (store.run_dir(rid) / "checkpoint.pt.corrupt").exists()
    assert len(r.history["loss"]) == 3
    # and the re-run reuses it
    assert runner.run(config, digits, store, progress=False).result == r.result


def test_leftover_temporary_files_are_cleaned(digits, tmp_path) -> None:
    store = runs.RunStore(tmp_path)
    config = _config(epochs=1)
    rid = runs.config_hash(config, digits.fingerprint, execution=runner.execution(config))
    run_dir = store.run_dir(rid)
    run_dir.mkdir(parents=True)
    stale = run_dir / ".model.pt.abc.tmp"
    stale.write_bytes(b"half")
    old = tmp_path / "cache" / ".x.json.def.tmp"
    old.parent.mkdir()
    old.write_text("{")
    os.utime(old, (time.time() - 2 * runs.TEMPORARY_MAX_AGE_SECONDS,) * 2)
    young = tmp_path / "cache" / ".y.json.ghi.tmp"  # another writer's, being written now
    young.write_text("{")
    runner.sweep([config], digits, store, progress=False)
    assert not stale.exists() and not old.exists() and young.exists()


def test_the_trainer_version_is_part_of_a_run_identity(digits, tmp_path, monkeypatch) -> None:
    store = runs.RunStore(tmp_path)
    first = runner.run(_config(epochs=1), digits, store, progress=False)
    monkeypatch.setattr(runner, "TRAINER_VERSION", runner.TRAINER_VERSION + 1)
    second = runner.run(_config(epochs=1), digits, store, progress=False)
    assert second.run_id != first.run_id
    assert second.result["execution"]["trainer"] == first.result["execution"]["trainer"] + 1


# -- the lock ---------------------------------------------------------------------------------


def test_one_lock_holder_among_many_threads(tmp_path) -> None:
    winners = []

    def take() -> None:
        lock = runs.RunLock(tmp_path / "lock")
        if lock.acquire():
            winners.append(lock)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    winners[0].release()
    assert not (tmp_path / "lock").exists()


def test_stale_locks_are_broken_and_live_ones_kept(tmp_path) -> None:
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    path = tmp_path / "lock"
    host = os.uname().nodename
    path.write_text(json.dumps({"host": host, "pid": dead.pid, "token": "t1"}))
    lock = runs.RunLock(path)
    assert lock.is_stale() and lock.acquire()  # this host, dead pid: stale at once
    lock.release()
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t2"}))
    assert not runs.RunLock(path).acquire()  # another host, touched just now: alive
    os.utime(path, (time.time() - 2 * runs.STALE_SECONDS,) * 2)
    assert runs.RunLock(path).acquire()  # not touched for long: its worker is gone
    path.write_text(json.dumps({"host": host, "pid": os.getpid(), "token": "t3"}))
    assert not runs.RunLock(path).acquire()  # a live process of this host


def test_racing_readers_of_a_corrupt_file_do_not_crash(tmp_path) -> None:
    errors = []
    for trial in range(20):
        path = tmp_path / f"r{trial}.json"
        path.write_text("{not json")

        def read(path: Path = path) -> None:
            try:
                assert runs.read_json(path) is None
            except Exception as err:  # noqa: BLE001 - the test collects every failure
                errors.append(err)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_a_bad_plan_file_is_one_line_naming_the_file_and_line(tmp_path, capsys) -> None:
    good = sweep.write_plan(
        sweep.chapter_plan("difficulty", difficulty.Params.from_profile("smoke"))
    )
    first = good.splitlines()[0]
    cases = {
        "missing.jsonl": None,
        "folder": "dir",
        "truncated.jsonl": good[: len(first) // 2],
        "edited.jsonl": first.replace('"seed": 0', '"seed": 5'),
        "unknown.jsonl": first.replace('"seed": 0', '"sed": 0'),
        "list.jsonl": "[1, 2]",
    }
    expected = {
        "missing.jsonl": "does not exist",
        "folder": "is a folder",
        "truncated.jsonl": "truncated.jsonl:1: not JSON",
        "edited.jsonl": "edited.jsonl:1: run_id",
        "unknown.jsonl": "unknown.jsonl:1: config: not TrainConfig's fields (sed)",
        "list.jsonl": "list.jsonl:1: a plan entry is a JSON object",
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text == "dir":
            path.mkdir()
        elif text is not None:
            path.write_text(text + "\n")
        with pytest.raises(SystemExit):
            sweep.main(["status", str(path)])
        err = capsys.readouterr().err
        assert expected[name] in err and "Traceback" not in err, (name, err)
    assert len(sweep.read_plan(_write(tmp_path / "ok.jsonl", good))) == len(good.splitlines())


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plan_refuses_a_world_size_its_workers_would_refuse(capsys) -> None:
    with pytest.raises(SystemExit):
        sweep.main(["plan", "difficulty", "--profile", "smoke", "--world-size", "3"])
    err = capsys.readouterr().err
    assert "--world-size 3: bn_groups=4 must be a multiple of the world size 3" in err
