"""``asyncworker ping``: an exec probe that exits 0 when this node's worker is healthy.

The cheap replacement for ``celery inspect ping``. With the monitoring server
on (``--http-port``, or ``worker_http_port`` in the settings) it asks the
local ``/healthz``: no broker round trip, and it also fails when the worker's
event loop is blocked, which a mailbox reply cannot tell apart from a slow
broker. Without it, it sends one remote-control ``ping`` to the node's
mailbox (``-n``, default ``worker_nodename``) and waits ``--timeout`` seconds
for the ``pong``. ``--http-port`` skips loading the app altogether.

Exit status: 0 healthy, 1 not (no answer, or a failing answer), 2 for a
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from ..exceptions import ImproperlyConfigured
from ..logging import redact_text, redact_url
from ..plugins import CliCommand
from .settings import MonitoringSettings

REPLY_EXCHANGE = "reply.celery.pidbox"


class PingCommand(CliCommand):
    """The ``ping`` subcommand."""

    name = "ping"
    help = "exit 0 if this node's worker is healthy (an exec probe)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--http-port``/``--http-host``, ``-n`` and ``--timeout``."""
        parser.add_argument("--http-port", type=int,
                            help="the worker's monitoring port (default: worker_http_port)")
        parser.add_argument("--http-host", help="its address (default: worker_http_host)")
        parser.add_argument("-n", "--hostname",
                            help="node to ping through the mailbox (default: worker_nodename)")
        parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")

    def run(self, args: argparse.Namespace) -> int:
        """Probe over HTTP when a port is known, else through the mailbox."""
        port, host = args.http_port, args.http_host or "127.0.0.1"
        if port is None or args.hostname:
            from ..cli.apps import configured_app
            from ..cli.worker import expand_hostname

            try:
                app = configured_app(args)
            except (ImproperlyConfigured, ImportError) as exc:
                print(f"asyncworker: {exc}", file=sys.stderr)
                return 2
            settings = app.settings
            monitoring = settings.section(MonitoringSettings)
            if args.hostname is None and port is None and monitoring.worker_http_port:
                port = monitoring.worker_http_port
                host = args.http_host or monitoring.worker_http_host
            if port is None or args.hostname:
                nodename = expand_hostname(args.hostname or settings.worker_nodename)
                if _scheme(settings.broker_url) in ("redis", "rediss"):
                    return _report(asyncio.run(
                        broker_mailbox_ping(settings, nodename, args.timeout)))
                return _report(asyncio.run(
                    mailbox_ping(settings.broker_url, nodename, args.timeout)))
        return _report(http_ping(host, port, args.timeout))


def _scheme(broker_url: Any) -> str:
    from ..broker import urls

    return urls.split(broker_url)[0].partition("://")[0].split("+")[-1]


def _report(outcome: tuple[bool, str]) -> int:
    ok, text = outcome
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def http_ping(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """GET ``/healthz``: healthy when it answers 200 within ``timeout``."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # bound to every address: loopback is one of them
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {exc.read().decode(errors='replace').strip()}"
    except (OSError, TimeoutError) as exc:
        return False, f"{url}: {exc}"


def ping_request(nodename: str, ticket: str, reply_key: str,
                 timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body and headers of a mailbox ``ping`` to ``nodename``.

    ``expires`` is a whole second, rounded up: the AMQP client encodes a float
    header as a 32-bit float, which rounds a Unix time by up to a minute, often
    into the past, and the worker then drops the ping as expired.
    """
    body = {"method": "ping", "arguments": {}, "destination": [nodename],
            "pattern": None, "matcher": None, "ticket": ticket,
            "reply_to": {"exchange": REPLY_EXCHANGE, "routing_key": reply_key}}
    return body, {"clock": 1, "expires": math.ceil(time.time() + timeout)}


async def mailbox_ping(broker_url: str | list[str], nodename: str,
                       timeout: float) -> tuple[bool, str]:
    """One remote-control ``ping`` to ``nodename``, as ``celery inspect ping -d`` sends it
    (through the first node of a failover list that answers)."""
    import aio_pika

    from ..broker import urls
    from ..broker.amqp import amqp_url

    deadline = time.monotonic() + timeout
    ticket = str(uuid.uuid4())
    errors = []
    for url in urls.split(broker_url):
        try:
            connection = await aio_pika.connect(
                amqp_url(url), timeout=max(0.1, deadline - time.monotonic()))
            break
        except Exception as exc:
            errors.append(f"{redact_url(url)}: {redact_text(repr(exc))}")
    else:
        return False, "broker unreachable: " + "; ".join(errors)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_exchange(REPLY_EXCHANGE, "direct", durable=False)
        queue = await channel.declare_queue(f"{ticket}.{REPLY_EXCHANGE}", exclusive=True,
                                            auto_delete=True)
        await queue.bind(replies, routing_key=queue.name)
        mailbox = await channel.declare_exchange("celery.pidbox", "fanout", durable=False)
        body, headers = ping_request(nodename, ticket, queue.name, timeout)
        await mailbox.publish(aio_pika.Message(
            json.dumps(body).encode(), content_type="application/json",
            content_encoding="utf-8", headers=headers,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT), routing_key="")
        async with queue.iterator(no_ack=True) as messages:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    async for message in messages:
                        if (message.headers or {}).get("ticket") != ticket:
                            continue
                        reply = json.loads(message.body).get(nodename)
                        if isinstance(reply, dict) and reply.get("ok") == "pong":
                            return True, f"{nodename}: pong"
                        return False, f"{nodename}: {reply!r}"
            except TimeoutError:
                pass
    return False, f"{nodename}: no reply within {timeout}s"


async def broker_mailbox_ping(settings: Any, nodename: str,
                              timeout: float) -> tuple[bool, str]:
    """The same ``ping`` through the broker interface (Redis: the reply comes on a
    list bound to ``reply.celery.pidbox``, the request goes out over PUB/SUB)."""
    from .. import broker as brokers
    from ..broker.base import Delivery
    from ..broker.topology import ExchangeSpec, QueueSpec
    from ..protocol import OutgoingMessage

    deadline = time.monotonic() + timeout
    ticket = str(uuid.uuid4())
    broker = brokers.create(settings)
    try:
        async with asyncio.timeout(timeout):
            await broker.connect(retry=False)
    except Exception as exc:
        return False, f"broker unreachable: {broker.display_url}: {redact_text(repr(exc))}"
    replies: asyncio.Queue[Delivery] = asyncio.Queue()

    async def on_reply(delivery: Delivery) -> None:
        await replies.put(delivery)

    try:
        name = f"{ticket}.{REPLY_EXCHANGE}"
        await broker.consume(
            QueueSpec(name, ExchangeSpec(REPLY_EXCHANGE, "direct", durable=False), name,
                      durable=False, auto_delete=True, arguments={"x-expires": 10000}),
            on_reply, no_ack=True, purpose="ping")
        body, headers = ping_request(nodename, ticket, name, timeout)
        await broker.publish_transient(
            ExchangeSpec("celery.pidbox", "fanout", durable=False), "",
            OutgoingMessage(body=json.dumps(body).encode(), headers=headers,
                            content_type="application/json", content_encoding="utf-8",
                            correlation_id="", reply_to=None, priority=None,
                            expiration_ms=None))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(replies.get(), remaining)
            except TimeoutError:
                break
            if message.headers.get("ticket") != ticket:
                continue
            reply = json.loads(message.body).get(nodename)
            if isinstance(reply, dict) and reply.get("ok") == "pong":
                return True, f"{nodename}: pong"
            return False, f"{nodename}: {reply!r}"
    finally:
        await broker.close()
    return False, f"{nodename}: no reply within {timeout}s"
