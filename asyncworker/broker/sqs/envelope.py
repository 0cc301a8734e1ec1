"""kombu's SQS message format: a JSON envelope, base64-encoded, in the SQS body.

kombu's virtual transports carry an AMQP message as one JSON object::

    {"body": "<task body, base64>", "content-type": ..., "content-encoding": ...,
     "headers": {...},
     "properties": {"correlation_id", "reply_to", "delivery_mode", "priority",
                    "delivery_info": {"exchange", "routing_key"},
                    "body_encoding": "base64", "delivery_tag": "<uuid>"}}

and the SQS transport base64-encodes that JSON again for the SQS message body
(``sqs_base64_encoding``, on by default). On receipt kombu decodes the outer
base64 only when the text is strictly base64 of UTF-8, so JSON sent without
it reads too; :func:`decode` does the same. A message that is not such an
envelope is not dropped: it becomes an :class:`Envelope` whose ``error`` says
why, and the worker dead-letters it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...protocol import OutgoingMessage

_B64 = re.compile(rb"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")


@dataclass(slots=True)
class Envelope:
    """One decoded message: the AMQP-like fields a ``Delivery`` shows."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    content_encoding: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    priority: int | None = None
    exchange: str = ""
    routing_key: str = ""
    #: Why the message is not a kombu envelope (None when it is).
    error: str | None = None


def encode(message: OutgoingMessage, exchange: str, routing_key: str,
           base64_outer: bool = True) -> str:
    """The SQS message body kombu's SQS transport would send for ``message``."""
    envelope = {
        "body": base64.b64encode(message.body).decode(),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": message.headers,
        "properties": {
            "correlation_id": message.correlation_id,
            "reply_to": message.reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": message.priority or 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    # default=str: dead-letter headers may hold times; JSON has no such type.
    text = json.dumps(envelope, default=str)
    return base64.b64encode(text.encode()).decode() if base64_outer else text


def _unwrap(raw: bytes) -> bytes:
    """``raw`` base64-decoded when it is strictly base64 of UTF-8 text (as kombu)."""
    candidate = raw.strip()
    if not _B64.fullmatch(candidate):
        return raw
    try:
        decoded = base64.b64decode(candidate, validate=True)
        decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return raw
    return decoded


def decode(sqs_body: str) -> Envelope:
    """The message an SQS body holds (``error`` set when it is not kombu's envelope)."""
    raw = sqs_body.encode("utf-8", "surrogateescape")
    text = _unwrap(raw)
    try:
        payload = json.loads(text)
    except ValueError:
        return Envelope(body=text, error="malformed SQS message: not a JSON envelope")
    if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
        return Envelope(body=text, error="malformed SQS message: no envelope properties")
    props = payload["properties"]
    headers = payload.get("headers")
    info = props.get("delivery_info")
    info = info if isinstance(info, dict) else {}
    envelope = Envelope(
        body=b"",
        headers=headers if isinstance(headers, dict) else {},
        content_type=_text(payload.get("content-type")),
        content_encoding=_text(payload.get("content-encoding")),
        correlation_id=_text(props.get("correlation_id")),
        reply_to=_text(props.get("reply_to")),
        priority=props["priority"] if isinstance(props.get("priority"), int) else None,
        exchange=_text(info.get("exchange")) or "",
        routing_key=_text(info.get("routing_key")) or "",
    )
    body = payload.get("body")
    if not isinstance(body, str):
        envelope.body, envelope.error = text, "malformed SQS message: no body in the envelope"
    elif props.get("body_encoding") == "base64":
        try:
            envelope.body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            envelope.body, envelope.error = text, "malformed SQS message: body is not base64"
    else:
        envelope.body = body.encode("utf-8", "surrogateescape")
    return envelope


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
