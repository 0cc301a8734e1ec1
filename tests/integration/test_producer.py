"""asyncworker's producer and result reader against a real Celery worker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from asyncworker import App
from tests.conftest import BROKER_URL, PG_DSN

pytestmark = pytest.mark.integration


async def test_celery_worker_runs_our_messages(celery_worker: str) -> None:
    producer = App("producer", broker_url=BROKER_URL, result_backend="db+" + PG_DSN)
    try:
        parent = str(uuid.uuid4())
        result = await producer.send_task(
            "celery_side.describe", [1, Decimal("2.5"), datetime(2026, 1, 1, tzinfo=UTC)],
            {"k": b"bytes"}, queue=celery_worker, countdown=0.1, expires=120,
            time_limit=30, soft_time_limit=20, parent_id=parent, root_id=parent,
            headers={"x-custom": "kept"})
        info = await result.get(timeout=60, interval=0.1)
        assert info["args"] == [1, Decimal("2.5"), datetime(2026, 1, 1, tzinfo=UTC)]
        assert info["kwargs"] == {"k": b"bytes"}
        assert info["timelimit"] == [30, 20]
        assert info["root_id"] == parent and info["parent_id"] == parent
        assert info["eta"] is not None and info["expires"] is not None
        assert info["delivery_info"]["routing_key"] == celery_worker
        assert await result.state() == "SUCCESS"

        failing = await producer.send_task("celery_side.fail", ["nope"], queue=celery_worker)
        with pytest.raises(LookupError, match="nope"):
            await failing.get(timeout=60, interval=0.1)
        pending = producer.AsyncResult(str(uuid.uuid4()))
        assert await pending.state() == "PENDING"
    finally:
        await producer.close()


async def test_expiring_message_gets_broker_ttl(services: dict[str, str],
                                                queue_name: str) -> None:
    """expires also becomes the message TTL, as Celery (5.2+) sends it."""
    producer = App("producer", broker_url=BROKER_URL)
    try:
        await producer.send_task("x.y", queue=queue_name,
                                 expires=datetime.now(UTC) + timedelta(seconds=2))
        broker = await producer.get_broker()
        channel = await broker._channel(publish=True)

        queue = await channel.declare_queue(queue_name, passive=True)

        async def count() -> int:
            # A fresh declare: the robust channel caches the first answer.
            return int((await queue.declare()).message_count)

        assert await count() == 1
        deadline = datetime.now(UTC) + timedelta(seconds=15)
        # The broker's state can only be polled; there is no event to wait on.
        while await count() and datetime.now(UTC) < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert await count() == 0  # dropped by RabbitMQ when its TTL ran out
    finally:
        await producer.close()
