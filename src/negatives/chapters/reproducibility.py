"""The reproducibility page (``notebooks/reproducibility.ipynb``): what produced the book's
numbers, the software versions (:func:`versions_table`), the machine (:func:`hardware_table`),
each notebook's time in this build (:func:`timings_table`), how to cite it
(:func:`citation`), and the encoder's speedrun
(``benchmarks/speedrun.py``; :func:`speedrun_results`, :func:`speedrun_numbers`,
:func:`speedrun_figure`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negatives.glue import TIMINGS, read_timings

if TYPE_CHECKING:
    import pandas as pd


def _has_uncommitted_changes() -> bool:
    try:
        res = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and bool(res.stdout.strip())


def versions_table() -> pd.DataFrame:
    """Python, the study's main packages and the git commit of the ``negatives`` code that ran."""
    import importlib.metadata as md

    import pandas as pd

    from negatives.runs import git_commit

    rows = [("python", platform.python_version())]
    for dist in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas",
                 "matplotlib", "jupyter-book", "myst-nb", "sphinx", "papermill", "negatives"):  # fmt: skip
        try:
            rows.append((dist, md.version(dist)))
        except md.PackageNotFoundError:
            rows.append((dist, "not installed"))
    commit = git_commit()
    if commit is None:
        commit = "not available"
    elif _has_uncommitted_changes():
        commit += " (with uncommitted changes)"
    rows.append(("git commit", commit))
    return pd.DataFrame(rows, columns=["component", "version"])


def citation(cff: str | os.PathLike[str] | None = None) -> str:
    """A BibTeX entry for this study, from ``CITATION.cff`` (title, authors, version) and the
    commit that built the book: its year, and the commit as the source's exact version. The
    book has no public address of its own yet; the entry names the code by package and commit.
    """
    import yaml

    from negatives.runs import git_commit

    path = Path(cff) if cff is not None else Path(__file__).resolve().parents[3] / "CITATION.cff"
    meta = yaml.safe_load(path.read_text())
    commit = git_commit()
    year = None
    if commit is not None:
        res = subprocess.run(
            ["git", "show", "-s", "--format=%cs", commit], capture_output=True, text=True,
            timeout=5, cwd=path.parent,
        )  # fmt: skip
        year = res.stdout.strip()[:4] if res.returncode == 0 else None
    authors = " and ".join(
        a.get("name") or f"{a['family-names']}, {a['given-names']}" for a in meta["authors"]
    )
    fields = [
        ("title", meta["title"]),
        ("author", f"{{{authors}}}" if "name" in meta["authors"][0] else authors),
        ("year", year or "n.d."),
        ("version", str(meta["version"])),
        ("note", "Python package negatives" + (f", git commit {commit}" if commit else "")),
    ]
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@software{{negatives,\n{body}\n}}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _auto_precision() -> str:
    """What ``precision='auto'`` resolves to on the default device, and why."""
    from negatives.config import resolve_device, resolve_precision

    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    if precision == "bf16":
        return f"bf16 autocast, native on {device}"
    return f"float32, no native bf16 on {device}"


def hardware_table() -> pd.DataFrame:
    """CPU model and cores, memory, GPU (or none), and the training precision that ``auto``
    picks, as the kernel that ran the page saw them."""
    import pandas as pd
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        ram = "unknown"
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        gpu = "; ".join(f"{p.name} ({p.total_memory / 2**30:.0f} GiB)" for p in gpus)
        cuda = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        gpu, cuda = "none", "not used"
    rows = [
        ("operating system", platform.platform()),
        ("CPU", _cpu_model()),
        ("CPU cores (logical / usable)", f"{os.cpu_count()} / {usable}"),
        ("torch CPU threads", str(torch.get_num_threads())),
        ("memory", ram),
        ("GPU", gpu),
        ("CUDA", cuda),
        ("training precision (precision='auto')", _auto_precision()),
    ]
    return pd.DataFrame(rows, columns=["item", "value"])


def timings_table(path: str | os.PathLike[str] = TIMINGS) -> pd.DataFrame:
    """One row per executed notebook: profile, seconds, start and end (UTC), in run order."""
    import pandas as pd

    records = read_timings(Path(path))["notebooks"]
    df = pd.DataFrame(
        [{"notebook": name, **{k: r[k] for k in ("profile", "seconds", "started", "finished")}}
         for name, r in records.items()],
        columns=["notebook", "profile", "seconds", "started", "finished"],
    )  # fmt: skip
    return df.sort_values("started", kind="stable").reset_index(drop=True)


SPEEDRUN = Path("benchmarks/results/speedrun-book.json")


def speedrun_results(path: str | os.PathLike[str] = SPEEDRUN) -> dict[str, Any]:
    """The speedrun's JSON (``benchmarks/speedrun.py``): its header (hardware, date), every
    trained point and baseline (``rows``: ``group`` ladder / tried / frontier / record / peer /
    baseline, ``split`` validation or test) and the record's summary per budget (``record``).
    Raises ``FileNotFoundError`` naming the command that writes the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; `python benchmarks/speedrun.py` writes it")
    return json.loads(path.read_text())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (int(n) != 1)}"


def _speedrun_baseline(out: dict[str, Any], split: str, start: str) -> float:
    """The linear probe of the baseline row of ``split`` whose label starts with ``start``."""
    for r in out["rows"]:
        if r["group"] == "baseline" and r["split"] == split and r["label"].startswith(start):
            return float(r["linear_accuracy"])
    raise KeyError(f"speedrun results: no {split} baseline labelled {start!r}...")


def speedrun_record(out: dict[str, Any]) -> pd.DataFrame:
    """The record (one row per budget, :func:`speedrun_results`' ``record``) with its gain over
    the raw pixels' test probe (``over pixels``, points)."""
    import pandas as pd

    record = pd.DataFrame(out["record"])
    record["over pixels"] = record["linear_mean"] - _speedrun_baseline(out, "test", "raw pixels")
    return record


def speedrun_numbers(out: dict[str, Any], budget: float = 60.0) -> dict[str, Any]:
    """What the reproducibility page quotes from the speedrun, by glue name (without the page's
    prefix): the header, each split's baselines, the ladder's first and last step per method, the
    record at ``budget`` seconds (the largest budget not above it, else the smallest) and the
    record's most accurate point, and the comparison with the usual pipeline."""
    rows = out["rows"]
    values: dict[str, Any] = {
        "speedrun_hardware": out["hardware"],
        "speedrun_date": out["date"],
        "speedrun_validation": f"{out['validation']:,}",
    }
    for split in ("validation", "test"):
        values[f"{split}_pixels"] = _speedrun_baseline(out, split, "raw pixels")
        values[f"{split}_random"] = _speedrun_baseline(out, split, "random encoder, the chosen")
        values[f"{split}_random_before"] = _speedrun_baseline(
            out, split, "random encoder, the previous"
        )
    steps = []
    for method in out["methods"]:
        ladder = [r for r in rows if r["group"] == "ladder" and r["method"] == method]
        if ladder:
            first, last = ladder[0], ladder[-1]
            steps.append(
                f"{method}: {first['linear_accuracy']:.2f}% in {first['train_seconds']:.0f} s before, "
                f"{last['linear_accuracy']:.2f}% in {last['train_seconds']:.0f} s after"
            )
    values["ladder_text"] = "; ".join(steps) or "the ladder was not run"
    record = speedrun_record(out)
    within = record[record["budget"] <= budget]
    at = within.iloc[-1] if len(within) else record.iloc[0]
    values["record_60"] = (
        f"{at['linear_mean']:.2f}% [{at['linear_low']:.2f}, {at['linear_high']:.2f}] within "
        f"{int(at['budget'])} s ({at['method']}, {_plural(int(at['epochs']), 'epoch')}, "
        f"{at['seconds_mean']:.0f} s of training, {int(at['seeds'])} seeds; "
        f"{at['over pixels']:+.2f} points over the pixels)"
    )
    best = record.loc[record["linear_mean"].idxmax()]
    values["record_best"] = (
        f"{best['linear_mean']:.2f}% [{best['linear_low']:.2f}, {best['linear_high']:.2f}] in "
        f"{best['seconds_mean']:.0f} s ({best['method']}, {_plural(int(best['epochs']), 'epoch')})"
    )
    peer = [r for r in rows if r["group"] == "peer"]
    if len(peer) == 2:
        ours, usual = peer
        values["peer_text"] = (
            f"for the same {int(ours['steps']):,} steps our trainer took {ours['train_seconds']:.0f} s "
            f"and reached {ours['linear_accuracy']:.2f}% on the held-out images; the usual pipeline "
            f"({usual['label'].removeprefix('usual: ')}) took {usual['train_seconds']:.0f} s and "
            f"reached {usual['linear_accuracy']:.2f}%: "
            f"{usual['train_seconds'] / ours['train_seconds']:.1f} times as long for the same training"
        )
    else:
        values["peer_text"] = "the comparison was not run (`--stages peer`)"
    return values


def speedrun_figure(out: dict[str, Any]) -> Any:
    """Linear-probe accuracy against training seconds (log scale), two panels: the choice on the
    validation split (each method's frontier with 1.96 binomial s.e., the ladder, the changes
    tried and not kept) and the record on the test set (each budget's mean and 95% interval over
    seeds, the budgets as dotted lines); the raw-pixel and random-encoder probes of each split as
    horizontal lines. ``out``: :func:`speedrun_results`."""
    from negatives import show

    fig, (left, right) = show.subplots(1, 2, height=4.6)
    rows = out["rows"]
    for i, method in enumerate(out["methods"]):
        style = show.series(i).kw()
        pts = sorted((r for r in rows if r["group"] == "frontier" and r["method"] == method),
                     key=lambda r: r["train_seconds"])  # fmt: skip
        if pts:
            left.errorbar([p["train_seconds"] for p in pts], [p["linear_accuracy"] for p in pts],
                          yerr=[1.96 * p["linear_se"] for p in pts], capsize=2,
                          label=f"{method}: the chosen recipe, 1 epoch and more", **style)  # fmt: skip
        ladder = [r for r in rows if r["group"] == "ladder" and r["method"] == method]
        if ladder:
            left.plot([p["train_seconds"] for p in ladder], [p["linear_accuracy"] for p in ladder],
                      color=style["color"], marker="x", linestyle=":",
                      label=f"{method}: the ladder, one change at a time")  # fmt: skip
    tried = [r for r in rows if r["group"] == "tried"]
    if tried:
        left.scatter([p["train_seconds"] for p in tried], [p["linear_accuracy"] for p in tried],
                     color=show.GRAY, s=14, zorder=3, label="tried, not kept")  # fmt: skip
    summary = out.get("record", [])
    if summary:
        right.errorbar(
            [s["seconds_mean"] for s in summary], [s["linear_mean"] for s in summary],
            yerr=[[s["linear_mean"] - s["linear_low"] for s in summary],
                  [s["linear_high"] - s["linear_mean"] for s in summary]],
            capsize=3, label="the record: mean, 95% interval over seeds", **show.series(2).kw(),
        )  # fmt: skip
        for s in summary:
            right.axvline(s["budget"], color=show.GRAY, linewidth=0.8, linestyle=":")
    for ax, split in ((left, "validation"), (right, "test")):
        base = [r for r in rows if r["group"] == "baseline" and r["split"] == split]
        for b, ls in zip(base, ("--", "-.", ":"), strict=False):
            ax.axhline(b["linear_accuracy"], color="k", linestyle=ls, linewidth=1,
                       label=b["label"])  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("training time per encoder (s)")
        ax.set_ylabel(f"linear probe, {split} accuracy (%)")
    left.set_title("choosing: held-out training images")
    right.set_title("the record: test set")
    show.legend_below(fig, ncols=1)
    return fig
