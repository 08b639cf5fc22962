"""The PDF of the book (``negatives.book build --pdf``): the smoke book's PDF, and the small
functions of the LaTeX step."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import missing_system_tool

from negatives import book, latex
from negatives.book import LATEX_DIR, LATEX_TOOLS, PDF, PDF_PAGES, check_latex_tools
from negatives.glue import page_title
from negatives.latex import is_latex_table, latex_errors, missing_characters, pin_table, tex_math
from negatives.toc import GENERATED, BookBuildError, read_toc, toc_chapters

REPO = Path(__file__).resolve().parents[1]
POPPLER = ("pdfinfo", "pdftotext", "pdfimages", "pdffonts", "pdftoppm")


# ---------------------------------------------------------------------------------------------
# what the PDF must show


def _text(pdf: Path) -> str:
    """The PDF's text, whitespace runs as single spaces, typographic quotes as ASCII, casefolded
    (chapter headings are set in capitals)."""
    out = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True)
    text = out.stdout.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split()).casefold()


def _pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    return int(re.search(r"^Pages:\s+(\d+)", out.stdout, flags=re.M).group(1))


def _first_authors(bib: Path) -> list[str]:
    """The surname of every entry's first author (``author = {Surname, Given and ...}``)."""
    return re.findall(r"^\s*author\s*=\s*\{([^,{}]+),", bib.read_text(), flags=re.M)


def _latex_tables(notebook: Path) -> int:
    """How many code-cell outputs of an executed notebook are a ``text/latex`` table."""
    count = 0
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            latex = output.get("data", {}).get("text/latex")
            if latex is not None and is_latex_table("".join(latex)):
                count += 1
    return count


def check_pdf(root: Path, output: str) -> Path:
    """Everything a reader of ``root``'s PDF relies on; returns the PDF."""
    pdf = root / PDF
    assert pdf.is_file(), f"no {pdf}:\n{output[-3000:]}"
    assert f"{pdf}" in output, "the driver names where the PDF is"
    chapters = toc_chapters(read_toc(root))
    pages = _pages(pdf)
    assert pages >= 4 * len(chapters), f"{pages} pages for {len(chapters)} chapters"

    text = _text(pdf)
    for chapter in chapters:
        title = page_title(root / chapter.executed)
        assert " ".join(title.split()).casefold() in text, f"chapter title {title!r} not in PDF"
    authors = _first_authors(root / "book" / "references.bib")
    assert authors, "references.bib has no author fields"
    for surname in authors:
        assert surname.casefold() in text, f"bibliography entry of {surname} not in the PDF"
    assert "et al." in text  # the author-year citations in the running text

    # figures: every one included, and embedded (raster as images, vector PDFs with their fonts)
    tex = (root / LATEX_DIR / "book.tex").read_text()
    figures = re.findall(r"\\sphinxincludegraphics(?:\[[^]]*\])?\{\{([^}]+)\}(\.\w+)\}", tex)
    assert len(figures) >= len(chapters) - 2, f"only {len(figures)} figures in book.tex"
    for stem, ext in figures:
        assert (root / LATEX_DIR / f"{stem}{ext}").is_file(), f"{stem}{ext} not written"
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True)
    rasters = len(images.stdout.splitlines()) - 2  # less the two header lines
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True).stdout
    vectors = sum(ext == ".pdf" for _, ext in figures)
    assert rasters > 0 or vectors == 0, "PNG figures included but no image in the PDF"
    assert vectors == 0 or "DejaVu" in fonts, "PDF figures included but not their fonts"

    # tables: each text/latex table output as a table float (or, when long, a longtable that
    # breaks across pages), not as display math
    expected = sum(_latex_tables(root / c.executed) for c in chapters)
    found = tex.count("\\begin{table}[H]") + tex.count("\\begin{longtable}")
    assert found >= expected, "a text/latex table went missing"
    assert not re.search(r"\\begin\{split\}\s*\\begin\{table", tex), "a table set as math"
    if expected:
        assert "\\toprule" in tex

    # every page as PNG for a reader, and page 1 renders on its own
    rendered = sorted((root / PDF_PAGES).glob("page-*.png"))
    assert len(rendered) == pages
    first = root / "first"
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(first)],
        check=True,
    )
    png = first.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    return pdf


@pytest.mark.slow
def test_smoke_book_pdf_has_every_chapter_figures_tables_and_references(
    smoke_book: Path,
) -> None:
    missing = [t for t in (*LATEX_TOOLS, *POPPLER) if shutil.which(t) is None]
    if missing:
        missing_system_tool(f"{missing} not installed: run `bash scripts/setup.sh --with-latex`")
    cmd = [sys.executable, "-m", "negatives.book", "build", "--no-execute", "--pdf",
           "--root", str(smoke_book)]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=smoke_book, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    output = res.stdout + res.stderr
    assert res.returncode == 0, f"PDF build failed:\n{output[-6000:]}"
    assert "papermill" not in res.stdout, "--no-execute executed a notebook"
    pdf = check_pdf(smoke_book, output)
    print(f"smoke PDF: {seconds:.1f} s (HTML and PDF), {_pages(pdf)} pages")


# ---------------------------------------------------------------------------------------------
# the LaTeX step's functions

TEX_LOG = r"""(./book.aux)
Chapter 4.
[21]
./book.tex:1753: Missing { inserted.
<to be read again>
                   \mathop
l.1753 \(\rho_\max
                  /\rho_\min\)) and compare the optimum at the smallest and ...
Output written on book.xdv (25 pages, 530572 bytes).
"""

TEX_LOG_PACKAGE = r"""(/usr/share/texlive/texmf-dist/tex/latex/pgf/pgflibraryplotmarks.code.tex)))

! LaTeX Error: File `bbm.sty' not found.

Type X to quit or <RETURN> to proceed,
or enter new name. (Default extension: sty)

Enter file name:
./jupyterBook.cls:21: Emergency stop.
<read *>

l.21 \def
         \sphinxdocclass{report}^^M
No pages of output.
"""


def test_latex_errors_shows_the_message_and_where() -> None:
    [error] = latex_errors(TEX_LOG)
    assert error.splitlines()[0] == "./book.tex:1753: Missing { inserted."
    assert "l.1753 \\(\\rho_\\max" in error
    assert error.splitlines()[-1].strip().startswith("/\\rho_\\min")  # the rest of the line
    assert "Output written" not in error


def test_latex_errors_finds_each_error_and_caps_its_lines() -> None:
    errors = latex_errors(TEX_LOG_PACKAGE, most_lines=4)
    assert errors[0].startswith("! LaTeX Error: File `bbm.sty' not found.")
    assert len(errors[0].splitlines()) <= 4
    assert errors[1].startswith("./jupyterBook.cls:21: Emergency stop.")
    assert "l.21 \\def" in errors[1]
    assert latex_errors("This is XeTeX\nOutput written on book.xdv (3 pages).\n") == []


def test_missing_characters_lists_each_character_once() -> None:
    log = (
        "Missing character: There is no \u6f22 (U+6F22) in font FreeSerif/OT:script=latn;lang\n"
        "uage=dflt;!\n"
        "Missing character: There is no \u2264 (U+2264) in font FreeSerif:mapping=tex-text;!\n"
        "Missing character: There is no \u6f22 (U+6F22) in font FreeSerif/OT:script=latn;lang\n"
    )
    assert missing_characters(log) == [
        "\u6f22 (U+6F22) in font FreeSerif",
        "\u2264 (U+2264) in font FreeSerif",
    ]
    assert missing_characters("Overfull \\hbox (2.0pt too wide)\n") == []


def test_latex_failure_names_the_log_and_shows_its_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "book.log"
    message = latex._latex_failure(log_path, TEX_LOG, "latexmk output")
    assert str(log_path) in message and "Missing { inserted." in message
    assert message.rstrip().endswith("Output written on book.xdv (25 pages, 530572 bytes).")
    assert "wrote no" in latex._latex_failure(log_path, "", "latexmk: xelatex not found")


def test_tex_math_braces_bare_operator_scripts_only() -> None:
    assert tex_math(r"\rho_\max/\rho_\min") == r"\rho_{\max}/\rho_{\min}"
    assert tex_math(r"x^\log") == r"x^{\log}"
    for unchanged in (r"\max_i x_i", r"G_\text{simplex}", r"f(x)^\top", r"a_\maxi", r"e^{-\rho}"):
        assert tex_math(unchanged) == unchanged


def test_latex_tables_are_recognised_and_pinned() -> None:
    table = "\\begin{table}[htbp]\n\\centering\n\\begin{tabular}{lr}\n\\end{tabular}\n"
    assert is_latex_table(table) and is_latex_table("\\begin{tabular}{ll}\n")
    assert not is_latex_table(r"\frac{1}{2}") and not is_latex_table(r"$\begin{table}$")
    assert pin_table(table).startswith("\\begin{table}[H]\n\\centering")
    assert pin_table("\\begin{table}\n\\caption{x}").startswith("\\begin{table}[H]\n")
    assert pin_table("\\begin{tabular}{ll}") == "\\begin{tabular}{ll}"


def test_check_latex_tools_names_what_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "latexmk" else "/bin/x")
    with pytest.raises(BookBuildError, match=r"latexmk.*setup\.sh --with-latex"):
        check_latex_tools()


def test_pdf_without_tex_fails_before_executing_anything(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/_generated/intro\n")
    (tmp_path / book.MATHJAX).parent.mkdir(parents=True)
    (tmp_path / book.MATHJAX).write_text("")
    with pytest.raises(BookBuildError, match="xelatex"):
        book.build(root=tmp_path, profile="smoke", pdf=True)
    assert not (tmp_path / GENERATED).exists()


def test_mime_priorities_pick_vector_figures_and_tables_per_builder() -> None:
    from myst_nb.core.render import get_mime_priority

    sphinx = yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["config"]
    overrides = sphinx.get("nb_mime_priority_overrides", [])
    # (myst-nb's own example plugin adds "custommimetype" to every builder: not a MIME type)
    latex = [m for m in get_mime_priority("latex", overrides) if "/" in m]
    html = [m for m in get_mime_priority("html", overrides) if "/" in m]
    assert latex[:2] == ["application/pdf", "image/png"]
    assert "image/svg+xml" not in latex and "text/html" not in latex
    assert latex.index("text/latex") < latex.index("text/plain")
    assert html.index("image/svg+xml") < html.index("image/png")
    assert "application/pdf" not in html
    assert html.index("text/html") < html.index("text/latex")


def test_config_builds_the_pdf_with_xelatex_as_book_tex() -> None:
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["latex"]["latex_engine"] == "xelatex"
    assert config["latex"]["latex_documents"]["targetname"] == f"{book.LATEX_TARGET}.tex"
    assert "negatives.latex" in config["sphinx"]["config"]["extensions"]
    assert config["sphinx"]["config"]["latex_use_xindy"] is False
