"""Test helpers for asyncworker apps: an in-process worker, and eager ``apply``.

Unit tests need no RabbitMQ or database: ``run_worker`` runs the real worker
(the same admission and execution chains, outcome steps and hooks) in the
test's event loop, on an in-memory broker and result backend::

    from asyncworker.testing import run_worker

    async def test_add():
        async with run_worker(app) as worker:
            result = await add.delay(2, 3)
            assert await worker.result(result.id) == 5

With pytest, ``from asyncworker.testing import worker`` in a ``conftest.py``
gives a ``worker`` fixture for the app that an ``asyncworker_app`` fixture
returns. ``apply`` runs one task in place, as Celery's ``task.apply()`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from . import states
from .app import App
from .backends.base import StoredResult
from .backends.memory import MemoryBackend
from .broker.base import Delivery
from .broker.memory import MemoryBroker
from .exceptions import Retry
from .hooks import WorkerHooks
from .result import exception_from_meta
from .task import Request, Task
from .worker.execution.body import Body
from .worker.execution.request import CurrentRequest
from .worker.execution.timelimit import TimeLimit
from .worker.job import Job
from .worker.middleware import compose
from .worker.worker import Worker

__all__ = ["EagerResult", "MemoryBackend", "MemoryBroker", "TestWorker", "apply",
           "run_worker", "worker"]

_names = itertools.count(1)


class TestWorker:
    """A running in-process worker, with what tests want to look at."""

    __test__ = False  # not a pytest test class

    def __init__(self, worker: Worker, broker: MemoryBroker, backend: MemoryBackend) -> None:
        self.worker = worker
        self.broker = broker
        self.backend = backend
        self.state = worker.state

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll ``predicate`` on the loop until it is truthy (AssertionError on timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s")
            await asyncio.sleep(0.001)

    async def stored(self, task_id: str, timeout: float = 5.0) -> StoredResult:
        """The final stored state of ``task_id``, once there is one."""
        found: StoredResult = await self.wait_for(
            lambda: _ready(self.backend.results.get(task_id)), timeout)
        return found

    async def result(self, task_id: str, timeout: float = 5.0) -> Any:
        """The task's return value; its exception is raised, as ``AsyncResult.get()`` does."""
        stored: StoredResult = await self.stored(task_id, timeout)
        if stored.state == states.SUCCESS:
            return stored.result
        raise exception_from_meta(stored.result)

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until no job is held: all received messages have been settled."""
        await self.wait_for(lambda: not self.worker.consumer.handlers, timeout)


def _ready(stored: StoredResult | None) -> StoredResult | None:
    return stored if stored is not None and stored.state in states.READY_STATES else None


@contextlib.asynccontextmanager
async def run_worker(app: App, hooks: list[WorkerHooks] | None = None,
                     **settings: Any) -> AsyncIterator[TestWorker]:
    """Run ``app``'s worker in this loop on a fresh in-memory broker and backend.

    ``settings`` override the app's (``worker_concurrency=2``, ...). The app's
    producer (``task.delay``, ``app.send_task``) publishes to the same broker.
    On exit the worker shuts down warm, as on SIGTERM.
    """
    url = f"memory://test-{next(_names)}"
    app.configure(broker_url=url, result_backend=url, **settings)
    broker = MemoryBroker()
    backend = MemoryBackend(app.settings.result_serializer)
    worker = Worker(app, hooks, broker=broker, backend=backend, install_signals=False)
    running = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        ready.cancel()
        running.result()  # raises the start-up error
    try:
        yield TestWorker(worker, broker, backend)
    finally:
        worker.request_stop()
        await running


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is a test dependency only
    pass
else:

    @pytest.fixture
    async def worker(asyncworker_app: App) -> AsyncIterator[TestWorker]:
        """An in-process worker for the app the ``asyncworker_app`` fixture returns."""
        async with run_worker(asyncworker_app) as running:
            yield running


# -- eager apply -------------------------------------------------------------------
@dataclass(slots=True)
class EagerResult:
    """What ``apply`` returns: Celery's ``EagerResult`` in small."""

    id: str
    state: str
    result: Any
    retries: int = 0

    def get(self) -> Any:
        """The value, or the task's exception raised."""
        if self.state == states.SUCCESS:
            return self.result
        raise self.result

    def successful(self) -> bool:
        """Whether the task returned."""
        return self.state == states.SUCCESS


class _EagerDelivery(Delivery):
    __slots__ = ()
    body = b""
    headers: dict[str, Any] = {}
    content_type = content_encoding = correlation_id = reply_to = None
    priority = None
    exchange = routing_key = ""
    redelivered = False

    async def _settle(self, ack: bool, requeue: bool) -> bool:
        return True


async def apply(task: Task, args: list[Any] | tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None, *, task_id: str | None = None,
                retries: int = 0, throw: bool = False) -> EagerResult:
    """Run ``task`` here and now, through the worker's execution chain.

    Time limits and ``self.request`` work as in a worker; ``self.retry()``
    runs the task again at once (up to its ``max_retries``), as Celery's
    eager mode does. Nothing is published or stored. With ``throw`` the
    task's exception is raised instead of returned in the result.
    """
    request = Request.eager(task.name, list(args), dict(kwargs or {}), task_id=task_id,
                            retries=retries)
    run = compose([TimeLimit(), CurrentRequest()], Body(_threads()))
    while True:
        job = Job(_EagerDelivery("eager"), task=task, request=request)
        try:
            await run(job)
        except Retry as retry:
            request = request.next_retry(retry)
            continue
        except Exception as exc:
            if throw:
                raise
            return EagerResult(request.id, states.FAILURE, exc, request.retries)
        assert job.outcome is not None
        return EagerResult(request.id, states.SUCCESS, job.outcome.value, request.retries)


_pool: Any = None


def _threads() -> Any:
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(4, thread_name_prefix="asyncworker-eager")
    return _pool
