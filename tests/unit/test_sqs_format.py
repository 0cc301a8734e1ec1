"""SQS broker: kombu's envelope, ``sqs://`` URLs, options and queue names, batches."""

from __future__ import annotations

import asyncio
import base64
import json
import types
from typing import Any

import pytest
from kombu.transport.SQS import Channel as KombuChannel

from asyncworker.broker import create
from asyncworker.broker.sqs import SqsBroker, envelope
from asyncworker.broker.sqs.batch import Batcher
from asyncworker.broker.sqs.broker import Window
from asyncworker.broker.sqs.config import entity_name, parse
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.protocol import OutgoingMessage
from asyncworker.settings import Settings

# What kombu 5's SQS transport sent for ``send_task("tests.add", (3, 4),
# queue="q.fifo", MessageGroupId="g1")`` (headers shortened).
KOMBU_SENT = base64.b64encode(json.dumps({
    "body": "W1szLCA0XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWl"
            "uIjogbnVsbCwgImNob3JkIjogbnVsbH1d",
    "content-encoding": "utf-8", "content-type": "application/json",
    "headers": {"lang": "py", "task": "tests.add", "id": "e529187c", "retries": 0},
    "properties": {"correlation_id": "e529187c", "reply_to": "d3b03fdc",
                   "MessageGroupId": "g1", "delivery_mode": 2,
                   "delivery_info": {"exchange": "", "routing_key": "q.fifo"},
                   "priority": 0, "body_encoding": "base64", "delivery_tag": "c8a08623"},
}).encode()).decode()


def message(body: bytes = b'[[1], {}, {}]') -> OutgoingMessage:
    return OutgoingMessage(body=body, headers={"id": "abc", "task": "t.add"},
                           content_type="application/json", content_encoding="utf-8",
                           correlation_id="abc", reply_to="r", priority=None, expiration_ms=None)


# -- envelope -----------------------------------------------------------------------
def test_decodes_what_kombu_sends() -> None:
    got = envelope.decode(KOMBU_SENT)
    assert got.error is None
    assert json.loads(got.body)[0] == [3, 4]
    assert got.headers["task"] == "tests.add"
    assert (got.content_type, got.content_encoding) == ("application/json", "utf-8")
    assert (got.correlation_id, got.reply_to, got.priority) == ("e529187c", "d3b03fdc", 0)
    assert (got.exchange, got.routing_key) == ("", "q.fifo")


def test_encodes_what_kombu_reads() -> None:
    sent = envelope.encode(message(), "", "work.q")
    # kombu's own receive path: optional outer base64, JSON, base64 body.
    raw = KombuChannel._optional_b64_decode(types.SimpleNamespace(
        B64_REGEX=KombuChannel.B64_REGEX), sent.encode())
    payload = json.loads(raw)
    assert base64.b64decode(payload["body"]) == b'[[1], {}, {}]'
    assert payload["headers"] == {"id": "abc", "task": "t.add"}
    assert payload["content-type"] == "application/json"
    props = payload["properties"]
    assert props["body_encoding"] == "base64" and props["delivery_mode"] == 2
    assert props["delivery_info"] == {"exchange": "", "routing_key": "work.q"}
    assert (props["correlation_id"], props["reply_to"], props["priority"]) == ("abc", "r", 0)
    assert envelope.decode(sent).body == b'[[1], {}, {}]'


def test_plain_json_is_read_too() -> None:
    sent = envelope.encode(message(), "", "q", base64_outer=False)
    assert sent.startswith("{")
    assert envelope.decode(sent).headers["task"] == "t.add"


@pytest.mark.parametrize(("body", "why"), [
    ("{not json", "not a JSON envelope"),
    ("[1, 2]", "no envelope properties"),
    ('{"body": "eA==", "headers": {}}', "no envelope properties"),
    ('{"properties": {}, "headers": {}}', "no body"),
    ('{"body": "%%%", "properties": {"body_encoding": "base64"}}', "body is not base64"),
    ("\udcff\udcfe", "not a JSON envelope"),
])
def test_a_malformed_message_says_why_and_keeps_its_bytes(body: str, why: str) -> None:
    got = envelope.decode(body)
    assert got.error is not None and why in got.error
    assert got.body == body.encode("utf-8", "surrogateescape")


def test_headers_that_json_cannot_hold_become_text() -> None:
    import datetime

    out = message()
    out.headers["x-time"] = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    assert envelope.decode(envelope.encode(out, "", "q")).headers["x-time"].startswith("2026")


# -- names --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["celery", "my.queue", "a.b.fifo", "x:y@z/w", "t-1_2",
                                  "pre.jobs.fifo", "a b"])
def test_queue_names_are_mangled_as_kombu_mangles_them(name: str) -> None:
    assert entity_name(name) == KombuChannel.entity_name(None, name)  # type: ignore[arg-type]


def test_prefix_is_part_of_the_mangled_name() -> None:
    config = parse("sqs://", {"queue_name_prefix": "dev."})
    assert config.sqs_name("jobs.fifo") == "dev-jobs.fifo"


# -- URLs and options ---------------------------------------------------------------
def test_aws_url_uses_the_default_endpoint_and_credential_chain(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config = parse("sqs://", {})
    assert config.endpoint_url is None and config.use_ssl
    assert config.credentials.access_key_id is None
    assert config.credentials.region == "us-east-1"
    assert (config.visibility_timeout, config.wait_time_seconds, config.polling_interval) == (
        1800, 10, 1.0)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert parse("sqs://", {}).credentials.region == "eu-west-1"
    assert parse("sqs://", {"region": "ap-south-1"}).credentials.region == "ap-south-1"


def test_credentials_in_the_url_are_unquoted_and_never_shown() -> None:
    config = parse("sqs://AKIA:se%2Fcret@", {})
    assert (config.credentials.access_key_id, config.credentials.secret_access_key) == (
        "AKIA", "se/cret")
    assert config.endpoint_url is None
    assert "se/cret" not in repr(config.credentials) and "AKIA" not in config.display_url


def test_a_host_is_an_http_endpoint_unless_is_secure() -> None:
    config = parse("sqs://user:pw@localhost:4566", {})
    assert config.endpoint_url == "http://localhost:4566"
    assert config.display_url == "sqs://localhost:4566"
    assert parse("sqs://h", {"is_secure": True}).endpoint_url == "https://h"


def test_options_are_checked() -> None:
    with pytest.raises(ImproperlyConfigured, match="visibilty_timeout"):
        parse("sqs://", {"visibilty_timeout": 10})
    with pytest.raises(ImproperlyConfigured, match="wait_time_seconds"):
        parse("sqs://", {"wait_time_seconds": 25})
    config = parse("sqs://", {"visibility_timeout": "30.0", "polling_interval": "0.5",
                              "wait_time_seconds": "0"})
    assert (config.visibility_timeout, config.polling_interval, config.wait_time_seconds) == (
        30, 0.5, 0)


def test_predefined_queues_as_kombu_reads_them() -> None:
    config = parse("sqs://A:B@", {"region": "eu-west-1", "predefined_queues": {
        "celery": {"url": "https://sqs.eu-west-1.amazonaws.com/1/celery"},
        "jobs.fifo": {"url": "https://sqs.us-east-1.amazonaws.com/1/jobs.fifo",
                      "access_key_id": "C", "secret_access_key": "D", "region": "us-east-1"},
    }})
    celery, jobs = config.predefined["celery"], config.predefined["jobs.fifo"]
    assert (celery.credentials.access_key_id, celery.credentials.region) == ("A", "eu-west-1")
    assert (jobs.credentials.access_key_id, jobs.credentials.secret_access_key,
            jobs.credentials.region) == ("C", "D", "us-east-1")
    with pytest.raises(ImproperlyConfigured, match="FIFO"):
        parse("sqs://", {"predefined_queues": {"jobs": {"url": "https://x/1/jobs.fifo"}}})
    with pytest.raises(ImproperlyConfigured, match="needs a 'url'"):
        parse("sqs://", {"predefined_queues": {"jobs": {}}})
    with pytest.raises(ImproperlyConfigured, match="backoff_policy"):
        parse("sqs://", {"predefined_queues": {"jobs": {"url": "https://x/1/jobs",
                                                        "backoff_policy": {1: 10}}}})


def test_create_picks_sqs_for_sqs_urls() -> None:
    broker = create(Settings(broker_url="sqs://localhost:9324",
                             broker_transport_options={"wait_time_seconds": 1}))
    assert isinstance(broker, SqsBroker)
    assert broker.display_url == "sqs://localhost:9324"
    with pytest.raises(ImproperlyConfigured, match="polling"):
        create(Settings(broker_url="sqs://", broker_transport_options={"polling": 1}))


# -- prefetch window and batches ------------------------------------------------------
async def test_the_window_bounds_what_is_received() -> None:
    window = Window()
    window.resize(3)
    assert await window.reserve(10) == 3
    waiting = asyncio.ensure_future(window.reserve(10))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # full: no receive until something settles
    window.release(2)
    assert await asyncio.wait_for(waiting, 1) == 2
    window.resize(0)
    assert await window.reserve(10) == 10  # unlimited: SQS's ten at most


async def test_batches_hold_at_most_ten_and_report_each_entry() -> None:
    calls: list[list[dict[str, Any]]] = []

    async def send(url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        calls.append(entries)
        await asyncio.sleep(0.01)
        failed = [{"Id": e["Id"], "Code": "ReceiptHandleIsInvalid"}
                  for e in entries if e["ReceiptHandle"] == "bad"]
        return {"Failed": failed}

    batcher = Batcher(send, "delete", senders=1)
    handles = ["bad" if i == 7 else f"h{i}" for i in range(25)]
    results = await asyncio.gather(*(batcher.submit("u", {"ReceiptHandle": h})
                                     for h in handles))
    assert results == [h != "bad" for h in handles]
    assert all(len(c) <= 10 for c in calls) and len(calls) < 25
    assert sorted(e["ReceiptHandle"] for c in calls for e in c) == sorted(handles)


async def test_a_failed_batch_call_fails_its_entries_only() -> None:
    async def send(url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        raise ConnectionError("endpoint down")

    assert await Batcher(send, "delete").submit("u", {"ReceiptHandle": "h"}) is False
