"""Typed settings under Celery's names, read from TOML and the environment.

Precedence, lowest first: defaults here, the App's keyword arguments, the TOML
file, ``ASYNCWORKER_<NAME>`` environment variables, then explicit overrides
(command-line options). Each layer is a :class:`Source`; :func:`resolve`
applies them in order, checking every value against the type its setting
declares.

Settings come in sections. :class:`Settings` holds the core's, under Celery's
names. A plugin declares its own keys as a :class:`Section` dataclass
(``Plugin.settings``) and reads them back typed with
``app.settings.section(MySection)``. A section's keys share one flat namespace
with the core's, so ``s3_bucket = ...`` at the top of a file and
``ASYNCWORKER_S3_BUCKET`` work as they always did; in a file they may also be
grouped under the section's own table (``[vision]``). A key that neither the
core nor a registered section declares is an error (in a file, in the App's
arguments, on the command line); in the environment, which holds other
programs' variables too, it is ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .exceptions import ImproperlyConfigured
from .logging import redact_url

ENV_PREFIX = "ASYNCWORKER_"
#: The variable naming the TOML file when ``--config`` does not.
CONFIG_ENV = ENV_PREFIX + "CONFIG"

#: A TOML file: a path, or a package resource (``importlib.resources.files(pkg) / "x.toml"``).
ConfigFile = str | os.PathLike[str] | Traversable

#: Field metadata marking a credential: :meth:`Settings.as_dict` shows it as ``***``.
SECRET: Mapping[str, Any] = types.MappingProxyType({"secret": True})
_NOT_A_SETTING: Mapping[str, Any] = types.MappingProxyType({"setting": False})

S = TypeVar("S", bound="Section")


def default_nodename() -> str:
    """``asyncworker@<host>``, unique enough for one worker per host."""
    return f"asyncworker@{socket.gethostname()}"


@dataclass(slots=True)
class Section:
    """A plugin's settings: subclass as a dataclass whose fields are its keys.

    ``section`` names the TOML table the keys may be grouped under. Field names
    must be unique across the core and every other section (checked when the
    section is registered), since they are also read as flat keys. Mark
    credentials with ``field(default=None, metadata=SECRET)``::

        @dataclass(slots=True)
        class CacheSettings(Section):
            section: ClassVar[str] = "cache"
            cache_url: str = "redis://127.0.0.1:6379/1"
            cache_ttl: float = 60.0
    """

    section: ClassVar[str]


@dataclass(slots=True)
class Settings:
    """Worker and client settings. Names and meanings follow Celery's."""

    # Broker and backend.
    #: One URL, or a failover list (``;``-joined, or a list): ``broker/urls.py``.
    broker_url: str | list[str] = "amqp://guest:guest@127.0.0.1:5672//"
    broker_failover_strategy: str = "round-robin"
    broker_heartbeat: int = 60
    broker_connection_timeout: float = 10.0
    #: Celery's per-transport options (``visibility_timeout``, ``region``, ...);
    #: each transport checks its own names (``broker/options.py``).
    broker_transport_options: dict[str, Any] = field(default_factory=dict)
    result_backend: str | None = None
    result_backend_pool_size: int = 10
    result_extended: bool = False
    result_serializer: str = "json"
    result_expires: int = 86400
    result_batch_size: int = 500
    #: A finished task's result may wait this share of the task's run time,
    #: at most ``result_batch_linger_max`` seconds, to share a write with
    #: others (``backends/batching.py``); 0 writes each as soon as possible.
    result_batch_linger_ratio: float = 0.02
    result_batch_linger_max: float = 0.02
    database_table_names: dict[str, str] = field(default_factory=dict)
    database_table_schemas: dict[str, str] = field(default_factory=dict)
    database_create_tables_at_setup: bool = True
    # Reconnecting to the broker and the result backend: backoff bounds
    # (seconds), and how long an outage lasts before it is logged as an ERROR.
    worker_reconnect_min_interval: float = 0.1
    worker_reconnect_max_interval: float = 10.0
    worker_outage_error_after: float = 30.0

    # Messages.
    task_serializer: str = "json"
    accept_content: list[str] = field(default_factory=lambda: ["json"])

    # Topology.
    task_default_queue: str = "celery"
    task_default_exchange: str | None = None
    task_default_exchange_type: str = "direct"
    task_default_routing_key: str | None = None
    task_default_queue_type: str = "classic"
    task_create_missing_queues: bool = True
    task_queue_max_priority: int | None = None
    task_default_priority: int | None = None
    task_queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_routes: dict[str, Any] = field(default_factory=dict)
    broker_passive_declare: bool = False

    # Task defaults.
    task_acks_late: bool = False
    task_acks_on_failure_or_timeout: bool = True
    task_reject_on_worker_lost: bool = False
    task_track_started: bool = False
    task_ignore_result: bool = False
    task_store_errors_even_if_ignored: bool = False
    task_time_limit: float | None = None
    task_soft_time_limit: float | None = None
    task_publish_retry_timeout: float = 60.0
    task_default_rate_limit: str | None = None
    task_dead_letter: bool = True
    task_dead_letter_suffix: str = ".dlq"
    task_dead_letter_on_failure: bool = False
    #: Accept NaN and Infinity in JSON task messages (not JSON; refused by default).
    task_json_allow_nan: bool = False

    # Worker.
    imports: list[str] = field(default_factory=list)
    worker_concurrency: int = 100
    #: Worker processes under one supervisor (``worker --processes``): a number or "auto"
    #: (one per CPU). 1: this process is the worker, with no supervisor.
    worker_processes: int | str = 1
    worker_prefetch_multiplier: int = 4
    worker_thread_pool_size: int | None = None
    worker_shutdown_timeout: float = 60.0
    worker_nodename: str = field(default_factory=default_nodename)
    worker_queues: list[str] = field(default_factory=list)
    worker_task_concurrency: dict[str, int] = field(default_factory=dict)
    worker_queue_concurrency: dict[str, int] = field(default_factory=dict)
    worker_global_rate_limits: dict[str, str] = field(default_factory=dict)
    worker_rate_limit_redis_url: str | None = None
    worker_log_level: str = "INFO"
    worker_log_format: str = "auto"
    worker_event_loop: str = "asyncio"
    #: Freeze the start-up heap before consuming (``worker/heap.py``): the
    #: garbage collector's full passes then skip what lives as long as the process.
    worker_gc_freeze: bool = True
    worker_plugins: list[str] = field(default_factory=list)
    #: Remote control may stop the worker, terminate tasks, resize it, change its
    #: queues and limits (False: only inspect and plain revoke are answered).
    worker_control_allow_destructive: bool = True
    #: Longest an ETA message is held unacked (seconds); one due later is parked
    #: in a RabbitMQ delay queue until then (None: hold every ETA, as Celery).
    #: Keep it well below RabbitMQ's consumer_timeout (30 min by default).
    worker_eta_hold_limit: float | None = 600.0

    #: Each registered section's values, by section name (not a setting itself).
    sections: dict[str, Section] = field(default_factory=dict, repr=False,
                                         metadata=_NOT_A_SETTING)

    @classmethod
    def field_names(cls) -> list[str]:
        """The core setting names (sections' keys not included)."""
        return _setting_names(cls)

    def names(self) -> list[str]:
        """Every setting name: the core's, then each registered section's."""
        return list(self._owners())

    def section(self, kind: type[S]) -> S:
        """The values of section ``kind`` (its plugin must be enabled)."""
        found = self.sections.get(kind.section)
        if not isinstance(found, kind):
            raise ImproperlyConfigured(
                f"no settings section {kind.section!r}: enable the plugin that declares it")
        return found

    def value(self, name: str) -> Any:
        """A setting by its flat name, the core's or a section's (``KeyError`` if unknown)."""
        owner = self._owners()[name]
        return getattr(self if owner is None else self.sections[owner], name)

    def with_sections(self, kinds: Iterable[type[Section]]) -> Settings:
        """A copy that also knows ``kinds``, each at its defaults unless already present."""
        sections = dict(self.sections)
        for kind in kinds:
            name = getattr(kind, "section", "")
            present = sections.get(name)
            if present is not None:
                if type(present) is not kind:
                    raise ImproperlyConfigured(
                        f"settings section {name!r} is declared by both "
                        f"{type(present).__qualname__} and {kind.__qualname__}")
                continue
            if not name:
                raise ImproperlyConfigured(f"settings section {kind.__qualname__} has no name")
            taken = self._owners(sections).keys() | sections.keys()
            clashes = sorted({name, *_setting_names(kind)} & taken)
            if clashes:
                raise ImproperlyConfigured(
                    f"settings section {name!r} ({kind.__qualname__}) reuses names the core "
                    f"or another section already has: {clashes}")
            sections[name] = kind()
        return dataclasses.replace(self, sections=sections)

    def with_updates(self, updates: Mapping[str, Any], source: str) -> Settings:
        """A copy with ``updates`` applied, each value checked against its type.

        Keys are flat setting names, or a section's name with a table of its keys.
        """
        owners = self._owners()
        core: dict[str, Any] = {}
        # (section, how its keys were written: "" flat or "name." in its table) -> values
        grouped: dict[tuple[str, str], dict[str, Any]] = {}
        for key, raw in updates.items():
            if key in self.sections:
                if not isinstance(raw, Mapping):
                    raise ImproperlyConfigured(
                        f"invalid value {raw!r} for {key} (from {source}): "
                        f"a table of the {key!r} section's settings")
                grouped.setdefault((key, f"{key}."), {}).update(raw)
            elif key not in owners:
                raise ImproperlyConfigured(f"unknown setting {key!r} in {source}")
            elif owners[key] is None:
                core[key] = raw
            else:
                grouped.setdefault((str(owners[key]), ""), {})[key] = raw
        updated = _replaced(self, core, source)
        if grouped:
            sections = dict(self.sections)
            for (name, prefix), values in sorted(grouped.items()):  # flat keys, then the table
                sections[name] = _replaced(sections[name], values, source, prefix)
            updated = dataclasses.replace(updated, sections=sections)
        return updated

    def as_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """Plain data, each section as a table: what ``asyncworker config`` prints.

        With ``redact``, passwords in URLs and ``SECRET`` fields are hidden.
        """
        data = _values(self, redact)
        for name, section in self.sections.items():
            data[name] = _values(section, redact)
        return data

    def thread_pool_size(self) -> int:
        """Threads for plain ``def`` tasks: bounded so blocking code cannot swamp the host."""
        if self.worker_thread_pool_size:
            return self.worker_thread_pool_size
        return max(1, min(self.worker_concurrency, 32))

    def prefetch_count(self) -> int:
        """basic.qos prefetch: concurrency x multiplier, as Celery computes it."""
        return max(0, self.worker_concurrency * self.worker_prefetch_multiplier)

    def _owners(self, sections: Mapping[str, Section] | None = None) -> dict[str, str | None]:
        """Flat name -> the section declaring it (None: the core)."""
        owners: dict[str, str | None] = dict.fromkeys(_setting_names(Settings))
        for name, section in (self.sections if sections is None else sections).items():
            owners.update(dict.fromkeys(_setting_names(type(section)), name))
        return owners


def _setting_names(kind: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(kind) if f.metadata.get("setting", True)]


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(kind: type[Any]) -> dict[str, Any]:
    """The resolved annotations of a settings dataclass (cached: they are costly)."""
    if kind not in _HINTS:
        _HINTS[kind] = typing.get_type_hints(kind)
    return _HINTS[kind]


D = TypeVar("D")


def _replaced(obj: D, updates: Mapping[str, Any], source: str, prefix: str = "") -> D:
    """A copy of the settings dataclass ``obj`` with ``updates`` checked and applied."""
    if not updates:
        return obj
    kind: type[Any] = type(obj)
    known = _setting_names(kind)
    values: dict[str, Any] = {}
    for key, raw in updates.items():
        if key not in known:
            raise ImproperlyConfigured(f"unknown setting {prefix + key!r} in {source}")
        values[key] = coerce(raw, _hints(kind)[key], f"{prefix}{key} (from {source})")
    return dataclasses.replace(obj, **values)  # type: ignore[type-var]


def _values(obj: Any, redact: bool) -> dict[str, Any]:
    """One settings dataclass's values, credentials hidden if ``redact``."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.metadata.get("setting", True):
            continue
        value = getattr(obj, f.name)
        if redact and f.metadata.get("secret") and value:
            value = "***"
        data[f.name] = _redacted(value) if redact else value
    return data


def _redacted(value: Any) -> Any:
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def coerce(value: Any, hint: Any, what: str) -> Any:
    """Convert a TOML or environment value to the type a setting declares."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        empty = value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))
        if empty and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for alternative in inner[:-1]:  # the first type the value fits (str | list[str], int | str)
            try:
                return coerce(value, alternative, what)
            except ImproperlyConfigured:
                continue
        return coerce(value, inner[-1], what)
    target = origin or hint
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if target is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if target is float:
            return float(value)
        if target is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if target is list:
            if isinstance(value, str):
                text = value.strip()
                value = json.loads(text) if text.startswith("[") else [
                    v.strip() for v in text.split(",") if v.strip()
                ]
            if not isinstance(value, list):
                raise ValueError(value)
            return value
        if target is dict:
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"invalid value {value!r} for {what}") from exc
    return value


@dataclass(frozen=True, slots=True)
class Source:
    """One layer of raw settings, named for error messages."""

    name: str
    values: Mapping[str, Any]
    #: Skip names that are not settings (the environment holds other programs' variables).
    lenient: bool = False


def from_env(environ: Mapping[str, str], names: Iterable[str] | None = None) -> dict[str, str]:
    """The ``ASYNCWORKER_<NAME>`` variables by lower-case name (only ``names``, if given)."""
    known = None if names is None else set(names)
    found = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX):].lower()
            if known is None or name in known:
                found[name] = value
    return found


def read_config(path: ConfigFile) -> Source:
    """The TOML file at ``path`` (a file path or a package resource)."""
    try:
        if isinstance(path, (str, os.PathLike)):
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ImproperlyConfigured(f"cannot read config file {path}: {exc}") from exc
    return Source(str(path), data)


def sources(
    config_file: ConfigFile | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    default_config: ConfigFile | None = None,
) -> list[Source]:
    """The layers above the defaults, lowest first: TOML file, environment, overrides.

    The file is ``config_file``, else ``ASYNCWORKER_CONFIG``, else ``default_config``
    (an App's own file); None values in ``overrides`` are left out.
    """
    env = os.environ if environ is None else environ
    layers = []
    path = config_file or env.get(CONFIG_ENV) or default_config
    if path:
        layers.append(read_config(path))
    layers.append(Source("environment", from_env(env), lenient=True))
    if overrides:
        layers.append(Source("command line", {k: v for k, v in overrides.items() if v is not None}))
    return layers


def resolve(layers: Iterable[Source], base: Settings | None = None,
            sections: Iterable[type[Section]] = ()) -> Settings:
    """Apply ``layers`` in order on ``base`` (default: the defaults), knowing ``sections``."""
    settings = (base or Settings()).with_sections(sections)
    for layer in layers:
        values = layer.values
        if layer.lenient:
            known = set(settings.names())
            values = {k: v for k, v in values.items() if k in known}
        settings = settings.with_updates(values, layer.name)
    return settings


def core_value(name: str, layers: Iterable[Source], base: Settings | None = None) -> Any:
    """One core setting across ``layers`` (the last that sets it wins), checked.

    The rest is not read: ``worker_plugins`` must be known before the sections
    its plugins declare, and so before the keys of those sections can be checked.
    """
    value = getattr(base or Settings(), name)
    for layer in layers:
        if name in layer.values:
            value = coerce(layer.values[name], _hints(Settings)[name],
                           f"{name} (from {layer.name})")
    return value


def load(
    config_file: ConfigFile | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Settings | None = None,
    sections: Iterable[type[Section]] = (),
) -> Settings:
    """Build settings: ``base`` (defaults or the app's own), TOML file, environment, overrides."""
    return resolve(sources(config_file, overrides, environ), base, sections)
