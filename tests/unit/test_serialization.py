"""kombu-compatible JSON: our encoding is what kombu decodes and the reverse."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from kombu.utils import json as kombu_json

from asyncworker import serialization
from asyncworker.exceptions import ContentDisallowed

VALUES = [
    datetime(2026, 5, 4, 3, 2, 1, 999, tzinfo=UTC),
    datetime(2026, 5, 4, 3, 2, 1),
    date(2026, 1, 31),
    time(12, 30, 5),
    Decimal("10.0100"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"plain utf-8",
    bytes([0xFF, 0xFE, 0x00]),
    {"nested": [1, 2.5, None, True, "x", {"d": Decimal("1")}]},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_kombu_reads_what_we_write(value: object) -> None:
    assert kombu_json.loads(serialization.json_dumps(value)) == value


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_we_read_what_kombu_writes(value: object) -> None:
    assert serialization.json_loads(kombu_json.dumps(value)) == value


def test_only_exact_type_markers_are_unwrapped() -> None:
    text = '{"__type__": "decimal", "__value__": "1.5", "extra": 1}'
    assert serialization.json_loads(text) == {"__type__": "decimal", "__value__": "1.5",
                                              "extra": 1}
    assert serialization.json_loads('{"__type__": "nope", "__value__": 1}') == {
        "__type__": "nope", "__value__": 1}


def test_old_kombu_uuid_with_version_is_read() -> None:
    value = uuid.uuid4()
    text = json.dumps({"__type__": "uuid", "__value__": {"hex": value.hex, "version": 4}})
    assert serialization.json_loads(text) == value


def test_pickle_refused_unless_accepted() -> None:
    body = serialization.dumps([1], serialization.PICKLE)
    with pytest.raises(ContentDisallowed):
        serialization.loads(body, serialization.PICKLE, "binary",
                            serialization.accepted(["json"]))
    assert serialization.loads(body, serialization.PICKLE, "binary",
                               serialization.accepted(["json", "pickle"])) == [1]


def test_unknown_compression_refused() -> None:
    with pytest.raises(ContentDisallowed):
        serialization.loads(b"[]", "application/json", "utf-8",
                            serialization.accepted(["json"]), compression="application/x-rar")


def test_unserializable_value_raises_type_error() -> None:
    with pytest.raises(TypeError):
        serialization.json_dumps(object())
