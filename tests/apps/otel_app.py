"""An asyncworker app with OpenTelemetry tracing, its spans written to ``OTEL_TEST_SPANS``.

Its TracerProvider is set up at import, as a deployment would in its app module.
``OTEL_TEST_CELERY_QUEUE`` is where ``o.to_celery`` sends a task to a Celery worker.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace

from asyncworker import App
from asyncworker.contrib.otel import TracingPlugin

from .otel_spans import file_provider

trace.set_tracer_provider(file_provider(os.environ["OTEL_TEST_SPANS"]))

app = App("otel_app")
app.use(TracingPlugin())


@app.task(name="o.ok", bind=True)
async def ok(self: Any, x: int = 0) -> dict[str, Any]:
    r = self.request
    return {"x": x, "x_custom": getattr(r, "x_custom", None),
            "traceparent": getattr(r, "traceparent", None)}


@app.task(name="o.fail")
async def fail() -> None:
    raise KeyError("broken")


@app.task(name="o.parent")
async def parent() -> str:
    child = await ok.delay(1)
    return child.id


@app.task(name="o.flaky", bind=True, max_retries=1)
async def flaky(self: Any) -> str:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "done"


@app.task(name="o.to_celery")
async def to_celery() -> str:
    sent = await app.send_task("o.remote", queue=os.environ["OTEL_TEST_CELERY_QUEUE"])
    return sent.id
