#!/usr/bin/env bash
# The main job on one machine: services + asyncworker serving the deployment's
# queues (and one periodic entry) + a real Celery client sending sample tasks and
# printing their results.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
"$repo/deploy/local/setup.sh"

work=$(mktemp -d -t asyncworker-demo.XXXXXX)
log="$work/worker.log"
# The vision tasks need S3 and a model API: local stand-ins on 127.0.0.1
# (moto's S3 server and the project's OpenAI-compatible test server).
.venv/bin/python -m bench.servers "$work/servers.env" >"$work/servers.log" 2>&1 &
servers=$!
trap 'kill -TERM ${worker:-} $servers 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  [ -f "$work/servers.env" ] && break
  kill -0 $servers 2>/dev/null || { cat "$work/servers.log" >&2; exit 1; }
  sleep 0.2
done
[ -f "$work/servers.env" ] || { echo "[demo] S3/model servers did not start" >&2; exit 1; }
set -a; . "$work/servers.env"; set +a

echo "[demo] starting: python -m asyncworker worker -c 100 --beat (log: $log)" >&2
# --beat: the worker also schedules one periodic entry (every 2 s), as `celery beat` would.
ASYNCWORKER_BEAT_SCHEDULE='{"demo-every-2s": {"task": "asyncworker.sample.add", "schedule": 2.0, "args": [40, 2]}}' \
ASYNCWORKER_WORKER_LOG_FORMAT=console .venv/bin/python -m asyncworker worker -c 100 --beat >"$log" 2>&1 &
worker=$!

for _ in $(seq 1 100); do
  grep -q "worker ready" "$log" && break
  kill -0 $worker 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.2
done

.venv/bin/python "$repo/deploy/local/demo_client.py" "$work"

kill -TERM $worker
wait $worker || true
kill -TERM $servers 2>/dev/null; wait $servers 2>/dev/null || true
trap - EXIT
echo "[demo] worker log (last lines):" >&2
tail -n 8 "$log" >&2
