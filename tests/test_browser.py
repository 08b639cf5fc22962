"""The browser checks of the built pages (negatives.pages), in Debian's Chromium via Playwright.

The unit tests open tiny hand-written sites (seconds, no book build); the slow test checks every
page of the smoke build. Without Chromium or Playwright they are skipped, naming the set-up
command, except under CI, where scripts/test.sh installs both and they fail
(conftest.missing_system_tool).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from conftest import missing_system_tool

from negatives import pages, show
from negatives.book import MATHJAX
from negatives.pages import BrowserMissing, Problem, check_site, main, site_pages
from negatives.toc import read_toc, toc_chapters

REPO = Path(__file__).resolve().parents[1]

HEAD = '<!doctype html><html><head><meta charset="utf-8"><title>t</title>'
HEAD += '<meta name="viewport" content="width=device-width, initial-scale=1">'
# A figure of 200 x 100 pt, i.e. 266.7 x 133.3 CSS px.
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="200pt" height="100pt" viewBox="0 0 200 100">'
    '<rect width="200" height="100" fill="teal"/></svg>'
)
MATHJAX_HEAD = (
    '<script>window.MathJax = {"options": {"processHtmlClass": "math"}}</script>'
    '<script defer src="mathjax/tex-chtml.js"></script>'
)
WIDE = '<div style="width: 2000px; height: 20px; background: red">wide</div>'

SITE: dict[str, str] = {
    # invisible wide things: a closed <dialog>, display:none, an off-canvas drawer hidden as the
    # theme's sidebars are at phone width; a figure shown at half its size in a notebook output
    "clean.html": HEAD + "</head><body><article><p>Some text.</p>"
    f"<dialog>{WIDE}</dialog><div style='display: none'>{WIDE}</div>"
    "<div style='position: fixed; left: -300px; top: 0; width: 300px; visibility: hidden'>menu</div>"
    '<div class="cell_output"><img src="fig.svg" style="width: 133.33px"></div>'
    "</article></body></html>",
    "wide.html": HEAD + f"</head><body><p>Text.</p><section id='s'>{WIDE}</section></body></html>",
    "scrollbox.html": HEAD + "</head><body><p>Text.</p>"
    f"<div style='overflow-x: auto; width: 100%'>{WIDE}</div></body></html>",
    "broken.html": HEAD + '</head><body><p>Text.</p><img src="missing.png"></body></html>',
    "external.html": HEAD
    + '</head><body><p>Text.</p><img src="https://example.com/x.png"></body></html>',
    # a lazy image far below the fold must still load
    "lazy.html": HEAD + '</head><body><p>Text.</p><div style="height: 6000px"></div>'
    '<img src="fig.svg" loading="lazy"></body></html>',
    "console.html": HEAD + "<script>console.error('boom from the page')</script></head>"
    "<body><p>Text.</p><script>throw new Error('bang')</script></body></html>",
    # math marked up for MathJax on a page that does not load it
    "nomath.html": HEAD
    + '</head><body><p>See <span class="math">\\(x^2\\)</span>.</p></body></html>',
    "math.html": HEAD + MATHJAX_HEAD + '</head><body><p>Fine: <span class="math">\\(x^2 + '
    '\\color{red}{y}\\)</span>.</p><div class="math">\\[\\sum_i a_i\\]</div></body></html>',
    "matherror.html": HEAD + MATHJAX_HEAD + "</head><body><p>"
    '<span class="math">\\(\\frac{1}\\)</span> and <span class="math">\\(\\foo + 1\\)</span>'
    "</p></body></html>",
    # what site_pages leaves out
    "genindex.html": HEAD + "</head><body>index</body></html>",
    "index.html": '<meta http-equiv="Refresh" content="0; url=clean.html" />',
    "_static/macros.html": "<p>a template fragment</p>",
}
CHECKED = sorted(p for p in SITE if p not in ("genindex.html", "index.html", "_static/macros.html"))


def require_browser() -> None:
    try:
        pages.require_browser()
    except BrowserMissing as exc:
        missing_system_tool(str(exc))


def write_site(root: Path) -> Path:
    for name, text in SITE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "fig.svg").write_text(SVG, encoding="utf-8")
    mathjax = REPO / MATHJAX
    if not mathjax.is_file():
        pytest.fail(f"{mathjax} is missing: run `bash scripts/setup.sh` first")
    (root / "mathjax").symlink_to(mathjax.parent, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def checked(site: Path) -> tuple[list[Problem], object]:
    """Every page of the tiny site at 1280 and 390 px, checked once for all the tests below."""
    require_browser()
    return check_site(site, widths=(1280, 390))


def problems_of(checked, page: str, width: int | None = None) -> list[Problem]:
    found, _ = checked
    return [p for p in found if p.page == page and (width is None or p.width == width)]


def row(checked, page: str, width: int) -> dict:
    _, table = checked
    rows = table[(table["page"] == page) & (table["width"] == width)]
    assert len(rows) == 1, (page, width)
    return rows.iloc[0].to_dict()


# ---------------------------------------------------------------------------------------------
# the tiny site


def test_site_pages_leave_out_sphinx_pages_redirects_and_static_fragments(site: Path) -> None:
    assert site_pages(site) == CHECKED


def test_every_page_is_measured_at_every_width(checked) -> None:
    _, table = checked
    assert sorted(zip(table["page"], table["width"], strict=True)) == sorted(
        (p, w) for p in CHECKED for w in (1280, 390)
    )


def test_a_clean_page_has_no_problem_and_its_figure_scale_is_measured(checked) -> None:
    assert problems_of(checked, "clean.html") == []
    r = row(checked, "clean.html", 1280)
    assert r["n_images"] == 1 and r["n_broken_images"] == 0 and r["n_figures"] == 1
    assert r["figure_scale_min"] == pytest.approx(0.5, abs=0.01)  # 133.33 of 266.67 px
    assert r["body_font_px"] == 16
    assert r["scroll_width"] == 1280 and r["n_problems"] == 0


def test_a_wide_div_is_an_overflow_at_phone_width(checked) -> None:
    found = problems_of(checked, "wide.html", 390)
    assert found and {p.kind for p in found} == {"overflow"}
    assert any("document width 2008 px > viewport 390 px" in p.detail for p in found)
    assert any("section#s > div" in p.detail and "..2008 px" in p.detail for p in found)
    assert row(checked, "wide.html", 390)["n_overflow"] == 1  # the div only, not its text


def test_the_same_div_in_a_scroll_box_is_no_overflow(checked) -> None:
    assert problems_of(checked, "scrollbox.html") == []
    assert row(checked, "scrollbox.html", 390)["max_right_px"] <= 390


def test_a_broken_image_is_reported(checked) -> None:
    kinds = {(p.kind, p.width) for p in problems_of(checked, "broken.html")}
    assert kinds == {("image", 1280), ("image", 390), ("http", 1280), ("http", 390)}
    assert any("missing.png" in p.detail for p in problems_of(checked, "broken.html", 390))
    assert row(checked, "broken.html", 390)["n_broken_images"] == 1


def test_an_external_request_is_aborted_and_reported(checked) -> None:
    found = problems_of(checked, "external.html", 390)
    assert any(
        p.kind == "network" and "https://example.com/x.png" in p.detail and "aborted" in p.detail
        for p in found
    )
    # aborted, so the image never loaded (and the test needed no network)
    assert any(p.kind == "image" for p in found)
    assert row(checked, "external.html", 390)["load_s"] < 10


def test_a_lazy_image_below_the_fold_is_loaded(checked) -> None:
    assert problems_of(checked, "lazy.html") == []
    assert row(checked, "lazy.html", 390)["n_images"] == 1


def test_console_errors_and_page_errors_are_problems(checked) -> None:
    details = [p.detail for p in problems_of(checked, "console.html", 1280)]
    assert {p.kind for p in problems_of(checked, "console.html")} == {"console"}
    assert any("boom from the page" in d for d in details)
    assert any("page error" in d and "bang" in d for d in details)


def test_math_without_mathjax_is_reported(checked) -> None:
    found = problems_of(checked, "nomath.html", 1280)
    assert {p.kind for p in found} == {"mathjax"}
    assert any("1 math elements but no rendered formula" in p.detail for p in found)
    assert any(p.detail.endswith(r"TeX left unrendered in the text: \(x^2\)") for p in found)
    assert row(checked, "nomath.html", 1280)["mathjax"] == "absent"


def test_rendered_math_is_clean(checked) -> None:
    assert problems_of(checked, "math.html") == []
    r = row(checked, "math.html", 390)
    assert r["mathjax"] == "done" and r["n_math"] == 2 and r["n_math_source"] == 2


def test_tex_errors_and_undefined_macros_are_reported(checked) -> None:
    details = [p.detail for p in problems_of(checked, "matherror.html", 1280)]
    assert {p.kind for p in problems_of(checked, "matherror.html")} == {"mathjax"}
    assert any(d.startswith("TeX error: Missing argument for \\frac") for d in details)
    assert any(d.startswith("undefined TeX macro \\foo") for d in details)


# ---------------------------------------------------------------------------------------------
# options, the command line, a missing browser


def test_chosen_pages_and_a_screenshot_at_1280_px(site: Path, tmp_path: Path) -> None:
    require_browser()
    found, table = check_site(site, widths=[390], pages=["lazy.html"], screenshots=tmp_path)
    assert found == [] and list(table["page"]) == ["lazy.html"]
    png = (tmp_path / "lazy.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width == 1280 and height > 6000  # the full page
    assert math.isnan(table["figure_scale_min"].iloc[0])  # no notebook output on the page


def test_screenshots_are_named_by_stem_and_by_path_where_stems_repeat() -> None:
    assert pages.screenshot_names(["book/a.html", "x/index.html", "y/index.html"]) == {
        "book/a.html": "a.png",
        "x/index.html": "x-index.png",
        "y/index.html": "y-index.png",
    }


def test_cli_prints_the_table_and_exits_1_on_problems(site: Path, capsys) -> None:
    require_browser()
    assert main([str(site), "--width", "390", "--page", "clean.html"]) == 0
    out = capsys.readouterr().out
    assert "clean.html" in out and "figure_scale_min" in out and "no problems on 1 pages" in out
    assert main([str(site), "--width", "390", "--page", "wide.html", "--page", "clean.html"]) == 1
    out = capsys.readouterr().out
    assert "problems:" in out and "wide.html @ 390px [overflow]" in out


def test_a_missing_chromium_names_the_set_up_command(site: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(pages.shutil, "which", lambda name: None)
    with pytest.raises(
        BrowserMissing, match=r"Chromium is not installed.*setup\.sh --with-browser"
    ):
        check_site(site)
    assert main([str(site)]) == 2
    assert "bash scripts/setup.sh --with-browser" in capsys.readouterr().err


def test_a_missing_page_or_root_is_an_error(site: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no page nope.html"):
        check_site(site, pages=["nope.html"])
    with pytest.raises(FileNotFoundError, match="build the book first"):
        check_site(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------
# the whole smoke book


@pytest.mark.slow
def test_every_page_of_the_smoke_book_passes_in_the_browser(smoke_book: Path) -> None:
    require_browser()
    html = smoke_book / "_build" / "html"
    found, table = check_site(html, widths=(1280, 390))
    print(table.to_string(index=False))  # the measurements, for the log
    chapters = {f"{c.docname}.html" for c in toc_chapters(read_toc(smoke_book))}
    assert chapters and chapters <= set(table["page"]), chapters - set(table["page"])
    assert len(table) == 2 * table["page"].nunique()
    assert not found, f"{len(found)} problems:\n" + "\n".join(map(str, found))
    # Figures are shown unscaled at 1280 px, so their 12 pt (16 px) labels are as large as the
    # body text (negatives.show draws them at the column's width).
    wide = table[(table["width"] == 1280) & (table["n_figures"] > 0)]
    assert len(wide) >= 4 and (wide["figure_scale_min"] >= 0.99).all(), wide
    assert (table["body_font_px"] <= show.MIN_FONT_PT * 96 / 72).all()
