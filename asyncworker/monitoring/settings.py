"""Settings of the monitoring server: where it listens and when the loop counts as stuck."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..settings import Section


@dataclass(slots=True)
class MonitoringSettings(Section):
    """The ``[monitoring]`` section (its keys may also be written at the top level)."""

    section: ClassVar[str] = "monitoring"

    #: Serve ``/metrics``, ``/healthz`` and ``/readyz`` on this port (unset: no server).
    worker_http_port: int | None = None
    #: The address it binds; loopback unless a scraper elsewhere must reach it.
    worker_http_host: str = "127.0.0.1"
    #: ``/healthz`` fails once the event loop has not run for this many seconds.
    worker_health_max_lag: float = 10.0
