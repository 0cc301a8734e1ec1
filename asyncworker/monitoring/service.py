"""The worker's monitoring service, and the same server for ``asyncworker beat``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ..hooks import WorkerHooks
from ..services import METRICS, Service
from .metrics import BeatMetrics, ResultWriteMetrics, TaskMetrics, WorkerCollector, task_names
from .server import LoopHeartbeat, MonitorServer
from .settings import MonitoringSettings
from .shared import SharedSeries, group_directory

if TYPE_CHECKING:
    from ..app import App
    from ..worker.worker import Worker


class _Stopping(WorkerHooks):
    """Notes the start of a shutdown: the worker is no longer ready from then on."""

    def __init__(self) -> None:
        self.stopping = False

    def worker_stopping(self, worker: Any, cold: bool) -> None:
        self.stopping = True


class MonitoringService(Service):
    """Metrics hooks, the loop heartbeat and the HTTP server of one worker."""

    name = "monitoring"
    order = METRICS

    def __init__(self, settings: MonitoringSettings) -> None:
        self.settings = settings
        #: This worker's registry (tests read it directly).
        self.registry = CollectorRegistry()
        self.heartbeat = LoopHeartbeat(settings.worker_health_max_lag)
        self.server: MonitorServer | None = None
        self._stopping = _Stopping()
        self._worker: Worker | None = None
        self._writes: ResultWriteMetrics | None = None
        self._shared: SharedSeries | None = None

    async def start(self, worker: Worker) -> None:
        """Subscribe the metrics hooks and start serving."""
        self._worker = worker
        registry = self.registry
        worker.hooks.add(TaskMetrics(registry, worker.settings.worker_nodename,
                                     task_names(worker)))
        worker.hooks.add(self._stopping)
        collector = WorkerCollector(worker, self._up)
        registry.register(collector)
        writer = worker.backend.batch_writer() if worker.backend is not None else None
        if writer is not None:
            self._writes = ResultWriteMetrics(registry)
            writer.observers.append(self._writes)
        from ..beat.settings import BeatSettings

        if worker.settings.section(BeatSettings).worker_beat:
            # The scheduler reports through the app's hooks, not the worker's.
            worker.app.add_hooks(BeatMetrics(registry))
        self.heartbeat.start()
        if group_directory() is not None:  # a child of ``worker --processes N``
            self._shared = SharedSeries(collector, self.ready, self.heartbeat.interval)
            self._shared.start()
        port = self.settings.worker_http_port
        assert port is not None
        self.server = MonitorServer(registry, self.settings.worker_http_host, port,
                                    self.heartbeat, self.ready)
        self.server.start()

    async def stop(self) -> None:
        """Stop serving (the last scrape sees the final counts)."""
        if self.server is not None:
            self.server.stop()
        await self.heartbeat.stop()
        if self._shared is not None:
            await self._shared.stop()
        worker = self._worker
        if worker is not None and self._writes is not None and worker.backend is not None:
            writer = worker.backend.batch_writer()
            if writer is not None and self._writes in writer.observers:
                writer.observers.remove(self._writes)

    def _up(self) -> bool:
        return self._worker is not None and self._worker.ready.is_set() and not (
            self._stopping.stopping)

    def ready(self) -> tuple[bool, str]:
        """Consuming, connected to the broker, and result writes not failing."""
        worker = self._worker
        if worker is None or not worker.ready.is_set():
            return False, "starting"
        if self._stopping.stopping:
            return False, "shutting down"
        if not worker.broker.is_connected():
            return False, "broker disconnected"
        writer = worker.backend.batch_writer() if worker.backend is not None else None
        if writer is not None and writer.failing:
            return False, "result backend unreachable"
        return True, "ok"


@contextlib.asynccontextmanager
async def beat_monitoring(app: App, beat: Any) -> AsyncIterator[MonitorServer | None]:
    """Serve beat's metrics and probes while the block runs, if a port is configured.

    ``beat`` is the running scheduler: ready once its ``ready`` event is set
    and until ``stop()`` was called.
    """
    settings = app.settings.section(MonitoringSettings)
    if settings.worker_http_port is None:
        yield None
        return
    registry = CollectorRegistry()
    app.add_hooks(BeatMetrics(registry))
    heartbeat = LoopHeartbeat(settings.worker_health_max_lag)

    def ready() -> tuple[bool, str]:
        if not beat.ready.is_set():
            return False, "starting"
        return (False, "shutting down") if beat.stopping else (True, "ok")

    heartbeat.start()
    server = MonitorServer(registry, settings.worker_http_host, settings.worker_http_port,
                           heartbeat, ready)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        await heartbeat.stop()
