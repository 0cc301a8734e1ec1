"""asyncworker on Amazon SQS: moto in server mode on loopback as the endpoint.

The producer is a real Celery client on kombu's SQS transport (``sqs://``),
and results are read back through it from PostgreSQL. Each test uses a queue
name prefix of its own, so the tests share one moto server.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bench.servers import Server, free_port
from bench.servers import start_s3 as start_moto  # moto's server serves SQS too
from tests.conftest import PG_DSN, REPO, process_env, result_of, wait_for

pytestmark = pytest.mark.integration
pytest.importorskip("boto3")

KEY, SECRET = "AKIDSQSTEST", "sqs-secret-never-logged"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto(services: dict[str, str]) -> Iterator[Server]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture
def sqs_url(moto: Server) -> str:
    """``sqs://KEY:SECRET@127.0.0.1:PORT``: an endpoint, credentials in the URL (as kombu)."""
    return f"sqs://{KEY}:{SECRET}@{moto.url.split('://', 1)[1]}"


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def sqs(moto: Server) -> Any:
    import boto3

    return boto3.client("sqs", endpoint_url=moto.url, region_name=REGION,
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def client(sqs_url: str, options: dict[str, Any]) -> Any:
    """A real Celery client on kombu's SQS transport, results from PostgreSQL."""
    from celery import Celery

    app = Celery("sqsclient", broker=sqs_url,
                 backend="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])
    app.conf.update(result_extended=True, task_serializer="json", accept_content=["json"],
                    broker_transport_options={"region": REGION, **options})
    return app


def start(start_worker: Any, sqs_url: str, options: dict[str, Any], *args: str,
          **settings: Any) -> Any:
    return start_worker(*args, broker_url=sqs_url,
                        broker_transport_options={"region": REGION, "wait_time_seconds": 1,
                                                  "polling_interval": 0.1, **options},
                        **settings)


def depth(sqs: Any, name: str) -> int:
    """Messages in the SQS queue ``name``, visible or not."""
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"])


def kombu_envelope(sqs_body: str) -> dict[str, Any]:
    """The kombu envelope an SQS body holds (base64 JSON)."""
    envelope: dict[str, Any] = json.loads(base64.b64decode(sqs_body))
    return envelope


def test_celery_client_tasks_complete_and_are_deleted(start_worker: Any, sqs_url: str,
                                                      prefix: str, sqs: Any) -> None:
    options = {"queue_name_prefix": prefix}
    worker = start(start_worker, sqs_url, options, "-Q", "work.q", "--prefetch-multiplier", "1",
                   "-c", "4")
    app = client(sqs_url, options)
    results = [app.send_task("compat.add_sync", args=(i, 1), queue="work.q") for i in range(30)]
    echo = app.send_task("compat.echo", args=("x",), kwargs={"k": [1, 2]}, queue="work.q")
    assert [result_of(r) for r in results] == [i + 1 for i in range(30)]
    assert result_of(echo)["kwargs"] == {"k": [1, 2]}
    # The queue is prefix + name with '.' made '-', as kombu names it; every
    # message is deleted once its result is stored.
    wait_for(lambda: depth(sqs, f"{prefix}work-q") == 0, 30, what="queue drained")
    lines = [line for line in worker.lines() if line.get("component") == "broker"]
    assert any("not available on SQS" in str(line.get("event")) for line in lines)
    text = worker.log_path.read_text()
    assert SECRET not in text and KEY not in text


def test_visibility_extended_for_a_long_task_and_an_eta(start_worker: Any, sqs_url: str,
                                                        prefix: str, redis_client: Any) -> None:
    # A 2 s visibility timeout; the task runs 7 s and the ETA waits 6 s. Two
    # workers: a message SQS handed out again would run on the other one.
    options = {"queue_name_prefix": prefix, "visibility_timeout": 2}
    workers = [start(start_worker, sqs_url, options, "-Q", "long", "-n", f"w{i}@{prefix}")
               for i in range(2)]
    app = client(sqs_url, options)
    long = app.send_task("compat.count_runs", args=(7,), queue="long")
    later = app.send_task("compat.count_runs", args=(0,), queue="long", countdown=6)
    assert result_of(long, timeout=60) == 1
    assert result_of(later, timeout=60) == 1
    time.sleep(4)  # past two more timeouts
    assert int(redis_client.get(f"runs:{long.id}")) == 1
    assert int(redis_client.get(f"runs:{later.id}")) == 1
    received = [line.get("task_id") for w in workers for line in w.events("task received")]
    assert sorted(received) == sorted([long.id, later.id])  # each delivered once


def test_fifo_queue_keeps_order_within_a_group(start_worker: Any, sqs_url: str,
                                               prefix: str) -> None:
    options = {"queue_name_prefix": prefix}
    start(start_worker, sqs_url, options, "-Q", "jobs.fifo", "-c", "10")
    app = client(sqs_url, options)
    # acks_late: as SQS itself, a group's next message comes once the one before
    # is deleted, which for these is once it has finished.
    group_a = [app.send_task("compat.sleep_late", args=(0.3,), queue="jobs.fifo",
                             MessageGroupId="a") for _ in range(5)]
    group_b = [app.send_task("compat.sleep_late", args=(0.3,), queue="jobs.fifo",
                             MessageGroupId="b") for _ in range(5)]
    for group in (group_a, group_b):
        runs = [result_of(r, timeout=60) for r in group]
        # Each starts only after the one before it in the group has finished.
        for before, after in itertools.pairwise(runs):
            assert after["start"] >= before["end"], runs


def test_bad_input_is_dead_lettered_with_a_reason(start_worker: Any, sqs_url: str, prefix: str,
                                                  sqs: Any) -> None:
    options = {"queue_name_prefix": prefix}
    start(start_worker, sqs_url, options, "-Q", "in.q")
    app = client(sqs_url, options)
    app.send_task("compat.add_sync", args=(0, 0), queue="in.q").get(timeout=30)  # queue exists
    url = sqs.get_queue_url(QueueName=f"{prefix}in-q")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{not json")
    unknown = app.send_task("compat.no_such_task", queue="in.q")
    good = app.send_task("compat.add_sync", args=(2, 3), queue="in.q")
    assert result_of(good) == 5
    dlq = f"{prefix}in-q-dlq"  # "<queue>.dlq", named as kombu would name it

    def dead() -> list[dict[str, Any]]:
        try:
            dlq_url = sqs.get_queue_url(QueueName=dlq)["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            return []
        # VisibilityTimeout 0: read, and leave them for the dlq command below.
        for m in sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10,
                                     VisibilityTimeout=0).get("Messages", []):
            found[m["MessageId"]] = kombu_envelope(m["Body"])
        return list(found.values()) if len(found) >= 2 else []

    found: dict[str, dict[str, Any]] = {}
    letters = wait_for(dead, 30, interval=0.5, what="two dead letters")
    reasons = {str(e["headers"].get("x-asyncworker-reason")) for e in letters}
    assert any(r.startswith("malformed SQS message") for r in reasons), reasons
    assert "unknown task 'compat.no_such_task'" in reasons
    malformed = next(e for e in letters
                     if str(e["headers"]["x-asyncworker-reason"]).startswith("malformed"))
    assert base64.b64decode(malformed["body"]) == b"{not json"  # kept as it came
    by_id = {e["headers"].get("id"): e for e in letters}
    assert by_id[unknown.id]["properties"]["delivery_info"]["routing_key"] == "in.q.dlq"
    wait_for(lambda: depth(sqs, f"{prefix}in-q") == 0, 30, what="input queue drained")
    # ``asyncworker dlq list`` reads them over SQS too.
    env = process_env(broker_url=sqs_url, broker_transport_options={
        "region": REGION, "queue_name_prefix": prefix})
    listed = subprocess.run(
        [sys.executable, "-m", "asyncworker", "dlq", "-A", "tests.apps.compat:app", "list",
         "in.q"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert {row["task_id"] for row in rows} >= {unknown.id}
    assert len(rows) == 2, listed.stderr


def test_health_and_metrics_on_sqs(start_worker: Any, sqs_url: str, prefix: str) -> None:
    port = free_port()
    options = {"queue_name_prefix": prefix}
    start(start_worker, sqs_url, options, "-Q", "mon", "--http-port", str(port), "-E")
    app = client(sqs_url, options)
    assert result_of(app.send_task("compat.add_sync", args=(1, 1), queue="mon")) == 2
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert b"asyncworker" in r.read()


def test_endpoint_outage_backs_off_and_resumes(start_worker: Any, moto: Server,
                                               prefix: str) -> None:
    from tests.tcpproxy import TcpProxy

    host, port = moto.url.split("://", 1)[1].split(":")
    proxy = TcpProxy(host, int(port))
    proxy.start()
    via_proxy = f"sqs://{KEY}:{SECRET}@127.0.0.1:{proxy.port}"
    direct = f"sqs://{KEY}:{SECRET}@{host}:{port}"
    # A receive whose answer the outage cuts off hides its messages for a
    # visibility timeout (SQS's at-least-once): a short one here.
    options = {"queue_name_prefix": prefix, "visibility_timeout": 5}
    worker = start(start_worker, via_proxy, options, "-Q", "out.q",
                   worker_reconnect_max_interval=1)
    app = client(direct, options)  # the producer still reaches SQS
    try:
        assert result_of(app.send_task("compat.add_sync", args=(1, 2), queue="out.q")) == 3
        proxy.stop()
        wait_for(lambda: worker.events("broker unreachable, retrying"), 30,
                 what="the worker noticing the outage")
        during = [app.send_task("compat.add_sync", args=(i, i), queue="out.q")
                  for i in range(5)]
        time.sleep(2)
        proxy.start()
        assert [result_of(r, timeout=60) for r in during] == [2 * i for i in range(5)]
        assert worker.events("broker reachable again")
        attempts = worker.events("broker unreachable, retrying")
        assert len(attempts) < 30  # backed off, not a busy loop
        assert all(SECRET not in str(line) and KEY not in str(line) for line in attempts)
    finally:
        proxy.stop()


def test_warm_shutdown_gives_unstarted_messages_back_at_once(start_worker: Any, sqs_url: str,
                                                             prefix: str) -> None:
    # The default 30 min visibility timeout: only an explicit requeue (visibility 0)
    # lets the second worker have the messages the first one held.
    options = {"queue_name_prefix": prefix}
    first = start(start_worker, sqs_url, options, "-Q", "sd", "-c", "1",
                  "--prefetch-multiplier", "4", "-n", f"first@{prefix}")
    app = client(sqs_url, options)
    results = [app.send_task("compat.sleep_late", args=(2,), queue="sd") for _ in range(4)]
    wait_for(lambda: len(first.events("task received")) == 4, 30, what="four held")
    first.stop()
    start(start_worker, sqs_url, options, "-Q", "sd", "-n", f"second@{prefix}")
    assert all(result_of(r, timeout=30)["end"] for r in results)


def test_predefined_queues_with_their_own_credentials(start_worker: Any, moto: Server,
                                                      prefix: str, sqs: Any) -> None:
    name = f"{prefix}pq"
    urls = {q: sqs.create_queue(QueueName=q)["QueueUrl"] for q in (name, f"{name}-dlq")}
    options = {"predefined_queues": {
        q: {"url": url, "access_key_id": KEY, "secret_access_key": SECRET}
        for q, url in urls.items()}}
    endpoint = "sqs://" + moto.url.split("://", 1)[1]  # no credentials but the queues'
    worker = start(start_worker, endpoint, options, "-Q", name)
    app = client(endpoint, options)
    assert result_of(app.send_task("compat.add_sync", args=(4, 5), queue=name)) == 9
    app.send_task("compat.no_such_task", queue=name)
    wait_for(lambda: worker.events("message dead-lettered"), 30, what="dead letter")
    wait_for(lambda: depth(sqs, f"{name}-dlq") == 1, 30, what="kept in the predefined DLQ")
    assert SECRET not in worker.log_path.read_text()
