"""Tasks for the monitoring tests: each ends one known way, and one blocks the event loop."""

from __future__ import annotations

import time

from asyncworker import App, Reject, Task

app = App("monitoring")


class Boom(Exception):
    """The failure the metrics test counts by exception type."""


@app.task(name="mon.ok")
async def ok(x: int) -> int:
    return x


@app.task(name="mon.fail")
async def fail() -> None:
    raise Boom("expected")


@app.task(name="mon.retry_once", bind=True, max_retries=3)
async def retry_once(self: Task) -> str:
    if self.request.retries == 0:
        raise self.retry(countdown=0.1)
    return "done"


@app.task(name="mon.reject")
async def reject() -> None:
    raise Reject("not for me", requeue=False)


@app.task(name="mon.block_loop")
async def block_loop(seconds: float) -> None:
    # Deliberately wrong: a synchronous sleep in an async task stalls every task.
    time.sleep(seconds)  # noqa: ASYNC251
