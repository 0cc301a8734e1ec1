"""Worker lifecycle: assemble the parts, consume, and shut down warm or cold.

``run`` reads top to bottom: connect the broker and the result backend, build
the state, hooks, executor and the two middleware chains (``_assemble``),
enter the app's lifespan hooks, start services (the control mailbox first),
consume, and on a signal stop in reverse.

Warm shutdown (SIGTERM or the first SIGINT): stop consuming, requeue messages
not yet started, let running tasks finish for up to ``worker_shutdown_timeout``
seconds, flush results, then close. A second signal (or SIGQUIT, or the timeout)
makes it cold: running tasks are cancelled and their messages requeued or
published again (see ``Executor``), so no acked task is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import backends
from .. import broker as brokers
from ..app import App
from ..backends.base import ResultBackend
from ..backends.errors import retry_transient
from ..backoff import BackoffPolicy, Outage
from ..broker.base import Broker
from ..control.pidbox import Mailbox
from ..deadletter import DeadLetters
from ..hooks import HookSet, WorkerHooks, log_hooks
from ..logging import get_logger
from ..services import Service
from .admission.caps import Caps
from .admission.dedupe import Dedupe
from .admission.eta import Eta
from .admission.expires import Expires
from .admission.ratelimit import RateLimit
from .admission.revoked import Revoked
from .admission.slot import Slot
from .admission.stale import Stale
from .consumer import Consumer
from .execution.body import Body
from .execution.request import CurrentRequest
from .execution.timelimit import TimeLimit
from .executor import Executor
from .guards import guard_timers
from .heap import freeze_startup_heap
from .limits import Limits
from .middleware import Middleware, compose
from .outcomes import OutcomeStep
from .outcomes.canvas import CanvasStep
from .outcomes.deadletter import DeadLetterFailures
from .outcomes.handlers import TaskHandlers
from .outcomes.retry import RetryStep
from .state import WorkerState

log = get_logger("worker")


class Worker:
    """One worker process: its parts, and the run loop that drives them.

    ``broker`` and ``backend`` may be given (tests pass in-memory ones);
    otherwise they come from ``broker_url`` and ``result_backend``.
    """

    def __init__(self, app: App, hooks: list[WorkerHooks] | None = None, *,
                 broker: Broker | None = None, backend: ResultBackend | None = None,
                 install_signals: bool = True) -> None:
        self.app = app
        self.settings = app.settings
        s = self.settings
        self.broker = broker or brokers.create(s, connection_name=s.worker_nodename)
        self.backend = backend if backend is not None else backends.create(s)
        self.state = WorkerState()
        self.hooks = HookSet([self.state, log_hooks(s.worker_log_level), *app.hooks.hooks,
                              *(hooks or [])])
        self.threads = ThreadPoolExecutor(s.thread_pool_size(),
                                          thread_name_prefix="asyncworker-task")
        self.limits = Limits(s)
        self.executor = Executor(self.backend, self.broker, self.hooks, self.state,
                                 s.worker_nodename, DeadLetters(self.broker, app.topology, s))
        self.services: list[Service] = []
        self.consumer = self._assemble()
        self.ready = asyncio.Event()
        self._install_signals = install_signals
        self._stop = asyncio.Event()
        self._cold = asyncio.Event()

    def _assemble(self) -> Consumer:
        """Build the admission and execution chains, outcome steps and services."""
        s, state, executor = self.settings, self.state, self.executor
        finish = executor.finish
        plugins = self.app.plugins
        for plugin in plugins:
            for hook in plugin.hooks(self):
                self.hooks.add(hook)
        admission: list[Middleware] = [
            Revoked(state, finish),
            Expires(finish),
            Dedupe(state, self.backend, finish),
            Eta(state, self.broker, s.worker_eta_hold_limit, self.app.topology, self.hooks),
            RateLimit(self.limits),
        ]
        if self.limits.has_caps():
            admission.append(Caps(self.limits))
        for plugin in plugins:
            admission.extend(plugin.admission(self))
        # Once a slot is held: drop what the broker took back, and check
        # revocation and expiry again just before running, as Celery does.
        self.slot = Slot(s.worker_concurrency)
        admission += [self.slot, Stale(finish), Revoked(state, finish), Expires(finish)]
        execution: list[Middleware] = [TimeLimit(self.limits)]
        for plugin in plugins:
            execution.extend(plugin.execution(self))
        execution.append(CurrentRequest())
        executor.run = compose(execution, Body(self.threads))
        steps: list[OutcomeStep] = [
            RetryStep(self.broker, s.task_publish_retry_timeout, self.app.publishing,
                      self.app.topology, s.broker_passive_declare),
            TaskHandlers(),
            CanvasStep(self.app.canvas, store_failures=self.backend is not None),
        ]
        for plugin in plugins:
            steps.extend(plugin.outcome_steps(self))
        if s.task_dead_letter_on_failure:
            steps.append(DeadLetterFailures(executor))
        executor.steps = steps
        self.services = [Mailbox()]
        for plugin in plugins:
            self.services.extend(plugin.services(self))
        self.services.sort(key=lambda service: service.order)
        return Consumer(self.app, s, self.broker, executor, state, self.hooks,
                        compose(admission, executor.execute))

    # -- changed while running (remote control) ---------------------------------
    @property
    def concurrency(self) -> int:
        """Tasks allowed to run at once, now."""
        return self.slot.concurrency

    def prefetch_count(self) -> int:
        """The prefetch window for the current concurrency, as Celery computes it."""
        return max(0, self.concurrency * self.settings.worker_prefetch_multiplier)

    async def resize(self, concurrency: int) -> None:
        """Run at most ``concurrency`` tasks at once, prefetching in proportion."""
        before = self.prefetch_count()
        self.slot.resize(concurrency)
        await self.broker.change_prefetch(self.prefetch_count() - before)
        log.info("concurrency changed", concurrency=concurrency, prefetch=self.prefetch_count())

    # -- signals ---------------------------------------------------------------
    def request_stop(self, cold: bool = False) -> None:
        """Begin a warm shutdown; a second call (or ``cold``) makes it cold."""
        if self._stop.is_set() or cold:
            self._cold.set()
        self._stop.set()

    def _on_signal(self, sig: signal.Signals, cold: bool) -> None:
        kind = "cold" if cold or self._stop.is_set() else "warm"
        log.warning("shutdown requested", signal=sig.name, kind=kind)
        self.request_stop(cold=cold)

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, cold in ((signal.SIGTERM, False), (signal.SIGINT, False),
                          (signal.SIGQUIT, True)):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, self._on_signal, sig, cold)

    # -- the run loop ------------------------------------------------------------
    async def run(self) -> None:
        """Run until a shutdown is requested and completed."""
        s, app, consumer = self.settings, self.app, self.consumer
        for module in s.imports:
            importlib.import_module(module)
        if "pickle" in s.accept_content or "application/x-python-serialize" in s.accept_content:
            log.warning("pickle is accepted: any producer can run code in this worker")
        if s.result_serializer == "pickle":
            log.warning("results are pickled: anyone who can write the results table can run "
                        "code in every client that reads it")
        if self._install_signals:
            self._signals()
        guard_timers(asyncio.get_running_loop())  # a task's sleep(nan) must not stall us
        # Connecting waits out an outage; a shutdown signal ends the wait.
        if not await self._unless_stopped(self._connect()):
            log.info("worker stopped before connecting", nodename=s.worker_nodename)
            if self.backend is not None:
                await self.backend.close()
            await self.broker.close()
            self.threads.shutdown(wait=False, cancel_futures=True)
            return
        app.use_connections(self.broker, self.backend)
        queues = app.topology.consume_from(s.worker_queues or None)
        started: list[Service] = []
        try:
            # Lifespan hooks: shared resources exist before the first task and
            # are closed only after the last one has finished.
            async with app.running():
                await self._restore_revoked()
                for service in self.services:
                    started.append(service)
                    await service.start(self)
                if self._install_signals and s.worker_gc_freeze:
                    log.debug("start-up heap frozen", objects=freeze_startup_heap())
                await consumer.start(queues)
                log.info("worker ready", nodename=s.worker_nodename,
                         concurrency=s.worker_concurrency, prefetch=s.prefetch_count(),
                         queues=[q.name for q in queues], tasks=sorted(app.tasks),
                         backend=self.backend.describe() if self.backend else None)
                self.hooks.worker_ready(self)
                self.ready.set()
                await self._stop.wait()
                self.hooks.worker_stopping(self, cold=self._cold.is_set())
                await consumer.stop_consuming()
                if not self._cold.is_set() and not await self._drain():
                    log.warning("tasks still running; cold shutdown",
                                running=len(self.state.active))
                await consumer.cancel_running()
        finally:
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception as exc:
                    log.error("service failed to stop", service=service.name, error=repr(exc))
            await self.limits.close()
            if self.backend is not None:
                await self.backend.close()
            await self.broker.close()
            self.threads.shutdown(wait=False, cancel_futures=True)
            log.info("worker stopped", nodename=s.worker_nodename)

    async def _connect(self) -> None:
        if self.backend is not None:
            await self.backend.setup()
        await self.broker.connect()

    async def _unless_stopped(self, step: Coroutine[Any, Any, None]) -> bool:
        """Run ``step`` to its end (True), or cancel it on a shutdown request (False)."""
        work = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if work.done():
            work.result()
            return True
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return False

    async def _restore_revoked(self) -> None:
        """Revoked ids persisted by earlier runs (Celery forgets them on restart)."""
        if self.backend is None:
            return
        revoked, backend = self.state.revoked, self.backend
        outage = Outage("result backend", backend.describe(),
                        BackoffPolicy.from_settings(self.settings), log)
        try:
            loaded = await retry_transient(
                lambda: backend.load_revoked(time.time() - revoked.ttl), outage)
            for task_id, when in loaded:
                revoked.add(task_id, when)
        except Exception as exc:
            log.warning("could not load revoked ids", error=repr(exc))

    async def _drain(self) -> bool:
        """Wait for running tasks until done, the timeout, or a second signal."""
        drain = asyncio.create_task(self.consumer.drain(self.settings.worker_shutdown_timeout))
        cold = asyncio.create_task(self._cold.wait())
        done, _ = await asyncio.wait({drain, cold}, return_when=asyncio.FIRST_COMPLETED)
        cold.cancel()
        if drain in done:
            return drain.result()
        drain.cancel()
        return False
