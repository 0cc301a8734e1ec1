"""The ``vision`` workload for Celery: the same steps with boto3 and httpx's sync client.

Request building and answer checking are asyncworker's own pure functions, so
both sides do the same work; only the I/O differs. The S3 client is shared per
process (boto3 clients are thread-safe); each thread or greenlet gets its own
small httpx client, the usual way to use httpx from a thread pool.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import boto3
import httpx
from botocore.config import Config

from asyncworker.contrib.vision.classification import (
    analysis_record,
    answer_text,
    chat_request,
    data_url,
    parse_answer,
)
from asyncworker.contrib.vision.s3 import S3Path

from .celery_app import app

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))
MODEL = os.environ.get("BENCH_GPT_MODEL", "gpt-5")
_ssl = httpx.create_ssl_context()
_local = threading.local()
_lock = threading.Lock()
_s3: Any = None


def s3_client() -> Any:
    """The process's boto3 client, created on first use (after the pool forks)."""
    global _s3
    with _lock:
        if _s3 is None:
            _s3 = boto3.client(
                "s3", endpoint_url=os.environ["BENCH_S3_URL"], region_name="us-east-1",
                aws_access_key_id=os.environ.get("BENCH_S3_ACCESS_KEY_ID", "testing"),
                aws_secret_access_key=os.environ.get("BENCH_S3_SECRET_ACCESS_KEY", "testing"),
                config=Config(max_pool_connections=CONCURRENCY, connect_timeout=5,
                              read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}))
        return _s3


def http_client() -> httpx.Client:
    """This thread's (or greenlet's) client for the model API."""
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = httpx.Client(base_url=os.environ["BENCH_GPT_URL"].rstrip("/") + "/",
                              timeout=httpx.Timeout(60, connect=5), verify=_ssl)
        _local.client = client
    return client


@app.task(name="bench.vision", bind=True)
def vision(self: Any, s3_path: str) -> dict[str, Any]:
    """S3 get, one model call, S3 put."""
    s3 = s3_client()
    source = S3Path.parse(s3_path)
    obj = s3.get_object(Bucket=source.bucket, Key=source.key)
    image_url = data_url(obj["Body"].read(), obj.get("ContentType") or "image/png")
    response = http_client().post("chat/completions", json=chat_request(MODEL, image_url))
    response.raise_for_status()
    classification = parse_answer(answer_text(response.json()))
    target = S3Path(source.bucket, f"analysis/{self.request.id}.json")
    analysis = analysis_record(classification, MODEL, str(source), str(target))
    s3.put_object(Bucket=target.bucket, Key=target.key, Body=json.dumps(analysis).encode(),
                  ContentType="application/json")
    return analysis
