"""A real Celery worker instrumented with opentelemetry-instrumentation-celery,
its spans written to ``OTEL_TEST_SPANS`` (run with the solo pool)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from .otel_spans import file_provider

app = Celery("celery_otel", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(worker_hijack_root_logger=False)
CeleryInstrumentor().instrument(tracer_provider=file_provider(os.environ["OTEL_TEST_SPANS"]))


@app.task(name="o.remote", bind=True)
def remote(self: Any) -> str | None:
    return getattr(self.request, "traceparent", None)
