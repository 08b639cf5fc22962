from __future__ import annotations

import pytest

from negatives import config as cfg

TABLE = {p: {"ks": (1, 2), "lr": 0.1, "name": "a"} for p in cfg.PROFILES}


def test_merge_profile_takes_overrides_and_parses_lists_given_as_text() -> None:
    out = cfg.merge_profile("book", TABLE, {"ks": "[3, 4]", "lr": None, "name": "b"})
    assert out == {"ks": [3, 4], "lr": 0.1, "name": "b"}
    assert cfg.merge_profile("smoke", TABLE, {"ks": "5,6"})["ks"] == ["5", "6"]


def test_merge_profile_passthrough_names_are_returned_only_when_set() -> None:
    keep = ("data_root",)
    out = cfg.merge_profile("book", TABLE, {"data_root": None, "lr": 0.2}, passthrough=keep)
    assert out == {"ks": (1, 2), "lr": 0.2, "name": "a"}
    out = cfg.merge_profile("book", TABLE, {"data_root": "/d"}, passthrough=keep)
    assert out["data_root"] == "/d"
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['results_dir'\]"):
        cfg.merge_profile("book", TABLE, {"results_dir": "r"}, passthrough=keep)


@pytest.mark.parametrize(
    "profile, overrides, match",
    [
        ("huge", {}, "profile"),
        ("book", {"epochz": 3}, "epochz"),
        ("book", {"ks": "[1, 2"}, "ks"),
    ],
)
def test_merge_profile_errors_name_the_parameter(profile, overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        cfg.merge_profile(profile, TABLE, overrides)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cfg.check_int("K", -1, 0), "K=-1 must be >= 0"),
        (lambda: cfg.check_int("K", 1.5), "K=1.5 must be an integer"),
        (lambda: cfg.check_int("K", True), "K=True must be an integer"),
        (lambda: cfg.check_int("K", float("nan"), 1), "K=nan must be an integer, not a non-fin"),
        (lambda: cfg.check_int("K", float("inf")), "K=inf must be an integer, not a non-finite"),
        (lambda: cfg.check_int("K", -float("inf"), maximum=3), "K=-inf must be an integer"),
        (lambda: cfg.check_int_list("ks", [1, float("nan")]), r"ks\[1\]=nan must be an integer"),
        (lambda: cfg.check_float("t", float("nan")), "t=nan must be a finite number"),
        (lambda: cfg.check_float("t", 0.0, 0.0, strict_minimum=True), "t=0.0 must be > 0.0"),
        (lambda: cfg.check_probabilities("rho", [0.5, 0.6]), "rho must sum to 1"),
        (lambda: cfg.check_probabilities("rho", [1.5, -0.5]), r"rho\[1\]=-0.5 must be >= 0.0"),
        (lambda: cfg.check_int_list("ks", []), "ks=\\[\\] must be a non-empty list"),
        (lambda: cfg.check_choice("device", "tpu", cfg.DEVICES), "device='tpu' is not allowed"),
    ],
)
def test_checks_name_the_parameter_and_the_rule(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_checks_pass_good_values() -> None:
    assert cfg.check_int("K", 3.0, 1) == 3
    assert cfg.check_probabilities("rho", [0.25, 0.75]) == (0.25, 0.75)
    assert cfg.check_int_list("ks", 4) == (4,)
    assert cfg.resolve_device("cpu") == "cpu"


def test_resolve_precision(monkeypatch) -> None:
    monkeypatch.setattr(cfg, "native_bf16", lambda device: device == "cuda")
    assert cfg.resolve_precision("auto", "cuda") == "bf16"
    assert cfg.resolve_precision("auto", "cpu") == "fp32"
    assert cfg.resolve_precision("bf16", "cpu") == "bf16"
    assert cfg.resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision='half' is not allowed"):
        cfg.resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="device='auto'"):
        cfg.resolve_precision("auto", "auto")  # resolve the device first


def test_native_bf16_answers_a_bool() -> None:
    assert isinstance(cfg.native_bf16("cpu"), bool)


def test_a_whole_number_float_in_a_train_config_is_its_int() -> None:
    from negatives import runs
    from negatives.trainconfig import TrainConfig

    config = TrainConfig(epochs=2.0, batch_size=64.0, seed=3.0)
    assert config == TrainConfig(epochs=2, batch_size=64, seed=3)
    assert all(type(v) is int for v in (config.epochs, config.batch_size, config.seed))
    assert runs.config_hash(config, "d") == runs.config_hash(
        TrainConfig(epochs=2, batch_size=64, seed=3), "d"
    )
    with pytest.raises(ValueError, match=r"epochs=1.5 must be an integer"):
        TrainConfig(epochs=1.5)
    with pytest.raises(ValueError, match=r"warmup_epochs=3 must be <= epochs=2"):
        TrainConfig(epochs=2, warmup_epochs=3)
