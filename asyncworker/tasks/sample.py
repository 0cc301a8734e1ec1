"""Small tasks for the demo and smoke checks: one async, one plain, one failing."""

from __future__ import annotations

import asyncio
import hashlib

from . import app


@app.task(name="asyncworker.sample.add")
async def add(x: int, y: int) -> int:
    """Add two numbers after a short non-blocking wait."""
    await asyncio.sleep(0.05)
    return x + y


@app.task(name="asyncworker.sample.checksum")
def checksum(text: str) -> str:
    """CPU-light blocking work, run in the thread pool."""
    return hashlib.sha256(text.encode()).hexdigest()


@app.task(name="asyncworker.sample.divide")
async def divide(x: float, y: float) -> float:
    """Raises ZeroDivisionError for y == 0, to show failures reaching the client."""
    return x / y
