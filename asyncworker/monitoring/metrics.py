"""Prometheus metrics of one worker (or one ``beat``), on a registry of its own.

The ``celery_*`` series carry celery-exporter's names, labels and buckets, so
dashboards built on the exporter read a worker's own ``/metrics`` unchanged:
task counters by ``name``, ``hostname`` (the node name's host part, as the
exporter shortens it) and ``queue_name`` (``exception`` too on failures), the
``celery_task_runtime`` and ``celery_task_queue_wait_time`` histograms, and
``celery_worker_up`` / ``celery_worker_tasks_active``. The ``asyncworker_*``
series are this worker's own (concurrency, ETA, prefetch, result writes, dead
letters, reconnects, event drops, beat).

Counters and histograms are fed by hooks (:class:`TaskMetrics`,
:class:`BeatMetrics`); gauges are read from the worker when scraped
(:class:`WorkerCollector`), from the HTTP server's thread: each reads one
attribute or a ``len()``, which the GIL keeps consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..hooks import WorkerHooks
from . import EVENT_DROPS
from .labels import BoundedLabel, TaskNames, reason_prefix

if TYPE_CHECKING:
    from ..beat.entries import Tick
    from ..worker.job import Job
    from ..worker.worker import Worker

#: celery-exporter's default ``--buckets`` (prometheus-client's defaults), seconds.
BUCKETS = (.005, .01, .025, .05, .075, .1, .25, .5, .75, 1.0, 2.5, 5.0, 7.5, 10.0, float("inf"))
#: Rows per result-backend batch.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, float("inf"))
#: Distinct exception types, dead-letter reasons and beat entries kept as labels.
LABEL_LIMIT = 100

_TASK_LABELS = ("name", "hostname", "queue_name")
# Exporter counter name -> (help text, the hooks that count it).
_COUNTERS = {
    "received": "Sent when the worker receives a task.",
    "started": "Sent just before the worker executes the task.",
    "succeeded": "Sent if the task executed successfully.",
    "failed": "Sent if the execution of the task failed.",
    "rejected": "The task was rejected by the worker, possibly to be re-queued or "
                "moved to a dead letter queue.",
    "revoked": "Sent if the task has been revoked.",
    "retried": "Sent if the task failed, but will be retried in the future.",
}

def host_label(nodename: str) -> str:
    """The ``hostname`` label: the part after ``@``, as celery-exporter reports it."""
    return nodename.rpartition("@")[2]


class TaskMetrics(WorkerHooks):
    """Task counters and histograms under celery-exporter's names."""

    def __init__(self, registry: CollectorRegistry, nodename: str,
                 task_names: Callable[[str | None], str]) -> None:
        self.hostname = host_label(nodename)
        self.task_names = task_names
        self.exceptions = BoundedLabel(LABEL_LIMIT)
        self.reasons = BoundedLabel(LABEL_LIMIT, reason_prefix)
        self.counters = {
            kind: Counter(f"celery_task_{kind}", text,
                          [*_TASK_LABELS, "exception"] if kind == "failed" else _TASK_LABELS,
                          registry=registry)
            for kind, text in _COUNTERS.items()}
        self.runtime = Histogram("celery_task_runtime", "Histogram of task runtime "
                                 "measurements.", _TASK_LABELS, registry=registry,
                                 buckets=BUCKETS)
        self.queue_wait = Histogram("celery_task_queue_wait_time", "Seconds from a task's "
                                    "receipt (or its ETA) to its start.", _TASK_LABELS,
                                    registry=registry, buckets=BUCKETS)
        self.dead_letters = Counter("asyncworker_dead_letters", "Messages kept in a "
                                    "dead-letter queue, by reason.", ["reason"],
                                    registry=registry)
        self._seen: set[tuple[str, str]] = set()

    def _labels(self, job: Job) -> tuple[str, str, str]:
        name = self.task_names(job.name)
        key = (name, job.queue)
        if key not in self._seen:
            # As the exporter does: every counter of a task shows, at 0 until it happens.
            self._seen.add(key)
            for kind, counter in self.counters.items():
                extra = ("",) if kind == "failed" else ()
                counter.labels(name, self.hostname, job.queue, *extra)
        return name, self.hostname, job.queue

    def _count(self, kind: str, job: Job) -> None:
        self.counters[kind].labels(*self._labels(job)).inc()

    def task_received(self, job: Job) -> None:
        self._count("received", job)

    def task_started(self, job: Job) -> None:
        labels = self._labels(job)
        self.counters["started"].labels(*labels).inc()
        if job.started is not None:
            since = job.received
            request = job.request
            if request is not None and request.eta is not None:
                since = max(since, request.eta.timestamp())  # the ETA hold is not a wait
            self.queue_wait.labels(*labels).observe(max(0.0, job.started - since))

    def task_succeeded(self, job: Job) -> None:
        labels = self._labels(job)
        self.counters["succeeded"].labels(*labels).inc()
        self.runtime.labels(*labels).observe(job.runtime)

    def task_failed(self, job: Job) -> None:
        exc = job.outcome.exc if job.outcome is not None else None
        exception = self.exceptions(type(exc).__name__) if exc is not None else "UnknownException"
        self.counters["failed"].labels(*self._labels(job), exception).inc()

    def task_retried(self, job: Job) -> None:
        self._count("retried", job)

    def task_rejected(self, job: Job) -> None:
        self._count("rejected", job)

    def task_revoked(self, job: Job) -> None:
        self._count("revoked", job)

    def task_expired(self, job: Job) -> None:
        self._count("revoked", job)  # Celery reports expiry as task-revoked (expired=True)

    def task_dead_lettered(self, job: Job, reason: str) -> None:
        self.dead_letters.labels(self.reasons(reason)).inc()


class BeatMetrics(WorkerHooks):
    """The scheduler's ticks: fired, missed (coalesced) and taken over, by entry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries = BoundedLabel(LABEL_LIMIT)
        self.fired = Counter("asyncworker_beat_fired", "Ticks published, by entry.",
                             ["entry"], registry=registry)
        self.missed = Counter("asyncworker_beat_missed", "Ticks older than the misfire "
                              "grace time, coalesced into a later run, by entry.", ["entry"],
                              registry=registry)
        self.took_over = Counter("asyncworker_beat_took_over", "Ticks another replica "
                                 "claimed but never published, published here, by entry.",
                                 ["entry"], registry=registry)
        self.lag = Histogram("asyncworker_beat_lag_seconds", "Seconds from a tick's "
                             "scheduled time to its publish.", registry=registry,
                             buckets=BUCKETS)

    def beat_fired(self, tick: Tick, lag: float) -> None:
        self.fired.labels(self.entries(tick.entry)).inc()
        self.lag.observe(max(0.0, lag))

    def beat_missed(self, tick: Tick, missed: int) -> None:
        self.missed.labels(self.entries(tick.entry)).inc(missed)

    def beat_took_over(self, tick: Tick, previous: str) -> None:
        self.took_over.labels(self.entries(tick.entry)).inc()


class ResultWriteMetrics:
    """Result-backend batches: how long each write took and how many rows it carried."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram("asyncworker_result_write_seconds", "Seconds per "
                                 "result-backend batch write (retries included).",
                                 registry=registry, buckets=BUCKETS)
        self.rows = Histogram("asyncworker_result_batch_size", "Rows per result-backend "
                              "batch write.", registry=registry, buckets=BATCH_BUCKETS)

    def __call__(self, rows: int, seconds: float) -> None:
        self.seconds.observe(seconds)
        self.rows.observe(rows)


class WorkerCollector(Collector):
    """Gauges and counters read from the worker at scrape time."""

    def __init__(self, worker: Worker, is_up: Callable[[], bool]) -> None:
        self.worker = worker
        self.is_up = is_up
        self.hostname = host_label(worker.settings.worker_nodename)

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        state, host = w.state, [self.hostname]
        up = GaugeMetricFamily("celery_worker_up", "Indicates if a worker has recently "
                               "sent a heartbeat.", labels=["hostname"])
        up.add_metric(host, 1.0 if self.is_up() else 0.0)
        active = GaugeMetricFamily("celery_worker_tasks_active", "The number of tasks the "
                                   "worker is currently processing", labels=["hostname"])
        active.add_metric(host, len(state.active))
        yield from (up, active)
        yield GaugeMetricFamily("asyncworker_concurrency_in_use", "Tasks running now "
                                "(global slots held).", value=len(state.active))
        yield GaugeMetricFamily("asyncworker_concurrency_limit", "worker_concurrency.",
                                value=w.settings.worker_concurrency)
        yield GaugeMetricFamily("asyncworker_tasks_reserved", "Tasks admitted, waiting for "
                                "a rate limit, a cap or a slot.", value=len(state.reserved))
        yield GaugeMetricFamily("asyncworker_eta_held", "Messages held until their ETA "
                                "(countdown).", value=len(state.scheduled))
        window = w.broker.prefetch_window()
        if window is not None:
            yield GaugeMetricFamily("asyncworker_prefetch_window", "Unacked messages the "
                                    "broker may deliver now (0: no limit).", value=window)
        yield CounterMetricFamily("asyncworker_broker_reconnects", "Times the broker "
                                  "connection was re-established.", value=w.broker.reconnects)
        outage = getattr(w.broker, "outage", None)
        yield CounterMetricFamily("asyncworker_broker_connect_failures", "Failed attempts "
                                  "to connect or reconnect to the broker.",
                                  value=outage.failures if outage is not None else 0)
        writer = w.backend.batch_writer() if w.backend is not None else None
        yield CounterMetricFamily("asyncworker_backend_reconnects", "Result writes that "
                                  "succeeded after the backend had failed (the link came "
                                  "back).", value=writer.reconnects if writer else 0)
        yield CounterMetricFamily("asyncworker_backend_write_failures", "Result write "
                                  "attempts that failed with a transient error (retried).",
                                  value=writer.failures if writer else 0)
        dropped = EVENT_DROPS.get(w)
        yield CounterMetricFamily("asyncworker_event_drops", "Monitoring events not sent "
                                  "(queue full or broker down).",
                                  value=dropped() if dropped is not None else 0)


def task_names(worker: Worker) -> TaskNames:
    """The task-name labeller for ``worker``: its app's registered tasks."""
    return TaskNames(worker.app.tasks)
