"""Settings of worker-lost detection (the ``[worker_lost]`` section).

``task_reject_on_worker_lost`` (Celery's name, a core setting and a task
option) decides what a task found lost with its worker becomes; these say
how losses are detected and when a task is given up on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..settings import Section


@dataclass(slots=True)
class WorkerLostSettings(Section):
    """The ``[worker_lost]`` section (its keys may also be written at the top level)."""

    section: ClassVar[str] = "worker_lost"

    #: Detect late-ack tasks whose worker died under them (needs a result backend).
    worker_lost_detection: bool = True
    #: With ``reject_on_worker_lost``: a task that took down this many workers
    #: is run no more; the next death dead-letters it with the reason ``poison``.
    worker_max_redeliveries: int = 3
    #: Seconds between a worker's lease refreshes; a lease not refreshed for
    #: ``worker_lost_lease_factor`` times this marks its worker dead.
    worker_lost_heartbeat: float = 2.0
    worker_lost_lease_factor: float = 5.0

    @property
    def lease_ttl(self) -> float:
        """Seconds after the last refresh at which a worker counts as dead."""
        return self.worker_lost_heartbeat * self.worker_lost_lease_factor
