"""The book's build driver: papermill over the chapter notebooks, then Jupyter Book.

    python -m negatives.book build --profile book        # the whole book (default profile)
    negatives-book build --profile smoke --only coupon   # execute one chapter, rebuild the HTML
    negatives-book build --no-execute                    # re-render the executed copies only

For each toc entry ``book/_generated/<name>`` (in toc order) the driver executes
``notebooks/<name>.ipynb`` with papermill (``-p profile <profile>``, cwd = the book root,
kernel ``python3``) into ``book/_generated/<name>.ipynb``, records how long it took in
``book/_generated/timings.json``, runs the ``reproducibility`` notebook last (it reads that
file), and then runs ``jupyter-book build`` with warnings as errors. With ``--pdf`` it then
builds the PDF from the same executed copies (:func:`build_pdf`: Jupyter Book's LaTeX builder,
latexmk with XeLaTeX) at ``_build/pdf/book.pdf``, its pages as PNG in ``_build/pdf/pages/``.
The LaTeX builder's fixes are :mod:`negatives.latex`; what a page quotes is read back by
:mod:`negatives.glue`; the reproducibility page's tables are
:mod:`negatives.chapters.reproducibility`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negatives.config import (
    PROFILES,
    add_param_option,
    check_choice,
    check_profile,
    parse_params,
)
from negatives.glue import TIMINGS, compare_glued, read_timings
from negatives.latex import _latex_failure, _stub_missing_packages, missing_characters
from negatives.toc import GENERATED, REPORTS, BookBuildError, Chapter, read_toc, toc_chapters

if TYPE_CHECKING:
    pass


MATHJAX = Path("_vendor/mathjax/tex-chtml.js")


EFFECTIVE_TOC = Path("_build/_toc.effective.yml")


LATEX_DIR = Path("_build/latex")


LATEX_TARGET = "book"  # latex_documents' targetname in _config.yml, less ".tex"


PDF = Path("_build/pdf/book.pdf")


PDF_PAGES = Path("_build/pdf/pages")


LATEX_TOOLS = ("xelatex", "latexmk", "kpsewhich", "pdftoppm")


KERNEL = "python3"


def _without(toc: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    """A copy of the toc without the entries whose ``file`` is in ``drop``."""

    def prune(node: Any) -> Any:
        if isinstance(node, list):
            return [prune(n) for n in node if not (isinstance(n, dict) and n.get("file") in drop)]
        if isinstance(node, dict):
            return {
                k: prune(v) if k in ("parts", "chapters", "sections") else v
                for k, v in node.items()
            }
        return node

    if toc.get("root") in drop:
        raise BookBuildError(f"the toc root {toc['root']} cannot be skipped")
    return prune(toc)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # atomic: a killed build never leaves half a file


def _declared_parameters(root: Path, chapter: Chapter) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(root / chapter.source)))


def execute_chapter(
    root: Path, chapter: Chapter, profile: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Execute one notebook with papermill; return its timing record.

    Raises :class:`BookBuildError` naming the notebook and the failing cell.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out = root / chapter.executed
    out.parent.mkdir(parents=True, exist_ok=True)
    started, t0 = _now(), time.perf_counter()
    try:
        papermill.execute_notebook(
            str(root / chapter.source),
            str(out),
            parameters={"profile": profile, **params},
            kernel_name=KERNEL,
            cwd=str(root),
            progress_bar=True,
            log_output=True,
        )
    except PapermillExecutionError as exc:
        first_line = next((ln for ln in exc.source.splitlines() if ln.strip()), "")
        raise BookBuildError(
            f"notebook {chapter.source} failed in cell [{exc.exec_count}] "
            f"(cell index {exc.cell_index}, starting {first_line!r}):\n"
            f"    {exc.ename}: {exc.evalue}\n"
            f"partially executed copy (with the traceback): {out}"
        ) from exc
    except Exception as exc:  # kernel died, timeout, missing kernel...
        raise BookBuildError(
            f"notebook {chapter.source} could not be executed: {type(exc).__name__}: {exc}\n"
            f"partially executed copy (if any): {out}"
        ) from exc
    seconds = time.perf_counter() - t0
    _hide_default_parameters(out)
    return {
        "seconds": round(seconds, 3),
        "profile": profile,
        "parameters": params,
        "started": started,
        "finished": _now(),
    }


def _hide_default_parameters(path: Path) -> None:
    """Tag the notebook's own ``parameters`` cell ``remove-cell`` in the executed copy.

    papermill adds an ``injected-parameters`` cell after it with the values actually used; the
    page shows that one, not the superseded defaults, unless the page's only parameter is the
    profile (the introduction names it in its text).
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    own = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    only_profile = own is not None and [
        line.split("=")[0].strip() for line in own.source.splitlines() if "=" in line
    ] == ["profile"]
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        hide = "parameters" in tags or (only_profile and "injected-parameters" in tags)
        if hide and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(nb, path)


def _plan(
    root: Path, chapters: list[Chapter], execute: bool, only: str | None
) -> tuple[list[Chapter], list[tuple[Chapter, str]]]:
    """The chapters to execute, and those that cannot be rendered (with the reason)."""
    to_run: list[Chapter] = []
    missing: list[tuple[Chapter, str]] = []
    for ch in chapters:
        runs = execute and (only is None or ch.name == only or ch.name in REPORTS)
        if not (root / ch.source).is_file():
            if ch.name == only:
                raise BookBuildError(f"--only {only}: {ch.source} does not exist")
            missing.append((ch, f"{ch.source} does not exist yet"))
        elif runs:
            to_run.append(ch)
        elif not (root / ch.executed).is_file():
            missing.append((ch, f"{ch.executed} has not been executed yet"))
    return to_run, missing


def build(
    root: str | os.PathLike[str] = ".",
    profile: str = "book",
    only: str | None = None,
    execute: bool = True,
    params: dict[str, Any] | None = None,
    allow_missing: bool = False,
    pdf: bool = False,
) -> Path:
    """Execute the chapter notebooks (toc order, ``reproducibility`` last) and build the HTML.

    Returns the path of the built ``index.html``.

    - ``only``: execute just this chapter (and the reproducibility page, which reports it); the
      other chapters are rendered from their existing executed copies.
    - ``execute=False``: only re-render the existing executed copies.
    - ``params``: extra papermill parameters, each given to the notebooks that declare it.
    - ``allow_missing``: skip (with a notice) toc chapters whose notebook or executed copy does
      not exist, building the book from a reduced toc.
    - ``pdf``: then build the PDF too (:func:`build_pdf`); the TeX tools are checked first.
    """
    root = Path(root).resolve()
    profile = check_profile(profile)
    params = dict(params or {})
    toc = read_toc(root)
    chapters = toc_chapters(toc)
    if only is not None:
        check_choice("only", only, [c.name for c in chapters])
    if not (root / MATHJAX).is_file():
        raise BookBuildError(
            f"MathJax is missing ({root / MATHJAX}); run `bash scripts/setup.sh`, which copies "
            "npm's mathjax es5 bundle there so that formulas render offline"
        )
    if pdf:
        check_latex_tools()  # before hours of execution, not after

    to_run, missing = _plan(root, chapters, execute, only)
    if missing and not allow_missing:
        raise BookBuildError(
            "cannot build the whole book:\n  "
            + "\n  ".join(reason for _, reason in missing)
            + "\n(run without --only / --no-execute, or pass --allow-missing to skip them)"
        )
    for _, reason in missing:
        print(f"skipping: {reason} (--allow-missing)", flush=True)
    # The report page runs after every chapter it reports on.
    to_run.sort(key=lambda c: REPORTS.index(c.name) + 1 if c.name in REPORTS else 0)

    declared = {ch.name: _declared_parameters(root, ch) for ch in to_run}
    for ch in to_run:
        if "profile" not in declared[ch.name]:
            raise BookBuildError(f"{ch.source} has no `profile` in its `parameters` cell")
    unknown = set(params) - set().union(*declared.values()) if to_run else set(params)
    if unknown:
        raise ValueError(
            f"param={sorted(unknown)} is declared by none of the notebooks executed "
            f"({[c.name for c in to_run]})"
        )

    timings_path = root / TIMINGS
    # A whole-book run starts a fresh record; --only keeps the other chapters' earlier records.
    timings = read_timings(timings_path) if only else {"notebooks": {}}
    if to_run:
        timings.update(profile=profile, started=_now(), finished=None)
    for i, ch in enumerate(to_run, 1):
        mine = {k: v for k, v in params.items() if k in declared[ch.name]}
        print(
            f"[{i}/{len(to_run)}] papermill {ch.source} -> {ch.executed} (profile={profile}"
            + "".join(f", {k}={v!r}" for k, v in mine.items())
            + ")",
            flush=True,
        )
        record = execute_chapter(root, ch, profile, mine)
        timings["notebooks"][ch.name] = record
        _write_json(timings_path, timings)
        print(f"[{i}/{len(to_run)}] {ch.name}: {record['seconds']:.1f} s", flush=True)
    if to_run:
        timings["finished"] = _now()
        _write_json(timings_path, timings)

    skipped = [ch.docname for ch, _ in missing]
    index = build_html(root, toc, skipped)
    if pdf:
        build_pdf(root, toc, skipped)
    return index


def _effective_toc(root: Path, toc: dict[str, Any], skipped: Sequence[str]) -> Path:
    """``_toc.yml``, or (chapters skipped) a copy without them at ``EFFECTIVE_TOC``."""
    if not skipped:
        return root / "_toc.yml"
    import yaml

    toc_path = root / EFFECTIVE_TOC
    toc_path.parent.mkdir(parents=True, exist_ok=True)
    toc_path.write_text(
        "# Written by negatives.book (--allow-missing): _toc.yml without the skipped\n"
        f"# chapters {list(skipped)}.\n"
        + yaml.safe_dump(_without(toc, set(skipped)), sort_keys=False)
    )
    print(f"building from {toc_path} (skipped: {', '.join(skipped)})", flush=True)
    return toc_path


def _jupyter_book(root: Path, builder: str, toc_path: Path) -> None:
    """``jupyter-book build`` with warnings as errors (nit-picky, all pages re-read: --all, so
    that warnings of unchanged pages are raised again under -W)."""
    cmd = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
        "build", str(root), "--builder", builder, "--toc", str(toc_path),
        "--warningiserror", "--nitpick", "--keep-going", "--all",
    ]  # fmt: skip
    print("$ jupyter-book " + " ".join(cmd[3:]), flush=True)
    if subprocess.run(cmd, cwd=root).returncode != 0:
        raise BookBuildError(
            f"jupyter-book build --builder {builder} failed (warnings are errors); "
            "see the log above"
        )


def build_html(root: Path, toc: dict[str, Any], skipped: Sequence[str] = ()) -> Path:
    """``jupyter-book build`` with warnings as errors (nit-picky, all pages re-read)."""
    t0 = time.perf_counter()
    _jupyter_book(root, "html", _effective_toc(root, toc, skipped))
    index = root / "_build" / "html" / "index.html"
    print(f"HTML built in {time.perf_counter() - t0:.1f} s: {index}", flush=True)
    return index


def check_latex_tools() -> None:
    """Raise :class:`BookBuildError` naming the TeX / poppler tools that are not installed."""
    missing = [tool for tool in LATEX_TOOLS if shutil.which(tool) is None]
    if missing:
        raise BookBuildError(
            f"the PDF needs {', '.join(missing)}, which are not installed; run "
            "`bash scripts/setup.sh --with-latex` (Debian's TeX Live and poppler-utils)"
        )


def build_pdf(root: Path, toc: dict[str, Any], skipped: Sequence[str] = ()) -> Path:
    """The PDF of the book from the executed copies, without executing anything.

    Jupyter Book's LaTeX builder (warnings as errors, like the HTML) writes
    ``_build/latex/book.tex``; latexmk runs XeLaTeX on it (``_build/latex/book.log``); the PDF
    is copied to ``_build/pdf/book.pdf`` and its pages rendered to
    ``_build/pdf/pages/page-N.png`` (50 dpi). A LaTeX error, or a character that no font has
    (it would be left out of the page silently), raises :class:`BookBuildError` with the
    errors and the tail of the log. Returns the path of the PDF.
    """
    check_latex_tools()
    t0 = time.perf_counter()
    latex_dir = root / LATEX_DIR
    shutil.rmtree(latex_dir, ignore_errors=True)  # no .aux of an earlier (failed) run
    _jupyter_book(root, "latex", _effective_toc(root, toc, skipped))
    tex = latex_dir / f"{LATEX_TARGET}.tex"
    if not tex.is_file():
        raise BookBuildError(f"the LaTeX builder wrote no {tex} (latex_documents in _config.yml?)")
    _stub_missing_packages(latex_dir)
    t1 = time.perf_counter()
    cmd = ["latexmk", "-pdfxe", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
           tex.name]  # fmt: skip
    print(f"$ (cd {latex_dir} && {' '.join(cmd)})", flush=True)
    # Sphinx's latexmkrc reads LATEXOPTS (its Makefile sets it)
    env = {**os.environ, "LATEXOPTS": os.environ.get("LATEXOPTS", "")}
    res = subprocess.run(
        cmd, cwd=latex_dir, env=env, capture_output=True, text=True, errors="replace"
    )
    (latex_dir / "latexmk.out").write_text(res.stdout + res.stderr)
    log_path = tex.with_suffix(".log")
    log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if res.returncode != 0:
        raise BookBuildError(_latex_failure(log_path, log, res.stdout + res.stderr))
    missing = missing_characters(log)
    if missing:
        raise BookBuildError(
            f"XeLaTeX left out characters that no font of the PDF has ({log_path}):\n  "
            + "\n  ".join(missing)
        )
    pdf = root / PDF
    pdf.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tex.with_suffix(".pdf"), pdf)
    t2 = time.perf_counter()
    pages = render_pages(pdf, root / PDF_PAGES)
    overfull = len(re.findall(r"^Overfull \\hbox", log, flags=re.M))
    print(
        f"PDF built in {time.perf_counter() - t0:.1f} s (LaTeX builder {t1 - t0:.1f} s, "
        f"latexmk {t2 - t1:.1f} s): {pdf} ({len(pages)} pages, "
        f"{pdf.stat().st_size / 2**20:.1f} MiB; {overfull} overfull lines in {log_path.name}); "
        f"pages as PNG in {root / PDF_PAGES}/",
        flush=True,
    )
    return pdf


def render_pages(pdf: Path, folder: Path, dpi: int = 50) -> list[Path]:
    """Every page of ``pdf`` as ``folder/page-N.png`` (pdftoppm; the folder is emptied first)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cmd = ["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(folder / "page")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BookBuildError(f"pdftoppm could not render {pdf}:\n{res.stderr.strip()}")
    return sorted(folder.glob("page-*.png"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="negatives-book", description="Execute the book's notebooks and build the HTML."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute the notebooks with papermill, then jupyter-book")
    b.add_argument("--profile", default="book", help=f"scale profile, one of {list(PROFILES)}")
    b.add_argument("--only", metavar="NAME", help="execute just this chapter (and the report)")
    b.add_argument("--no-execute", action="store_true", help="only re-render executed copies")
    add_param_option(b)  # passed to each notebook that declares NAME
    b.add_argument(
        "--allow-missing", action="store_true",
        help="skip toc chapters whose notebook (or executed copy) does not exist yet",
    )  # fmt: skip
    b.add_argument(
        "--pdf", action="store_true",
        help=f"then the PDF too (XeLaTeX): {PDF}, its pages as PNG in {PDF_PAGES}/",
    )  # fmt: skip
    b.add_argument("--root", default=".", help="book root: _config.yml, _toc.yml (default: .)")
    c = sub.add_parser(
        "compare", help="the glued values that differ between two folders of executed notebooks"
    )
    c.add_argument("before", help="e.g. a copy of book/_generated from before a change")
    c.add_argument("after", nargs="?", default=str(GENERATED), help="default: book/_generated")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # papermill logs each cell's output through `logging` (log_output=True).
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "compare":
        lines = compare_glued(args.before, args.after)
        print("\n".join(lines) if lines else "every glued value is the same (timings left out)")
        return 1 if lines else 0
    try:
        build(
            root=args.root,
            profile=args.profile,
            only=args.only,
            execute=not args.no_execute,
            params=parse_params(args.param),
            allow_missing=args.allow_missing,
            pdf=args.pdf,
        )
    except ValueError as exc:
        print(f"negatives-book: error: {exc}", file=sys.stderr)
        return 2
    except BookBuildError as exc:
        print(f"negatives-book: build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
