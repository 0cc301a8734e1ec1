"""Small tasks for the demo and smoke checks: one async, one plain, one failing.

:func:`register` adds them to an app; the module itself imports no app, so it
can be imported from anywhere without a cycle.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import App
    from ..task import Task


async def add(x: int, y: int) -> int:
    """Add two numbers after a short non-blocking wait."""
    await asyncio.sleep(0.05)
    return x + y


def checksum(text: str) -> str:
    """CPU-light blocking work, run in the thread pool."""
    return hashlib.sha256(text.encode()).hexdigest()


async def divide(x: float, y: float) -> float:
    """Raises ZeroDivisionError for y == 0, to show failures reaching the client."""
    return x / y


def register(app: App) -> dict[str, Task]:
    """Register the sample tasks on ``app`` as ``asyncworker.sample.<name>``; returns them."""
    names = {f"asyncworker.sample.{fn.__name__}": fn for fn in (add, checksum, divide)}
    return {name: app.task(name=name)(fn) for name, fn in names.items()}
