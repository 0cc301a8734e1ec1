#!/usr/bin/env bash
# The main job on one machine: services + asyncworker serving the deployment's
# queues + a real Celery client sending sample tasks and printing their results.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
"$repo/deploy/local/setup.sh"

log=$(mktemp -t asyncworker-demo.XXXXXX.log)
echo "[demo] starting: python -m asyncworker worker -c 100 (log: $log)" >&2
ASYNCWORKER_WORKER_LOG_FORMAT=console .venv/bin/python -m asyncworker worker -c 100 >"$log" 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  grep -q "worker ready" "$log" && break
  kill -0 $worker 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.2
done

.venv/bin/python "$repo/deploy/local/demo_client.py"

kill -TERM $worker
wait $worker || true
trap - EXIT
echo "[demo] worker log (last lines):" >&2
tail -n 8 "$log" >&2
