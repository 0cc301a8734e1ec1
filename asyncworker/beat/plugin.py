"""Beat as a built-in plugin: its settings section and ``worker --beat``.

Every App enables it, so ``timezone``, ``beat_schedule`` and the other
``[beat]`` keys are always valid settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..plugins import Plugin
from .settings import BeatSettings

if TYPE_CHECKING:
    from ..services import Service
    from ..worker.worker import Worker


class BeatPlugin(Plugin):
    """Adds the ``[beat]`` settings, and the scheduler service when ``worker_beat`` is on."""

    name = "beat"
    settings = BeatSettings

    def services(self, worker: Worker) -> Iterable[Service]:
        if not worker.settings.section(BeatSettings).worker_beat:
            return ()
        from .service import BeatService

        return (BeatService(),)
