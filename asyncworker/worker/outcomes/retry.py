"""Retries: ``autoretry_for`` turns a failure into a retry; a retry is published.

Before the store: a FAILURE whose exception the task autoretries becomes a
RETRY (Celery's backoff; see ``worker/retry.py``). After the store (RETRY is
stored first, so the next attempt, maybe due at once, cannot have its state
overwritten by this one's): the retry message is published, with confirms,
retrying the publish for ``task_publish_retry_timeout``. A retry that cannot
be published fails the task instead of losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from ...backends.base import format_traceback
from ...broker.base import Broker
from ...broker.topology import Topology
from ...logging import get_logger
from ...message import TaskMessage
from ...protocol import OutgoingMessage, encode
from ...task import reset_current_request, set_current_request
from ..job import FAILURE, RETRY, Job, Outcome
from ..retry import autoretry, next_attempt, retry_route
from . import OutcomeStep

log = get_logger("retry")

Publishing = Callable[[TaskMessage, str, str], contextlib.AbstractContextManager[object]]


class RetryStep(OutcomeStep):
    """Map autoretried failures to retries, and publish retries."""

    def __init__(self, broker: Broker, publish_timeout: float = 60.0,
                 publishing: Publishing | None = None, topology: Topology | None = None,
                 passive_declare: bool = False) -> None:
        self.broker = broker
        #: Routes a retry given its own ``queue`` / ``exchange`` / ``routing_key``.
        self.topology = topology
        self.passive_declare = passive_declare
        self.publish_timeout = publish_timeout
        #: ``App.publishing``: the app's publish wrappers (a tracing context) around it.
        self.publishing = publishing

    async def before_store(self, job: Job) -> None:
        outcome = job.outcome
        assert outcome is not None
        if outcome.kind != FAILURE or outcome.reason or not isinstance(outcome.exc, Exception):
            return
        assert job.task is not None and job.request is not None
        # Task.retry() reads self.request, as it does inside the task.
        token = set_current_request(job.request)
        try:
            retry = autoretry(job.task, job.request, outcome.exc)
        finally:
            reset_current_request(token)
        if retry is not None:
            job.outcome = Outcome(RETRY, exc=outcome.exc, traceback=outcome.traceback,
                                  retry=retry)

    async def after_store(self, job: Job) -> None:
        outcome = job.outcome
        assert outcome is not None
        if outcome.kind != RETRY or outcome.retry is None:
            return
        assert job.request is not None
        message = next_attempt(job.request, outcome.retry)
        exchange, routing_key, queue = retry_route(job.request, outcome.retry, self.topology)
        try:
            await self.broker.ensure_declared(queue, self.passive_declare)
            with (self.publishing(message, exchange, routing_key) if self.publishing
                  else contextlib.nullcontext()):
                await self._publish(exchange, routing_key, encode(message), job.request.id)
        except Exception as exc:
            # Could not schedule the retry: fail the task rather than lose it silently.
            job.outcome = Outcome(FAILURE, exc=exc, traceback=format_traceback(exc),
                                  reason="retry could not be published")

    async def _publish(self, exchange: str, routing_key: str, message: OutgoingMessage,
                       task_id: str) -> None:
        deadline = time.monotonic() + self.publish_timeout
        delay = 0.2
        while True:
            try:
                await self.broker.publish(exchange, routing_key, message)
                return
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("publish failed, retrying", task_id=task_id, error=repr(exc),
                            retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
