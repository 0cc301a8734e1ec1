"""The supervisor's loop: start the children, restart the dead, stop them all on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence

from ..logging import get_logger
from .children import ChildSpec
from .restarts import RestartTracker

log = get_logger("supervisor")

#: A child's exit status for a configuration error: restarting cannot help.
CONFIG_ERROR = 2
#: Beyond ``worker_shutdown_timeout``, how long the children get before SIGKILL.
KILL_GRACE = 30.0


class Child:
    """One slot of the group: its spec, the process now in it, its deaths."""

    def __init__(self, spec: ChildSpec, tracker: RestartTracker) -> None:
        self.spec = spec
        self.tracker = tracker
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.restarts = 0

    @property
    def nodename(self) -> str:
        return self.spec.nodename

    @property
    def pid(self) -> int | None:
        """The running process's id (None while dead or between restarts)."""
        proc = self.proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def send(self, sig: signal.Signals) -> None:
        """Signal the running process, if any."""
        if self.pid is not None and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def describe_exit(code: int) -> dict[str, object]:
    """Log fields for an exit status (a negative one is the signal that killed it)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return {"signal": signal.Signals(-code).name}
    return {"exit_code": code}


class Supervisor:
    """Runs ``specs`` as child processes until a signal; returns the group's exit status.

    0 after a shutdown, 2 when a child exited with a configuration error (the
    others are stopped warm first).
    """

    def __init__(self, specs: Sequence[ChildSpec], shutdown_timeout: float,
                 trackers: Callable[[], RestartTracker] = RestartTracker,
                 on_exit: Callable[[int], None] | None = None) -> None:
        self.children = [Child(spec, trackers()) for spec in specs]
        self.shutdown_timeout = shutdown_timeout
        self.on_exit = on_exit
        self.stopping = False
        self.cold = False
        self.exit_code = 0
        self._stop: asyncio.Event | None = None

    # -- signals ---------------------------------------------------------------
    def request_stop(self, cold: bool = False) -> None:
        """Warm-stop every child (SIGTERM); a second request, or ``cold``: SIGQUIT."""
        cold = cold or self.stopping
        self.stopping = True
        self.cold = self.cold or cold
        if self._stop is not None:
            self._stop.set()
        for child in self.children:
            child.send(signal.SIGQUIT if cold else signal.SIGTERM)

    def _on_signal(self, sig: signal.Signals, cold: bool) -> None:
        kind = "cold" if cold or self.stopping else "warm"
        log.warning("shutdown requested; forwarded to the children", signal=sig.name, kind=kind)
        self.request_stop(cold)

    # -- the loop ------------------------------------------------------------------
    async def run(self) -> int:
        """Start every child, keep them running, and return once all have stopped."""
        self._stop = asyncio.Event()
        if self.stopping:
            self._stop.set()
        loop = asyncio.get_running_loop()
        for sig, cold in ((signal.SIGTERM, False), (signal.SIGINT, False),
                          (signal.SIGQUIT, True)):
            loop.add_signal_handler(sig, self._on_signal, sig, cold)
        log.info("supervisor started", processes=len(self.children),
                 nodenames=[c.nodename for c in self.children])
        keepers = [asyncio.create_task(self._keep(c), name=f"keep-{c.nodename}")
                   for c in self.children]
        try:
            await self._stop.wait()
            _, pending = await asyncio.wait(keepers, timeout=self.shutdown_timeout + KILL_GRACE)
            if pending:
                log.error("children still running after the shutdown timeout; killing them",
                          nodenames=[c.nodename for c in self.children if c.pid is not None])
                for child in self.children:
                    child.send(signal.SIGKILL)
                await asyncio.wait(pending)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                loop.remove_signal_handler(sig)
        for keeper in keepers:
            keeper.result()  # an unexpected error in a keeper is the supervisor's
        log.info("supervisor stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _keep(self, child: Child) -> None:
        """Run ``child``, restarting it after each death until the group stops."""
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        while not self.stopping:
            # Its own process group: a terminal's Ctrl-C reaches it once, through us.
            child.proc = await asyncio.create_subprocess_exec(
                *child.spec.argv, env=child.spec.env, process_group=0)
            child.started = loop.time()
            pid = child.proc.pid
            log.info("child started", nodename=child.nodename, pid=pid,
                     restarts=child.restarts)
            if self.stopping:  # the signal came while it was being started
                child.send(signal.SIGQUIT if self.cold else signal.SIGTERM)
            code = await child.proc.wait()
            uptime = loop.time() - child.started
            if self.on_exit is not None:
                self.on_exit(pid)
            fields = {"nodename": child.nodename, "pid": pid, "uptime": round(uptime, 3),
                      **describe_exit(code)}
            if self.stopping:
                log.info("child stopped", **fields)
                return
            if code == CONFIG_ERROR:
                log.error("child exited with a configuration error; stopping the group",
                          **fields)
                self.exit_code = CONFIG_ERROR
                self.request_stop()
                return
            restart = child.tracker.died(uptime)
            log.warning("child died; restarting", restart_in=round(restart.delay, 3), **fields)
            if restart.crash_loop_started:
                log.error("child crash loop: it keeps dying; restarts are spaced out",
                          nodename=child.nodename, deaths=restart.recent_deaths,
                          window=child.tracker.window, restart_in=round(restart.delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), restart.delay)
            if not self.stopping:
                child.restarts += 1
