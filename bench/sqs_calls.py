"""SQS API calls per task: asyncworker and a Celery worker draining the same backlog.

On SQS every receive, delete and visibility change is a billed request, so the
figure that matters is calls per task. Both workers drain ``--tasks`` noop
tasks, sent beforehand by a Celery client, from a moto server whose request
recorder counts the calls made on the queue. Transport options are the kombu
defaults for both (long polling of 10 s, visibility 30 min); results go to
PostgreSQL. The Celery worker needs ``pycurl`` (kombu's SQS consumer)::

    python -m bench.sqs_calls --tasks 300
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .servers import start_s3 as start_moto  # moto's server serves SQS too

PG = "postgresql://asyncworker:asyncworker@127.0.0.1:5432/asyncworker"
KEY, SECRET = "AKIDBENCH", "bench-secret"
REPO = Path(__file__).resolve().parents[1]

if "BENCH_SQS_OPTIONS" in os.environ:
    # The Celery worker's app: bench.celery_app's, on SQS with these options.
    from .celery_app import app as celery_app

    celery_app.conf.broker_transport_options = json.loads(os.environ["BENCH_SQS_OPTIONS"])


def moto_api(url: str, action: str) -> bytes:
    request = urllib.request.Request(f"{url}/moto-api/recorder/{action}", method="POST"
                                     if action != "download-recording" else "GET", data=None)
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        return body


def calls(recording: bytes, prefix: str) -> collections.Counter[str]:
    """SQS actions recorded on queues named with ``prefix``."""
    counts: collections.Counter[str] = collections.Counter()
    for line in recording.decode().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode(errors="replace")
        if prefix not in body + str(entry.get("url")):
            continue
        target = next((v for k, v in (entry.get("headers") or {}).items()
                       if k.lower() == "x-amz-target"), None)
        counts[str(target).rsplit(".", 1)[-1] if target else "other"] += 1
    return counts


def drain(kind: str, moto_url: str, tasks: int) -> dict[str, Any]:
    """Send ``tasks`` noops, then time ``kind``'s worker draining them."""
    from celery import Celery

    prefix = f"b{uuid.uuid4().hex[:8]}-"
    options = {"region": "us-east-1", "queue_name_prefix": prefix}
    url = f"sqs://{KEY}:{SECRET}@{moto_url.split('://', 1)[1]}"
    backend = "db+postgresql+psycopg2://" + PG.split("://", 1)[1]
    client = Celery("client", broker=url, backend=backend)
    client.conf.broker_transport_options = options
    ids = [client.send_task("bench.noop", queue="bench").id for _ in range(tasks)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
    if kind == "asyncworker":
        env.update(ASYNCWORKER_BROKER_URL=url, ASYNCWORKER_RESULT_BACKEND="db+" + PG,
                   ASYNCWORKER_BROKER_TRANSPORT_OPTIONS=json.dumps(options),
                   ASYNCWORKER_WORKER_LOG_LEVEL="WARNING")
        command = [sys.executable, "-m", "asyncworker", "worker", "-A", "bench.apps:app",
                   "-Q", "bench", "-c", "100", "--prefetch-multiplier", "4"]
    else:
        env.update(BENCH_BROKER_URL=url, BENCH_RESULT_BACKEND=backend,
                   BENCH_SQS_OPTIONS=json.dumps(options))
        command = [sys.executable, "-m", "celery", "-A", "bench.sqs_calls:celery_app", "worker",
                   "-Q", "bench", "-P", "threads", "-c", "16", "--without-mingle",
                   "--without-gossip", "-l", "WARNING"]
    moto_api(moto_url, "reset-recording")
    moto_api(moto_url, "start-recording")
    started = time.monotonic()
    worker = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        import psycopg2

        with psycopg2.connect(PG) as conn, conn.cursor() as cur:
            while True:
                cur.execute("SELECT count(*) FROM celery_taskmeta WHERE task_id = ANY(%s) "
                            "AND status = 'SUCCESS'", (ids,))
                row = cur.fetchone()
                conn.commit()
                if row is not None and row[0] == tasks:
                    break
                if time.monotonic() - started > 300:
                    raise TimeoutError(f"{kind}: backlog not drained in 300 s")
                time.sleep(0.2)
        elapsed = time.monotonic() - started
        time.sleep(2)  # the last deletes
    finally:
        worker.terminate()
        worker.wait(60)
    moto_api(moto_url, "stop-recording")
    counted = calls(moto_api(moto_url, "download-recording"), prefix)
    return {"worker": kind, "tasks": tasks, "seconds": round(elapsed, 2),
            "calls": dict(counted), "calls_per_task": round(sum(counted.values()) / tasks, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqs_calls")
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # The recorder's file, where the moto server (our child) writes it.
        os.environ["MOTO_RECORDER_FILEPATH"] = str(Path(tmp) / "recording")
        run(args.tasks)


def run(tasks: int) -> None:
    server = start_moto()
    try:
        for kind in ("celery", "asyncworker"):
            print(json.dumps(drain(kind, server.url, tasks)), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
