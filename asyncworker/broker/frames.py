"""AMQP frames from and to hostile peers: headers that always encode, headers that fail to decode.

Two gaps in the AMQP client (pamqp under aiormq) that a malformed message
turns into lost messages or a reconnect loop:

* **Encoding.** pamqp picks a field type from the Python value: a ``float``
  becomes a 32-bit ``f`` (1.5e300 overflows, precision is lost) and ``bytes``
  (which pamqp itself returns for a long string that is not UTF-8) is refused.
  :class:`SafeProperties` encodes the ``headers`` table with
  :func:`encode_table`: floats as 64-bit doubles (``d``, as py-amqp and so
  Celery send them), ``bytes`` as a byte array (``x``); every other type as
  pamqp does. NaN and infinities raise ``TypeError`` here: RabbitMQ answers
  a header holding one by closing the whole connection (541 INTERNAL_ERROR).
  Values it cannot encode raise ``TypeError``; the dead-letter path cleans
  those up first (:mod:`asyncworker.deadletter`).

* **Decoding.** A content header (the frame with a message's properties)
  whose ``content_type``, correlation id or a header key is not UTF-8, or
  whose header table is nested thousands deep, makes pamqp raise
  (``UnicodeDecodeError``, ``RecursionError``); aiormq then drops the
  connection, the broker redelivers the message, and the worker reconnects
  for as long as it stays queued. :func:`install` makes that one decode
  failure-tolerant: the ``basic.deliver`` before it has decoded (it carries
  the delivery tag), the body frames after it are raw bytes, and the body
  size is at a fixed offset; so the message is delivered as usual, with
  properties that hold only :data:`UNDECODABLE` (why) and
  :data:`RAW_PROPERTIES` (the undecoded property bytes). The consumer sees
  the marker and dead-letters the message (see ``Consumer._receive``).

* **Memory.** pamqp decodes every header key (and value) as a new string.
  A Celery message's ~20 keys are the same in every message, as are short
  values such as ``lang``, ``argsrepr``, ``origin`` and the task name; the
  same decode step interns them (:func:`shared_strings`), which leaves each
  message held in flight ~1.3 KB lighter for ~2 µs.

The patch replaces one private pamqp function, ``pamqp.frame._unmarshal_header_frame``,
for the whole process, and only on the pamqp major version it was written
against (checked; otherwise it logs a warning and leaves pamqp alone).
"""

from __future__ import annotations

import datetime as _datetime
import decimal as _decimal
import math
import struct
import sys
import time as _time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pamqp.frame
from pamqp import encode, header
from pamqp.commands import Basic

from ..logging import get_logger

log = get_logger("broker")

#: Header set on a delivery whose properties could not be decoded: the reason.
UNDECODABLE = "x-asyncworker-undecodable"
#: Beside it: the undecoded property bytes (flags and values) as a byte array.
RAW_PROPERTIES = "x-asyncworker-raw-properties"
#: The pamqp major version the decode patch is written against.
PAMQP_MAJOR = "4"


# -- encoding ---------------------------------------------------------------------
def encode_value(value: Any) -> bytes:
    """One table value, with its type octet; ``TypeError`` when it has no AMQP type."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        # Subclasses (an IntEnum, a str subclass) encode as their base type.
        for kind, candidate in _ENCODERS.items():
            if isinstance(value, kind):
                encoder = candidate
                break
        else:
            raise TypeError(f"no AMQP field type for {type(value).__name__}")
    return encoder(value)


def encode_table(table: dict[str, Any]) -> bytes:
    """An AMQP field table: pamqp's layout, with doubles and byte arrays (see above)."""
    parts = []
    for key, value in table.items():
        parts.append(encode.short_string(key))
        try:
            parts.append(encode_value(value))
        except TypeError as err:
            raise TypeError(f"header {key!r}: {err}") from err
    data = b"".join(parts)
    return struct.pack(">I", len(data)) + data


def _encode_array(values: list[Any]) -> bytes:
    data = b"".join(encode_value(v) for v in values)
    return struct.pack(">I", len(data)) + data


def _int(value: int) -> bytes:
    return encode.table_integer(value)


def _double(value: float) -> bytes:
    if not math.isfinite(value):
        raise TypeError(f"{value} in a header: RabbitMQ closes the connection on it")
    return b"d" + encode.double(value)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    # bool before int: a bool is an int.
    bool: lambda v: b"t" + encode.boolean(v),
    int: _int,
    float: _double,
    str: lambda v: b"S" + encode.long_string(v),
    bytes: lambda v: b"x" + encode.byte_array(bytearray(v)),
    bytearray: lambda v: b"x" + encode.byte_array(v),
    dict: lambda v: b"F" + encode_table(v),
    list: lambda v: b"A" + _encode_array(v),
    tuple: lambda v: b"A" + _encode_array(list(v)),
    type(None): lambda v: b"V",
    _decimal.Decimal: lambda v: b"D" + encode.decimal(v),
    _datetime.datetime: lambda v: b"T" + encode.timestamp(v),
    _time.struct_time: lambda v: b"T" + encode.timestamp(v),
}


class SafeProperties(Basic.Properties):
    """``basic.publish`` properties whose headers go through :func:`encode_table`."""

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return encode_table(value)
        return super().encode_property(name, value)


# -- decoding ---------------------------------------------------------------------
_original_unmarshal_header: Callable[[bytes], header.ContentHeader] | None = None


def _tolerant_unmarshal_header(frame_data: bytes) -> header.ContentHeader:
    """pamqp's content-header decode; on failure, a marker header of the same body size."""
    assert _original_unmarshal_header is not None
    try:
        decoded = _original_unmarshal_header(frame_data)
    except Exception as exc:  # UnmarshalingException, RecursionError, ...
        if len(frame_data) < 12:
            raise  # not even the body size: nothing to stay in step with
        _class_id, weight, body_size = struct.unpack(">HHQ", frame_data[:12])
        cause = exc.__cause__ or exc
        reason = f"undecodable message properties: {type(cause).__name__}: {cause}"[:500]
        log.warning("undecodable message properties; delivering a marker instead",
                  reason=reason, body_size=body_size)
        return header.ContentHeader(weight, body_size, Basic.Properties(headers={
            UNDECODABLE: reason, RAW_PROPERTIES: bytearray(frame_data[12:])}))
    properties = decoded.properties
    if properties.headers:
        properties.headers = shared_strings(properties.headers)
    return decoded


#: Longer strings are ids (36 characters) or payload-specific: not worth sharing.
_SHARED_MAX = 32


def shared_strings(headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` with its keys, and its short top-level string values, interned."""
    intern = sys.intern
    return {intern(key): (intern(value) if value.__class__ is str
                          and len(value) <= _SHARED_MAX else value)
            for key, value in headers.items()}


def install() -> bool:
    """Make content-header decoding failure-tolerant (once per process); True when active."""
    global _original_unmarshal_header
    if _original_unmarshal_header is not None:
        return True
    version = metadata.version("pamqp")
    current = getattr(pamqp.frame, "_unmarshal_header_frame", None)
    if version.split(".")[0] != PAMQP_MAJOR or current is None:
        log.warning("undecodable-frame guard not installed: untested pamqp version; a "
                    "message with undecodable properties will drop the connection",
                    pamqp=version)
        return False
    _original_unmarshal_header = current
    pamqp.frame._unmarshal_header_frame = _tolerant_unmarshal_header  # type: ignore[attr-defined]
    return True


def undecodable_reason(headers: dict[str, Any]) -> str | None:
    """Why the properties of a delivery could not be decoded, or None when they could."""
    reason = headers.get(UNDECODABLE)
    return None if reason is None else str(reason)
