"""Message and result payload encoding, byte-compatible with kombu.

kombu's JSON wraps values JSON has no type for as ``{"__type__": T,
"__value__": V}``; only a dict with exactly those two keys is unwrapped on the
way in. Pickle is refused unless the ``accept_content`` setting names it.
"""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import pickle
import uuid
import zlib
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from .exceptions import ContentDisallowed

JSON = "application/json"
PICKLE = "application/x-python-serialize"

_ALIASES = {
    "json": JSON,
    "pickle": PICKLE,
    "yaml": "application/x-yaml",
    "msgpack": "application/x-msgpack",
}

_DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "application/x-gzip": zlib.decompress,
    "gzip": zlib.decompress,
    "zlib": zlib.decompress,
    "application/x-bz2": bz2.decompress,
    "bzip2": bz2.decompress,
    "application/x-lzma": lzma.decompress,
    "lzma": lzma.decompress,
    "xz": lzma.decompress,
}


def content_type_of(name: str) -> str:
    """Map a serializer name (``json``) or MIME type to the MIME type."""
    return _ALIASES.get(name, name)


def accepted(names: Iterable[str]) -> frozenset[str]:
    """The set of MIME types named by an ``accept_content`` setting."""
    return frozenset(content_type_of(n) for n in names)


def _typed(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


def _default(o: Any) -> Any:
    # datetime before date: a datetime is also a date.
    if isinstance(o, datetime):
        return _typed("datetime", o.isoformat())
    if isinstance(o, date):
        return _typed("date", o.isoformat())
    if isinstance(o, time):
        return _typed("time", o.isoformat())
    if isinstance(o, Decimal):
        return _typed("decimal", str(o))
    if isinstance(o, uuid.UUID):
        return _typed("uuid", {"hex": o.hex})
    if isinstance(o, (bytes, bytearray, memoryview)):
        raw = bytes(o)
        try:
            return _typed("bytes", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _typed("base64", base64.b64encode(raw).decode("ascii"))
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": lambda v: datetime.fromisoformat(v).date(),
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(**v) if isinstance(v, dict) else uuid.UUID(v),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v.encode("ascii")),
}


def _object_hook(o: dict[str, Any]) -> Any:
    if len(o) == 2 and "__type__" in o and "__value__" in o:
        decode = _DECODERS.get(o["__type__"])
        if decode is not None:
            return decode(o["__value__"])
    return o


_encoder = json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False)


def json_dumps(value: Any) -> str:
    """Encode ``value`` as kombu's JSON does."""
    return _encoder.encode(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (refused; see task_json_allow_nan)")


# One decoder for every message: json.loads with a hook builds a new one per call.
_decoder = json.JSONDecoder(object_hook=_object_hook)
# Task messages: NaN and Infinity are not JSON (Python accepts them), and a NaN
# that reaches a timer corrupts the event loop's heap.
_strict_decoder = json.JSONDecoder(object_hook=_object_hook, parse_constant=_refuse_constant)


def json_loads(data: str | bytes, allow_nan: bool = True) -> Any:
    """Decode kombu JSON, unwrapping its type markers (NaN/Infinity refused unless allowed)."""
    decoder = _decoder if allow_nan else _strict_decoder
    return decoder.decode(data if isinstance(data, str) else data.decode("utf-8"))


def dumps(value: Any, content_type: str = JSON) -> bytes:
    """Serialize ``value`` to bytes of ``content_type`` (JSON or pickle)."""
    if content_type == JSON:
        return json_dumps(value).encode("utf-8")
    if content_type == PICKLE:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    raise ContentDisallowed(f"cannot encode content type {content_type!r}")


def loads(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    accept: frozenset[str],
    compression: str | None = None,
    allow_nan: bool = True,
) -> Any:
    """Decode a message body, refusing content types not in ``accept``.

    ``allow_nan=False`` refuses JSON's NaN, Infinity and -Infinity.
    """
    ctype = content_type_of(content_type or JSON)
    if ctype not in accept:
        raise ContentDisallowed(f"content type {ctype!r} is not in accept_content")
    if compression:
        decompress = _DECOMPRESSORS.get(compression)
        if decompress is None:
            raise ContentDisallowed(f"unsupported compression {compression!r}")
        body = decompress(body)
    if ctype == JSON:
        return json_loads(body.decode(content_encoding or "utf-8"), allow_nan)
    if ctype == PICKLE:
        return pickle.loads(body)
    raise ContentDisallowed(f"content type {ctype!r} is accepted but not supported")
