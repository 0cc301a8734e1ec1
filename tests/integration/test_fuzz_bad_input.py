"""Fuzz: thousands of malformed messages among valid tasks, against one worker process.

A seeded generator (``ASYNCWORKER_FUZZ_SEED`` to replay one; the seed is
printed) writes raw AMQP frames (tests/rawamqp.py), so it can send what no
client library would: text properties and header keys that are not UTF-8,
header tables nested thousands deep, duplicate keys. Every message carries a
marker ``<run>-<n>z`` in its body and, where the case allows, its task id.

Asserted: every valid task has a SUCCESS row; the worker connected once and
never reconnected; every bad message is accounted for, by its marker, as a
dead letter with a reason, or a result row (a task that ran, or failed, with
what it got); the undecodable ones were each logged with their delivery tag.
"""

from __future__ import annotations

import bz2
import json
import os
import random
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from asyncworker.broker.frames import UNDECODABLE
from asyncworker.deadletter import REASON
from tests.conftest import BROKER_URL
from tests.rawamqp import Props, RawPublisher, RawValue, long_text, nested_table, table

pytestmark = pytest.mark.integration

BAD_COUNT = 5000
VALID_COUNT = 300
JSON = "application/json"

#: One case: (kind, body, properties, expected way to be accounted for).
Case = tuple[str, bytes, Props]


def _headers(task_id: str, task: str = "compat.add_async", **extra: Any) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None,
        "timelimit": [None, None], "argsrepr": "", "kwargsrepr": "", "origin": "fuzz"}
    headers.update(extra)
    return headers


def _body(args: Any, kwargs: Any = None, embed: Any = None) -> bytes:
    return json.dumps([args, {} if kwargs is None else kwargs,
                       {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
                       if embed is None else embed]).encode()


def _props(headers: dict[str, Any] | bytes, marker: str, **kw: Any) -> Props:
    values: dict[str, Any] = {"content_type": JSON, "content_encoding": "utf-8",
                              "correlation_id": marker}
    values.update(kw)
    return Props(headers=headers, **values)


def _garbage(rng: random.Random, marker: str, size: int) -> bytes:
    return marker.encode() + rng.randbytes(size)


def _bad_utf8(rng: random.Random) -> bytes:
    return rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"ok\xf8"])


def _items(headers: dict[str, Any]) -> list[tuple[bytes | str, Any]]:
    return list(headers.items())


# Each maker: (rng, marker) -> (kind, body, props). The kind groups the report.
def _bad_json(rng: random.Random, m: str) -> Case:
    body = rng.choice([b'[["%s"], {', b'{"%s": }', b"[[1, 2], {}, {}]]%s", b"\x00%s\x01"])
    return "bad json", body.replace(b"%s", m.encode()), _props(_headers(m), m)


def _wrong_body_types(rng: random.Random, m: str) -> Case:
    body = rng.choice([
        json.dumps([m, {}, {}]), json.dumps([[m], [1], {}]), json.dumps([[m], {}, "embed"]),
        json.dumps({"args": [m]}), json.dumps([[m]]), json.dumps(m),
        json.dumps([[m], {}, {"callbacks": 5}])])
    return "wrong body types", body.encode(), _props(_headers(m), m)


def _wrong_header_types(rng: random.Random, m: str) -> Case:
    extra = rng.choice([{"retries": "many"}, {"timelimit": "soon"}, {"timelimit": [1, 2, 3]},
                        {"eta": 12345}, {"expires": [1]}, {"eta": "next tuesday"},
                        {"task": 42}, {"group_index": "x"}, {"retries": [1]}])
    return "wrong header types", _body([m, 1]), _props(_headers(m, **extra), m)


def _bad_utf8_header_values(rng: random.Random, m: str) -> Case:
    key = rng.choice(["argsrepr", "origin", "task", "x-custom", "kwargsrepr", "parent_id"])
    items = [(k, v) for k, v in _headers(m).items() if k != key]
    items.append((key, RawValue(long_text(_bad_utf8(rng) + m.encode()))))
    return "bad UTF-8 in header values", _body([1, 2]), _props(table(items), m)


def _undecodable_properties(rng: random.Random, m: str) -> Case:
    what = rng.choice(["content_type", "correlation_id", "content_encoding", "reply_to",
                       "message_id", "header key", "nested 3000"])
    body = _body([m, 1])
    if what == "header key":
        return "undecodable", body, _props(
            table([*_items(_headers(m)), (_bad_utf8(rng), 1)]), m)
    if what == "nested 3000":
        return "undecodable", body, _props(
            table([*_items(_headers(m)), ("deep", nested_table(3000))]), m)
    return "undecodable", body, _props(_headers(m), m, **{what: _bad_utf8(rng)})


def _numbers(rng: random.Random, m: str) -> Case:
    # RabbitMQ refuses NaN and infinite doubles in headers (it closes the
    # connection), so non-finite numbers arrive in JSON: NaN/Infinity, which
    # are not JSON, and 1e400, which is, and which Python reads as inf.
    choice = rng.randrange(9)
    headers = _headers(m)
    body = _body([1, 2])
    if choice == 0:
        headers["eta"] = 1.5e300
    elif choice in (1, 2, 3, 4):
        field, value = [("timelimit", "[1e400, null]"), ("timelimit", "[null, -1e999]"),
                        ("retries", "1e400"), ("timelimit", "[NaN, null]")][choice - 1]
        body = (f'{{"task": "compat.add_async", "id": {json.dumps(m)}, "args": [1, 2], '
                f'"kwargs": {{}}, "{field}": {value}}}').encode()
        headers = {}  # protocol 1: the fields are in the body
    elif choice == 5:
        headers["retries"] = 2**63 - 1  # an integer, but past what result stores hold
    elif choice == 6:
        body = f'[[NaN, {json.dumps(m)}], {{}}, {{}}]'.encode()
    elif choice == 7:
        body = f'[[1, -Infinity], {{"m": {json.dumps(m)}}}, {{}}]'.encode()
    else:
        headers["timelimit"] = [1e308, 1e-300]  # finite: accepted
        headers["x-float"] = 3.4e300
    return "huge and non-finite numbers", body, _props(headers, m)


def _deep(rng: random.Random, m: str) -> Case:
    depth = rng.choice([200, 3000, 20000])
    if rng.random() < 0.5:
        args = "[" * depth + json.dumps(m) + "]" * depth
        return "deep nesting", f"[[{args}], {{}}, {{}}]".encode(), _props(_headers(m), m)
    inner: Any = m
    for _ in range(rng.choice([20, 100])):
        inner = {"k": inner}
    return "deep nesting", _body([1, 2]), _props(_headers(m, **{"x-deep": inner}), m)


def _missing_and_duplicated(rng: random.Random, m: str) -> Case:
    choice = rng.randrange(6)
    headers = _headers(m)
    if choice == 0:
        del headers["id"]
        return "missing fields", _body([m, 1]), _props(headers, m)
    if choice == 1:
        del headers["task"]
        return "missing fields", _body([m, 1]), _props(headers, m)
    if choice == 2:
        return "missing fields", b"", _props(headers, m)
    if choice == 3:
        # Duplicate header keys: the decoder keeps the last one.
        items = [*_items(headers), ("task", "no.such.task"), ("task", "compat.add_async")]
        return "duplicated fields", _body([1, 2]), _props(table(items), m)
    if choice == 4:
        body = f'[[], {{"a": 1, "a": {json.dumps(m)}}}, {{}}]'.encode()
        return "duplicated fields", body, _props(_headers(m, task="compat.echo"), m)
    return "missing fields", _body([1, 2]), _props({"id": m}, m)  # no task: protocol 1 path


def _content_types(rng: random.Random, m: str) -> Case:
    choice = rng.randrange(5)
    if choice == 0:
        return "unknown content type", _body([m]), _props(
            _headers(m), m, content_type=rng.choice(["application/x-yaml", "text/plain",
                                                     "application/x-msgpack", "x/" + m]))
    if choice == 1:
        return "unknown encoding", _body([m]), _props(
            _headers(m), m, content_encoding=rng.choice(["bogus-enc", "utf-16", "ebcdic"]))
    if choice == 2:
        return "unknown content type", _body([m]), _props(
            _headers(m), m, content_type="application/x-python-serialize")
    if choice == 3:
        return "unknown encoding", _body([m]).decode().encode("utf-32"), _props(_headers(m), m)
    return "unknown content type", _body([m]), _props(_headers(m), m, content_type="")


def _compressed_garbage(rng: random.Random, m: str) -> Case:
    compression = rng.choice(["application/x-gzip", "zlib", "bzip2", "application/x-lzma",
                              "application/x-snappy", "br"])
    if rng.random() < 0.3:  # a valid stream of the wrong thing
        body = (zlib.compress if rng.random() < 0.5 else bz2.compress)(_garbage(rng, m, 64))
    else:
        body = _garbage(rng, m, rng.randrange(1, 400))
    return "compressed garbage", body, _props(_headers(m, compression=compression), m)


def _oversized(rng: random.Random, m: str) -> Case:
    size = rng.randrange(1_000_000, 3_000_000)
    if rng.random() < 0.5:
        return "oversized body", _garbage(rng, m, size), _props(_headers(m), m)
    body = _body([m, "x" * size], embed={"callbacks": None, "errbacks": None, "chain": None,
                                         "chord": None})
    return "oversized body", body, _props(_headers(m, task="compat.echo"), m)


def _wrong_args(rng: random.Random, m: str) -> Case:
    choice = rng.randrange(3)
    if choice == 0:
        return "task fails on its args", _body([m, None]), _props(_headers(m), m)
    if choice == 1:
        return "unknown task", _body([m]), _props(_headers(m, task=f"no.such.{m}"), m)
    return "task fails on its args", _body([1, 2], {"unexpected": m}), _props(_headers(m), m)


MAKERS: list[tuple[Callable[[random.Random, str], Case], float]] = [
    (_bad_json, 1), (_wrong_body_types, 1), (_wrong_header_types, 1),
    (_bad_utf8_header_values, 1), (_undecodable_properties, 1.2), (_numbers, 1),
    (_deep, 0.6), (_missing_and_duplicated, 1), (_content_types, 1),
    (_compressed_garbage, 1), (_oversized, 0.05), (_wrong_args, 0.6),
]


def generate(seed: int, run: str) -> list[tuple[str, Case]]:
    """``BAD_COUNT`` bad cases and ``VALID_COUNT`` valid ones, shuffled: (marker, case)."""
    rng = random.Random(seed)
    makers, weights = zip(*MAKERS, strict=True)
    out: list[tuple[str, Case]] = []
    for n in range(BAD_COUNT):
        marker = f"{run}-b{n}z"
        out.append((marker, rng.choices(makers, weights)[0](rng, marker)))
    for n in range(VALID_COUNT):
        marker = f"{run}-v{n}z"
        out.append((marker, ("valid", _body([n, 1]), _props(_headers(marker), marker))))
    rng.shuffle(out)
    return out


def _drain_dlq(dlq: str, letters: dict[str, dict[str, Any]], pattern: re.Pattern[bytes]) -> None:
    """Read what is in the dead-letter queue now (py-amqp, acked), by marker."""
    import amqp

    url = urlsplit(BROKER_URL)
    conn = amqp.Connection(f"{url.hostname}:{url.port}", userid=url.username,
                           password=url.password)
    conn.connect()
    try:
        channel = conn.channel()
        while (message := channel.basic_get(dlq, no_ack=True)) is not None:
            body = message.body if isinstance(message.body, bytes) else message.body.encode()
            headers = message.properties.get("application_headers") or {}
            # The marker: in the body (kept untouched), else the correlation id
            # (bodies that are compressed, empty or not ASCII-compatible).
            found = pattern.search(body) or pattern.fullmatch(
                str(message.properties.get("correlation_id", "")).encode())
            key = found.group(0).decode() if found else f"?{len(letters)}"
            letters[key] = headers
    finally:
        conn.close()


def test_fuzzed_bad_input_is_all_accounted_for(start_worker: Any, pg: Any) -> None:
    seed = int(os.environ.get("ASYNCWORKER_FUZZ_SEED") or random.randrange(2**31))
    print(f"fuzz seed: {seed} (ASYNCWORKER_FUZZ_SEED={seed} replays it)")
    run = f"fz{uuid.uuid4().hex[:8]}"
    queue = f"t.{run}"
    dlq = f"{queue}.dlq"
    cases = generate(seed, run)
    kinds = {marker: case[0] for marker, case in cases}
    bad = {m for m, k in kinds.items() if k != "valid"}
    valid = {m for m, k in kinds.items() if k == "valid"}

    worker = start_worker("-Q", queue, "-c", "50", "-n", f"{run}@fuzz")
    publisher = RawPublisher(BROKER_URL)
    started = time.monotonic()
    for i, (_, (_, body, props)) in enumerate(cases):
        publisher.publish(queue, body, props)
        if i % 200 == 199:
            publisher.wait_confirms()
    publisher.wait_confirms()
    publisher.close()
    published = time.monotonic() - started

    pattern = re.compile(rf"{run}-[bv]\d+z".encode())
    letters: dict[str, dict[str, Any]] = {}
    rows: dict[str, str] = {}

    def settled() -> bool:
        _drain_dlq(dlq, letters, pattern)
        with pg.cursor() as cur:
            cur.execute("SELECT task_id, status FROM celery_taskmeta WHERE task_id = ANY(%s)",
                        (sorted(set(kinds) - set(rows) - set(letters)),))
            rows.update(cur.fetchall())
        accounted = set(letters) | set(rows)
        return bad <= accounted and all(rows.get(m) == "SUCCESS" for m in valid)

    deadline = time.monotonic() + 75
    while not settled():
        assert worker.proc.poll() is None, "worker exited"
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started

    missing_valid = sorted(m for m in valid if rows.get(m) != "SUCCESS")
    unaccounted = sorted(bad - set(letters) - set(rows))
    by_kind = Counter(kinds[m] for m in unaccounted)
    assert not missing_valid, f"valid tasks not done: {len(missing_valid)}"
    assert not unaccounted, f"bad messages with no trace: {dict(by_kind)} e.g. {unaccounted[:5]}"
    assert not [k for k in letters if k.startswith("?")], "dead letters without a marker"
    assert not [m for m in letters if m in valid], "a valid task was dead-lettered"

    # Every dead letter says why.
    assert all(headers.get(REASON) for headers in letters.values())
    # The undecodable ones: logged with their delivery tag, dead-lettered with the marker.
    undecodable = {m for m in bad if kinds[m] == "undecodable"}
    logged = worker.events("message with undecodable properties rejected")
    assert len(logged) == len(undecodable)
    assert all(isinstance(line.get("delivery_tag"), int) for line in logged)
    assert {m for m, h in letters.items() if h.get(UNDECODABLE)} == undecodable
    # One connection, never a reconnect; no channel lost either (acks all went through).
    assert len(worker.events("connected to broker")) == 1
    assert not worker.events("could not send ack; the broker will redeliver")
    assert not worker.events("could not settle message; the broker will redeliver it")
    assert not worker.events("reconnected to broker; unacked messages will be redelivered")
    assert worker.proc.poll() is None

    dead, rows_only = set(letters) & bad, (set(rows) - set(letters)) & bad
    print(f"seed {seed}: {len(bad)} bad + {len(valid)} valid published in {published:.1f}s, "
          f"settled in {elapsed:.1f}s; bad = {len(dead)} dead-lettered "
          f"({len(undecodable)} undecodable, logged with delivery tags) + {len(rows_only)} "
          f"explained by a result row only")
    print("by kind:", dict(Counter(kinds[m] for m in bad)))
    assert len(bad) == len(dead) + len(rows_only)
