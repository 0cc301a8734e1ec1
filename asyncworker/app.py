"""The App: settings, the task registry, plugins and an async producer.

Everything a worker is made of beyond the core is registered here: tasks
(``@app.task``), lifespan hooks (``@app.lifespan``), hook subscribers
(``app.add_hooks``), remote-control commands (``@app.control_command``)
and plugins (``app.use``), which may bring all of these at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import types
from collections.abc import AsyncIterator, Callable
from typing import Any, overload

from . import broker as brokers
from . import protocol
from . import settings as settings_mod
from .backends import ResultBackend
from .backends import create as create_backend
from .beat.plugin import BeatPlugin
from .broker.base import Broker
from .broker.topology import Route, Topology
from .builtins import register_builtins
from .canvas import Canvas
from .control.commands import BUILTIN as BUILTIN_COMMANDS
from .events.plugin import EventsPlugin
from .hooks import HookSet, WorkerHooks
from .message import TaskMessage
from .monitoring import MonitoringPlugin
from .parked.plugin import ParkedPlugin
from .plugins import ControlCommand, Plugin, load_plugin
from .result import AsyncResult as ResultHandle
from .settings import Settings
from .task import Task, build_task
from .worker_lost.plugin import WorkerLostPlugin

Lifespan = Callable[["App"], AsyncIterator[None]]
#: Wraps the publish of one task message: ``wrapper(message, exchange, routing_key)``.
PublishWrapper = Callable[[TaskMessage, str, str], contextlib.AbstractContextManager[None]]


class App:
    """An asyncworker application: ``app = App("name")`` then ``@app.task``.

    Settings come from, lowest first: keyword arguments here, the TOML file,
    ``ASYNCWORKER_<NAME>`` environment variables, and ``configure(**overrides)``
    (the command line). The file is ``configure(config_file=...)`` (``--config``),
    else ``ASYNCWORKER_CONFIG``, else ``config_file`` here: a path or a package
    resource (``importlib.resources.files(pkg) / "x.toml"``). Plugins listed in
    ``worker_plugins`` are enabled when the settings are first read, before the
    keys of their sections are checked.
    """

    def __init__(self, main: str = "asyncworker", *,
                 config_file: settings_mod.ConfigFile | None = None, **settings: Any) -> None:
        self.main = main
        self.tasks: dict[str, Task] = {}
        self._code_settings = settings
        self._config_file = config_file
        self._config_override: settings_mod.ConfigFile | None = None
        self._overrides: dict[str, Any] = {}
        self._settings: Settings | None = None
        self._topology: Topology | None = None
        self._broker: Broker | None = None
        self._backend: ResultBackend | None = None
        self._owns_connections = True
        self._lock = asyncio.Lock()
        self.canvas = Canvas(self)
        #: Shared resources for tasks (clients, pools), set up by lifespan hooks.
        self.state = types.SimpleNamespace()
        self._lifespans: list[Lifespan] = []
        #: Enabled plugins, in the order they were added.
        self.plugins: list[Plugin] = []
        #: Hook subscribers every worker of this app gets (``task_sent`` fires here too).
        self.hooks = HookSet()
        #: Remote-control commands the mailbox answers, by name.
        self.control_commands: dict[str, ControlCommand] = dict(BUILTIN_COMMANDS)
        #: Wrappers around each message published on its own (see ``publishing``).
        self.publish_wrappers: list[PublishWrapper] = []
        register_builtins(self)
        self.use(BeatPlugin())  # built in: beat's settings are always valid
        self.use(EventsPlugin())  # built in: worker events always, task events on request
        self.use(MonitoringPlugin())  # built in: metrics and probes, off until a port is set
        self.use(WorkerLostPlugin())  # built in: late-ack tasks lost with their worker
        self.use(ParkedPlugin())  # built in: far-future tasks parked in the broker stay listed

    # -- extension points ---------------------------------------------------
    def use(self, plugin: Plugin) -> Plugin:
        """Enable ``plugin``: its tasks, settings, hooks, middleware, services, commands."""
        if any(type(p) is type(plugin) for p in self.plugins):
            return plugin
        self.plugins.append(plugin)
        plugin.install(self)
        self.control_commands.update(plugin.control_commands())
        self._settings = None  # its settings section joins the next load
        self._topology = None
        return plugin

    def add_hooks(self, hooks: WorkerHooks) -> None:
        """Subscribe ``hooks`` to every worker of this app (and to ``task_sent``)."""
        self.hooks.add(hooks)

    def publishing(self, message: TaskMessage, exchange: str,
                   routing_key: str) -> contextlib.ExitStack:
        """Enter every publish wrapper for ``message``; leave the returned stack once
        it is published (with the exception, if the publish failed).

        ``send_task`` and the worker's retries call this before encoding, so a
        wrapper may add headers to ``message.headers`` (a tracing context) and
        time the publish. Beat's repeated sends of one prepared message do not.
        """
        with contextlib.ExitStack() as stack:
            for wrap in self.publish_wrappers:
                stack.enter_context(wrap(message, exchange, routing_key))
            return stack.pop_all()

    def control_command(self, name: str) -> Callable[[ControlCommand], ControlCommand]:
        """Register ``async def command(worker, **arguments)`` as a remote-control command."""

        def register(command: ControlCommand) -> ControlCommand:
            self.control_commands[name] = command
            return command

        return register

    # -- settings ---------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The effective settings (loaded on first use).

        Two phases: the plugins named by ``worker_plugins`` (read alone from
        every source) are enabled first, then everything is read and checked
        with the sections of all enabled plugins known.
        """
        if self._settings is None:
            layers = self.settings_sources()
            for spec in settings_mod.core_value("worker_plugins", layers):
                self.use(load_plugin(spec))
            self._settings = settings_mod.resolve(layers, sections=self.settings_sections())
        return self._settings

    def settings_sources(self) -> list[settings_mod.Source]:
        """The layers above the defaults, lowest first: this App's arguments, the
        TOML file, the environment, ``configure`` overrides (read afresh)."""
        return [
            settings_mod.Source(f"App({self.main!r})", self._code_settings),
            *settings_mod.sources(self._config_override, self._overrides,
                                  default_config=self._config_file),
        ]

    def settings_sections(self) -> list[type[settings_mod.Section]]:
        """The settings sections the enabled plugins declare."""
        return [p.settings for p in self.plugins if p.settings is not None]

    @property
    def conf(self) -> Conf:
        """Celery's ``app.conf``: settings read and set in code.

        ``app.conf.beat_schedule = {...}`` and ``app.conf.update(timezone=...)``
        set values at the App's level (the TOML file, the environment and the
        command line still override them); ``app.conf.timezone`` reads the
        effective value.
        """
        return Conf(self)

    def set_code_settings(self, values: dict[str, Any]) -> None:
        """Set settings as if given to ``App(...)`` (checked when next read)."""
        self._code_settings = {**self._code_settings, **values}
        self._settings = None
        self._topology = None

    @property
    def topology(self) -> Topology:
        """Queues and routes derived from the settings."""
        if self._topology is None:
            self._topology = Topology(self.settings)
        return self._topology

    def configure(self, config_file: settings_mod.ConfigFile | None = None,
                  **overrides: Any) -> None:
        """Apply a config file (it replaces the app's own) and/or overrides on top."""
        if config_file:
            self._config_override = config_file
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
    def use_connections(self, broker: Broker, backend: ResultBackend | None) -> None:
        """Share a worker's connections (tasks that publish reuse them)."""
        self._broker, self._backend = broker, backend
        self._owns_connections = False

    async def get_broker(self) -> Broker:
        """The producer connection, opened on first use."""
        async with self._lock:
            if self._broker is None:
                broker = brokers.create(self.settings,
                                        connection_name=f"asyncworker producer {os.getpid()}")
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
        **options: Any,
    ) -> ResultHandle:
        """Publish a protocol-v2 task message (with publisher confirm), Celery-style.

        ``options`` are Celery's ``apply_async`` options: ``queue``,
        ``exchange``, ``routing_key`` and ``serializer`` say how it is
        published; the others (``task_id``, ``countdown``, ``eta``, ``expires``,
        ``priority``, ``headers``, ``time_limit``, ``link`` ...) make the
        message, as :meth:`TaskMessage.from_options
        <asyncworker.message.TaskMessage.from_options>` lists them. An unknown
        option raises ``TypeError``.
        """
        self.settings  # noqa: B018 - loads worker_plugins, which may add publish wrappers
        if not self.publish_wrappers:
            return await self.prepare(name, args, kwargs, **options).send()
        with contextlib.ExitStack() as around:
            return await self._prepare(name, args, kwargs, options, around).send()

    def prepare(self, name: str, args: tuple[Any, ...] | list[Any] = (),
                kwargs: dict[str, Any] | None = None, **options: Any) -> PreparedTask:
        """Build and route ``send_task``'s message once, to publish it under new task
        ids (what beat does for each tick of an entry).

        Time-dependent options (``countdown``, ``expires`` in seconds ...) are
        fixed now: prepare again when they should count from each publish.
        """
        return self._prepare(name, args, kwargs, options)

    def _prepare(self, name: str, args: tuple[Any, ...] | list[Any],
                 kwargs: dict[str, Any] | None, options: dict[str, Any],
                 around: contextlib.ExitStack | None = None) -> PreparedTask:
        """``prepare``; with ``around``, the publish wrappers are entered on it."""
        message = TaskMessage.from_options(name, args, kwargs, options)
        route = self._route(name, options)
        if message.priority is None:
            message.priority = self.settings.task_default_priority
        message.reply_to = _reply_to()
        if around is not None:
            around.enter_context(self.publishing(message, route.exchange, route.routing_key))
        outgoing = protocol.encode(message, options.get("serializer")
                                   or self.settings.task_serializer)
        return PreparedTask(self, route, outgoing, own_root=options.get("root_id") is None)

    async def declare_route(self, name: str, **options: Any) -> None:
        """Connect and declare where ``send_task(name, **options)`` publishes, ahead of
        a burst of such publishes."""
        broker = await self.get_broker()
        await broker.ensure_declared(self._route(name, options).queue,
                                     self.settings.broker_passive_declare)

    def _route(self, name: str, options: dict[str, Any]) -> Route:
        return self.topology.route(name, options.get("queue"), options.get("exchange"),
                                   options.get("routing_key"))


@dataclasses.dataclass(frozen=True)
class PreparedTask:
    """A routed, encoded task message, published by :meth:`send` (see ``App.prepare``)."""

    app: App
    route: Route
    message: protocol.OutgoingMessage
    #: The message starts its own workflow: its ``root_id`` is its id.
    own_root: bool

    async def send(self, task_id: str | None = None) -> ResultHandle:
        """Publish (with publisher confirm), as ``task_id`` if given."""
        app, route = self.app, self.route
        broker = await app.get_broker()
        await broker.ensure_declared(route.queue, app.settings.broker_passive_declare)
        if task_id is None:
            outgoing = self.message
            await broker.publish(route.exchange, route.routing_key, outgoing)
        else:
            await broker.publish_copy(route.exchange, route.routing_key, self.template, task_id)
            if not app.hooks.wants("task_sent"):
                return ResultHandle(task_id, app)
            outgoing = self.template.fill(task_id)
        app.hooks.task_sent(outgoing, route.exchange, route.routing_key)
        return ResultHandle(outgoing.correlation_id, app)

    async def encode(self) -> None:
        """Encode the message for ``send(task_id)`` now, not at the first send."""
        broker = await self.app.get_broker()
        broker.encode_template(self.template)

    @functools.cached_property
    def template(self) -> protocol.MessageTemplate:
        """The message with a placeholder for the task id, for ``send(task_id)``."""
        return protocol.MessageTemplate.of(self.message, self.own_root)


class Conf:
    """``app.conf``: attribute access to an App's settings, Celery-style."""

    __slots__ = ("_app",)

    def __init__(self, app: App) -> None:
        object.__setattr__(self, "_app", app)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._app.settings.value(name)
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._app.set_code_settings({name: value})

    def update(self, values: dict[str, Any] | None = None, /, **more: Any) -> None:
        """Set several settings at once."""
        self._app.set_code_settings({**(values or {}), **more})


_REPLY_TO = protocol.new_id()


def _reply_to() -> str:
    # Celery sets reply_to to a per-process id; clients use it for RPC results.
    return f"{_REPLY_TO}.{os.getpid()}"
