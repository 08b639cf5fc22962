"""The run cache: every run is named by a hash of its whole config and the data's identity.

Layout under a results folder::

    results/runs/<run_id>/config.json      the config and data fingerprint (written first)
    results/runs/<run_id>/checkpoint.pt    the last finished epoch (resume point)
    results/runs/<run_id>/model.pt         the trained weights (written when training ends)
    results/runs/<run_id>/result.json      history, environment, wall time (written last)
    results/runs/<run_id>/eval-<name>-<hash>.json   cached evaluations of the trained model

Every file is written atomically (temporary file, fsync, rename); JSON files carry a sha256 of
their payload, so a truncated or edited file is detected, set aside as ``*.corrupt`` and
recomputed, never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from negatives import __version__

RESULTS_ENV = "NEGATIVES_RESULTS"


def default_results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV, "results"))


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 1.0 and 1 name the same run
    return obj


def _dumps(obj: Any) -> str:
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"))


def config_hash(
    config: Any,
    data_fingerprint: str = "",
    length: int = 16,
    execution: dict[str, Any] | None = None,
) -> str:
    """Hash of a config (dataclass or mapping) and the data's fingerprint: the run's identity.

    ``execution`` adds what the config leaves open but the numbers depend on (the resolved
    device and precision, the CPU thread count): see :func:`negatives.train.execution`.
    """
    payload: dict[str, Any] = {"config": config, "data": data_fingerprint}
    if execution is not None:
        payload["execution"] = execution
    text = _dumps(payload)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` atomically with a checksum that :func:`read_json` verifies."""
    body = _dumps(payload)
    digest = hashlib.sha256(body.encode()).hexdigest()
    _atomic_write_bytes(
        Path(path), json.dumps({"sha256": digest, "payload": json.loads(body)}).encode()
    )


def read_json(path: str | os.PathLike) -> Any | None:
    """The payload of a file written by :func:`write_json`; ``None`` if missing or corrupt.

    A corrupt file (truncated, not JSON, checksum mismatch) is renamed to ``*.corrupt`` so that
    the caller recomputes it and the evidence stays on disk.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        wrapper = json.loads(path.read_text())
        body = _dumps(wrapper["payload"])
        if hashlib.sha256(body.encode()).hexdigest() != wrapper["sha256"]:
            raise ValueError("checksum mismatch")
        return wrapper["payload"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        path.replace(path.with_name(path.name + ".corrupt"))
        print(
            f"negatives.runs: {path} is corrupt ({err}); set aside and recomputing", file=sys.stderr
        )
        return None


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_torch(path: str | os.PathLike) -> Any | None:
    """``torch.load`` of a file written by :func:`save_torch`; ``None`` if missing or corrupt."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is recomputed
        path.replace(path.with_name(path.name + ".corrupt"))
        print(f"negatives.runs: {path} is unreadable ({err}); set aside", file=sys.stderr)
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str | None = None) -> dict[str, Any]:
    """Versions and hardware, recorded with every result."""
    env: dict[str, Any] = {
        "negatives": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


class RunStore:
    """A folder of runs; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_results_dir()

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def result(self, run_id: str) -> dict[str, Any] | None:
        """The finished result of a run, or ``None`` (not run, unfinished or corrupt)."""
        result = read_json(self.run_dir(run_id) / "result.json")
        if result is not None and load_torch_exists(self.run_dir(run_id) / "model.pt"):
            return result
        return None

    def evaluation(
        self,
        run_id: str,
        name: str,
        params: Mapping[str, Any],
        compute: Callable[[], Mapping[str, Any]],
    ) -> dict[str, Any]:
        """A cached evaluation of a finished run: ``compute()`` runs only the first time."""
        path = self.run_dir(run_id) / f"eval-{name}-{config_hash(params, length=12)}.json"
        cached = read_json(path)
        if cached is not None:
            return cached["metrics"]
        start = time.perf_counter()
        metrics = dict(compute())
        write_json(
            path, {"params": params, "metrics": metrics, "seconds": time.perf_counter() - start}
        )
        return _canonical(metrics)

    def cached(
        self, name: str, fn: Callable[..., Any], /, *, version: int = 1, **kwargs: Any
    ) -> Any:
        """``fn(**kwargs)``, computed once and kept (JSON) under
        ``<root>/cache/<name>-<hash>.json``; the hash is of the call's own arguments (a data
        set by its fingerprint) and ``version``, so a new argument or value is a new entry.
        Bump ``version`` when ``fn``'s numbers change."""
        key = {k: getattr(v, "fingerprint", v) for k, v in kwargs.items()}
        path = self.root / "cache" / f"{name}-{config_hash({**key, 'version': version})}.json"
        hit = read_json(path)
        if hit is not None:
            return hit["value"]
        value = fn(**kwargs)
        write_json(path, {"name": name, "arguments": key, "version": version, "value": value})
        return _canonical(value)


def load_torch_exists(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0
