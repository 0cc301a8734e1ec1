"""Message decoding (v1, v2) and encoding against kombu/Celery's own message builder."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from asyncworker import protocol, serialization
from asyncworker.exceptions import ContentDisallowed, InvalidTaskError
from asyncworker.message import TaskMessage

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
    assert decoded.timelimit == (30.0, 10.0)
    assert (decoded.time_limit, decoded.soft_time_limit) == (30.0, 10.0)
    assert (decoded.group, decoded.group_index) == ("g1", 3)
    assert (decoded.root_id, decoded.parent_id, decoded.shadow) == ("root", "parent", "alias")
    assert decoded.callbacks == [{"task": "cb"}] and decoded.chain == [{"task": "next"}]
    assert decoded.errbacks is None and decoded.chord is None
    assert decoded.embed["callbacks"] == [{"task": "cb"}]
    assert decoded.origin == msg.headers["origin"] and decoded.ignore_result is False
    assert decoded.headers == msg.headers
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
    assert decoded.kwargs == {"a": 1} and decoded.retries == 1 and decoded.eta is None
    assert decoded.timelimit == (5.0, 2.0)
    assert decoded.group == "g" and decoded.callbacks == [{"task": "cb"}]
    assert decoded.chain is None and decoded.root_id == "v1" and decoded.headers == {}


def test_decode_celery_v1_message() -> None:
    from celery import Celery

    app = Celery("unit", set_as_current=False)
    msg = app.amqp.as_task_v1("v1-id", "pkg.task", args=(1,), kwargs={"k": 2}, group_id="g",
                              group_index=1, retries=3, time_limit=9,
                              callbacks=[{"task": "cb"}], chord={"task": "body"})
    decoded = protocol.decode(json.dumps(msg.body).encode(), msg.headers, "application/json",
                              "utf-8", ACCEPT, correlation_id="v1-id")
    assert (decoded.id, decoded.task, decoded.args, decoded.kwargs) == (
        "v1-id", "pkg.task", [1], {"k": 2})
    assert (decoded.group, decoded.group_index, decoded.retries) == ("g", 1, 3)
    assert decoded.timelimit == (9.0, None) and decoded.chord == {"task": "body"}
    assert decoded.callbacks == [{"task": "cb"}] and decoded.correlation_id == "v1-id"


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
    ({"task": "t", "id": "i", "timelimit": ["x", 1]}, b"[[], {}, null]",
     "invalid hard time limit"),
    ({"task": "t", "id": "i", "group_index": "x"}, b"[[], {}, null]", "invalid group_index"),
    ({"task": "t", "id": ""}, b"[[], {}, null]", "missing 'id'"),
    ({"id": "i"}, b'{"id": "i"}', "missing 'task'"),
    ({}, b'{"id": "i", "task": "t", "args": 5}', "args must be a list"),
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


def test_encode_equals_celerys_message() -> None:
    """Header for header and body for body what Celery's as_task_v2 makes."""
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    options: dict[str, Any] = dict(
        eta=eta, expires=eta + timedelta(hours=1), time_limit=30, soft_time_limit=10,
        group_id="g", group_index=2, root_id="r", parent_id="p", shadow="s",
        ignore_result=True, retries=4)
    celery = _celery_message(**options, callbacks=[{"task": "cb"}],
                             errbacks=[{"task": "eb"}], chain=[{"task": "next"}],
                             chord={"task": "body"})
    ours = protocol.encode(TaskMessage.from_options(
        "pkg.task", (1, "a"), {"k": 2}, dict(
            options, task_id="3f1b-id", link={"task": "cb"}, link_error=[{"task": "eb"}],
            chain=[{"task": "next"}], chord={"task": "body"})))
    expected = dict(celery.headers)
    expected["argsrepr"] = "[1, 'a']"  # Celery's repr of its tuple
    assert ours.headers == expected
    assert json.loads(ours.body) == json.loads(json.dumps(celery.body))
    assert ours.correlation_id == celery.properties["correlation_id"]
    assert (ours.content_type, ours.content_encoding) == ("application/json", "utf-8")


def test_encode_defaults() -> None:
    out = protocol.encode(TaskMessage.from_options("t"))
    headers = out.headers
    assert headers["root_id"] == headers["id"] == out.correlation_id
    assert headers["timelimit"] == [None, None] and headers["retries"] == 0
    assert headers["ignore_result"] is False and headers["eta"] is None
    assert headers["origin"] == protocol.origin() and out.expiration_ms is None
    assert json.loads(out.body) == [[], {}, dict.fromkeys(protocol.EMBED_KEYS)]


def test_encode_pickle_and_past_expiry() -> None:
    message = TaskMessage.from_options("t", ["x"], {}, {"expires": -5})
    out = protocol.encode(message, "pickle")
    assert out.content_type == serialization.PICKLE and out.content_encoding == "binary"
    assert out.expiration_ms == 0


def test_extra_headers_kept_but_not_compression_or_x_death() -> None:
    message = TaskMessage.from_options("t", options={"headers": {
        "x-trace": "abc", "compression": "application/x-gzip", "x-death": [{}],
        "task": "forged"}})
    headers = protocol.encode(message).headers
    assert headers["x-trace"] == "abc" and headers["task"] == "t"
    assert "compression" not in headers and "x-death" not in headers


def test_peek_task_id() -> None:
    assert protocol.peek_task_id({"id": b"raw"}, "c") == "raw"
    assert protocol.peek_task_id({}, "c") == "c"
    assert protocol.peek_task_id(None, None) is None


def test_safe_repr_is_bounded() -> None:
    assert len(protocol.safe_repr("x" * 5000)) == protocol.REPR_LIMIT
