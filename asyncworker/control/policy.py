"""Which remote-control commands a worker obeys.

Anyone who can publish to the broker can send control messages. Commands
that stop the worker, terminate tasks, resize it or change its queues and
limits are therefore "destructive": a deployment sharing its broker with
untrusted producers turns them off with ``worker_control_allow_destructive =
false``. Inspect commands and a plain ``revoke`` are always answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..worker.worker import Worker

SETTING = "worker_control_allow_destructive"


class CommandRefused(PermissionError):
    """A destructive command sent to a worker that does not allow them."""


def require_destructive(worker: Worker, what: str) -> None:
    """Raise ``CommandRefused`` unless the worker obeys destructive commands."""
    if not worker.settings.worker_control_allow_destructive:
        raise CommandRefused(f"{what} refused: {SETTING} is false on this worker")
