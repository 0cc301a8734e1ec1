"""Celery's monitoring events, so Flower and ``celery events`` see the worker.

``dispatcher.py`` queues and publishes events (batched, without confirms,
dropping under back-pressure); ``worker.py`` sends ``worker-online`` /
``-heartbeat`` / ``-offline``; ``tasks.py`` turns the task hooks into task
events; ``plugin.py`` ties them to a worker as a built-in plugin, with the
``[events]`` settings and the ``enable_events`` / ``disable_events`` commands.
"""

from .dispatcher import EventDispatcher
from .plugin import EventsPlugin
from .settings import EventsSettings

__all__ = ["EventDispatcher", "EventsPlugin", "EventsSettings"]
