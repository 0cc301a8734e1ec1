"""The limits under everything: raw broker, database and S3 rates on this machine.

Each is one asyncio process doing the least possible: aio-pika consuming and
acking Celery-sized messages, asyncpg inserting rows one statement at a time and
in ``executemany`` batches of 100, and aioboto3 doing S3 get + put pairs.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

import aio_pika
import asyncpg

from .servers import s3_credentials

BODY = b'[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


@functools.cache
def _celery() -> Any:
    from celery import Celery

    return Celery("floor")


def celery_message(task_id: str) -> aio_pika.Message:
    """A noop task message as the Celery client sends it: its ~20 headers and properties."""
    headers = _celery().amqp.as_task_v2(task_id, "bench.noop", [], {}).headers
    return aio_pika.Message(BODY, content_type="application/json", content_encoding="utf-8",
                            headers=headers, correlation_id=task_id, reply_to="", priority=0,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


async def amqp_consume_ack(url: str, count: int, same_messages: bool = False) -> float:
    """Messages per second consumed and acked one by one (publishing not timed).

    ``same_messages``: the worker's own messages (:func:`celery_message`), whose
    properties take longer to decode than the two headers of the default.
    """
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"floor.{uuid.uuid4().hex[:8]}", auto_delete=True)
        for _ in range(count):
            task_id = str(uuid.uuid4())
            message = celery_message(task_id) if same_messages else aio_pika.Message(
                BODY, content_type="application/json",
                headers={"task": "bench.noop", "id": task_id})
            await channel.default_exchange.publish(message, routing_key=queue.name)
        await channel.set_qos(prefetch_count=1000)
        done = asyncio.Event()
        seen = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen == count:
                done.set()

        started = time.perf_counter()
        await queue.consume(on_message)
        await done.wait()
        return count / (time.perf_counter() - started)
    finally:
        await connection.close()


async def pg_inserts(dsn: str, count: int, batch: int) -> float:
    """Rows per second inserted one per statement (``batch`` 1) or in executemany batches."""
    conn = await asyncpg.connect(dsn)
    table = f"floor_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, task_id text, "
                           "status text, result bytea, date_done timestamp)")
        rows = [(str(uuid.uuid4()), "SUCCESS", b"null") for _ in range(count)]
        sql = f"INSERT INTO {table} (task_id, status, result, date_done) VALUES ($1, $2, $3, now())"
        started = time.perf_counter()
        if batch <= 1:
            for row in rows:
                await conn.execute(sql, *row)
        else:
            for i in range(0, count, batch):
                await conn.executemany(sql, rows[i:i + batch])
        return count / (time.perf_counter() - started)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def s3_get_put(endpoint: str, bucket: str, key: str, pairs: int,
                     concurrency: int = 50) -> float:
    """S3 requests per second (a get and a put per pair) against the test S3 server."""
    import aioboto3

    session = aioboto3.Session()
    access_key, secret = s3_credentials()
    async with session.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=access_key,
                              aws_secret_access_key=secret) as client:
        gate = asyncio.Semaphore(concurrency)

        async def pair(i: int) -> None:
            async with gate:
                response = await client.get_object(Bucket=bucket, Key=key)
                async with response["Body"] as body:
                    await body.read()
                await client.put_object(Bucket=bucket, Key=f"floor/{i}.json", Body=b"{}")

        started = time.perf_counter()
        await asyncio.gather(*(pair(i) for i in range(pairs)))
        return 2 * pairs / (time.perf_counter() - started)


async def measure(amqp_url: str, dsn: str, scale: float,
                  s3: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """All floors, rounded, sized by ``scale`` (1.0 for a full run)."""
    n = max(200, int(20000 * scale))
    out: dict[str, Any] = {
        "amqp_consume_ack_per_s": round(await amqp_consume_ack(amqp_url, n)),
        "amqp_consume_ack_same_messages_per_s": round(
            await amqp_consume_ack(amqp_url, n, same_messages=True)),
        "pg_single_inserts_per_s": round(await pg_inserts(dsn, max(200, n // 4), 1)),
        "pg_batched_inserts_per_s": round(await pg_inserts(dsn, n * 2, 100)),
    }
    if s3 is not None:
        out["s3_requests_per_s"] = round(await s3_get_put(*s3, pairs=max(50, n // 20)))
    return out
