"""Soft and hard time limits for one task, without touching its neighbours.

Coroutines: the soft limit raises ``SoftTimeLimitExceeded`` *inside* the task,
at whatever it is awaiting, so ``except SoftTimeLimitExceeded:`` can clean up
and even return a result; the hard limit cancels the task and fails it with
``TimeLimitExceeded``. Other tasks in the process are untouched (in Celery's
threads and gevent pools there are no time limits; prefork kills the process).

Plain functions in threads: Python cannot interrupt a thread safely. The soft
limit is delivered with ``PyThreadState_SetAsyncExc``, which takes effect at
the next Python bytecode (not inside a blocking C call); at the hard limit the
task fails with ``TimeLimitExceeded`` at once, the same asynchronous exception
is sent to stop the thread, and its pool slot stays busy until it does.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Executor
from typing import Any

from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

_SOFT = "asyncworker:soft-time-limit"


class _SoftLimited:
    """Awaits ``coro``, turning the soft-limit cancellation into SoftTimeLimitExceeded."""

    def __init__(self, coro: Coroutine[Any, Any, Any], soft: float | None) -> None:
        self.coro = coro
        self.soft = soft

    def __await__(self) -> Generator[Any, Any, Any]:
        send: Any = None
        throw: BaseException | None = None
        while True:
            try:
                yielded = self.coro.throw(throw) if throw is not None else self.coro.send(send)
            except StopIteration as stop:
                return stop.value
            send, throw = None, None
            try:
                send = yield yielded
            except asyncio.CancelledError as exc:
                if exc.args == (_SOFT,):
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()  # it was a signal, not a cancellation
                    throw = SoftTimeLimitExceeded(f"soft time limit ({self.soft}s) exceeded")
                else:
                    throw = exc
            except BaseException as exc:  # delegate everything else, like `await`
                throw = exc


async def _drive(coro: Coroutine[Any, Any, Any], soft: float | None) -> Any:
    return await _SoftLimited(coro, soft)


async def run_coroutine(coro: Coroutine[Any, Any, Any], soft: float | None,
                        hard: float | None) -> Any:
    """Await ``coro`` under the given limits (seconds; None: no limit)."""
    if soft is None and hard is None:
        return await coro
    loop = asyncio.get_running_loop()
    body = asyncio.create_task(_drive(coro, soft))
    hard_fired = False

    def fire_hard() -> None:
        nonlocal hard_fired
        hard_fired = True
        body.cancel()

    timers = []
    if soft is not None:
        timers.append(loop.call_later(soft, body.cancel, _SOFT))
    if hard is not None:
        timers.append(loop.call_later(hard, fire_hard))
    try:
        return await body
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if hard_fired and (current is None or not current.cancelling()):
            raise TimeLimitExceeded(hard) from None
        raise
    finally:
        for timer in timers:
            timer.cancel()


class _ThreadCall:
    """One call in a pool thread, which the loop can interrupt (best effort)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.ident: int | None = None
        self.finished = False
        self.lock = threading.Lock()

    def __call__(self) -> Any:
        with self.lock:
            self.ident = threading.get_ident()
        try:
            return self.call()
        finally:
            with self.lock:
                self.finished = True
                # Withdraw an exception sent too late to land in the task itself.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident), None)

    def interrupt(self, exc_type: type[BaseException]) -> None:
        with self.lock:
            if self.ident is not None and not self.finished:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident),
                                                           ctypes.py_object(exc_type))


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def run_in_thread(pool: Executor, call: Callable[[], Any], soft: float | None,
                        hard: float | None) -> Any:
    """Run ``call`` in the pool under the given limits, as far as threads allow."""
    loop = asyncio.get_running_loop()
    guarded = _ThreadCall(call)
    future = loop.run_in_executor(pool, guarded)
    # Past the hard limit (or on cancellation) nobody awaits the call any more, yet
    # it still ends in its thread, often with the exception sent to stop it: read
    # it then, or asyncio reports "Future exception was never retrieved".
    future.add_done_callback(_retrieve)
    timer = None
    if soft is not None:
        timer = loop.call_later(soft, guarded.interrupt, SoftTimeLimitExceeded)
    try:
        if hard is None:
            return await future
        try:
            return await asyncio.wait_for(asyncio.shield(future), hard)
        except TimeoutError:
            guarded.interrupt(TimeLimitExceeded)
            raise TimeLimitExceeded(hard) from None
    finally:
        if timer is not None:
            timer.cancel()
