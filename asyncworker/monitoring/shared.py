"""A worker's series in the group's files, when it runs under ``worker --processes N``.

prometheus-client's multiprocess mode keeps every Counter, Gauge and
Histogram value in a memory-mapped file per process under
``PROMETHEUS_MULTIPROC_DIR``; the supervisor reads them all and serves one
``/metrics`` for the group. The task counters and histograms (:mod:`.metrics`)
land there by themselves. The series that a worker computes at scrape time
(:class:`~.metrics.WorkerCollector`: active tasks, ``celery_worker_up``,
reconnects ...) cannot be read from another process, so :class:`SharedSeries`
copies them into multiprocess metrics every ``interval`` seconds: gauges as
the sum over live children (``celery_worker_up``: their maximum), counters
by increments, so that a restarted child's counts add to its predecessor's.
It also writes this process's readiness and a heartbeat (the time its event
loop last ran), which the supervisor's ``/readyz`` and ``/healthz`` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Literal

from prometheus_client import Counter, Gauge
from prometheus_client.registry import Collector

from . import MULTIPROC_DIR, group_directory

__all__ = ["GAUGE_MODES", "HEARTBEAT", "MULTIPROC_DIR", "READY", "SharedSeries",
           "group_directory"]

Mode = Literal["livesum", "livemax", "liveall"]
#: Per-process series the supervisor reads (``pid`` label in the group's output).
READY = "asyncworker_process_ready"
HEARTBEAT = "asyncworker_process_heartbeat_timestamp_seconds"
#: How a gauge of several children is combined (default: their sum).
GAUGE_MODES: dict[str, Mode] = {"celery_worker_up": "livemax"}


class SharedSeries:
    """Copies ``collector``'s series, readiness and a heartbeat into the group's files."""

    def __init__(self, collector: Collector, ready: Callable[[], tuple[bool, str]],
                 interval: float = 1.0) -> None:
        self.collector = collector
        self.ready = ready
        self.interval = interval
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._seen: dict[tuple[str, tuple[str, ...]], float] = {}
        self._ready = Gauge(READY, "1 while this worker process is ready (its /readyz).",
                            registry=None, multiprocess_mode="liveall")
        self._heartbeat = Gauge(HEARTBEAT, "When this worker process's event loop last ran "
                                "(Unix time).", registry=None, multiprocess_mode="liveall")
        self._task: asyncio.Task[None] | None = None

    def update(self) -> None:
        """Write the current values once."""
        for family in self.collector.collect():
            for sample in family.samples:
                names, labels = tuple(sample.labels), tuple(sample.labels.values())
                if family.type == "gauge":
                    gauge = self._gauge(family.name, family.documentation, names)
                    (gauge.labels(*labels) if labels else gauge).set(sample.value)
                elif family.type == "counter" and sample.name.endswith("_total"):
                    key = (family.name, labels)
                    delta = sample.value - self._seen.get(key, 0.0)
                    self._seen[key] = sample.value
                    counter = self._counter(family.name, family.documentation, names)
                    child = counter.labels(*labels) if labels else counter  # shown at 0 too
                    if delta > 0:
                        child.inc(delta)
        self._ready.set(1.0 if self.ready()[0] else 0.0)
        self._heartbeat.set(time.time())

    def _gauge(self, name: str, text: str, labels: tuple[str, ...]) -> Gauge:
        if name not in self._gauges:
            self._gauges[name] = Gauge(name, text, labels, registry=None,
                                       multiprocess_mode=GAUGE_MODES.get(name, "livesum"))
        return self._gauges[name]

    def _counter(self, name: str, text: str, labels: tuple[str, ...]) -> Counter:
        if name not in self._counters:
            self._counters[name] = Counter(name, text, labels, registry=None)
        return self._counters[name]

    def start(self) -> None:
        """Update every ``interval`` seconds on the running loop."""
        self._task = asyncio.create_task(self._run(), name="shared-series")

    async def stop(self) -> None:
        """A last update (not ready any more), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.update()

    async def _run(self) -> None:
        while True:
            self.update()
            await asyncio.sleep(self.interval)
