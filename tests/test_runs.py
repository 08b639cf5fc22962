from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from negatives import runs


@dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1
    epochs: int = 3


def test_config_hash_depends_on_every_field_and_the_data() -> None:
    base = runs.config_hash(_Cfg(), "abc")
    assert base == runs.config_hash(_Cfg(), "abc")
    assert base != runs.config_hash(_Cfg(lr=0.2), "abc")
    assert base != runs.config_hash(_Cfg(epochs=4), "abc")
    assert base != runs.config_hash(_Cfg(), "abd")
    # the same values given as a mapping name the same run
    assert base == runs.config_hash({"lr": 0.1, "epochs": 3}, "abc")


def test_execution_enters_the_hash_only_when_given() -> None:
    base = runs.config_hash(_Cfg(), "abc")
    assert runs.config_hash(_Cfg(), "abc", execution=None) == base
    cpu = runs.config_hash(_Cfg(), "abc", execution={"device": "cpu", "cpu_threads": 1})
    assert cpu != base
    assert cpu != runs.config_hash(_Cfg(), "abc", execution={"device": "cpu", "cpu_threads": 2})


def test_json_round_trip_and_corruption_is_detected(tmp_path) -> None:
    path = tmp_path / "r.json"
    runs.write_json(path, {"a": [1, 2.5], "b": "x"})
    assert runs.read_json(path) == {"a": [1, 2.5], "b": "x"}
    # truncated file
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    assert runs.read_json(path) is None
    assert not path.exists() and (tmp_path / "r.json.corrupt").exists()
    # edited payload: valid JSON, wrong checksum
    runs.write_json(path, {"a": 1})
    wrapper = json.loads(path.read_text())
    wrapper["payload"]["a"] = 2
    path.write_text(json.dumps(wrapper))
    assert runs.read_json(path) is None


def test_no_temporary_files_are_left(tmp_path) -> None:
    runs.write_json(tmp_path / "x.json", {"k": 1})
    runs.save_torch(tmp_path / "m.pt", {"w": torch.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "x.json"]
    assert torch.equal(runs.load_torch(tmp_path / "m.pt")["w"], torch.ones(3))


def test_corrupt_checkpoint_is_set_aside(tmp_path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"not a checkpoint")
    assert runs.load_torch(path) is None
    assert (tmp_path / "c.pt.corrupt").exists()


def test_a_notice_is_a_log_record_shown_on_the_page_with_its_source(
    tmp_path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from negatives.glue import stderr_to_page

    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING", logger="negatives"):
        runs.load_torch(tmp_path / "c.pt")
    assert [(r.name, r.levelname) for r in caplog.records] == [("negatives.runs", "WARNING")]
    capsys.readouterr()
    (tmp_path / "d.pt").write_bytes(b"not a checkpoint")
    with stderr_to_page():
        runs.load_torch(tmp_path / "d.pt")
    out = capsys.readouterr()
    # on the page (stdout), named, once; nothing left on stderr, where the build sees an error
    assert out.out.count("negatives.runs: ") == 1 and "set aside as d.pt.corrupt" in out.out
    assert out.err == ""


def test_evaluation_is_computed_once(tmp_path) -> None:
    store = runs.RunStore(tmp_path)
    calls = []

    def compute() -> dict[str, float]:
        calls.append(1)
        return {"acc": 0.5}

    assert store.evaluation("r1", "probe", {"k": 5}, compute) == {"acc": 0.5}
    assert store.evaluation("r1", "probe", {"k": 5}, compute) == {"acc": 0.5}
    assert len(calls) == 1
    store.evaluation("r1", "probe", {"k": 6}, compute)
    assert len(calls) == 2


def test_environment_names_versions() -> None:
    env = runs.environment("cpu")
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    with pytest.raises(KeyError):
        env["gpu"]


def test_the_listing_shows_each_run_with_what_it_trains_and_its_accuracy(tmp_path, capsys) -> None:
    from negatives.data import load_dataset
    from negatives.runner import run as run_config
    from negatives.trainconfig import TrainConfig

    data = load_dataset("digits", train_size=256, test_size=64, seed=0)
    store = runs.RunStore(tmp_path)
    config = TrainConfig(method="moco", negatives="band", band_low=0.0, band_high=0.05, epochs=1,
                         batch_size=64, queue_size=128, width=8, device="cpu", precision="fp32")  # fmt: skip
    done = run_config(config, data, store, progress=False)
    from negatives import probes

    accuracy = probes.evaluate_run(done, data)["linear_accuracy"]
    (tmp_path / "runs" / "feedfacefeedface").mkdir()  # a run whose training has not started
    rows = {r["run_id"]: r for r in runs.listing(store)}
    row = rows[done.run_id]
    assert (row["status"], row["method"], row["regime"], row["K"]) == (
        "finished",
        "moco",
        "hardest 5%",
        128,
    )
    assert row["linear_accuracy"] == accuracy and row["seconds"] > 0 and row["epochs"] == 1
    assert rows["feedfacefeedface"]["status"] == "unfinished"
    assert runs.main(["list", "--results", str(tmp_path), "--csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ",".join(runs.LISTING_COLUMNS) and len(out) == 3
    with pytest.raises(SystemExit):
        runs.main(["list", "--results", str(tmp_path / "nowhere")])
    assert "not a results folder" in capsys.readouterr().err


def test_regime_names_follow_the_books_grammar() -> None:
    assert runs.regime_name({"negatives": "all"}) == "all"
    assert (
        runs.regime_name({"negatives": "band", "band_low": 0.05, "band_high": 1.0}) == "easiest 95%"
    )
    assert (
        runs.regime_name({"negatives": "band", "band_low": 0.05, "band_high": 0.1}) == "[5%, 10%)"
    )
    assert runs.regime_name({"negatives": "no-same-class"}) == "no same-class"
    assert runs.regime_name({"negatives": "all", "tau_plus": 0.1}) == "debiased tau+=0.1"
    assert (
        runs.regime_name({"negatives": "all", "tau_plus": 0.1, "beta": 1.0})
        == "hard beta=1 tau+=0.1"
    )


def test_the_same_object_is_saved_as_the_same_bytes(tmp_path) -> None:
    """torch's zip records the name of the file it writes: saved through memory, the same run
    on the same machine writes the same model.pt, whatever its temporary file was called."""
    state = {"w": torch.arange(12.0).reshape(3, 4), "step": 7}
    runs.save_torch(tmp_path / "a" / "model.pt", state)
    runs.save_torch(tmp_path / "b" / "model.pt", state)
    a, b = ((tmp_path / d / "model.pt").read_bytes() for d in "ab")
    assert a == b and torch.equal(runs.load_torch(tmp_path / "a" / "model.pt")["w"], state["w"])
