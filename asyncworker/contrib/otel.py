"""OpenTelemetry tracing that joins the traces of opentelemetry-instrumentation-celery.

Enable it with ``worker_plugins = ["asyncworker.contrib.otel:TracingPlugin"]``
(or ``app.use(TracingPlugin())``); it needs the ``otel`` extra. The process
configures its ``TracerProvider`` (the SDK and an exporter) as any
OpenTelemetry program does, in the app module or a lifespan hook; until one is
configured nothing is recorded and each message costs one check. The core
never imports this module or OpenTelemetry unless the plugin is enabled.

Worker side: each task that starts runs in a ``run/<task name>`` span of kind
CONSUMER, the child of the context its message headers carry (W3C
``traceparent`` / ``tracestate`` among the protocol-2 headers, the AMQP
application headers, where Celery's instrumentation injects them). It bears
that library's attributes (``celery.action``, ``celery.task_name``,
``messaging.message.id``, ``celery.state`` ...). As in Celery, where it lasts
until ``task_postrun``, the span covers storing the outcome and publishing
what follows the task (the retry, callbacks, the next chain step, a chord's
body). A failure sets status ERROR and records the exception; a retry sets
``celery.retry.reason``.

Producer side: every message published one at a time (``send_task``,
``apply_async``, ``delay``, the canvas, the worker's retries and callbacks)
gets an ``apply_async/<task name>`` PRODUCER span, child of the current span
(or, after the task body, of the running task's span), whose context is
injected into the message headers, so that a Celery worker with the
instrumentation continues the trace too. Beat's repeated sends of a prepared
message carry no trace context (each tick starts no trace).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..message import TaskMessage, text
from ..plugins import Plugin
from ..worker.job import FAILURE, IGNORED, REJECTED, RETRY, REVOKED, SUCCESS, Job

if TYPE_CHECKING:
    from ..app import App
    from ..task import Request
    from ..worker.middleware import CallNext, Middleware
    from ..worker.worker import Worker

__all__ = ["TracingPlugin", "extract", "inject", "run_attributes"]

TRACER_NAME = "asyncworker.contrib.otel"

# The attribute names of opentelemetry-instrumentation-celery.
ACTION = "celery.action"
TASK_NAME = "celery.task_name"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.conversation_id"
DESTINATION = "messaging.destination"
RETRY_REASON = "celery.retry.reason"
STATE = "celery.state"

# The Celery state ``task_postrun`` reports for each way a started task ends.
_STATES = {SUCCESS: "SUCCESS", FAILURE: "FAILURE", RETRY: "RETRY", REJECTED: "REJECTED",
           IGNORED: "IGNORED", REVOKED: "REVOKED"}


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads propagation fields from a header table (AMQP may give bytes)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = text(carrier.get(key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_getter = _HeaderGetter()


def extract(headers: Mapping[str, Any]) -> otel_context.Context:
    """The trace context a message's headers carry (the global propagator's fields)."""
    return propagate.extract(headers, getter=_getter)


def inject(headers: dict[str, Any], context: otel_context.Context) -> None:
    """Put ``context`` into ``headers``, replacing the fields an earlier hop left."""
    for key in propagate.get_global_textmap().fields:
        headers.pop(key, None)
    propagate.inject(headers, context=context)


def run_attributes(request: Request) -> dict[str, Any]:
    """The consumer span's attributes, named and filled as the instrumentation does."""
    attributes: dict[str, Any] = {ACTION: "run", TASK_NAME: request.task,
                                  MESSAGE_ID: request.id}
    if request.correlation_id:
        attributes[CONVERSATION_ID] = request.correlation_id
    if request.delivery_info:
        routing_key = request.delivery_info.get("routing_key")
        if routing_key is not None:
            attributes[DESTINATION] = routing_key
        attributes["celery.delivery_info"] = str(request.delivery_info)
    compression = text(request.headers.get("compression"))
    if compression:
        attributes["celery.compression"] = compression
    if request.eta is not None:
        attributes["celery.eta"] = request.eta.isoformat()
    if request.expires is not None:
        attributes["celery.expires"] = request.expires.isoformat()
    # The instrumentation writes the origin over the worker's hostname.
    hostname = request.origin or request.hostname
    if hostname:
        attributes["celery.hostname"] = hostname
    if request.reply_to:
        attributes["celery.reply_to"] = request.reply_to
    if request.retries:
        attributes["celery.retries"] = request.retries
    if request.timelimit != (None, None):
        attributes["celery.timelimit"] = (
            ["" if limit is None else str(limit) for limit in request.timelimit]
            if None in request.timelimit else list(request.timelimit))
    return attributes


class _Run:
    """The span of the task this asyncio context is handling, once it started."""

    __slots__ = ("context", "span", "tracer")

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.span: trace.Span | None = None
        self.context: otel_context.Context | None = None


# Set for the whole of a job's admission, execution and finish (one asyncio
# task); the execution chain may run in a child task (time limits), which
# shares the same _Run object.
_current_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar(
    "asyncworker_otel_run", default=None)


_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


class Tracing:
    """The tracer (of a given provider, or of the global one once configured)
    and the middleware and publish wrapper that use it."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer_provider = tracer_provider
        self._tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None

    def tracer(self) -> trace.Tracer | None:
        """The tracer, or None while no TracerProvider is configured."""
        provider = self.tracer_provider or trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        if self._tracer is None or self._tracer[0] is not provider:
            from .. import __version__

            self._tracer = (provider, provider.get_tracer(TRACER_NAME, __version__))
        return self._tracer[1]

    def publishing(self, message: TaskMessage, exchange: str,
                   routing_key: str) -> contextlib.AbstractContextManager[None]:
        """The ``apply_async/<task>`` span around one publish; its context goes into
        ``message.headers`` (an ``App.publish_wrappers`` entry)."""
        tracer = self.tracer()
        if tracer is None:
            return _NOTHING
        return self._publish_span(tracer, message, exchange, routing_key)

    @contextlib.contextmanager
    def _publish_span(self, tracer: trace.Tracer, message: TaskMessage, exchange: str,
                      routing_key: str) -> Iterator[None]:
        parent = otel_context.get_current()
        run = _current_run.get()
        if (run is not None and run.context is not None
                and not trace.get_current_span(parent).get_span_context().is_valid):
            parent = run.context  # published after the body: a retry, a callback ...
        span = tracer.start_span(f"apply_async/{message.task}", context=parent,
                                 kind=SpanKind.PRODUCER)
        if span.is_recording():
            span.set_attributes({ACTION: "apply_async", MESSAGE_ID: message.id,
                                 TASK_NAME: message.task, DESTINATION: routing_key})
            if exchange:
                span.set_attribute("celery.exchange", exchange)
            else:  # the default exchange, direct: what Celery calls a queue destination
                span.set_attribute("messaging.destination_kind", "queue")
        # A retry's headers are its request's dict: never change that one.
        message.headers = dict(message.headers)
        inject(message.headers, trace.set_span_in_context(span, parent))
        try:
            yield
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            span.end()


class RunScope:
    """Admission middleware: the job's span ends here, once it is finished.

    The span itself starts in ``RunSpan``, once a slot is held; everything
    after the body (store, retry, callbacks) happens inside this scope.
    """

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        tracer = self.tracing.tracer()
        if tracer is None:
            await call_next(job)
            return
        run = _Run(tracer)
        token = _current_run.set(run)
        try:
            await call_next(job)
        finally:
            _current_run.reset(token)
            if run.span is not None:
                _close(run.span, job)


class RunSpan:
    """Execution middleware: start ``run/<task>`` under the message's context and
    make it current for the body."""

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        run = _current_run.get()
        request = job.request
        if run is None or request is None:
            await call_next(job)
            return
        parent = extract(request.headers)
        span = run.tracer.start_span(f"run/{request.task}", context=parent,
                                     kind=SpanKind.CONSUMER)
        if span.is_recording():
            span.set_attributes(run_attributes(request))
        run.span = span
        run.context = trace.set_span_in_context(span, parent)
        token = otel_context.attach(run.context)
        try:
            await call_next(job)
        finally:
            otel_context.detach(token)


def _close(span: trace.Span, job: Job) -> None:
    """Record how the job ended and end its span."""
    outcome = job.outcome
    if outcome is not None and span.is_recording():
        state = _STATES.get(outcome.kind)
        if state is not None:
            span.set_attribute(STATE, state)
        if outcome.kind == FAILURE and outcome.exc is not None:
            span.record_exception(outcome.exc)
            span.set_status(Status(StatusCode.ERROR, str(outcome.exc)))
        elif outcome.kind == RETRY and outcome.retry is not None:
            span.set_attribute(RETRY_REASON, str(outcome.retry))
    span.end()


class TracingPlugin(Plugin):
    """OpenTelemetry spans for the tasks this app runs and publishes.

    ``tracer_provider``: the provider to use (default: the global one).
    """

    name = "otel"

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracing = Tracing(tracer_provider)

    def install(self, app: App) -> None:
        app.publish_wrappers.append(self.tracing.publishing)

    def admission(self, worker: Worker) -> Iterable[Middleware]:
        return [RunScope(self.tracing)]

    def execution(self, worker: Worker) -> Iterable[Middleware]:
        return [RunSpan()]
