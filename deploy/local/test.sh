#!/usr/bin/env bash
# Set up (venv + services) and run lint, type checks and the whole test suite.
# Extra arguments go to pytest, e.g. deploy/local/test.sh tests/unit -k protocol
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
"$repo/deploy/local/setup.sh"

echo "[test] ruff" >&2
.venv/bin/ruff check .
echo "[test] mypy" >&2
.venv/bin/mypy
echo "[test] pytest" >&2
set +e
.venv/bin/python -m pytest -ra "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
