"""Scale profiles and the validation helpers every configuration uses.

Every bad parameter raises ``ValueError`` whose message names the parameter, the value given
and what is allowed, so that a papermill run with ``-p name value`` fails with a readable line.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

PROFILES: tuple[str, ...] = ("smoke", "book", "full")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
# The smoke profiles' image encoder (tests, CI): a tiny CNN on scikit-learn's 8x8 digits.
SMOKE_ENCODER: dict[str, object] = {"dataset": "digits", "width": 16, "epochs": 2}
# The book's image encoder, shared by the book profiles of the training chapters: the speedrun's
# recipe, chosen on a validation split (benchmarks/speedrun.py): a small CNN of width 32 whose
# features are its last map pooled over a 2x2 grid, crops of [0.4, 1] of the image, one epoch
# of Fashion-MNIST.
BOOK_ENCODER: dict[str, object] = {
    "dataset": "fashion-mnist",
    "arch": "cnn-small",
    "width": 32,
    "feature_grid": 2,
    "min_scale": 0.4,
    "epochs": 1,
}
# The papers' image setting, shared by the full profiles of the training chapters: ResNet-18 on
# CIFAR-10 for 200 epochs, its features the global average pool, crops of [0.2, 1].
FULL_ENCODER: dict[str, object] = {
    "dataset": "cifar10",
    "arch": "resnet18-cifar",
    "width": 64,
    "feature_grid": 1,
    "min_scale": 0.2,
    "epochs": 200,
}


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise naming ``name``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (bools refused; a float only if it is a whole number) in ``[minimum, maximum]``."""
    if isinstance(value, float) and not math.isfinite(value):  # int() of it would not name us
        raise ValueError(f"{name}={value!r} must be an integer, not a non-finite number")
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{name}={value!r} must be an integer")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} must be <= {maximum}")
    return value


def check_instance(name: str, value: Any, expected: type | tuple[type, ...], hint: str = "") -> Any:
    """``value`` if it is an ``expected``, else a ``TypeError`` naming the argument, what it
    should be and what it is (at the boundary of a public function, not deep inside it)."""
    if not isinstance(value, expected):
        kinds = expected if isinstance(expected, tuple) else (expected,)
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(
            f"{name} must be a {names}, not {type(value).__name__}" + (f" ({hint})" if hint else "")
        )
    return value


def whole_numbers(obj: Any) -> None:
    """Store each ``int`` field of the dataclass ``obj`` given as a whole-number float
    (``-p seeds 2.0``, ``TrainConfig(epochs=1.0)``) as that int, before its checks: ``range()``,
    the run's hash and the page then see the int the user meant. A fractional or non-finite
    float is left as it is, for the field's check to refuse by name."""
    for f in dataclasses.fields(obj):
        if str(f.type).replace(" ", "") in ("int", "int|None"):
            value = getattr(obj, f.name)
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(obj, f.name, int(value))


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    strict_minimum: bool = False,
) -> float:
    """A finite real number in ``[minimum, maximum]`` (``(minimum, ...`` if ``strict_minimum``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    value = float(value)
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise ValueError(f"{name}={value} must be > {minimum}")
        if not strict_minimum and value < minimum:
            raise ValueError(f"{name}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} must be <= {maximum}")
    return value


def check_int_list(name: str, values: Any, minimum: int | None = None) -> tuple[int, ...]:
    """A non-empty list of integers, each ``>= minimum``."""
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise ValueError(f"{name}={values!r} must be a non-empty list of integers")
    return tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(values))


def check_probabilities(name: str, values: Any, atol: float = 1e-9) -> tuple[float, ...]:
    """A probability vector: non-negative entries summing to 1 (within ``atol``)."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        try:
            values = list(values)  # numpy arrays
        except TypeError:
            raise ValueError(f"{name}={values!r} must be a list of probabilities") from None
    probs = tuple(check_float(f"{name}[{i}]", v, 0.0) for i, v in enumerate(values))
    total = math.fsum(probs)
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} must sum to 1, but sums to {total!r}")
    return probs


def check_profile(profile: Any) -> str:
    return check_choice("profile", profile, PROFILES)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    check_choice("device", device, DEVICES)
    import torch  # on first use: the book's command line imports this module, never torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no GPU; use 'auto' or 'cpu'")
    return device


def native_bf16(device: str) -> bool:
    """Whether ``device`` (``cpu`` or ``cuda``) computes in bfloat16 natively.

    On the CPU that needs AVX512-BF16 or AMX (otherwise oneDNN emulates bf16 and it is slower
    than float32).
    """
    import torch  # on first use, as in resolve_device

    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers of torch.cpu; absent in some builds
        return False


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``bf16`` where ``device`` has native bfloat16, else ``fp32``.

    ``bf16`` means autocast of the encoders' forward pass; losses, optimiser state and weights
    stay float32. ``bf16`` asked for explicitly is honoured on any device (emulated where not
    native).
    """
    check_choice("precision", precision, PRECISIONS)
    check_choice("device", device, ("cpu", "cuda"))
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def merge_profile(
    profile: Any,
    defaults: dict[str, dict[str, Any]],
    overrides: dict[str, Any],
    *,
    passthrough: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A profile's defaults with the non-``None`` overrides on top.

    An override that names no field of the profile table is refused (a typo in ``-p name value``
    must not be ignored silently). Names in ``passthrough`` (fields with one default for every
    profile, such as ``data_root``) are accepted beside the table and returned only when set.
    """
    profile = check_profile(profile)
    values = dict(defaults[profile])
    unknown = sorted(set(overrides) - set(values) - set(passthrough))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}; allowed: {sorted(set(values) | set(passthrough))}"
        )
    for key, value in overrides.items():
        if value is None:
            continue
        if key in values and isinstance(value, str) and isinstance(values[key], tuple | list):
            value = parse_list(key, value)
        values[key] = value
    return values


def parse_list(name: str, text: str) -> Any:
    """A list given as text, as ``papermill -p name '[1, 2]'`` passes it (or ``'a,b'``)."""
    stripped = text.strip()
    if stripped.startswith(("[", "(")):
        try:
            return ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            raise ValueError(f"{name}={text!r} is not a valid list, e.g. '[1, 2, 3]'") from None
    return [part.strip() for part in stripped.split(",") if part.strip()]


def add_param_option(parser: argparse.ArgumentParser) -> None:
    """``-p NAME VALUE`` (repeatable), spelt as papermill spells it, on every command of the
    package that passes parameters to a chapter; :func:`parse_params` reads what it collects."""
    parser.add_argument(
        "-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="a chapter parameter, as papermill's -p NAME VALUE (repeatable)",
    )  # fmt: skip


def parse_params(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``[("K", "64"), ("device", "cuda"), ("ks", "[1, 2]")]`` ->
    ``{"K": 64, "device": "cuda", "ks": [1, 2]}``.

    Values are Python literals where they parse as one (numbers, ``None``, ``True``, lists),
    otherwise strings, as papermill's ``-p`` does.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"param={list(pair)!r} must be a NAME and a VALUE (-p NAME VALUE)")
        name, text = pair[0].strip(), pair[1]
        if not name.isidentifier():
            raise ValueError(f"param name {pair[0]!r} is not a Python identifier (-p NAME VALUE)")
        if name == "profile":
            raise ValueError("param=profile is not allowed here; use --profile")
        try:
            params[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[name] = text
    return params
