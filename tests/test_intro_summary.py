"""The book's summary as the introduction shows it: the papers' claims apart from the checks of
our own estimates, one headline row per claim over its settings, every verdict by chapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from negatives import verdicts as vd
from negatives.glue import glued_values, verdict_summary

POSITIVE = vd.Claim("c", "p", "s", "q", vd.above(0.0), " pts")
REP, NOT, INC = (1.0, 0.5, 1.5), (-1.0, -1.5, -0.5), (0.1, -0.5, 0.7)  # (estimate, low, high)


def _row(
    chapter: str,
    paper: str,
    claim: str,
    verdict: tuple[float, float, float],
    setting: str,
    kind: str = vd.CLAIM,
    test_set: tuple[float, float] | None = None,
) -> dict:
    c = vd.Claim(claim, paper, "s", "q", vd.above(0.0), " pts", kind=kind)
    row = vd.judge(c, *verdict, setting=setting, seeds=3, test_set=test_set)
    return {"chapter": f'<a href="{chapter}.html">{chapter.title()}</a>', **row}


def _summary() -> pd.DataFrame:
    """Two chapters, as verdict_summary gives them: paper B's row sits between paper A's, A's
    claim "x" has four settings (two in each chapter), a check of our estimates in both."""
    rows = [
        _row("one", "A (2020)", "x", REP, "a1", test_set=(0.8, 1.2)),
        _row("one", "B et al. (2021)", "y", NOT, "b1"),
        _row("one", "A (2020)", "x", NOT, "a2"),
        _row("one", "A (2020) (theorem)", "bound holds", REP, "t1", kind=vd.CHECK),
        _row("one", "A (2020)", "z", INC, "z1"),
        _row("one", "third-party summary of A (2020)", "w", REP, "w1"),
        _row("two", "B et al. (2021)", "y", NOT, "b2"),
        _row("two", "A (2020)", "x", REP, "a3"),
        _row("two", "A (2020)", "x", INC, "a4"),
        _row("two", "B et al. (2021) (theorem)", "optimum agrees", INC, "t2", kind=vd.CHECK),
    ]
    return vd.verdict_table(rows)


# --- claims and checks ------------------------------------------------------------------------


def test_a_claim_is_a_papers_claim_unless_marked_a_check() -> None:
    assert POSITIVE.kind == vd.CLAIM
    check = vd.Claim("c", "p", "s", "q", vd.above(0.0), kind=vd.CHECK)
    rows = [vd.judge(POSITIVE, *REP), vd.judge(check, *REP)]
    assert [r["kind"] for r in rows] == [vd.CLAIM, vd.CHECK]
    table = vd.verdict_table(rows)
    assert list(table["kind"]) == [vd.CLAIM, vd.CHECK]
    assert [r["kind"] for r in json.loads(vd.records(table))] == [vd.CLAIM, vd.CHECK]
    with pytest.raises(ValueError, match="kind"):
        vd.Claim("c", "p", "s", "q", vd.above(0.0), kind="sanity")
    with pytest.raises(ValueError, match="kind"):
        vd.verdict_table([dict(rows[0], kind="sanity")])


def test_counts_of_claims_and_checks_apart() -> None:
    table = _summary()
    # every row, as the chapters' pages count them
    assert vd.count_numbers("all", table) == {
        "all_n_verdicts": 10, "all_n_rep": 4, "all_n_notrep": 3, "all_n_inc": 3,
    }  # fmt: skip
    assert vd.count_numbers("c", table, kind=vd.CLAIM) == {
        "c_n_verdicts": 8, "c_n_rep": 3, "c_n_notrep": 3, "c_n_inc": 2,
    }  # fmt: skip
    assert vd.count_numbers("k", table, kind=vd.CHECK) == {
        "k_n_verdicts": 2, "k_n_rep": 1, "k_n_notrep": 0, "k_n_inc": 1,
    }  # fmt: skip
    # a summary read from pages executed before checks were marked: every row a claim
    legacy = table.drop(columns="kind")
    assert len(vd.of_kind(legacy, vd.CLAIM)) == 10 and vd.of_kind(legacy, vd.CHECK).empty
    with pytest.raises(ValueError, match="kind"):
        vd.of_kind(table, "claims")
    assert vd.counts(pd.DataFrame()) == dict.fromkeys(vd.VERDICTS, 0)  # no chapter executed


# --- the headline -----------------------------------------------------------------------------


def test_settings_verdict_says_one_verdict_or_the_mix() -> None:
    R, N, I = vd.REPRODUCED, vd.NOT_REPRODUCED, vd.INCONCLUSIVE  # noqa: E741
    assert vd.settings_verdict({R: 1, N: 0, I: 0}) == "reproduced"
    assert vd.settings_verdict({R: 0, N: 2, I: 0}) == "not reproduced (both)"
    assert vd.settings_verdict({R: 0, N: 0, I: 3}) == "inconclusive (all 3)"
    assert vd.settings_verdict({R: 2, N: 1, I: 1}) == "2 of 4 reproduced, 1 not, 1 inconclusive"
    assert vd.settings_verdict({R: 0, N: 1, I: 2}) == "1 of 3 not reproduced, 2 inconclusive"
    assert vd.settings_verdict({R: 1, N: 0, I: 1}) == "1 of 2 reproduced, 1 inconclusive"
    with pytest.raises(ValueError, match="no setting"):
        vd.settings_verdict({R: 0, N: 0, I: 0})
    # a verdict over settings keeps its verdict's colour; a mix is grey like an inconclusive one
    assert vd.verdict_css("reproduced (all 3)") == vd.verdict_css(R) != vd.verdict_css(I)
    assert vd.verdict_css("not reproduced (both)") == vd.verdict_css(N) != vd.verdict_css(R)
    assert vd.verdict_css("2 of 4 reproduced, 1 not, 1 inconclusive") == vd.verdict_css(I)


def test_cited_paper_drops_what_the_book_adds() -> None:
    assert vd.cited_paper("Nozawa & Sato (2021) (theorem)") == "Nozawa & Sato (2021)"
    name = "Awasthi, Dikkala & Kamath (2022)"
    assert vd.cited_paper(f"third-party summary of {name}") == name
    assert vd.cited_paper(f"{name}, as we reconstruct it") == name
    assert vd.cited_paper("our own reading") == "our own reading"


def test_headline_one_row_per_claim_over_its_settings_without_checks() -> None:
    head = vd.headline(_summary())
    assert list(head.columns) == list(vd.HEADLINE_COLUMNS)
    # grouped by the cited paper, in the order the summary first names it; A's claims together
    # although B's row comes between them; the summary's own order within a paper
    assert list(zip(head["paper"], head["claim"], strict=True)) == [
        ("A (2020)", "x"),
        ("A (2020)", "z"),
        ("third-party summary of A (2020)", "w"),
        ("B et al. (2021)", "y"),
    ]
    x, z, w, y = (r for _, r in head.iterrows())
    assert x["verdict"] == "2 of 4 reproduced, 1 not, 1 inconclusive" and x["settings"] == 4
    assert (x["n_rep"], x["n_notrep"], x["n_inc"]) == (2, 1, 1)
    # the first setting's estimate, on the interval that decides it (seeds and test set)
    assert x["setting"] == "a1" and x["estimate"] == _summary().loc[0, "both"] != ""
    assert x["chapter"] == '<a href="one.html">One</a>'
    assert y["verdict"] == "not reproduced (both)" and y["settings"] == 2
    assert y["estimate"] == "−1.00 [−1.50, −0.50] pts"  # no test set: the interval over seeds
    assert z["verdict"] == "inconclusive" and w["verdict"] == "reproduced"
    assert "bound holds" not in set(head["claim"]) and "optimum agrees" not in set(head["claim"])
    assert vd.headline(_summary().iloc[:0]).empty


def test_paper_rows_name_each_paper_once_above_its_claims() -> None:
    rows = vd.paper_rows(vd.headline(_summary()))
    assert list(rows["claim"]) == [
        "<b>A (2020)</b>",
        '<a href="one.html">x</a>',
        '<a href="one.html">z</a>',
        '<a href="one.html">w (from a third-party summary)</a>',  # under its paper's one row
        "<b>B et al. (2021)</b>",
        '<a href="one.html">y</a>',
    ]
    assert list(rows["verdict"])[:2] == ["", "2 of 4 reproduced, 1 not, 1 inconclusive"]
    nowrap = '<span style="white-space: nowrap">−1.00 [−1.50, −0.50] pts</span>'
    assert rows.loc[5, "estimate"] == nowrap  # one line on the page
    html = vd.styled(rows, "caption", vd.HEADLINE_SHOWN)._repr_html_()
    assert "first setting (95%)" in html and 'href="one.html"' in html
    assert "#D55E00" in html  # "not reproduced (both)" in the book's vermillion
    empty = vd.styled(vd.paper_rows(vd.headline(_summary().iloc[:0])), "c", vd.HEADLINE_SHOWN,
                      empty="none in this build")  # fmt: skip
    assert "none in this build" in empty._repr_html_()


# --- every verdict, by chapter ------------------------------------------------------------------


def test_by_chapter_groups_each_chapters_rows_by_claim_and_keeps_checks_apart() -> None:
    summary = _summary()
    chapters = vd.by_chapter(summary)
    assert [vd.chapter_title(c) for c, _ in chapters] == ["One", "Two"]
    one, two = (rows for _, rows in chapters)
    assert list(one["setting"]) == ["a1", "a2", "z1", "w1", "b1"]  # x's settings together
    assert list(two["setting"]) == ["b2", "a3", "a4"]  # the order the chapter names them
    assert set(one["kind"]) == set(two["kind"]) == {vd.CLAIM}
    checks = vd.by_chapter(summary, vd.CHECK)
    assert [(vd.chapter_title(c), list(r["claim"])) for c, r in checks] == [
        ("One", ["bound holds"]),
        ("Two", ["optimum agrees"]),
    ]
    assert list(vd.grouped(summary, vd.CHECK)["setting"]) == ["t1", "t2"]
    assert vd.by_chapter(summary[summary["kind"] == vd.CLAIM], vd.CHECK) == []
    assert vd.chapter_caption(*chapters[0]) == "One (4 claims in 5 settings)"
    assert vd.chapter_caption(*checks[0]) == "One (1 claim in 1 setting)"


def test_readable_writes_each_group_once_and_links_claims() -> None:
    one = vd.by_chapter(_summary())[0][1]
    shown = vd.readable(one, ["paper", "claim"])
    assert list(shown["paper"]) == ["A (2020)", "", "", "third-party summary of A (2020)",
                                    "B et al. (2021)"]  # fmt: skip
    assert list(shown["claim"]) == ['<a href="one.html">x</a>', "", '<a href="one.html">z</a>',
                                    '<a href="one.html">w</a>', '<a href="one.html">y</a>']  # fmt: skip
    # nested groups: a claim's name is written again under another paper
    t = pd.DataFrame({"paper": ["P", "P", "Q"], "claim": ["c", "c", "c"], "v": [1, 2, 3]})
    assert vd.without_repeats(t, ["paper", "claim"]).to_dict("list") == {
        "paper": ["P", "", "Q"], "claim": ["c", "", "c"], "v": [1, 2, 3],
    }  # fmt: skip
    html = vd.styled(shown, "One", ["paper", "claim", "setting", "ours", "both", "verdict"])
    assert html._repr_html_().count('href="one.html"') == 4
    empty = vd.styled(vd.readable(vd.grouped(_summary().iloc[:0], vd.CHECK), ["chapter"]), "x",
                      ["chapter", "claim", "seeds"], empty="none in this build")  # fmt: skip
    assert "none in this build" in empty._repr_html_()


# --- what the introduction says ---------------------------------------------------------------


def test_summary_sentence_counts_claims_and_checks_apart() -> None:
    summary = _summary()
    assert vd.summary_sentence(summary) == (
        "The book decides 4 claims of the papers in 8 settings: 3 reproduced, 3 not reproduced "
        "and 2 inconclusive at this scale. Apart from these it makes 2 checks of its own "
        "estimates, which test no paper's claim: 1 reproduced and 1 inconclusive."
    )
    one = summary.iloc[[0, 3]]  # one claim in one setting, one check
    assert vd.summary_sentence(one) == (
        "The book decides 1 claim of the papers in 1 setting: reproduced at this scale. Apart "
        "from these it makes 1 check of its own estimates, which tests no paper's claim: "
        "reproduced."
    )
    no_checks = summary.iloc[[0, 7]]  # claim x reproduced in two settings
    assert vd.summary_sentence(no_checks) == (
        "The book decides 1 claim of the papers in 2 settings: both reproduced at this scale."
    )
    assert "all 3 reproduced" in vd.summary_sentence(summary.iloc[[0, 5, 7]])
    assert vd.summary_sentence(pd.DataFrame()) == (
        "No chapter with verdicts was executed in this build."
    )


def test_plural_and_and_list_read_aloud() -> None:
    assert vd.plural(1, "epoch") == "1 epoch" and vd.plural(2, "epoch") == "2 epochs"
    assert vd.plural(0, "query", "queries") == "0 queries"
    assert vd.and_list((15, 63, 255)) == "15, 63 and 255"
    assert vd.and_list([1.0, 10.0]) == "1 and 10" and vd.and_list(["a"]) == "a"
    assert vd.and_list([0.5, -math.inf]) == "0.5 and −∞"


# --- the summary read back from executed pages ------------------------------------------------

PREFIX = "application/papermill.record/"


def _page(path: Path, title: str, values: dict[str, object]) -> None:
    cell = new_code_cell("glue(...)")
    cell.outputs = [
        nbformat.v4.new_output(  # as myst-nb's glue records a value
            "display_data",
            data=v if isinstance(v, dict) else {f"{PREFIX}text/plain": v},
            metadata={"scrapbook": {"name": k, "mime_prefix": PREFIX}},
        )
        for k, v in values.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[new_markdown_cell(f"# {title}"), cell]), path)


def test_verdict_summary_reads_kinds_and_takes_an_old_page_for_claims(tmp_path: Path) -> None:
    new = vd.verdict_table([vd.judge(POSITIVE, *REP), _row("x", "p", "chk", REP, "s", vd.CHECK)])
    old = json.loads(vd.records(new.iloc[:1]))
    del old[0]["kind"]  # a page executed before checks were marked
    generated = tmp_path / "book" / "_generated"
    _page(generated / "old.ipynb", "Old", {"old_verdicts": repr(json.dumps(old))})
    _page(generated / "new.ipynb", "New", {"new_verdicts": repr(vd.records(new))})
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/_generated/intro\nchapters:\n"
        "  - file: book/_generated/old\n  - file: book/_generated/new\n"
    )
    summary = verdict_summary(tmp_path)
    assert list(summary["kind"]) == [vd.CLAIM, vd.CLAIM, vd.CHECK]
    assert list(summary["chapter"].map(vd.chapter_title)) == ["Old", "New", "New"]
    assert vd.count_numbers("i", summary, kind=vd.CHECK)["i_n_verdicts"] == 1


def test_glued_values_reads_a_markdown_value_as_its_text(tmp_path: Path) -> None:
    path = tmp_path / "p.ipynb"
    markdown = {
        f"{PREFIX}text/markdown": "The book decides 2 claims.",
        f"{PREFIX}text/plain": "<IPython.core.display.Markdown object>",
    }
    _page(path, "P", {"p_counts": markdown, "p_n": "3"})
    assert glued_values(path) == {"p_counts": "The book decides 2 claims.", "p_n": "3"}


def test_a_sometimes_claim_holds_where_any_setting_does() -> None:
    from negatives import verdicts as vd

    found = {vd.REPRODUCED: 1, vd.NOT_REPRODUCED: 0, vd.INCONCLUSIVE: 1}
    assert vd.settings_verdict(found, any_setting=True) == "reproduced (1 of 2 settings)"
    assert vd.settings_verdict(found) == "1 of 2 reproduced, 1 inconclusive"
    none = {vd.REPRODUCED: 0, vd.NOT_REPRODUCED: 1, vd.INCONCLUSIVE: 1}
    assert vd.settings_verdict(none, any_setting=True) == "1 of 2 not reproduced, 1 inconclusive"
    assert vd.verdict_css("reproduced (1 of 2 settings)") == vd.verdict_css("reproduced")


def test_the_headline_reads_any_setting_from_the_claim_not_its_name() -> None:
    def row(claim: vd.Claim, verdict: tuple[float, float, float], setting: str) -> dict:
        return vd.judge(claim, *verdict, setting=setting, seeds=3)

    some = vd.Claim("x", "A (2020)", "s", "q", vd.above(0.0), any_setting=True)
    every = vd.Claim("sometimes y", "A (2020)", "s", "q", vd.above(0.0))  # a name is no flag
    table = vd.verdict_table(
        [row(some, REP, "a"), row(some, INC, "b"), row(every, REP, "a"), row(every, INC, "b")]
    )
    head = vd.headline(table).set_index("claim")["verdict"]
    assert head["x"] == "reproduced (1 of 2 settings)"
    assert head["sometimes y"] == "1 of 2 reproduced, 1 inconclusive"
    # the flag travels with the chapter's glued records; older records lack it
    back = pd.DataFrame(json.loads(vd.records(table)))
    assert list(back["any_setting"]) == [True, True, False, False]
    assert vd.at_least_one({vd.NOT_REPRODUCED: 2}) == vd.NOT_REPRODUCED
    assert vd.at_least_one({vd.NOT_REPRODUCED: 1, vd.INCONCLUSIVE: 1}) == vd.INCONCLUSIVE
    assert vd.at_least_one({}) == vd.INCONCLUSIVE
