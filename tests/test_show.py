"""negatives.show: tables formatted per column, figures sized for the text column, one palette;
and the notebooks use them (no raw pandas styling, no ad-hoc figure sizes or small fonts)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from negatives import show

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "condition": ["all", "hard 5%"],
            "mean": [80.016667, 78.945795],
            "low": [78.945795, 77.1],
            "high": [81.087538, 80.2],
            "n": [3, 3],
            "p": [0.000123456, 0.5],
            "bound": [math.inf, math.nan],
        }
    )


def test_table_formats_each_column_and_merges_intervals() -> None:
    t = show.table(
        _frame(),
        "Main conditions",
        columns={
            "condition": "condition",
            "n": "seeds",
            "mean": "acc. (%)",
            "low": "low",
            "p": "p",
            "bound": "bound (nats)",
        },  # fmt: skip
        formats={"mean": "points", "p": "probability"},
        intervals={"95% interval (%)": ("low", "high", "points")},
    )
    assert list(t.frame.columns) == [
        "condition", "seeds", "acc. (%)", "95% interval (%)", "p", "bound (nats)",
    ]  # fmt: skip
    first = t.frame.iloc[0].to_dict()
    assert first["acc. (%)"] == "80.0" and first["seeds"] == "3"
    assert first["95% interval (%)"] == "[78.9, 81.1]"
    assert first["p"] == "0.000123" and first["bound (nats)"] == "∞"
    assert t.frame.iloc[1]["bound (nats)"] == "–"
    assert "acc. (%)" in t.numeric and "condition" not in t.numeric


def test_table_default_formats_never_print_six_decimals() -> None:
    df = pd.DataFrame({"x": [80.016667, -1.552235], "k": [3.0, float("nan")], "s": ["a", "b"]})
    t = show.table(df, "c")
    assert t.frame["x"].tolist() == ["80", "−1.55"]  # three significant digits
    assert t.frame["k"].tolist() == ["3", "–"]  # whole numbers as counts
    assert not re.search(r"\d\.\d{4,}", t._repr_html_())


def test_table_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="columns: no column"):
        show.table(_frame(), "c", columns={"nope": "x"})
    with pytest.raises(ValueError, match="formats: no column"):
        show.table(_frame(), "c", formats={"nope": "points"})
    with pytest.raises(ValueError, match="neither a kind"):
        show.table(_frame(), "c", formats={"mean": "pts"})
    with pytest.raises(ValueError, match=r"intervals\['i'\]: no column"):
        show.table(_frame(), "c", intervals={"i": ("low", "top", "points")})
    with pytest.raises(ValueError, match="css: no shown column"):
        show.table(_frame(), "c", css={"verdict": str})


def test_table_html_and_latex() -> None:
    df = pd.DataFrame({"chapter": ['<a href="x.html">Bounds</a>'], "share (%)": [0.5]})
    t = show.table(
        df, "50% of it_1", formats={"share (%)": "percent"}, css={"chapter": lambda v: "color: red"}
    )
    page = t._repr_html_()
    assert 'negatives-caption">50% of it_1</p>' in page and 'href="x.html"' in page
    assert "color: red" in page and "text-align: right" in page
    latex = t._repr_latex_()
    assert r"\caption{50\% of it\_1}" in latex and r"\toprule" in latex and r"\bottomrule" in latex
    assert "Bounds" in latex and "href" not in latex  # a link is its text in the PDF
    assert "50.0" in latex and r"share (\%)" in latex


def test_subplots_hold_at_most_two_panels_per_row_at_the_column_width() -> None:
    fig, axes = show.subplots(3, 2)
    assert axes.shape == (3, 2)
    assert fig.get_size_inches()[0] == pytest.approx(show.FIG_WIDTH)
    with pytest.raises(ValueError, match="ncols=3"):
        show.subplots(1, 3)
    with pytest.raises(ValueError, match="figsize"):
        show.subplots(1, 2, figsize=(12, 4))
    with pytest.raises(ValueError, match="nrows"):
        show.subplots(0, 1)


def test_fonts_are_as_large_as_the_body_text_once_on_the_page() -> None:
    # The theme's text column at 1280 px is 676 px, its body text 16 px (measured in Chromium;
    # tests/test_browser.py checks on the built pages that figures are not scaled down).
    body_px, column_px = 16.0, 672.0
    assert show.FIG_WIDTH * 96 <= column_px  # drawn no wider than the column: shown 1:1
    rc = show.rc()
    sizes = [rc[k] for k in rc if k.endswith("size") and not k.startswith(("figure.fig", "lines"))]
    assert sizes and min(sizes) >= show.MIN_FONT_PT
    assert show.MIN_FONT_PT * 96 / 72 >= body_px  # pt -> CSS px


def test_palette_and_styles() -> None:
    assert len(set(show.PALETTE)) == len(show.PALETTE) == 8
    with pytest.raises(ValueError, match="known"):
        show.style("nope")
    # conditions drawn in one figure differ in marker or line style too: distinct in grayscale
    for a, b in (
        ("batch", "mask"),
        ("uniform", "zipf"),
        ("measured", "curl"),
        ("curl", "proposed"),
    ):
        sa, sb = show.STYLES[a], show.STYLES[b]
        assert (sa.marker, sa.linestyle) != (sb.marker, sb.linestyle)
    assert len({(s.marker, s.linestyle) for s in map(show.series, range(7))}) == 7
    assert dict(**show.series(0)) == show.series(0).kw()


def test_log2_axis_and_legend_below() -> None:
    fig, axes = show.subplots(1, 2)
    for ax in axes:
        ax.plot([4, 16, 64], [1, 2, 3], label="batch", **show.style("batch"))
        show.log2_axis(ax)
    show.legend_below(fig)
    assert len(fig.legends) == 1  # one legend, each label once
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["batch"]
    fig.canvas.draw()
    labels = [t.get_text() for t in axes[0].get_xticklabels() if t.get_text()]
    assert "16" in labels and not any("^" in t for t in labels)


def test_heatmap_draws_the_matrix_with_its_values_and_no_colorbar_of_its_own() -> None:
    gram = np.array([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]])
    fig, ax = show.subplots(1, 1)
    mesh = show.heatmap(ax, gram)
    assert np.allclose(np.asarray(mesh.get_array()).reshape(3, 3), gram)
    assert mesh.norm.vmin == -1.0 and mesh.norm.vmax == 1.0
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("1.00") == 3 and texts.count("-0.50") == 6
    assert all(t.get_fontsize() >= show.MIN_FONT_PT for t in ax.texts)
    assert len(fig.axes) == 1  # the figure's one colorbar is the caller's
    big = np.zeros((show.MAX_ANNOTATED_CELLS + 1,) * 2)
    fig, ax = show.subplots(1, 1)
    show.heatmap(ax, big)
    assert not ax.texts  # too many cells to annotate at 12 pt
    with pytest.raises(ValueError, match="2-D"):
        show.heatmap(ax, np.zeros(3))


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_draw_and_tabulate_through_show(path: Path) -> None:
    for cell in _code_cells(path):
        src = "".join(cell["source"])
        for banned in ("plt.subplots(", "figsize=", "fontsize=", ".style.", "tight_layout"):
            assert banned not in src, f"{path.name}: {banned!r} in\n{src[:300]}"
        if re.search(r"^display\((?!Markdown\()", src, re.M):  # a table, not prose
            assert "show.table(" in src or "vd.styled(" in src, f"{path.name}: raw display\n{src}"
        if ("plt.show()" in src and "def " not in src) or re.match(r"\w+_figure\(", src.strip()):
            figure = cell["metadata"].get("mystnb", {}).get("figure", {})
            assert figure.get("name", "").startswith(f"fig-{path.stem.replace('_', '')}"), (
                f"{path.name}: a figure cell without a name\n{src[:200]}"
            )
            assert len(figure.get("caption", "")) > 60, f"{path.name}: {figure.get('name')}"


def test_figure_names_are_unique() -> None:
    names = [
        c["metadata"]["mystnb"]["figure"]["name"]
        for p in NOTEBOOKS
        for c in _code_cells(p)
        if "mystnb" in c["metadata"]
    ]
    assert len(names) == len(set(names)) and len(names) >= 15


def test_percent_and_signed_points() -> None:
    assert show.formatter("percent")(0.0998) == "10.0"
    assert show.formatter("signed points")(-1.04) == "−1.0"
    assert show.formatter("{:.2f}")(np.float64(1.234)) == "1.23"
    assert show.interval(1.0, float("nan"), "points") == "–"


def test_latex_tables_fit_the_line_and_break_across_pages() -> None:
    narrow = show.table(pd.DataFrame({"a": ["x"], "b": [1.5]}), "c")._repr_latex_()
    assert r"\begin{tabular}{lr}" in narrow and r"\begin{table}" in narrow
    wide = pd.DataFrame({"claim": ["a long statement of a claim " * 4] * 3, "n": [1, 2, 3]})
    latex = show.table(wide, "c")._repr_latex_()
    assert r"p{\dimexpr" in latex and "raggedleft" in latex  # paragraph columns
    long = show.table(pd.DataFrame({"a": range(show.LATEX_FLOAT_ROWS + 1)}), "c")._repr_latex_()
    assert r"\begin{longtable}" in long and r"\endhead" in long
