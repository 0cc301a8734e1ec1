"""Typed settings under Celery's names, read from TOML and the environment.

Precedence, lowest first: defaults here, the TOML file, ``ASYNCWORKER_<NAME>``
environment variables, then explicit overrides (command-line options).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ImproperlyConfigured

ENV_PREFIX = "ASYNCWORKER_"


def default_nodename() -> str:
    """``asyncworker@<host>``, unique enough for one worker per host."""
    return f"asyncworker@{socket.gethostname()}"


@dataclass(slots=True)
class Settings:
    """Worker and client settings. Names and meanings follow Celery's."""

    # Broker and backend.
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    broker_heartbeat: int = 60
    broker_connection_timeout: float = 10.0
    result_backend: str | None = None
    result_backend_pool_size: int = 10
    result_extended: bool = False
    result_serializer: str = "json"
    result_expires: int = 86400
    result_batch_size: int = 500
    database_table_names: dict[str, str] = field(default_factory=dict)
    database_table_schemas: dict[str, str] = field(default_factory=dict)
    database_create_tables_at_setup: bool = True

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

    # Worker.
    imports: list[str] = field(default_factory=list)
    worker_concurrency: int = 100
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

    # The vision pipeline tasks: S3 storage and an OpenAI-compatible API.
    # Credentials left unset fall back to the usual AWS / OPENAI_API_KEY sources.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "growbin-images"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 30.0
    s3_max_attempts: int = 3
    gpt_base_url: str = "https://api.openai.com/v1"
    gpt_api_key: str | None = None
    gpt_model: str = "gpt-5"
    gpt_connect_timeout: float = 5.0
    gpt_timeout: float = 60.0
    gpt_max_retries: int = 5
    gpt_retry_backoff_max: float = 60.0
    gpt_image_mode: str = "data_url"

    @classmethod
    def field_names(cls) -> list[str]:
        """All setting names."""
        return [f.name for f in dataclasses.fields(cls)]

    def with_updates(self, updates: Mapping[str, Any], source: str) -> Settings:
        """A copy with ``updates`` applied, each value checked against its type."""
        hints = typing.get_type_hints(Settings)
        known = set(self.field_names())
        values: dict[str, Any] = {}
        for key, raw in updates.items():
            if key not in known:
                raise ImproperlyConfigured(f"unknown setting {key!r} in {source}")
            values[key] = coerce(raw, hints[key], f"{key} (from {source})")
        return dataclasses.replace(self, **values)

    def thread_pool_size(self) -> int:
        """Threads for plain ``def`` tasks: bounded so blocking code cannot swamp the host."""
        if self.worker_thread_pool_size:
            return self.worker_thread_pool_size
        return max(1, min(self.worker_concurrency, 32))

    def prefetch_count(self) -> int:
        """basic.qos prefetch: concurrency x multiplier, as Celery computes it."""
        return max(0, self.worker_concurrency * self.worker_prefetch_multiplier)


def coerce(value: Any, hint: Any, what: str) -> Any:
    """Convert a TOML or environment value to the type a setting declares."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        empty = value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))
        if empty and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], what)
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


def from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``ASYNCWORKER_<NAME>`` variables that name a setting."""
    names = set(Settings.field_names())
    found = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX):].lower()
            if name in names:
                found[name] = value
    return found


def load(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Settings | None = None,
) -> Settings:
    """Build settings: ``base`` (defaults or the app's own), TOML file, environment, overrides."""
    settings = base or Settings()
    env = os.environ if environ is None else environ
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ImproperlyConfigured(f"cannot read config file {path}: {exc}") from exc
        settings = settings.with_updates(data, str(path))
    settings = settings.with_updates(from_env(env), "environment")
    if overrides:
        settings = settings.with_updates(
            {k: v for k, v in overrides.items() if v is not None}, "command line"
        )
    return settings
