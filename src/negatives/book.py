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
The module is also the Sphinx extension that fixes what the LaTeX builder would get wrong
(:func:`setup`).

The module also holds the small functions the reproducibility page tabulates
(:func:`versions_table`, :func:`hardware_table`, :func:`timings_table`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negatives.config import PROFILES, check_choice, check_profile

if TYPE_CHECKING:
    import pandas as pd

GENERATED = Path("book/_generated")
NOTEBOOKS = Path("notebooks")
TIMINGS = GENERATED / "timings.json"
MATHJAX = Path("_vendor/mathjax/tex-chtml.js")
EFFECTIVE_TOC = Path("_build/_toc.effective.yml")
LATEX_DIR = Path("_build/latex")
LATEX_TARGET = "book"  # latex_documents' targetname in _config.yml, less ".tex"
PDF = Path("_build/pdf/book.pdf")
PDF_PAGES = Path("_build/pdf/pages")
LATEX_TOOLS = ("xelatex", "latexmk", "kpsewhich", "pdftoppm")
# The pages that report on the chapters (the introduction's verdicts; versions, hardware and
# timings): executed after every chapter, in this order.
REPORTS: tuple[str, ...] = ("intro", "reproducibility")
KERNEL = "python3"


class BookBuildError(RuntimeError):
    """The book could not be built; the message says which notebook / step and why."""


@dataclass(frozen=True)
class Chapter:
    """A toc entry that is an executed notebook: ``notebooks/<name>.ipynb`` -> ``book/_generated``."""

    name: str

    @property
    def source(self) -> Path:
        return NOTEBOOKS / f"{self.name}.ipynb"

    @property
    def executed(self) -> Path:
        return GENERATED / f"{self.name}.ipynb"

    @property
    def docname(self) -> str:
        return (GENERATED / self.name).as_posix()


# ---------------------------------------------------------------------------------------------
# toc


def _toc_entries(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``file`` entry of a jb-book toc, depth first, i.e. in reading order."""
    if isinstance(node, dict):
        if "file" in node:
            yield node
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                yield from _toc_entries(child)
    elif isinstance(node, list):
        for child in node:
            yield from _toc_entries(child)


def read_toc(root: Path) -> dict[str, Any]:
    import yaml

    path = root / "_toc.yml"
    if not path.is_file():
        raise BookBuildError(f"no table of contents at {path}")
    return yaml.safe_load(path.read_text())


def toc_chapters(toc: dict[str, Any]) -> list[Chapter]:
    """The toc entries under ``book/_generated/`` (executed notebooks), in reading order."""
    prefix = GENERATED.as_posix() + "/"
    files = [str(toc.get("root", ""))] + [str(e["file"]) for e in _toc_entries(toc)]
    return [Chapter(f.removeprefix(prefix)) for f in files if f.startswith(prefix)]


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


# ---------------------------------------------------------------------------------------------
# parameters and timings


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["K=64", "device=cuda", "ks=[1, 2]"]`` -> ``{"K": 64, "device": "cuda", "ks": [1, 2]}``.

    Values are Python literals where they parse as one (numbers, ``None``, ``True``, lists),
    otherwise strings, as papermill's ``-p`` does.
    """
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"param={item!r} must look like NAME=VALUE")
        if name == "profile":
            raise ValueError("param=profile is not allowed here; use --profile")
        try:
            params[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[name] = text
    return params


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
    forwards even its process's own stderr to the page, so nothing can stay live there.)"""
    kept = io.StringIO()
    try:
        with contextlib.redirect_stderr(kept):
            yield
    finally:
        lines = final_lines(kept.getvalue())
        if lines:
            print("\n".join(lines))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_timings(path: Path) -> dict[str, Any]:
    """The timings file (``{"profile", "started", "finished", "notebooks": {name: {...}}}``)."""
    if not path.is_file():
        return {"notebooks": {}}
    data = json.loads(path.read_text())
    data.setdefault("notebooks", {})
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # atomic: a killed build never leaves half a file


# ---------------------------------------------------------------------------------------------
# execution


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


# ---------------------------------------------------------------------------------------------
# the PDF


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


# Packages that Jupyter Book's LaTeX class loads but that no Debian TeX package short of
# texlive-fonts-extra (1.4 GB) provides, with the few lines the book needs of each.
_PACKAGE_STUBS = {
    # bbm: blackboard-bold digits (\mathbbm{1}); unicode-math's \mathbb has them too.
    "bbm": "\\ProvidesPackage{bbm}[2024/01/01 negatives stub]\n"
    "\\providecommand{\\mathbbm}[1]{\\mathbb{#1}}\n",
}


def _stub_missing_packages(latex_dir: Path) -> None:
    for name, text in _PACKAGE_STUBS.items():
        found = subprocess.run(["kpsewhich", f"{name}.sty"], capture_output=True, text=True)
        if not found.stdout.strip():
            (latex_dir / f"{name}.sty").write_text(text)


def render_pages(pdf: Path, folder: Path, dpi: int = 50) -> list[Path]:
    """Every page of ``pdf`` as ``folder/page-N.png`` (pdftoppm; the folder is emptied first)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cmd = ["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(folder / "page")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BookBuildError(f"pdftoppm could not render {pdf}:\n{res.stderr.strip()}")
    return sorted(folder.glob("page-*.png"))


# A TeX error: "! message", or "file:line: message" under -file-line-error.
_TEX_ERROR = re.compile(r"^(?:! |\S+:\d+: )")
_TEX_WHERE = re.compile(r"^l\.\d+")


def latex_errors(log: str, most_lines: int = 8) -> list[str]:
    """The errors of a TeX log, each with the lines after it up to the one that shows where
    (``l.<line> <text>`` and its continuation), at most ``most_lines`` lines each."""
    lines = log.splitlines()
    errors: list[str] = []
    i = 0
    while i < len(lines):
        if not _TEX_ERROR.match(lines[i]):
            i += 1
            continue
        block = [lines[i]]
        i += 1
        while i < len(lines) and len(block) < most_lines and not _TEX_ERROR.match(lines[i]):
            block.append(lines[i])
            i += 1
            if _TEX_WHERE.match(block[-1]):
                if i < len(lines) and lines[i].strip() and not _TEX_ERROR.match(lines[i]):
                    block.append(lines[i])
                    i += 1
                break
        errors.append("\n".join(block))
    return errors


_MISSING_CHARACTER = re.compile(r"^Missing character: There is no (.+?) in font (.+?)!?$", re.M)


def missing_characters(log: str) -> list[str]:
    """XeLaTeX's "Missing character" lines: ``"≤ (U+2264) in font FreeSerif"``, each once."""
    found = (
        f"{char} in font {re.split('[/:]', font)[0]}"
        for char, font in _MISSING_CHARACTER.findall(log)
    )
    return list(dict.fromkeys(found))


def _latex_failure(log_path: Path, log: str, output: str, tail: int = 30) -> str:
    errors = latex_errors(log)
    if not log:
        return f"latexmk failed and wrote no {log_path}:\n" + "\n".join(output.splitlines()[-tail:])
    shown = "\n\n".join(errors[:5]) if errors else "(no error message found in the log)"
    return (
        f"XeLaTeX failed on {log_path.with_suffix('.tex')}; the errors in {log_path}:\n{shown}\n"
        f"--- the last {tail} lines of {log_path} ---\n" + "\n".join(log.splitlines()[-tail:])
    )


# A bare operator as a sub- or superscript: MathJax takes `\rho_\max`, TeX wants `\rho_{\max}`.
_BARE_OPERATOR_SCRIPT = re.compile(
    r"([_^])\s*(\\(?:max|min|sup|inf|lim|liminf|limsup|log|ln|exp|det|Pr|arg))(?![A-Za-z])"
)
# A `text/latex` output that is a table (a Table's booktabs tabular in a table float), not math.
_LATEX_TABLE = re.compile(
    r"^\s*(?:\\begingroup\\small\s*)?\\begin\{(?:table|tabular|longtable)\*?\}"
)


def tex_math(math: str) -> str:
    """Math written for MathJax as TeX takes it: a bare operator as a sub- or superscript
    braced (``\\rho_\\max`` -> ``\\rho_{\\max}``); everything else as it is."""
    return _BARE_OPERATOR_SCRIPT.sub(r"\1{\2}", math)


_TABLE_PLACEMENT = re.compile(r"^(\s*\\begin\{table\})(\[[^\]]*\])?")


def is_latex_table(text: str) -> bool:
    """Whether a ``text/latex`` output is a table environment (rather than math)."""
    return bool(_LATEX_TABLE.match(text))


def pin_table(text: str) -> str:
    """A ``table`` float placed ``[H]`` (here, like figures: ``figure_align`` in _config.yml),
    whatever placement it asked for; anything else as it is."""
    return _TABLE_PLACEMENT.sub(r"\1[H]", text, count=1)


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension (``negatives.book`` in _config.yml's extensions) for the LaTeX builder:
    a code cell's ``text/latex`` table (myst-nb renders every ``text/latex`` output as display
    math) goes into the PDF as raw LaTeX (:func:`pin_table`), and math gets :func:`tex_math`. Other builders are
    left alone."""
    from docutils import nodes
    from sphinx.transforms.post_transforms import SphinxPostTransform

    class LatexOutputs(SphinxPostTransform):
        default_priority = 6  # after myst-nb's choice of MIME type (4) and its glue (5)
        builders = ("latex",)

        def run(self, **kwargs: Any) -> None:
            for node in list(self.document.findall(nodes.math_block)):
                text = node.astext()
                if "text_latex" in node["classes"] and is_latex_table(text):
                    node.replace_self(nodes.raw(text, pin_table(text), format="latex"))
            for node in list(
                self.document.findall(lambda n: isinstance(n, nodes.math | nodes.math_block))
            ):
                text = node.astext()
                fixed = tex_math(text)
                if fixed != text:
                    node[:] = [nodes.Text(fixed)]

    app.add_post_transform(LatexOutputs)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


# ---------------------------------------------------------------------------------------------
# what the reproducibility page reports


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
    # `git rev-parse HEAD` prints "HEAD" (and fails) in a repository without commits.
    if commit is None or not all(c in "0123456789abcdef" for c in commit):
        commit = "not available"
    elif _has_uncommitted_changes():
        commit += " (with uncommitted changes)"
    rows.append(("git commit", commit))
    return pd.DataFrame(rows, columns=["component", "version"])


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


# ---------------------------------------------------------------------------------------------
# CLI


# ---------------------------------------------------------------------------------------------
# what a page quotes


def glued_values(path: str | os.PathLike[str]) -> dict[str, str]:
    """Every value an executed notebook glues (myst-nb's ``glue``), by name, as the page's text
    (``text/plain``, or ``text/markdown`` for Markdown values, under the record's MIME prefix)."""
    nb = json.loads(Path(path).read_text())
    out: dict[str, str] = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook", {})
            if record.get("name"):
                name, prefix = record["name"], record.get("mime_prefix", "")
                data = output.get("data", {})
                text = data.get(f"{prefix}text/plain", data.get(f"{prefix}text/markdown", ""))
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
    to the page (``chapter``: its title, linking to ``<name>.html``) in front."""
    import pandas as pd

    rows = []
    for chapter, path, records in _glued_json(Path(root), "verdicts"):
        link = f'<a href="{chapter.name}.html">{page_title(path)}</a>'  # pages sit side by side
        rows.extend({"chapter": link, **record} for record in records)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="negatives-book", description="Execute the book's notebooks and build the HTML."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute the notebooks with papermill, then jupyter-book")
    b.add_argument("--profile", default="book", help=f"scale profile, one of {list(PROFILES)}")
    b.add_argument("--only", metavar="NAME", help="execute just this chapter (and the report)")
    b.add_argument("--no-execute", action="store_true", help="only re-render executed copies")
    b.add_argument(
        "--param", "-p", action="append", default=[], metavar="NAME=VALUE",
        help="extra papermill parameter for the notebooks that declare NAME (repeatable)",
    )  # fmt: skip
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
