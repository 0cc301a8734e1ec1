"""Celery task messages: decode protocol v1 and v2, encode protocol v2.

The broker layer hands over plain values (body bytes, the header table and a
few properties), so this module knows nothing of AMQP libraries and is tested
on its own.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import serialization
from .exceptions import ContentDisallowed, InvalidTaskError

EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")
REPR_LIMIT = 1024


@dataclass(slots=True)
class TaskMessage:
    """One decoded task message, whatever protocol version carried it."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    origin: str | None = None
    ignore_result: bool | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    priority: int | None = None
    protocol: int = 2


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


def _optional_number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTaskError(f"invalid {what} {value!r}")
    return float(value)


def _time_limits(value: Any) -> tuple[float | None, float | None]:
    # Celery sends [hard, soft] (its protocol document says the reverse; the
    # producer and the worker both use this order).
    if value is None:
        return None, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InvalidTaskError(f"invalid timelimit {value!r}")
    hard = _optional_number(value[0], "hard time limit")
    return hard, _optional_number(value[1], "soft time limit")


def _text(headers: Mapping[str, Any], key: str) -> str | None:
    value = headers.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _required_text(source: Mapping[str, Any], key: str) -> str:
    value = _text(source, key)
    if not value:
        raise InvalidTaskError(f"missing {key!r} in task message")
    return value


def _int(value: Any, what: str, default: int | None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidTaskError(f"invalid {what} {value!r}") from exc


def _decode_v2(headers: dict[str, Any], payload: Any) -> TaskMessage:
    task_id = _required_text(headers, "id")
    name = _required_text(headers, "task")
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        raise InvalidTaskError(f"task {task_id}: body must be [args, kwargs, embed]")
    args, kwargs, embed = payload
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise InvalidTaskError(f"task {task_id}: args must be a list and kwargs a dict")
    if embed is not None and not isinstance(embed, dict):
        raise InvalidTaskError(f"task {task_id}: embed must be a dict")
    hard, soft = _time_limits(headers.get("timelimit"))
    ignore = headers.get("ignore_result")
    return TaskMessage(
        id=task_id,
        task=name,
        args=list(args),
        kwargs=kwargs,
        embed={k: (embed or {}).get(k) for k in EMBED_KEYS},
        headers=headers,
        eta=parse_time(headers.get("eta"), "eta", task_id),
        expires=parse_time(headers.get("expires"), "expires", task_id),
        retries=_int(headers.get("retries"), "retries", 0) or 0,
        time_limit=hard,
        soft_time_limit=soft,
        root_id=_text(headers, "root_id") or task_id,
        parent_id=_text(headers, "parent_id"),
        group=_text(headers, "group"),
        group_index=_int(headers.get("group_index"), "group_index", None),
        shadow=_text(headers, "shadow"),
        origin=_text(headers, "origin"),
        ignore_result=None if ignore is None else bool(ignore),
        protocol=2,
    )


def _decode_v1(payload: Any) -> TaskMessage:
    if not isinstance(payload, dict):
        raise InvalidTaskError("protocol 1 body must be a dict")
    task_id = _required_text(payload, "id")
    name = _required_text(payload, "task")
    args = payload.get("args") or []
    kwargs = payload.get("kwargs") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise InvalidTaskError(f"task {task_id}: args must be a list and kwargs a dict")
    hard, soft = _time_limits(payload.get("timelimit"))
    embed = {
        "callbacks": payload.get("callbacks"),
        "errbacks": payload.get("errbacks"),
        "chain": None,
        "chord": payload.get("chord"),
    }
    group = payload.get("taskset") or payload.get("group")
    return TaskMessage(
        id=task_id,
        task=name,
        args=list(args),
        kwargs=kwargs,
        embed=embed,
        headers={},
        eta=parse_time(payload.get("eta"), "eta", task_id),
        expires=parse_time(payload.get("expires"), "expires", task_id),
        retries=_int(payload.get("retries"), "retries", 0) or 0,
        time_limit=hard,
        soft_time_limit=soft,
        root_id=task_id,
        group=str(group) if group else None,
        group_index=_int(payload.get("group_index"), "group_index", None),
        protocol=1,
    )


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
) -> TaskMessage:
    """Decode one task message; raise ``ContentDisallowed`` or ``InvalidTaskError``."""
    hdrs = dict(headers or {})
    compression = _text(hdrs, "compression")
    try:
        payload = serialization.loads(body, content_type, content_encoding, accept, compression)
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
        return _text(headers, "id")
    return correlation_id


def safe_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr`` cut to ``limit`` characters, as Celery's argsrepr is."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not stop a publish
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def origin() -> str:
    """Celery's ``origin`` header: ``gen<pid>@<host>``."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def new_id() -> str:
    """A new task id (UUID4 text, as Celery makes them)."""
    return str(uuid.uuid4())


def encode_v2(
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    task_id: str | None = None,
    eta: datetime | None = None,
    expires: datetime | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    group: str | None = None,
    group_index: int | None = None,
    shadow: str | None = None,
    ignore_result: bool | None = None,
    callbacks: list[Any] | None = None,
    errbacks: list[Any] | None = None,
    chain: list[Any] | None = None,
    chord: dict[str, Any] | None = None,
    extra_headers: Mapping[str, Any] | None = None,
    priority: int | None = None,
    reply_to: str | None = None,
    serializer: str = serialization.JSON,
    origin_text: str | None = None,
) -> OutgoingMessage:
    """Build a protocol-v2 task message that Celery workers accept."""
    task_id = task_id or new_id()
    kwargs = dict(kwargs or {})
    now = datetime.now(UTC)
    headers: dict[str, Any] = dict(extra_headers or {})
    headers.update(
        {
            "lang": "py",
            "task": name,
            "id": task_id,
            "shadow": shadow,
            "eta": eta.isoformat() if eta else None,
            "expires": expires.isoformat() if expires else None,
            "group": group,
            "group_index": group_index,
            "retries": retries,
            "timelimit": [time_limit, soft_time_limit],
            "root_id": root_id or task_id,
            "parent_id": parent_id,
            "argsrepr": safe_repr(list(args)),
            "kwargsrepr": safe_repr(kwargs),
            "origin": origin_text or origin(),
            "ignore_result": bool(ignore_result),
        }
    )
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    ctype = serialization.content_type_of(serializer)
    body = serialization.dumps([list(args), kwargs, embed], ctype)
    expiration_ms = None
    if expires is not None:
        expiration_ms = max(int((expires - now).total_seconds() * 1000), 0)
    return OutgoingMessage(
        body=body,
        headers=headers,
        content_type=ctype,
        content_encoding="utf-8" if ctype == serialization.JSON else "binary",
        correlation_id=task_id,
        reply_to=reply_to,
        priority=priority,
        expiration_ms=expiration_ms,
    )
