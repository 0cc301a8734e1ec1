"""Per-task overhead of one asyncworker process: no-op tasks, results stored.

Publishes N no-op task messages first, then starts a worker on them and times
it from "worker ready" to the N-th ``celery_taskmeta`` row. Also reports the
rate between the first and last ``date_done``, CPU seconds and peak RSS.

    python -m bench.noop_overhead --tasks 20000 --concurrency 100 [--acks-late]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from asyncworker import App

REPO = Path(__file__).resolve().parents[1]
BROKER = os.environ.get("ASYNCWORKER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
DSN = os.environ.get("ASYNCWORKER_RESULT_BACKEND",
                     "postgresql://asyncworker:asyncworker@127.0.0.1:5432/asyncworker")


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


async def run(tasks: int, concurrency: int, acks_late: bool) -> dict[str, float]:
    queue = f"bench.noop.{uuid.uuid4().hex[:8]}"
    name = "bench.noop_late" if acks_late else "bench.noop"
    producer = App("bench-producer", broker_url=BROKER)
    ids = []
    for _ in range(tasks):
        ids.append((await producer.send_task(name, queue=queue)).id)
    await producer.close()

    env = dict(os.environ, ASYNCWORKER_BROKER_URL=BROKER, ASYNCWORKER_RESULT_BACKEND=DSN,
               ASYNCWORKER_WORKER_LOG_FORMAT="json", ASYNCWORKER_WORKER_LOG_LEVEL="WARNING")
    conn = await asyncpg.connect(DSN.removeprefix("db+"))
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncworker", "worker", "-A", "bench.apps:app", "-Q", queue,
        "-c", str(concurrency), cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM celery_taskmeta WHERE task_id = ANY($1::text[])", ids)
            if done == tasks:
                break
            if worker.returncode is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}")
            await asyncio.sleep(0.05)
        wall = time.monotonic() - started
        cpu, rss = _proc_stats(worker.pid)
        first, last = await conn.fetchrow(
            "SELECT min(date_done), max(date_done) FROM celery_taskmeta "
            "WHERE task_id = ANY($1::text[])", ids)
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)
        await conn.close()
    span = (last - first).total_seconds()
    return {
        "tasks": tasks, "concurrency": concurrency, "acks_late": acks_late,
        "wall_s_including_startup": round(wall, 3),
        "tasks_per_s_wall": round(tasks / wall, 1),
        "tasks_per_s_first_to_last_result": round((tasks - 1) / span, 1) if span else 0.0,
        "cpu_s": round(cpu, 2), "cpu_ms_per_task": round(cpu * 1000 / tasks, 3),
        "peak_rss_mb": round(rss / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--acks-late", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.tasks, args.concurrency, args.acks_late)), indent=2))


if __name__ == "__main__":
    main()
