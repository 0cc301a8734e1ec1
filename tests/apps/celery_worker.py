"""A real Celery worker's app, used to check asyncworker's producer against Celery."""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

app = Celery("celery_side", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(result_extended=True, worker_hijack_root_logger=False)


@app.task(name="celery_side.describe", bind=True)
def describe(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r = self.request
    return {"args": list(args), "kwargs": kwargs, "retries": r.retries,
            "timelimit": list(r.timelimit or (None, None)), "root_id": r.root_id,
            "parent_id": r.parent_id, "eta": r.eta, "expires": r.expires,
            "delivery_info": {"routing_key": r.delivery_info.get("routing_key")}}


@app.task(name="celery_side.fail")
def fail(message: str) -> None:
    raise LookupError(message)

# `celery beat` with this app runs the entries given as JSON (schedules in seconds).
if os.environ.get("CELERY_BEAT_SCHEDULE"):
    app.conf.beat_schedule = json.loads(os.environ["CELERY_BEAT_SCHEDULE"])


@app.task(name="celery_side.sleep")
def sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@app.task(name="celery_side.kill", acks_late=True)
def kill() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
