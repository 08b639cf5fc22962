#!/usr/bin/env bash
# Take a headless Chromium screenshot of a built page, to check that it renders (figures,
# MathJax) without a network.
#
# usage: bash scripts/screenshot.sh [PAGE.html] [OUT.png] [HEIGHT]
#   PAGE defaults to _build/html/book/_generated/intro.html, OUT to _build/screenshots/<page>.png.
set -euo pipefail
cd "$(dirname "$0")/.."

page=${1:-_build/html/book/_generated/intro.html}
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
