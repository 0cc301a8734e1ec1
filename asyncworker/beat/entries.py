"""Schedule entries and their ticks.

An :class:`Entry` is one line of ``beat_schedule`` (or a row of the entries
table): a task, a schedule, and the ``args``, ``kwargs`` and ``options`` it is
sent with. A :class:`Tick` is one fire of an entry, named by the entry and the
scheduled time; its task id is derived from both, so every replica that
publishes a tick publishes the same message.

Entries are checked when they are read, never guessed at: an unknown key, a
bad schedule, an option ``send_task`` does not know or a task no route can
place raises :class:`~asyncworker.exceptions.ImproperlyConfigured` naming the
entry.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import schedules
from ..broker.topology import Topology
from ..exceptions import ImproperlyConfigured
from ..message import OPTIONS

if TYPE_CHECKING:
    from ..app import App

#: uuid5 namespace of tick task ids (fixed: ids must agree across versions and replicas).
TICK_NAMESPACE = uuid.UUID("5b0c4a53-8f6e-5b8e-9d43-6a8f0c2e7b11")

_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})
# Celery's own beat adds this header to every message it sends.
BEAT_HEADER = "celery_beat_task"


@dataclass(frozen=True, slots=True)
class Entry:
    """One periodic job."""

    name: str
    task: str
    schedule: schedules.BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: "settings" (read-only at run time) or "database".
    source: str = "settings"
    enabled: bool = True

    @classmethod
    def from_config(cls, name: str, config: Any, app: App, source: str = "settings",
                    topology: Topology | None = None) -> Entry:
        """Read and check one ``beat_schedule`` entry (Celery's shape) for ``app``.

        The route is checked as the message will be sent: ``options``, else the
        task's own ``queue`` when ``app`` has the task, else ``task_routes`` and
        the default queue.
        """
        try:
            if not isinstance(config, Mapping):
                raise ImproperlyConfigured(f"must be a table, not {config!r}")
            unknown = sorted(set(config) - _KEYS)
            if unknown:
                raise ImproperlyConfigured(
                    f"unknown key(s) {unknown}; an entry has {sorted(_KEYS)}")
            task = config.get("task")
            if not isinstance(task, str) or not task:
                raise ImproperlyConfigured(f"'task' must be a task name, not {task!r}")
            if "schedule" not in config:
                raise ImproperlyConfigured("'schedule' is missing")
            schedule = schedules.parse(config["schedule"])
            relative = config.get("relative", False)
            if not isinstance(relative, bool):
                raise ImproperlyConfigured(f"'relative' must be true or false, not {relative!r}")
            if relative and isinstance(schedule, schedules.schedule):
                schedule = schedules.schedule(schedule.run_every, relative=True)
            args = _typed(config, "args", (list, tuple), "a list", ())
            kwargs = _typed(config, "kwargs", Mapping, "a table", {})
            options = dict(_typed(config, "options", Mapping, "a table", {}))
            bad = sorted(set(options) - (OPTIONS - {"task_id"}))
            if bad:
                raise ImproperlyConfigured(
                    f"unknown option(s) {bad} (task_id is set per tick)")
            # A scratch topology: routing may create a missing queue's declaration,
            # which must not join the queues a worker consumes.
            route = (topology or Topology(app.settings)).route(task, *routing(task, options,
                                                                               app))
            if not route.exchange and not route.routing_key:
                raise ImproperlyConfigured(f"no route places task {task!r} on a queue")
        except ImproperlyConfigured as exc:
            raise ImproperlyConfigured(f"beat_schedule entry {name!r}: {exc}") from None
        return cls(name, task, schedule, tuple(args), dict(kwargs), options, source)

    def describe(self) -> dict[str, Any]:
        """The entry as TOML/JSON-able data (what ``beat entries list`` prints)."""
        return {"entry": self.name, "task": self.task, "schedule": self.schedule.describe(),
                "args": list(self.args), "kwargs": dict(self.kwargs),
                "options": dict(self.options), "source": self.source, "enabled": self.enabled}

    def same_job(self, other: Entry) -> bool:
        """Whether ``other`` sends the same message on the same schedule."""
        return self.describe() == other.describe()


@dataclass(frozen=True)
class Tick:
    """One fire of an entry: the entry's name and the scheduled time (UTC)."""

    entry: str
    fire_time: datetime

    @functools.cached_property
    def task_id(self) -> str:
        """uuid5 of (entry, fire time): a repeated publish is recognisable downstream."""
        return tick_id(self.entry, self.fire_time)


def tick_id(entry: str, fire_time: datetime) -> str:
    """The task id of ``entry``'s tick at ``fire_time``."""
    return str(uuid.uuid5(TICK_NAMESPACE, f"{entry}@{fire_time.astimezone(UTC).isoformat()}"))


def load(schedule: Mapping[str, Any], app: App) -> dict[str, Entry]:
    """Every entry of a ``beat_schedule`` setting, checked."""
    topology = Topology(app.settings)
    return {name: Entry.from_config(name, config, app, topology=topology)
            for name, config in schedule.items()}


def routing(task: str, options: Mapping[str, Any],
            app: App) -> tuple[str | None, str | None, str | None]:
    """The (queue, exchange, routing_key) a tick of ``task`` is sent with: the
    ``options``, else the task's own ``queue`` when ``app`` has the task."""
    queue, exchange, key = options.get("queue"), options.get("exchange"), options.get(
        "routing_key")
    registered = app.tasks.get(task)
    if registered is not None and registered.queue and (queue, exchange, key) == (None,) * 3:
        queue = registered.queue
    return queue, exchange, key


def _typed(config: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str,
           default: Any) -> Any:
    """``config[key]`` if it is of ``kind`` (absent or None: ``default``)."""
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ImproperlyConfigured(f"{key!r} must be {what}, not {value!r}")
    return value
