"""Send sample tasks with a real Celery client and print what AsyncResult.get() returns.

Celery is only the client here, as in a real deployment where producers and
result readers stay on Celery while asyncworker runs the tasks.
"""

from __future__ import annotations

import os
import time

from celery import Celery

BROKER = os.environ.get("ASYNCWORKER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get(
    "DEMO_RESULT_BACKEND",
    "db+postgresql+psycopg2://asyncworker:asyncworker@127.0.0.1:5432/asyncworker",
)


def main() -> None:
    client = Celery("demo", broker=BROKER, backend=BACKEND)
    client.conf.update(result_extended=True, broker_connection_retry_on_startup=True)
    started = time.monotonic()
    jobs = [("asyncworker.sample.add", (i, i * 10)) for i in range(200)]
    jobs += [
        ("asyncworker.sample.checksum", ("asyncworker",)),
        ("asyncworker.sample.divide", (1, 0)),
        ("not.a.registered.task", ()),
    ]
    results = [(name, args, client.send_task(name, args)) for name, args in jobs]
    shown = results[:3] + results[-3:]
    print(f"{'task':32} {'args':22} {'outcome'}")
    for name, args, result in results:
        try:
            outcome = repr(result.get(timeout=60, interval=0.05))
        except Exception as exc:
            outcome = f"raised {type(exc).__module__}.{type(exc).__name__}: {exc}"
        if (name, args, result) in shown:
            print(f"{name:32} {args!s:22} {outcome}  [worker={result.worker}]")
    print(f"{len(results)} tasks sent and read back through Celery in "
          f"{time.monotonic() - started:.2f}s (200 sample.add lines elided to 3)")


if __name__ == "__main__":
    main()
