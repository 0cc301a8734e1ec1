"""Plugins: one object that adds a feature to an App and its workers.

A plugin may contribute any of: tasks and lifespan hooks (``install``), a
settings section (``settings``), hooks, admission and execution middleware,
outcome steps, services, control commands and command-line subcommands.
Enable one with ``app.use(MyPlugin())`` or list it in ``worker_plugins``
(``"package.module:MyPlugin"``). Everything it returns is built per worker,
from the running ``Worker`` (its settings, broker, backend, state).

Where contributions go: admission middleware run after the core gates and
before the global concurrency slot (a plugin gate holds no slot); execution
middleware run inside the time limit, around the body; outcome steps run
after the core ones; services start in their ``order``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    import argparse

    from .app import App
    from .hooks import WorkerHooks
    from .services import Service
    from .settings import Section
    from .worker.middleware import Middleware
    from .worker.outcomes import OutcomeStep
    from .worker.worker import Worker

#: A control command: ``async def command(worker, **arguments) -> reply``.
ControlCommand = Callable[..., Awaitable[Any]]


class CliCommand:
    """A ``python -m asyncworker <name>`` subcommand."""

    name: ClassVar[str]
    help: ClassVar[str] = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the subcommand's options."""

    def run(self, args: argparse.Namespace) -> int:
        """Run; returns the exit status."""
        raise NotImplementedError


class Plugin:
    """Base class: override what the plugin contributes."""

    #: A short name, for logs and the settings section.
    name: ClassVar[str] = "plugin"
    #: A dataclass of this plugin's settings (``settings.Section``), or None.
    settings: ClassVar[type[Section] | None] = None

    def install(self, app: App) -> None:
        """Register tasks, lifespan hooks, ... on the app (called once by ``app.use``)."""

    def hooks(self, worker: Worker) -> Iterable[WorkerHooks]:
        """Hook subscribers for this worker."""
        return ()

    def admission(self, worker: Worker) -> Iterable[Middleware]:
        """Admission middleware (before the global slot)."""
        return ()

    def execution(self, worker: Worker) -> Iterable[Middleware]:
        """Execution middleware (inside the time limit, around the body)."""
        return ()

    def outcome_steps(self, worker: Worker) -> Iterable[OutcomeStep]:
        """Outcome steps (after the core ones)."""
        return ()

    def services(self, worker: Worker) -> Iterable[Service]:
        """Services to start with the worker."""
        return ()

    def control_commands(self) -> Mapping[str, ControlCommand]:
        """Remote-control commands, by name."""
        return {}

    def cli_commands(self) -> Iterable[CliCommand]:
        """Command-line subcommands."""
        return ()


def import_object(spec: str, default_attr: str | None = None) -> Any:
    """Import ``package.module:attribute`` (``package.module`` alone: ``default_attr``)."""
    module_name, _, attr = spec.partition(":")
    attr = attr or default_attr or ""
    module = importlib.import_module(module_name)
    try:
        found = module
        for part in attr.split(".") if attr else ():
            found = getattr(found, part)
    except AttributeError:
        raise ImproperlyConfigured(f"{module_name!r} has no attribute {attr!r}") from None
    return found


def load_plugin(spec: str) -> Plugin:
    """The plugin ``module:attr`` names: a :class:`Plugin` subclass (built with no
    arguments) or an instance, as ``worker_plugins`` lists them."""
    try:
        found = import_object(spec)
    except ImportError as exc:
        raise ImproperlyConfigured(f"worker_plugins: cannot import {spec!r}: {exc}") from exc
    if isinstance(found, type) and issubclass(found, Plugin):
        found = found()
    if not isinstance(found, Plugin):
        raise ImproperlyConfigured(f"worker_plugins: {spec!r} is not an asyncworker Plugin")
    return found
