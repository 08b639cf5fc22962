"""The book driver (negatives.book): the whole smoke book, and its failure modes."""

from __future__ import annotations

import ast
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from negatives.book import MATHJAX, build, main
from negatives.chapters import bounds, coupon, difficulty, more_negatives, treatments
from negatives.chapters.reproducibility import (
    hardware_table,
    speedrun_numbers,
    speedrun_record,
    timings_table,
)
from negatives.config import parse_params
from negatives.glue import TIMING_WORDS, compare_glued, glued_values
from negatives.toc import BookBuildError, Chapter, read_toc, toc_chapters

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# helpers


class _Page(HTMLParser):
    """The scripts, stylesheets, images and output blocks of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.script_srcs: list[str] = []
        self.inline_scripts: list[str] = []
        self.link_hrefs: list[str] = []
        self.img_srcs: list[str] = []
        self.a_hrefs: list[str] = []
        self.classes: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("class"):
            self.classes.append(a["class"])
        if tag == "script":
            if a.get("src"):
                self.script_srcs.append(a["src"])
            self._in_script = not a.get("src")
        elif tag == "link" and a.get("href"):
            self.link_hrefs.append(a["href"])
        elif tag == "img" and a.get("src"):
            self.img_srcs.append(a["src"])
        elif tag == "a" and a.get("href"):
            self.a_hrefs.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def _parse(path: Path) -> tuple[_Page, str]:
    text = path.read_text()
    page = _Page()
    page.feed(text)
    return page, text


def _notebook(path: Path, *code: str) -> None:
    """A chapter-like notebook: title, a `parameters` cell with `profile`, then ``code``."""
    cells = [
        new_markdown_cell("# A test chapter"),
        new_code_cell('profile = "book"\nscale = 1', metadata={"tags": ["parameters"]}),
        *(new_code_cell(c) for c in code),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _tiny_book(root: Path, chapters: dict[str, tuple[str, ...] | None]) -> Path:
    """A book root whose toc lists ``chapters``; ``None`` = the notebook does not exist."""
    (root / "book").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Intro\n")
    entries = "".join(f"  - file: book/_generated/{name}\n" for name in chapters)
    (root / "_toc.yml").write_text(f"format: jb-book\nroot: book/intro\nchapters:\n{entries}")
    (root / MATHJAX).parent.mkdir(parents=True)
    (root / MATHJAX).write_text("// stand-in: these tests never reach the HTML build\n")
    for name, code in chapters.items():
        if code is not None:
            _notebook(root / "notebooks" / f"{name}.ipynb", *code)
    return root


# ---------------------------------------------------------------------------------------------
# the whole book, smoke profile


def _built_chapters(root: Path) -> list[Chapter]:
    chapters = toc_chapters(read_toc(root))
    missing = [c.name for c in chapters if not (root / c.source).is_file()]
    assert not missing, f"toc chapters without a notebook: {missing}"
    return chapters


@pytest.mark.slow
def test_smoke_book_has_every_chapter_with_a_figure_and_no_error(smoke_book: Path) -> None:
    html = smoke_book / "_build" / "html"
    chapters = _built_chapters(smoke_book)
    assert "reproducibility" in [c.name for c in chapters]
    for page in ("book/_generated/intro.html", "book/references.html", "index.html"):
        assert (html / page).is_file(), page
    for ch in chapters:
        path = html / f"{ch.docname}.html"
        assert path.is_file(), f"{ch.name}: no page {path}"
        page, text = _parse(path)
        figures = [s for s in page.img_srcs if "_images/" in s]
        assert figures or ch.name == "intro", f"{ch.name}: no figure on the page"
        for src in figures:
            assert (path.parent / src).resolve().is_file(), f"{ch.name}: broken image {src}"
        assert "Traceback" not in text, f"{ch.name}: a traceback on the page"
        assert "An Exception was encountered" not in text, f"{ch.name}: papermill error cell"
        bad = [c for c in page.classes if {"stderr", "traceback", "error"} & set(c.split())]
        assert not bad, f"{ch.name}: error or stderr output blocks {bad}"


@pytest.mark.slow
def test_smoke_book_quotes_what_the_run_cache_holds(smoke_book: Path) -> None:
    # every chapter's numbers recomputed here from the build's own run cache (nothing trains:
    # every run and evaluation is cached) are exactly the values its page glues
    results = str(smoke_book / "results")
    for name, module in {
        "coupon": coupon,
        "difficulty": difficulty,
        "bounds": bounds,
        "more_negatives": more_negatives,
        "treatments": treatments,
    }.items():
        extra = {} if module is coupon else {"results_dir": results}
        P = module.Params.from_profile("smoke", **extra)
        # chapter 5 also reads the other chapters' verdicts from the executed pages
        T = module.run(P, root=smoke_book) if module is treatments else module.run(P)
        glued = glued_values(smoke_book / "book" / "_generated" / f"{name}.ipynb")
        want = {
            k: v for k, v in module.numbers(P, T).items() if not any(w in k for w in TIMING_WORDS)
        }
        # the page was built with the default results folder, so its command names no other
        want[f"{name}_rerun"] = module.Params.from_profile("smoke").papermill_command(name)
        assert want, name
        for key, value in want.items():
            assert glued.get(key) == repr(value), f"{name}: {key}"
        if module is difficulty:  # every claim of the paper has its rows
            assert set(T["verdicts"]["key"]) == set(difficulty.paper_claims()), name
        if module is bounds:  # per data set and mode: 2 accuracy trends, CURL, proposed, 2 lower,
            # Bao et al.'s two; per EqCo arm ("eqco-<mode>"): its verdict
            per = T["verdicts"].groupby(["data", "mode"])["key"].apply(sorted)
            scans = per[~per.index.get_level_values("mode").str.startswith("eqco-")]
            arms = per[per.index.get_level_values("mode").str.startswith("eqco-")]
            assert len(scans) == len(P.scan.modes) + len(P.scan.latent_modes) and all(
                k == ["accuracy", "accuracy", "curl", "every K", "lower bound", "lower bound",
                      "proposed", "surrogate gap"]
                for k in scans
            ), per  # fmt: skip
            assert len(arms) == 2 and all(k == ["eqco"] for k in arms), per  # images and latent


@pytest.mark.slow
def test_smoke_book_intro_summarises_every_chapters_verdicts(smoke_book: Path) -> None:
    # the first page's table is the chapters' verdict tables, row for row, in reading order
    generated = smoke_book / "book" / "_generated"
    intro = pd.read_json(
        io.StringIO(ast.literal_eval(glued_values(generated / "intro.ipynb")["intro_summary"]))
    )
    chapters = [
        pd.read_json(
            io.StringIO(ast.literal_eval(glued_values(generated / f"{n}.ipynb")[f"{n}_verdicts"]))
        )
        for n in ("difficulty", "bounds", "more_negatives", "treatments")
    ]
    expected = pd.concat(chapters, ignore_index=True)
    columns = ["claim", "paper", "setting", "ours", "verdict"]
    pd.testing.assert_frame_equal(intro[columns], expected[columns])
    page, text = _parse(smoke_book / "_build" / "html" / "book" / "_generated" / "intro.html")
    for href in ("difficulty.html", "bounds.html", "more_negatives.html", "treatments.html"):
        assert href in page.a_hrefs, href  # each row links to the chapter that shows it
    counts = glued_values(generated / "intro.ipynb")
    assert int(counts["intro_n_verdicts"]) == len(expected)


@pytest.mark.slow
def test_smoke_book_loads_nothing_from_the_network(smoke_book: Path) -> None:
    html = smoke_book / "_build" / "html"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    pages = sorted(html.rglob("*.html"))
    assert pages
    for path in pages:
        page, _ = _parse(path)
        external = [
            u for u in page.script_srcs + page.link_hrefs if "://" in u or u.startswith("//")
        ]
        assert not external, f"{path.relative_to(html)} loads {external}"
        inline_urls = [s for s in page.inline_scripts if "http://" in s or "https://" in s]
        assert not inline_urls, f"{path.relative_to(html)} has URLs in scripts: {inline_urls}"
        for src in (s for s in page.script_srcs if "mathjax" in s.lower()):
            assert (path.parent / src.split("?")[0]).resolve() == (
                html / "_static" / "mathjax" / "tex-chtml.js"
            ).resolve(), f"{path.relative_to(html)}: MathJax from {src}"
    intro, _ = _parse(html / "book" / "_generated" / "intro.html")  # the intro has formulas
    assert any("_static/mathjax/tex-chtml.js" in s for s in intro.script_srcs)
    # the stylesheet that lets wide display equations scroll inside their box
    assert any("_static/negatives.css" in h for h in intro.link_hrefs)
    assert "overflow-x: auto" in (html / "_static" / "negatives.css").read_text()


@pytest.mark.slow
def test_smoke_book_records_timings(smoke_book: Path) -> None:
    data = json.loads((smoke_book / "book" / "_generated" / "timings.json").read_text())
    assert data["profile"] == "smoke"
    names = [c.name for c in _built_chapters(smoke_book)]
    assert sorted(data["notebooks"]) == sorted(names)
    for name, record in data["notebooks"].items():
        assert record["profile"] == "smoke"
        assert record["seconds"] > 0, name
        assert record["started"] <= record["finished"], name
    table = timings_table(smoke_book / "book" / "_generated" / "timings.json")
    assert table["notebook"].iloc[-1] == "reproducibility"  # it runs after the chapters


# ---------------------------------------------------------------------------------------------
# failures


def test_failing_notebook_names_the_notebook_and_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _tiny_book(tmp_path, {"boom": ("x = 1", "y = 2\nraise ZeroDivisionError('on purpose')")})
    rc = main(["build", "--profile", "smoke", "--root", str(root)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "notebooks/boom.ipynb" in err
    # cells: title, parameters, papermill's injected parameters, x = 1, the raise -> count 4
    assert "cell [4]" in err
    assert "ZeroDivisionError: on purpose" in err
    partial = root / "book" / "_generated" / "boom.ipynb"
    assert str(partial) in err
    assert "injected-parameters" in partial.read_text()  # papermill wrote the partial copy


def test_unknown_profile_is_refused_naming_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _tiny_book(tmp_path, {"ok": ("x = 1",)})
    with pytest.raises(ValueError, match="profile='huge'"):
        build(root, profile="huge")
    assert main(["build", "--profile", "huge", "--root", str(root)]) == 2
    assert "profile" in capsys.readouterr().err


def test_missing_notebook_needs_allow_missing(tmp_path: Path) -> None:
    root = _tiny_book(tmp_path, {"ghost": None})
    with pytest.raises(BookBuildError, match="notebooks/ghost.ipynb does not exist"):
        build(root, profile="smoke")


def test_no_execute_needs_executed_copies(tmp_path: Path) -> None:
    root = _tiny_book(tmp_path, {"ok": ("x = 1",)})
    with pytest.raises(BookBuildError, match="book/_generated/ok.ipynb has not been executed"):
        build(root, profile="smoke", execute=False)


def test_unknown_only_and_unknown_param_are_refused(tmp_path: Path) -> None:
    root = _tiny_book(tmp_path, {"ok": ("x = 1",)})
    with pytest.raises(ValueError, match="only='nope'"):
        build(root, profile="smoke", only="nope")
    # `scale` is declared by the notebook, `nope` by none: refused before anything runs
    with pytest.raises(ValueError, match=r"param=\['nope'\]"):
        build(root, profile="smoke", params={"scale": 2, "nope": 1})
    assert not (root / "book" / "_generated").exists()


def test_parse_params_reads_literals_and_strings() -> None:
    pairs = [("K", "64"), ("t", "0.07"), ("device", "cuda"), ("ks", "[1, 2]"), ("x", "None")]
    got = parse_params([*pairs, ("ok", "True")])
    assert got == {"K": 64, "t": 0.07, "device": "cuda", "ks": [1, 2], "x": None, "ok": True}
    assert parse_params([("name", "a=b")]) == {"name": "a=b"}
    with pytest.raises(ValueError, match="NAME VALUE"):
        parse_params([("K=64",)])
    with pytest.raises(ValueError, match="identifier"):
        parse_params([("K-1", "2")])
    with pytest.raises(ValueError, match="param=profile"):
        parse_params([("profile", "full")])


def test_every_command_spells_a_parameter_as_papermill_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """book build, sweep plan and the difficulty chapter's command: -p NAME VALUE."""
    from negatives import sweep
    from negatives.book import _parser
    from negatives.chapters.difficulty import analysis

    assert _parser().parse_args(["build", "-p", "device", "cuda"]).param == [["device", "cuda"]]
    for old_spelling in (
        lambda: _parser().parse_args(["build", "-p", "device=cuda"]),
        lambda: sweep.main(["plan", "difficulty", "--profile", "smoke", "-p", "seeds=1"]),
        lambda: analysis.main(["--profile", "smoke", "-p", "seeds=1"]),
    ):
        with pytest.raises(SystemExit):
            old_spelling()
        assert "expected 2 arguments" in capsys.readouterr().err
    assert sweep.main(["plan", "difficulty", "--profile", "smoke", "-p", "seeds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all('"seed": 0' in line for line in lines)


def test_toc_chapters_in_reading_order() -> None:
    toc = {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "A", "chapters": [{"file": "book/_generated/a"}, {"file": "book/x"}]},
            {
                "caption": "B",
                "chapters": [
                    {"file": "book/_generated/b", "sections": [{"file": "book/_generated/c"}]}
                ],
            },
        ],
    }
    assert [c.name for c in toc_chapters(toc)] == ["a", "b", "c"]
    repo = [c.name for c in toc_chapters(read_toc(REPO))]
    assert repo[-1] == "reproducibility"
    assert repo == [
        "intro", "coupon", "difficulty", "bounds", "more_negatives", "treatments", "reproducibility",
    ]  # fmt: skip


def _speedrun(record: list[dict], peer: bool = True) -> dict:
    base = [
        {"group": "baseline", "split": split, "label": label, "linear_accuracy": acc}
        for split, shift in (("validation", 0.5), ("test", 0.0))
        for label, acc in (("raw pixels", 84.0 + shift), ("random encoder, the chosen one", 86.0 + shift),
                           ("random encoder, the previous one", 82.0 + shift))
    ]  # fmt: skip
    ladder = [
        {"group": "ladder", "method": "simclr", "linear_accuracy": a, "train_seconds": s}
        for a, s in ((86.0, 39.4), (88.2, 21.2))
    ]
    peers = [
        {"group": "peer", "label": "ours", "steps": 390, "train_seconds": 40.0, "linear_accuracy": 88.4},
        {"group": "peer", "label": "usual: DataLoader", "steps": 390, "train_seconds": 80.0, "linear_accuracy": 88.8},
    ]  # fmt: skip
    return {"hardware": "cpu", "date": "2026-12-04", "validation": 10_000, "methods": ["simclr", "moco"],
            "rows": base + ladder + (peers if peer else []), "record": record}  # fmt: skip


def _budget(budget: int, mean: float, epochs: int) -> dict:
    return {"budget": budget, "method": "moco", "epochs": epochs, "seeds": 3, "seconds_mean": budget * 0.7,
            "linear_mean": mean, "linear_low": mean - 0.3, "linear_high": mean + 0.3}  # fmt: skip


def test_speedrun_numbers_quote_the_budget_the_best_point_and_the_baselines_of_each_split() -> None:
    out = _speedrun([_budget(30, 88.0, 1), _budget(60, 87.9, 2), _budget(120, 89.0, 4)])
    values = speedrun_numbers(out)
    assert values["test_pixels"] == 84.0 and values["validation_random"] == 86.5
    assert values["test_random_before"] == 82.0
    assert values["record_60"].startswith("87.90% [87.60, 88.20] within 60 s (moco, 2 epochs,")
    assert values["record_60"].endswith("+3.90 points over the pixels)")
    assert values["record_best"].startswith("89.00%") and "4 epochs" in values["record_best"]
    assert values["ladder_text"] == "simclr: 86.00% in 39 s before, 88.20% in 21 s after"
    assert "2.0 times as long" in values["peer_text"]
    # one epoch is singular; below every budget the smallest is quoted; no peer rows, said so
    values = speedrun_numbers(_speedrun([_budget(120, 88.0, 1)], peer=False), budget=60)
    assert "within 120 s (moco, 1 epoch," in values["record_60"]
    assert "not run" in values["peer_text"]
    assert list(speedrun_record(out)["over pixels"].round(2)) == [4.0, 3.9, 5.0]


def test_timings_table_orders_by_start(tmp_path: Path) -> None:
    path = tmp_path / "timings.json"
    rec = {"profile": "smoke", "parameters": {}}
    path.write_text(
        json.dumps(
            {
                "notebooks": {
                    "late": {**rec, "seconds": 2.0, "started": "2025-01-01T00:00:09+00:00",
                             "finished": "2025-01-01T00:00:11+00:00"},
                    "early": {**rec, "seconds": 5.0, "started": "2025-01-01T00:00:01+00:00",
                              "finished": "2025-01-01T00:00:06+00:00"},
                }
            }
        )
    )  # fmt: skip
    table = timings_table(path)
    assert list(table["notebook"]) == ["early", "late"]
    assert list(table["seconds"]) == [5.0, 2.0]
    assert timings_table(tmp_path / "absent.json").empty


def test_hardware_table_names_the_precision_that_auto_picks(monkeypatch) -> None:
    from negatives import config as cfg

    item = "training precision (precision='auto')"
    monkeypatch.setattr(cfg, "native_bf16", lambda device: False)
    assert hardware_table().set_index("item").loc[item, "value"].startswith("float32")
    monkeypatch.setattr(cfg, "native_bf16", lambda device: True)
    assert hardware_table().set_index("item").loc[item, "value"].startswith("bf16")


PREFIX = "application/papermill.record/"


def _glued_notebook(path: Path, values: dict[str, str]) -> None:
    cell = new_code_cell("glue(...)")
    cell.outputs = [
        nbformat.v4.new_output(  # as myst-nb's glue records a value
            "display_data",
            data={f"{PREFIX}text/plain": v},
            metadata={"scrapbook": {"name": k, "mime_prefix": PREFIX}},
        )
        for k, v in values.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[cell]), path)


def test_compare_glued_lists_changed_numbers_but_not_timings(tmp_path: Path) -> None:
    _glued_notebook(tmp_path / "a" / "ch.ipynb", {"ch_acc": "84.9", "ch_seconds": "3.0"})
    _glued_notebook(tmp_path / "b" / "ch.ipynb", {"ch_acc": "85.0", "ch_seconds": "4.0"})
    assert glued_values(tmp_path / "a" / "ch.ipynb") == {"ch_acc": "84.9", "ch_seconds": "3.0"}
    assert compare_glued(tmp_path / "a", tmp_path / "b") == ["ch.ipynb: ch_acc: '84.9' -> '85.0'"]
    assert compare_glued(tmp_path / "a", tmp_path / "a") == []
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1


@pytest.mark.slow
def test_smoke_book_figures_and_tables_are_for_reading(smoke_book: Path) -> None:
    """Every figure of a chapter is numbered, captioned, SVG for the page and PDF for the book's
    PDF; every table is formatted per column (no raw six-decimal floats) and has a caption."""

    for chapter in _built_chapters(smoke_book):
        nb = json.loads((smoke_book / chapter.executed).read_text())
        n_figures = 0
        for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
            figure = cell["metadata"].get("mystnb", {}).get("figure")
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if "image/svg+xml" in data or "image/png" in data:
                    assert figure, f"{chapter.name}: a figure without a caption"
                    assert "image/svg+xml" in data and "application/pdf" in data, chapter.name
                    n_figures += 1
                if "text/html" in data and "<table" in "".join(data["text/html"]):
                    html = "".join(data["text/html"])
                    assert "negatives-caption" in html, f"{chapter.name}: a table without a caption"
                    cells = re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)
                    raw = [c for c in cells if _raw_float(c)]
                    assert not raw, f"{chapter.name}: unformatted numbers {raw[:5]}"
                    assert "text/latex" in data, f"{chapter.name}: a table with no LaTeX form"
        if chapter.name not in REPORTS_WITHOUT_FIGURES:
            assert n_figures, f"{chapter.name}: no figure"
    page, text = _parse(smoke_book / "_build" / "html" / "book" / "_generated" / "bounds.html")
    assert "Fig. 1" in text  # numbered (numfig), with its caption


REPORTS_WITHOUT_FIGURES = ("intro",)


def _raw_float(text: str) -> bool:
    """A number as pandas prints an unformatted float: six decimals ending in zeros (0.500000),
    or five or more decimals with seven or more significant digits (80.016667)."""
    for number in re.findall(r"\d+\.\d+", text):
        digits = number.replace(".", "").lstrip("0")
        decimals = len(number.split(".")[1])
        if (decimals == 6 and number.endswith("00")) or (decimals >= 5 and len(digits) >= 7):
            return True
    return False


def test_raw_float_tells_pandas_defaults_from_formatted_numbers() -> None:
    assert _raw_float("80.016667") and _raw_float("0.500000") and _raw_float("[1.0, 2.1234567]")
    assert not _raw_float("0.000123") and not _raw_float("80.0") and not _raw_float("1.69124")
    assert not _raw_float("26029.31")


@pytest.mark.slow
def test_smoke_book_lists_the_runs_behind_each_figure(smoke_book: Path) -> None:
    """Each chapter glues the run ids behind its figures; the reproducibility page lists them,
    and each is a finished run in the cache."""

    from negatives.glue import figure_runs

    table = figure_runs(smoke_book)
    for chapter in _built_chapters(smoke_book):
        nb = json.loads((smoke_book / chapter.executed).read_text())
        names = {
            c["metadata"]["mystnb"]["figure"]["name"]
            for c in nb["cells"]
            if "mystnb" in c.get("metadata", {})
        }
        if chapter.name in ("intro", "reproducibility"):
            continue
        assert set(table.loc[table["chapter"] == chapter.name, "figure"]) == names, chapter.name
    ids = {r for row in table["run_ids"] for r in row}
    assert len(ids) > 10
    for run_id in ids:
        assert (smoke_book / "results" / "runs" / run_id / "result.json").is_file(), run_id
    page, text = _parse(
        smoke_book / "_build" / "html" / "book" / "_generated" / "reproducibility.html"
    )
    some = sorted(ids)[0][:12]
    assert some in text and "Fig. " in text  # ids listed, figures referenced by number


def test_the_citation_names_the_study_and_the_commit_that_built_it(tmp_path: Path) -> None:
    from negatives.chapters.reproducibility import citation
    from negatives.runs import git_commit

    entry = citation()
    assert entry.startswith("@software{negatives,") and entry.endswith("}")
    assert "title = {Negative samples in contrastive learning" in entry
    commit = git_commit()
    if commit is not None and len(commit) == 40:  # a checkout (not a source archive)
        assert f"git commit {commit}" in entry and re.search(r"year = \{20\d\d\}", entry)
    # family and given names, as CITATION.cff writes people
    cff = tmp_path / "CITATION.cff"
    cff.write_text(
        "title: T\nversion: 1.0\nauthors:\n"
        "  - family-names: Doe\n    given-names: Jane\n  - family-names: Roe\n    given-names: R.\n"
    )
    assert "author = {Doe, Jane and Roe, R.}" in citation(cff)
