"""Tasks the events integration tests run in a real asyncworker process."""

from __future__ import annotations

import asyncio

from asyncworker import App, Task

app = App("events")


@app.task(name="events.add")
async def add(x: int, y: int) -> int:
    return x + y


@app.task(name="events.fail")
async def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="events.retry_later", bind=True, max_retries=3)
async def retry_later(self: Task) -> None:
    """Retries once, an hour later."""
    raise self.retry(exc=KeyError("later"), countdown=3600)


@app.task(name="events.retry_once", bind=True, max_retries=3)
async def retry_once(self: Task) -> int:
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("once"), countdown=0.1)
    return self.request.retries


@app.task(name="events.sleep")
async def sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds
