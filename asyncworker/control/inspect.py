"""Read-only commands: what ``celery inspect ...`` and Flower ask a worker.

Each answers from the running worker's state, in the shape a Celery worker
gives (see ``describe.py`` for the records). None of them changes anything,
so they are answered whatever ``worker_control_allow_destructive`` says.
"""

from __future__ import annotations

import collections
import os
import platform
import time
from typing import TYPE_CHECKING, Any

from ..logging import get_logger, redact_url
from ..plugins import ControlCommand
from . import describe

if TYPE_CHECKING:
    from ..worker.job import Job
    from ..worker.worker import Worker

log = get_logger("control")

#: What ``registered`` shows of each task unless asked for other attributes.
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")
#: ``memsample`` readings kept for ``memdump``.
_MEMORY_SAMPLES: collections.deque[float] = collections.deque(maxlen=1000)


async def ping(worker: Worker, **_: Any) -> dict[str, str]:
    """``celery inspect ping``."""
    return {"ok": "pong"}


async def stats(worker: Worker, **_: Any) -> dict[str, Any]:
    """``celery inspect stats``: what Flower's worker page and celery-exporter read."""
    s, state = worker.settings, worker.state
    pid = os.getpid()
    return {
        "total": dict(state.total),
        "pid": pid,
        "clock": str(state.clock.value),
        "uptime": round(time.time() - state.started_at),
        "pool": {
            "implementation": "asyncworker:asyncio",
            "max-concurrency": worker.concurrency,
            # One process runs every task.
            "processes": [pid],
            "max-tasks-per-child": None,
            "put-guarded-by-semaphore": True,
            "timeouts": [s.task_soft_time_limit or 0, s.task_time_limit or 0],
        },
        "broker": describe.broker_info(s.broker_url, s, worker.broker.node_url()),
        "prefetch_count": worker.prefetch_count(),
        "rusage": describe.rusage(),
    }


def _ordered(jobs: Any) -> list[Job]:
    return sorted(jobs, key=lambda job: job.received)


async def active(worker: Worker, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
    """``celery inspect active``: tasks running now."""
    return [describe.request_info(job, safe=bool(safe))
            for job in _ordered(worker.state.active.values())]


async def reserved(worker: Worker, **_: Any) -> list[dict[str, Any]]:
    """``celery inspect reserved``: tasks received and waiting for a slot or a rate limit."""
    return [describe.request_info(job) for job in _ordered(worker.state.reserved)]


async def scheduled(worker: Worker, **_: Any) -> list[dict[str, Any]]:
    """``celery inspect scheduled``: tasks held until their ETA."""
    return [describe.scheduled_info(job) for job in _ordered(worker.state.scheduled)]


async def revoked(worker: Worker, **_: Any) -> list[str]:
    """``celery inspect revoked``: ids revoked and still remembered."""
    return worker.state.revoked.ids()


async def registered(worker: Worker, taskinfoitems: list[str] | None = None,
                     builtins: bool = False, **_: Any) -> list[str]:
    """``celery inspect registered [attr ...]``: task names, with the attributes asked for."""
    items = [item for item in (taskinfoitems or DEFAULT_TASK_INFO_ITEMS)
             if isinstance(item, str) and not item.startswith("_")]
    out = []
    for name in sorted(worker.app.tasks):
        if name.startswith("celery.") and not builtins:
            continue
        task = worker.app.tasks[name]
        fields = [f"{item}={value}" for item in items
                  if (value := getattr(task, item, None)) is not None]
        out.append(f"{name} [{' '.join(fields)}]" if fields else name)
    return out


async def active_queues(worker: Worker, **_: Any) -> list[dict[str, Any]]:
    """``celery inspect active_queues``: the queues consumed now."""
    return [describe.queue_info(spec) for spec in worker.consumer.queues.values()]


async def conf(worker: Worker, with_defaults: bool = False, **_: Any) -> dict[str, Any]:
    """``celery inspect conf``: settings changed from the defaults (all with
    ``with_defaults``); passwords and secrets hidden."""
    return describe.conf(worker.settings, with_defaults=bool(with_defaults))


def _where(worker: Worker, job: Job) -> str:
    state = worker.state
    if job in state.reserved:
        return "reserved"
    if job in state.scheduled:
        return "scheduled"
    return "active"


async def query_task(worker: Worker, ids: str | list[str] | None = None,
                     **_: Any) -> dict[str, Any]:
    """``celery inspect query_task id ...``: ``{id: [where, request]}`` for tasks held here."""
    wanted = {ids} if isinstance(ids, str) else set(ids or ())
    state = worker.state
    found: dict[str, Any] = {}
    for job in (*state.active.values(), *state.reserved, *state.scheduled):
        if job.id in wanted:
            found[str(job.id)] = [_where(worker, job), describe.request_info(job)]
    return found


async def report(worker: Worker, **_: Any) -> dict[str, str]:
    """``celery inspect report``: software, platform and settings, for bug reports."""
    from .. import __version__  # the package is fully imported by now

    s = worker.settings
    settings = describe.conf(s)
    lines = [
        "",
        f"software -> asyncworker:{__version__} py:{platform.python_version()}",
        f"platform -> system:{platform.system()} arch:{' '.join(platform.architecture())} "
        f"imp:{platform.python_implementation()}",
        f"settings -> transport:{describe.broker_info(s.broker_url, s)['transport']} "
        f"results:{redact_url(s.result_backend) if s.result_backend else 'disabled'}",
        "",
        *(f"{name}: {value!r}" for name, value in sorted(settings.items())),
        "",
    ]
    return {"ok": "\n".join(lines)}


async def clock(worker: Worker, **_: Any) -> dict[str, int]:
    """``celery inspect clock``: the worker's logical clock."""
    return {"clock": worker.state.clock.value}


async def hello(worker: Worker, from_node: str | None = None, revoked: Any = None,
                **_: Any) -> dict[str, Any] | None:
    """Mingle: another node starting up sends its revoked ids and asks for ours."""
    if from_node == worker.settings.worker_nodename:
        return None
    log.info("sync with node", from_node=from_node)
    if revoked:
        now = time.time()
        for task_id in revoked:  # a list of ids, or a mapping keyed by them
            if isinstance(task_id, str):
                worker.state.revoked.add(task_id, now)
    return {"revoked": worker.state.revoked.ids(), "clock": worker.state.clock.forward()}


async def heartbeat(worker: Worker, **_: Any) -> None:
    """Asked for an immediate heartbeat event; the events plugin answers it when
    enabled (replacing this command), otherwise there is nothing to send."""
    return None


async def memsample(worker: Worker, **_: Any) -> str:
    """``celery inspect memsample``: resident memory now (kept for ``memdump``)."""
    megabytes = describe.rss_megabytes()
    _MEMORY_SAMPLES.append(megabytes)
    return f"{megabytes:.3f}MB"


async def memdump(worker: Worker, samples: int = 10, **_: Any) -> str:
    """``celery inspect memdump``: the last ``samples`` memsample readings, and now."""
    recent = list(_MEMORY_SAMPLES)[-max(0, int(samples)):] if samples else []
    lines = ["- rss (sample):", *(f"-    > {mb:.3f}MB," for mb in recent),
             f"- rss (end): {describe.rss_megabytes():.3f}MB."]
    return "\n".join(lines) + "\n"


async def objgraph(worker: Worker, **_: Any) -> None:
    """Object-graph dumps need a process to inspect offline; not offered."""
    raise NotImplementedError("objgraph is not supported by asyncworker; use memsample "
                              "or a profiler attached to the process")


#: This module's commands, by name (Celery's names).
COMMANDS: dict[str, ControlCommand] = {
    "ping": ping, "stats": stats, "active": active, "reserved": reserved,
    "scheduled": scheduled, "revoked": revoked, "registered": registered,
    "active_queues": active_queues, "conf": conf, "query_task": query_task,
    "report": report, "clock": clock, "hello": hello, "heartbeat": heartbeat,
    "memsample": memsample, "memdump": memdump, "objgraph": objgraph,
}
