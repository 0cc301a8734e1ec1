"""Run one task and settle its message: call, store the outcome, ack or reject.

Ack policy, as Celery's: without ``acks_late`` the message is acked when the
task starts; with it, after the outcome is stored (so a crash before the write
means redelivery, never a lost result). A task cancelled by a cold shutdown is
not lost either: a late-ack message is requeued, and an early-acked one is
published again before the worker exits (Celery loses those).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from .. import states
from ..backends.base import (
    ResultBackend,
    ResultEncodeError,
    TaskOutcome,
    exception_to_meta,
    format_traceback,
)
from ..broker.amqp import AmqpBroker, settle
from ..canvas import Canvas
from ..deadletter import DeadLetters
from ..exceptions import Ignore, Reject, Retry, TaskRevokedError
from ..logging import get_logger
from ..protocol import OutgoingMessage
from ..task import Request, Task, set_current_request
from . import timelimits
from .hooks import WorkerHooks
from .retry import autoretry, retry_message, retry_route

log = get_logger("executor")


class Delivery:
    """A received message, the queue it came from, and whether it is settled."""

    __slots__ = ("dead_letters", "message", "queue", "settled")

    def __init__(self, message: AbstractIncomingMessage, queue: str | None = None,
                 dead_letters: DeadLetters | None = None) -> None:
        self.message = message
        self.queue = queue
        self.dead_letters = dead_letters
        self.settled = False

    async def dead_letter(self, task_id: str | None, reason: str,
                          exc: BaseException | None = None) -> None:
        """Reject for good; the message is kept in a dead-letter queue."""
        if self.settled:
            # Acked early, then refused by the task: keep a copy all the same.
            if self.dead_letters is not None and self.queue:
                try:
                    await self.dead_letters.copy(self.message, self.queue, reason, exc)
                except Exception as err:
                    log.error("could not keep dead letter", task_id=task_id, error=repr(err))
            return
        self.settled = True
        if self.dead_letters is None:
            await settle(self.message, "reject", requeue=False, task_id=task_id)
        else:
            await self.dead_letters.reject(self.message, self.queue, reason, exc)

    async def ack(self, task_id: str | None) -> None:
        """Ack once; later calls do nothing."""
        if not self.settled:
            self.settled = True
            await settle(self.message, "ack", task_id=task_id)

    async def reject(self, task_id: str | None, requeue: bool) -> None:
        """Reject once (dead-lettered by the broker when not requeued)."""
        if not self.settled:
            self.settled = True
            await settle(self.message, "reject", requeue=requeue, task_id=task_id)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class Executor:
    """Runs tasks; one instance per worker."""

    def __init__(
        self,
        backend: ResultBackend | None,
        broker: AmqpBroker,
        threads: ThreadPoolExecutor,
        hooks: WorkerHooks,
        hostname: str,
        canvas: Canvas,
        publish_timeout: float = 60.0,
        dead_letter_failures: bool = False,
    ) -> None:
        self.dead_letter_failures = dead_letter_failures
        self.canvas = canvas
        self.backend = backend
        self.broker = broker
        self.threads = threads
        self.hooks = hooks
        self.hostname = hostname
        self.publish_timeout = publish_timeout

    async def store(self, outcome: TaskOutcome) -> bool:
        """Store an outcome; on an unencodable value store the encoding error instead."""
        if self.backend is None:
            return True
        try:
            await self.backend.store(outcome)
        except ResultEncodeError as exc:
            log.error("result not encodable; storing the error", task_id=outcome.task_id,
                      error=str(exc))
            await self.backend.store(
                TaskOutcome(outcome.task_id, states.FAILURE, exception_to_meta(exc),
                            format_traceback(exc), outcome.request)
            )
        except Exception as exc:
            log.error("result could not be stored", task_id=outcome.task_id,
                      state=outcome.state, error=repr(exc))
            return False
        return True

    async def _call(self, task: Task, request: Request) -> Any:
        # The message's [hard, soft] header wins over task options and settings.
        hard = request.timelimit[0] if request.timelimit[0] is not None else task.option(
            "time_limit")
        soft = request.timelimit[1] if request.timelimit[1] is not None else task.option(
            "soft_time_limit")
        if task.is_async:
            return await timelimits.run_coroutine(
                task.run(*request.args, **request.kwargs), soft, hard)
        # Plain functions run in the bounded thread pool, with self.request visible.
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, task.run, *request.args, **request.kwargs)
        return await timelimits.run_in_thread(self.threads, call, soft, hard)

    async def execute(self, task: Task, request: Request, delivery: Delivery) -> None:
        """Run ``task`` for ``request`` and settle ``delivery`` by the ack policy."""
        acks_late = bool(task.option("acks_late"))
        if not acks_late:
            await delivery.ack(request.id)
        self.hooks.task_started(request)
        if task.option("track_started") and not request.ignore_result:
            await self.store(TaskOutcome(request.id, states.STARTED,
                                         {"pid": os.getpid(), "hostname": self.hostname},
                                         None, request))
        token = set_current_request(request)
        started = time.monotonic()
        try:
            result = await self._call(task, request)
        except asyncio.CancelledError:
            if request.terminated:
                # Revoked with terminate=True: a final REVOKED, not a requeue.
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await self.revoke(request, delivery, "terminated")
                return
            await asyncio.shield(self._on_cancelled(request, delivery, acks_late))
            raise
        except Ignore:
            await delivery.ack(request.id)
        except Retry as exc:
            await self._on_retry(task, request, delivery, exc)
        except Reject as exc:
            if exc.requeue:
                await delivery.reject(request.id, requeue=True)
            else:
                await delivery.dead_letter(request.id, f"task raised Reject({exc.reason!r})",
                                           exc)
            self.hooks.task_rejected(request.id, f"task raised Reject({exc.reason!r})",
                                     exc.requeue)
        except Exception as exc:
            retry = autoretry(task, request, exc)
            if retry is not None:
                await self._on_retry(task, request, delivery, retry)
            else:
                await self._on_failure(task, request, delivery, exc,
                                       time.monotonic() - started)
        else:
            await self._on_success(task, request, delivery, result, time.monotonic() - started)
        finally:
            _reset(token)

    async def _on_success(self, task: Task, request: Request, delivery: Delivery,
                          result: Any, runtime: float) -> None:
        await self._hook(task.on_success, request, result, request.id, request.args,
                         request.kwargs)
        # Celery dispatches callbacks and the next chain step before storing.
        children = None
        if request.callbacks or request.chain:
            children = await self.canvas_step(self.canvas.on_success(request, result), request)
        stored = True
        if not request.ignore_result:
            stored = await self.store(TaskOutcome(request.id, states.SUCCESS, result, None,
                                                  request, children or None))
        if request.chord and request.group:
            await self.canvas_step(self.canvas.chord_part_return(request, states.SUCCESS, result),
                               request)
        if stored:
            await delivery.ack(request.id)
        else:
            # Ack nothing whose result is not stored: keep it as a dead letter.
            await delivery.dead_letter(request.id, "result could not be stored")
        self.hooks.task_succeeded(request, result, runtime)

    async def _on_failure(self, task: Task, request: Request, delivery: Delivery,
                          exc: Exception, runtime: float) -> None:
        einfo = format_traceback(exc)
        await self._hook(task.on_failure, request, exc, request.id, request.args,
                         request.kwargs, einfo)
        stored = True
        meta = exception_to_meta(exc)
        if not request.ignore_result or task.option("store_errors_even_if_ignored"):
            stored = await self.store(TaskOutcome(request.id, states.FAILURE, meta, einfo,
                                                  request))
        if request.chord and request.group:
            await self.canvas_step(self.canvas.chord_part_return(request, states.FAILURE, meta),
                               request)
        if request.chain or request.errbacks:
            await self.canvas_step(self.canvas.on_failure(request, exc, einfo,
                                                      store=self.backend is not None), request)
        if (self.dead_letter_failures and delivery.dead_letters is not None
                and delivery.queue and _retries_exhausted(task, request)):
            await self.canvas_step(delivery.dead_letters.copy(
                delivery.message, delivery.queue, "retries exhausted", exc), request)
        if stored and task.option("acks_on_failure_or_timeout"):
            await delivery.ack(request.id)
        else:
            await delivery.dead_letter(request.id, "task failed", exc)
        self.hooks.task_failed(request, exc, runtime)

    async def _on_retry(self, task: Task, request: Request, delivery: Delivery,
                        retry: Retry) -> None:
        reason = retry.exc if retry.exc is not None else retry
        einfo = format_traceback(reason)
        # RETRY is stored before the new message exists: the next attempt (maybe
        # due at once) must not have its state overwritten by this one's.
        if not request.ignore_result or task.option("store_errors_even_if_ignored"):
            await self.store(TaskOutcome(request.id, states.RETRY, exception_to_meta(reason),
                                         einfo, request))
        message = retry_message(request, retry)
        exchange, routing_key = retry_route(request)
        try:
            await self._publish_with_retries(exchange, routing_key, message, request.id)
        except Exception as publish_error:
            # Could not schedule the retry: fail the task rather than lose it silently.
            await self._on_failure(task, request, delivery, publish_error, 0.0)
            return
        await self._hook(task.on_retry, request, reason, request.id, request.args,
                         request.kwargs, einfo)
        await delivery.ack(request.id)
        self.hooks.task_retried(request, reason, retry.when)

    async def _publish_with_retries(self, exchange: str, routing_key: str,
                                    message: OutgoingMessage, task_id: str) -> None:
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

    async def revoke(self, request: Request, delivery: Delivery, reason: str) -> None:
        """Store REVOKED (TaskRevokedError(reason)), return a chord part, ack."""
        meta = exception_to_meta(TaskRevokedError(reason))
        if not request.ignore_result:
            await self.store(TaskOutcome(request.id, states.REVOKED, meta, None, request))
        if request.chord and request.group:
            await self.canvas_step(
                self.canvas.chord_part_return(request, states.REVOKED, meta), request)
        self.hooks.task_revoked(request, reason)
        await delivery.ack(request.id)

    async def _on_cancelled(self, request: Request, delivery: Delivery, acks_late: bool) -> None:
        if acks_late or not delivery.settled:
            await delivery.reject(request.id, requeue=True)
            log.warning("task interrupted; message requeued", task_id=request.id,
                        task=request.task)
            return
        try:
            await self.broker.republish(delivery.message)
            log.warning("task interrupted after early ack; message published again",
                        task_id=request.id, task=request.task)
        except Exception as exc:
            log.error("task interrupted and could not be published again: it is lost",
                      task_id=request.id, task=request.task, error=repr(exc))

    async def canvas_step(self, step: Any, request: Request) -> Any:
        """Run a canvas step; its failure is logged, never the task's outcome."""
        try:
            return await step
        except Exception as exc:
            log.exception("canvas step failed", task_id=request.id, task=request.task,
                          error=repr(exc))
            return None

    async def _hook(self, hook: Any, request: Request, *args: Any) -> None:
        try:
            await _maybe_await(hook(*args))
        except Exception as exc:
            log.error("task hook raised", task_id=request.id, hook=hook.__name__,
                      error=repr(exc))


def _retries_exhausted(task: Task, request: Request) -> bool:
    return (request.retries > 0 and task.max_retries is not None
            and request.retries >= task.max_retries)


def _reset(token: contextvars.Token[Request | None]) -> None:
    # The token belongs to this task's context; resetting restores the outer value.
    try:
        token.var.reset(token)
    except ValueError:
        token.var.set(None)
