#!/usr/bin/env bash
# Set up everything the book and the tests need, idempotently (a second run takes seconds):
#   - Debian packages: dataset-fashion-mnist (and chromium with --with-browser; with --with-latex
#     XeLaTeX, latexmk, the FreeFont fonts and poppler-utils, for the PDF of the book), plus
#     python3-venv and npm when they are missing;
#   - .venv/ with requirements.txt (exact pins) and the package (editable);
#   - MathJax 3 (npm) in _vendor/mathjax/, so that formulas render offline.
# Works on a fresh Debian machine as root, needing only the Debian, PyPI and npm registries.
#
# usage: bash scripts/setup.sh [--with-browser] [--with-latex]
set -euo pipefail
cd "$(dirname "$0")/.."

MATHJAX_VERSION=3.2.2
# The PDF (python -m negatives.book build --pdf): Sphinx's LaTeX through XeLaTeX and latexmk;
# pdftoppm/pdfinfo (poppler-utils) render and check its pages. Installed without recommends.
LATEX_PACKAGES=(texlive-xetex texlive-latex-recommended texlive-latex-extra
  texlive-fonts-recommended latexmk fonts-freefont-otf poppler-utils)
with_browser=0
with_latex=0
for arg in "$@"; do
  case "$arg" in
    --with-browser) with_browser=1 ;;
    --with-latex) with_latex=1 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (allowed: --with-browser, --with-latex)" >&2; exit 2 ;;
  esac
done

log=$(mktemp -t negatives-setup.XXXXXX)
trap 'rm -f "$log"' EXIT
step() { echo "==> $*"; }
# Run quietly; on failure show the tail of what the command printed.
quiet() {
  if ! "$@" >"$log" 2>&1; then
    echo "setup.sh: failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

# --- Debian packages ------------------------------------------------------------------------
apt_packages=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || apt_packages+=(dataset-fashion-mnist)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_packages+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || [ -f _vendor/mathjax/tex-chtml.js ] || apt_packages+=(npm)
if [ "$with_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  apt_packages+=(chromium)
fi
latex_packages=()
if [ "$with_latex" = 1 ]; then
  for pkg in "${LATEX_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || latex_packages+=("$pkg")
  done
fi
if [ $((${#apt_packages[@]} + ${#latex_packages[@]})) -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "setup.sh: need root (or sudo) to install: ${apt_packages[*]} ${latex_packages[*]}" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  step "apt-get update"
  quiet "${sudo[@]}" apt-get update
  if [ ${#apt_packages[@]} -gt 0 ]; then
    step "apt-get install ${apt_packages[*]}"
    quiet "${sudo[@]}" apt-get install -y "${apt_packages[@]}"
  fi
  if [ ${#latex_packages[@]} -gt 0 ]; then
    step "apt-get install --no-install-recommends ${latex_packages[*]} (TeX for the PDF; minutes)"
    quiet "${sudo[@]}" apt-get install -y --no-install-recommends "${latex_packages[@]}"
  fi
else
  step "Debian packages: already installed"
fi

# --- Python environment -----------------------------------------------------------------------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup.sh: python3 >= 3.11 is needed (found $(python3 --version 2>&1))" >&2
  exit 1
}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv ($(python3 --version))"
  quiet python3 -m venv .venv
fi
# Reinstall only when the pins or the package metadata changed.
stamp=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
  step "pip install -r requirements.txt -e . (into .venv)"
  quiet .venv/bin/python -m pip install --quiet -r requirements.txt -e .
  echo "$stamp" >.venv/.setup-stamp
else
  step ".venv: up to date"
fi

# --- MathJax ----------------------------------------------------------------------------------
if [ ! -f _vendor/mathjax/tex-chtml.js ]; then
  step "npm install mathjax@$MATHJAX_VERSION -> _vendor/mathjax/"
  npm_dir=$(mktemp -d)
  quiet npm install --prefix "$npm_dir" --no-audit --no-fund --silent "mathjax@$MATHJAX_VERSION"
  mkdir -p _vendor
  rm -rf _vendor/mathjax.tmp
  cp -r "$npm_dir/node_modules/mathjax/es5" _vendor/mathjax.tmp
  mv _vendor/mathjax.tmp _vendor/mathjax # the finished copy appears at once
  rm -rf "$npm_dir"
else
  step "MathJax: already in _vendor/mathjax/"
fi

step "setup done"
