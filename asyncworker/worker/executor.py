"""Run an admitted job, then store, settle and close it.

``execute`` is the end of the admission chain: it acks early unless the task
is late-ack, fires ``task_started``, stores STARTED when asked, and runs the
execution chain (time limit → current request → body). Whatever happens
becomes an ``Outcome``, and ``finish`` takes it from there:

1. every outcome step's ``before_store`` (autoretry, ``on_success`` /
   ``on_failure``, callbacks and the next chain step);
2. the state write (SUCCESS, FAILURE, RETRY, REVOKED, by ``ignore_result``);
3. every ``after_store`` (publish a retry, ``on_retry``, chord parts, chain
   failure, dead-letter copies);
4. exactly one closing hook;
5. settle the message by the ack policy: nothing late-acked is acked before
   its state is stored; what cannot be stored is dead-lettered, never acked.

A task cancelled by a cold shutdown is not lost: a late-ack message is
requeued, and an early-acked one is published again before the worker exits
(Celery loses those).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence

from .. import states
from ..backends.base import (
    ResultBackend,
    ResultEncodeError,
    TaskOutcome,
    exception_to_meta,
    format_traceback,
)
from ..broker.base import Broker
from ..deadletter import DeadLetters
from ..exceptions import Ignore, NotRegistered, Reject, Retry, TaskRevokedError
from ..hooks import WorkerHooks
from ..logging import get_logger
from .job import (
    ACTIVE,
    CANCELLED,
    FAILURE,
    IGNORED,
    REJECTED,
    RETRY,
    REVOKED,
    SUCCESS,
    Job,
    Outcome,
)
from .middleware import CallNext
from .outcomes import OutcomeStep
from .state import WorkerState

log = get_logger("executor")

# Which Celery state each outcome stores (REJECTED only for an unknown task).
_STATE = {SUCCESS: states.SUCCESS, FAILURE: states.FAILURE, RETRY: states.RETRY,
          REVOKED: states.REVOKED}
# The closing hook of each outcome.
_CLOSING = {SUCCESS: "task_succeeded", FAILURE: "task_failed", RETRY: "task_retried",
            REJECTED: "task_rejected", IGNORED: "task_ignored", REVOKED: "task_revoked",
            CANCELLED: "task_cancelled"}


#: One phase of an outcome step (``before_store`` or ``after_store``, bound).
Phase = Callable[[Job], Awaitable[None]]


class ResultNotStored(Exception):
    """The task succeeded but its result could not be written (the message is kept)."""


class Executor:
    """Runs jobs and finishes them; one instance per worker."""

    def __init__(
        self,
        backend: ResultBackend | None,
        broker: Broker,
        hooks: WorkerHooks,
        state: WorkerState,
        hostname: str,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.backend = backend
        self.broker = broker
        self.hooks = hooks
        self.state = state
        self.hostname = hostname
        self.dead_letters = dead_letters
        self._steps: Sequence[OutcomeStep] = ()
        self._before: list[Phase] = []
        self._after: list[Phase] = []
        self.run: CallNext | None = None  # the execution chain, set by the worker

    @property
    def steps(self) -> Sequence[OutcomeStep]:
        """The outcome steps, in order (set by the worker)."""
        return self._steps

    @steps.setter
    def steps(self, steps: Sequence[OutcomeStep]) -> None:
        self._steps = steps
        # Only the phases a step overrides: the base class's are no-ops.
        self._before = [step.before_store for step in steps
                        if type(step).before_store is not OutcomeStep.before_store]
        self._after = [step.after_store for step in steps
                       if type(step).after_store is not OutcomeStep.after_store]

    # -- running -------------------------------------------------------------
    async def execute(self, job: Job) -> None:
        """Run an admitted job and finish it (the end of the admission chain)."""
        task, request = job.task, job.request
        assert task is not None and request is not None and self.run is not None
        self.state.move(job, ACTIVE)
        if not task.option("acks_late"):
            await job.delivery.ack()
            job.acked_early = True
        job.mark_started()
        self.hooks.task_started(job)
        if task.option("track_started") and not request.ignore_result:
            await self.store(TaskOutcome(request.id, states.STARTED,
                                         {"pid": os.getpid(), "hostname": self.hostname},
                                         None, request))
        try:
            await self.run(job)
            outcome = job.outcome
            assert outcome is not None
        except asyncio.CancelledError:
            if job.terminated:
                # Revoked with terminate=True: a final REVOKED, not a requeue.
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await self.finish(job, Outcome(REVOKED, reason="terminated"))
                return
            await asyncio.shield(self.finish(job, Outcome(CANCELLED)))
            raise
        except Ignore:
            outcome = Outcome(IGNORED, reason="Ignore raised")
        except Retry as exc:
            reason = exc.exc if exc.exc is not None else exc
            outcome = Outcome(RETRY, exc=reason, traceback=format_traceback(reason), retry=exc)
        except Reject as exc:
            outcome = Outcome(REJECTED, exc=exc, reason=f"task raised Reject({exc.reason!r})",
                              requeue=bool(exc.requeue))
        except Exception as exc:
            outcome = Outcome(FAILURE, exc=exc, traceback=format_traceback(exc))
        await self.finish(job, outcome)

    # -- finishing -----------------------------------------------------------
    async def finish(self, job: Job, outcome: Outcome) -> None:
        """Steps, store, steps, settle and the closing hook, for ``outcome``."""
        if outcome.kind == REVOKED and outcome.exc is None:
            outcome.exc = TaskRevokedError(outcome.reason)
        job.outcome = outcome
        again = True
        # Each phase is awaited here, not through a wrapper: a coroutine frame
        # fewer per step and message.
        while again:
            again = False
            for phase in self._before:
                try:
                    await phase(job)
                except Exception as exc:
                    self._step_failed(phase, job, exc)
            stored = await self._store_outcome(job, job.outcome)
            # The store may replace the outcome: an unencodable value is stored as
            # its encoding error, and the job is then that FAILURE.
            current = job.outcome
            current.stored = stored
            for phase in self._after:
                try:
                    await phase(job)
                except Exception as exc:
                    self._step_failed(phase, job, exc)
                if job.outcome is not current:
                    again = True  # a step replaced the outcome: its round starts over
                    break
        outcome = job.outcome
        if outcome.kind == SUCCESS and outcome.stored is False:
            # Observers learn the truth: this task's result is not there.
            job.outcome = Outcome(FAILURE, value=outcome.value, stored=False,
                                  exc=ResultNotStored("result could not be stored"))
        # Observers hear of the outcome once it is stored, before the ack, as
        # Celery's events come before a late ack.
        self.close(job)
        await self._settle(job, outcome)

    @staticmethod
    def _step_failed(phase: Phase, job: Job, exc: Exception) -> None:
        log.exception("outcome step failed", task_id=job.id, task=job.name,
                      step=type(getattr(phase, "__self__", phase)).__name__,
                      error=repr(exc))

    async def _store_outcome(self, job: Job, outcome: Outcome) -> bool | None:
        request, task = job.request, job.task
        if request is None:
            return None
        kind = outcome.kind
        if kind == REJECTED and isinstance(outcome.exc, NotRegistered):
            state = states.FAILURE  # Celery stores an unknown task's failure too
        else:
            state = _STATE.get(kind, "")
        if not state:
            return None
        if request.ignore_result and not (
                kind in (FAILURE, RETRY) and task is not None
                and task.option("store_errors_even_if_ignored")):
            return None
        if kind == SUCCESS:
            result = outcome.value
        else:
            assert outcome.exc is not None
            result = exception_to_meta(outcome.exc)
        written = await self._write(TaskOutcome(request.id, state, result, outcome.traceback,
                                                request, outcome.children, job.runtime))
        if isinstance(written, ResultEncodeError):
            # Clients will read this error, not the value: the task failed.
            job.outcome = Outcome(FAILURE, value=outcome.value, exc=written,
                                  traceback=format_traceback(written),
                                  reason="result could not be encoded")
            return True
        return written

    async def store(self, outcome: TaskOutcome) -> bool:
        """Store one state; on an unencodable value store the encoding error instead."""
        return await self._write(outcome) is not False

    async def _write(self, outcome: TaskOutcome) -> bool | ResultEncodeError:
        """``store``, returning the encoding error when it was stored in the value's place."""
        if self.backend is None:
            return True
        try:
            await self.backend.store(outcome)
        except ResultEncodeError as exc:
            log.error("result not encodable; storing the error", task_id=outcome.task_id,
                      error=str(exc))
            try:
                await self.backend.store(
                    TaskOutcome(outcome.task_id, states.FAILURE, exception_to_meta(exc),
                                format_traceback(exc), outcome.request))
            except Exception as err:
                log.error("result could not be stored", task_id=outcome.task_id,
                          error=repr(err))
                return False
            return exc
        except Exception as exc:
            log.error("result could not be stored", task_id=outcome.task_id,
                      state=outcome.state, error=repr(exc))
            return False
        return True

    async def _settle(self, job: Job, outcome: Outcome) -> None:
        """Ack, requeue or dead-letter the message, by the outcome and the ack policy."""
        delivery = job.delivery
        kind = outcome.kind
        if kind == SUCCESS:
            if outcome.stored is False:
                # Ack nothing whose result is not stored: keep it as a dead letter.
                await self.dead_letter(job, "result could not be stored")
            else:
                await delivery.ack()
        elif kind == FAILURE:
            task = job.task
            if outcome.stored is not False and task is not None and task.option(
                    "acks_on_failure_or_timeout"):
                await delivery.ack()
            else:
                await self.dead_letter(job, "task failed", outcome.exc)
        elif kind == REJECTED:
            if outcome.requeue:
                # Requeued; or, acked early, published again (Celery loses it).
                await self._give_back(job, "task rejected with requeue")
            else:
                await self.dead_letter(job, outcome.reason, outcome.exc)
        elif kind == CANCELLED:
            await self._give_back(job)
        else:  # RETRY (published), IGNORED, REVOKED
            await delivery.ack()

    async def _give_back(self, job: Job, why: str = "task interrupted") -> None:
        """Back to the broker: requeued, or, once acked early, published again."""
        delivery = job.delivery
        if job.outcome is not None and job.outcome.reason == "stale":
            return  # the broker took it back already
        if not delivery.settled:
            await delivery.requeue()
            if job.started is not None:
                log.warning(f"{why}; message requeued", task_id=job.id, task=job.name)
            return
        try:
            await self.broker.republish(delivery)
            log.warning(f"{why} after early ack; message published again",
                        task_id=job.id, task=job.name)
        except Exception as exc:
            log.error(f"{why} and could not be published again: it is lost",
                      task_id=job.id, task=job.name, error=repr(exc))

    def close(self, job: Job) -> None:
        """Fire the job's one closing hook (later calls do nothing)."""
        if job.closed:
            return
        job.closed = True
        outcome = job.outcome
        assert outcome is not None
        if outcome.kind == REVOKED and outcome.reason == "expired":
            self.hooks.task_expired(job)
        else:
            getattr(self.hooks, _CLOSING[outcome.kind])(job)

    # -- dead letters ----------------------------------------------------------
    async def dead_letter(self, job: Job, reason: str, exc: BaseException | None = None) -> None:
        """Reject for good, keeping the message in a dead-letter queue.

        A message acked early and then refused by its task is copied there.
        """
        delivery = job.delivery
        if delivery.settled:
            await self.keep_dead_letter(job, reason, exc)
            return
        if self.dead_letters is None:
            await delivery.reject(requeue=False)
            return
        if await self.dead_letters.reject(delivery, reason, exc):
            self.hooks.task_dead_lettered(job, reason)

    async def keep_dead_letter(self, job: Job, reason: str,
                               exc: BaseException | None = None) -> None:
        """Copy the message to the dead-letter queue (it stays settled as it is)."""
        if self.dead_letters is None:
            return
        try:
            await self.dead_letters.copy(job.delivery, reason, exc)
        except Exception as err:
            log.error("could not keep dead letter", task_id=job.id, error=repr(err))
            return
        self.hooks.task_dead_lettered(job, reason)
