"""The Redis transport's pure parts: kombu's envelope, key names, routing, options."""

from __future__ import annotations

import base64
import json

import pytest
from kombu.transport.virtual.exchange import TopicExchange

from asyncworker.broker import create
from asyncworker.broker.frames import UNDECODABLE
from asyncworker.broker.redis import RedisBroker, parse
from asyncworker.broker.redis import envelope as envelopes
from asyncworker.broker.redis.delivery import undecodable
from asyncworker.broker.redis.keys import Keys, QueueCycle, route, topic_pattern
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.protocol import OutgoingMessage
from asyncworker.settings import Settings

# What Celery 5.7 pushed for send_task('x.y', (1, 2), queue='probe.q', priority=3).
CELERY_ITEM = (
    b'{"body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWl'
    b'uIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": '
    b'"application/json", "headers": {"lang": "py", "task": "x.y", "id": "0d33c65c", '
    b'"retries": 0, "eta": null}, "properties": {"correlation_id": "0d33c65c", "reply_to": '
    b'"fd60398b", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": '
    b'"probe.q"}, "priority": 3, "body_encoding": "base64", "delivery_tag": "04cce8a6"}}')


def test_decodes_what_celery_pushes() -> None:
    env = envelopes.decode(CELERY_ITEM)
    assert json.loads(env.body)[0] == [1, 2]
    assert env.headers["task"] == "x.y"
    assert (env.content_type, env.content_encoding) == ("application/json", "utf-8")
    assert (env.correlation_id, env.reply_to, env.priority) == ("0d33c65c", "fd60398b", 3)
    assert (env.delivery_tag, env.exchange, env.routing_key) == ("04cce8a6", "", "probe.q")
    assert env.redelivered is False


def test_encode_is_kombus_shape_and_round_trips() -> None:
    message = OutgoingMessage(b'[[1], {}, {}]', {"id": "t1", "task": "a.b"}, "application/json",
                              "utf-8", "t1", "reply-q", 6, None)
    text, tag = envelopes.encode(message, "ex", "rk")
    payload = json.loads(text)
    assert set(payload) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert base64.b64decode(payload["body"]) == message.body
    props = payload["properties"]
    assert props["body_encoding"] == "base64" and props["delivery_tag"] == tag
    assert props["delivery_info"] == {"exchange": "ex", "routing_key": "rk"}
    assert (props["priority"], props["delivery_mode"], props["reply_to"]) == (6, 2, "reply-q")
    env = envelopes.decode(text)
    assert (env.body, env.headers, env.priority, env.exchange) == (
        message.body, message.headers, 6, "ex")


def test_encode_survives_headers_json_cannot_carry() -> None:
    message = OutgoingMessage(b"{}", {"raw": b"\xff\x00"}, "application/json", "utf-8", "", None,
                              None, None)
    env = envelopes.decode(envelopes.encode(message, "", "q")[0])
    assert isinstance(env.headers["raw"], str) and env.priority == 0


@pytest.mark.parametrize(("item", "reason"), [
    (b"\xff not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"body": "x"}', "no properties"),
    (b'{"properties": {}, "headers": [1]}', "headers is a list"),
    (b'{"properties": {"body_encoding": "base64"}, "body": "***"}', "not base64"),
    (b'{"properties": {"body_encoding": "rot13"}, "body": "abc"}', "unknown body_encoding"),
])
def test_malformed_items_say_why(item: bytes, reason: str) -> None:
    with pytest.raises(envelopes.EnvelopeError, match=reason):
        envelopes.decode(item)


def test_undecodable_item_becomes_a_rejectable_delivery_keeping_every_byte() -> None:
    env = undecodable(b"\xff garbage", "tag-1", "q", "not JSON")
    assert env.body == b"\xff garbage" and env.routing_key == "q"
    assert "not JSON" in env.headers[UNDECODABLE]


def test_redelivered_copy_marks_both_places_as_kombu_does() -> None:
    payload = json.loads(envelopes.redelivered_copy(CELERY_ITEM))
    assert payload["headers"]["redelivered"] is True
    assert payload["properties"]["delivery_info"]["redelivered"] is True
    assert envelopes.decode(envelopes.redelivered_copy(CELERY_ITEM)).redelivered
    assert envelopes.redelivered_copy(b"garbage") == b"garbage"


@pytest.mark.parametrize(("priority", "key"), [
    (None, "q"), (0, "q"), (2, "q"), (3, "q\x06\x163"), (5, "q\x06\x163"), (6, "q\x06\x166"),
    (9, "q\x06\x169"), (42, "q\x06\x169"), (-1, "q"), ("junk", "q"),
])
def test_priority_lists_follow_kombus_steps(priority: object, key: str) -> None:
    assert Keys().list_key("q", priority) == key  # type: ignore[arg-type]


def test_fetch_order_is_by_step_then_queue_and_prefix_applies_everywhere() -> None:
    keys = Keys.build(5, prefix="p:", steps=[0, 5])
    assert keys.fetch_order(["a", "b"]) == ["p:a", "p:b", "p:a\x06\x165", "p:b\x06\x165"]
    assert keys.queue_of("p:b\x06\x165") == "b" and keys.queue_of("p:a") == "a"
    assert keys.unacked == "p:unacked" and keys.binding("ex") == "p:_kombu.binding.ex"
    assert keys.topic("celery.pidbox") == "p:/5.celery.pidbox"
    assert keys.exchange_of_channel("p:/5.celeryev/worker.heartbeat") == "celeryev"


def test_fanout_topics_as_kombu_names_them() -> None:
    assert Keys.build(3).topic("ex", "a.b") == "/3.ex/a.b"
    assert Keys.build(3, fanout_patterns=False).topic("ex", "a.b") == "/3.ex"
    assert Keys.build(3, fanout_prefix=False).topic("ex") == "ex"
    assert Keys.build(3, fanout_prefix="/x.").topic("ex") == "/x.ex"


@pytest.mark.parametrize("key", ["#", "*.b", "a.#", "task.*", "we+ird.$key", "a.b.c"])
def test_topic_patterns_are_the_text_kombu_stores(key: str) -> None:
    assert topic_pattern(key) == TopicExchange(None).key_to_pattern(key)  # type: ignore[no-untyped-call]


def test_routing_through_binding_tables() -> None:
    keys = Keys()
    table = [keys.parse_member(m) for m in [
        keys.member("rk", "", "q1"), keys.member("other", "", "q2"),
        keys.member("task.#", topic_pattern("task.#"), "ev1")]]
    rows = [row for row in table if row]
    assert route("direct", rows, "rk") == ["q1"]
    assert route("topic", rows, "task.succeeded") == ["ev1"]
    assert route("fanout", rows, "") == ["q1", "q2", "ev1"]
    assert keys.parse_member(b"no separators") is None


def test_round_robin_moves_the_queue_just_used_to_the_back() -> None:
    cycle = QueueCycle()
    for name in ("a", "b", "c"):
        cycle.add(name)
    cycle.rotate("a")
    assert cycle.order() == ["b", "c", "a"]
    fixed = QueueCycle("priority")
    fixed.add("b")
    fixed.add("a")
    fixed.rotate("b")
    assert fixed.order() == ["b", "a"]
    ordered = QueueCycle("sorted")
    ordered.add("b")
    ordered.add("a")
    assert ordered.order() == ["a", "b"]


def test_options_are_kombus_and_unknown_ones_are_errors() -> None:
    options = parse("redis://:secret@h:6380/7", {
        "visibility_timeout": "30", "priority_steps": [0, 5, 9], "sep": ":",
        "global_keyprefix": "app:", "queue_order_strategy": "sorted"}, 4.0)
    assert options.db == 7 and options.visibility_timeout == 30.0
    assert options.keys.list_key("q", 7) == "app:q:5"
    assert options.keys.topic("ex") == "app:/7.ex"
    assert options.client["socket_connect_timeout"] == 4.0
    assert 0 < options.refresh_interval < options.visibility_timeout
    with pytest.raises(ImproperlyConfigured, match="visibilty_timeout"):
        parse("redis://h/0", {"visibilty_timeout": 5}, 4.0)
    with pytest.raises(ImproperlyConfigured, match="priority_steps"):
        parse("redis://h/0", {"priority_steps": [0, 11]}, 4.0)
    with pytest.raises(ImproperlyConfigured, match="queue_order_strategy"):
        parse("redis://h/0", {"queue_order_strategy": "random"}, 4.0)
    with pytest.raises(ImproperlyConfigured, match="socket_timeout"):
        parse("redis://h/0", {"socket_timeout": 0.5}, 4.0)
    with pytest.raises(ImproperlyConfigured, match="database"):
        parse("redis://h/db", {}, 4.0)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/5", "rediss://u:pw@host:6380/1"])
def test_create_picks_redis_and_hides_the_password(url: str) -> None:
    broker = create(Settings(broker_url=url))
    assert isinstance(broker, RedisBroker)
    assert "pw" not in broker.display_url and broker.can_park is False
    with pytest.raises(ImproperlyConfigured):
        create(Settings(broker_url=url, broker_transport_options={"nope": 1}))


def test_sentinel_urls_name_the_sentinels_and_need_a_master_name() -> None:
    options = parse(["sentinel://:pw@s1:26380/4", "sentinel://s2"], {"master_name": "m"}, 4.0)
    assert options.sentinels == (("s1", 26380), ("s2", 26379))
    assert options.db == 4 and options.client["password"] == "pw"
    assert options.keys.topic("celery.pidbox") == "/4.celery.pidbox"
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        parse("sentinel://s1:26379", {}, 4.0)
    with pytest.raises(ImproperlyConfigured, match="failover list"):
        parse(["redis://a", "redis://b"], {}, 4.0)
    broker = create(Settings(broker_url="sentinel://:pw@s1;sentinel://s2",
                             broker_transport_options={"master_name": "m"}))
    assert isinstance(broker, RedisBroker) and "pw" not in broker.display_url
