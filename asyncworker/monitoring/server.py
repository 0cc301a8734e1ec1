"""The monitoring HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``.

It answers from a thread of its own, not from the event loop, so that a loop
blocked by a task (a synchronous call in an ``async def``) yields a failing
``/healthz`` instead of a probe that hangs until it times out. The loop proves
it is alive by stamping a heartbeat (:class:`LoopHeartbeat`); ``/healthz``
fails once the stamp is older than ``worker_health_max_lag`` seconds.
``/readyz`` asks the owner (``ready()``: connected and consuming). Only GET is
served, HTTP/1.0 style (one request per connection), which every probe and
Prometheus accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..logging import get_logger

log = get_logger("monitoring")

#: ``ready()`` returns whether the process is ready, and why not.
Readiness = Callable[[], tuple[bool, str]]


class LoopHeartbeat:
    """A loop task that stamps the time every ``interval`` seconds."""

    def __init__(self, max_lag: float) -> None:
        self.max_lag = max_lag
        self.interval = max(0.05, min(1.0, max_lag / 4))
        self.last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start stamping (on the running loop)."""
        self.last = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="loop-heartbeat")

    async def stop(self) -> None:
        """Stop stamping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            self.last = time.monotonic()
            await asyncio.sleep(self.interval)

    def lag(self) -> float:
        """Seconds since the loop last ran the heartbeat (callable from any thread)."""
        return time.monotonic() - self.last

    def healthy(self) -> tuple[bool, str]:
        """Whether the loop ran recently enough."""
        if self._task is None or self._task.done():
            return False, "event loop heartbeat not running"
        lag = self.lag()
        if lag > self.max_lag:
            return False, f"event loop blocked for {lag:.1f}s"
        return True, "ok"


class MonitorServer:
    """Serves a registry and two probes on ``host:port`` from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int,
                 heartbeat: LoopHeartbeat, ready: Readiness) -> None:
        self.registry = registry
        self.heartbeat = heartbeat
        self.ready = ready
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="asyncworker-monitoring", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (port 0 asks for a free one)."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start answering."""
        self._thread.start()
        host, port = self.address
        log.info("monitoring server listening", host=host, port=port,
                 paths=["/metrics", "/healthz", "/readyz"])

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def respond(self, path: str, accept: str | None) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of ``path``."""
        path = path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept or "")
            return 200, content_type, encoder(self.registry)
        if path in ("/healthz", "/readyz"):
            ok, why = self.heartbeat.healthy()
            if ok and path == "/readyz":
                ok, why = self.ready()
            return (200 if ok else 503), "text/plain; charset=utf-8", why.encode() + b"\n"
        return 404, "text/plain; charset=utf-8", b"not found\n"


def _handler(server: MonitorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, content_type, body = server.respond(self.path,
                                                            self.headers.get("Accept"))
            except Exception as exc:  # a failing collector must not kill the thread
                log.error("monitoring request failed", path=self.path, error=repr(exc))
                status, content_type, body = 500, "text/plain", b"error\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a probe every few seconds is no news

    return Handler
