"""Far-future ETAs at scale: parked in delay queues, not held by the worker.

    .venv/bin/python -m bench.eta_park                  # 100,000 tasks an hour ahead
    .venv/bin/python -m bench.eta_park --n 10000 --hold # also the held (Celery-like) run

The target: "100,000 tasks with an ETA an hour ahead leave the worker's RSS
and prefetch flat while other tasks flow."

One run, on a private RabbitMQ (``tests/private_services.py``):

1. starts a worker consuming two queues, ``far`` and ``normal``, and warms
   it up with normal tasks; reads its RSS and the broker's view of its
   prefetch (``global_prefetch_count`` and unacked messages of its channels);
2. publishes N copies of one pre-encoded ``longeta.stamp`` message with an
   ETA ``--eta`` seconds ahead to ``far``, from parallel publishers, and
   meanwhile sends a batch of normal tasks every half second;
3. samples RSS and prefetch until every far task sits in a delay queue and
   every normal task has run; reports the time to park them all, the peak
   RSS growth, the prefetch and unacked peaks, and the normal tasks' latency.

With ``--hold`` the same run is repeated with parking off
(``worker_eta_hold_limit`` unset: every ETA held in memory, as Celery does),
for comparison; it is stopped once everything is held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from asyncworker.broker import delay
from asyncworker.broker.amqp import AmqpBroker
from asyncworker.broker.topology import Topology
from asyncworker.message import TaskMessage, new_id
from asyncworker.protocol import MessageTemplate, encode
from asyncworker.settings import Settings
from tests.conftest import REDIS_URL, WorkerProcess, process_env
from tests.private_services import PrivateServices

APP = "tests.apps.longeta:app"


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for {pid}")


def consumer_channels(services: PrivateServices) -> tuple[int, int]:
    """(largest global prefetch, total unacked) over the broker's consuming channels."""
    out = services.rabbitmqctl("-q", "list_channels", "consumer_count",
                               "global_prefetch_count", "messages_unacknowledged")
    prefetch = unacked = 0
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].isdigit() and int(parts[0]) > 0:
            prefetch = max(prefetch, int(parts[1]))
            unacked += int(parts[2])
    return prefetch, unacked


def parked_count(services: PrivateServices, queue: str) -> int:
    """Messages of ``queue`` waiting in its delay queues."""
    out = services.rabbitmqctl("-q", "list_queues", "name", "messages")
    return sum(int(parts[1]) for parts in (line.split("\t") for line in out.splitlines())
               if len(parts) == 2 and parts[1].isdigit() and parts[0].startswith(delay.PREFIX)
               and parts[0].endswith("." + queue))


async def publish_far(broker_url: str, queue: str, n: int, eta: datetime, key: str,
                      parallel: int = 8) -> float:
    """Publish ``n`` copies of one encoded ``longeta.stamp`` message due at ``eta``
    to ``queue`` from ``parallel`` publishers; the seconds it took."""
    broker = AmqpBroker(broker_url)
    await broker.connect(retry=False)
    try:
        await broker.ensure_declared(Topology(Settings()).queue(queue), passive=False)
        template = MessageTemplate.of(encode(TaskMessage.from_options(
            "longeta.stamp", [key], {}, {"eta": eta})), own_root=True)
        broker.encode_template(template)
        started = time.monotonic()

        async def publisher(count: int) -> None:
            window = 200  # confirms pipelined per publisher
            for first in range(0, count, window):
                await asyncio.gather(*(
                    broker.publish_copy("", queue, template, new_id())
                    for _ in range(min(window, count - first))))

        share = [n // parallel + (1 if i < n % parallel else 0) for i in range(parallel)]
        await asyncio.gather(*(publisher(c) for c in share))
        return time.monotonic() - started
    finally:
        await broker.close()


def start_worker(services: PrivateServices, far: str, normal: str, log: Path,
                 **settings: Any) -> WorkerProcess:
    """An asyncworker on the private broker consuming ``far`` and ``normal``."""
    worker = WorkerProcess(["-A", APP, "-Q", f"{far},{normal}", "-c", "100"],
                           process_env(broker_url=services.broker_url,
                                       worker_nodename=f"etapark-{far}@bench", **settings),
                           log)
    worker.wait_ready(timeout=60)
    return worker


def scenario(services: PrivateServices, n: int, log_dir: Path, eta_in: float = 3600,
             normal_every: float = 0.5, normal_batch: int = 20, deadline: float = 600,
             **settings: Any) -> dict[str, Any]:
    """One run (see the module docstring); the figures, as a dict."""
    run = uuid.uuid4().hex[:8]
    far, normal, key = f"etapark.far.{run}", f"etapark.normal.{run}", f"etapark-{run}"
    parking = settings.get("worker_eta_hold_limit", 600) not in (None, "null")
    r = redis.Redis.from_url(REDIS_URL)
    worker = start_worker(services, far, normal, log_dir / f"worker-{run}.log", **settings)
    sender = AmqpSender(services.broker_url, normal)
    try:
        sent_normal = sender.send(200, key)  # warm-up
        _wait(lambda: int(r.get(f"longeta:{key}.count") or 0) >= sent_normal, 60)
        rss0 = rss_mb(worker.proc.pid)
        prefetch0, unacked0 = consumer_channels(services)
        eta = datetime.now(UTC) + timedelta(seconds=eta_in)
        published: dict[str, float] = {}
        thread = threading.Thread(target=lambda: published.update(seconds=asyncio.run(
            publish_far(services.broker_url, far, n, eta, key))))
        started = time.monotonic()
        thread.start()
        peak_rss, peak_prefetch, peak_unacked = rss0, prefetch0, unacked0
        last_normal = last_broker = 0.0
        lines = LogCounter(worker.log_path, "task parked until its ETA" if parking
                           else '"task received"')
        while True:
            now = time.monotonic()
            if now - last_normal >= normal_every and thread.is_alive():
                sent_normal += sender.send(normal_batch, key)
                last_normal = now
            peak_rss = max(peak_rss, rss_mb(worker.proc.pid))
            if now - last_broker >= 2:  # rabbitmqctl starts a VM: not too often
                prefetch, unacked = consumer_channels(services)
                peak_prefetch, peak_unacked = (max(peak_prefetch, prefetch),
                                               max(peak_unacked, unacked))
                last_broker = now
            done_normal = int(r.get(f"longeta:{key}.count") or 0)
            held = lines.count() - (0 if parking else sent_normal)
            if not thread.is_alive() and held >= n and done_normal >= sent_normal:
                break
            if now - started > deadline:
                raise TimeoutError(f"after {deadline}s: {held} of {n} parked/held, "
                                   f"{done_normal} of {sent_normal} normal tasks done")
            time.sleep(0.25)
        if parking:
            held = parked_count(services, far)  # the broker's word, at the end
        elapsed = time.monotonic() - started
        latencies = sorted(float(x) for x in r.lrange(f"longeta:{key}.latency", 0, -1))
        rss1 = rss_mb(worker.proc.pid)
        prefetch1, unacked1 = consumer_channels(services)
        return {
            "mode": "parked" if parking else "held", "n": n, "eta_in": eta_in,
            "publish_s": round(published["seconds"], 2), "park_s": round(elapsed, 2),
            "parked": held if parking else 0, "held": 0 if parking else held,
            "rss_mb_before": round(rss0, 1), "rss_mb_peak": round(peak_rss, 1),
            "rss_mb_after": round(rss1, 1), "rss_growth_mb": round(peak_rss - rss0, 1),
            "prefetch_before": prefetch0, "prefetch_peak": peak_prefetch,
            "prefetch_after": prefetch1, "unacked_peak": peak_unacked,
            "unacked_after": unacked1, "normal_sent": sent_normal,
            "normal_latency_p50_s": round(latencies[len(latencies) // 2], 3),
            "normal_latency_max_s": round(latencies[-1], 3),
            "far_runs": r.llen(f"longeta:{key}"),
        }
    finally:
        sender.close()
        worker.stop()
        r.delete(f"longeta:{key}", f"longeta:{key}.count", f"longeta:{key}.latency")
        names = services.rabbitmqctl("-q", "list_queues", "name").split()
        for name in names:
            if name in (far, normal) or (name.startswith(delay.PREFIX)
                                         and name.endswith("." + far)):
                services.rabbitmqctl("-q", "delete_queue", name)


class AmqpSender:
    """Sends ``longeta.quick`` tasks from a thread of its own (a loop and a broker)."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self.queue = queue
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.broker = AmqpBroker(broker_url)
        self._run(self.broker.connect(retry=False))
        self._run(self.broker.ensure_declared(Topology(Settings()).queue(queue), passive=False))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def send(self, count: int, key: str) -> int:
        """Publish ``count`` normal tasks (each records its latency); returns ``count``."""
        async def burst() -> None:
            await asyncio.gather(*(self.broker.publish("", self.queue, encode(
                TaskMessage.from_options("longeta.quick", [key, time.time()], {}, {})))
                for _ in range(count)))
        self._run(burst())
        return count

    def close(self) -> None:
        self._run(self.broker.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class LogCounter:
    """Counts log lines holding ``text``, reading only what was added since."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.needle = text.encode()
        self.offset = 0
        self.total = 0

    def count(self) -> int:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        self.total += chunk[:end].count(self.needle)
        return self.total


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="far-future tasks")
    parser.add_argument("--eta", type=float, default=3600, help="seconds ahead")
    parser.add_argument("--hold", action="store_true",
                        help="also run with parking off, for comparison")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asyncworker-etapark-"))
    root.chmod(0o755)  # its PostgreSQL runs as another user
    services = PrivateServices(root / "services")
    services.start()
    try:
        runs = [scenario(services, args.n, root, args.eta)]
        if args.hold:
            runs.append(scenario(services, args.n, root, args.eta,
                                 worker_eta_hold_limit="null"))
        for figures in runs:
            print(json.dumps(figures))
    finally:
        services.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
