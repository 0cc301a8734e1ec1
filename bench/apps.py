"""Tasks the benchmarks run in asyncworker."""

from __future__ import annotations

from asyncworker import App

app = App("bench")


@app.task(name="bench.noop")
async def noop() -> None:
    """Nothing: what is measured is the worker's own cost per task."""


@app.task(name="bench.noop_late", acks_late=True)
async def noop_late() -> None:
    """Nothing, acked only after its result row is committed."""
