"""An OpenAI-compatible Chat Completions server for tests and the benchmark.

It answers ``POST /v1/chat/completions`` with a waste classification derived
from the image's bytes (so a test can tell the right image arrived), after a
latency drawn from a configurable distribution, failing a configurable share
of requests with 429 (with ``Retry-After``) or 500. Tests can also queue exact
replies with ``POST /_script`` and read counters from ``GET /_stats``.

    python -m bench.fake_openai --port 0 --latency lognormal:1.0:0.25 --rate-429 0.01

prints ``listening on http://127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web

from asyncworker.contrib.vision.classification import CATEGORIES, RECYCLABLE


def expected_answer(image: bytes) -> dict[str, Any]:
    """The classification this server gives for ``image``."""
    digest = hashlib.sha256(image).digest()
    category = CATEGORIES[digest[0] % len(CATEGORIES)]
    return {
        "category": category,
        "recyclable": category in RECYCLABLE,
        "confidence": round(0.5 + digest[1] / 510, 3),
        "notes": f"Put it with the {category} waste.",
    }


@dataclass(slots=True)
class Latency:
    """A latency distribution: ``fixed:S``, ``uniform:LO:HI``, ``lognormal:MEDIAN:SIGMA``."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Latency:
        """Parse the command-line form."""
        kind, *values = text.split(":")
        numbers = [float(v) for v in values]
        if kind == "fixed" and len(numbers) == 1:
            return cls(kind, numbers[0])
        if kind in ("uniform", "lognormal") and len(numbers) == 2:
            return cls(kind, numbers[0], numbers[1])
        raise ValueError(f"bad latency {text!r}: fixed:S, uniform:LO:HI or lognormal:MEDIAN:SIGMA")

    def sample(self) -> float:
        """One latency in seconds."""
        if self.kind == "uniform":
            return random.uniform(self.a, self.b)
        if self.kind == "lognormal":
            return random.lognormvariate(math.log(self.a), self.b) if self.a > 0 else 0.0
        return self.a

    def mean(self) -> float:
        """The distribution's mean, for Little's-law estimates."""
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "lognormal":
            return self.a * math.exp(self.b**2 / 2)
        return self.a


@dataclass
class Behaviour:
    """What the server does with requests that no scripted reply covers."""

    latency: Latency = field(default_factory=Latency)
    rate_429: float = 0.0
    error_rate: float = 0.0
    retry_after: float = 1.0


class FakeOpenAI:
    """The server's state: behaviour, scripted replies and counters."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.script: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_request: dict[str, Any] = {}
        # Bumped by a reset, so a request still running from before it is not counted.
        self.generation = 0
        self.http: ClientSession | None = None

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/_script", self.add_script)
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_reset", self.reset)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self.http is not None:
            await self.http.close()

    async def add_script(self, request: web.Request) -> web.Response:
        """Queue replies for the next requests, in order (tests use this)."""
        self.script.extend(await request.json())
        return web.json_response({"queued": len(self.script)})

    async def stats(self, _request: web.Request) -> web.Response:
        """Counters since start or the last reset."""
        return web.json_response({
            "requests": sum(self.statuses.values()),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "last_request": self.last_request,
        })

    async def reset(self, _request: web.Request) -> web.Response:
        """Clear counters and scripted replies."""
        self.script.clear()
        self.statuses.clear()
        self.max_in_flight = 0
        self.last_request = {}
        self.generation += 1
        return web.json_response({"reset": True})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """Chat Completions: validate the request, then reply as scripted or by chance."""
        generation = self.generation
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._complete(request)
        finally:
            self.in_flight -= 1
        if generation == self.generation:
            self.statuses[response.status] += 1
        return response

    async def _complete(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            image_url = _image_url(body)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return _error(400, f"invalid request: {exc}")
        self.last_request = {
            "model": body.get("model"),
            "response_format": body.get("response_format"),
            "image_url_scheme": image_url.split(":", 1)[0],
            "authorization": "Authorization" in request.headers,
        }
        action = self.script.pop(0) if self.script else self._chance()
        await asyncio.sleep(float(action.get("delay", self.behaviour.latency.sample())))
        status = int(action.get("status", 200))
        if status != 200:
            headers = {}
            if "retry_after" in action:
                headers["Retry-After"] = str(action["retry_after"])
            return _error(status, f"simulated {status}", headers)
        if "content" in action:
            content = str(action["content"])
        else:
            image = await self._image_bytes(image_url)
            content = json.dumps(expected_answer(image))
        return web.json_response(_completion(body.get("model", ""), content))

    def _chance(self) -> dict[str, Any]:
        roll = random.random()
        if roll < self.behaviour.rate_429:
            return {"status": 429, "retry_after": self.behaviour.retry_after, "delay": 0}
        if roll < self.behaviour.rate_429 + self.behaviour.error_rate:
            return {"status": 500, "delay": 0}
        return {}

    async def _image_bytes(self, url: str) -> bytes:
        if url.startswith("data:"):
            return base64.b64decode(url.split(",", 1)[1])
        if self.http is None:
            self.http = ClientSession()
        async with self.http.get(url) as response:
            response.raise_for_status()
            return await response.read()


def _image_url(body: dict[str, Any]) -> str:
    if not body.get("model"):
        raise ValueError("model is required")
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    return str(part["image_url"]["url"])
    raise ValueError("no image_url content part")


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{random.getrandbits(64):016x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130},
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "fake_openai"}},
                             status=status, headers=headers)


async def serve(host: str, port: int, behaviour: Behaviour) -> None:
    """Serve until cancelled; print the URL once listening."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runner = web.AppRunner(FakeOpenAI(behaviour).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=Latency.parse, default=Latency(),
                        help="fixed:S | uniform:LO:HI | lognormal:MEDIAN:SIGMA (seconds)")
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    args = parser.parse_args(argv)
    behaviour = Behaviour(args.latency, args.rate_429, args.error_rate, args.retry_after)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, behaviour))


if __name__ == "__main__":
    main()
