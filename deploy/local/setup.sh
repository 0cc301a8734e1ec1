#!/usr/bin/env bash
# One-time (idempotent) local set-up: Python venv with asyncworker and its test
# tools in .venv, plus RabbitMQ, PostgreSQL and Redis started on 127.0.0.1.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "[setup] asyncworker needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
echo "[setup] python packages installed in .venv" >&2

# celery-exporter, which the monitoring tests run against a worker fleet, in a
# venv of its own: it pins redis and prometheus-client versions older than ours.
if [ ! -x .venv-tools/exporter/bin/python ]; then
  echo "[setup] creating .venv-tools/exporter" >&2
  "$python" -m venv .venv-tools/exporter
fi
.venv-tools/exporter/bin/python -m pip install -q "prometheus-exporter-celery==0.11.2"

# systemd-analyze verifies deploy/systemd/ (tests/deploy); it needs no running systemd.
if ! command -v systemd-analyze >/dev/null; then
  echo "[setup] installing systemd (for systemd-analyze)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

"$repo/deploy/local/services.sh" start
