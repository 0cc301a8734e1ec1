"""The model client (httpx on the asyncio transport) against the fake model API server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import httpx
import pytest

from asyncworker.contrib.vision.gpt import ChatClient, GPTRejected, GPTUnavailable, ShardedClient
from bench.fake_openai import expected_answer
from bench.servers import Server, start_fake_openai

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    server = start_fake_openai("--latency", "fixed:0.05")
    yield server
    server.stop()


def control(server: Server) -> httpx.Client:
    client = httpx.Client(base_url=server.url.removesuffix("/v1"))
    client.post("/_reset").raise_for_status()
    return client


async def test_pool_bounds_requests_in_flight_and_answers_match(server: Server) -> None:
    stats = control(server)
    url = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    async with ShardedClient(4, base_url=server.url + "/", timeout=30) as http:
        chat = ChatClient(http, "gpt-test")
        answers = await asyncio.gather(*(chat.classify(url) for _ in range(40)))
    want = expected_answer(IMAGE)
    assert {(a.category, a.recyclable) for a in answers} == {
        (want["category"], want["recyclable"])}
    counters = stats.get("/_stats").json()
    assert counters["requests"] == 40
    assert counters["max_in_flight"] == 4


async def test_failures_are_sorted_as_the_task_expects(server: Server) -> None:
    stats = control(server)
    stats.post("/_script", json=[{"status": 429, "retry_after": 7, "delay": 0},
                                 {"status": 500, "delay": 0},
                                 {"status": 400, "delay": 0},
                                 {"delay": 2}]).raise_for_status()
    async with ShardedClient(2, base_url=server.url + "/",
                             timeout=httpx.Timeout(0.5, connect=5)) as http:
        chat = ChatClient(http, "gpt-test")
        url = "data:image/png;base64,AAAA"
        with pytest.raises(GPTUnavailable) as limited:
            await chat.classify(url)
        assert (limited.value.status, limited.value.retry_after) == (429, 7.0)
        with pytest.raises(GPTUnavailable, match="answered 500"):
            await chat.classify(url)
        with pytest.raises(GPTRejected, match="answered 400"):
            await chat.classify(url)
        with pytest.raises(GPTUnavailable, match="timed out"):
            await chat.classify(url)
    async with ShardedClient(2, base_url="http://127.0.0.1:1/", timeout=5) as http:
        with pytest.raises(GPTUnavailable, match="unreachable"):
            await ChatClient(http, "gpt-test").classify("data:image/png;base64,AAAA")
