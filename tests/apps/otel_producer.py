"""A Celery client instrumented with opentelemetry-instrumentation-celery.

Run as ``python -m tests.apps.otel_producer QUEUE``: publishes the ``o.*`` tasks
to QUEUE (``o.ok`` with an extra ``x_custom`` header), waits for the results
and prints one JSON object: each task's id, result and the producer span it was
published under.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from celery import Celery
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .otel_spans import describe

queue = sys.argv[1]
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
CeleryInstrumentor().instrument(tracer_provider=provider)

app = Celery("otel_producer", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
app.set_current()  # the instrumentation finds the task by name in the current app


def _task(name: str) -> Any:
    # Only the name matters: the instrumentation looks the sending task up by it.
    def body(*args: Any, **kwargs: Any) -> None:
        """Runs in the asyncworker worker, not here."""

    return app.task(name=name)(body)


ok, fail, parent, flaky = (_task(n) for n in ("o.ok", "o.fail", "o.parent", "o.flaky"))
sent = {
    "ok": ok.apply_async((7,), headers={"x_custom": "hello"}),
    "fail": fail.apply_async(),
    "parent": parent.apply_async(),
    "flaky": flaky.apply_async(),
}
out: dict[str, Any] = {}
for key, result in sent.items():
    try:
        value = result.get(timeout=30, propagate=False)
    except Exception as exc:  # a timeout: the test reports it
        value = repr(exc)
    out[key] = {"id": result.id, "result": value if not isinstance(value, BaseException)
                else repr(value)}
spans = {s.attributes["messaging.message.id"]: describe(s)
         for s in exporter.get_finished_spans() if s.name.startswith("apply_async/")}
for entry in out.values():
    entry["span"] = spans.get(entry["id"])
print(json.dumps(out))
