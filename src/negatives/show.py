"""How the book shows its results: one palette, figures sized for the text column, and tables
formatted column by column.

Figures are drawn :data:`FIG_WIDTH` inches wide, the width of the theme's text column, as SVG
(PDF for the LaTeX build), so that a page shows them at their natural size: a 12 pt label is
then 16 CSS px, the size of the body text. Hence every font is at least :data:`MIN_FONT_PT`
and a row holds at most two panels (more would not fit 12 pt tick labels into 676 px).

One palette for the whole book, Okabe & Ito's colour-blind-safe set, and one :func:`style` per
condition (colour, marker and line style together, so that lines stay distinct in grayscale),
so that "K varied by the batch size" or "the CURL bound" look the same in every chapter.

    from negatives import show
    show.use()                                  # once per notebook
    fig, axes = show.subplots(2, 2)             # 2 x 2 panels, FIG_WIDTH wide
    ax.plot(x, y, label="batch", **show.style("batch"))
    display(show.table(df, "Caption", formats={"acc": "points"},
                       intervals={"95% interval (points)": ("low", "high", "points")}))
"""

from __future__ import annotations

import html
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The theme's text column at a 1280 px window is 672 px (measured in Chromium: 7.0 in at 96 px
# per inch); 6.8 in leaves room for what a tight bounding box adds, so the page shows the
# figure unscaled (negatives.pages measures it).
FIG_WIDTH = 6.8
MIN_FONT_PT = 12.0  # 12 pt = 16 px, the body text's size
MAX_PANELS_PER_ROW = 2

# Okabe & Ito (2008), "Color universal design": distinct for the common colour-vision
# deficiencies. Ordered so that the first colours differ most in lightness too.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: faint on white)
)
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":", "-", "--", "-.", ":")
GRAY = "#7F7F7F"


@dataclass(frozen=True)
class Style:
    """How one condition is drawn, everywhere in the book."""

    color: str
    marker: str = "o"
    linestyle: str = "-"

    def kw(self) -> dict[str, Any]:
        """Keyword arguments for ``ax.plot``."""
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}

    # a mapping too, so that ``ax.plot(x, y, **show.series(i))`` works
    def keys(self) -> tuple[str, ...]:
        return ("color", "marker", "linestyle")

    def __getitem__(self, key: str) -> str:
        return self.kw()[key]


def series(i: int) -> Style:
    """The ``i``-th style of the book's cycle (for ordered values: C, temperatures, epochs)."""
    n = len(PALETTE) - 1  # yellow is left out of numbered series
    return Style(PALETTE[i % n], MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])


# Conditions that appear in more than one figure, by the name the chapters use for them.
STYLES: dict[str, Style] = {
    # how K is varied (chapters 3 and 4)
    "batch": Style(PALETTE[0], "o", "-"),
    "mask": Style(PALETTE[1], "s", "--"),
    "eqco-mask": Style(PALETTE[3], "D", "-."),
    "eqco-batch": Style(PALETTE[5], "v", ":"),
    # class priors (chapters 1 and 4)
    "uniform": Style(PALETTE[0], "o", "-"),
    "zipf": Style(PALETTE[1], "s", "--"),
    # losses and bounds (chapters 3 and 4)
    "measured": Style(PALETTE[6], "o", "-"),
    "curl": Style(PALETTE[1], "s", "--"),
    "proposed": Style(PALETTE[2], "^", "-."),
    "exact": Style(PALETTE[6], "", "--"),
    "float64": Style(PALETTE[4], "", ":"),
    "ash": Style(PALETTE[3], "D", ":"),
    "bao": Style(PALETTE[0], "v", "-"),
    "bao_lower": Style(PALETTE[5], "P", "--"),
    # chapter 2's groups of conditions
    "main": Style(PALETTE[0], "o", "-"),
    "fine": Style(PALETTE[4], "s", "--"),
    "rescaled": Style(PALETTE[2], "^", "-."),
    # references: baselines, null distributions
    "baseline": Style(GRAY, "", "--"),
    "null": Style(GRAY, "", ":"),
}


def style(name: str) -> dict[str, Any]:
    """``ax.plot`` keywords of a named condition (:data:`STYLES`)."""
    try:
        return STYLES[name].kw()
    except KeyError:
        raise ValueError(f"style: unknown condition {name!r}; known: {sorted(STYLES)}") from None


def color(name: str) -> str:
    """The colour of a named condition."""
    style(name)  # the error names the known conditions
    return STYLES[name].color


def rc() -> dict[str, Any]:
    """The book's matplotlib settings: fonts, the palette as the colour cycle, light grids."""
    from cycler import cycler

    n = len(PALETTE) - 1
    return {
        "figure.figsize": (FIG_WIDTH, 0.62 * FIG_WIDTH),
        "figure.dpi": 96,  # 1 in = 96 CSS px, so that the SVG's size is the page's
        "savefig.dpi": 192,  # raster parts (images, heat maps) sharp on dense screens
        "font.size": MIN_FONT_PT,
        "axes.titlesize": MIN_FONT_PT,
        "axes.labelsize": MIN_FONT_PT,
        "xtick.labelsize": MIN_FONT_PT,
        "ytick.labelsize": MIN_FONT_PT,
        "legend.fontsize": MIN_FONT_PT,
        "legend.title_fontsize": MIN_FONT_PT,
        "figure.titlesize": MIN_FONT_PT + 1,
        "axes.prop_cycle": cycler(color=list(PALETTE[:n]))
        + cycler(marker=list(MARKERS[:n]))
        + cycler(linestyle=list(LINESTYLES[:n])),
        "lines.markersize": 5,
        "lines.linewidth": 1.8,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.framealpha": 0.85,
        "svg.fonttype": "path",  # the page needs no font to draw the labels
        "pdf.fonttype": 42,
    }


def use() -> None:
    """Apply :func:`rc` and make notebooks emit figures as SVG (HTML) and PDF (LaTeX)."""
    import matplotlib as mpl

    mpl.rcParams.update(rc())
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # outside Jupyter: nothing to configure
        return
    set_matplotlib_formats("svg", "pdf")


def subplots(
    nrows: int = 1, ncols: int = 1, *, height: float | None = None, **kwargs: Any
) -> tuple[Figure, Any]:
    """``plt.subplots`` at the column's width with at most two panels per row; ``height`` in
    inches (default: each row 0.62 of a panel's width, at least 2.6 in)."""
    import matplotlib.pyplot as plt

    for name, value in (("nrows", nrows), ("ncols", ncols)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"subplots: {name}={value!r} must be a positive integer")
    if ncols > MAX_PANELS_PER_ROW:
        raise ValueError(
            f"subplots: ncols={ncols} panels per row; at most {MAX_PANELS_PER_ROW} fit the text "
            "column with readable labels (use more rows)"
        )
    if "figsize" in kwargs:
        raise ValueError("subplots: figsize is fixed by the column's width; give height=")
    if height is None:
        height = nrows * max(2.6, 0.62 * FIG_WIDTH / ncols + (0.5 if ncols > 1 else 0.0))
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(FIG_WIDTH, height), **kwargs)


def legend_below(fig: Figure, ncols: int = 2, **kwargs: Any) -> None:
    """One legend for the whole figure, under its panels: every label of every panel, once.
    (A legend inside a panel of 3.5 in hides the data at 12 pt.)"""
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        ncols = min(ncols, len(seen))
        fig.legend(seen.values(), seen.keys(), loc="outside lower center", ncols=ncols, **kwargs)


def log2_axis(ax: Axes, axis: str = "x") -> None:
    """A base-2 log axis labelled with plain numbers (8, 64, 512), not 2^k nor 8.0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    getattr(ax, f"set_{axis}scale")("log", base=2)
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=2, numticks=6))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(NullLocator())


# A heatmap writes its values in its cells up to this size: "-0.33" at 12 pt fits the cells of a
# half-column panel up to 4 x 4 (at 6 x 6 it spills over its neighbours).
MAX_ANNOTATED_CELLS = 4


def heatmap(
    ax: Axes, matrix: Any, *, vmin: float = -1.0, vmax: float = 1.0, annotate: bool | None = None
) -> Any:
    """A ``(n, m)`` matrix as a diverging heatmap (seaborn's ``vlag``: blue below the middle,
    red above, white at it; readable in grayscale by the lightness), square cells, no
    colorbar of its own (one for the figure: ``fig.colorbar(mesh, ax=axes)``). Each cell is
    annotated with its value to two decimals when the matrix has at most
    :data:`MAX_ANNOTATED_CELLS` rows and columns (``annotate`` forces either). Returns the
    mesh, for the colorbar."""
    import numpy as np
    import seaborn as sns

    values = np.asarray(matrix, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"heatmap: matrix must be 2-D, got shape {values.shape}")
    if annotate is None:
        annotate = max(values.shape) <= MAX_ANNOTATED_CELLS
    with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib retires
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="seaborn")
        sns.heatmap(
            values, ax=ax, vmin=vmin, vmax=vmax, cmap="vlag", center=(vmin + vmax) / 2,
            square=True, cbar=False, annot=annotate, fmt=".2f",
            annot_kws={"fontsize": MIN_FONT_PT}, linewidths=0.5, linecolor="white",
        )  # fmt: skip
    return ax.collections[0]


# ---------------------------------------------------------------------------------------------
# tables


def _number(x: Any, spec: str) -> str:
    if x is None:
        return "–"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "–"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    return format(f, spec).replace("-", "−")


def _sig(digits: int) -> Callable[[Any], str]:
    """``digits`` significant digits, without an exponent between 1e-4 and 1e6."""

    def fmt(x: Any) -> str:
        text = _number(x, f".{digits}g")
        if "e" in text:
            f = float(x)
            if 1e-4 <= abs(f) < 1e6:
                decimals = max(0, digits - 1 - math.floor(math.log10(abs(f))))
                text = _number(f, f".{decimals}f")
        return text

    return fmt


# What a column holds -> how it is written. Units belong in the column's header.
KINDS: dict[str, Callable[[Any], str]] = {
    "points": lambda x: _number(x, ".1f"),  # accuracy in percent points
    "signed points": lambda x: _number(x, "+.1f"),  # a difference of accuracies
    "percent": lambda x: _number(100 * float(x), ".1f") if x is not None else "–",  # a fraction
    "percent2": lambda x: _number(100 * float(x), ".2f") if x is not None else "–",
    "probability": _sig(3),
    "ratio": _sig(3),
    "nats": lambda x: _number(x, ".3f"),
    "count": lambda x: _number(x, ",.0f").replace(",", " ") if x is not None else "–",
    "seconds": lambda x: _number(x, ".1f"),
    "scientific": lambda x: _number(x, ".2e"),
    "general": _sig(3),
    "exact": _sig(6),
    "text": lambda x: "–" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x),
}


def formatter(kind: str | Callable[[Any], str]) -> Callable[[Any], str]:
    """A cell formatter: a :data:`KINDS` name, a format spec (``".4f"`` or ``"{:.4f}"``), or a
    function."""
    if callable(kind):
        return kind
    if kind in KINDS:
        return KINDS[kind]
    if kind.startswith("{:") and kind.endswith("}"):  # str.format style, "{:.2f}"
        kind = kind[2:-1]
    try:
        format(1.5, kind)
    except (ValueError, TypeError):
        raise ValueError(
            f"formats: {kind!r} is neither a kind ({sorted(KINDS)}) nor a format spec"
        ) from None
    return lambda x: _number(x, kind)


def _default_kind(values: pd.Series) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "text"
    if pd.api.types.is_integer_dtype(values):
        return "count"
    finite = values[values.notna() & (values.abs() != math.inf)]
    if len(finite) and (finite == finite.round()).all() and finite.abs().max() < 1e15:
        return "count"  # whole numbers that travelled as floats (a NaN in the column)
    return "general"


def interval(low: Any, high: Any, kind: str | Callable[[Any], str] = "general") -> str:
    """``[low, high]`` in one format; ``–`` when either end is missing."""
    fmt = formatter(kind)
    try:
        missing = math.isnan(float(low)) or math.isnan(float(high))
    except (TypeError, ValueError):
        missing = True
    return "–" if missing else f"[{fmt(low)}, {fmt(high)}]"


class Table:
    """A data frame formatted for reading: every cell a string, numbers right-aligned; shown as
    HTML on a page and as a booktabs tabular in the PDF."""

    def __init__(
        self,
        frame: pd.DataFrame,
        caption: str,
        numeric: list[str],
        css: Mapping[str, Callable[[str], str]] | None = None,
    ) -> None:
        self.frame = frame  # the cells as the reader sees them (strings)
        self.caption = caption
        self.numeric = numeric
        self.css = dict(css or {})  # header -> (cell text -> CSS), for the HTML page only

    def __repr__(self) -> str:
        return f"{self.caption}\n{self.frame.to_string(index=False)}"

    def _styler(self) -> Any:
        styler = self.frame.style.hide(axis="index")
        if self.numeric:
            # numbers right-aligned, and an interval never broken over two lines
            styler = styler.set_properties(
                subset=self.numeric, **{"text-align": "right", "white-space": "nowrap"}
            )
        for column, rule in self.css.items():
            styler = styler.map(rule, subset=[column])
        return styler

    def _repr_html_(self) -> str:
        # The caption sits above the table's own scrolling box, so that a table wider than the
        # text column scrolls sideways while its caption stays in view.
        styler = self._styler().set_table_attributes('class="negatives-table"')
        return (
            '<div class="negatives-table-block">'
            f'<p class="negatives-caption">{html.escape(self.caption)}</p>'
            f'<div class="negatives-table-scroll">{styler.to_html()}</div></div>'
        )

    def _repr_latex_(self) -> str:
        """A booktabs table for the PDF: a float with a tabular when it fits the line, text
        columns as paragraph columns when it would not, and a longtable (which breaks across
        pages) beyond :data:`LATEX_FLOAT_ROWS` rows."""

        def cell(v: Any) -> str:
            # a link on the page (the introduction's chapter column) is its text in the PDF
            return _latex_escape(re.sub(r"<[^>]+>", "", str(v)))

        columns = [str(c) for c in self.frame.columns]
        rows = [[cell(v) for v in row] for row in self.frame.itertuples(index=False)]
        # each column's width in characters: its longest cell, or its header's longest word
        chars = [
            max([len(c) for c in (r[j] for r in rows)] + [max(map(len, h.split() or [""]))])
            for j, h in enumerate(columns)
        ]
        numeric = [c in self.numeric for c in self.frame.columns]
        if sum(chars) + 2 * len(chars) <= LATEX_LINE_CHARS:
            spec = "".join("r" if n else "l" for n in numeric)
        else:  # paragraph columns, widths in proportion to their (capped) contents
            weights = [min(max(w, 4), 40) + 2 for w in chars]  # + the space a word cannot share
            total = sum(weights)
            spec = "".join(
                f">{{{chr(92)}{'raggedleft' if n else 'raggedright'}{chr(92)}arraybackslash}}"
                f"p{{{chr(92)}dimexpr {w / total:.3f}{chr(92)}linewidth-2{chr(92)}tabcolsep{chr(92)}relax}}"
                for w, n in zip(weights, numeric, strict=True)
            )
        head = " & ".join(cell(c) for c in columns) + " \\\\"
        body = "\n".join(" & ".join(r) + " \\\\" for r in rows)
        caption = _latex_escape(self.caption)
        if len(rows) > LATEX_FLOAT_ROWS:
            return (
                f"\\begingroup\\small\n\\begin{{longtable}}{{{spec}}}\n\\caption{{{caption}}}\\\\\n"
                f"\\toprule\n{head}\n\\midrule\n\\endfirsthead\n"
                f"\\toprule\n{head}\n\\midrule\n\\endhead\n\\bottomrule\n\\endlastfoot\n"
                f"{body}\n\\end{{longtable}}\n\\endgroup\n"
            )
        return (
            "\\begin{table}[htbp]\n\\centering\n\\small\n"
            f"\\caption{{{caption}}}\n\\begin{{tabular}}{{{spec}}}\n\\toprule\n{head}\n"
            f"\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n\\end{{table}}\n"
        )


# A table's width in characters that a PDF line holds at \small (about 6.3 in of text).
LATEX_LINE_CHARS = 84
# More rows than this do not fit a page as one float: a longtable breaks across pages.
LATEX_FLOAT_ROWS = 24


def _latex_escape(text: str) -> str:
    table = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
    }  # fmt: skip
    return "".join(table.get(ch, ch) for ch in text)


def table(
    df: pd.DataFrame,
    caption: str,
    *,
    columns: Mapping[str, str] | None = None,
    formats: Mapping[str, str | Callable[[Any], str]] | None = None,
    intervals: Mapping[str, tuple[str, str, str | Callable[[Any], str]]] | None = None,
    index: bool = False,
    css: Mapping[str, Callable[[str], str]] | None = None,
) -> Table:
    """``df`` formatted per column, with a caption.

    ``columns`` picks and renames columns (old name -> header with its unit); without it every
    column is shown. ``formats`` maps a column (old or new name) to a :data:`KINDS` name, a
    format spec or a function; unnamed columns get a default by dtype (integers as counts,
    floats with 3 significant digits, the rest as text). ``intervals`` maps a new header to
    ``(low column, high column, kind)``: the two become one ``[low, high]`` column where the
    low one was (or last, when ``columns`` leaves the low column out). ``index=True`` keeps the
    index as the first column(s). ``css`` maps a shown header to a function of a cell's text
    that gives its CSS (the HTML page only: a verdict's colour, say).
    """
    import pandas as pd

    formats = dict(formats or {})
    intervals = dict(intervals or {})
    frame = df.reset_index() if index else df.reset_index(drop=True)
    known = set(frame.columns)
    for header, spec in intervals.items():
        if not (isinstance(spec, tuple) and len(spec) == 3):
            raise ValueError(f"intervals[{header!r}]={spec!r} must be (low, high, kind)")
        missing = [c for c in spec[:2] if c not in known]
        if missing:
            raise ValueError(f"intervals[{header!r}]: no column {missing}; have {sorted(known)}")
    if columns is not None:
        missing = [c for c in columns if c not in known]
        if missing:
            raise ValueError(f"columns: no column {missing}; have {sorted(map(str, known))}")
    rename = dict(columns) if columns is not None else {c: c for c in frame.columns}
    unknown = [c for c in formats if c not in known and c not in rename.values()]
    if unknown:
        raise ValueError(f"formats: no column {unknown}; have {sorted(map(str, known))}")

    out: dict[str, list[str]] = {}
    numeric: list[str] = []
    merged = {spec[0]: (header, spec) for header, spec in intervals.items()}
    hidden = {spec[1] for spec in intervals.values()}
    order = list(rename) + [lo for lo in merged if lo not in rename]
    for old in order:
        if old in merged:
            header, (lo, hi, kind) = merged[old]
            out[header] = [interval(a, b, kind) for a, b in zip(frame[lo], frame[hi], strict=True)]
            numeric.append(header)
            continue
        if old in hidden:
            continue
        new = rename[old]
        kind = formats.get(new, formats.get(old)) or _default_kind(frame[old])
        out[new] = [formatter(kind)(v) for v in frame[old]]
        if kind != "text" and pd.api.types.is_numeric_dtype(frame[old]):
            numeric.append(new)
    unknown = [c for c in (css or {}) if c not in out]
    if unknown:
        raise ValueError(f"css: no shown column {unknown}; shown: {list(out)}")
    return Table(pd.DataFrame(out), caption, numeric, css)
