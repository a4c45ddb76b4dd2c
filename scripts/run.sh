#!/usr/bin/env bash
# The README's two commands: `bash scripts/run.sh demo` and `bash scripts/run.sh test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
what="${1:-demo}"
shift || true
case "$what" in
  demo)
    exec .venv/bin/napari-regional-mil demo "$@"
    ;;
  test)
    # pytest-xvfb starts a virtual X server for the GUI tests (do not set QT_QPA_PLATFORM).
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/run.sh demo|test [args...]" >&2
    exit 2
    ;;
esac
