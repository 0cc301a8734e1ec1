"""The bench's tasks for taskiq: taskiq-aio-pika on the bench's RabbitMQ, results in Redis.

taskiq has its own message format, so it gets a queue of its own,
``bench.taskiq`` (classic and durable, as Celery's ``bench`` queue; taskiq's
default would be a quorum queue), published to by taskiq's own client. Each
task returns the time it finished: taskiq stores no completion time of its
own, and this one is stored with the result, in taskiq-redis' JSON.
"""

from __future__ import annotations

import asyncio
import os
import time

from taskiq.serializers import JSONSerializer
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType
from taskiq_redis import RedisAsyncResultBackend

from .. import SLEEP_SECONDS
from . import PREFETCH_MULTIPLIER, REDIS

QUEUE = "bench.taskiq"
#: Result keys are ``<prefix>:<task id>``.
RESULT_PREFIX = "bench-taskiq"
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))

broker = AioPikaBroker(
    os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    qos=CONCURRENCY * PREFETCH_MULTIPLIER,
    exchange=Exchange(name=QUEUE),
    task_queues=[Queue(name=QUEUE, type=QueueType.CLASSIC)],
    dead_letter_queue=Queue(name=f"{QUEUE}.dead", type=QueueType.CLASSIC),
).with_result_backend(RedisAsyncResultBackend(REDIS, serializer=JSONSerializer(),
                                              prefix_str=RESULT_PREFIX))


@broker.task(task_name="bench.noop")
async def noop() -> float:
    """Nothing but the finish time."""
    return time.time()


@broker.task(task_name="bench.sleep")
async def sleep() -> float:
    """Wait 100 ms without blocking the loop."""
    await asyncio.sleep(SLEEP_SECONDS)
    return time.time()
