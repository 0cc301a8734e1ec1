"""Redis as the broker, in kombu's Redis transport format.

``redis://`` and ``rediss://`` name one server; ``sentinel://`` URLs (joined
by ``;``) name the sentinels of a master (``master_name`` option), as kombu
reads them.

A Celery client configured with ``broker_url = "redis://..."`` is served
unchanged, and Celery workers can consume the same queues: messages are
kombu's JSON envelopes (``envelope.py``) on one list per queue and priority
step, routed through kombu's binding tables (``keys.py``); delivered
messages sit in kombu's ``unacked`` hash and ``unacked_index`` sorted set
until settled (``broker.py``, with ``FETCH`` in ``scripts.py`` popping and
recording in one step); fanout exchanges are PUB/SUB channels
(``fanout.py``), which carries remote control.

Visibility (``visibility.py``): a message left unacked past
``visibility_timeout`` is restored to its queue by any consumer within
``unacked_restore_interval`` seconds (2 by default), under kombu's mutex.
Unlike Celery, an ETA or countdown longer than the timeout does not run the
task twice: the worker keeps every message it holds (waiting for its ETA, or
running) alive by re-scoring it in ``unacked_index`` every quarter of the
timeout. Nothing is parked (``can_park`` is False): held messages stay
unacked here, outside the prefetch window.
"""

from __future__ import annotations

from .broker import RedisBroker
from .config import RedisOptions, parse

__all__ = ["RedisBroker", "RedisOptions", "parse"]
