"""Retries: Celery's autoretry policy and the message a retry publishes."""

from __future__ import annotations

import random

from .. import protocol
from ..broker.topology import QueueSpec, Topology
from ..exceptions import Retry
from ..task import Request, Task


def backoff_countdown(factor: float | bool, retries: int, maximum: float,
                      jitter: bool) -> float:
    """Celery's exponential backoff: ``min(max, factor * 2**retries)``, then full jitter."""
    base = int(max(1.0, float(factor)))
    countdown = min(maximum, base * (2 ** retries))
    if jitter:
        countdown = random.randrange(int(countdown) + 1)
    return max(0.0, float(countdown))


def autoretry(task: Task, request: Request, exc: Exception) -> Retry | None:
    """The Retry that ``autoretry_for`` asks for, or None (the failure stands).

    When retries are used up, ``Task.retry`` raises ``exc`` again and this
    returns None, so the task fails with its own exception, as in Celery.
    """
    if not task.autoretry_for or not isinstance(exc, task.autoretry_for):
        return None
    if task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for):
        return None
    options = dict(task.retry_kwargs)
    if task.retry_backoff:
        options["countdown"] = backoff_countdown(task.retry_backoff, request.retries,
                                                 task.retry_backoff_max, task.retry_jitter)
    try:
        task.retry(exc=exc, **options)
    except Retry as retry:
        return retry
    except BaseException as again:
        if again is exc:
            return None
        raise
    return None  # pragma: no cover - retry() always raises


def retry_message(request: Request, retry: Retry) -> protocol.OutgoingMessage:
    """The new message for a retry, encoded (see ``next_attempt``)."""
    return protocol.encode(next_attempt(request, retry))


def next_attempt(request: Request, retry: Retry) -> protocol.TaskMessage:
    """The new message for a retry: same id, ``retries + 1``, embed and headers kept."""
    message = request.next_retry(retry)
    # What the message said, not the worker's resolved choice.
    message.ignore_result = bool(request.headers.get("ignore_result"))
    return message


def retry_route(request: Request, retry: Retry | None = None,
                topology: Topology | None = None) -> tuple[str, str, QueueSpec | None]:
    """Where a retry goes: to the queue ``self.retry(queue=...)`` names, as in Celery;
    otherwise back through the exchange and routing key it came by (Celery too
    puts the delivery's own exchange and routing key over any others given).
    The queue to declare first comes third (None: nothing to declare)."""
    options = (retry.sig.get("options") or {}) if retry is not None else {}
    queue = options.get("queue")
    if topology is not None and queue:
        route = topology.route(request.task, queue)
        return route.exchange, route.routing_key, route.queue
    return (request.delivery_info.get("exchange") or "",
            request.delivery_info.get("routing_key") or "", None)
