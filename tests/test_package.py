"""The package namespace: ``import negatives`` is cheap and every public name resolves lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import negatives


def fresh(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a new interpreter (nothing of negatives or torch imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_every_name_in_all_resolves() -> None:
    assert len(set(negatives.__all__)) == len(negatives.__all__)
    for name in negatives.__all__:
        assert getattr(negatives, name) is not None, name
    assert set(negatives.__all__) <= set(dir(negatives))


def test_submodules_are_modules_and_exports_are_their_objects() -> None:
    for name in negatives._SUBMODULES:
        assert getattr(negatives, name) is importlib.import_module(f"negatives.{name}")
    for name, (module, attr) in negatives._EXPORTS.items():
        assert name not in negatives._SUBMODULES, name
        assert getattr(negatives, name) is getattr(getattr(negatives, module), attr), name


def test_every_module_of_the_package_is_a_listed_submodule() -> None:
    root = Path(negatives.__file__).parent
    found = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    found |= {p.parent.name for p in root.glob("*/__init__.py")}
    assert found == set(negatives._SUBMODULES)


def test_train_is_the_module_and_its_function_keeps_its_names() -> None:
    from negatives.train import train

    assert negatives.train.__name__ == "negatives.train"
    assert negatives.train.train is train is negatives.train_encoder
    assert (
        negatives.run is negatives.runner.run
        and negatives.TrainConfig is negatives.train.TrainConfig
    )
    assert negatives.augment.augment is importlib.import_module("negatives.augment").augment


def test_unknown_attribute_raises_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        negatives.no_such_thing  # noqa: B018
    assert not hasattr(negatives, "fit")


def test_import_is_cheap_and_a_submodule_works_right_after_it() -> None:
    done = fresh(
        "import os, sys\n"
        "import negatives\n"
        "assert 'torch' not in sys.modules, 'import negatives imported torch'\n"
        "assert os.environ['OMP_WAIT_POLICY']\n"
        "config = negatives.train.TrainConfig(epochs=1)\n"
        "assert config.epochs == 1\n"
        "assert negatives.coverage_probability(3, num_classes=3) == 2 / 9\n"
        "print('ok')\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


def test_import_keeps_the_passive_omp_wait_policy_for_torch() -> None:
    done = fresh(
        "import os\n"
        "os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "import negatives\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "PASSIVE"


BLOCK_EXTRAS = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Missing())
"""


def without(packages: set[str], code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter where ``packages`` cannot be imported (a core install)."""
    return fresh(BLOCK_EXTRAS.format(blocked=sorted(packages)) + code)


def test_the_core_install_imports_every_name_of_all() -> None:
    # the book layer imports its extras (papermill, matplotlib, sphinx, ...) where it uses them
    code = """
import negatives
for name in negatives.__all__:
    getattr(negatives, name)
print("all", len(negatives.__all__))
"""
    res = without(set(negatives._EXTRA_OF), code)
    assert res.returncode == 0 and res.stdout.startswith("all "), res.stderr[-2000:]


def test_a_module_that_needs_an_extra_names_it() -> None:
    # a submodule whose import needs papermill, as a core install without the book extra sees it
    code = """
import importlib.abc, sys
class NoPapermill(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "negatives.book":
            raise ModuleNotFoundError("No module named 'papermill'", name="papermill")
sys.meta_path.insert(0, NoPapermill())
import negatives
try:
    negatives.book
except ModuleNotFoundError as err:
    print(err)
"""
    res = fresh(code)
    assert "pip install 'negatives[book]'" in res.stdout and "papermill" in res.stdout, res.stderr


def test_the_sweep_command_starts_with_the_cluster_extra_alone() -> None:
    book_and_dev = {p for p, extra in negatives._EXTRA_OF.items() if extra != "cluster"}
    res = without(book_and_dev, "from negatives.sweep import main\nmain(['--help'])")
    assert "usage" in res.stdout and "plan" in res.stdout, res.stderr[-2000:]


def test_license_and_citation_agree_with_the_package() -> None:
    import tomllib

    import yaml

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and "MIT License" in (root / "LICENSE").read_text()
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    book = yaml.safe_load((root / "_config.yml").read_text())
    assert cff["version"] == project["version"] == negatives.__version__
    assert cff["title"] == book["title"] and cff["license"] == project["license"]
    assert [a["name"] for a in cff["authors"]] == [a["name"] for a in project["authors"]]
    assert book["author"] == project["authors"][0]["name"]
    assert (root / "src" / "negatives" / "py.typed").is_file()


def test_the_extras_named_in_errors_are_those_of_pyproject() -> None:
    """negatives._EXTRA_OF names, for each package a submodule may miss, the extra that installs
    it: where that package is itself a dependency of an extra in pyproject.toml, the same one."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    module_of = {"pyyaml": "yaml", "myst-nb": "myst_nb", "jupyter-book": "jupyter_book"}
    declared = {}
    for extra, requirements in extras.items():
        for requirement in requirements:
            dist = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
            declared[module_of.get(dist, dist.replace("-", "_"))] = extra
    direct = {m: e for m, e in negatives._EXTRA_OF.items() if m in declared}
    assert len(direct) >= 6 and all(declared[m] == e for m, e in direct.items()), direct


def test_the_api_page_documents_every_public_name() -> None:
    """book/api.md: an autodoc entry for each exported name and the module table lists every
    submodule, so that a name added to negatives.__all__ without its page fails here."""
    import re

    page = (Path(__file__).resolve().parents[1] / "book" / "api.md").read_text()
    documented = re.findall(r"^\.\. auto(?:function|class):: negatives\.(\w+)$", page, re.M)
    assert sorted(documented) == sorted(negatives._EXPORTS)
    modules = re.findall(r"^   negatives\.(\w+)$", page, re.M)
    assert sorted(modules) == sorted(negatives._SUBMODULES)
    toc = (Path(__file__).resolve().parents[1] / "_toc.yml").read_text()
    assert "file: book/api" in toc
