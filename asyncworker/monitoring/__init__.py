"""Monitoring: Prometheus metrics, health and readiness probes, ``asyncworker ping``.

A built-in plugin. With ``worker_http_port`` set (``worker --http-port``) a
worker serves ``/metrics`` (celery-exporter's series plus its own, see
:mod:`.metrics`), ``/healthz`` (the process and its event loop answer) and
``/readyz`` (connected and consuming) from a thread of its own
(:mod:`.server`); ``asyncworker beat --http-port`` serves beat's metrics the
same way. Off by default: nothing is imported or bound until a port is set.
``asyncworker ping`` (:mod:`.ping`) is the exec probe.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..plugins import Plugin
from .settings import MonitoringSettings

if TYPE_CHECKING:
    from ..services import Service
    from ..worker.worker import Worker

__all__ = ["MULTIPROC_DIR", "MonitoringPlugin", "MonitoringSettings", "group_directory",
           "report_event_drops"]

#: The variable that switches prometheus-client to multiprocess mode: set by
#: ``worker --processes N`` for its children (see :mod:`.shared`).
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def group_directory() -> str | None:
    """The group's metrics directory, when this process is a child of a supervisor."""
    return os.environ.get(MULTIPROC_DIR) or None


class MonitoringPlugin(Plugin):
    """Adds the ``[monitoring]`` settings and, when a port is set, the monitoring service."""

    name = "monitoring"
    settings = MonitoringSettings

    def services(self, worker: Worker) -> Iterable[Service]:
        settings = worker.settings.section(MonitoringSettings)
        if settings.worker_http_port is None:
            return ()
        from .service import MonitoringService

        return (MonitoringService(settings),)


#: Where the events dispatcher reports its dropped events (read at each scrape).
#: Kept here, not in ``metrics``, so reporting imports no Prometheus client.
EVENT_DROPS: weakref.WeakKeyDictionary[Worker, Callable[[], float]] = weakref.WeakKeyDictionary()


def report_event_drops(worker: Worker, dropped: Callable[[], float]) -> None:
    """Expose ``dropped()`` (events not sent: queue full, broker down) as
    ``asyncworker_event_drops_total`` of ``worker``."""
    EVENT_DROPS[worker] = dropped
