#!/usr/bin/env bash
# Run the test suite (including the smoke build of the whole book, its browser checks and its
# PDF) and the linter; the set-up installs Chromium and TeX for them.
#
# usage: bash scripts/test.sh [pytest arguments]
#   Without arguments the suite runs as two processes at once, one core each: the tests of the
#   smoke book (which build it once) and all the others; their reports follow each other. With
#   arguments, one pytest process with them.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --with-browser --with-latex
. scripts/python.sh
py=$(negatives_python) # .venv, or the active environment that has the package (see python.sh)
if [ $# -gt 0 ]; then
  echo "==> $py -m pytest -q $*"
  "$py" -m pytest -q "$@"
else
  # one thread each: two processes that each spin on both cores run many times slower
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
  logs=$(mktemp -d)
  trap 'rm -rf "$logs"' EXIT
  echo "==> $py -m pytest -q -m smoke_book   (and at once: -m 'not smoke_book')"
  "$py" -m pytest -q -m smoke_book >"$logs/book.txt" 2>&1 &
  book=$!
  "$py" -m pytest -q -m "not smoke_book" >"$logs/rest.txt" 2>&1 &
  rest=$!
  rc_book=0 rc_rest=0
  wait "$book" || rc_book=$?
  wait "$rest" || rc_rest=$?
  echo "==> the smoke book's tests (exit $rc_book)"; cat "$logs/book.txt"
  echo "==> the other tests (exit $rc_rest)"; cat "$logs/rest.txt"
  if [ "$rc_book" != 0 ] || [ "$rc_rest" != 0 ]; then exit 1; fi
fi
echo "==> $py -m ruff check"
"$py" -m ruff check
