"""Hostile input at the edges: dead-letter headers that always encode, frames that do
not decode, non-finite numbers, NaN timers."""

from __future__ import annotations

import asyncio
import json
import math
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pamqp.frame
import pytest
from pamqp import constants, decode
from pamqp import header as amqp_header
from pamqp.commands import Basic

from asyncworker import protocol, serialization
from asyncworker.broker import frames
from asyncworker.broker.amqp import properties
from asyncworker.broker.memory import MemoryBroker, MemoryDelivery, StoredMessage
from asyncworker.deadletter import (
    REASON,
    SANITIZED,
    DeadLetters,
    describe,
    dlq_spec,
    sanitize_headers,
)
from asyncworker.exceptions import InvalidTaskError
from asyncworker.message import TaskMessage
from asyncworker.protocol import OutgoingMessage
from asyncworker.settings import Settings
from asyncworker.worker.guards import guard_timers
from asyncworker.worker.limits import parse_rate


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


HOSTILE: dict[Any, Any] = {
    "bad-utf8": b"\xff\xfe task \xc3",
    "huge-float": 1.5e300,
    "nan": math.nan,
    "inf": -math.inf,
    "precise": 0.1,
    "big-int": 2**70,
    "surrogate": "a\udc80b",
    "deep": _nested(50),
    "object": _Opaque(),
    "decimal": Decimal("1e400"),
    "tuple": (1, "two", b"\x80"),
    7: "an int key",
    "fine": {"list": [1, None, True, "x", datetime(2026, 1, 1, tzinfo=UTC)]},
}


def _roundtrip(table: dict[str, Any]) -> dict[str, Any]:
    """Encode as a publish would, decode as a consumer would."""
    _, decoded = decode.field_table(frames.encode_table(table))
    return decoded


def test_sanitized_hostile_headers_encode_and_keep_their_values() -> None:
    # What pamqp alone does with two of them (the copy was lost):
    with pytest.raises(TypeError):
        Basic.Properties(headers={"x": b"\xff"}).marshal()
    with pytest.raises(OverflowError):
        Basic.Properties(headers={"x": 1.5e300}).marshal()
    headers, notes = sanitize_headers(HOSTILE)
    back = _roundtrip(headers)
    assert back["bad-utf8"] == bytearray(b"\xff\xfe task \xc3")  # its bytes, untouched
    assert back["huge-float"] == 1.5e300  # a double, not an overflowing 32-bit float
    assert (back["nan"], back["inf"]) == ("nan", "-inf")  # RabbitMQ refuses them as doubles
    assert back["precise"] == 0.1
    assert back["big-int"] == repr(2**70)
    assert back["surrogate"] == bytearray("a\udc80b".encode("utf-8", "surrogatepass"))
    assert back["object"] == "<opaque>"
    assert back["decimal"] == repr(Decimal("1e400"))
    assert back["tuple"] == [1, "two", bytearray(b"\x80")]
    assert back["7"] == "an int key"
    assert back["fine"]["list"][:4] == [1, None, True, "x"]
    depth, node = 0, back["deep"]
    while isinstance(node, dict):
        node, depth = node["n"], depth + 1
    assert isinstance(node, str) and depth < 40  # cut to text, not dropped
    joined = "\n".join(notes)
    for key in ("bad-utf8", "big-int", "surrogate", "object", "decimal", "7", "deep"):
        assert key in joined
    assert "huge-float" not in joined and "fine" not in joined and "nan" in joined
    with pytest.raises(TypeError, match="RabbitMQ"):
        frames.encode_table({"x": math.nan})


def test_publish_properties_encode_floats_as_doubles() -> None:
    props = properties(OutgoingMessage(b"{}", {"eta": 1.5e300, "x": 0.1}, "application/json",
                                       "utf-8", "id-1", None, None, None))
    raw = props.marshal()
    decoded = amqp_header.ContentHeader()
    decoded.unmarshal(struct.pack(">HHQ", 60, 0, 2) + raw)
    assert decoded.properties.headers == {"eta": 1.5e300, "x": 0.1}


def _content_header_frame(properties_bytes: bytes, body_size: int = 5) -> bytes:
    payload = struct.pack(">HHQ", 60, 0, body_size) + properties_bytes
    return (struct.pack(">BHI", constants.FRAME_HEADER, 1, len(payload)) + payload
            + constants.FRAME_END_CHAR)


def _props(flags: int, *fields: bytes) -> bytes:
    return struct.pack(">H", flags) + b"".join(fields)


def _nested_table_bytes(depth: int) -> bytes:
    table = b"\x00\x00\x00\x00"
    for _ in range(depth):
        entry = b"\x01kF" + table
        table = struct.pack(">I", len(entry)) + entry
    return table


UNDECODABLE_PROPERTIES = {
    # content_type is bit 15, correlation_id bit 10, headers bit 13.
    "content_type not UTF-8": _props(1 << 15, b"\x03\xff\xfe\xfd"),
    "correlation_id not UTF-8": _props(1 << 10, b"\x02\xc3\x28"),
    "header key not UTF-8": _props(1 << 13, struct.pack(">I", 4) + b"\x02\xff\xfeV"),
    "headers nested 3,000 deep": _props(1 << 13, _nested_table_bytes(3000)),
}


@pytest.mark.parametrize("case", sorted(UNDECODABLE_PROPERTIES))
def test_undecodable_content_header_becomes_a_marker(case: str) -> None:
    frame = _content_header_frame(UNDECODABLE_PROPERTIES[case], body_size=1234)
    assert frames.install()
    consumed, channel, value = pamqp.frame.unmarshal(frame)
    assert consumed == len(frame) and channel == 1
    assert isinstance(value, amqp_header.ContentHeader)
    assert value.body_size == 1234  # the body frames that follow still add up
    headers = value.properties.headers
    assert frames.undecodable_reason(headers) is not None
    assert "undecodable message properties" in headers[frames.UNDECODABLE]
    assert headers[frames.RAW_PROPERTIES] == bytearray(UNDECODABLE_PROPERTIES[case])


def test_decodable_content_header_is_untouched() -> None:
    assert frames.install()
    good = _props(1 << 15 | 1 << 13, b"\x10application/json",
                  frames.encode_table({"id": "x", "n": 1.5}))
    _, _, value = pamqp.frame.unmarshal(_content_header_frame(good))
    assert isinstance(value, amqp_header.ContentHeader)
    assert value.properties.content_type == "application/json"
    assert value.properties.headers == {"id": "x", "n": 1.5}
    assert frames.undecodable_reason(value.properties.headers) is None


def test_guard_refuses_nan_timers_and_keeps_the_loop_working() -> None:
    async def scenario() -> list[str]:
        assert guard_timers(asyncio.get_running_loop())
        seen = []
        with pytest.raises(ValueError, match="NaN"):
            await asyncio.sleep(math.nan)
        seen.append("refused")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(math.inf), 0.01)  # inf stays allowed
        await asyncio.sleep(0.001)  # timers still fire in order
        seen.append("slept")
        return seen

    assert asyncio.run(scenario()) == ["refused", "slept"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_refused_unless_allowed(constant: str) -> None:
    body = f"[[{constant}], {{}}, {{}}]".encode()
    headers = {"task": "t", "id": "i", "lang": "py"}
    accept = serialization.accepted(["json"])
    with pytest.raises(InvalidTaskError, match="task_json_allow_nan"):
        protocol.decode(body, headers, "application/json", "utf-8", accept)
    message = protocol.decode(body, headers, "application/json", "utf-8", accept,
                              allow_nan=True)
    assert not math.isfinite(message.args[0])
    # Results (our own encoding) still read back as before.
    assert math.isnan(serialization.json_loads(json.dumps(math.nan)))


@pytest.mark.parametrize(("field", "value"), [
    ("timelimit", [math.nan, None]), ("timelimit", [None, math.inf]),
    ("timelimit", [10**400, None]), ("retries", math.inf), ("retries", math.nan),
    ("group_index", -math.inf), ("retries", 2**63 - 1),
])
def test_non_finite_message_fields_are_refused(field: str, value: Any) -> None:
    with pytest.raises(InvalidTaskError, match="invalid"):
        TaskMessage.from_wire({field: value}, "id", "t", [], {}, {}, {})


@pytest.mark.parametrize("option", ["countdown", "time_limit", "soft_time_limit", "expires",
                                    "eta"])
def test_non_finite_options_are_refused(option: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        TaskMessage.from_options("t", options={option: math.nan})


def test_non_finite_rate_limits_are_refused() -> None:
    from asyncworker.exceptions import ImproperlyConfigured

    for rate in (math.nan, math.inf, "nan/s", "inf/m"):
        with pytest.raises(ImproperlyConfigured):
            parse_rate(rate)
    assert parse_rate("10/s") == 10


# -- dead letters through a broker that encodes as AMQP does -----------------------
class EncodingBroker(MemoryBroker):
    """Encodes each publish's properties as the AMQP broker would; can refuse some."""

    def __init__(self, refuse: int = 0) -> None:
        super().__init__()
        self.refuse = refuse

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        properties(message).marshal()
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("publish refused")
        await super().publish(exchange, routing_key, message)


def _delivery(broker: MemoryBroker) -> MemoryDelivery:
    from asyncworker.broker.topology import ExchangeSpec, QueueSpec

    broker.declare(QueueSpec("q", ExchangeSpec(""), "q"))
    message = OutgoingMessage(b"\x00 body \xff", dict(HOSTILE, id="task-1"),
                              "application/json", "utf-8", "task-1", None, None, None)
    return MemoryDelivery(broker, StoredMessage(message, "ex", "rk"), "q")


def _dead_letters(broker: MemoryBroker) -> DeadLetters:
    from asyncworker.broker.topology import Topology

    return DeadLetters(broker, Topology(Settings()), Settings(worker_nodename="w@h"))


@pytest.mark.parametrize("refuse", [0, 1])
def test_dead_letter_of_hostile_message_is_published_then_acked(refuse: int) -> None:
    broker = EncodingBroker(refuse)
    delivery = _delivery(broker)
    kept = asyncio.run(_dead_letters(broker).reject(delivery, "bad input"))
    assert kept
    assert broker.acked == [delivery] and not broker.rejected
    [stored] = broker.queues[dlq_spec("q", ".dlq").name].ready
    assert stored.message.body == b"\x00 body \xff"
    assert stored.message.headers[REASON] == "bad input"
    letter = describe(MemoryDelivery(broker, stored, "q.dlq"))
    assert (letter.task_id, letter.reason, letter.routing_key) == ("task-1", "bad input", "rk")
    if refuse:  # the minimal copy: body, reason, origin and id only
        assert "bad-utf8" not in stored.message.headers
    else:
        assert stored.message.headers["bad-utf8"] == bytearray(b"\xff\xfe task \xc3")
        assert any("bad-utf8" in note for note in stored.message.headers[SANITIZED])


def test_dead_letter_that_cannot_be_published_is_requeued_not_dropped() -> None:
    broker = EncodingBroker(refuse=2)
    delivery = _delivery(broker)
    kept = asyncio.run(_dead_letters(broker).reject(delivery, "bad input"))
    assert not kept
    assert broker.rejected == [(delivery, True)] and not broker.acked


def test_time_limit_control_values_must_be_finite() -> None:
    from asyncworker.control.limits import _seconds

    for value in ("nan", "inf", math.nan):
        with pytest.raises(ValueError, match="finite"):
            _seconds(value)
    assert _seconds("2.5") == 2.5 and _seconds("") is None
