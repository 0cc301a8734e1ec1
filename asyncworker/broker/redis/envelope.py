"""kombu's Redis message envelope: the JSON object pushed onto a queue's list.

A Celery producer on ``redis://`` pushes, per message::

    {"body": "<base64 of the serialized body>", "content-encoding": "utf-8",
     "content-type": "application/json", "headers": {...task headers...},
     "properties": {"correlation_id": ..., "reply_to": ..., "delivery_mode": 2,
                    "delivery_info": {"exchange": ..., "routing_key": ...},
                    "priority": 0, "body_encoding": "base64",
                    "delivery_tag": "<uuid>"}}

The delivery tag is chosen by the producer and names the message in the
``unacked`` hash while a consumer holds it. Encoding and decoding live here,
apart from the I/O, so that both directions are unit tested against the exact
shape a Celery client writes and reads.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...protocol import OutgoingMessage

PERSISTENT = 2


class EnvelopeError(ValueError):
    """The list item is not a kombu envelope we can deliver (the reason says why)."""


@dataclass(slots=True)
class Envelope:
    """A decoded envelope: the message's properties, and the raw JSON it came as."""

    raw: bytes
    payload: dict[str, Any]
    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    content_encoding: str | None
    correlation_id: str | None
    reply_to: str | None
    priority: int | None
    delivery_tag: str
    exchange: str
    routing_key: str
    redelivered: bool
    extra: dict[str, Any] = field(default_factory=dict)


def encode(message: OutgoingMessage, exchange: str, routing_key: str,
           delivery_tag: str | None = None) -> tuple[str, str]:
    """The envelope of ``message`` as JSON text, and its delivery tag."""
    tag = delivery_tag or str(uuid.uuid4())
    properties: dict[str, Any] = {
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "delivery_mode": PERSISTENT,
        "delivery_info": {"exchange": exchange, "routing_key": routing_key},
        "priority": message.priority or 0,
        "body_encoding": "base64",
        "delivery_tag": tag,
    }
    if message.reply_to is None:
        del properties["reply_to"]
    envelope = {
        "body": base64.b64encode(message.body).decode("ascii"),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers,
        "properties": properties,
    }
    return json.dumps(envelope, default=_jsonable), tag


def _jsonable(value: Any) -> Any:
    # Headers that JSON cannot carry as such (bytes from a hostile producer,
    # datetimes from a plugin) travel as text rather than fail the publish.
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return str(value)


def decode(raw: bytes | str, fallback_tag: str = "") -> Envelope:
    """Decode one list item; ``EnvelopeError`` with a reason when it is not an envelope."""
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise EnvelopeError(f"not a JSON object: {type(payload).__name__}")
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        raise EnvelopeError("no properties object")
    headers = payload.get("headers")
    if headers is None:
        headers = {}
    if not isinstance(headers, dict):
        raise EnvelopeError(f"headers is a {type(headers).__name__}, not an object")
    info = properties.get("delivery_info")
    if not isinstance(info, dict):
        info = {}
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        tag = fallback_tag
    return Envelope(
        raw=data,
        payload=payload,
        body=_body(payload.get("body"), properties.get("body_encoding")),
        headers=headers,
        content_type=_text(payload.get("content-type")),
        content_encoding=_text(payload.get("content-encoding")),
        correlation_id=_text(properties.get("correlation_id")),
        reply_to=_text(properties.get("reply_to")),
        priority=priority_of(properties.get("priority")),
        delivery_tag=tag,
        exchange=str(info.get("exchange") or ""),
        routing_key=str(info.get("routing_key") or ""),
        redelivered=bool(headers.get("redelivered") or info.get("redelivered")),
    )


def _body(body: Any, encoding: Any) -> bytes:
    if body is None:
        return b""
    if not isinstance(body, str):
        raise EnvelopeError(f"body is a {type(body).__name__}, not a string")
    if isinstance(encoding, str) and encoding.lower() == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EnvelopeError(f"body is not base64: {exc}") from None
    if encoding and str(encoding).lower() not in ("utf-8", "utf8"):
        raise EnvelopeError(f"unknown body_encoding {encoding!r}")
    return body.encode("utf-8", "surrogateescape")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def priority_of(value: Any) -> int | None:
    """A priority property as an int (None when absent or not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def redelivered_copy(raw: bytes) -> bytes:
    """The envelope marked redelivered, as kombu marks a restored message.

    An item that is not an envelope comes back as it was (it is restored
    unchanged and dead-lettered by whoever takes it next).
    """
    try:
        payload = json.loads(raw)
        payload["headers"]["redelivered"] = True
        payload["properties"]["delivery_info"]["redelivered"] = True
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return raw
    return json.dumps(payload).encode()
