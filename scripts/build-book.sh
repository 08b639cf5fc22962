#!/usr/bin/env bash
# Build the whole book: set up (idempotent), execute every chapter with papermill on a scale
# profile (default: book), then build the HTML with warnings as errors.
#
# usage: bash scripts/build-book.sh [--profile smoke|book|full] [other negatives.book options]
#   e.g. bash scripts/build-book.sh --profile smoke
#        bash scripts/build-book.sh --only coupon --param device=cuda
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# negatives.book's --profile defaults to book.
echo "==> .venv/bin/python -m negatives.book build $*"
.venv/bin/python -m negatives.book build "$@"
echo "==> the book is at $(pwd)/_build/html/index.html"
