"""Amazon SQS as Celery's kombu speaks it: ``sqs://`` URLs, its envelope, its queue names.

``config.py`` reads the URL and ``broker_transport_options``; ``envelope.py``
is the message format; ``batch.py`` the batched deletes and visibility
changes; ``broker.py`` the broker itself (polling, prefetch window,
visibility extension, FIFO groups).
"""

from __future__ import annotations

from .broker import SqsBroker, SqsDelivery
from .config import SqsConfig, parse

__all__ = ["SqsBroker", "SqsConfig", "SqsDelivery", "parse"]
