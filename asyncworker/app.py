"""The App: settings, the task registry and an async producer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import types
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from . import protocol
from . import settings as settings_mod
from .backends import ResultBackend
from .backends import create as create_backend
from .broker.amqp import AmqpBroker
from .broker.topology import Topology
from .builtins import register_builtins
from .canvas import Canvas
from .result import AsyncResult as ResultHandle
from .settings import Settings
from .task import Task, build_task

Lifespan = Callable[["App"], AsyncIterator[None]]


class App:
    """An asyncworker application: ``app = App("name")`` then ``@app.task``.

    Settings come from, lowest first: keyword arguments here, the TOML file
    (``config_file`` or ``ASYNCWORKER_CONFIG``), ``ASYNCWORKER_<NAME>``
    environment variables, and ``configure(**overrides)`` (the command line).
    """

    def __init__(self, main: str = "asyncworker", *, config_file: str | None = None,
                 **settings: Any) -> None:
        self.main = main
        self.tasks: dict[str, Task] = {}
        self._code_settings = settings
        self._config_file = config_file
        self._overrides: dict[str, Any] = {}
        self._settings: Settings | None = None
        self._topology: Topology | None = None
        self._broker: AmqpBroker | None = None
        self._backend: ResultBackend | None = None
        self._owns_connections = True
        self._lock = asyncio.Lock()
        self.canvas = Canvas(self)
        #: Shared resources for tasks (clients, pools), set up by lifespan hooks.
        self.state = types.SimpleNamespace()
        self._lifespans: list[Lifespan] = []
        register_builtins(self)

    # -- settings ---------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The effective settings (loaded on first use)."""
        if self._settings is None:
            base = Settings().with_updates(self._code_settings, f"App({self.main!r})")
            self._settings = settings_mod.load(self._config_file, self._overrides, base=base)
        return self._settings

    @property
    def topology(self) -> Topology:
        """Queues and routes derived from the settings."""
        if self._topology is None:
            self._topology = Topology(self.settings)
        return self._topology

    def configure(self, config_file: str | None = None, **overrides: Any) -> None:
        """Apply a config file and/or overrides on top of the current sources."""
        if config_file:
            self._config_file = config_file
        self._overrides.update({k: v for k, v in overrides.items() if v is not None})
        self._settings = None
        self._topology = None

    # -- tasks ------------------------------------------------------------
    def gen_task_name(self, fn: Callable[..., Any]) -> str:
        """Celery's default name: ``module.function`` (the app name for ``__main__``)."""
        module = fn.__module__
        if module == "__main__":
            module = self.main
        return f"{module}.{fn.__name__}"

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

    @overload
    def task(self, fn: None = None, /, **options: Any) -> Callable[[Callable[..., Any]], Task]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             base: type[Task] = Task, bind: bool = False,
             **options: Any) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register an ``async def`` or plain ``def`` as a task (Celery's options)."""

        def register(func: Callable[..., Any]) -> Task:
            task_name = name or self.gen_task_name(func)
            task = build_task(self, func, task_name, base=base, bind=bind, **options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    # -- lifespan -----------------------------------------------------------
    def lifespan(self, fn: Lifespan) -> Lifespan:
        """Register an async generator that sets up shared resources for tasks.

        The code before its ``yield`` runs when the worker starts, before the
        first message is consumed; the code after it runs at shutdown, once the
        tasks have finished. Store what tasks need on ``app.state``::

            @app.lifespan
            async def http_client(app):
                async with httpx.AsyncClient() as client:
                    app.state.http = client
                    yield

        Several hooks run in registration order and close in reverse.
        """
        self._lifespans.append(fn)
        return fn

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Enter every lifespan hook (the worker wraps its run in this)."""
        async with contextlib.AsyncExitStack() as stack:
            for hook in self._lifespans:
                await stack.enter_async_context(contextlib.asynccontextmanager(hook)(self))
            yield

    # -- connections ------------------------------------------------------
    def use_connections(self, broker: AmqpBroker, backend: ResultBackend | None) -> None:
        """Share a worker's connections (tasks that publish reuse them)."""
        self._broker, self._backend = broker, backend
        self._owns_connections = False

    async def get_broker(self) -> AmqpBroker:
        """The producer connection, opened on first use."""
        async with self._lock:
            if self._broker is None:
                s = self.settings
                broker = AmqpBroker(s.broker_url, s.broker_heartbeat, s.broker_connection_timeout)
                await broker.connect()
                self._broker = broker
            return self._broker

    async def get_backend(self) -> ResultBackend:
        """The result backend, connected on first use."""
        async with self._lock:
            if self._backend is None:
                backend = create_backend(self.settings)
                if backend is None:
                    raise RuntimeError("no result_backend is configured")
                await backend.setup()
                self._backend = backend
            return self._backend

    async def close(self) -> None:
        """Close connections this app opened itself."""
        if not self._owns_connections:
            return
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
        if self._broker is not None:
            await self._broker.close()
            self._broker = None

    # -- producer ---------------------------------------------------------
    def AsyncResult(self, task_id: str) -> ResultHandle:
        """A result handle for ``task_id``."""
        return ResultHandle(task_id, self)

    async def send_task(
        self,
        name: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        queue: str | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        ignore_result: bool | None = None,
        shadow: str | None = None,
        parent_id: str | None = None,
        root_id: str | None = None,
        group_id: str | None = None,
        group_index: int | None = None,
        retries: int = 0,
        link: list[dict[str, Any]] | dict[str, Any] | None = None,
        link_error: list[dict[str, Any]] | dict[str, Any] | None = None,
        chain: list[dict[str, Any]] | None = None,
        chord: dict[str, Any] | None = None,
        serializer: str | None = None,
    ) -> ResultHandle:
        """Publish a protocol-v2 task message (with publisher confirm), Celery-style."""
        now = datetime.now(UTC)
        if countdown is not None:
            eta = now + timedelta(seconds=countdown)
        if isinstance(expires, (int, float)):
            expires = now + timedelta(seconds=expires)
        route = self.topology.route(name, queue, exchange, routing_key)
        message = protocol.encode_v2(
            name, args, kwargs,
            task_id=task_id, eta=eta, expires=expires, retries=retries,
            time_limit=time_limit, soft_time_limit=soft_time_limit,
            root_id=root_id, parent_id=parent_id, group=group_id, group_index=group_index,
            shadow=shadow, ignore_result=ignore_result,
            callbacks=_as_list(link), errbacks=_as_list(link_error), chain=chain, chord=chord,
            extra_headers=headers,
            priority=priority if priority is not None else self.settings.task_default_priority,
            reply_to=_reply_to(),
            serializer=serializer or self.settings.task_serializer,
        )
        broker = await self.get_broker()
        await broker.ensure_declared(route.queue, self.settings.broker_passive_declare)
        await broker.publish(route.exchange, route.routing_key, message)
        return ResultHandle(message.correlation_id, self)


def _as_list(value: list[dict[str, Any]] | dict[str, Any] | None) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    return [value] if isinstance(value, dict) else list(value)


_REPLY_TO = protocol.new_id()


def _reply_to() -> str:
    # Celery sets reply_to to a per-process id; clients use it for RPC results.
    return f"{_REPLY_TO}.{os.getpid()}"
