"""Pure parts of the vision pipeline: answer validation, Retry-After, backoff, S3 paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from asyncworker.backends.base import exception_to_meta
from asyncworker.beat import BeatSettings
from asyncworker.contrib.vision.classification import (
    CATEGORIES,
    MalformedAnswer,
    answer_text,
    chat_request,
    parse_answer,
)
from asyncworker.contrib.vision.gpt import GPTUnavailable, ShardedClient, parse_retry_after
from asyncworker.contrib.vision.http_transport import AsyncioTransport
from asyncworker.contrib.vision.s3 import S3Path
from asyncworker.events import EventsSettings
from asyncworker.monitoring import MonitoringSettings
from asyncworker.worker_lost.settings import WorkerLostSettings

GOOD = {"category": "Glass", "recyclable": True, "confidence": 0.8, "notes": "Rinse it."}


def completion(content: Any, **choice: Any) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": content}, **choice}]}


def test_valid_answer_is_normalised() -> None:
    result = parse_answer(json.dumps(GOOD))
    assert result.as_dict() == {**GOOD, "category": "glass"}
    fenced = parse_answer("```json\n" + json.dumps(GOOD) + "\n```")
    assert fenced == result


@pytest.mark.parametrize(("answer", "reason"), [
    ("a glass bottle", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({**GOOD, "category": "wood"}), "unknown category"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "notes"}), "missing keys"),
    (json.dumps({**GOOD, "recyclable": "yes"}), "recyclable"),
    (json.dumps({**GOOD, "confidence": 1.5}), "confidence"),
    (json.dumps({**GOOD, "confidence": True}), "confidence"),
    (json.dumps({**GOOD, "notes": None}), "notes"),
])
def test_invalid_answers_carry_the_raw_text(answer: str, reason: str) -> None:
    with pytest.raises(MalformedAnswer) as info:
        parse_answer(answer)
    assert reason in info.value.reason
    assert info.value.raw == answer and answer in str(info.value)


def test_completion_shapes() -> None:
    assert answer_text(completion("x")) == "x"
    with pytest.raises(MalformedAnswer, match="refused"):
        answer_text({"choices": [{"message": {"content": None, "refusal": "no"}}]})
    with pytest.raises(MalformedAnswer, match="cut off"):
        answer_text(completion('{"categ', finish_reason="length"))
    with pytest.raises(MalformedAnswer, match="no choices"):
        answer_text({"error": "?"})
    with pytest.raises(MalformedAnswer, match="no choices"):
        answer_text("<html>bad gateway</html>")


def test_malformed_answer_survives_celery_style_rebuild() -> None:
    exc = MalformedAnswer("not JSON", "I see a bottle")
    meta = exception_to_meta(exc)
    rebuilt = MalformedAnswer(*meta["exc_message"])  # what a Celery client does
    assert str(rebuilt) == str(exc) and "I see a bottle" in str(rebuilt)


def test_request_asks_for_json_with_the_image() -> None:
    body = chat_request("gpt-5", "data:image/png;base64,AA")
    assert body["model"] == "gpt-5"
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["category"]["enum"] == list(CATEGORIES)
    parts = body["messages"][1]["content"]
    assert {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}} in parts


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(httpx.Headers({"retry-after": when})) or 0) <= 30
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers()) is None


def test_backoff_honours_retry_after_and_caps() -> None:
    assert GPTUnavailable("429", 429, retry_after=3).delay(attempt=5, cap=1) == 3
    assert GPTUnavailable("429", 429, retry_after=10_000).delay(0, 60) == 600
    for attempt, ceiling in ((0, 1), (1, 2), (3, 8), (10, 60)):
        delays = [GPTUnavailable("503", 503).delay(attempt, cap=60) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_s3_paths() -> None:
    path = S3Path.parse("s3://bucket/images/a b.png")
    assert (path.bucket, path.key, str(path)) == ("bucket", "images/a b.png",
                                                  "s3://bucket/images/a b.png")
    for bad in ("bucket/key", "s3://bucket", "s3:///key", "https://x/y"):
        with pytest.raises(ValueError):
            S3Path.parse(bad)


async def test_model_client_uses_a_given_transport_or_a_pool_of_its_size() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={})

    mocked = ShardedClient(16, base_url="http://model.test/",
                           transport=httpx.MockTransport(handler))
    assert (await mocked.post("chat")).status_code == 200
    assert seen == ["http://model.test/chat"]
    await mocked.aclose()

    own = ShardedClient(16, base_url="http://model.test/", verify=False)
    assert isinstance(own.transport, AsyncioTransport)
    assert own.transport.max_connections == 16
    await own.aclose()


def test_plugin_registers_tasks_clients_and_section() -> None:
    from asyncworker import App
    from asyncworker.contrib.vision import VisionPlugin, VisionSettings, pipeline, tasks

    app = App("v")
    before = len(app._lifespans)
    app.use(VisionPlugin())
    app.use(VisionPlugin())   # once only
    pipeline.install(app)     # already has the clients
    assert {tasks.UPLOAD, tasks.ANALYSIS} <= set(app.tasks)
    assert app.tasks[tasks.ANALYSIS].bind is True
    assert len(app._lifespans) == before + 1
    assert len(app.plugins) == 6  # beat, events, monitoring, worker_lost, parked, vision
    assert app.settings_sections() == [BeatSettings, EventsSettings, MonitoringSettings,
                                       WorkerLostSettings, VisionSettings]

    bench_like = App("b")
    pipeline.install(bench_like)  # the section and the clients, no tasks
    pipeline.install(bench_like)
    assert not {tasks.UPLOAD, tasks.ANALYSIS} & set(bench_like.tasks)
    assert [p.name for p in bench_like.plugins] == ["beat", "events", "monitoring",
                                                    "worker_lost", "parked", "vision-clients"]


async def test_clients_and_tasks_read_the_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifespan hook opens the clients from the ``vision`` section; the analysis task
    retries with the section's ``gpt_max_retries`` and backoff cap."""
    from types import SimpleNamespace

    from asyncworker import App
    from asyncworker.contrib.vision import VisionPlugin, pipeline, tasks
    from asyncworker.exceptions import Retry

    for key in ("ASYNCWORKER_CONFIG", "ASYNCWORKER_GPT_MODEL", "ASYNCWORKER_S3_BUCKET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ASYNCWORKER_GPT_MAX_RETRIES", "4")
    app = App("v", worker_concurrency=16, s3_bucket="bucket-x", gpt_model="model-x",
              gpt_retry_backoff_max=1.5, s3_endpoint_url="http://127.0.0.1:1")
    app.use(VisionPlugin())
    async with app.running():
        clients = pipeline.clients_of(app)
        assert (clients.bucket, clients.gpt.model, clients.image_mode) == (
            "bucket-x", "model-x", "data_url")
        transport = clients.gpt.http.transport  # a pool sized to worker_concurrency
        assert isinstance(transport, AsyncioTransport) and transport.max_connections == 16

        async def unavailable(*_: object, **__: object) -> None:
            raise GPTUnavailable("busy", 503)

        monkeypatch.setattr(pipeline, "analyse_image", unavailable)
        seen: dict[str, object] = {}

        def retry(**options: object) -> Retry:
            seen.update(options)
            return Retry("again")

        task = SimpleNamespace(app=app, request=SimpleNamespace(id="t1", retries=3),
                               retry=retry)
        with pytest.raises(Retry):
            await tasks.gpt5_analysis_task(task, {"s3_path": "s3://bucket-x/k.png"})  # type: ignore[arg-type]
        assert seen["max_retries"] == 4
        assert 0.75 <= float(seen["countdown"]) <= 1.5  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not open"):
        pipeline.clients_of(app)


async def test_model_url_joined_once_like_httpx_does() -> None:
    for base in ("http://model.test/v1", "http://model.test/v1/"):
        client = ShardedClient(4, base_url=base)
        joined = client.url("chat/completions")
        assert joined == client.client.build_request("POST", "chat/completions").url
        assert str(joined) == "http://model.test/v1/chat/completions"
        await client.aclose()


async def test_a_proxy_in_the_environment_keeps_httpx_own_transport(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The asyncio transport connects directly; with a proxy set, httpx's own must serve.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    proxied = ShardedClient(8, base_url="https://api.model.test/v1/")
    assert proxied.transport is None
    await proxied.aclose()
    bypassed = ShardedClient(8, base_url="https://llm.internal.test/v1/", verify=False)
    assert isinstance(bypassed.transport, AsyncioTransport)
    await bypassed.aclose()
