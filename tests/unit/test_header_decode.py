"""The fast content-header decode gives pamqp's result, or steps aside for pamqp.

Every frame here is decoded both ways: where the fast path answers, its
``ContentHeader`` must equal pamqp's field for field; where it returns None,
pamqp decodes (or refuses) the frame as before.
"""

from __future__ import annotations

import datetime
import decimal
import random
import uuid
from typing import Any

import pamqp.frame
from celery import Celery
from pamqp import header
from pamqp.commands import Basic

from asyncworker.broker import frames
from asyncworker.broker.headerdecode import decode_header

_SLOTS = Basic.Properties.__slots__


def _pamqp(data: bytes) -> header.ContentHeader | Exception:
    original = frames._original_unmarshal_header or pamqp.frame._unmarshal_header_frame
    try:
        return original(data)  # type: ignore[no-any-return]
    except Exception as exc:
        return exc


def _fields(content: header.ContentHeader) -> tuple[Any, ...]:
    props = content.properties
    return (content.class_id, content.weight, content.body_size,
            *[(name, getattr(props, name), type(getattr(props, name))) for name in _SLOTS])


def _frame(props: Basic.Properties, body_size: int = 77) -> bytes:
    return header.ContentHeader(0, body_size, props).marshal()


def _check(data: bytes) -> bool:
    """True when the fast path answered (and agreed with pamqp)."""
    fast = decode_header(data)
    slow = _pamqp(data)
    if fast is None:
        return False
    assert not isinstance(slow, Exception), (data, slow)
    assert _fields(fast) == _fields(slow)
    assert repr(fast.properties.headers) == repr(slow.properties.headers)
    return True


def _celery_frame() -> bytes:
    task_id = str(uuid.uuid4())
    headers = Celery("t").amqp.as_task_v2(task_id, "bench.noop", [1, "x"], {"k": 2.5},
                                          countdown=3, expires=60).headers
    return _frame(frames.SafeProperties(
        content_type="application/json", content_encoding="utf-8", headers=headers,
        delivery_mode=2, priority=0, correlation_id=task_id, reply_to="r-1"))


def test_celery_messages_decode_fast_and_identically() -> None:
    for _ in range(20):
        assert _check(_celery_frame())


def test_every_supported_field_type() -> None:
    headers = {"s": "text", "b": b"\xff\x00raw", "t": True, "f": False, "i": -5, "big": 2**40,
               "d": 1.5, "none": None, "list": [1, "two", [3], {"x": None}],
               "nested": {"a": {"b": {"c": "deep"}}}, "": "empty key", "ü": "ünïcode"}
    assert _check(_frame(frames.SafeProperties(headers=headers, message_id="m",
                                               expiration="1000", app_id="a", user_id="u",
                                               message_type="t", cluster_id="")))
    assert _check(_frame(Basic.Properties()))  # no properties at all


def test_kinds_left_to_pamqp_fall_back() -> None:
    """A timestamp property and ``T``/``D``/``f`` values are pamqp's to decode."""
    stamp = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    for props in (Basic.Properties(timestamp=stamp),
                  Basic.Properties(headers={"when": stamp}),
                  Basic.Properties(headers={"money": decimal.Decimal("1.25")}),
                  Basic.Properties(headers={"f": 1.5})):  # pamqp encodes a float as "f"
        data = _frame(props)
        assert decode_header(data) is None
        assert not isinstance(_pamqp(data), Exception)


def test_malformed_frames_never_disagree() -> None:
    """Truncated or corrupted frames: the fast path steps aside or agrees with pamqp."""
    rng = random.Random(14)
    base = _celery_frame()
    for _ in range(1500):
        data = bytearray(base)
        if rng.random() < 0.5:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(12, len(data))] = rng.randrange(256)
        _check(bytes(data))


def test_installed_guard_uses_the_fast_path() -> None:
    assert frames.install()
    data = _celery_frame()
    decoded = pamqp.frame._unmarshal_header_frame(data)  # type: ignore[attr-defined]
    assert _fields(decoded) == _fields(decode_header(data))  # type: ignore[arg-type]
