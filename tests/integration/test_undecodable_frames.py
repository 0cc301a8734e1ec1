"""Messages the AMQP client cannot decode, and dead letters that cannot be re-encoded as
they came, against a real worker: no reconnect loop, nothing lost."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from asyncworker.broker.frames import RAW_PROPERTIES, UNDECODABLE
from asyncworker.deadletter import REASON, SANITIZED
from tests.conftest import BROKER_URL, task_rows, wait_for
from tests.integration.test_dead_letters import listed
from tests.rawamqp import Props, RawPublisher, RawValue, long_text, nested_table, table

pytestmark = pytest.mark.integration


def _headers(task_id: str, **extra: Any) -> dict[str, Any]:
    headers = {"lang": "py", "task": "compat.add_async", "id": task_id, "root_id": task_id,
               "retries": 0, "timelimit": [None, None], "argsrepr": "", "origin": "raw"}
    headers.update(extra)
    return headers


BODY = json.dumps([[1, 2], {}, {}]).encode()


def _undecodable(task_id: str) -> list[Props]:
    """One message per way a content header fails to decode."""
    ok = {"content_type": "application/json", "content_encoding": "utf-8"}
    return [
        Props(content_type=b"\xff\xfeapplication/json", headers=_headers(task_id + "-ct")),
        Props(**ok, headers=_headers(task_id + "-cid"), correlation_id=b"\xc3\x28"),
        Props(**ok, headers=table([*_headers(task_id + "-key").items(), (b"\xff\xfe", 1)])),
        Props(**ok, headers=table([*_headers(task_id + "-deep").items(),
                                   ("deep", nested_table(3000))])),
    ]


def _publish(queue: str, messages: list[tuple[bytes, Props]]) -> None:
    publisher = RawPublisher(BROKER_URL)
    for body, props in messages:
        publisher.publish(queue, body, props)
    publisher.wait_confirms()
    publisher.close()


@pytest.fixture
def amqp_channel() -> Iterator[Any]:
    """A py-amqp channel (an independent client) to read queues."""
    import amqp

    url = urlsplit(BROKER_URL)
    conn = amqp.Connection(f"{url.hostname}:{url.port}", userid=url.username,
                           password=url.password)
    conn.connect()
    yield conn.channel()
    conn.close()


def _valid_tasks_done(pg: Any, ids: list[str]) -> bool:
    rows = task_rows(pg, ids)
    return all(rows.get(i, {}).get("status") == "SUCCESS" for i in ids)


def _one_connection(worker: Any) -> None:
    assert len(worker.events("connected to broker")) == 1
    assert not worker.events("reconnected to broker; unacked messages will be redelivered")
    assert worker.proc.poll() is None


def test_undecodable_and_unencodable_messages_are_dead_lettered_without_reconnects(
        start_worker: Any, queue_name: str, pg: Any, amqp_channel: Any) -> None:
    worker = start_worker("-Q", queue_name, "-n", f"{queue_name}@raw", "-c", "4")
    tid = f"raw-{uuid.uuid4().hex[:8]}"
    bad = _undecodable(tid)
    # Decodable, but the copy could not be published before: non-UTF-8 bytes in a
    # header value (pamqp hands them over as bytes) and an eta of 1.5e300.
    unencodable = Props(content_type="application/json", content_encoding="utf-8",
                        correlation_id=tid + "-enc", headers=table([
                            *_headers(tid + "-enc", eta=1.5e300).items(),
                            ("x-junk", RawValue(long_text(b"\xff\xfe junk")))]))
    valid = [f"{tid}-ok{i}" for i in range(5)]
    _publish(queue_name, [(BODY, p) for p in bad] + [(BODY, unencodable)] + [
        (BODY, Props(content_type="application/json", content_encoding="utf-8",
                     headers=_headers(v), correlation_id=v)) for v in valid])

    wait_for(lambda: _valid_tasks_done(pg, valid), 30, what="valid tasks behind the bad ones")
    letters = wait_for(lambda: len(got := listed(queue_name)) == 5 and got, 30,
                       what="five dead letters")
    reasons = sorted(x["reason"] for x in letters)
    assert sum("undecodable message properties" in r for r in reasons) == 4
    assert any("invalid eta" in r for r in reasons)
    logged = worker.events("message with undecodable properties rejected")
    assert len(logged) == 4 and all(isinstance(x["delivery_tag"], int) for x in logged)
    _one_connection(worker)

    # The copies: body untouched, undecodable properties kept as their bytes.
    copies = []
    while (message := amqp_channel.basic_get(queue_name + ".dlq", no_ack=True)) is not None:
        copies.append(message)
    assert len(copies) == 5
    assert all((m.body if isinstance(m.body, bytes) else m.body.encode()) == BODY
               for m in copies)
    raw = [m.properties["application_headers"] for m in copies
           if UNDECODABLE in m.properties["application_headers"]]
    assert sorted(bytes(h[RAW_PROPERTIES]) for h in raw) == sorted(p.encode() for p in bad)
    [enc] = [m.properties["application_headers"] for m in copies
             if m.properties["application_headers"].get("id") == tid + "-enc"]
    assert enc["eta"] == 1.5e300  # a double now, not an overflowing 32-bit float
    assert bytes(enc["x-junk"]) == b"\xff\xfe junk"
    assert any("x-junk" in note for note in enc[SANITIZED])
    assert "invalid eta" in enc[REASON]


def test_broker_dead_letter_exchange_gets_the_undecodable_original(
        start_worker: Any, queue_name: str, pg: Any, amqp_channel: Any) -> None:
    dlq = f"{queue_name}.dlq"
    amqp_channel.queue_declare(dlq, durable=True, auto_delete=False)
    worker = start_worker("-Q", queue_name, "-n", f"{queue_name}@raw", "-c", "4", task_queues={
        queue_name: {"exchange": queue_name, "routing_key": queue_name, "queue_arguments": {
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}}})
    tid = f"raw-{uuid.uuid4().hex[:8]}"
    valid = f"{tid}-ok"
    _publish(queue_name, [(BODY, p) for p in _undecodable(tid)] + [
        (BODY, Props(content_type="application/json", content_encoding="utf-8",
                     headers=_headers(valid), correlation_id=valid))])
    wait_for(lambda: _valid_tasks_done(pg, [valid]), 30, what="the valid task")

    def in_dlx() -> int:
        return int(amqp_channel.queue_declare(dlq, passive=True).message_count)
    wait_for(lambda: in_dlx() == 4, 30, what="four originals in the broker's dead-letter queue")
    # The originals, as sent: `asyncworker dlq list` reads them too.
    reasons = [x["reason"] for x in listed(dlq)]
    assert len(reasons) == 4
    assert all(r.startswith("undecodable message properties") for r in reasons)
    assert len(worker.events("message with undecodable properties rejected")) == 4
    _one_connection(worker)
    amqp_channel.queue_delete(dlq)


def test_nan_sleep_fails_its_task_only_and_json_nan_needs_the_setting(
        start_worker: Any, queue_name: str, pg: Any) -> None:
    """A NaN argument is refused by default; allowed, it reaches asyncio.sleep in the
    task, which fails alone instead of stalling every timer of the worker."""
    worker = start_worker("-Q", queue_name, "-n", f"{queue_name}@raw", "-c", "4",
                          task_json_allow_nan="true")
    tid = f"nan-{uuid.uuid4().hex[:8]}"
    ok = Props(content_type="application/json", content_encoding="utf-8")
    nan_body = b"[[NaN], {}, {}]"
    _publish(queue_name, [
        (nan_body, Props(**vars(ok) | {"headers": _headers(tid, task="compat.sleep")})),
        (b"[[0.2], {}, {}]", Props(**vars(ok) | {
            "headers": _headers(tid + "-after", task="compat.sleep")}))])
    wait_for(lambda: len(task_rows(pg, [tid, tid + "-after"])) == 2, 30, what="both rows")
    rows = task_rows(pg, [tid, tid + "-after"])
    assert rows[tid]["status"] == "FAILURE" and "NaN" in rows[tid]["traceback"]
    assert rows[tid + "-after"]["status"] == "SUCCESS"  # timers still fire
    worker.stop()

    # The default: refused.
    strict = start_worker("-Q", queue_name, "-n", f"{queue_name}@raw", "-c", "4")
    _publish(queue_name, [(nan_body, Props(**vars(ok) | {
        "headers": _headers(tid + "-strict", task="compat.sleep")}))])
    [letter] = wait_for(lambda: listed(queue_name), 30, what="dead letter")
    assert letter["task_id"] == tid + "-strict"
    assert "NaN is not JSON" in letter["reason"]
    assert not task_rows(pg, [tid + "-strict"])
    _one_connection(strict)
