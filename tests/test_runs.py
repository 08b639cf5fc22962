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
