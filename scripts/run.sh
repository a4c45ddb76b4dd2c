#!/usr/bin/env bash
# The README's two commands: `bash scripts/run.sh demo` and `bash scripts/run.sh test`
# (`bash scripts/run.sh check`: the lint, type and import checks CI runs first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
what="${1:-demo}"
shift || true
case "$what" in
  demo)
    exec .venv/bin/napari-regional-mil demo "$@"
    ;;
  check)
    # lint (ruff, numpy docstrings), types of the core (mypy), import contracts (import-linter),
    # function-local imports that say why: the checks CI runs before the tests
    .venv/bin/python -m ruff check src tests benchmarks scripts
    .venv/bin/python -m mypy
    .venv/bin/lint-imports
    exec .venv/bin/python scripts/check_local_imports.py
    ;;
  test)
    # pytest-xvfb starts a virtual X server for the GUI tests (do not set QT_QPA_PLATFORM).
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/run.sh demo|test|check [args...]" >&2
    exit 2
    ;;
esac
