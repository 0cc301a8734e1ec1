"""Beat's settings, under Celery's names where Celery has one.

``timezone``, ``enable_utc`` and ``beat_schedule`` are Celery's. The others
say how replicas coordinate: how late a tick may still fire, when a claimed
but unpublished tick is taken over, and how often the entries table is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..exceptions import ImproperlyConfigured
from ..settings import Section


@dataclass(slots=True)
class BeatSettings(Section):
    """The ``[beat]`` section (its keys may also be written at the top level)."""

    section: ClassVar[str] = "beat"

    #: IANA name crontabs are evaluated in. Unset: UTC, or the host's zone
    #: when ``enable_utc`` is false (Celery's rule).
    timezone: str | None = None
    enable_utc: bool = True
    #: Entries by name: ``task``, ``schedule``, ``args``, ``kwargs``, ``options``.
    beat_schedule: dict[str, Any] = field(default_factory=dict)
    #: A tick this many seconds late still fires; older missed ticks coalesce into one run.
    beat_misfire_grace_time: float = 60.0
    #: A claimed tick still unpublished after this many seconds is published by another replica.
    beat_claim_timeout: float = 5.0
    #: How often (seconds) the entries table is checked for changes.
    beat_sync_every: float = 2.0
    #: Where ticks are claimed: a PostgreSQL or Redis URL. Unset: the result backend.
    beat_store: str | None = None
    #: Run a scheduler inside the worker (``worker --beat``; development).
    worker_beat: bool = False

    def tz(self) -> tzinfo:
        """The timezone crontabs are evaluated in."""
        if self.timezone:
            try:
                return ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ImproperlyConfigured(f"unknown timezone {self.timezone!r}") from exc
        if self.enable_utc:
            return ZoneInfo("UTC")
        from tzlocal import get_localzone

        return get_localzone()
