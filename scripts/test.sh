#!/usr/bin/env bash
# Run the test suite (including the smoke build of the whole book, its browser checks and its
# PDF) and the linter; the set-up installs Chromium and TeX for them.
#
# usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --with-browser --with-latex
echo "==> .venv/bin/python -m pytest -q $*"
.venv/bin/python -m pytest -q "$@"
echo "==> .venv/bin/ruff check"
.venv/bin/ruff check
