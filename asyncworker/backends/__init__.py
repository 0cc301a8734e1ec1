"""Result backends. ``create`` picks one from a ``result_backend`` URL."""

from __future__ import annotations

from ..exceptions import ImproperlyConfigured
from ..settings import Settings
from .base import ResultBackend, StoredResult, TaskOutcome

__all__ = ["ResultBackend", "StoredResult", "TaskOutcome", "create", "normalize_url"]

_MEMORY: dict[str, ResultBackend] = {}


def normalize_url(url: str) -> tuple[str, str]:
    """(kind, url for the driver): accepts Celery's ``db+postgresql+driver://`` forms."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ImproperlyConfigured(f"result_backend is not a URL: {scheme!r}")
    scheme = scheme.removeprefix("db+")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return "postgresql", f"postgresql://{rest}"
    if base in ("redis", "rediss"):
        return "redis", f"{base}://{rest}"
    if base == "memory":
        return "memory", url
    raise ImproperlyConfigured(f"unsupported result_backend scheme {scheme!r}")


def create(settings: Settings) -> ResultBackend | None:
    """The backend ``settings.result_backend`` names, or None when results are off."""
    if not settings.result_backend:
        return None
    kind, url = normalize_url(settings.result_backend)
    if kind == "memory":
        from .memory import MemoryBackend

        # Shared by URL within a process, like memory:// brokers.
        return _MEMORY.setdefault(url, MemoryBackend(settings.result_serializer))
    if kind == "postgresql":
        from .postgres import PostgresBackend

        return PostgresBackend(url, settings)
    from .redis import RedisBackend

    return RedisBackend(url, settings)
