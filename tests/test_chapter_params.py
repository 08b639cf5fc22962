"""The one shape of every chapter's parameters (negatives.chapters.params)."""

from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from pathlib import Path

import papermill
import pytest

from negatives.chapters import bounds, coupon, difficulty, kscan, more_negatives, treatments

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = {
    "coupon": coupon,
    "difficulty": difficulty,
    "bounds": bounds,
    "more_negatives": more_negatives,
    "treatments": treatments,
}


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_the_notebook_declares_exactly_the_params_fields(name: str) -> None:
    # papermill reads every line of the parameters cell (a "=" in a comment would hide one)
    declared = list(papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb")))
    assert sorted(declared) == sorted(CHAPTERS[name].Params.parameter_names())


def _base_types(annotation: object) -> set[str]:
    """``int | None`` -> {"int", "None"}; a tuple or list -> "list", a mapping -> "dict"."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return set().union(*(_base_types(a) for a in typing.get_args(annotation)))
    if annotation is type(None):
        return {"None"}
    origin = typing.get_origin(annotation) or annotation
    return {
        {tuple: "list", list: "list", dict: "dict"}.get(origin, getattr(origin, "__name__", ""))
    }


def _annotations(cls: type) -> dict[str, object]:
    """Every parameter's annotation, an embedded chapter's (the K-scan's) flat."""
    hints = typing.get_type_hints(cls)
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        t = hints[f.name]
        out.update(
            _annotations(t) if isinstance(t, type) and dataclasses.is_dataclass(t) else {f.name: t}
        )
    return out


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_papermill_reads_every_parameters_type_and_help(name: str) -> None:
    # papermill --help-notebook: a type it reads (a "# type: ..." comment) and a help line each,
    # the type the chapter's Params declares (None added: None means the profile's value)
    found = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    declared = _annotations(CHAPTERS[name].Params)
    for param, info in found.items():
        assert info["inferred_type_name"] not in ("None", ""), (name, param)
        assert info["help"], (name, param)
        given = set(info["inferred_type_name"].split("|"))
        assert given - {"None"} == _base_types(declared[param]) - {"None"}, (name, param, given)


@pytest.mark.parametrize("name", ["intro", "reproducibility"])
def test_the_report_pages_parameters_have_types_and_help(name: str) -> None:
    found = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    assert found and all(p["inferred_type_name"] == "str" and p["help"] for p in found.values())


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_every_profile_is_a_valid_params(name: str) -> None:
    Params = CHAPTERS[name].Params
    assert set(Params.profiles) == {"smoke", "book", "full"}
    for profile, P in Params.profiles.items():
        assert P.profile == profile
        assert Params.from_profile(profile) == P


def test_a_typo_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter 'epoch'; did you mean 'epochs'\?"):
        difficulty.Params.from_profile("smoke", epoch=3)
    # from a notebook's globals, as papermill -p epoch 3 leaves them
    ns = {"profile": "smoke", "epochs": None, "epoch": 3, "np": types, "display": print}
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        kscan.Params.from_namespace(ns)


def test_from_namespace_skips_modules_functions_and_constants() -> None:
    ns = {"profile": "smoke", "seeds": 1, "RANK_BIN_EDGES": (0.0, 1.0), "pd": types, "f": len}
    assert kscan.Params.from_namespace(ns).seeds == 1


def test_lists_and_numbers_given_as_text_as_papermill_p_passes_them() -> None:
    P = more_negatives.Params.from_profile(
        "smoke", num_classes="[2, 3]", dim="5", scales="1.0,10.0", constraints="sphere"
    )
    assert P.num_classes == (2, 3) and P.dim == 5 and P.scales == (1.0, 10.0)
    assert P.constraints == ("sphere",)
    assert kscan.Params.from_profile("smoke", data_root="data").data_root == "data"


def test_embedded_scan_is_flat_and_shared() -> None:
    P = bounds.Params.from_profile("smoke", seeds=1, num_passes=3, results_dir="/tmp/r")
    assert P.scan == kscan.Params.from_profile("smoke", seeds=1, results_dir="/tmp/r")
    assert P.num_passes == 3
    flat = P.parameters()
    assert flat["seeds"] == 1 and flat["num_passes"] == 3 and "scan" not in flat


def test_direct_construction_and_replace_are_checked() -> None:
    with pytest.raises(ValueError, match="grid_points"):
        dataclasses.replace(coupon.BOOK, grid_points=1)
    with pytest.raises(ValueError, match="seeds"):
        kscan.BOOK.replace(seeds=0)


def test_replace_resolves_derived_fields_again() -> None:
    # each main condition's seed count and the fine temperature follow the new values
    P = difficulty.Params.profiles["smoke"].replace(
        seeds=3, main_conditions=[["all", 0.5], ["all", 0.1]]
    )
    assert P.main_conditions == (("all", 0.5, 3), ("all", 0.1, 3))
    assert P.fine_temperature == 0.5


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("difficulty", {"seeds": 3, "main_conditions": [["all", 0.2]], "data_root": "/my data"}),
        ("more_negatives", {"num_classes": "[2, 3]", "dim": 5, "scales": [2.0]}),
        ("bounds", {"num_passes": 3, "modes": ["mask"]}),
        ("coupon", {}),
        (
            "treatments",
            {"benches": [["simclr", "latent", 7]], "treatments": ["all", "hard beta=1"]},
        ),
    ],
)
def test_the_papermill_command_rebuilds_the_same_params(name: str, overrides: dict) -> None:
    Params = CHAPTERS[name].Params
    P = Params.from_profile("smoke", **overrides)
    words = shlex.split(P.papermill_command(name))
    assert words[:3] == ["papermill", f"notebooks/{name}.ipynb", f"{name}.ipynb"]
    pairs = dict(zip(words[4::3], words[5::3], strict=True))  # -p NAME VALUE, as text
    assert set(words[3::3]) == {"-p"} and pairs.pop("profile") == "smoke"
    assert sorted(pairs) == sorted(k for k in overrides)
    assert Params.from_profile("smoke", **pairs) == P


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_whole_number_floats_are_the_ints_they_mean(name: str) -> None:
    """-p seeds 2.0 (papermill passes a float) trains as seeds 2; 2.5 is refused by name."""
    Params = CHAPTERS[name].Params
    base = Params.profiles["smoke"]
    ints = [f.name for f in dataclasses.fields(Params) if str(f.type) == "int"]
    assert ints, name
    for field in ints:
        value = getattr(base, field)
        given = Params.from_profile("smoke", **{field: float(value)})
        assert type(getattr(given, field)) is int and given == base, field
        with pytest.raises(ValueError, match=rf"\b{field}\b"):
            Params.from_profile("smoke", **{field: value + 0.5})


def test_a_parameter_in_capitals_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="'EPOCHS'; did you mean 'epochs'"):
        difficulty.Params.from_namespace({"profile": "smoke", "EPOCHS": 3})
    # an imported constant in capitals is still no parameter
    assert difficulty.Params.from_namespace({"profile": "smoke", "RANK_BIN_EDGES": (0, 1)})


# Values a user can type (-p NAME VALUE) or pass, of every type and at the extremes.
FUZZ_VALUES: tuple[object, ...] = (
    None, True, False, 0, 1, 2, 3, -1, 7, 64, 10**9, 0.0, 0.5, 1.0, 2.0, -0.5, 1e12,
    float("nan"), float("inf"), "", "x", "all", "cpu", "digits", "moco", [], [1], [0, 1],
    [[0.0, 0.05]], ["all"], ["all", "hardest 5%"], [1.5], {"a": 1}, (2, 3),
)  # fmt: skip


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_fuzz_every_value_is_accepted_or_refused_naming_a_parameter(name: str) -> None:
    """A seeded draw of one to three parameters at a time, each from FUZZ_VALUES: the chapter's
    Params either accepts it (and its checks hold again on a rebuild) or refuses it with a
    ValueError whose message names one of the parameters it was given; never another
    exception. A thousand draws a chapter, in 1 to 7 seconds."""
    import random

    Params = CHAPTERS[name].Params
    names = [n for n in Params.parameter_names() if n != "profile"]
    rng = random.Random(f"fuzz-{name}")
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(1000):
        drawn = {n: rng.choice(FUZZ_VALUES) for n in rng.sample(names, rng.randint(1, 3))}
        profile = rng.choice(["smoke", "book", "full"])
        try:
            P = Params.from_profile(profile, **drawn)
        except ValueError as err:
            message = str(err)
            assert any(n in message for n in drawn), (drawn, message)
            outcomes["refused"] += 1
        except Exception as err:  # noqa: BLE001 - the failure this test exists to find
            pytest.fail(f"{name}: {drawn} raised {type(err).__name__}: {err}")
        else:
            again = {k: v for k, v in P.parameters().items() if k != "profile"}
            assert Params.from_profile(profile, **again) == P, drawn
            outcomes["accepted"] += 1
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes


EXECUTION = (
    "executor",
    "workers",
    "executor_options",
    "wait",
    "results_dir",
    "device",
    "precision",
)


@pytest.mark.parametrize("name", ["difficulty", "bounds", "more_negatives", "treatments"])
def test_fuzz_accepted_values_pass_the_plan_check_or_are_named(name: str) -> None:
    """Values the parameters accept, drawn as above on the smoke profile, then through the
    chapter's validation pass before training (negatives.sweep.check_plan: the whole plan, its
    data, the probes' images): either accepted or refused naming a drawn parameter, never
    another exception and never a size named under another name. 25 a chapter, a few seconds."""
    import random

    from negatives import sweep

    module = CHAPTERS[name]
    names = [n for n in module.Params.parameter_names() if n not in ("profile", *EXECUTION)]
    rng = random.Random(f"plan-{name}")
    tried = 0
    while tried < 25:
        drawn = {n: rng.choice(FUZZ_VALUES) for n in rng.sample(names, rng.randint(1, 2))}
        try:
            P = module.Params.from_profile("smoke", **drawn)
        except ValueError:
            continue
        tried += 1
        try:
            sweep.check_plan(P, name, module.plan)
        except ValueError as err:
            assert any(n in str(err) for n in drawn), (drawn, str(err))
