"""Tasks: the ``@app.task`` options, the Task base class and ``self.request``."""

from __future__ import annotations

import contextvars
import inspect
import operator
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from .exceptions import MaxRetriesExceededError, Retry
from .message import TaskMessage, new_id

if TYPE_CHECKING:
    from .app import App
    from .result import AsyncResult
    from .testing import EagerResult


@dataclass(slots=True)
class Request(TaskMessage):
    """What a running task knows about its own invocation (``self.request``).

    The fields of its message (:class:`~asyncworker.message.TaskMessage`:
    ``id``, ``args``, ``retries``, ``headers``, ``callbacks``, ``timelimit``
    ...) and what the worker adds. ``ignore_result`` here is the effective
    choice: the message's, or else the task's option.
    """

    ignore_result: bool = False
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    is_eager: bool = False
    #: Set when a revoke with terminate=True cancels this task.
    terminated: bool = False

    @classmethod
    def from_message(cls, message: TaskMessage, *, hostname: str,
                     delivery_info: dict[str, Any], ignore_result: bool) -> Request:
        """The request of a decoded message, run by worker ``hostname``.

        ``ignore_result`` is the task's option (``task.option("ignore_result")``);
        a message asking to ignore its result wins over it. The message's
        values are shared, not copied.
        """
        # One positional call: the message's fields, then hostname and delivery_info.
        request = cls(*[*_message_values(message), hostname, delivery_info])
        request.ignore_result = bool(message.ignore_result or ignore_result)
        return request

    @classmethod
    def eager(cls, task: str, args: list[Any], kwargs: dict[str, Any], *,
              task_id: str | None = None, retries: int = 0) -> Request:
        """The request of a task run here and now, not from a message (``is_eager``)."""
        task_id = task_id or new_id()
        return cls(task_id, task, args, kwargs, retries=retries, root_id=task_id,
                   hostname=socket.gethostname(), is_eager=True)

    def __getattr__(self, name: str) -> Any:
        # Celery's request holds every message header as an attribute, so
        # ``self.request.traceparent`` or a producer's own ``x_custom`` header
        # reads as it does there. Called only for names that are not fields.
        if not name.startswith("__"):
            try:
                return object.__getattribute__(self, "headers")[name]
            except (AttributeError, KeyError):
                pass
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# Every field of a message, in order (a C-speed shallow copy for from_message).
_message_values = operator.attrgetter(*(f.name for f in fields(TaskMessage)))
if [f.name for f in fields(Request)][len(fields(TaskMessage)):][:2] != [
        "hostname", "delivery_info"]:
    raise TypeError("Request.from_message needs hostname, delivery_info after the message")


_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "asyncworker_request", default=None
)


def current_request() -> Request | None:
    """The request of the task running in this context, if any."""
    return _current_request.get()


def set_current_request(request: Request | None) -> contextvars.Token[Request | None]:
    """Make ``request`` current for this context (the executor calls this)."""
    return _current_request.set(request)


def reset_current_request(token: contextvars.Token[Request | None]) -> None:
    """Undo ``set_current_request``."""
    # A token made in another context (a time-limited task runs in its own)
    # cannot be reset there; clearing the value is what resetting would do.
    try:
        token.var.reset(token)
    except ValueError:
        token.var.set(None)


class Task:
    """Base class of every task. Subclass it and pass ``base=`` to override hooks.

    Option attributes carry Celery's names and defaults; ``None`` means "use the
    worker setting" (``task_acks_late`` and friends).
    """

    name: ClassVar[str]
    app: ClassVar[App]
    bind: ClassVar[bool] = False
    is_async: ClassVar[bool] = True

    max_retries: ClassVar[int | None] = 3
    default_retry_delay: ClassVar[float] = 180
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: ClassVar[bool | float] = False
    retry_backoff_max: ClassVar[float] = 600
    retry_jitter: ClassVar[bool] = True
    time_limit: ClassVar[float | None] = None
    soft_time_limit: ClassVar[float | None] = None
    rate_limit: ClassVar[str | None] = None
    queue: ClassVar[str | None] = None

    acks_late: ClassVar[bool | None] = None
    acks_on_failure_or_timeout: ClassVar[bool | None] = None
    reject_on_worker_lost: ClassVar[bool | None] = None
    track_started: ClassVar[bool | None] = None
    ignore_result: ClassVar[bool | None] = None
    store_errors_even_if_ignored: ClassVar[bool | None] = None

    @property
    def request(self) -> Request:
        """The request of the current invocation of this task."""
        request = _current_request.get()
        if request is None or request.task != self.name:
            raise RuntimeError(f"task {self.name} is not running in this context")
        return request

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task body; the decorator replaces it with the decorated function."""
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task body directly, in the caller's context."""
        return self.run(*args, **kwargs)

    # Celery-style hooks. They may be plain methods or coroutines.
    def on_success(self, retval: Any, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Called after the task returned, before its result is stored."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        einfo: str,
    ) -> Any:
        """Called once the RETRY state is stored and the retry is published."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        einfo: str,
    ) -> Any:
        """Called after the task raised, before the failure is stored."""

    def retry(
        self,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Ask for this task to run again later; always raises (``raise self.retry()``).

        As in Celery: the same task id comes back with ``retries + 1`` after
        ``countdown`` (default ``default_retry_delay``) or at ``eta``. When
        ``max_retries`` is used up, ``exc`` is raised if given, otherwise
        ``MaxRetriesExceededError``. ``throw=False`` is not supported: the
        worker publishes the retry when this exception leaves the task.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}")
        if eta is None:
            delay = self.default_retry_delay if countdown is None else countdown
            eta = datetime.now(UTC) + timedelta(seconds=float(delay))
        raise Retry(exc=exc, when=eta, args=args, kwargs=kwargs, options=options)

    # Producer side.
    async def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Publish a message for this task, as Celery's ``apply_async`` does."""
        if self.queue and not any(k in options for k in ("queue", "exchange", "routing_key")):
            options["queue"] = self.queue
        return await self.app.send_task(self.name, args or (), kwargs or {}, **options)

    async def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Shortcut for ``apply_async(args, kwargs)``."""
        return await self.apply_async(args, kwargs)

    async def apply(self, args: list[Any] | tuple[Any, ...] = (),
                    kwargs: dict[str, Any] | None = None, **options: Any) -> EagerResult:
        """Run here and now, as Celery's ``apply()`` (see ``asyncworker.testing.apply``)."""
        from .testing import apply  # the worker's execution chain, loaded when used

        return await apply(self, args, kwargs, **options)

    def option(self, name: str) -> Any:
        """A task option, falling back to the worker setting ``task_<name>``."""
        # Read several times per message: resolved once per settings object.
        settings = self.app.settings
        cache: tuple[Any, dict[str, Any]] | None = self.__dict__.get("_resolved")
        if cache is None or cache[0] is not settings:
            cache = self.__dict__["_resolved"] = (settings, {})
        try:
            return cache[1][name]
        except KeyError:
            value = getattr(self, name)
            if value is None:
                value = getattr(settings, f"task_{name}")
            cache[1][name] = value
            return value

    def __repr__(self) -> str:
        return f"<task {self.name}>"


TASK_OPTIONS = frozenset(
    {
        "max_retries",
        "default_retry_delay",
        "autoretry_for",
        "dont_autoretry_for",
        "retry_kwargs",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "time_limit",
        "soft_time_limit",
        "rate_limit",
        "queue",
        "acks_late",
        "acks_on_failure_or_timeout",
        "reject_on_worker_lost",
        "track_started",
        "ignore_result",
        "store_errors_even_if_ignored",
    }
)


def build_task(
    app: App,
    fn: Callable[..., Any],
    name: str,
    base: type[Task] = Task,
    bind: bool = False,
    **options: Any,
) -> Task:
    """Make a Task subclass around ``fn`` with the given options, and instantiate it."""
    unknown = set(options) - TASK_OPTIONS
    if unknown:
        raise TypeError(f"unknown task options for {name}: {sorted(unknown)}")
    for key in ("autoretry_for", "dont_autoretry_for"):
        if key in options:
            options[key] = tuple(options[key])
    run = fn if bind else staticmethod(fn)
    attrs: dict[str, Any] = {
        "name": name,
        "app": app,
        "bind": bind,
        "is_async": inspect.iscoroutinefunction(fn),
        "run": run,
        "__doc__": fn.__doc__,
        "__module__": fn.__module__,
        **options,
    }
    cls: type[Task] = type(fn.__name__, (base,), attrs)
    return cls()
