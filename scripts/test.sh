#!/usr/bin/env bash
# Run the test suite (including the smoke build of the whole book) and the linter.
#
# usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "==> .venv/bin/python -m pytest -q $*"
.venv/bin/python -m pytest -q "$@"
echo "==> .venv/bin/ruff check"
.venv/bin/ruff check
