"""The result backend interface, and the encoding every backend shares."""

from __future__ import annotations

import abc
import traceback as tb
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import serialization, states
from ..exceptions import celery_module_of
from ..task import Request
from .batching import BatchWriter


def exception_to_meta(exc: BaseException) -> dict[str, Any]:
    """Celery's JSON form of an exception, which clients turn back into one."""
    cls = type(exc)
    return {
        "exc_type": cls.__qualname__,
        "exc_message": list(_serializable_args(exc.args)),
        "exc_module": celery_module_of(cls),
    }


def _serializable_args(args: tuple[Any, ...]) -> list[Any]:
    # Exception args can hold anything; keep what JSON can carry, repr the rest.
    out: list[Any] = []
    for arg in args:
        if arg is None or isinstance(arg, (str, int, float, bool)):
            out.append(arg)
        elif isinstance(arg, (list, tuple, dict)):
            try:
                from ..serialization import json_dumps

                json_dumps(arg)
                out.append(arg)
            except (TypeError, ValueError):
                out.append(repr(arg))
        else:
            out.append(repr(arg))
    return out


def format_traceback(exc: BaseException) -> str:
    """The exception's traceback as text, as Celery stores it."""
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


@dataclass(slots=True)
class TaskOutcome:
    """One state write: ``result`` is the raw return value or an exception meta dict."""

    task_id: str
    state: str
    result: Any = None
    traceback: str | None = None
    request: Request | None = None
    #: Tasks this one published (callbacks, next chain step), as Celery's
    #: result tuples ``[[id, parent], None]``; clients read them as ``.children``.
    children: list[Any] | None = None
    #: Seconds the task ran before this state (0 when unknown): how long the
    #: write may linger to share a batch (``batching.Linger``).
    runtime: float = 0.0

    @property
    def ready(self) -> bool:
        """Whether this state is final (sets ``date_done``)."""
        return self.state in states.READY_STATES


@dataclass(slots=True)
class StoredResult:
    """A task's state as a backend holds it."""

    task_id: str
    state: str
    result: Any
    traceback: str | None
    date_done: datetime | None


class ChordJoin(abc.ABC):
    """A completed chord header claimed by this worker: its ordered results."""

    results: list[tuple[str, str, Any]]  # (task id, state, result or exception meta)

    @abc.abstractmethod
    async def done(self) -> None:
        """Release the claim and clear the join state once the body is dispatched."""


class ResultBackend(abc.ABC):
    """Where task states go. ``store`` returns only once the write is durable."""

    #: Databases join chords by polling (``celery.chord_unlock``), as in Celery.
    needs_chord_unlock: bool = True

    async def set_chord_size(self, group_id: str, size: int) -> None:  # noqa: B027
        """Record how many header tasks a chord has (key-value backends)."""

    async def chord_part_return(self, request: Request, state: str,
                                result: Any) -> ChordJoin | None:
        """Count one finished header task; return the join when this one completes it."""
        return None

    async def save_revoked(self, task_id: str, when: float) -> None:  # noqa: B027
        """Persist a revoked id so a restarted worker still refuses the task."""

    async def load_revoked(self, since: float) -> list[tuple[str, float]]:
        """Revoked ids (with their times) newer than ``since`` (epoch seconds)."""
        return []

    async def cleanup(self) -> int:
        """Delete expired results (``celery.backend_cleanup``); returns rows removed."""
        return 0

    def batch_writer(self) -> BatchWriter | None:
        """The writer of task states, for monitoring (None: writes are not batched)."""
        return None

    @abc.abstractmethod
    async def setup(self) -> None:
        """Connect and prepare storage (tables, scripts)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    @abc.abstractmethod
    async def store(self, outcome: TaskOutcome) -> None:
        """Store one state, durably; Celery clients can read it once this returns.

        Raises ``ResultEncodeError`` (before writing anything) for a value the
        result serializer cannot encode.
        """

    @abc.abstractmethod
    async def get(self, task_id: str) -> StoredResult | None:
        """The stored state of ``task_id``, or None when nothing is stored (PENDING)."""

    def describe(self) -> str:
        """A log-safe description of where results go."""
        return type(self).__name__


class ResultEncodeError(Exception):
    """A task returned a value the result serializer cannot encode."""


class ResultCodec:
    """``result_serializer`` encoding of stored values (JSON, or pickle when asked)."""

    def __init__(self, serializer: str) -> None:
        self.name = serializer
        self.content_type = serialization.content_type_of(serializer)
        if self.content_type not in (serialization.JSON, serialization.PICKLE):
            raise ValueError(f"unsupported result_serializer {serializer!r}")
        self._accept = serialization.accepted([serialization.JSON, self.content_type])

    def encode(self, value: Any) -> bytes:
        """Encode, or raise ResultEncodeError naming the value's type."""
        try:
            return serialization.dumps(value, self.content_type)
        except Exception as exc:
            raise ResultEncodeError(
                f"cannot encode result of type {type(value).__name__} as {self.name}: {exc}"
            ) from exc

    def decode(self, raw: bytes | str) -> Any:
        """Decode a stored value."""
        body = raw if isinstance(raw, bytes) else raw.encode()
        return serialization.loads(body, self.content_type, "utf-8", self._accept)
