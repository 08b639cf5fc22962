"""Data sets as uint8 image tensors: ``load_dataset(name, ...) -> Dataset``.

Every source is returned the same way, whole, as CPU tensors: images uint8 ``(N, C, H, W)``,
labels int64 ``(N,)``, the class names and a ``fingerprint`` (a short sha256 of the content), so
that a trainer can move the whole set to the device once and draw batches with ``randperm``
indices (as in KellerJordan/cifar10-airbench), and the run cache can key results on the data.

Sources
- ``digits``: scikit-learn's 8x8 digits (ships offline), a fixed stratified 1437/360 split.
- ``fashion-mnist``: torchvision's ``FashionMNIST``; offline from Debian's ``dataset-fashion-mnist``
  package (its files are re-gzipped, so torchvision's checksums reject them: we gunzip them into
  ``root/FashionMNIST/raw/`` and load with ``download=False``), else torchvision's download.
- ``cifar10``, ``cifar100``: torchvision's ``CIFAR10`` / ``CIFAR100`` from a user-given ``root``.
- ``latent-class``: the synthetic latent-class model of Saunshi et al. (2019), "A Theoretical
  Analysis of Contrastive Unsupervised Representation Learning", section 2: a class
  ``c ~ rho``, then ``x ~ D_c``; here ``D_c = N(mu_c, noise^2 I)`` with random unit-norm means.
  Its vectors are stored as uint8 ``(N, 1, 1, dim)`` by the affine quantisation of
  :func:`quantize_latent`; :func:`dequantize_latent` gives back the real vectors.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from negatives.config import check_choice, check_float, check_int, check_probabilities

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "cifar10", "cifar100", "latent-class")

# The latent-class model's means and samples, (C + N_train + N_test) x dim float64 values: 10^8 is
# 0.8 GB, far past any setting of the papers (C <= 100, dim <= 128, tens of thousands of samples).
MAX_LATENT_FLOATS: int = 10**8

# Debian's `dataset-fashion-mnist` package installs the four IDX files here, gzipped.
DEBIAN_FASHION_MNIST: Path = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# The digits split is part of the data's definition, so its seed is fixed, not the user's `seed`.
DIGITS_TEST_SIZE: int = 360
DIGITS_SPLIT_SEED: int = 0

# Latent-class quantisation: q = clip(round(LATENT_OFFSET + LATENT_SCALE * x), 0, 255).
# With offset 127.5 and scale 127.5 / 4 the representable range is [-4, 4] in steps of 1/31.875,
# and augment.to_float(q) = q / 127.5 - 1 = x / 4 exactly (up to rounding): either view is fine.
LATENT_OFFSET: float = 127.5
LATENT_SCALE: float = 127.5 / 4.0
LATENT_DEFAULTS: dict[str, Any] = {
    "num_classes": 10,
    "class_probs": None,  # uniform
    "dim": 32,
    "noise": 0.1,
    "train_size": 10_000,
    "test_size": 2_000,
}

# Options each source accepts through `load_dataset(..., **options)`, with defaults.
_OPTIONS: dict[str, dict[str, Any]] = {
    "digits": {},
    "fashion-mnist": {"download": True},
    "cifar10": {"download": False, "verify": True},
    "cifar100": {"download": False, "verify": True},
    "latent-class": {k: v for k, v in LATENT_DEFAULTS.items() if not k.endswith("_size")},
}


class DatasetUnavailableError(FileNotFoundError):
    """The files of a data set are missing or corrupt; the message says where we looked and how
    to fix it."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A whole data set as tensors. ``eq=False``: datasets compare by identity (use
    ``fingerprint`` to compare content)."""

    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor  # uint8 (M, C, H, W)
    test_labels: torch.Tensor  # int64 (M,)
    classes: tuple[str, ...]
    fingerprint: str
    options: dict[str, Any] = field(default_factory=dict)
    # The arguments of load_dataset that made it: how a worker on another machine loads the
    # same data (its fingerprint checks that it did); {} when not made by load_dataset.
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[2])

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def to(self, device: torch.device | str) -> Dataset:
        """The same data with its four tensors on ``device`` (the fingerprint is unchanged)."""
        return replace(
            self,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, classes={self.num_classes}, "
            f"fingerprint={self.fingerprint!r}, device={self.device})"
        )


def default_data_root() -> Path:
    """``$NEGATIVES_DATA`` if set, else ``<cwd>/data``."""
    env = os.environ.get("NEGATIVES_DATA")
    return Path(env) if env else Path.cwd() / "data"


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    validation: int | None = None,
    **options: Any,
) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``) as uint8 tensors on the CPU.

    ``validation``: hold out the **last** ``validation`` training images as the evaluation set
    in place of the test set, which is then not loaded at all (the returned ``test_images`` are
    those held-out training images; the rest train). Recipes are chosen on such a split, so
    that the test set judges only the chosen one (``benchmarks/speedrun.py``).

    ``train_size`` / ``test_size`` keep a stratified random subset (seeded by ``seed``) of the
    real data sets (after the validation split), and are the sample sizes of the synthetic
    ``latent-class`` model. ``root`` is
    where files live (default :func:`default_data_root`; required for CIFAR). ``options``:
    ``download`` (fashion-mnist, default True; cifar, default False), ``verify`` (cifar: check
    torchvision's md5 sums, default True; False accepts re-packed or small test copies, whose
    content still enters the fingerprint), and for ``latent-class``: ``num_classes``,
    ``class_probs``, ``dim``, ``noise`` (see :func:`make_latent_class`).
    """
    ds = _load_dataset(
        name,
        root,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
        validation=validation,
        **options,
    )
    root_text = None if root is None else str(root)
    spec = dict(name=name, root=root_text, train_size=train_size, test_size=test_size, seed=seed)
    if validation is not None:  # absent otherwise: the specs of earlier plans stay valid
        spec["validation"] = validation
    return replace(ds, spec={**spec, **options})


def _load_dataset(
    name: str,
    root: str | os.PathLike[str] | None,
    *,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    validation: int | None = None,
    **options: Any,
) -> Dataset:
    check_choice("name", name, DATASETS)
    seed = check_int("seed", seed, 0)
    if validation is not None and name == "latent-class":
        raise ValueError(
            f"validation={validation}: 'latent-class' draws its test set independently of its "
            "training set; it needs no held-out split (leave validation None)"
        )
    if root is not None and name in ("digits", "latent-class"):
        source = "ships with scikit-learn" if name == "digits" else "is drawn, not read"
        raise ValueError(
            f"root={str(root)!r} (a chapter's data_root): dataset {name!r} reads no files (it "
            f"{source}); leave it None"
        )
    allowed = _OPTIONS[name]
    for key in options:
        if key not in allowed:
            raise ValueError(
                f"option {key}={options[key]!r} is not known for dataset {name!r}; "
                f"allowed options: {sorted(allowed)}"
            )
    opts = {**allowed, **options}
    for key in ("download", "verify"):
        if key in opts and not isinstance(opts[key], bool):
            raise ValueError(f"{key}={opts[key]!r} must be True or False")

    if name == "latent-class":
        return make_latent_class(
            num_classes=opts["num_classes"],
            class_probs=opts["class_probs"],
            dim=opts["dim"],
            noise=opts["noise"],
            train_size=LATENT_DEFAULTS["train_size"] if train_size is None else train_size,
            test_size=LATENT_DEFAULTS["test_size"] if test_size is None else test_size,
            seed=seed,
        )

    if root is not None and Path(root).exists() and not Path(root).is_dir():
        raise ValueError(f"root={str(root)!r} (a chapter's data_root) is a file, not a folder")
    if name == "digits":
        parts, classes = _load_digits()
    elif name == "fashion-mnist":
        parts, classes = _load_fashion_mnist(
            default_data_root() if root is None else Path(root), download=opts["download"]
        )
    else:
        if root is None:
            raise ValueError(
                f"root=None: dataset {name!r} needs root, the folder that holds (or will hold) "
                f"torchvision's {_CIFAR_FOLDERS[name]}/ folder"
            )
        parts, classes = _load_cifar(
            name, Path(root), download=opts["download"], verify=opts["verify"]
        )

    x_train, y_train, x_test, y_test = parts
    subsampled: dict[str, Any] = {}
    if validation is not None:
        held = check_int("validation", validation, 1, len(y_train) - 1)
        x_test, y_test = x_train[-held:], y_train[-held:]
        x_train, y_train = x_train[:-held], y_train[:-held]
        subsampled["validation"] = held
    gen = torch.Generator().manual_seed(seed)
    if train_size is not None:
        keep = stratified_subset(y_train, check_int("train_size", train_size, 1, len(y_train)), gen)
        x_train, y_train = x_train[keep], y_train[keep]
        subsampled["train_size"] = train_size
    if test_size is not None:
        keep = stratified_subset(y_test, check_int("test_size", test_size, 1, len(y_test)), gen)
        x_test, y_test = x_test[keep], y_test[keep]
        subsampled["test_size"] = test_size
    if "train_size" in subsampled or "test_size" in subsampled:
        subsampled["seed"] = seed  # the seed changes content only when something was subsampled
    return _make_dataset(name, x_train, y_train, x_test, y_test, classes, subsampled)


# --------------------------------------------------------------------------------------------
# helpers shared by the sources


def stratified_subset(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of a random subset of ``size`` items whose class counts are proportional to
    ``labels``' (largest-remainder rounding, so counts differ from exact proportions by < 1)."""
    labels = labels.cpu()
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * size / len(labels)
    take = exact.floor().long()
    short = size - int(take.sum())
    if short > 0:  # hand the remaining items to the largest remainders (ties: random)
        noise = torch.rand(len(classes), generator=generator, dtype=torch.float64) * 1e-9
        order = torch.argsort(exact - take + noise, descending=True)
        take[order[:short]] += 1
    chosen = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.sort(torch.cat(chosen)).values


def _fingerprint(
    name: str, tensors: Sequence[torch.Tensor], classes: Sequence[str], options: dict[str, Any]
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"name": name, "classes": list(classes), "options": options}).encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _make_dataset(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    classes: Sequence[str],
    options: dict[str, Any],
) -> Dataset:
    x_train, x_test = x_train.contiguous(), x_test.contiguous()
    y_train, y_test = y_train.to(torch.int64), y_test.to(torch.int64)
    assert x_train.dtype == torch.uint8 and x_train.ndim == 4, (x_train.dtype, x_train.shape)
    classes = tuple(str(c) for c in classes)
    fp = _fingerprint(name, (x_train, y_train, x_test, y_test), classes, options)
    return Dataset(name, x_train, y_train, x_test, y_test, classes, fp, dict(options))


_Parts = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# digits


def _load_digits() -> tuple[_Parts, tuple[str, ...]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # values 0..16 -> 0..255
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    classes = tuple(str(c) for c in range(10))
    return (x[idx_train], y[idx_train], x[idx_test], y[idx_test]), classes


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def _gunzip_atomic(source: Path, target: Path) -> None:
    """Decompress ``source`` to ``target`` through a temporary file and a rename, so that a
    concurrent or interrupted run never sees a half-written IDX file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.replace(tmp, target)
    except (OSError, EOFError) as exc:  # a truncated or corrupt archive (BadGzipFile is OSError)
        Path(tmp).unlink(missing_ok=True)
        raise DatasetUnavailableError(
            f"{source} could not be decompressed ({type(exc).__name__}: {exc}): the archive is "
            "corrupt or truncated; reinstall its package (apt-get install --reinstall "
            "dataset-fashion-mnist) or place the IDX files yourself"
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_fashion_mnist(root: Path, *, download: bool) -> tuple[_Parts, tuple[str, ...]]:
    """Lookup order: IDX files under ``root/FashionMNIST/raw/``; Debian's gzipped copies,
    gunzipped there; torchvision's download (if ``download``); else a clear error."""
    from torchvision.datasets import FashionMNIST

    raw = root / "FashionMNIST" / "raw"
    debian = [DEBIAN_FASHION_MNIST / f"{f}.gz" for f in FASHION_MNIST_FILES]

    def have_raw() -> bool:
        return all((raw / f).is_file() for f in FASHION_MNIST_FILES)

    if not have_raw() and all(p.is_file() for p in debian):
        for f, src in zip(FASHION_MNIST_FILES, debian, strict=True):
            if not (raw / f).is_file():
                _gunzip_atomic(src, raw / f)
    download_error = None
    if not have_raw() and download:
        try:
            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
        except Exception as exc:  # offline: DNS / URL errors arrive as RuntimeError or OSError
            download_error = exc
    if not have_raw():
        tried = f"torchvision download failed: {download_error}" if download else "download=False"
        raise DatasetUnavailableError(
            f"dataset 'fashion-mnist' not found. Looked for {list(FASHION_MNIST_FILES)} in "
            f"{raw} and for Debian's gzipped copies in {DEBIAN_FASHION_MNIST}; {tried}. "
            f"Fix: `apt-get install dataset-fashion-mnist`, or place the four IDX files "
            f"(gunzipped) in {raw}, or run once on a machine online with download=True "
            f"(root={str(root)!r})."
        )
    try:
        train = FashionMNIST(str(root), train=True, download=False)
        test = FashionMNIST(str(root), train=False, download=False)
    except Exception as exc:
        raise DatasetUnavailableError(
            f"dataset 'fashion-mnist': the IDX files in {raw} could not be read ({exc}); they are "
            f"corrupt or truncated. Delete them and load again (they are re-created from "
            f"{DEBIAN_FASHION_MNIST} or downloaded)."
        ) from exc
    parts = (
        train.data.unsqueeze(1),  # (60000, 28, 28) -> (60000, 1, 28, 28)
        train.targets,
        test.data.unsqueeze(1),
        test.targets,
    )
    if parts[0].shape[1:] != (1, 28, 28) or len(parts[0]) != len(parts[1]):
        raise DatasetUnavailableError(
            f"dataset 'fashion-mnist': the files in {raw} hold images of shape "
            f"{tuple(parts[0].shape)} and {len(parts[1])} labels; expected (N, 28, 28) and N"
        )
    return parts, tuple(FashionMNIST.classes)


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100

_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _unverified(cls: type) -> type:
    """A subclass of torchvision's CIFAR class that checks only that files exist (md5 ``None``
    makes ``check_integrity`` test existence); loading stays torchvision's own code."""
    return type(
        f"Unverified{cls.__name__}",
        (cls,),
        {
            "train_list": [[f, None] for f, _ in cls.train_list],
            "test_list": [[f, None] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _load_cifar(
    name: str, root: Path, *, download: bool, verify: bool
) -> tuple[_Parts, tuple[str, ...]]:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    if not verify:
        cls = _unverified(cls)
    folder = root / _CIFAR_FOLDERS[name]
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
        x_train = torch.from_numpy(np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)))
        x_test = torch.from_numpy(np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)))
        y_train = torch.as_tensor(train.targets, dtype=torch.int64)
        y_test = torch.as_tensor(test.targets, dtype=torch.int64)
        classes = tuple(train.classes)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError) as exc:
        missing = [f for f in files if not (folder / f).is_file()]
        what = f"missing files {missing}" if missing else "files present but corrupt"
        check = " (md5 sums checked; verify=False skips that check)" if verify else ""
        raise DatasetUnavailableError(
            f"dataset {name!r} could not be loaded from {folder}: {what}{check}: {exc}. Fix: on a "
            f"machine online, run torchvision.datasets.{cls.__name__.removeprefix('Unverified')}"
            f"({str(root)!r}, download=True) (or load_dataset({name!r}, root, download=True)), "
            f"which fetches the archive into {folder}."
        ) from exc
    if x_train.dtype != torch.uint8 or x_train.shape[1:] != (3, 32, 32):
        raise DatasetUnavailableError(
            f"dataset {name!r} in {folder} holds images {x_train.dtype} {tuple(x_train.shape)}, "
            f"expected uint8 (N, 3, 32, 32)"
        )
    if len(classes) <= int(max(y_train.max(), y_test.max())):
        raise DatasetUnavailableError(
            f"dataset {name!r} in {folder}: labels exceed the {len(classes)} class names"
        )
    return (x_train, y_train, x_test, y_test), classes


# --------------------------------------------------------------------------------------------
# latent-class model


def quantize_latent(x: torch.Tensor) -> torch.Tensor:
    """Real vectors ``(N, D)`` -> uint8 images ``(N, 1, 1, D)``:
    ``q = clip(round(127.5 + 31.875 x), 0, 255)``; range ``[-4, 4]``, step ``1/31.875``."""
    q = torch.round(LATENT_OFFSET + LATENT_SCALE * x).clamp(0, 255)
    return q.to(torch.uint8).reshape(x.shape[0], 1, 1, x.shape[1])


def dequantize_latent(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 1, 1, D)`` -> float32 ``(N, D)``, the inverse of :func:`quantize_latent`
    (exact up to the step ``1/31.875``). Note ``augment.to_float(images)`` equals this / 4."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1:3] != (1, 1):
        raise ValueError(
            f"images must be uint8 (N, 1, 1, D) latent-class vectors, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    return (images.flatten(1).float() - LATENT_OFFSET) / LATENT_SCALE


def zipf_probs(num_classes: int, exponent: float) -> tuple[float, ...]:
    """A Zipf class prior rho_c proportional to c^-s, c = 1..C (s = 0 is uniform)."""
    c = check_int("num_classes", num_classes, minimum=1)
    s = check_float("exponent", exponent, 0.0)
    w = np.arange(1, c + 1, dtype=np.float64) ** -s
    return tuple((w / w.sum()).tolist())


def latent_class_means(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """The class means ``mu_c`` of :func:`make_latent_class`: ``(C, dim)`` float64, unit norm,
    directions uniform on the sphere (normalised Gaussians), drawn from ``seed``."""
    num_classes = check_int("num_classes", num_classes, 2)
    dim = check_int("dim", dim, 1)
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    mu = rng.standard_normal((num_classes, dim))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    return torch.from_numpy(mu)


def make_latent_class(
    *,
    num_classes: int = 10,
    class_probs: Sequence[float] | None = None,
    dim: int = 32,
    noise: float = 0.1,
    train_size: int = 10_000,
    test_size: int = 2_000,
    seed: int = 0,
) -> Dataset:
    """The latent-class model (Saunshi et al. 2019, section 2): ``c ~ rho``, ``x = mu_c + noise
    * eps`` with ``eps ~ N(0, I_dim)`` and ``mu_c`` from :func:`latent_class_means`.

    Train and test sets are independent draws (separate random streams, so changing
    ``train_size`` leaves the test set and the means unchanged, and extends the training set:
    its first samples stay the same). Positive pairs of the model are
    two draws from the same class: :func:`sample_same_class`.
    """
    num_classes = check_int("num_classes", num_classes, 2)
    dim = check_int("dim", dim, 1)
    noise = check_float("noise", noise, 0.0)
    train_size = check_int("train_size", train_size, 1)
    test_size = check_int("test_size", test_size, 1)
    seed = check_int("seed", seed, 0)
    floats = (num_classes + train_size + test_size) * dim
    if floats > MAX_LATENT_FLOATS:
        raise ValueError(
            f"num_classes={num_classes}, dim={dim}, train_size={train_size}, test_size="
            f"{test_size}: {floats:.2g} floats ({floats * 8 / 1e9:,.0f} GB) of means and samples, "
            f"over the cap of {MAX_LATENT_FLOATS:.0e}; use a smaller dim or fewer classes"
        )
    if class_probs is None:
        rho = np.full(num_classes, 1.0 / num_classes)
    else:
        probs = check_probabilities("class_probs", class_probs, atol=1e-6)
        if len(probs) != num_classes:
            raise ValueError(
                f"class_probs has {len(probs)} entries but num_classes={num_classes}; "
                f"give one probability per class"
            )
        rho = np.asarray(probs) / sum(probs)
    mu = latent_class_means(num_classes, dim, seed).numpy()  # (C, dim)

    def draw(stream: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        # labels and noise from separate streams, each filled in sample order, so that a larger
        # size extends a set (same first samples) instead of redrawing it
        rng_y = np.random.default_rng(np.random.SeedSequence([seed, stream, 0]))
        rng_x = np.random.default_rng(np.random.SeedSequence([seed, stream, 1]))
        y = rng_y.choice(num_classes, size=n, p=rho)  # c ~ rho, i.i.d.
        x = mu[y] + noise * rng_x.standard_normal((n, dim))  # (n, dim)
        return quantize_latent(torch.from_numpy(x)), torch.from_numpy(y.astype(np.int64))

    x_train, y_train = draw(1, train_size)
    x_test, y_test = draw(2, test_size)
    options = {
        "num_classes": num_classes,
        "class_probs": [float(p) for p in rho],
        "dim": dim,
        "noise": noise,
        "train_size": train_size,
        "test_size": test_size,
        "seed": seed,
        "quantisation": [LATENT_OFFSET, LATENT_SCALE],
    }
    classes = tuple(f"c{i}" for i in range(num_classes))
    return _make_dataset("latent-class", x_train, y_train, x_test, y_test, classes, options)


def sample_same_class(
    labels: torch.Tensor,
    train_labels: torch.Tensor,
    generator: torch.Generator,
    *,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """For each anchor label, the index of a uniformly random training sample of the same class:
    the positive ``x+ ~ D_c`` of the latent-class model (Saunshi et al. 2019), drawn from the
    training set. ``exclude`` (the anchors' own training indices, ``(B,)``) removes each anchor
    from its own candidates, so a positive is never the anchor itself.

    Vectorised: sort the training labels once, then pick a uniform rank inside each anchor's
    class block. ``labels: (B,), train_labels: (N,) -> indices (B,)`` on ``labels``' device.
    """
    if labels.ndim != 1 or train_labels.ndim != 1:
        raise ValueError(
            f"labels and train_labels must be 1-D, got shapes {tuple(labels.shape)} and "
            f"{tuple(train_labels.shape)}"
        )
    device = labels.device
    train_labels = train_labels.to(device)
    num_classes = int(max(int(train_labels.max()), int(labels.max()) if len(labels) else 0)) + 1
    order = torch.argsort(train_labels, stable=True)  # (N,): training indices grouped by class
    counts = torch.bincount(train_labels, minlength=num_classes)  # (C,)
    starts = torch.cumsum(counts, 0) - counts  # (C,) first position of each class in `order`
    n = counts[labels]  # (B,) candidates per anchor
    if exclude is not None:
        if exclude.shape != labels.shape:
            raise ValueError(
                f"exclude must have the shape of labels {tuple(labels.shape)}, "
                f"got {tuple(exclude.shape)}"
            )
        exclude = exclude.to(device)
        if bool((train_labels[exclude] != labels).any()):
            raise ValueError("exclude: train_labels[exclude] must equal labels (anchor indices)")
        n = n - 1
    if bool((n < 1).any()):
        bad = labels[n < 1].unique().tolist()
        raise ValueError(
            f"labels: classes {bad} have no other training sample to draw a positive from"
        )
    u = torch.rand(labels.shape, generator=generator, device=device, dtype=torch.float64)
    rank = torch.minimum((u * n).long(), n - 1)  # (B,) uniform in {0, ..., n-1}
    if exclude is not None:
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order), device=device)  # inverse permutation
        own_rank = position[exclude] - starts[labels]  # (B,) the anchor's rank in its block
        rank = rank + (rank >= own_rank).long()  # skip over the anchor
    return order[starts[labels] + rank]
