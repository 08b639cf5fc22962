"""What an executed page quotes and shows, read back: every glued value of a page
(:func:`glued_values`), the book's verdicts in one table (:func:`verdict_summary`), the runs
behind each figure (:func:`figure_runs`), a comparison of two builds' numbers
(:func:`compare_glued`), the build's timings file (:func:`read_timings`), and a chapter's stderr
shown on its page (:func:`stderr_to_page`)."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negatives.toc import GENERATED, Chapter, read_toc, toc_chapters

if TYPE_CHECKING:
    import pandas as pd


TIMINGS = GENERATED / "timings.json"


def final_lines(text: str) -> list[str]:
    """What a terminal would show at the end: each line's last carriage-return segment (a
    progress bar's final state), blank lines and repeats dropped."""
    out: list[str] = []
    for line in text.split("\n"):
        last = line.split("\r")[-1].rstrip()
        if last and (not out or out[-1] != last):
            out.append(last)
    return out


@contextlib.contextmanager
def stderr_to_page() -> Iterator[None]:
    """Run a chapter's computations with their stderr (progress bars, the run cache's notices
    such as "corrupt, set aside") shown on the page instead: captured, then printed to stdout,
    one final line per bar. The book build treats stderr as an error (a stray warning on a
    published page is usually a real problem); progress and notices are not. (The kernel
    forwards even its process's own stderr to the page, so nothing can stay live there.) The
    package's log records at INFO and above go to the same place, named by their logger."""
    kept = io.StringIO()
    logger = logging.getLogger("negatives")
    handler = logging.StreamHandler(kept)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # shown once, on the page, not again by a handler of the root's
    try:
        with contextlib.redirect_stderr(kept):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        lines = final_lines(kept.getvalue())
        if lines:
            print("\n".join(lines))


def read_timings(path: Path) -> dict[str, Any]:
    """The timings file (``{"profile", "started", "finished", "notebooks": {name: {...}}}``)."""
    if not path.is_file():
        return {"notebooks": {}}
    data = json.loads(path.read_text())
    data.setdefault("notebooks", {})
    return data


def glued_values(path: str | os.PathLike[str]) -> dict[str, str]:
    """Every value an executed notebook glues (myst-nb's ``glue``), by name, as the page's text
    (``text/plain``, or ``text/markdown`` for Markdown values, under the record's MIME prefix:
    a Markdown value's ``text/plain`` is only its repr, ``<IPython.core.display.Markdown
    object>``)."""
    nb = json.loads(Path(path).read_text())
    out: dict[str, str] = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook", {})
            if record.get("name"):
                name, prefix = record["name"], record.get("mime_prefix", "")
                data = output.get("data", {})
                text = data.get(f"{prefix}text/markdown", data.get(f"{prefix}text/plain", ""))
                out[name] = "".join(text) if isinstance(text, list) else text  # nbformat lines
    return out


def page_title(path: str | os.PathLike[str]) -> str:
    """The first ``# heading`` of a notebook (its page title)."""
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return Path(path).stem


def _glued_json(root: Path, suffix: str) -> Iterator[tuple[Chapter, Path, Any]]:
    """Each toc chapter's glued ``<name>_<suffix>`` (a JSON string), decoded, in reading
    order; chapters not executed, or without that value, are left out."""
    for chapter in toc_chapters(read_toc(root)):
        path = root / chapter.executed
        text = glued_values(path).get(f"{chapter.name}_{suffix}") if path.is_file() else None
        if text is not None:
            yield chapter, path, json.loads(ast.literal_eval(text))


def verdict_summary(root: str | os.PathLike[str] = ".") -> pd.DataFrame:
    """Every chapter's verdict table, as its executed notebook glues it (``<name>_verdicts``,
    :func:`negatives.verdicts.records`), in one table in the toc's reading order, with a link
    to the page (``chapter``: its title, linking to ``<name>.html``) in front. A record without
    a ``kind`` (a page executed before the book told checks of its estimates from the papers'
    claims) is a claim, one without ``any_setting`` a claim of every setting."""
    import pandas as pd

    from negatives.verdicts import CLAIM

    rows = []
    for chapter, path, records in _glued_json(Path(root), "verdicts"):
        link = f'<a href="{chapter.name}.html">{page_title(path)}</a>'  # pages sit side by side
        rows.extend(
            {"chapter": link, "kind": CLAIM, "any_setting": False, **record} for record in records
        )
    return pd.DataFrame(rows)


def figure_runs(root: str | os.PathLike[str] = ".") -> pd.DataFrame:
    """The run ids behind every figure of the book, as each chapter's executed notebook glues
    them (``<name>_figure_runs``: figure name -> run ids), in reading order: one row per figure
    with ``chapter``, ``figure`` (its name, a MyST label) and ``run_ids`` (a sorted list)."""
    import pandas as pd

    rows = [
        {"chapter": chapter.name, "figure": figure, "run_ids": sorted(ids)}
        for chapter, _, runs in _glued_json(Path(root), "figure_runs")
        for figure, ids in runs.items()
    ]
    return pd.DataFrame(rows, columns=["chapter", "figure", "run_ids"])


def figure_runs_markdown(table: pd.DataFrame, id_length: int = 12) -> str:
    """:func:`figure_runs` as a MyST table: each figure by its number ({numref}), its count of
    runs, and their ids (``results/runs/<id>``, shortened to ``id_length`` characters; the
    prefix is unique in practice and ``ls results/runs/<prefix>*`` finds the folder)."""
    lines = [
        "| chapter | figure | runs | run ids (`results/runs/<id>…`) |",
        "|:--|:--|--:|:--|",
    ]
    seen: dict[tuple[str, ...], str] = {}  # a set of runs already listed -> its first figure
    for row in table.itertuples():
        key = tuple(row.run_ids)
        if not key:
            ids = "computed in the page (no training run)"
        elif key in seen:
            ids = f"the runs of {{numref}}`{seen[key]}`"
        else:
            ids = ", ".join(f"`{r[:id_length]}`" for r in row.run_ids)
            seen[key] = row.figure
        lines.append(f"| {row.chapter} | {{numref}}`{row.figure}` | {len(row.run_ids)} | {ids} |")
    return "\n".join(lines)


# Glued values that measure the machine, not the study: they differ between any two builds.
TIMING_WORDS = ("seconds", "minutes", "_time", "hardware", "date")


def compare_glued(before: str | os.PathLike[str], after: str | os.PathLike[str]) -> list[str]:
    """The glued values that differ between two folders of executed notebooks (one line each;
    empty when every number the pages quote is the same), wall-clock timings left out."""
    lines = []
    for path in sorted(Path(before).glob("*.ipynb")):
        other = Path(after) / path.name
        if not other.is_file():
            lines.append(f"{path.name}: missing in {after}")
            continue
        a, b = glued_values(path), glued_values(other)
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name) and not any(w in name for w in TIMING_WORDS):
                lines.append(f"{path.name}: {name}: {a.get(name)!r} -> {b.get(name)!r}")
    return lines
