"""The book's table of contents (``_toc.yml``): which entries are chapters executed from
notebooks (:class:`Chapter`: ``notebooks/<name>.ipynb`` -> ``book/_generated/<name>.ipynb``), in
reading order, and the report pages executed after them (:data:`REPORTS`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


class BookBuildError(RuntimeError):
    """The book could not be built; the message says which notebook / step and why."""


GENERATED = Path("book/_generated")


NOTEBOOKS = Path("notebooks")


# The pages that report on the chapters (the introduction's verdicts; versions, hardware and
# timings): executed after every chapter, in this order.
REPORTS: tuple[str, ...] = ("intro", "reproducibility")


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
