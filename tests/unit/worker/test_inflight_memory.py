"""What a task in flight holds: passing checks keep no frame, headers are shared and interned.

With 10,000 tasks in flight every per-task object counts (``bench/inflight.py``
measures it); these tests pin the shapes that keep it small.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pamqp.frame
from pamqp import header as amqp_header

from asyncworker import protocol, serialization
from asyncworker.broker import frames
from asyncworker.worker.admission.dedupe import Dedupe
from asyncworker.worker.admission.eta import Eta
from asyncworker.worker.admission.expires import Expires
from asyncworker.worker.admission.ratelimit import RateLimit
from asyncworker.worker.admission.revoked import Revoked
from asyncworker.worker.admission.stale import Stale
from asyncworker.worker.execution.timelimit import TimeLimit
from asyncworker.worker.job import Job
from asyncworker.worker.limits import Limits
from asyncworker.worker.state import WorkerState

from ..test_bad_input_guards import _content_header_frame, _props
from .helpers import Finished, Kit, make_job


async def test_checks_that_pass_return_the_rest_of_the_chain(kit: Kit) -> None:
    """Each check hands back ``call_next(job)`` itself: no coroutine of its own stays
    suspended under the task while it runs."""
    state, finish = WorkerState(), Finished()
    job = await make_job(kit.app, "t.add", (1, 2))
    checks: list[Callable[[Job, Any], Awaitable[None]]] = [
        Revoked(state, finish), Expires(finish), Stale(finish), Dedupe(state, None, finish),
        Eta(state), RateLimit(Limits(kit.app.settings)), TimeLimit()]
    for check in checks:
        ran: list[Job] = []

        async def rest(job: Job, ran: list[Job] = ran) -> None:
            ran.append(job)

        awaitable = rest(job)
        assert check(job, lambda _job, a=awaitable: a) is awaitable, check  # type: ignore[misc]
        await awaitable
        assert ran == [job]


def test_decoded_message_shares_the_received_headers() -> None:
    message = protocol.encode_v2("t.add", (1, 2))
    headers = dict(message.headers)
    decoded = protocol.decode(message.body, headers, message.content_type,
                              message.content_encoding, serialization.accepted(["json"]))
    assert decoded.headers is headers


def test_header_keys_and_short_values_are_interned_as_decoded() -> None:
    assert frames.install()
    task_id = "0" * 36
    table = frames.encode_table({"argsrepr": "()", "id": task_id, "retries": 0})
    decoded = []
    for _ in range(2):
        frame = _content_header_frame(_props(1 << 13, table))
        _, _, value = pamqp.frame.unmarshal(frame)
        assert isinstance(value, amqp_header.ContentHeader)
        decoded.append(value.properties.headers)
    first, second = decoded
    assert first == second == {"argsrepr": "()", "id": task_id, "retries": 0}
    for key_1, key_2 in zip(first, second, strict=True):
        assert key_1 is key_2 is sys.intern(key_1)
    assert first["argsrepr"] is second["argsrepr"]
    assert first["id"] is not second["id"]  # ids are unique: not worth interning
