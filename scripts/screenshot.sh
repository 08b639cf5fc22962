#!/usr/bin/env bash
# Screenshots of the built book in headless Chromium, without a network.
#
# usage: bash scripts/screenshot.sh                            # every page, full length, 1280 px
#        bash scripts/screenshot.sh PAGE.html [OUT.png] [HEIGHT]  # one page, 1280 x HEIGHT px
#
# Without arguments: `python -m negatives.pages _build/html --width 1280 --screenshots
# _build/screenshots` writes _build/screenshots/<page>.png for every page of the book and prints
# the browser checks at 1280 px (exit status 1 when they find a problem; the screenshots are
# written anyway). With a page: OUT defaults to _build/screenshots/<page>.png, HEIGHT to 2000.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# = 0 ]; then
  [ -d _build/html ] || { echo "screenshot.sh: no _build/html (build the book first)" >&2; exit 1; }
  command -v chromium >/dev/null 2>&1 || bash scripts/setup.sh --with-browser
  . scripts/python.sh
  exec "$(negatives_python)" -m negatives.pages _build/html --width 1280 --screenshots _build/screenshots
fi

page=$1
out=${2:-_build/screenshots/$(basename "${page%.html}").png}
height=${3:-2000}
[ -f "$page" ] || { echo "screenshot.sh: no page $page (build the book first)" >&2; exit 1; }
command -v chromium >/dev/null 2>&1 || bash scripts/setup.sh --with-browser
mkdir -p "$(dirname "$out")"
profile_dir=$(mktemp -d)
trap 'rm -rf "$profile_dir"' EXIT
# --virtual-time-budget lets MathJax and the page's scripts finish before the capture.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile_dir" --virtual-time-budget=10000 --hide-scrollbars \
  --screenshot="$(realpath -m "$out")" --window-size=1280,"$height" \
  "file://$(realpath "$page")" >/dev/null 2>&1
[ -s "$out" ] || { echo "screenshot.sh: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
