from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from negatives.book import MATHJAX

REPO = Path(__file__).resolve().parents[1]


def missing_system_tool(what: str) -> NoReturn:
    """A system package that scripts/setup.sh installs only with root (Chromium, TeX) is missing.
    Under CI (``CI`` set), where the set-up installs it, the test fails: a skip there would hide a
    check that never ran. Elsewhere (a laptop, a login node without root) it is skipped, named."""
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test of the smoke book is marked ``smoke_book``: ``scripts/test.sh`` runs them in one
    process, which builds the book once, while a second process runs the rest."""
    for item in items:
        if "smoke_book" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.smoke_book)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny models on a shared CPU run faster and steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's book built with the smoke profile in a temporary copy."""
    if not (REPO / MATHJAX).is_file():
        pytest.fail(f"{REPO / MATHJAX} is missing: run `bash scripts/setup.sh` first")
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("_generated"))
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    # the reproducibility page shows the speedrun's committed results
    shutil.copytree(REPO / "benchmarks" / "results", root / "benchmarks" / "results")
    (root / "_vendor").symlink_to(REPO / "_vendor", target_is_directory=True)
    cmd = [
        sys.executable,
        "-m",
        "negatives.book",
        "build",
        "--profile",
        "smoke",
        "--root",
        str(root),
    ]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, f"smoke build failed:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
    return root
