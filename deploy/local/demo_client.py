"""Send sample tasks with a real Celery client and print what AsyncResult.get() returns.

Then the vision pipeline: photos uploaded to S3 and classified by the model,
each as a chain ``image_upload_task`` -> ``gpt5_analysis_task``.

Celery is only the client here, as in a real deployment where producers and
result readers stay on Celery while asyncworker runs the tasks.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

from celery import Celery, chain
from kombu import Exchange, Queue

BROKER = os.environ.get("ASYNCWORKER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get(
    "DEMO_RESULT_BACKEND",
    "db+postgresql+psycopg2://asyncworker:asyncworker@127.0.0.1:5432/asyncworker",
)
UPLOAD = "workers.storage.tasks.image_upload_task"
ANALYSIS = "workers.ai.tasks.gpt5_analysis_task"


def vision_pipeline(client: Celery, work: Path) -> None:
    """The vision_analysis flow as Growbin's producers send it: upload, then analysis."""
    growbin = Exchange("growbin", type="direct")
    client.conf.update(
        task_queues=[Queue("user_input", growbin, routing_key="user.input"),
                     Queue("vision_analysis", growbin, routing_key="vision.analyze")],
        task_routes={UPLOAD: {"queue": "user_input"}, ANALYSIS: {"queue": "vision_analysis"}},
    )
    started = time.monotonic()
    chains = []
    for i in range(20):
        photo = work / f"photo-{i:02d}.jpg"
        photo.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(30_000))  # stand-in JPEG bytes
        chains.append(chain(client.signature(UPLOAD, [str(photo)]),
                            client.signature(ANALYSIS)).apply_async())
    print(f"\n{'photo':14} {'category':10} {'recyclable':10} {'confidence':10} analysis stored at")
    for i, result in enumerate(chains):
        analysis = result.get(timeout=120, interval=0.05)
        if i < 5:
            print(f"photo-{i:02d}.jpg   {analysis['category']:10} {analysis['recyclable']!s:10} "
                  f"{analysis['confidence']:<10} {analysis['analysis_path']}")
    print(f"20 upload -> analysis chains (model latency 0.5-1.5 s each) done in "
          f"{time.monotonic() - started:.2f}s (5 shown)")

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
    if len(sys.argv) > 1:
        vision_pipeline(client, Path(sys.argv[1]))
        periodic(client, Path(sys.argv[1]) / "worker.log")
    else:
        with tempfile.TemporaryDirectory() as work:
            vision_pipeline(client, Path(work))


def periodic(client: Celery, log: Path) -> None:
    """What the worker's embedded scheduler (--beat) published meanwhile, read back."""
    fired = re.findall(r"beat fired .*?task_id=([0-9a-f-]{36})", log.read_text())
    values = [client.AsyncResult(task_id).get(timeout=60, interval=0.05) for task_id in fired]
    print(f"\nperiodic entry demo-every-2s (asyncworker.sample.add(40, 2) every 2 s): "
          f"{len(fired)} ticks so far, results {values}")


if __name__ == "__main__":
    main()
