"""Middleware: how admission and execution are put together.

A middleware is any object with ``async def __call__(self, job, call_next)``.
It may look at the job, wait (an ETA, a rate limit, a slot), wrap what
follows (a semaphore, a time limit, a context variable), call
``await call_next(job)`` to go on, or finish the job itself without calling on
(a revoked or expired task). ``compose`` chains them once, at start-up, so a
message pays one call per middleware and nothing else.

A middleware with nothing to do after the rest of the chain (a check, then go
on) may instead be a plain ``def __call__`` that *returns* ``call_next(job)``
(or ``finish(...)``) for the caller to await: a tail call. It then keeps no
coroutine frame of its own on the stack while the task runs, which with
10,000 tasks in flight is memory (about 250 bytes a frame).

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

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        """Do this concern's part; await (or return) ``call_next(job)`` to go on."""


def compose(middleware: Sequence[Middleware], endpoint: CallNext) -> CallNext:
    """One callable that runs ``middleware`` in order, then ``endpoint``."""
    call = endpoint
    for layer in reversed(middleware):
        call = functools.partial(layer, call_next=call)
    return call
