"""README.md's "Use the package" session runs as written, in a fresh interpreter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use the package"


def session_code() -> str:
    """The first python block of the README's "Use the package" section."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert blocks, f"README.md's {SECTION!r} has no python block"
    return blocks[0]


def test_readme_session_runs_as_written(tmp_path: Path) -> None:
    report = (
        "\nimport json\nprint('RESULT', json.dumps({'accuracy': accuracy, 'upsilon': upsilon}))\n"
    )
    env = {**os.environ, "NEGATIVES_RESULTS": str(tmp_path / "results")}
    done = subprocess.run(
        [sys.executable, "-c", session_code() + report],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith("RESULT ")).split(" ", 1)[1])
    assert 0.0 < result["accuracy"] <= 100.0
    assert 0.0 < result["upsilon"] < 1.0
    assert any(line.startswith("linear probe:") for line in lines)
    assert any("proposed bound" in line and "nan" not in line for line in lines)
    assert (tmp_path / "results" / "runs").is_dir()  # the run went to the cache asked for
