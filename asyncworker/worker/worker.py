"""Worker lifecycle: connect, consume, and shut down warm or cold.

Warm shutdown (SIGTERM or the first SIGINT): stop consuming, requeue messages
not yet started, let running tasks finish for up to ``worker_shutdown_timeout``
seconds, flush results, then close. A second signal (or SIGQUIT, or the timeout)
makes it cold: running tasks are cancelled and their messages requeued or
published again (see ``Executor``), so no acked task is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import backends
from ..app import App
from ..broker.amqp import AmqpBroker
from ..control.pidbox import Mailbox
from ..logging import get_logger
from .consumer import Consumer
from .executor import Executor
from .hooks import HookSet, LogHooks, WorkerHooks

log = get_logger("worker")


async def _ping(**_: Any) -> dict[str, str]:
    return {"ok": "pong"}


async def _revoke(consumer: Consumer, task_id: str | list[str], terminate: bool = False,
                  signal: Any = None, **_: Any) -> dict[str, str]:
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    terminated = await consumer.revoke(ids, terminate)
    # Celery's reply text.
    return {"ok": f"tasks {', '.join(ids)} flagged as revoked"
            + (f"; terminated {', '.join(terminated)}" if terminated else "")}


class Worker:
    """One worker process's run loop."""

    def __init__(self, app: App, hooks: list[WorkerHooks] | None = None) -> None:
        self.app = app
        self.settings = app.settings
        self.hooks = HookSet([LogHooks(), *(hooks or [])])
        self._stop = asyncio.Event()
        self._cold = asyncio.Event()
        self.consumer: Consumer | None = None

    def request_stop(self, cold: bool = False) -> None:
        """Begin a warm shutdown; a second call (or ``cold``) makes it cold."""
        if self._stop.is_set() or cold:
            self._cold.set()
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, cold in ((signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGQUIT, True)):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, self._on_signal, sig, cold)

    def _on_signal(self, sig: signal.Signals, cold: bool) -> None:
        kind = "cold" if cold or self._stop.is_set() else "warm"
        log.warning("shutdown requested", signal=sig.name, kind=kind)
        self.request_stop(cold=cold)

    async def run(self) -> None:
        """Run until a shutdown is requested and completed."""
        s = self.settings
        for module in s.imports:
            importlib.import_module(module)
        if "pickle" in s.accept_content or "application/x-python-serialize" in s.accept_content:
            log.warning("pickle is accepted: any producer can run code in this worker")
        if s.result_serializer == "pickle":
            log.warning("results are pickled: anyone who can write the results table can run "
                        "code in every client that reads it")
        self._install_signals()
        broker = AmqpBroker(s.broker_url, s.broker_heartbeat, s.broker_connection_timeout,
                            connection_name=s.worker_nodename)
        backend = backends.create(s)
        threads = ThreadPoolExecutor(s.thread_pool_size(), thread_name_prefix="asyncworker-task")
        if backend is not None:
            await backend.setup()
        await broker.connect()
        self.app.use_connections(broker, backend)
        executor = Executor(backend, broker, threads, self.hooks, s.worker_nodename,
                            self.app.canvas, s.task_publish_retry_timeout,
                            s.task_dead_letter_on_failure)
        consumer = self.consumer = Consumer(self.app, s, broker, backend, executor, self.hooks)
        queues = self.app.topology.consume_from(s.worker_queues or None)
        try:
            # Lifespan hooks: shared resources exist before the first task and
            # are closed only after the last one has finished.
            async with self.app.running():
                await consumer.load_revoked()
                mailbox = Mailbox(broker, s.worker_nodename)
                mailbox.register("ping", _ping)
                mailbox.register("revoke", functools.partial(_revoke, consumer))
                await mailbox.start()
                await consumer.start(queues)
                log.info("worker ready", nodename=s.worker_nodename,
                         concurrency=s.worker_concurrency, prefetch=s.prefetch_count(),
                         queues=[q.name for q in queues], tasks=sorted(self.app.tasks),
                         backend=backend.describe() if backend else None)
                self.hooks.worker_ready(self)
                await self._stop.wait()
                self.hooks.worker_stopping(self, cold=self._cold.is_set())
                await consumer.stop_consuming()
                if not self._cold.is_set():
                    finished = await self._drain(consumer)
                    if not finished:
                        log.warning("tasks still running; cold shutdown",
                                    running=len(consumer.running))
                await consumer.cancel_running()
                await consumer.limits.close()
        finally:
            if backend is not None:
                await backend.close()
            await broker.close()
            threads.shutdown(wait=False, cancel_futures=True)
            log.info("worker stopped", nodename=s.worker_nodename)

    async def _drain(self, consumer: Consumer) -> bool:
        """Wait for running tasks until done, the timeout, or a second signal."""
        drain = asyncio.create_task(consumer.drain(self.settings.worker_shutdown_timeout))
        cold = asyncio.create_task(self._cold.wait())
        done, _ = await asyncio.wait({drain, cold}, return_when=asyncio.FIRST_COMPLETED)
        cold.cancel()
        if drain in done:
            return drain.result()
        drain.cancel()
        return False
