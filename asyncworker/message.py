"""The task message: every field of a Celery task message, defined once.

:class:`TaskMessage` is what one task message carries, whichever protocol
version brought it and whoever sends it. The worker decodes into it
(:mod:`asyncworker.protocol`), ``self.request`` (:class:`asyncworker.task.Request`)
extends it, a retry is a changed copy of it, and the producer (``send_task``
and the canvas) builds one from Celery's ``apply_async`` options.

Each field says, in its declaration, how it travels:

* ``wire``: sent by name, as a protocol-2 header and a protocol-1 body key
  (Celery uses the same names for both), with the function that checks and
  converts the received value and the one that converts it back;
* ``embed``: a key of the body's embed dict (callbacks, errbacks, chain, chord);
* ``option``: the ``apply_async`` / ``send_task`` option that sets it, when
  the producer may set it.

Decoding, encoding and :meth:`TaskMessage.from_options` are driven by those
declarations, so adding a field means adding one line. This module deals in
values only; bytes, content types and AMQP properties are the protocol's.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from .exceptions import InvalidTaskError, Retry

REPR_LIMIT = 1024

#: Checks and converts a received value: ``(value, field name, task id) -> field value``.
Decoder = Callable[[Any, str, str], Any]
#: Converts a field value to what is sent.
Encoder = Callable[[Any], Any]
#: Converts an option value: ``(value, field name) -> field value``.
Coercer = Callable[[Any, str], Any]


# -- values -------------------------------------------------------------------
def parse_time(value: Any, what: str, task_id: str | None = None) -> datetime | None:
    """Parse an ETA/expires value; naive times are UTC as in Celery."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidTaskError(f"invalid {what} value {value!r} for task {task_id}") from exc
    else:
        raise InvalidTaskError(f"invalid {what} value {value!r} for task {task_id}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def safe_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr`` cut to ``limit`` characters, as Celery's argsrepr is."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not stop a publish
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_origin: tuple[int, str] = (0, "")


def origin() -> str:
    """Celery's ``origin`` header: ``gen<pid>@<host>`` (made once per process)."""
    global _origin
    pid = os.getpid()
    if _origin[0] != pid:
        _origin = (pid, f"gen{pid}@{socket.gethostname()}")
    return _origin[1]


def new_id() -> str:
    """A new task id (UUID4 text, as Celery makes them)."""
    return str(uuid.uuid4())


def text(value: Any) -> str | None:
    """A header value as text (AMQP tables may carry bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def required_text(source: Mapping[str, Any], key: str) -> str:
    """``source[key]`` as non-empty text, or ``InvalidTaskError``."""
    value = text(source.get(key))
    if not value:
        raise InvalidTaskError(f"missing {key!r} in task message")
    return value


def finite(value: Any, what: str, error: type[Exception] = InvalidTaskError) -> float:
    """``value`` as a finite float, or ``error``: NaN and infinities are refused
    in every numeric field (a NaN reaching a timer corrupts the event loop)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"invalid {what} {value!r}: not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise error(f"invalid {what} {value!r}: not a finite number")
    return number


def _int(value: Any, what: str, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, float):
        finite(value, what)
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidTaskError(f"invalid {what} {value!r}") from exc


def _optional_number(value: Any, what: str) -> float | None:
    return None if value is None else finite(value, what)


# Decoders: (received value, field name, task id) -> field value. Each is
# called only for a value that is present (not None); what it returns for
# None is the field's value when the message leaves it out.
def _text(value: Any, name: str, task_id: str) -> str | None:
    return value if value.__class__ is str else text(value)


def _index(value: Any, name: str, task_id: str) -> int | None:
    return value if value.__class__ is int else _int(value, name, None)


_INT32 = 2**31


def _count(value: Any, name: str, task_id: str) -> int:
    count = value if value.__class__ is int else _int(value, name, 0) or 0
    if not -_INT32 <= count < _INT32:
        # Result stores keep it in a 32-bit column: refuse before the task runs.
        raise InvalidTaskError(f"invalid {name} {value!r}: out of range")
    return count


def _timelimit(value: Any, name: str, task_id: str) -> tuple[float | None, float | None]:
    # Celery sends [hard, soft] (its protocol document says the reverse; the
    # producer and the worker both use this order).
    if value is None:
        return None, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InvalidTaskError(f"invalid timelimit {value!r}")
    hard = _optional_number(value[0], "hard time limit")
    return hard, _optional_number(value[1], "soft time limit")


def _flag(value: Any, name: str, task_id: str) -> bool | None:
    return None if value is None else bool(value)


# Encoders: field value -> sent value (None: sent as it is).
def _isoformat(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# Option coercers: (option value, field name) -> field value.
def _moment(value: Any, name: str) -> datetime | None:
    """A datetime, ISO text (a signature sent as JSON) or, Celery-style, seconds from now."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.now(UTC) + timedelta(seconds=finite(value, name, ValueError))
    if isinstance(value, str):
        return parse_time(value, name)
    moment: datetime | None = value
    return moment


def _signatures(value: Any, name: str) -> list[Any]:
    """``link=sig`` or ``link=[sig, ...]``: always a list on the wire."""
    return [value] if isinstance(value, dict) else list(value)


_TEXT: tuple[Decoder, Encoder | None] = (_text, None)
_TIME: tuple[Decoder, Encoder | None] = (parse_time, _isoformat)
_INDEX: tuple[Decoder, Encoder | None] = (_index, None)
_COUNT: tuple[Decoder, Encoder | None] = (_count, None)
_TIMELIMIT: tuple[Decoder, Encoder | None] = (_timelimit, list)
_FLAG: tuple[Decoder, Encoder | None] = (_flag, bool)


def _via(wire: tuple[Decoder, Encoder | None] | None = None, *, embed: bool = False,
         option: str | bool = False, coerce: Coercer | None = None) -> dict[str, Any]:
    """A field's metadata: how it travels (see the module docstring).

    ``wire`` is its codec as a header (and v1 body key) of the field's name;
    ``embed`` makes it a key of the embed dict; ``option`` names the producer
    option that sets it (True: the field's own name), whose value ``coerce``
    converts.
    """
    return {"wire": wire, "embed": embed, "option": option, "coerce": coerce}


@dataclass(slots=True)
class TaskMessage:
    """One task message, whatever protocol version carried it or will carry it.

    Decoding fills every field; ``root_id`` then defaults to ``id``. On the
    way out, ``headers`` holds the extra headers to send (the protocol's own
    are made from the fields), ``origin`` defaults to this process and
    ``correlation_id`` is always ``id``, as Celery does.
    """

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    #: Every header as received; on the way out, the extra ones to send.
    headers: dict[str, Any] = field(default_factory=dict, metadata=_via(option=True))
    # Sent by name: a protocol-2 header, a protocol-1 body key.
    shadow: str | None = field(default=None, metadata=_via(_TEXT, option=True))
    eta: datetime | None = field(default=None, metadata=_via(_TIME, option=True, coerce=_moment))
    expires: datetime | None = field(default=None,
                                     metadata=_via(_TIME, option=True, coerce=_moment))
    group: str | None = field(default=None, metadata=_via(_TEXT, option="group_id"))
    group_index: int | None = field(default=None, metadata=_via(_INDEX, option=True))
    retries: int = field(default=0, metadata=_via(_COUNT, option=True))
    #: ``(hard, soft)`` seconds; the options are ``time_limit`` and ``soft_time_limit``.
    timelimit: tuple[float | None, float | None] = field(default=(None, None),
                                                         metadata=_via(_TIMELIMIT))
    root_id: str | None = field(default=None, metadata=_via(_TEXT, option=True))
    parent_id: str | None = field(default=None, metadata=_via(_TEXT, option=True))
    origin: str | None = field(default=None, metadata=_via(_TEXT))
    #: As the message says it: None when it does not.
    ignore_result: bool | None = field(default=None, metadata=_via(_FLAG, option=True))
    # The body's embed dict.
    callbacks: list[Any] | None = field(
        default=None, metadata=_via(embed=True, option="link", coerce=_signatures))
    errbacks: list[Any] | None = field(
        default=None, metadata=_via(embed=True, option="link_error", coerce=_signatures))
    chain: list[Any] | None = field(default=None, metadata=_via(embed=True, option=True))
    chord: dict[str, Any] | None = field(default=None, metadata=_via(embed=True, option=True))
    # AMQP properties.
    reply_to: str | None = None
    correlation_id: str | None = None
    priority: int | None = field(default=None, metadata=_via(option=True))
    #: The protocol version it was decoded from.
    protocol: int = 2

    @property
    def time_limit(self) -> float | None:
        """The hard time limit in seconds, if the message sets one."""
        return self.timelimit[0]

    @property
    def soft_time_limit(self) -> float | None:
        """The soft time limit in seconds, if the message sets one."""
        return self.timelimit[1]

    @property
    def embed(self) -> dict[str, Any]:
        """The body's embed dict, as sent (all four keys, ``None`` when unset)."""
        return {key: getattr(self, key) for key in EMBED_KEYS}

    @classmethod
    def from_wire(cls, source: Mapping[str, Any], task_id: str, name: str, args: list[Any],
                  kwargs: dict[str, Any], embed: Mapping[str, Any],
                  headers: dict[str, Any]) -> Self:
        """A message from its named values (v2 headers or a v1 body) and embed dict.

        ``task_id`` and ``name`` are already checked; the other values are
        checked here and raise ``InvalidTaskError`` when malformed.
        """
        # The hot path: one positional call (the wire fields, then the embed
        # ones, follow headers: checked below the class), and no decoder call
        # for a value the message leaves out.
        get = source.get
        message = cls(*[
            task_id, name, args, kwargs, headers,
            *[absent if (value := get(key)) is None else decode(value, key, task_id)
              for key, decode, absent, _ in _WIRE],
            *map(embed.get, EMBED_KEYS),
        ])
        if not message.root_id:
            message.root_id = task_id  # a message that starts a workflow is its own root
        return message

    @classmethod
    def from_options(cls, name: str, args: Sequence[Any] = (),
                     kwargs: Mapping[str, Any] | None = None,
                     options: Mapping[str, Any] | None = None) -> Self:
        """A new message calling ``name``, from Celery's ``apply_async`` options.

        ``task_id`` (default: a new id), ``countdown`` (sets ``eta``),
        ``time_limit``/``soft_time_limit``, and each field's option (``eta``,
        ``expires`` as a datetime, ISO text or seconds from now, ``link``,
        ``link_error`` as one signature or a list, ``group_id``, ...). Options
        that are None are left out; the publish options (``queue``,
        ``exchange``, ``routing_key``, ``serializer``) are the caller's. Any
        other name raises ``TypeError``, as an unknown keyword would.
        """
        options = options or {}
        values: dict[str, Any] = {}
        for option, value in options.items():
            target = _OPTION_FIELDS.get(option)
            if target is None:
                if option not in OPTIONS:
                    raise TypeError(f"unknown task options: {sorted(options.keys() - OPTIONS)}")
            elif value is not None:
                key, coerce = target
                values[key] = value if coerce is None else coerce(value, key)
        countdown = options.get("countdown")
        if countdown is not None:
            if isinstance(countdown, str):
                countdown = float(countdown)
            values["eta"] = datetime.now(UTC) + timedelta(
                seconds=finite(countdown, "countdown", ValueError))
        hard, soft = options.get("time_limit"), options.get("soft_time_limit")
        if hard is not None or soft is not None:
            values["timelimit"] = (
                None if hard is None else finite(hard, "time_limit", ValueError),
                None if soft is None else finite(soft, "soft_time_limit", ValueError))
        task_id = options.get("task_id") or new_id()
        return cls(task_id, name, list(args), dict(kwargs or {}), **values)

    def next_retry(self, retry: Retry) -> Self:
        """The same message for the next attempt ``self.retry()`` asked for.

        ``retries + 1``, ``eta`` at ``retry.when`` (else now), and the
        ``args``, ``kwargs``, ``time_limit``, ``soft_time_limit`` and
        ``priority`` the retry gives; everything else is kept.
        """
        sig = retry.sig
        args, kwargs = sig.get("args"), sig.get("kwargs")
        options: Mapping[str, Any] = sig.get("options") or {}
        hard, soft = self.timelimit
        return replace(
            self,
            args=self.args if args is None else list(args),
            kwargs=self.kwargs if kwargs is None else dict(kwargs),
            eta=retry.when if isinstance(retry.when, datetime) else datetime.now(UTC),
            retries=self.retries + 1,
            timelimit=(options.get("time_limit", hard), options.get("soft_time_limit", soft)),
            priority=options.get("priority", self.priority),
        )

    def wire_headers(self) -> dict[str, Any]:
        """The protocol-2 headers: the extra ones, then Celery's own from the fields."""
        headers = {k: v for k, v in self.headers.items() if k not in _NOT_CARRIED_OVER}
        headers.update(lang="py", task=self.task, id=self.id)
        for key, _, _, encode in _WIRE:
            value = getattr(self, key)
            headers[key] = value if encode is None else encode(value)
        headers["root_id"] = self.root_id or self.id
        headers["origin"] = self.origin or origin()
        headers["argsrepr"] = safe_repr(self.args)
        headers["kwargsrepr"] = safe_repr(self.kwargs)
        # Celery 5.3+/5.4+ producers always send these (a received message's are kept).
        headers.setdefault("replaced_task_nesting", 0)
        headers.setdefault("stamped_headers", None)
        headers.setdefault("stamps", {})
        return headers


_FIELDS = fields(TaskMessage)
#: ``(name, decoder, value when absent, encoder)`` of each field sent by name.
_WIRE: tuple[tuple[str, Decoder, Any, Encoder | None], ...] = tuple(
    (f.name, f.metadata["wire"][0], f.metadata["wire"][0](None, f.name, ""),
     f.metadata["wire"][1])
    for f in _FIELDS if f.metadata.get("wire"))
#: The keys of the body's embed dict.
EMBED_KEYS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata.get("embed"))
if [f.name for f in _FIELDS[:5 + len(_WIRE) + len(EMBED_KEYS)]] != [
        "id", "task", "args", "kwargs", "headers", *(key for key, *_ in _WIRE), *EMBED_KEYS]:
    raise TypeError("TaskMessage.from_wire needs id, task, args, kwargs, headers, "
                    "the wire fields, then the embed ones, in that order")
#: Option name -> (field name, coercer).
_OPTION_FIELDS: dict[str, tuple[str, Coercer | None]] = {
    (f.name if f.metadata["option"] is True else f.metadata["option"]):
        (f.name, f.metadata["coerce"])
    for f in _FIELDS if f.metadata.get("option")
}
#: Options that set no field of their own.
_OTHER_OPTIONS = frozenset({"task_id", "countdown", "time_limit", "soft_time_limit"})
#: Options about publishing rather than the message (``send_task`` handles them).
PUBLISH_OPTIONS = frozenset({"queue", "exchange", "routing_key", "serializer"})
#: Every option name ``send_task`` (and so ``apply_async`` and the canvas) understands.
OPTIONS = frozenset(_OPTION_FIELDS) | _OTHER_OPTIONS | PUBLISH_OPTIONS
# Headers that described the received copy (its body encoding, its broker
# dead-lettering) and must not be sent again with a new body.
_NOT_CARRIED_OVER = frozenset({"compression", "x-death"})
