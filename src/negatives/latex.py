"""The PDF's LaTeX side: the Sphinx extension (``negatives.latex`` in _config.yml's extensions)
that fixes what the LaTeX builder would get wrong (:func:`setup`: tables as raw LaTeX pinned in
place, math as TeX takes it), the stubs of packages Debian's TeX lacks, and the reading of a TeX
log (:func:`latex_errors`, :func:`missing_characters`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


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
    """Sphinx extension (``negatives.latex`` in _config.yml's extensions) for the LaTeX builder:
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
