"""Retries: Celery's autoretry policy and the message a retry publishes."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from .. import protocol
from ..exceptions import Retry
from ..task import Request, Task

# Headers the protocol sets itself; everything else a producer added is kept.
_PROTOCOL_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "compression", "x-death",
})


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
    """The new message for a retry: same id, ``retries + 1``, embed and headers kept."""
    sig = retry.sig
    args = sig.get("args")
    kwargs = sig.get("kwargs")
    options: dict[str, Any] = sig.get("options") or {}
    eta = retry.when if isinstance(retry.when, datetime) else datetime.now(UTC)
    extra = {k: v for k, v in request.headers.items() if k not in _PROTOCOL_HEADERS}
    hard, soft = request.timelimit
    return protocol.encode_v2(
        request.task,
        request.args if args is None else list(args),
        request.kwargs if kwargs is None else dict(kwargs),
        task_id=request.id,
        eta=eta,
        expires=request.expires,
        retries=request.retries + 1,
        time_limit=options.get("time_limit", hard),
        soft_time_limit=options.get("soft_time_limit", soft),
        root_id=request.root_id,
        parent_id=request.parent_id,
        group=request.group,
        group_index=request.group_index,
        shadow=request.headers.get("shadow"),
        ignore_result=request.headers.get("ignore_result"),
        callbacks=request.callbacks,
        errbacks=request.errbacks,
        chain=request.chain,
        chord=request.chord,
        extra_headers=extra,
        priority=options.get("priority", request.delivery_info.get("priority")),
        reply_to=request.reply_to,
        origin_text=request.origin,
    )


def retry_route(request: Request) -> tuple[str, str]:
    """Where a retry goes: back through the exchange and routing key it came by."""
    return request.delivery_info.get("exchange") or "", request.delivery_info.get(
        "routing_key") or ""
