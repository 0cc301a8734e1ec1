"""Celery task messages on the wire: decode protocol v1 and v2, encode protocol v2.

The broker layer hands over plain values (body bytes, the header table and a
few properties), so this module knows nothing of AMQP libraries and is tested
on its own. It deals with bytes, content types, compression and the shape of
the body; the fields themselves, and how each one is named and converted on
the wire, are defined once in :mod:`asyncworker.message`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from . import serialization
from .exceptions import ContentDisallowed, InvalidTaskError
from .message import (
    EMBED_KEYS,
    REPR_LIMIT,
    TaskMessage,
    new_id,
    origin,
    parse_time,
    required_text,
    safe_repr,
    text,
)

__all__ = [
    "EMBED_KEYS",
    "REPR_LIMIT",
    "MessageTemplate",
    "OutgoingMessage",
    "TaskMessage",
    "decode",
    "encode",
    "encode_v2",
    "new_id",
    "origin",
    "parse_time",
    "peek_task_id",
    "safe_repr",
]


@dataclass(slots=True)
class OutgoingMessage:
    """A task message ready to publish: body bytes, headers and properties."""

    body: bytes
    headers: dict[str, Any]
    content_type: str
    content_encoding: str
    correlation_id: str
    reply_to: str | None
    priority: int | None
    expiration_ms: int | None


@dataclass(slots=True)
class MessageTemplate:
    """One message published many times, each time under a new task id.

    ``placeholder`` stands for the id wherever the message holds it (the
    ``id`` header, ``correlation_id``, ``root_id`` of a workflow's first
    task): a fresh id, so it is nowhere else. :meth:`fill` makes each copy;
    a transport may instead encode the template once and splice each id into
    the bytes (AMQP does, in ``encodings``).
    """

    message: OutgoingMessage
    placeholder: str
    #: Transport encodings of ``message``, by transport, made on first use.
    encodings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, message: OutgoingMessage, own_root: bool) -> MessageTemplate:
        """``message`` with its id (and its ``root_id`` if ``own_root``) as placeholder."""
        placeholder = new_id()
        headers = dict(message.headers, id=placeholder)
        if own_root:
            headers["root_id"] = placeholder
        return cls(replace(message, headers=headers, correlation_id=placeholder), placeholder)

    def fill(self, task_id: str) -> OutgoingMessage:
        """The message with ``task_id`` in place of the placeholder."""
        message, placeholder = self.message, self.placeholder
        headers = {key: task_id if value == placeholder else value
                   for key, value in message.headers.items()}
        return replace(message, headers=headers, correlation_id=task_id)


def _args(task_id: str, args: Any, kwargs: Any) -> None:
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise InvalidTaskError(f"task {task_id}: args must be a list and kwargs a dict")


def _decode_v2(headers: dict[str, Any], payload: Any) -> TaskMessage:
    task_id = required_text(headers, "id")
    name = required_text(headers, "task")
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        raise InvalidTaskError(f"task {task_id}: body must be [args, kwargs, embed]")
    args, kwargs, embed = payload
    _args(task_id, args, kwargs)
    if embed is not None and not isinstance(embed, dict):
        raise InvalidTaskError(f"task {task_id}: embed must be a dict")
    return TaskMessage.from_wire(headers, task_id, name, list(args), kwargs, embed or {},
                                 headers)


def _decode_v1(payload: Any) -> TaskMessage:
    # Protocol 1 carries everything in the body, under the names protocol 2
    # uses for headers, but the group may be called "taskset" and the embed
    # keys sit in the body itself.
    if not isinstance(payload, dict):
        raise InvalidTaskError("protocol 1 body must be a dict")
    task_id = required_text(payload, "id")
    name = required_text(payload, "task")
    args = payload.get("args") or []
    kwargs = payload.get("kwargs") or {}
    _args(task_id, args, kwargs)
    group = payload.get("taskset") or payload.get("group")
    values = dict(payload, group=str(group) if group else None)
    message = TaskMessage.from_wire(values, task_id, name, list(args), kwargs,
                                    dict(payload, chain=None), {})
    message.protocol = 1
    return message


def decode(
    body: bytes,
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    content_encoding: str | None,
    accept: frozenset[str],
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    priority: int | None = None,
    allow_nan: bool = False,
) -> TaskMessage:
    """Decode one task message; raise ``ContentDisallowed`` or ``InvalidTaskError``.

    JSON's NaN and Infinity are refused unless ``allow_nan`` (the
    ``task_json_allow_nan`` setting).
    """
    # The received headers are shared, not copied: the worker only reads them, and
    # with 10,000 tasks in flight a second dict of ~20 entries each is ~10 MB.
    hdrs = headers if isinstance(headers, dict) else dict(headers or {})
    compression = text(hdrs.get("compression"))
    try:
        payload = serialization.loads(body, content_type, content_encoding, accept, compression,
                                      allow_nan=allow_nan)
    except ContentDisallowed:
        raise
    except Exception as exc:
        # JSON, pickle (when allowed) and the decompressors raise assorted errors.
        raise InvalidTaskError(f"undecodable body: {exc}") from exc
    message = _decode_v2(hdrs, payload) if "task" in hdrs else _decode_v1(payload)
    message.reply_to = reply_to
    message.correlation_id = correlation_id
    message.priority = priority
    return message


def peek_task_id(headers: Mapping[str, Any] | None, correlation_id: str | None) -> str | None:
    """Best-effort task id for logging when a message cannot be decoded."""
    if headers and headers.get("id"):
        return text(headers["id"])
    return correlation_id


def encode(message: TaskMessage, serializer: str = serialization.JSON) -> OutgoingMessage:
    """``message`` as a protocol-v2 message that Celery workers accept.

    ``expires`` also becomes the message TTL, as Celery (5.2+) sends it.
    """
    ctype = serialization.content_type_of(serializer)
    body = serialization.dumps([message.args, message.kwargs, message.embed], ctype)
    expiration_ms = None
    if message.expires is not None:
        remaining = message.expires - datetime.now(UTC)
        expiration_ms = max(int(remaining.total_seconds() * 1000), 0)
    return OutgoingMessage(
        body=body,
        headers=message.wire_headers(),
        content_type=ctype,
        content_encoding="utf-8" if ctype == serialization.JSON else "binary",
        correlation_id=message.id,
        reply_to=message.reply_to,
        priority=message.priority,
        expiration_ms=expiration_ms,
    )


def encode_v2(
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    serializer: str = serialization.JSON,
    **options: Any,
) -> OutgoingMessage:
    """Build a protocol-v2 task message from Celery's ``apply_async`` options.

    Shorthand for ``encode(TaskMessage.from_options(...), serializer)``;
    ``reply_to`` is accepted too. Publish options (``queue`` ...) are ignored.
    """
    reply_to = options.pop("reply_to", None)
    message = TaskMessage.from_options(name, args, kwargs, options)
    message.reply_to = reply_to
    return encode(message, serializer)
