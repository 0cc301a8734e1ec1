"""Middleware: how admission and execution are put together.

A middleware is any object with ``async def __call__(self, job, call_next)``.
It may look at the job, wait (an ETA, a rate limit, a slot), wrap what
follows (a semaphore, a time limit, a context variable), call
``await call_next(job)`` to go on, or finish the job itself without calling on
(a revoked or expired task). ``compose`` chains them once, at start-up, so a
message pays one call per middleware and nothing else.

Most jobs have nothing to do with most middleware (no ETA, not redelivered,
no rate limit), yet each layer was a coroutine frame per message: a tenth of
a noop task's CPU for the whole chain. A middleware may therefore also define
``skips(job) -> bool``, a plain function that is true when the layer would
only call on: then the chain calls the next layer directly, without entering
this one. It must be exact (skip only where ``__call__`` would do nothing),
and cheap, since it runs for every message.

The worker runs two chains (see ``worker.py`` for their order):

* admission (``admission/``): from a received job to a held slot, ending in
  ``Executor.execute``;
* execution (``execution/``): around the task body, ending in ``body.Body``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .job import Job, Outcome

CallNext = Callable[[Job], Awaitable[None]]
#: Ends a job without running it (``Executor.finish``): store, settle, close.
Finish = Callable[[Job, Outcome], Awaitable[None]]


class Middleware(Protocol):
    """One concern around a job."""

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        """Do this concern's part; call ``call_next(job)`` to go on."""


def compose(middleware: Sequence[Middleware], endpoint: CallNext) -> CallNext:
    """One callable that runs ``middleware`` in order, then ``endpoint``."""
    call = endpoint
    for layer in reversed(middleware):
        entered = functools.partial(layer, call_next=call)
        skips: Callable[[Job], bool] | None = getattr(layer, "skips", None)
        call = entered if skips is None else functools.partial(_unless, skips, entered, call)
    return call


def _unless(skips: Callable[[Job], bool], entered: CallNext, passed: CallNext,
            job: Job) -> Awaitable[None]:
    # Not a coroutine: it returns the awaitable of the layer it picks, so a
    # skipped layer costs a function call, not a frame awaited.
    return passed(job) if skips(job) else entered(job)
