"""Message decoding (v1, v2) and encoding against kombu/Celery's own message builder."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from asyncworker import protocol, serialization
from asyncworker.exceptions import ContentDisallowed, InvalidTaskError

ACCEPT = serialization.accepted(["json"])


def _celery_message(**options: Any) -> Any:
    """A message as Celery's producer builds it (headers, properties, body)."""
    from celery import Celery

    app = Celery("unit", set_as_current=False)
    return app.amqp.as_task_v2("3f1b-id", "pkg.task", args=(1, "a"), kwargs={"k": 2}, **options)


def _decode_celery(msg: Any, **kw: Any) -> protocol.TaskMessage:
    body = json.dumps(msg.body).encode()
    return protocol.decode(body, msg.headers, "application/json", "utf-8", ACCEPT, **kw)


def test_decode_celery_v2_message() -> None:
    eta = datetime(2030, 1, 1, 12, tzinfo=UTC)
    msg = _celery_message(eta=eta, expires=eta + timedelta(hours=1), retries=2,
                          time_limit=30, soft_time_limit=10, group_id="g1", group_index=3,
                          root_id="root", parent_id="parent", shadow="alias",
                          callbacks=[{"task": "cb"}], chain=[{"task": "next"}])
    decoded = _decode_celery(msg, priority=5)
    assert (decoded.id, decoded.task) == ("3f1b-id", "pkg.task")
    assert decoded.args == [1, "a"] and decoded.kwargs == {"k": 2}
    assert decoded.eta == eta and decoded.expires == eta + timedelta(hours=1)
    assert decoded.retries == 2
    assert (decoded.time_limit, decoded.soft_time_limit) == (30.0, 10.0)
    assert (decoded.group, decoded.group_index) == ("g1", 3)
    assert (decoded.root_id, decoded.parent_id, decoded.shadow) == ("root", "parent", "alias")
    assert decoded.embed["callbacks"] == [{"task": "cb"}]
    assert decoded.embed["chain"] == [{"task": "next"}]
    assert decoded.priority == 5 and decoded.protocol == 2


def test_naive_eta_is_utc_and_offsets_are_kept() -> None:
    headers = {"task": "t", "id": "i", "eta": "2030-01-01T10:00:00",
               "expires": "2030-01-01T10:00:00+02:00"}
    decoded = protocol.decode(json.dumps([[], {}, None]).encode(), headers, "application/json",
                              "utf-8", ACCEPT)
    assert decoded.eta == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert decoded.expires == datetime(2030, 1, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    assert decoded.root_id == "i"


def test_decode_v1() -> None:
    body = json.dumps({"task": "t1", "id": "v1", "args": [1], "kwargs": {"a": 1},
                       "retries": 1, "eta": None, "timelimit": [5, 2], "taskset": "g",
                       "callbacks": [{"task": "cb"}]}).encode()
    decoded = protocol.decode(body, {}, "application/json", "utf-8", ACCEPT)
    assert decoded.protocol == 1 and decoded.task == "t1" and decoded.args == [1]
    assert (decoded.time_limit, decoded.soft_time_limit) == (5.0, 2.0)
    assert decoded.group == "g" and decoded.embed["callbacks"] == [{"task": "cb"}]


def test_compressed_body() -> None:
    body = zlib.compress(json.dumps([[2], {}, None]).encode())
    decoded = protocol.decode(body, {"task": "t", "id": "i", "compression": "application/x-gzip"},
                              "application/json", "utf-8", ACCEPT)
    assert decoded.args == [2]


@pytest.mark.parametrize(("headers", "body", "match"), [
    ({"task": "t"}, b"[[], {}, null]", "missing 'id'"),
    ({"task": "t", "id": "i"}, b"{}", "body must be"),
    ({"task": "t", "id": "i"}, b"[1, {}, null]", "args must be a list"),
    ({"task": "t", "id": "i"}, b"[[], {}, 5]", "embed must be a dict"),
    ({"task": "t", "id": "i", "eta": "tomorrow"}, b"[[], {}, null]", "invalid eta"),
    ({"task": "t", "id": "i", "expires": 12}, b"[[], {}, null]", "invalid expires"),
    ({"task": "t", "id": "i", "timelimit": [1]}, b"[[], {}, null]", "invalid timelimit"),
    ({"task": "t", "id": "i", "retries": "x"}, b"[[], {}, null]", "invalid retries"),
    ({"task": "t", "id": "i"}, b"[[], {", "undecodable body"),
    ({"task": "t", "id": "i"}, b"\xff\xfe", "undecodable body"),
    ({}, b"[]", "protocol 1 body must be a dict"),
])
def test_invalid_messages(headers: dict[str, Any], body: bytes, match: str) -> None:
    with pytest.raises(InvalidTaskError, match=match):
        protocol.decode(body, headers, "application/json", "utf-8", ACCEPT)


def test_disallowed_content_type() -> None:
    with pytest.raises(ContentDisallowed):
        protocol.decode(b"x: 1", {"task": "t", "id": "i"}, "application/x-yaml", "utf-8", ACCEPT)


def test_encode_v2_matches_celery_layout() -> None:
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    out = protocol.encode_v2("pkg.task", (1, 2), {"k": 1}, task_id="abc", eta=eta,
                             expires=datetime.now(UTC) + timedelta(seconds=60),
                             time_limit=30, soft_time_limit=10, priority=4)
    celery = _celery_message()
    assert set(celery.headers) <= set(out.headers) | {"stamped_headers", "stamps",
                                                      "replaced_task_nesting"}
    assert out.headers["timelimit"] == [30, 10]  # [hard, soft]
    assert out.headers["eta"] == eta.isoformat()
    assert out.correlation_id == "abc" and out.priority == 4
    assert 0 < (out.expiration_ms or 0) <= 60000
    args, kwargs, embed = json.loads(out.body)
    assert (args, kwargs) == ([1, 2], {"k": 1})
    assert set(embed) == {"callbacks", "errbacks", "chain", "chord"}
    # And it decodes back to the same request.
    decoded = protocol.decode(out.body, out.headers, out.content_type, out.content_encoding,
                              ACCEPT)
    assert (decoded.id, decoded.args, decoded.eta) == ("abc", [1, 2], eta)


def test_safe_repr_is_bounded() -> None:
    assert len(protocol.safe_repr("x" * 5000)) == protocol.REPR_LIMIT
