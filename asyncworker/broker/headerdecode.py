"""A faster decode of the content header (message properties) for well-formed frames.

A Celery task message carries about twenty headers. pamqp decodes a field
table by slicing the rest of the frame for every value and dispatching each
through two layers of generic functions; in a noop task that was the largest
single cost of the AMQP client. :func:`decode_header` walks the frame once by
offset instead, and builds the same ``ContentHeader`` and ``Basic.Properties``
pamqp would.

It only handles what it can decode exactly as pamqp does: one flag word, the
common field types, lengths that fit. Anything else (a timestamp property,
``f``/``D``/``T`` values, a length that overruns, text that is not UTF-8,
nesting too deep) returns None, and the caller falls back to pamqp's own
decode, so odd or malformed frames get pamqp's result, or its error, exactly
as before (``frames.py`` then turns an error into its marker).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pamqp import header
from pamqp.commands import Basic

_HEAD = struct.Struct(">HHQH")  # class id, weight, body size, first flag word
_U32 = struct.Struct(">I")

_SHORTSTR, _OCTET, _TABLE = 0, 1, 2
# (property, flag bit, kind) in wire order; a set flag without a kind here (the
# timestamp) means "let pamqp do it".
_PROPERTIES: list[tuple[str, int, int | None]] = [
    (name, Basic.Properties.flags[name],
     {"shortstr": _SHORTSTR, "octet": _OCTET, "table": _TABLE}.get(
         getattr(Basic.Properties, "_" + name)))
    for name in Basic.Properties.__slots__
]


class _Unsupported(Exception):
    """Not decodable here: pamqp decodes the frame."""


def decode_header(frame_data: bytes) -> header.ContentHeader | None:
    """The content header of ``frame_data``, or None when pamqp must decode it."""
    try:
        return _decode(frame_data)
    except Exception:  # _Unsupported, IndexError, struct.error, UnicodeDecodeError, ...
        return None


def _decode(data: bytes) -> header.ContentHeader:
    class_id, weight, body_size, flags = _HEAD.unpack_from(data, 0)
    if flags & 1:
        raise _Unsupported("more than one flag word")
    properties = Basic.Properties()
    end = len(data)
    offset = _HEAD.size
    for name, flag, kind in _PROPERTIES:
        if not flags & flag:
            continue
        value: Any
        if kind == _SHORTSTR:
            stop = offset + 1 + data[offset]
            if stop > end:
                raise _Unsupported("short string overruns the frame")
            value = data[offset + 1:stop].decode("utf-8")
            offset = stop
        elif kind == _OCTET:
            value = data[offset]
            offset += 1
        elif kind == _TABLE:
            value, offset = _table(data, offset, end)
        else:
            raise _Unsupported(name)
        setattr(properties, name, value)
    content = header.ContentHeader(weight, body_size, properties)
    content.class_id = class_id
    return content


def _table(data: bytes, offset: int, end: int) -> tuple[dict[str, Any], int]:
    stop = offset + 4 + _U32.unpack_from(data, offset)[0]
    if stop > end:
        raise _Unsupported("table overruns the frame")
    offset += 4
    table: dict[str, Any] = {}
    while offset < stop:
        key_end = offset + 1 + data[offset]
        if key_end >= stop:
            raise _Unsupported("key overruns the table")
        key = data[offset + 1:key_end].decode("utf-8")
        table[key], offset = _value(data, key_end, stop)
    if offset != stop:
        raise _Unsupported("value overruns the table")
    return table, stop


def _array(data: bytes, offset: int, end: int) -> tuple[list[Any], int]:
    stop = offset + 4 + _U32.unpack_from(data, offset)[0]
    if stop > end:
        raise _Unsupported("array overruns the frame")
    offset += 4
    values = []
    while offset < stop:
        value, offset = _value(data, offset, stop)
        values.append(value)
    if offset != stop:
        raise _Unsupported("value overruns the array")
    return values, stop


def _long_string(data: bytes, offset: int, end: int) -> tuple[str | bytes, int]:
    stop = offset + 4 + _U32.unpack_from(data, offset)[0]
    if stop > end:
        raise _Unsupported("long string overruns")
    raw = data[offset + 4:stop]
    try:
        return raw.decode("utf-8"), stop
    except UnicodeDecodeError:
        return raw, stop  # as pamqp: bytes when not UTF-8


def _byte_array(data: bytes, offset: int, end: int) -> tuple[bytearray, int]:
    stop = offset + 4 + _U32.unpack_from(data, offset)[0]
    if stop > end:
        raise _Unsupported("byte array overruns")
    return bytearray(data[offset + 4:stop]), stop


def _fixed(layout: str) -> Callable[[bytes, int, int], tuple[Any, int]]:
    unpack, size = struct.Struct(layout).unpack_from, struct.calcsize(layout)

    def decode(data: bytes, offset: int, end: int) -> tuple[Any, int]:
        if offset + size > end:
            raise _Unsupported("number overruns")
        return unpack(data, offset)[0], offset + size

    return decode


def _boolean(data: bytes, offset: int, end: int) -> tuple[bool, int]:
    if offset >= end:
        raise _Unsupported("boolean overruns")
    return bool(data[offset]), offset + 1


def _void(data: bytes, offset: int, end: int) -> tuple[None, int]:
    return None, offset


# pamqp's TABLE_MAPPING, less the kinds left to it (f, D, T).
_VALUES: dict[int, Callable[[bytes, int, int], tuple[Any, int]]] = {
    ord("t"): _boolean,
    ord("b"): _fixed(">b"),
    ord("B"): _fixed(">B"),
    ord("s"): _fixed(">h"),
    ord("u"): _fixed(">H"),
    ord("I"): _fixed(">i"),
    ord("i"): _fixed(">I"),
    ord("l"): _fixed(">q"),
    ord("L"): _fixed(">q"),
    ord("d"): _fixed(">d"),
    ord("S"): _long_string,
    ord("A"): _array,
    ord("F"): _table,
    ord("V"): _void,
    0: _void,
    ord("x"): _byte_array,
}


def _value(data: bytes, offset: int, end: int) -> tuple[Any, int]:
    decode = _VALUES.get(data[offset])
    if decode is None:
        raise _Unsupported("field type left to pamqp")
    return decode(data, offset + 1, end)
