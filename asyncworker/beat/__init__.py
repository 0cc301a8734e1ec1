"""Periodic jobs: ``python -m asyncworker beat``, Celery's ``beat_schedule`` on asyncio.

- :mod:`.settings`: the ``[beat]`` settings (``timezone``, ``beat_schedule``, ...).
- :mod:`.entries`: entries (checked when read) and ticks (task id = uuid5 of
  entry and fire time).
- :mod:`.store`: how replicas agree on who publishes a tick (PostgreSQL,
  Redis, or one process).
- :mod:`.scheduler`: the loop.
- :mod:`.service` and :mod:`.plugin`: ``worker --beat``, and how beat joins
  every App; :mod:`.cli`: the ``beat`` subcommand.

The schedules themselves are :mod:`asyncworker.schedules`.
"""

from .entries import Entry, Tick, tick_id
from .scheduler import Beat
from .settings import BeatSettings

__all__ = ["Beat", "BeatSettings", "Entry", "Tick", "tick_id"]
