# Sourced by setup.sh, build-book.sh and test.sh (from the repository root): the Python they use.
#   1. $NEGATIVES_PYTHON when set: any interpreter >= 3.11 (a conda env, a cluster module's);
#   2. the active virtualenv's or conda env's python when it already imports this checkout's
#      package (`pip install -e '.[book,dev]'` there once): no second environment is built;
#   3. otherwise .venv/bin/python, which setup.sh creates with the exact pins of requirements.txt.

# True when "$1" imports `negatives` from this checkout's src/ (found, not imported: no torch).
owns_checkout() {
  "$1" - <<'EOF' >/dev/null 2>&1
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("negatives")
here = (pathlib.Path.cwd() / "src" / "negatives").resolve()
sys.exit(spec is None or spec.origin is None or pathlib.Path(spec.origin).resolve().parent != here)
EOF
}

negatives_python() {
  if [ -n "${NEGATIVES_PYTHON:-}" ]; then
    command -v "$NEGATIVES_PYTHON" || { echo "NEGATIVES_PYTHON=$NEGATIVES_PYTHON: not found" >&2; return 1; }
    return
  fi
  local candidate
  for candidate in "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" "${CONDA_PREFIX:+$CONDA_PREFIX/bin/python}"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && owns_checkout "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  echo "$PWD/.venv/bin/python"
}
