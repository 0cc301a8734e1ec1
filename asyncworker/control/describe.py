"""Plain-data descriptions of worker objects, shaped as Celery's inspect replies.

Pure functions of what they are given (a job, a queue, a URL, settings), so
the command modules stay short and these are tested alone: a request as
``inspect active`` lists it, a queue as kombu's ``Queue.as_dict``, the broker
as kombu's ``Connection.info()`` (never the password), ``rusage`` under
Celery's names, the configuration with credentials hidden.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..broker import urls
from ..broker.topology import QueueSpec
from ..logging import redact_url

if TYPE_CHECKING:
    from ..settings import Settings
    from ..worker.job import Job

_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379}


def request_info(job: Job, *, safe: bool = False) -> dict[str, Any]:
    """One task as ``inspect active`` / ``reserved`` list it (Celery's ``Request.info``)."""
    message, delivery = job.message, job.delivery
    args: Any = message.args if message is not None else []
    kwargs: Any = message.kwargs if message is not None else {}
    if safe and message is not None:
        args = message.headers.get("argsrepr", repr(args))
        kwargs = message.headers.get("kwargsrepr", repr(kwargs))
    request = job.request
    started = job.started is not None
    return {
        "id": job.id,
        "name": job.name,
        "args": args,
        "kwargs": kwargs,
        "type": job.name,
        "hostname": request.hostname if request is not None else None,
        "time_start": job.started,
        "acknowledged": delivery.settled,
        "delivery_info": {"exchange": delivery.exchange, "routing_key": delivery.routing_key,
                          "priority": delivery.priority, "redelivered": delivery.redelivered},
        # One process runs every task: a started task's "worker" is this one.
        "worker_pid": os.getpid() if started else None,
    }


def scheduled_info(job: Job) -> dict[str, Any]:
    """One task held for its ETA, as ``inspect scheduled`` lists it."""
    eta = job.message.eta if job.message is not None else None
    return {"eta": eta.isoformat() if eta is not None else None,
            "priority": job.delivery.priority or 0,
            "request": request_info(job)}


def queue_info(spec: QueueSpec) -> dict[str, Any]:
    """A consumed queue as ``inspect active_queues`` lists it (kombu's ``as_dict``)."""
    arguments = dict(spec.arguments)
    return {
        "name": spec.name,
        "exchange": {"name": spec.exchange.name, "type": spec.exchange.type,
                     "arguments": None, "durable": spec.exchange.durable, "passive": False,
                     "auto_delete": spec.exchange.auto_delete, "delivery_mode": None,
                     "no_declare": False},
        "routing_key": spec.routing_key,
        "queue_arguments": arguments or None,
        "binding_arguments": None,
        "consumer_arguments": None,
        "durable": spec.durable,
        "exclusive": spec.exclusive,
        "auto_delete": spec.auto_delete,
        "no_ack": False,
        "alias": None,
        "bindings": [],
        "no_declare": None,
        "expires": _seconds(arguments.get("x-expires")),
        "message_ttl": _seconds(arguments.get("x-message-ttl")),
        "max_length": arguments.get("x-max-length"),
        "max_length_bytes": arguments.get("x-max-length-bytes"),
        "max_priority": arguments.get("x-max-priority"),
    }


def _seconds(milliseconds: Any) -> float | None:
    return milliseconds / 1000.0 if isinstance(milliseconds, (int, float)) else None


def broker_info(url: str | list[str], settings: Settings,
                current: str | None = None) -> dict[str, Any]:
    """The broker connection as ``stats()['broker']`` gives it, without the password.

    ``url`` is ``broker_url`` (one URL or a failover list); ``current`` the URL of
    the node in use (default: the first). Like kombu's ``Connection.info()``,
    ``alternates`` lists every URL of a failover list (passwords hidden here).
    """
    every = urls.split(url)
    parts = urlsplit(current or every[0])
    transport = parts.scheme.split("+")[-1] or "amqp"
    if transport in ("pyamqp", "librabbitmq"):
        transport = "amqp"
    vhost = unquote(parts.path[1:]) if parts.path else ""
    try:
        port = parts.port
    except ValueError:
        port = None
    return {
        "hostname": parts.hostname,
        "userid": unquote(parts.username) if parts.username else None,
        "virtual_host": vhost or "/",
        "port": port or _DEFAULT_PORTS.get(transport),
        "insist": False,
        "ssl": transport in ("amqps", "rediss"),
        "transport": "amqp" if transport == "amqps" else transport,
        "connect_timeout": settings.broker_connection_timeout,
        "transport_options": {},
        "login_method": "PLAIN" if transport.startswith("amqp") else None,
        "uri_prefix": None,
        "heartbeat": float(settings.broker_heartbeat),
        "failover_strategy": settings.broker_failover_strategy,
        "alternates": [redact_url(u) for u in every] if len(every) > 1 else [],
        "credential_provider": None,
    }


def rusage() -> dict[str, Any]:
    """``resource.getrusage`` of this process under Celery's names."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {name: getattr(usage, f"ru_{name}") for name in (
        "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
        "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")}


def rss_megabytes() -> float:
    """This process's resident memory now, in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flat_settings(settings: Settings) -> dict[str, Any]:
    """Every setting by its flat name, credentials hidden (URL passwords, secrets)."""
    data = settings.as_dict(redact=True)
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if name in settings.sections and isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[name] = value
    return flat


def conf(settings: Settings, with_defaults: bool = False) -> dict[str, Any]:
    """``inspect conf``: the settings changed from their defaults (or all), JSON-safe."""
    current = flat_settings(settings)
    if not with_defaults:
        defaults = flat_settings(type(settings)().with_sections(
            type(section) for section in settings.sections.values()))
        current = {k: v for k, v in current.items() if k not in defaults or defaults[k] != v}
    return {k: jsonable(v) for k, v in current.items()}


def jsonable(value: Any) -> Any:
    """``value`` with anything JSON cannot carry replaced by its ``repr``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return repr(value)
