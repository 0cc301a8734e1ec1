"""The OpenTelemetry plugin on the in-memory worker: the consumer span continues the
message's trace, publishes (from the body, callbacks, retries) carry it on, and
extra headers read as ``self.request`` attributes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asyncworker import App
from asyncworker.contrib.otel import Tracing, TracingPlugin, extract, inject
from asyncworker.message import TaskMessage
from asyncworker.testing import TestWorker, run_worker

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def _app(exporter: InMemorySpanExporter | None) -> App:
    app = App("otel")
    if exporter is not None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        app.use(TracingPlugin(tracer_provider=provider))

    @app.task(name="o.ok", bind=True)
    async def ok(self: Any, x: int = 0) -> Any:
        return {"x": x, "custom": self.request.x_custom if x == 7 else None}

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

    @app.task(name="o.headers", bind=True)
    async def headers(self: Any) -> list[Any]:
        return [self.request.x_custom, self.request.traceparent,
                getattr(self.request, "absent", "missing")]

    return app


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def _spans_named(worker: TestWorker, exporter: InMemorySpanExporter, name: str,
                       count: int = 1) -> list[ReadableSpan]:
    found: list[ReadableSpan] = await worker.wait_for(
        lambda: len(_named(exporter, name)) >= count and _named(exporter, name))
    return found


def _context_of(headers: dict[str, Any]) -> trace.SpanContext:
    return trace.get_current_span(extract(headers)).get_span_context()


def test_extract_and_inject_round_trip() -> None:
    """The W3C fields are read from a header table (bytes too) and written back,
    replacing what an earlier hop left."""
    ctx = extract({"traceparent": TRACEPARENT.encode(), "tracestate": "k=v"})
    span_context = trace.get_current_span(ctx).get_span_context()
    assert format(span_context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert span_context.is_remote and span_context.trace_state.get("k") == "v"
    headers = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "tracestate": "old=1",
               "id": "x"}
    inject(headers, trace.set_span_in_context(trace.NonRecordingSpan(
        trace.SpanContext(int("a" * 32, 16), int("b" * 16, 16), is_remote=False,
                          trace_flags=trace.TraceFlags(1)))))
    assert headers == {"id": "x", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}


async def test_consumer_span_continues_the_producer_span(
        spans: InMemorySpanExporter) -> None:
    """``run/<task>`` is a CONSUMER child of ``apply_async/<task>``, with the
    instrumentation's attributes; the message carries the producer span's context."""
    app = _app(spans)
    async with run_worker(app) as worker:
        result = await app.send_task("o.ok", (3,))
        assert await worker.result(result.id) == {"x": 3, "custom": None}
        (run,) = await _spans_named(worker, spans, "run/o.ok")
    (produce,) = _named(spans, "apply_async/o.ok")
    sent = [m for _, _, m in worker.broker.published if m.correlation_id == result.id]
    assert _context_of(sent[0].headers).span_id == produce.context.span_id
    assert produce.kind == SpanKind.PRODUCER and produce.parent is None
    assert produce.attributes is not None and dict(produce.attributes) == {
        "celery.action": "apply_async", "messaging.message.id": result.id,
        "celery.task_name": "o.ok", "messaging.destination": "celery",
        "messaging.destination_kind": "queue"}
    assert run.kind == SpanKind.CONSUMER
    assert run.context.trace_id == produce.context.trace_id
    assert run.parent is not None and run.parent.span_id == produce.context.span_id
    attributes = dict(run.attributes or {})
    assert attributes["celery.action"] == "run"
    assert attributes["celery.task_name"] == "o.ok"
    assert attributes["messaging.message.id"] == result.id
    assert attributes["messaging.conversation_id"] == result.id
    assert attributes["messaging.destination"] == "celery"
    assert attributes["celery.state"] == "SUCCESS"
    assert attributes["celery.hostname"].startswith("gen")  # the origin, as there
    assert run.status.status_code == StatusCode.UNSET


async def test_failure_is_an_error_with_the_exception(spans: InMemorySpanExporter) -> None:
    app = _app(spans)
    async with run_worker(app) as worker:
        result = await app.send_task("o.fail")
        await worker.stored(result.id)
        (run,) = await _spans_named(worker, spans, "run/o.fail")
    assert run.status.status_code == StatusCode.ERROR
    assert run.status.description == "'broken'"
    (event,) = run.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "KeyError"
    assert dict(run.attributes or {})["celery.state"] == "FAILURE"


async def test_child_task_callback_and_retry_carry_the_trace(
        spans: InMemorySpanExporter) -> None:
    """A task sent from the body, a ``link`` callback and a retry are published under
    the running task's span, in its trace."""
    app = _app(spans)
    async with run_worker(app) as worker:
        parent = await app.send_task("o.parent", link={
            "task": "o.ok", "args": [], "kwargs": {}, "options": {}, "subtask_type": None,
            "immutable": True})
        child_id = await worker.result(parent.id)
        await worker.result(child_id)
        flaky = await app.send_task("o.flaky")
        assert await worker.result(flaky.id) == "done"
        (run_parent,) = await _spans_named(worker, spans, "run/o.parent")
        runs_ok = await _spans_named(worker, spans, "run/o.ok", 2)
        runs_flaky = await _spans_named(worker, spans, "run/o.flaky", 2)
    trace_id = run_parent.context.trace_id
    produced = {s.context.span_id: s for s in _named(spans, "apply_async/o.ok")}
    published = [m for _, _, m in worker.broker.published if m.headers["task"] == "o.ok"]
    assert len(published) == 2  # the child from the body, then the callback
    for message in published:
        context = _context_of(message.headers)
        assert context.trace_id == trace_id
        # Its producer span is a child of the parent task's run span.
        span = produced[context.span_id]
        assert span.parent is not None and span.parent.span_id == run_parent.context.span_id
    assert {run.context.trace_id for run in runs_ok} == {trace_id}
    # The retry: the second attempt continues from the first attempt's span.
    first, second = sorted(runs_flaky, key=lambda s: s.start_time or 0)
    assert dict(first.attributes or {})["celery.state"] == "RETRY"
    assert "celery.retry.reason" in dict(first.attributes or {})
    assert dict(second.attributes or {})["celery.retries"] == 1
    assert second.context.trace_id == first.context.trace_id
    (retry_publish,) = [s for s in _named(spans, "apply_async/o.flaky") if s.parent]
    assert retry_publish.parent is not None
    assert retry_publish.parent.span_id == first.context.span_id
    assert second.parent is not None and second.parent.span_id == retry_publish.context.span_id


async def test_request_exposes_extra_headers() -> None:
    """Headers the protocol does not define are ``self.request`` attributes, as in Celery."""
    app = _app(None)
    async with run_worker(app) as worker:
        result = await app.send_task("o.headers",
                                     headers={"x_custom": "hi", "traceparent": TRACEPARENT})
        assert await worker.result(result.id) == ["hi", TRACEPARENT, "missing"]


async def test_no_tracer_provider_means_no_spans_and_no_headers() -> None:
    """Enabled without a configured provider (the global default), nothing is added."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global TracerProvider is set in this process")
    app = App("otel-off")
    app.use(TracingPlugin())
    assert Tracing().tracer() is None

    @app.task(name="o.plain")
    async def plain() -> int:
        return 1

    async with run_worker(app) as worker:
        result = await plain.delay()
        assert await worker.result(result.id) == 1
    (message,) = [m for _, _, m in worker.broker.published]
    assert "traceparent" not in message.headers


def test_beat_prepared_message_carries_no_context(spans: InMemorySpanExporter) -> None:
    """``App.prepare`` (beat's repeated sends) enters no publish wrapper."""
    app = _app(spans)
    app.configure(broker_url="memory://prepared", result_backend="memory://prepared")
    prepared = app.prepare("o.ok", (1,))
    assert "traceparent" not in prepared.message.headers
    assert spans.get_finished_spans() == ()


def test_retry_headers_are_copied_before_injection(spans: InMemorySpanExporter) -> None:
    """Injecting into a message never changes the dict another message shares."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    shared = {"traceparent": TRACEPARENT, "x_custom": "kept"}
    message = TaskMessage("id1", "o.ok", [], {}, shared)
    with Tracing(provider).publishing(message, "", "celery"):
        pass
    assert shared["traceparent"] == TRACEPARENT
    assert message.headers["x_custom"] == "kept"
    (span,) = spans.get_finished_spans()
    assert _context_of(message.headers).span_id == span.context.span_id
    assert span.parent is None  # nothing current: the publish starts a trace


async def test_chord_body_and_chain_step_continue_the_trace(
        spans: InMemorySpanExporter) -> None:
    """A chord's body is published under the span of the task that completes the chord
    (here ``celery.chord_unlock``: the memory backend polls); a chain's next step under
    the previous step's."""
    app = _app(spans)

    def sig(name: str, *args: Any, **options: Any) -> dict[str, Any]:
        return {"task": name, "args": list(args), "kwargs": {}, "options": options,
                "subtask_type": None, "immutable": False}

    async with run_worker(app) as worker:
        body_id = await app.canvas.apply({
            "task": "celery.chord", "subtask_type": "chord", "options": {}, "args": [],
            "kwargs": {"header": {"subtask_type": "group", "options": {},
                                  "kwargs": {"tasks": [sig("o.ok", 1), sig("o.ok", 2)]}},
                       "body": sig("o.ok", task_id="chord-body")}})
        assert body_id == "chord-body"
        await worker.result("chord-body")
        first = await app.send_task("o.ok", (5,), chain=[sig("o.ok", task_id="chain-2")])
        await worker.result("chain-2")
        await _spans_named(worker, spans, "run/o.ok", 5)
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    runs = {dict(s.attributes or {})["messaging.message.id"]: s
            for s in _named(spans, "run/o.ok")}
    publishes = {dict(s.attributes or {})["messaging.message.id"]: s
                 for s in _named(spans, "apply_async/o.ok")}
    for child, parent_task in (("chord-body", "celery.chord_unlock"), ("chain-2", "o.ok")):
        publish = publishes[child]
        assert publish.parent is not None
        parent = by_id[publish.parent.span_id]
        assert parent.name == f"run/{parent_task}"
        assert runs[child].context.trace_id == parent.context.trace_id
        assert runs[child].parent is not None
        assert runs[child].parent.span_id == publish.context.span_id
    chain_parent = publishes["chain-2"].parent
    assert chain_parent is not None and by_id[chain_parent.span_id] is runs[first.id]
