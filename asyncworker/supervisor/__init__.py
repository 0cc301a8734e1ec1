"""``worker --processes N``: N ordinary workers under one supervisor process.

For a host without Kubernetes where one process is not enough (one event
loop uses one core). The supervisor does no task work and opens no broker
connection; it only keeps N children running:

* **Children are subprocesses** of ``python -m asyncworker worker`` with the
  supervisor's options (:mod:`.children`), not ``multiprocessing`` workers: a
  child is exactly the worker one would start by hand (same exit statuses,
  signals, logging, event loop choice), it inherits no half-initialised state
  (loop, threads, sockets) from the supervisor, and nothing is pickled.
  Node names are ``name-1@host``, ``name-2@host``… from ``-n`` /
  ``worker_nodename``. Each child runs in its own process group, so a
  terminal's Ctrl-C reaches it once, forwarded by the supervisor.
* **Restarts** (:mod:`.restarts`): a dead child is started again after an
  exponential backoff (0.5–1 s, doubling, jittered, up to 60 s); three deaths within a
  minute are a crash loop, logged once as an ERROR while the pauses keep
  growing. A child exiting with status 2 (a configuration error) stops the
  whole group with status 2: restarting cannot fix a setting.
* **Signals** (:mod:`.group`), as a single worker takes them: SIGTERM or
  SIGINT is forwarded as SIGTERM (warm shutdown: running tasks finish); a
  second one, or SIGQUIT, is forwarded as SIGQUIT (cold). The supervisor
  waits for every child and exits 0; children still running
  ``worker_shutdown_timeout`` + 30 s later are killed.
* **One metrics endpoint** (:mod:`.metrics`): with ``worker_http_port`` set,
  the children write their series in prometheus-client's multiprocess mode
  and the supervisor serves them merged, with ``/healthz`` and ``/readyz``
  for the group, on that port.

If the supervisor itself is killed with SIGKILL, its children are not told;
under systemd use ``KillMode=mixed`` (SIGTERM to the supervisor only, which
forwards it; a plain control-group kill would signal the children twice,
which they take as a cold shutdown).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING

from ..monitoring.settings import MonitoringSettings
from ..settings import Settings
from .children import ChildSpec, child_nodename, child_specs, process_count
from .group import Supervisor
from .restarts import Restart, RestartTracker

if TYPE_CHECKING:
    from .metrics import GroupMonitor

__all__ = ["ChildSpec", "Restart", "RestartTracker", "Supervisor", "child_nodename",
           "child_specs", "process_count", "supervise"]


def supervise(args: argparse.Namespace, settings: Settings, count: int) -> int:
    """Run ``count`` workers as ``args`` describes until a signal stops them."""
    from ..cli.worker import run_process
    from .metrics import GroupMonitor, metrics_directory  # prometheus-client: only when used

    monitoring = settings.section(MonitoringSettings)
    status = 0
    with contextlib.ExitStack() as stack:
        directory = (stack.enter_context(metrics_directory(dict(os.environ)))
                     if monitoring.worker_http_port is not None else None)
        specs = child_specs(args, count, settings.worker_nodename, directory)

        async def main() -> None:
            nonlocal status
            monitor: GroupMonitor | None = None

            def exited(pid: int) -> None:
                if monitor is not None:
                    monitor.child_exited(pid)

            supervisor = Supervisor(specs, settings.worker_shutdown_timeout, on_exit=exited)
            if directory is not None:
                monitor = GroupMonitor(monitoring, directory, lambda: supervisor.children,
                                       lambda: supervisor.stopping)
                monitor.start()
            try:
                status = await supervisor.run()
            finally:
                if monitor is not None:
                    await monitor.stop()

        # Plain asyncio whatever worker_event_loop says: the supervisor only waits on
        # children, and asyncio's subprocesses take ``process_group``.
        code = run_process(main, dataclasses.replace(settings, worker_event_loop="asyncio"),
                           "supervisor")
    return code or status
