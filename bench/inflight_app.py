"""The in-flight bench's task, and its optional tracemalloc hook (``bench/inflight.py``).

The hook lives here, in the app module the worker imports, so that the worker
itself carries no debug code: with ``INFLIGHT_TRACEMALLOC`` set to a path
prefix, tracing starts at import and each SIGUSR1 dumps a snapshot (and a
count of live objects by type) next to it, for the bench to compare.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import signal
import tracemalloc
from types import FrameType

from asyncworker import App

app = App("bench-inflight")

#: How long each task waits (the bench sets it; the 40,000-task run uses 10 s).
SECONDS = float(os.environ.get("INFLIGHT_SLEEP", "10"))


@app.task(name="bench.inflight_sleep")
async def inflight_sleep() -> None:
    """An I/O wait of ``INFLIGHT_SLEEP`` seconds: all the task does is be in flight."""
    await asyncio.sleep(SECONDS)


def _dump(prefix: str, counter: list[int]) -> None:
    counter[0] += 1
    path = f"{prefix}.{counter[0]}"
    gc.collect()
    tracemalloc.take_snapshot().dump(path + ".snapshot")
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    with open(path + ".types", "w") as out:
        out.writelines(f"{n}\t{name}\n" for name, n in types.most_common(60))
    with open(path + ".done", "w") as out:  # the jobs held, for the bench to check
        out.write(f"{types['Job']}\n")


def _install(prefix: str) -> None:
    tracemalloc.start(int(os.environ.get("INFLIGHT_TRACEMALLOC_FRAMES", "12")))
    counter = [0]

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        _dump(prefix, counter)

    signal.signal(signal.SIGUSR1, on_signal)


if prefix := os.environ.get("INFLIGHT_TRACEMALLOC"):
    _install(prefix)
