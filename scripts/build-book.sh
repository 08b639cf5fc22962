#!/usr/bin/env bash
# Build the whole book: set up (idempotent), execute every chapter with papermill on a scale
# profile (default: book), then build the HTML with warnings as errors; with --pdf also the PDF
# (XeLaTeX, from the same executed notebooks; the set-up installs TeX for it).
#
# usage: bash scripts/build-book.sh [--profile smoke|book|full] [--pdf] [other negatives.book options]
#   e.g. bash scripts/build-book.sh --profile smoke
#        bash scripts/build-book.sh --only coupon -p device cuda
#        bash scripts/build-book.sh --pdf      # also _build/pdf/book.pdf, pages in _build/pdf/pages/
set -euo pipefail
cd "$(dirname "$0")/.."

pdf=0
for arg in "$@"; do
  [ "$arg" = --pdf ] && pdf=1
done
if [ "$pdf" = 1 ]; then
  bash scripts/setup.sh --with-latex
else
  bash scripts/setup.sh
fi
# negatives.book's --profile defaults to book.
echo "==> .venv/bin/python -m negatives.book build $*"
.venv/bin/python -m negatives.book build "$@"
echo "==> the book is at $(pwd)/_build/html/index.html"
if [ "$pdf" = 1 ]; then
  echo "==> the PDF is at $(pwd)/_build/pdf/book.pdf (its pages as PNG in _build/pdf/pages/)"
fi
