"""Each asyncworker service of deploy/compose/compose.yaml, run from this
checkout with the service's own command and environment (compose.yaml filled in
from .env.example) against the loopback services, so the file cannot rot
unnoticed: a wrong subcommand, option, setting name or health check fails here.
The model API service (bench/fake_openai.py from the asyncworker image, bench/
mounted) is run the same way, from the directory its mount makes.

Changed, and only this: a URL whose host is a compose service gets the loopback
server's address, credentials and (but for HTTP APIs) path: RabbitMQ in a vhost
of this test's own, so the worker on vision_analysis meets no other test's
messages; PostgreSQL; Redis; a moto S3 server and the fake model API started
here. A path under a bind mount's target becomes the host path; the HTTP port
becomes a free one (the beat replicas share one host here); and beat gets a
one-entry schedule, as the file has none. The ports, credentials and database
name in the file's URLs are checked by test_compose_file.py instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from bench.fake_openai import expected_answer
from bench.servers import create_bucket, free_port, running, start_fake_openai, start_s3
from tests.conftest import PG_DSN, REDIS_URL, WorkerProcess, own_vhost, result_of, wait_for
from tests.deploy import compose_file
from tests.deploy.compose_file import ENTRYPOINT, Service

pytestmark = pytest.mark.integration

ANALYSIS = "workers.ai.tasks.gpt5_analysis_task"
NOT_SETTINGS = {"ASYNCWORKER_CONFIG"}  # the settings file's name, read before the settings


@pytest.fixture(scope="module")
def loopback(services: dict[str, str]) -> Iterator[dict[str, str]]:
    """Compose service name -> the URL of its stand-in on loopback."""
    s3, gpt = start_s3(), start_fake_openai("--latency", "fixed:0.05")
    with running(s3, gpt):
        yield {"rabbitmq": own_vhost("asyncworker-compose"), "postgres": PG_DSN,
               "redis": REDIS_URL, "s3": s3.url, "model-api": gpt.url.removesuffix("/v1")}


def to_loopback(value: str, loopback: Mapping[str, str]) -> str:
    """``value`` with a compose host's address (credentials, port) replaced."""
    parts = urlsplit(value)
    if parts.hostname not in loopback:
        return value
    target = urlsplit(loopback[parts.hostname])
    # An HTTP path is the API's own (kept); a broker's or database's names the
    # loopback server's vhost or database.
    path = parts.path if target.scheme == "http" else target.path
    return urlunsplit((parts.scheme, target.netloc, path, parts.query, parts.fragment))


def service_env(service: Service, loopback: Mapping[str, str], http_port: int,
                **extra: str) -> dict[str, str]:
    """The process environment of ``service`` on this host (see the module doc)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in service.environment.items():
        value = to_loopback(value, loopback)
        for target, host in service.binds.items():
            if value == target or value.startswith(target + "/"):
                value = str(host) + value[len(target):]
        if "://" in value:
            assert urlsplit(value).hostname == "127.0.0.1", (key, value)
        env[key] = value
    assert "ASYNCWORKER_WORKER_HTTP_PORT" in service.environment, service.name
    env["ASYNCWORKER_WORKER_HTTP_PORT"] = str(http_port)
    env.update(extra)
    return env


def start(service: Service, env: dict[str, str], log: Path) -> WorkerProcess:
    argv = service.argv()
    assert argv[:3] == list(ENTRYPOINT), argv
    return WorkerProcess(argv[4:], env, log, command=argv[3])


def assert_settings_known(env: Mapping[str, str]) -> None:
    """Every ASYNCWORKER_* variable names a setting (the environment skips unknown
    names silently, so a misspelt one would otherwise go unnoticed)."""
    done = subprocess.run([sys.executable, "-m", "asyncworker", "config"], env=dict(env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sources"][1] == env["ASYNCWORKER_CONFIG"]
    names = set()
    for name, value in report["settings"].items():
        names.add(name)
        if isinstance(value, dict) and name in report["plugins"]:
            names.update(value)
    given = {k.removeprefix("ASYNCWORKER_").lower() for k in env
             if k.startswith("ASYNCWORKER_") and k not in NOT_SETTINGS}
    assert given <= names, given - names


def assert_healthy(service: Service, env: Mapping[str, str], port: int) -> None:
    """The service's health check command passes, and its probes answer 200."""
    argv = service.healthcheck_argv()
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    done = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

    def answers(path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    wait_for(lambda: answers("/healthz") and answers("/readyz"), 30, what="/healthz, /readyz")


def growbin_client(broker: str) -> Any:
    """A Celery producer and result reader with the Growbin queue and route."""
    from celery import Celery
    from kombu import Exchange, Queue

    app = Celery("growbin", broker=broker,
                 backend="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])
    app.conf.update(
        result_extended=True, broker_connection_retry_on_startup=True,
        task_queues=[Queue("vision_analysis", Exchange("growbin", type="direct"),
                           routing_key="vision.analyze")],
        task_routes={ANALYSIS: {"queue": "vision_analysis"}})
    return app


def stop(process: WorkerProcess) -> None:
    process.signal(signal.SIGTERM)
    code = process.wait_exit(90)
    process.stop()
    assert code == 0, process.log_path.read_text()


def test_worker_service_runs_a_vision_task(loopback: dict[str, str], tmp_path: Path) -> None:
    service = compose_file.services()["worker"]
    port = free_port()
    env = service_env(service, loopback, port)
    assert_settings_known(env)

    client = growbin_client(loopback["rabbitmq"])
    with client.connection_for_write() as conn:
        for queue in client.conf.task_queues:
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()
    bucket = env["ASYNCWORKER_S3_BUCKET"]
    create_bucket(loopback["s3"], bucket)

    worker = start(service, env, tmp_path / "worker.log")
    try:
        worker.wait_ready(60)
        assert worker.events("worker ready")[0]["queues"] == ["vision_analysis"]
        assert_healthy(service, env, port)

        import boto3

        s3 = boto3.client("s3", endpoint_url=loopback["s3"], region_name="us-east-1",
                          aws_access_key_id=env["ASYNCWORKER_S3_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["ASYNCWORKER_S3_SECRET_ACCESS_KEY"])
        image = b"\x89PNG\r\n\x1a\n" + os.urandom(1024)
        key = f"compose/{uuid.uuid4().hex}.png"
        s3.put_object(Bucket=bucket, Key=key, Body=image, ContentType="image/png")
        analysis = result_of(client.send_task(ANALYSIS, [f"s3://{bucket}/{key}"]), 60)
        assert analysis["category"] == expected_answer(image)["category"]
    finally:
        stop(worker)


def test_beat_replicas_fire_each_tick_once(loopback: dict[str, str], tmp_path: Path) -> None:
    service = compose_file.services()["beat"]
    assert service.replicas == 2
    entry, queue = f"compose-{uuid.uuid4().hex[:8]}", f"t.{uuid.uuid4().hex[:10]}"
    schedule = {entry: {"task": "compose.tick", "schedule": 1.0, "options": {"queue": queue}}}
    replicas = []
    try:
        for i in range(service.replicas):
            port = free_port()
            env = service_env(service, loopback, port,
                              ASYNCWORKER_BEAT_SCHEDULE=json.dumps(schedule))
            if i == 0:
                assert_settings_known(env)
            replica = start(service, env, tmp_path / f"beat-{i}.log")
            replicas.append(replica)
            replica.wait_ready(60, event="beat started")
            assert_healthy(service, env, port)

        def fired() -> list[str]:
            return [line["scheduled"] for replica in replicas
                    for line in replica.events("beat fired") if line["entry"] == entry]

        wait_for(lambda: len(fired()) >= 3, 30, what="three ticks")
        assert len(fired()) == len(set(fired())), fired()
    finally:
        for replica in replicas:
            stop(replica)
        from kombu import Connection

        with Connection(loopback["rabbitmq"]) as conn:
            conn.default_channel.queue_delete(queue)


def test_model_api_service_runs_from_the_mounted_bench() -> None:
    """The model API's entrypoint, from the directory its mount makes, answers its check."""
    service = compose_file.services()["model-api"]
    [(target, host)] = service.binds.items()
    assert str(Path(target).parent) == service.spec["working_dir"]
    argv = [sys.executable if arg == "python" else arg for arg in service.spec["entrypoint"]]
    port = argv[argv.index("--port") + 1]
    free = str(free_port())
    argv[argv.index("--port") + 1] = free
    argv[argv.index("--host") + 1] = "127.0.0.1"  # not every address of a shared host
    check = [sys.executable if arg == "python" else arg.replace(f":{port}/", f":{free}/")
             for arg in service.healthcheck_argv()]
    env = {**os.environ, **service.environment}
    server = subprocess.Popen(argv, cwd=host.parent, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: subprocess.run(check, env=env, capture_output=True).returncode == 0
                 or server.poll() is not None, 30, interval=0.5, what="model API health check")
        assert server.poll() is None, f"model API exited {server.returncode}"
    finally:
        server.terminate()
        server.wait(30)
