"""The vision tasks against a real S3 API (moto server) and the project's fake model API.

A real Celery client publishes and reads the results; the worker serves the
default app (``asyncworker.tasks``) with the Growbin topology.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncworker.contrib.vision.gpt import ShardedClient
from bench.fake_openai import expected_answer
from bench.servers import S3_CREDENTIALS, Server, create_bucket, start_fake_openai, start_s3
from tests.conftest import BROKER_URL, PG_DSN, result_of, task_rows, wait_for

pytestmark = pytest.mark.integration

BUCKET = "growbin-test"
UPLOAD = "workers.storage.tasks.image_upload_task"
ANALYSIS = "workers.ai.tasks.gpt5_analysis_task"
MODEL = "gpt-5-test"


@pytest.fixture(scope="module")
def s3_server(services: dict[str, str]) -> Iterator[Server]:
    server = start_s3()
    try:
        create_bucket(server.url, BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gpt_server() -> Iterator[Server]:
    server = start_fake_openai("--latency", "fixed:0.05")
    yield server
    server.stop()


@pytest.fixture
def gpt(gpt_server: Server) -> httpx.Client:
    """A control client for the fake model API, reset for each test."""
    client = httpx.Client(base_url=gpt_server.url.removesuffix("/v1"))
    client.post("/_reset").raise_for_status()
    return client


@pytest.fixture
def s3(s3_server: Server) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                        aws_access_key_id=S3_CREDENTIALS["s3_access_key_id"],
                        aws_secret_access_key=S3_CREDENTIALS["s3_secret_access_key"])


@pytest.fixture
def growbin_client(services: dict[str, str]) -> Any:
    """A Celery client configured as the Growbin producers are: their queues and routes."""
    from celery import Celery
    from kombu import Exchange, Queue

    growbin = Exchange("growbin", type="direct")
    app = Celery("growbin", broker=BROKER_URL,
                 backend="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])
    app.conf.update(
        result_extended=True,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue("user_input", growbin, routing_key="user.input"),
                     Queue("vision_analysis", growbin, routing_key="vision.analyze")],
        task_routes={UPLOAD: {"queue": "user_input"}, ANALYSIS: {"queue": "vision_analysis"}},
    )
    return app


@pytest.fixture
def vision_worker(start_worker: Any, s3_server: Server, gpt_server: Server) -> Any:
    """Start the default app's worker pointed at the test servers."""

    def start(*args: str, **settings: Any) -> Any:
        options = {
            "s3_endpoint_url": s3_server.url, "s3_bucket": BUCKET, **S3_CREDENTIALS,
            "gpt_base_url": gpt_server.url, "gpt_api_key": "sk-test", "gpt_model": MODEL,
            "gpt_timeout": 5, "gpt_max_retries": 2, "gpt_retry_backoff_max": 1,
        }
        options.update(settings)
        return start_worker(*args, app="asyncworker.tasks:app", **options)

    return start


def image_file(tmp_path: Path) -> tuple[Path, bytes]:
    """A PNG-looking file with random content (so its classification is unpredictable)."""
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
    path = tmp_path / f"photo-{uuid.uuid4().hex[:8]}.png"
    path.write_bytes(data)
    return path, data


def put_image(s3: Any, key: str) -> bytes:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1024)
    s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/png")
    return data


def stats(gpt: httpx.Client) -> dict[str, Any]:
    response = gpt.get("/_stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def failure_of(result: Any, timeout: float = 60) -> BaseException:
    wait_for(result.ready, timeout, interval=0.05, what=f"result of {result.id}")
    assert result.status == "FAILURE", (result.status, result.result)
    exc = result.result
    assert isinstance(exc, BaseException)
    return exc


def test_chain_upload_then_analysis(growbin_client: Any, vision_worker: Any, gpt: httpx.Client,
                                    s3: Any, tmp_path: Path) -> None:
    from celery import chain

    with growbin_client.connection_for_write() as conn:
        for queue in growbin_client.conf.task_queues:
            bound = queue(conn.default_channel)
            bound.declare()  # as the worker declares it: same arguments, no 406
            bound.purge()  # nothing left over from an earlier run
    vision_worker("-Q", "user_input,vision_analysis")
    path, data = image_file(tmp_path)

    result = chain(growbin_client.signature(UPLOAD, [str(path)]),
                   growbin_client.signature(ANALYSIS)).apply_async()
    analysis = result_of(result, 60)

    upload_result = result_of(result.parent)
    assert upload_result["s3_path"].startswith(f"s3://{BUCKET}/images/{result.parent.id}/")
    assert upload_result["s3_path"].endswith(path.name)
    key = upload_result["s3_path"].split("/", 3)[3]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data

    assert {k: analysis[k] for k in ("category", "recyclable", "confidence", "notes")} \
        == expected_answer(data)
    assert analysis["s3_path"] == upload_result["s3_path"]
    assert analysis["model"] == MODEL
    stored_key = analysis["analysis_path"].split("/", 3)[3]
    assert stored_key == f"analysis/{result.id}.json"
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=stored_key)["Body"].read()) == analysis

    request = stats(gpt)["last_request"]
    assert request["model"] == MODEL
    assert request["image_url_scheme"] == "data"
    assert request["authorization"] is True
    assert request["response_format"]["type"] == "json_schema"
    rows = task_rows_for(result.id, result.parent.id)
    # Celery's "queue" column holds the delivery's routing key. The first step was
    # published by Celery, the second by our worker: both go the way Celery sends
    # them (through the default exchange, keyed by queue name).
    assert rows[result.parent.id]["queue"] == "user_input"
    assert rows[result.id]["queue"] == "vision_analysis"


def task_rows_for(*ids: str) -> dict[str, dict[str, Any]]:
    import psycopg2

    conn = psycopg2.connect(PG_DSN)
    try:
        return task_rows(conn, list(ids))
    finally:
        conn.close()


def test_presigned_url_mode(celery_app: Any, vision_worker: Any, gpt: httpx.Client, s3: Any,
                            queue_name: str) -> None:
    vision_worker("-Q", queue_name, gpt_image_mode="presigned_url")
    key = f"direct/{uuid.uuid4().hex}.png"
    data = put_image(s3, key)
    analysis = result_of(celery_app.send_task(ANALYSIS, [f"s3://{BUCKET}/{key}"],
                                              queue=queue_name), 60)
    assert analysis["category"] == expected_answer(data)["category"]
    assert stats(gpt)["last_request"]["image_url_scheme"] == "http"


def test_429_is_retried_after_retry_after(celery_app: Any, vision_worker: Any,
                                           gpt: httpx.Client, s3: Any, queue_name: str) -> None:
    worker = vision_worker("-Q", queue_name)
    key = f"direct/{uuid.uuid4().hex}.png"
    data = put_image(s3, key)
    gpt.post("/_script", json=[{"status": 429, "retry_after": 2, "delay": 0}]).raise_for_status()
    sent = time.monotonic()
    result = celery_app.send_task(ANALYSIS, [f"s3://{BUCKET}/{key}"], queue=queue_name)
    analysis = result_of(result, 60)
    assert time.monotonic() - sent >= 2.0  # the retry waited as the server asked
    assert analysis["category"] == expected_answer(data)["category"]
    assert stats(gpt)["statuses"] == {"429": 1, "200": 1}
    assert task_rows_for(result.id)[result.id]["retries"] == 1
    [retry] = worker.events("task retry scheduled")
    assert retry["task_id"] == result.id and retry["exc_type"] == "GPTUnavailable"


def test_5xx_retried_until_max_retries_then_fails(celery_app: Any, vision_worker: Any,
                                                  gpt: httpx.Client, s3: Any,
                                                  queue_name: str) -> None:
    vision_worker("-Q", queue_name)  # gpt_max_retries=2: three attempts in all
    key = f"direct/{uuid.uuid4().hex}.png"
    put_image(s3, key)
    gpt.post("/_script", json=[{"status": 503, "delay": 0}] * 3).raise_for_status()
    result = celery_app.send_task(ANALYSIS, [f"s3://{BUCKET}/{key}"], queue=queue_name)
    exc = failure_of(result)
    assert type(exc).__name__ == "GPTUnavailable" and "503" in str(exc)
    assert stats(gpt)["statuses"] == {"503": 3}
    assert task_rows_for(result.id)[result.id]["retries"] == 2


def test_timeout_is_retried(celery_app: Any, vision_worker: Any, gpt: httpx.Client, s3: Any,
                            queue_name: str) -> None:
    worker = vision_worker("-Q", queue_name, gpt_timeout=0.5)
    key = f"direct/{uuid.uuid4().hex}.png"
    data = put_image(s3, key)
    gpt.post("/_script", json=[{"delay": 3}]).raise_for_status()
    result = celery_app.send_task(ANALYSIS, [f"s3://{BUCKET}/{key}"], queue=queue_name)
    analysis = result_of(result, 60)
    assert analysis["category"] == expected_answer(data)["category"]
    [retry] = worker.events("task retry scheduled")
    assert "timed out" in retry["error"]


@pytest.mark.parametrize("answer", [
    "I think it is a plastic bottle.",
    '{"category": "unobtanium", "recyclable": true, "confidence": 0.9, "notes": "?"}',
    '{"category": "glass", "recyclable": "yes", "confidence": 0.9, "notes": ""}',
])
def test_malformed_answer_fails_with_the_raw_answer(celery_app: Any, vision_worker: Any,
                                                    gpt: httpx.Client, s3: Any, queue_name: str,
                                                    answer: str) -> None:
    vision_worker("-Q", queue_name)
    key = f"direct/{uuid.uuid4().hex}.png"
    data = put_image(s3, key)
    gpt.post("/_script", json=[{"content": answer, "delay": 0}]).raise_for_status()
    bad = celery_app.send_task(ANALYSIS, [f"s3://{BUCKET}/{key}"], queue=queue_name)
    exc = failure_of(bad)
    assert type(exc).__name__ == "MalformedAnswer"
    assert answer[:40] in str(exc)
    assert stats(gpt)["requests"] == 1  # not retried
    # The worker carries on.
    good = celery_app.send_task(ANALYSIS, [f"s3://{BUCKET}/{key}"], queue=queue_name)
    assert result_of(good, 60)["category"] == expected_answer(data)["category"]


def test_missing_object_fails_without_retry(celery_app: Any, vision_worker: Any,
                                            gpt: httpx.Client, queue_name: str) -> None:
    vision_worker("-Q", queue_name)
    result = celery_app.send_task(ANALYSIS, [f"s3://{BUCKET}/missing/{uuid.uuid4().hex}.png"],
                                  queue=queue_name)
    exc = failure_of(result)
    assert type(exc).__name__ == "ObjectNotFound" and "does not exist" in str(exc)
    assert task_rows_for(result.id)[result.id]["retries"] == 0
    assert stats(gpt)["requests"] == 0


def test_upload_of_a_missing_file_fails(celery_app: Any, vision_worker: Any, queue_name: str,
                                        tmp_path: Path) -> None:
    vision_worker("-Q", queue_name)
    result = celery_app.send_task(UPLOAD, [str(tmp_path / "nope.png")], queue=queue_name)
    exc = failure_of(result)
    assert isinstance(exc, FileNotFoundError)


async def test_fake_model_api_holds_1000_concurrent_requests(gpt_server: Server,
                                                             gpt: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}

    control = gpt_server.url.removesuffix("/v1") + "/_script"
    async with ShardedClient(1000, base_url=gpt_server.url + "/", timeout=60) as client:
        (await client.post(control, json=[{"delay": 5}] * 1000)).raise_for_status()
        replies = await asyncio.gather(
            *(client.post("chat/completions", json=body) for _ in range(1000)))
    statuses = [reply.status_code for reply in replies]
    assert statuses == [200] * 1000
    assert stats(gpt)["max_in_flight"] == 1000
