"""Tasks the integration tests run in a real asyncworker process.

Settings come from ASYNCWORKER_* variables set by the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import redis.asyncio as aioredis

from asyncworker import App, Ignore, Reject, SoftTimeLimitExceeded, Task
from asyncworker.exceptions import ImproperlyConfigured
from tests.apps.clients import lazy_redis

app = App("compat")


class CustomError(Exception):
    """A user-defined exception the client must get back by type."""


class RecordingTask(Task):
    """Writes its hook calls to Redis so a test can read them."""

    async def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        await _redis().rpush(f"hooks:{task_id}", f"success:{retval!r}")

    async def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                         einfo: str) -> None:
        await _redis().rpush(f"hooks:{task_id}", f"failure:{type(exc).__name__}")


_redis = lazy_redis("ASYNCWORKER_TEST_REDIS_URL")


@app.task(name="compat.add_async")
async def add_async(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@app.task(name="compat.add_sync")
def add_sync(x: int, y: int) -> int:
    return x + y


@app.task(name="compat.echo")
async def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="compat.echo_sync")
def echo_sync(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


_BUILTINS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "ZeroDivisionError": ZeroDivisionError,
    "RuntimeError": RuntimeError,
}


@app.task(name="compat.raise_builtin")
async def raise_builtin(kind: str, message: str) -> None:
    raise _BUILTINS[kind](message)


@app.task(name="compat.raise_builtin_sync")
def raise_builtin_sync(kind: str, message: str) -> None:
    raise _BUILTINS[kind](message)


@app.task(name="compat.raise_custom")
async def raise_custom(message: str) -> None:
    raise CustomError(message)


@app.task(name="compat.sleep")
async def sleep(seconds: float) -> dict[str, float]:
    start = time.time()
    await asyncio.sleep(seconds)
    return {"start": start, "end": time.time()}


@app.task(name="compat.sleep_late", acks_late=True, track_started=True)
async def sleep_late(seconds: float) -> dict[str, float]:
    start = time.time()
    await asyncio.sleep(seconds)
    return {"start": start, "end": time.time()}


@app.task(name="compat.sleep_early", track_started=True)
async def sleep_early(seconds: float) -> dict[str, float]:
    start = time.time()
    await asyncio.sleep(seconds)
    return {"start": start, "end": time.time()}


@app.task(name="compat.slow_first_time", acks_late=True, track_started=True, bind=True)
async def slow_first_time(self: Task, key: str, early: bool = False) -> int:
    """Blocks on its first run (to be interrupted), returns at once after."""
    runs = int(await _redis().incr(key))
    if runs == 1:
        await asyncio.sleep(3600)
    return runs


@app.task(name="compat.slow_first_time_early", track_started=True, bind=True)
async def slow_first_time_early(self: Task, key: str) -> int:
    runs = int(await _redis().incr(key))
    if runs == 1:
        await asyncio.sleep(3600)
    return runs


@app.task(name="compat.request_info", bind=True)
async def request_info(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = self.request
    return {
        "id": r.id, "task": r.task, "args": r.args, "kwargs": r.kwargs, "retries": r.retries,
        "root_id": r.root_id, "parent_id": r.parent_id, "group": r.group,
        "hostname": r.hostname, "delivery_info": r.delivery_info,
    }


@app.task(name="compat.whoami", bind=True)
async def whoami(self: Task, seconds: float = 0.0) -> dict[str, Any]:
    """The node and process that ran it (after ``seconds`` of sleep)."""
    await asyncio.sleep(seconds)
    return {"hostname": self.request.hostname, "pid": os.getpid()}


@app.task(name="compat.request_info_sync", bind=True)
def request_info_sync(self: Task, *args: Any) -> dict[str, Any]:
    r = self.request
    return {"id": r.id, "task": r.task, "args": r.args, "hostname": r.hostname}


@app.task(name="compat.hooked", base=RecordingTask)
async def hooked(fail: bool) -> str:
    if fail:
        raise CustomError("hooked failure")
    return "hooked ok"


@app.task(name="compat.ignored", ignore_result=True)
async def ignored(x: int) -> int:
    return x


@app.task(name="compat.rejecting", acks_late=True)
async def rejecting() -> None:
    raise Reject("not for me", requeue=False)


@app.task(name="compat.ignoring")
async def ignoring() -> None:
    raise Ignore()


@app.task(name="compat.unencodable")
async def unencodable() -> object:
    return object()


@app.task(name="compat.count_runs", acks_late=True, bind=True)
async def count_runs(self: Task, seconds: float) -> int:
    """Counts its executions per task id in Redis, then waits."""
    runs = int(await _redis().incr(f"runs:{self.request.id}"))
    await asyncio.sleep(seconds)
    return runs


async def _record_attempt(task: Task) -> None:
    await _redis().rpush(f"attempts:{task.request.id}",
                         json.dumps([time.time(), task.request.retries]))


class RetryRecordingTask(Task):
    async def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                       einfo: str) -> None:
        await _redis().rpush(f"hooks:{task_id}", f"retry:{type(exc).__name__}:{exc}")


@app.task(name="compat.retry_then_succeed", bind=True, max_retries=5, base=RetryRecordingTask)
async def retry_then_succeed(self: Task, succeed_at: int) -> dict[str, Any]:
    await _record_attempt(self)
    if self.request.retries < succeed_at:
        raise self.retry(exc=ValueError(f"attempt {self.request.retries}"), countdown=0.3)
    return {"retries": self.request.retries, "trace": self.request.headers.get("x-trace")}


@app.task(name="compat.retry_forever", bind=True, max_retries=2)
async def retry_forever(self: Task, with_exc: bool) -> None:
    await _record_attempt(self)
    raise self.retry(exc=KeyError("gone") if with_exc else None, countdown=0.2)


@app.task(name="compat.retry_elsewhere", bind=True, max_retries=1)
async def retry_elsewhere(self: Task, queue: str, seen: list[str] | None = None) -> list[str]:
    """Retries once onto ``queue``; returns the queues its attempts came from."""
    came_from = [*(seen or []), self.request.delivery_info["routing_key"]]
    if self.request.retries == 0:
        raise self.retry(queue=queue, countdown=0, kwargs={"queue": queue, "seen": came_from})
    return came_from


@app.task(name="compat.retry_sync", bind=True, max_retries=1)
def retry_sync(self: Task) -> int:
    if self.request.retries == 0:
        raise self.retry(countdown=0.2)
    return self.request.retries


@app.task(name="compat.autoretry", bind=True, autoretry_for=(ConnectionError,),
          dont_autoretry_for=(ConnectionRefusedError,), retry_backoff=1, retry_backoff_max=4,
          retry_jitter=False, max_retries=3)
async def autoretry_task(self: Task, refuse: bool = False) -> None:
    await _record_attempt(self)
    if refuse:
        raise ConnectionRefusedError("refused: not retried")
    raise ConnectionError(f"flaky {self.request.retries}")


@app.task(name="compat.autoretry_jitter", bind=True, autoretry_for=(ConnectionError,),
          retry_backoff=2, retry_backoff_max=3, retry_jitter=True, max_retries=4)
async def autoretry_jitter(self: Task) -> None:
    await _record_attempt(self)
    raise ConnectionError("flaky")


@app.task(name="compat.soft_catch", soft_time_limit=0.5)
async def soft_catch(seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0.05)  # cleanup may still await
        return "cleaned up"
    return "finished"


@app.task(name="compat.hard_limited", time_limit=0.5)
async def hard_limited(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@app.task(name="compat.busy_sync")
def busy_sync(seconds: float) -> str:
    """Pure-Python loop: a soft limit can interrupt it in its thread."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sum(range(100))
    except SoftTimeLimitExceeded:
        return "interrupted"
    return "finished"


@app.task(name="compat.blocking_sync")
def blocking_sync(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@app.task(name="compat.mul")
async def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="compat.tsum")
def tsum(values: list[int]) -> int:
    return sum(values)


@app.task(name="compat.fail")
async def fail(*args: Any) -> None:
    raise ValueError(f"failed with {list(args)}")


@app.task(name="compat.errback_old")
async def errback_old(task_id: str, key: str) -> None:
    """Old-style errback: gets the failed task's id."""
    await _redis().rpush(key, f"old:{task_id}")


@app.task(name="compat.errback_new")
async def errback_new(request: Any, exc: BaseException, traceback: str, key: str) -> None:
    """New-style errback: called in the worker with the request and exception."""
    await _redis().rpush(key, f"new:{request.id}:{type(exc).__name__}")


@app.task(name="compat.stamp")
async def stamp(tag: str) -> dict[str, Any]:
    """Returns when it started: for ordering and timing checks."""
    return {"tag": tag, "start": time.time()}


@app.task(name="compat.limited", rate_limit="10/s")
async def limited(tag: str) -> dict[str, Any]:
    return {"tag": tag, "start": time.time()}


@app.task(name="compat.capped")
async def capped(seconds: float) -> dict[str, float]:
    start = time.time()
    await asyncio.sleep(seconds)
    return {"start": start, "end": time.time()}


@app.task(name="compat.reject_once", bind=True)
async def reject_once(self: Task, key: str) -> int:
    """Rejects (no requeue) on its first run; succeeds when replayed."""
    runs = int(await _redis().incr(key))
    if runs == 1:
        raise Reject("first run refuses", requeue=False)
    return runs


@app.task(name="compat.always_fails", bind=True, autoretry_for=(RuntimeError,), max_retries=1,
          default_retry_delay=0.1)
async def always_fails(self: Task, key: str) -> int:
    runs = int(await _redis().incr(key))
    if runs <= 2:
        raise RuntimeError(f"run {runs} failed")
    return runs


@app.lifespan
async def shared_client(app_: App) -> Any:
    """A resource opened once per worker; tests see it open in tasks and closed at exit."""
    client = aioredis.from_url(os.environ["ASYNCWORKER_TEST_REDIS_URL"])
    app_.state.shared = client
    app_.state.opened_at = time.time()
    if os.environ.get("COMPAT_FAIL_STARTUP") == "config":
        raise ImproperlyConfigured("a setting the test declares wrong")
    if os.environ.get("COMPAT_FAIL_STARTUP"):
        raise RuntimeError("startup refused by the test")
    try:
        yield
    finally:
        marker = os.environ.get("COMPAT_LIFESPAN_MARKER")
        if marker:
            await client.set(marker, "closed")
        await client.aclose()


@app.task(name="compat.uses_state", bind=True)
async def uses_state(self: Task, key: str) -> float:
    """Uses the worker's shared client from app.state."""
    await self.app.state.shared.set(key, "from task")
    return float(self.app.state.opened_at)


class SlowRetryHook(Task):
    async def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                       einfo: str) -> None:
        await asyncio.sleep(0.3)  # long enough for the next attempt to finish


@app.task(name="compat.retry_at_once", bind=True, max_retries=5, base=SlowRetryHook)
async def retry_at_once(self: Task) -> None:
    """Retries with no delay until exhausted: the next attempt races this one's bookkeeping."""
    raise self.retry(exc=LookupError(f"attempt {self.request.retries}"), countdown=0)
