"""The task message: one structure for decode, self.request, retries, the producer, canvas."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncworker import protocol, serialization
from asyncworker.app import App
from asyncworker.canvas import Canvas
from asyncworker.exceptions import InvalidTaskError, Retry
from asyncworker.message import EMBED_KEYS, OPTIONS, TaskMessage
from asyncworker.task import Request
from asyncworker.worker.retry import retry_message

ACCEPT = serialization.accepted(["json"])
DELIVERY = {"exchange": "", "routing_key": "q", "priority": 3, "redelivered": False}


def _decode(out: protocol.OutgoingMessage, **props: Any) -> TaskMessage:
    return protocol.decode(out.body, out.headers, out.content_type, out.content_encoding,
                           ACCEPT, **props)


def _request(message: TaskMessage, ignore_result: bool = False) -> Request:
    return Request.from_message(message, hostname="w@h", delivery_info=dict(DELIVERY),
                                ignore_result=ignore_result)


# -- the producer's options ------------------------------------------------------
def test_from_options_maps_celery_names() -> None:
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    message = TaskMessage.from_options("t", (1,), {"k": 2}, {
        "task_id": "id1", "eta": eta, "group_id": "g", "group_index": 0, "link": {"task": "cb"},
        "link_error": [{"task": "eb"}], "time_limit": 5, "headers": {"x": 1}, "priority": 7,
        "retries": 2, "queue": "ignored here", "serializer": "json", "shadow": None})
    assert (message.id, message.task, message.args, message.kwargs) == ("id1", "t", [1], {"k": 2})
    assert (message.eta, message.group, message.group_index) == (eta, "g", 0)
    assert message.callbacks == [{"task": "cb"}] and message.errbacks == [{"task": "eb"}]
    assert message.timelimit == (5, None) and message.headers == {"x": 1}
    assert (message.priority, message.retries, message.shadow) == (7, 2, None)


def test_from_options_times() -> None:
    before = datetime.now(UTC)
    message = TaskMessage.from_options("t", options={"countdown": 10, "expires": 60,
                                                     "eta": "2000-01-01T00:00:00"})
    assert message.eta is not None and message.expires is not None
    assert before + timedelta(seconds=10) <= message.eta <= datetime.now(UTC) + timedelta(
        seconds=10)  # countdown wins over eta, as in Celery
    assert before + timedelta(seconds=60) <= message.expires
    parsed = TaskMessage.from_options("t", options={"expires": "2030-01-01T00:00:00Z"})
    assert parsed.expires == datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidTaskError, match="invalid eta"):
        TaskMessage.from_options("t", options={"eta": "soon"})


def test_from_options_refuses_unknown_names() -> None:
    with pytest.raises(TypeError, match="bogus"):
        TaskMessage.from_options("t", options={"bogus": 1})
    assert TaskMessage.from_options("t").id != TaskMessage.from_options("t").id


def test_option_names_are_celerys() -> None:
    assert {"task_id", "countdown", "eta", "expires", "queue", "exchange", "routing_key",
            "priority", "headers", "time_limit", "soft_time_limit", "ignore_result", "shadow",
            "parent_id", "root_id", "group_id", "group_index", "retries", "link",
            "link_error", "chain", "chord", "serializer"} == OPTIONS
    assert EMBED_KEYS == ("callbacks", "errbacks", "chain", "chord")


def test_round_trip_keeps_every_field() -> None:
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    sent = TaskMessage.from_options("t", [1, "a"], {"k": [2]}, {
        "task_id": "i", "eta": eta, "expires": eta + timedelta(days=1), "retries": 3,
        "time_limit": 10, "soft_time_limit": 5, "root_id": "r", "parent_id": "p",
        "group_id": "g", "group_index": 4, "shadow": "s", "ignore_result": True,
        "link": [{"task": "cb"}], "link_error": [{"task": "eb"}], "chain": [{"task": "c"}],
        "chord": {"task": "body"}, "headers": {"x-h": "v"}, "priority": 2})
    sent.origin, sent.reply_to = "gen1@host", "reply"
    out = protocol.encode(sent)
    got = _decode(out, reply_to=out.reply_to, correlation_id=out.correlation_id,
                  priority=out.priority)
    for f in fields(TaskMessage):
        if f.name not in ("headers", "correlation_id"):
            assert getattr(got, f.name) == getattr(sent, f.name), f.name
    assert got.headers["x-h"] == "v" and got.correlation_id == "i"


# -- self.request ----------------------------------------------------------------
def test_request_from_message_shares_the_message() -> None:
    message = TaskMessage.from_options("t", [1], {"k": 1}, {"link": {"task": "cb"},
                                                            "time_limit": 3})
    request = _request(message)
    for f in fields(TaskMessage):
        if f.name != "ignore_result":
            assert getattr(request, f.name) is getattr(message, f.name), f.name
    assert (request.hostname, request.delivery_info["priority"]) == ("w@h", 3)
    assert request.timelimit == (3, None) and request.callbacks == [{"task": "cb"}]
    assert not request.is_eager and not request.terminated


@pytest.mark.parametrize(("header", "option", "expected"), [
    (None, False, False), (None, True, True), (True, False, True), (False, True, True),
])
def test_request_ignore_result(header: bool | None, option: bool, expected: bool) -> None:
    message = TaskMessage("i", "t", [], {}, ignore_result=header)
    assert _request(message, ignore_result=option).ignore_result is expected


def test_request_attributes_tasks_read() -> None:
    request = _request(_decode(protocol.encode_v2("t", [1])))
    for name in ("id", "task", "args", "kwargs", "retries", "root_id", "parent_id", "group",
                 "group_index", "eta", "expires", "hostname", "delivery_info", "headers",
                 "callbacks", "errbacks", "chain", "chord", "reply_to", "correlation_id",
                 "origin", "ignore_result", "timelimit", "is_eager", "terminated"):
        getattr(request, name)
    assert request.root_id == request.id


def test_request_keywords_and_eager() -> None:
    ctx = Request(id="x", task="t", args=[], kwargs={}, group="g", chord={"task": "b"},
                  errbacks=None, hostname="h", delivery_info={"routing_key": "q"})
    assert (ctx.group, ctx.retries, ctx.ignore_result, ctx.timelimit) == (
        "g", 0, False, (None, None))
    eager = Request.eager("t", [1], {}, retries=2)
    assert eager.is_eager and eager.retries == 2 and eager.root_id == eager.id


# -- retries ---------------------------------------------------------------------
def test_retry_is_the_same_message_once_more() -> None:
    sent = TaskMessage.from_options("t", [1], {"a": 1}, {
        "task_id": "i", "root_id": "r", "parent_id": "p", "group_id": "g", "group_index": 1,
        "link": {"task": "cb"}, "chord": {"task": "body"}, "time_limit": 9,
        "soft_time_limit": 4, "headers": {"x-trace": "t1"}, "shadow": "alias"})
    out = protocol.encode(sent)
    out.headers["compression"] = None
    out.headers["x-death"] = [{"queue": "q"}]
    request = _request(_decode(out, priority=3), ignore_result=True)
    when = datetime(2030, 1, 1, tzinfo=UTC)
    again = retry_message(request, Retry(when=when, args=None, kwargs=None,
                                         options={"soft_time_limit": 2}))
    got = _decode(again)
    assert (got.id, got.retries, got.eta, got.args, got.kwargs) == ("i", 1, when, [1], {"a": 1})
    assert (got.root_id, got.parent_id, got.group, got.group_index) == ("r", "p", "g", 1)
    assert got.callbacks == [{"task": "cb"}] and got.chord == {"task": "body"}
    assert got.timelimit == (9, 2) and got.shadow == "alias" and got.origin == request.origin
    assert again.headers["x-trace"] == "t1" and "x-death" not in again.headers
    assert "compression" not in again.headers
    assert again.headers["ignore_result"] is False  # the message's, not the task's option
    assert again.priority == 3 and again.correlation_id == "i"


def test_next_retry_overrides() -> None:
    request = Request.eager("t", [1], {"a": 1})
    nxt = request.next_retry(Retry(when=None, args=(2,), kwargs={"b": 2},
                                   options={"time_limit": 7, "priority": 9}))
    assert isinstance(nxt, Request) and nxt.is_eager
    assert (nxt.retries, nxt.args, nxt.kwargs, nxt.timelimit, nxt.priority) == (
        1, [2], {"b": 2}, (7, None), 9)
    assert nxt.eta is not None and request.retries == 0


# -- send_task and the canvas use the same options -------------------------------
class _Broker:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, protocol.OutgoingMessage]] = []

    async def ensure_declared(self, spec: Any, passive: bool) -> None:
        pass

    async def publish(self, exchange: str, routing_key: str,
                      message: protocol.OutgoingMessage) -> None:
        self.published.append((exchange, routing_key, message))


def _app(monkeypatch: pytest.MonkeyPatch) -> tuple[App, _Broker]:
    app = App("unit", task_default_priority=5)
    broker = _Broker()

    async def get_broker() -> _Broker:
        return broker

    monkeypatch.setattr(app, "get_broker", get_broker)
    return app, broker


async def test_send_task(monkeypatch: pytest.MonkeyPatch) -> None:
    app, broker = _app(monkeypatch)
    result = await app.send_task("pkg.t", (1,), {"k": 2}, queue="q1", countdown=5,
                                 link={"task": "cb"}, headers={"x-a": 1}, task_id="tid")
    (_, routing_key, out), = broker.published
    assert (result.id, routing_key, out.priority) == ("tid", "q1", 5)
    assert out.reply_to and out.headers["x-a"] == 1
    args, kwargs, embed = json.loads(out.body)
    assert (args, kwargs, embed["callbacks"]) == ([1], {"k": 2}, [{"task": "cb"}])
    assert _decode(out).eta is not None
    with pytest.raises(TypeError, match="nope"):
        await app.send_task("pkg.t", nope=1)


async def test_canvas_maps_signature_options(monkeypatch: pytest.MonkeyPatch) -> None:
    app, broker = _app(monkeypatch)
    sig = {"task": "pkg.t", "args": [2], "kwargs": {"a": 1}, "subtask_type": None,
           "immutable": False, "options": {
               "task_id": "sid", "queue": {"name": "q2"}, "exchange": {"name": "x"},
               "expires": "2030-01-01T00:00:00+00:00", "link_error": {"task": "eb"},
               "reply_to": "not ours", "stamped_headers": None, "priority": 1}}
    task_id = await Canvas(app).apply(sig, (1,), {"b": 2}, parent_id="p", root_id="r")
    (exchange, routing_key, out), = broker.published
    got = _decode(out)
    assert (task_id, got.id, routing_key, exchange) == ("sid", "sid", "q2", "")
    assert (got.args, got.kwargs) == ([1, 2], {"a": 1, "b": 2})
    assert (got.parent_id, got.root_id, got.errbacks) == ("p", "r", [{"task": "eb"}])
    assert got.expires == datetime(2030, 1, 1, tzinfo=UTC) and out.priority == 1
