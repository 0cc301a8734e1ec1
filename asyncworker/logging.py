"""structlog set-up: readable on a terminal, JSON lines otherwise.

Every log call goes through ``redact`` so a URL with a password never reaches
the output, whatever field it sits in.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

_URL_WITH_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")


def redact_url(url: str) -> str:
    """``scheme://user:***@host/...``: the URL with its password hidden (each URL
    of a ``;``-joined failover list)."""
    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_WITH_PASSWORD.sub(r"\g<scheme>\g<user>:***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def redact_text(text: str) -> str:
    """Hide passwords of every URL inside free text."""
    return _URL_WITH_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[key] = redact_text(value)
    return event


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger once for the process."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info if not use_console else _identity,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (text and newline together): the processes of a group
        # (--processes, a container's log stream) share stderr, and a line written in
        # two pieces can interleave with another process's into unreadable lines.
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # Libraries log through the stdlib; keep them quiet unless something is wrong.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _identity(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


def get_logger(name: str) -> Any:
    """A structlog logger bound with the component name."""
    return structlog.get_logger(component=name)
