"""The run cache: every run is named by a hash of its whole config and the data's identity.

Layout under a results folder::

    results/runs/<run_id>/config.json      the config and data fingerprint (written first)
    results/runs/<run_id>/checkpoint.pt    the last finished epoch (resume point)
    results/runs/<run_id>/model.pt         the trained weights (written when training ends)
    results/runs/<run_id>/result.json      history, environment, wall time (written last)
    results/runs/<run_id>/train.csv        every step's loss and learning rate, epoch by epoch
    results/runs/<run_id>/eval-<name>-<hash>.json   cached evaluations of the trained model
    results/runs/<run_id>/lock             the worker training it now (:class:`RunLock`)
    results/runs/<run_id>/attempts.jsonl   who trained it, from which epoch, and when it ended

Every file is written atomically (temporary file, fsync, rename); JSON files carry a sha256 of
their payload, so a truncated or edited file is detected, set aside as ``*.corrupt`` and
recomputed, never used. A result is trusted only for the folder whose run it names and with
the ``model.pt`` whose sha256 it records (:meth:`RunStore.result`).

Many workers (processes, machines of a cluster) may share one results folder: the folder is
their rendezvous. A run is trained by whoever holds its lock; a dead worker's lock goes stale
and the next worker resumes the run from its checkpoint; a finished run is never trained again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from negatives import __version__

# Notices (a corrupt file set aside, a stale lock taken over): warnings, shown without any
# logging set-up; the commands and the book's pages show them with the logger's name.
log = logging.getLogger(__name__)

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


# Config fields added after runs were cached, with their defaults: a config at its default
# is hashed without the field, so the runs cached before it keep their ids.
LATER_FIELDS: dict[str, Any] = {"eqco_alpha": None}
_ABSENT = object()


def config_hash(
    config: Any,
    data_fingerprint: str = "",
    length: int = 16,
    execution: dict[str, Any] | None = None,
) -> str:
    """Hash of a config (dataclass or mapping) and the data's fingerprint: the run's identity.

    ``execution`` adds what the config leaves open but the numbers depend on (the resolved
    device and precision, the CPU thread count): see :func:`negatives.runner.execution`.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if isinstance(config, Mapping):  # a field added later, at its default, names no new run
        config = {k: v for k, v in config.items() if LATER_FIELDS.get(k, _ABSENT) != v}
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


def set_aside(path: Path, why: str, suffix: str = ".corrupt") -> None:
    """Rename ``path`` to ``path + suffix`` so that it is recomputed and the evidence stays on
    disk. Another worker may have set it aside first: then there is nothing left to do."""
    try:
        path.replace(path.with_name(path.name + suffix))
    except FileNotFoundError:
        return
    log.warning("%s %s; set aside as %s%s", path, why, path.name, suffix)


def read_json(path: str | os.PathLike) -> Any | None:
    """The payload of a file written by :func:`write_json`; ``None`` if missing or corrupt.

    A corrupt file (truncated, not JSON, checksum mismatch) is renamed to ``*.corrupt`` so that
    the caller recomputes it and the evidence stays on disk.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:  # never written, or set aside by another worker just now
        return None
    try:
        wrapper = json.loads(text)
        body = _dumps(wrapper["payload"])
        if hashlib.sha256(body.encode()).hexdigest() != wrapper["sha256"]:
            raise ValueError("checksum mismatch")
        return wrapper["payload"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        set_aside(path, f"is corrupt ({err})")
        return None


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` atomically, the same bytes for the same ``obj``: saved to memory first, as
    torch's zip records the name of the file it writes (a temporary file's would differ)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write_bytes(Path(path), buffer.getvalue())


def load_torch(path: str | os.PathLike) -> Any | None:
    """``torch.load`` of a file written by :func:`save_torch`; ``None`` if missing or corrupt."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is recomputed
        set_aside(path, f"is unreadable ({err})")
        return None


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (how ``result.json`` names the ``model.pt`` it belongs to)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """The commit of the code that runs (40 hex digits), or None outside a repository or in one
    without commits (where `git rev-parse HEAD` prints "HEAD")."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return (
        sha if out.returncode == 0 and sha and all(c in "0123456789abcdef" for c in sha) else None
    )


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


# A lock's holder touches it every HEARTBEAT_SECONDS; a lock untouched for STALE_SECONDS is a
# dead worker's (another machine's: we cannot ask its kernel), so a live one is never robbed by
# a slow file system, and a dead one blocks its run for two minutes at most.
HEARTBEAT_SECONDS: float = 10.0
STALE_SECONDS: float = 120.0
# Temporary files older than this are a killed writer's leftovers (a write takes seconds).
TEMPORARY_MAX_AGE_SECONDS: float = 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunLock:
    """Who trains a run now: ``runs/<run_id>/lock``, created exclusively (``O_EXCL``, atomic on
    local and network file systems), holding the worker's host, pid and a token.

    The holder's heartbeat thread touches the file every :data:`HEARTBEAT_SECONDS`. A lock is
    stale when its holder is a dead process of this host, or when it has not been touched for
    :data:`STALE_SECONDS` (a worker on another host that died or was preempted). Breaking a stale
    lock is itself serialised by ``lock.break`` (also exclusive), so that two workers that find
    the same stale lock cannot both take the run, nor remove the fresh lock of a third.
    """

    def __init__(self, path: Path, stale_seconds: float = STALE_SECONDS) -> None:
        self.path = path
        self.stale_seconds = stale_seconds
        self.token = f"{platform.node()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        """The lock's content (``host``, ``pid``, ``token``, ``since``), or None when free."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except ValueError:  # being written this instant, or a torn write of a dead worker
            return {"token": None}

    def is_stale(self, holder: dict[str, Any] | None = None) -> bool:
        holder = self.holder() if holder is None else holder
        if holder is None:
            return False
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        if holder.get("host") == platform.node() and isinstance(holder.get("pid"), int):
            if not _pid_alive(holder["pid"]):
                return True
        return age > self.stale_seconds

    def acquire(self) -> bool:
        """Take the lock (breaking a stale one); False when a live worker holds it."""
        for _ in range(2):  # the second try follows a broken stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                holder = {"host": platform.node(), "pid": os.getpid(), "token": self.token}
                json.dump({**holder, "since": time.time()}, f)
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
            return True
        return False

    def _break_stale(self) -> bool:
        """Remove the lock if it is stale; True if it was (or is already gone)."""
        holder = self.holder()
        if holder is None:
            return True
        if not self.is_stale(holder):
            return False
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another worker is breaking it; or died doing so
            try:
                if time.time() - breaker.stat().st_mtime > self.stale_seconds:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            again = self.holder()  # still the stale one? (not a fresh lock taken meanwhile)
            if again is not None and again.get("token") == holder.get("token"):
                who = f"{holder.get('host')}:{holder.get('pid')}"
                log.warning("%s was held by %s, which is gone; taking over", self.path, who)
                self.path.unlink(missing_ok=True)
            return self.holder() is None
        finally:
            breaker.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        holder = self.holder()
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class RunStore:
    """A folder of runs; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_results_dir()
        self._verified: dict[Path, tuple[int, int, str]] = {}

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def result(self, run_id: str) -> dict[str, Any] | None:
        """The finished result of a run, or ``None`` (not run, unfinished, corrupt or not this
        run's).

        A result is trusted only when it names this folder's run (its config, data and execution
        hash to ``run_id``: a ``result.json`` copied from another run is refused) and its
        ``model.pt`` has the sha256 the result recorded (a truncated, missing or swapped model is
        refused). A refused run's ``result.json``, ``model.pt`` and evaluations are set aside
        (``*.corrupt``), so that the run is trained again, from its last checkpoint.
        """
        run_dir = self.run_dir(run_id)
        result = read_json(run_dir / "result.json")
        if result is None:
            return None
        why = self._untrusted(run_id, result)
        if why is None:
            return result
        for path in [run_dir / "result.json", run_dir / "model.pt", *run_dir.glob("eval-*.json")]:
            set_aside(path, why)
        return None

    def _untrusted(self, run_id: str, result: dict[str, Any]) -> str | None:
        """Why ``result`` is not run ``run_id``'s finished result, or None if it is."""
        try:
            named = config_hash(
                result["config"], result["data_fingerprint"], execution=result["execution"]
            )
        except (KeyError, TypeError):
            return "lacks the config, data or execution that name its run"
        if named != run_id or result.get("run_id") != run_id:
            return f"belongs to run {result.get('run_id')!r} (its config hashes to {named}), not {run_id}"
        model, expected = self.run_dir(run_id) / "model.pt", result.get("model_sha256")
        if expected is None:
            return "does not record its model's sha256 (written by an older version)"
        try:
            st = model.stat()
        except FileNotFoundError:
            return "has no model.pt"
        seen = self._verified.get(model)
        if seen is not None and seen == (st.st_mtime_ns, st.st_size, expected):
            return None  # hashed already in this process, unchanged since
        if file_sha256(model) != expected:
            return "has a model.pt that is not the one it recorded (truncated or replaced)"
        self._verified[model] = (st.st_mtime_ns, st.st_size, expected)
        return None

    def lock(self, run_id: str) -> RunLock | None:
        """The run's lock, taken; None when a live worker holds it. Taking it removes the run
        folder's leftover temporary files (only the holder writes there while a run trains)."""
        run_dir = self.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir / "lock")
        if not lock.acquire():
            return None
        for tmp in run_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        return lock

    def is_locked(self, run_id: str) -> bool:
        """Whether a live worker is training the run now."""
        lock = RunLock(self.run_dir(run_id) / "lock")
        holder = lock.holder()
        return holder is not None and not lock.is_stale(holder)

    def log_attempt(self, run_id: str, **event: Any) -> None:
        """Append one line to ``runs/<run_id>/attempts.jsonl`` (who trained the run, from which
        epoch, whether it finished): the record that no run is trained twice."""
        line = json.dumps(
            {"host": platform.node(), "pid": os.getpid(), "time": time.time(), **event},
            sort_keys=True,
        )
        with open(self.run_dir(run_id) / "attempts.jsonl", "a") as f:
            f.write(line + "\n")

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        path = self.run_dir(run_id) / "attempts.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def clean_temporary(self, max_age: float = TEMPORARY_MAX_AGE_SECONDS) -> int:
        """Remove temporary files (``.*.tmp``) older than ``max_age`` seconds anywhere in the
        store: a writer killed between writing and renaming leaves one. Returns the count."""
        removed, now = 0, time.time()
        for tmp in self.root.glob("**/.*.tmp"):
            try:
                if now - tmp.stat().st_mtime > max_age:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

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


# ---------------------------------------------------------------------------------------------
# what a results folder holds: python -m negatives.runs list

LISTING_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "dataset", "method", "regime", "K", "temperature", "seed", "epochs",
    "linear_accuracy", "seconds",
)  # fmt: skip


def _payload(path: Path) -> dict[str, Any] | None:
    """A JSON file's payload as written, read without checks or side effects (a listing looks,
    it does not repair: :func:`read_json` sets a corrupt file aside)."""
    try:
        return json.loads(path.read_text())["payload"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def regime_name(config: Mapping[str, Any]) -> str:
    """How the book names a config's negative regime (:mod:`negatives.regimes`'s grammar)."""
    from negatives.regimes import ORACLE, band_name  # the grammar is a layer above the cache

    negatives, tau, beta = config.get("negatives"), config.get("tau_plus", 0), config.get("beta", 0)
    if beta:
        return f"hard beta={beta:g} tau+={tau:g}"
    if tau:
        return f"debiased tau+={tau:g}"
    if negatives == "band":
        return band_name((float(config["band_low"]), float(config["band_high"])))
    if negatives == "no-same-class":
        return ORACLE
    if negatives == "random-k":
        return f"random {config.get('num_negatives')}"
    return str(negatives)


def listing(store: RunStore) -> list[dict[str, Any]]:
    """One row per run of ``store`` (:data:`LISTING_COLUMNS`), by run id: its status
    (``finished``, ``training`` while a worker holds its lock, ``unfinished`` with a checkpoint
    or nothing yet), what it trains (method, regime, K negatives per anchor, temperature, seed,
    epochs), its linear-probe accuracy (%, the latest cached probe; NaN if none) and its
    training seconds."""
    from negatives.trainconfig import TrainConfig  # K needs the config's rules, not the cache's

    rows = []
    for run_dir in sorted(p for p in (store.root / "runs").glob("*") if p.is_dir()):
        spec = _payload(run_dir / "config.json") or {}
        result = _payload(run_dir / "result.json")
        config = (result or spec).get("config", {})
        if result is not None:
            status = "finished"
        elif (run_dir / "lock").exists():
            status = "training"
        else:
            status = "unfinished"
        try:
            k: Any = TrainConfig(**config).negatives_per_query
        except (TypeError, ValueError):
            k = None
        probes = sorted(run_dir.glob("eval-probes-*.json"), key=lambda p: p.stat().st_mtime)
        metrics = (_payload(probes[-1]) or {}).get("metrics", {}) if probes else {}
        rows.append({
            "run_id": run_dir.name, "status": status,
            "dataset": (result or spec).get("dataset"),
            "method": config.get("method"), "regime": regime_name(config) if config else None,
            "K": k, "temperature": config.get("temperature"), "seed": config.get("seed"),
            "epochs": config.get("epochs"),
            "linear_accuracy": metrics.get("linear_accuracy", float("nan")),
            "seconds": result.get("seconds") if result else None,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m negatives.runs list [--results DIR] [--csv]``: the runs of a results folder."""
    import argparse
    import csv

    parser = argparse.ArgumentParser(prog="python -m negatives.runs", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="one row per cached run: what it trains, its accuracy")
    ls.add_argument(
        "--results", default=None, help=f"results folder (default ${RESULTS_ENV} or ./results)"
    )
    ls.add_argument("--csv", action="store_true", help="comma-separated values, for a spreadsheet")
    args = parser.parse_args(argv)
    store = RunStore(args.results)
    if not (store.root / "runs").is_dir():
        parser.error(f"--results {store.root}: no runs/ folder there (not a results folder)")
    rows = listing(store)
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=LISTING_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return 0
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(LISTING_COLUMNS))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    done = table[table["status"] == "finished"]
    print(f"\n{len(table)} runs in {store.root}: {len(done)} finished, "
          f"{done['seconds'].sum() / 60:.1f} minutes of training")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
