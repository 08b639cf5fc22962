"""The one way a chapter's parameters are built: from a profile, from overrides, from a notebook.

Every chapter module declares a frozen dataclass ``Params(ChapterParams)`` whose fields are
exactly its notebook's papermill parameters, validated in ``__post_init__`` (so a direct
construction, :func:`dataclasses.replace` and :meth:`ChapterParams.from_profile` are all
checked), and one table of profiles written as differences from the ``book`` profile::

    BOOK = Params(profile="book", ...)
    Params.profiles = {"book": BOOK, "smoke": BOOK.replace(profile="smoke", ...), ...}

A field whose type is another ``ChapterParams`` (the K-scan that chapters 3 and 4 share) is
*embedded*: its fields are parameters of the outer chapter under their own names, and a name
that both declare (``results_dir``) sets both.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import shlex
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import pandas as pd

from negatives import config as cfg
from negatives.data import Dataset, load_dataset

# A chapter trains at least one run per seed and condition: more seeds than this is a typo or
# weeks of work (a seed count is also the length of tuples built before anything trains).
MAX_SEEDS: int = 1000
# The papers train for at most 800 epochs; 10^5 is a typo (`-p epochs 1e12`), named here rather
# than as the trainer's step cap.
MAX_EPOCHS: int = 10**5
# The latent-class model's classes and dimension (the papers: C <= 100, dim <= 128).
MAX_LATENT_SIZE: int = 10**4

# Names a Jupyter kernel defines besides the notebook's own; never parameters.
_KERNEL_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


def unknown_name_error(name: str, allowed: list[str]) -> ValueError:
    """``name`` is not a parameter: say so, with the closest declared name."""
    same = [a for a in allowed if a.casefold() == name.casefold()]  # EPOCHS for epochs
    close = same or difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown parameter {name!r}{hint} (parameters: {', '.join(allowed)})")


def parse_text(name: str, text: str, annotation: str) -> Any:
    """A value given as text (``papermill -p name '[1, 2]'``, ``-p name 3``) as the field's
    type: lists from ``'[1, 2]'`` or ``'1,2'``, numbers and ``None`` from their literals."""
    listy = annotation.startswith(("tuple", "list"))
    if listy and not text.strip().startswith(("[", "(")):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return [_literal(p) for p in parts]
    if listy or "str" not in annotation:
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            if listy:
                raise ValueError(f"{name}={text!r} is not a valid list, e.g. '[1, 2, 3]'") from None
            return text  # the field's check names it
    return text


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


class ChapterParams:
    """Mixin of every chapter's frozen ``Params`` dataclass (see the module's docstring)."""

    profiles: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every chapter's ``__post_init__`` first stores whole-number floats of its ``int``
        fields as ints (:func:`negatives.config.whole_numbers`), then checks."""
        super().__init_subclass__(**kwargs)
        post_init = cls.__dict__.get("__post_init__")
        if post_init is not None:

            def checked(self: Any) -> None:
                cfg.whole_numbers(self)
                post_init(self)

            checked.__doc__ = post_init.__doc__
            cls.__post_init__ = checked  # type: ignore[attr-defined]

    @classmethod
    def _fields(cls) -> list[dataclasses.Field[Any]]:
        """The dataclass's fields, a mixin's keyword-only ones (:class:`Execution`) last."""
        return sorted(dataclasses.fields(cls), key=lambda f: f.kw_only is True)  # type: ignore[arg-type]

    @classmethod
    def _embedded(cls) -> dict[str, type[ChapterParams]]:
        """The fields that hold another chapter's ``Params`` (by their resolved annotation)."""
        hints = typing.get_type_hints(cls)
        return {
            f.name: hints[f.name]
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if isinstance(hints[f.name], type) and issubclass(hints[f.name], ChapterParams)
        }

    @classmethod
    def parameter_names(cls) -> list[str]:
        """Every papermill parameter of the chapter, in the dataclass's order (embedded flat)."""
        names: list[str] = []
        embedded = cls._embedded()
        for f in cls._fields():
            subs = embedded[f.name].parameter_names() if f.name in embedded else [f.name]
            names += [n for n in subs if n not in names]
        return names

    @classmethod
    def from_profile(cls, profile: str = "book", **overrides: Any) -> Self:
        """The profile's parameters with every override that is not ``None`` on top.

        ``None`` means "the profile's value" (a notebook's parameters cell says ``None`` for
        each); an unknown name is refused with the closest declared one.
        """
        profile = cfg.check_profile(profile)
        allowed = cls.parameter_names()
        for name in overrides:
            if name not in allowed or name == "profile":
                raise unknown_name_error(name, [n for n in allowed if n != "profile"])
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls._override(cls.profiles[profile], given)

    @classmethod
    def _override(cls, base: Any, given: Mapping[str, Any]) -> Self:
        embedded = cls._embedded()
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in embedded:
                sub = embedded[f.name]
                mine = {k: v for k, v in given.items() if k in sub.parameter_names()}
                changes[f.name] = sub._override(getattr(base, f.name), mine)
            elif f.name in given:
                value = given[f.name]
                if isinstance(value, str):
                    value = parse_text(f.name, value, str(f.type))
                changes[f.name] = value
        return base.replace(**changes)

    def replace(self, **changes: Any) -> Self:
        """:func:`dataclasses.replace` from the values as given, not as resolved: a field that
        ``__post_init__`` resolved from others (``fine_temperature`` from the temperatures,
        each condition's seeds from ``seeds``) is resolved again from the new values."""
        given = {k: v for k, v in self.__dict__.get("_given", {}).items() if k not in changes}
        return dataclasses.replace(self, **given, **changes)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> Self:
        """The chapter's parameters from a notebook's globals (after its ``parameters`` cell and
        papermill's injected one): ``P = Params.from_namespace(globals())``.

        Every declared name found there is used; any other plain lower-case value (not a
        module, function, class, constant or private name) is a parameter papermill injected
        that the chapter does not declare, a typo such as ``-p epoch 100``, and is refused
        with the closest name.
        """
        allowed = cls.parameter_names()
        for name, value in namespace.items():
            if name in allowed or name.startswith("_") or name in _KERNEL_NAMES:
                continue
            if name.isupper() and name.lower() not in allowed:
                continue  # an imported constant (RANK_BIN_EDGES); parameters are lower case
            if callable(value) or isinstance(value, types.ModuleType):
                continue
            raise unknown_name_error(name, [n for n in allowed if n != "profile"])
        values = {n: namespace[n] for n in allowed if n in namespace and n != "profile"}
        return cls.from_profile(namespace.get("profile", "book"), **values)

    def set(self, name: str, value: Any) -> None:
        """Store a normalised value from ``__post_init__`` (the dataclass is frozen); the value
        as given is kept for :meth:`replace`."""
        self.__dict__.setdefault("_given", {}).setdefault(name, getattr(self, name))
        object.__setattr__(self, name, value)

    def table(self) -> pd.DataFrame:
        """The resolved parameters as a two-column table (for the page)."""
        # str() per value: pandas' astype(str) would print None as "nan"
        rows = [(k, str(v)) for k, v in self.parameters().items()]
        return pd.DataFrame(rows, columns=["parameter", "value"])

    def papermill_command(self, notebook: str) -> str:
        """The command that re-runs ``notebooks/<notebook>.ipynb`` with these parameters: the
        profile, and every parameter whose value is not the profile's."""
        mine, base = self.parameters(), type(self).profiles[self.profile].parameters()
        parts = [f"papermill notebooks/{notebook}.ipynb {notebook}.ipynb -p profile {self.profile}"]
        for name, value in mine.items():
            if name != "profile" and value != base[name]:
                text = json.dumps(value) if isinstance(value, tuple | list) else str(value)
                parts.append(f"-p {name} {shlex.quote(text)}")
        return " ".join(parts)

    def parameters(self) -> dict[str, Any]:
        """Every parameter's resolved value, embedded ones flat (for a table or a plan file)."""
        out: dict[str, Any] = {}
        embedded = self._embedded()
        for f in self._fields():
            if f.name in embedded:
                out.update({k: v for k, v in getattr(self, f.name).parameters().items()})
            else:
                out[f.name] = getattr(self, f.name)
        return out


def check_list(name: str, values: Any, check: Any) -> tuple[Any, ...]:
    """A non-empty list (a single value counts as a list of one), each item ``check(label, v)``."""
    if isinstance(values, str | int | float) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, list | tuple) or len(values) == 0:
        raise ValueError(f"{name}={values!r} must be a non-empty list")
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(values))


def check_optional_int(name: str, value: Any, minimum: int = 1) -> int | None:
    """``None`` (the data set's whole split, for example) or an integer ``>= minimum``."""
    return None if value is None else cfg.check_int(name, value, minimum)


class ImageData:
    """The data of a chapter that trains encoders on an image data set: the ``dataset``,
    ``data_root``, ``train_size``, ``test_size`` and ``probe_train_size`` fields."""

    dataset: str
    data_root: str | None
    train_size: int | None
    test_size: int | None
    probe_train_size: int | None

    def load_data(self) -> Dataset:
        """The images the encoders train on (``train_size``, None: all) and the test images."""
        return load_dataset(
            self.dataset, self.data_root, train_size=self.train_size, test_size=self.test_size
        )

    def load_probe_data(self) -> Dataset:
        """The images the probes are fitted on (``probe_train_size``, None: all) and scored on
        (the same test images as :meth:`load_data`)."""
        try:
            return load_dataset(
                self.dataset,
                self.data_root,
                train_size=self.probe_train_size,
                test_size=self.test_size,
            )
        except ValueError as err:  # load_dataset names its argument, train_size
            raise ValueError(str(err).replace("train_size=", "probe_train_size=", 1)) from None


# Who trains a chapter's runs (negatives.sweep): this process, workers that submitit starts on
# this machine, or the jobs of a SLURM job array.
EXECUTORS: tuple[str, ...] = ("local", "submitit-local", "slurm")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Execution:
    """Where and by whom a training chapter computes, declared once for every such chapter:
    ``device`` and ``precision`` (:mod:`negatives.config`), the run cache's ``results_dir``, and
    the ``executor``, ``workers``, ``wait`` and ``executor_options`` of :mod:`negatives.sweep`.
    The defaults are every profile's; the fields come last among a chapter's parameters."""

    device: str = "auto"
    precision: str = "auto"
    results_dir: str = "results"
    executor: str = "local"
    workers: int | None = None
    wait: bool = True
    executor_options: dict[str, Any] | None = None

    def check_execution(self) -> None:
        cfg.check_choice("executor", self.executor, EXECUTORS)
        check_optional_int("workers", self.workers)
        if self.executor == "local" and self.workers not in (None, 1):
            raise ValueError(
                f"workers={self.workers} needs an executor that starts workers "
                f"({', '.join(EXECUTORS[1:])}); executor='local' trains in this process"
            )
        if not isinstance(self.wait, bool):
            raise ValueError(f"wait={self.wait!r} must be True or False")
        options = self.executor_options
        if options is not None and (
            not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options)
        ):
            raise ValueError(
                f"executor_options={options!r} must be a mapping of option names to values, "
                "e.g. {'slurm_partition': 'gpu', 'timeout_min': 600}"
            )
