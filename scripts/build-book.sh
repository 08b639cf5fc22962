#!/usr/bin/env bash
# Build the whole book: set up (idempotent), execute every chapter with papermill on a scale
# profile (default: book), then build the HTML with warnings as errors; with --pdf also the PDF
# (XeLaTeX, from the same executed notebooks; the set-up installs TeX for it).
#
# usage: bash scripts/build-book.sh [--profile smoke|book|full] [--pdf] [other negatives.book options]
#   e.g. bash scripts/build-book.sh --profile smoke
#        bash scripts/build-book.sh --only coupon -p device cuda
#   In an active conda env or virtualenv that has the package (pip install -e '.[book,dev]'),
#   that environment is used; otherwise .venv/ (scripts/python.sh).
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
. scripts/python.sh
py=$(negatives_python) # .venv, or the active environment that has the package (see python.sh)
# negatives.book's --profile defaults to book.
echo "==> $py -m negatives.book build $*"
"$py" -m negatives.book build "$@"
echo "==> the book is at $(pwd)/_build/html/index.html"
if [ "$pdf" = 1 ]; then
  echo "==> the PDF is at $(pwd)/_build/pdf/book.pdf (its pages as PNG in _build/pdf/pages/)"
fi
