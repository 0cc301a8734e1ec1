"""Message brokers behind one interface (``base.py``): AMQP, Redis, SQS, and memory for tests.

``create`` picks the transport from ``broker_url`` (one URL or a failover list,
``urls.py``); ``topology.py`` says what to declare and where each task is
routed, for every transport alike.
"""

from __future__ import annotations

from ..backoff import BackoffPolicy
from ..exceptions import ImproperlyConfigured
from ..settings import Settings
from . import urls
from .base import Broker, Delivery

__all__ = ["Broker", "Delivery", "create"]

# memory:// brokers are shared by URL within a process, so a producer and an
# in-process worker configured alike meet on the same queues.
_MEMORY: dict[str, Broker] = {}


def create(settings: Settings, connection_name: str | None = None) -> Broker:
    """The broker ``settings.broker_url`` names (not yet connected)."""
    every = urls.split(settings.broker_url)
    url = every[0]
    schemes = {u.partition("://")[0].split("+")[-1] for u in every}
    scheme = url.partition("://")[0].split("+")[-1]
    if schemes <= {"amqp", "amqps", "pyamqp", "librabbitmq"}:
        from . import options
        from .amqp import TRANSPORT_OPTIONS, AmqpBroker

        options.read(settings.broker_transport_options, TRANSPORT_OPTIONS, "amqp")
        return AmqpBroker(every, settings.broker_heartbeat, settings.broker_connection_timeout,
                          connection_name=connection_name,
                          policy=BackoffPolicy.from_settings(settings),
                          strategy=settings.broker_failover_strategy)
    if len(schemes) > 1:
        raise ImproperlyConfigured("broker_url: every URL of a failover list must use the "
                                   f"same transport, not {sorted(schemes)}")
    if scheme in ("redis", "rediss", "sentinel"):
        from . import redis

        return redis.RedisBroker(redis.parse(every, settings.broker_transport_options,
                                             settings.broker_connection_timeout),
                                 policy=BackoffPolicy.from_settings(settings))
    if scheme == "sqs":
        if len(every) > 1:
            raise ImproperlyConfigured("broker_url: SQS takes one URL, not a failover list")
        from . import sqs

        return sqs.SqsBroker(sqs.parse(url, settings.broker_transport_options),
                             policy=BackoffPolicy.from_settings(settings))
    if scheme == "memory":
        from .memory import MemoryBroker

        return _MEMORY.setdefault(url, MemoryBroker())
    raise ImproperlyConfigured(f"unsupported broker_url scheme {scheme!r}")
