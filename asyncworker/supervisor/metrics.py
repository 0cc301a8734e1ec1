"""The group's one endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` for all children.

Children write their series to files in one directory (prometheus-client's
multiprocess mode, :mod:`asyncworker.monitoring.shared`); the supervisor
serves them merged, on ``worker_http_host:worker_http_port``, from the same
server a single worker uses. Counters and histograms are summed over every
child that ever ran (so a restart does not reset them), gauges over the live
ones. ``/healthz`` fails when the supervisor's own loop stalls or a running
child's loop has not stamped its heartbeat for ``worker_health_max_lag``
seconds; ``/readyz`` is 200 when every child is running and ready.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from ..monitoring import MULTIPROC_DIR
from ..monitoring.server import LoopHeartbeat, MonitorServer
from ..monitoring.settings import MonitoringSettings
from ..monitoring.shared import HEARTBEAT, READY

if TYPE_CHECKING:
    from .group import Child


@contextlib.contextmanager
def metrics_directory(environ: dict[str, str]) -> Iterator[str]:
    """The group's directory: ``PROMETHEUS_MULTIPROC_DIR`` if set (emptied of an
    earlier run's files first), else a temporary one removed afterwards."""
    given = environ.get(MULTIPROC_DIR)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for old in Path(given).glob("*.db"):
            old.unlink()
        yield given
        return
    made = tempfile.mkdtemp(prefix="asyncworker-metrics-")
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def per_process(directory: str, name: str) -> dict[int, float]:
    """A ``liveall`` gauge's value by process id."""
    found: dict[int, float] = {}
    collector = MultiProcessCollector(None, directory)  # type: ignore[no-untyped-call]
    for metric in collector.collect():  # type: ignore[no-untyped-call]
        if metric.name == name:
            for sample in metric.samples:
                found[int(sample.labels["pid"])] = sample.value
    return found


class GroupCollector(Collector):
    """The supervisor's own series: children configured, running, restarted."""

    def __init__(self, children: Callable[[], Sequence[Child]]) -> None:
        self.children = children

    def collect(self) -> Iterator[Metric]:
        children = self.children()
        yield GaugeMetricFamily("asyncworker_group_processes", "Worker processes the "
                                "supervisor keeps (--processes).", value=len(children))
        yield GaugeMetricFamily("asyncworker_group_processes_running", "Worker processes "
                                "running now.", value=sum(c.pid is not None for c in children))
        restarts = CounterMetricFamily("asyncworker_group_restarts", "Times a dead worker "
                                       "process was started again.", labels=["nodename"])
        for child in children:
            restarts.add_metric([child.nodename], child.restarts)
        yield restarts


class GroupHeartbeat(LoopHeartbeat):
    """The supervisor's loop heartbeat, failing too when a child's loop is stuck."""

    def __init__(self, max_lag: float, directory: str,
                 children: Callable[[], Sequence[Child]]) -> None:
        super().__init__(max_lag)
        self.directory = directory
        self.children = children

    def healthy(self) -> tuple[bool, str]:
        ok, why = super().healthy()
        if not ok:
            return ok, why
        stamps = per_process(self.directory, HEARTBEAT)
        now = time.time()
        for child in self.children():
            stamp = stamps.get(child.pid) if child.pid is not None else None
            if stamp is not None and now - stamp > self.max_lag:
                return False, f"{child.nodename}: event loop blocked for {now - stamp:.1f}s"
        return True, "ok"


class GroupMonitor:
    """Serves the group's endpoint while the supervisor runs."""

    def __init__(self, settings: MonitoringSettings, directory: str,
                 children: Callable[[], Sequence[Child]],
                 stopping: Callable[[], bool]) -> None:
        assert settings.worker_http_port is not None
        self.directory = directory
        self.children = children
        self.stopping = stopping
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, directory)  # type: ignore[no-untyped-call]
        self.registry.register(GroupCollector(children))
        self.heartbeat = GroupHeartbeat(settings.worker_health_max_lag, directory, children)
        self.server = MonitorServer(self.registry, settings.worker_http_host,
                                    settings.worker_http_port, self.heartbeat, self.ready)

    def ready(self) -> tuple[bool, str]:
        """Every child running and ready."""
        if self.stopping():
            return False, "shutting down"
        ready = per_process(self.directory, READY)
        for child in self.children():
            if child.pid is None:
                return False, f"{child.nodename}: not running"
            if ready.get(child.pid) != 1.0:
                return False, f"{child.nodename}: not ready"
        return True, "ok"

    def child_exited(self, pid: int) -> None:
        """Drop a dead child's gauges (its counters stay in the group's totals)."""
        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def start(self) -> None:
        """Start serving (on the running loop: the heartbeat stamps from it)."""
        self.heartbeat.start()
        self.server.start()

    async def stop(self) -> None:
        """Stop serving."""
        self.server.stop()
        await self.heartbeat.stop()
