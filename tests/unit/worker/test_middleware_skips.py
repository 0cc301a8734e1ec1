"""``skips(job)``: a middleware with nothing to do for a job is passed by, never entered.

The predicates must be exact: where one says "skip", entering the layer would
only have called on; where the layer acts (an ETA, an expiry, a redelivery, a
revoked id, a rate limit), it must not skip.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from asyncworker.worker.admission.dedupe import Dedupe
from asyncworker.worker.admission.eta import Eta
from asyncworker.worker.admission.expires import Expires
from asyncworker.worker.admission.ratelimit import RateLimit
from asyncworker.worker.admission.revoked import Revoked
from asyncworker.worker.admission.stale import Stale
from asyncworker.worker.execution.timelimit import TimeLimit
from asyncworker.worker.job import Job
from asyncworker.worker.limits import Limits
from asyncworker.worker.middleware import CallNext, compose
from asyncworker.worker.state import WorkerState

from .helpers import Finished, Kit, Next, make_job


class Layer:
    """Records being entered; skips when told to."""

    def __init__(self, name: str, log: list[str], skip: bool) -> None:
        self.name, self.log, self.skip = name, log, skip

    def skips(self, job: Job) -> bool:
        return self.skip

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        self.log.append(self.name)
        await call_next(job)


async def test_compose_passes_skipping_layers_by_in_order(kit: Kit) -> None:
    """Skipping layers are not entered; the others run in order, then the endpoint."""
    log: list[str] = []
    end = Next()
    chain = compose([Layer("a", log, False), Layer("b", log, True), Layer("c", log, False),
                     Layer("d", log, True)], end)
    job = await make_job(kit.app, "t.add", (1, 2))
    await chain(job)
    assert log == ["a", "c"]
    assert end.jobs == [job]


async def _acts(layer: Any, job: Job) -> bool:
    """Whether entering ``layer`` did anything but call on at once."""
    call_next = Next()
    try:
        await layer(job, call_next)
    except Exception:
        return True
    return call_next.jobs != [job]


async def test_admission_predicates_skip_plain_jobs_and_enter_the_rest(kit: Kit) -> None:
    """A plain job skips each layer; a job that layer acts on does not skip it."""
    finish = Finished()
    state = WorkerState()
    plain = await make_job(kit.app, "t.add", (1, 2))
    past = datetime.now(UTC) - timedelta(seconds=1)
    cases = [
        (Expires(finish), await make_job(kit.app, "t.add", (1, 2), expires=past)),
        (Eta(state), await make_job(kit.app, "t.add", (1, 2), countdown=0.01)),
        (Dedupe(state, None, finish), await make_job(kit.app, "t.add", (1, 2),
                                                    redelivered=True)),
        (Revoked(state, finish), await make_job(kit.app, "t.add", (1, 2), task_id="gone")),
        (Stale(finish), None),
    ]
    state.revoked.add("other")
    for layer, acted_on in cases:
        if type(layer) is not Revoked:  # anything revoked means looking ids up
            assert layer.skips(plain), layer
            assert not await _acts(layer, plain), layer
        if acted_on is not None:
            assert not layer.skips(acted_on), layer
    revoked = Revoked(state, finish)
    gone = cases[3][1]
    state.revoked.add("gone")
    assert await _acts(revoked, gone)
    assert Revoked(WorkerState(), finish).skips(gone)  # nothing revoked: nothing to check


async def test_rate_limit_and_time_limit_predicates(kit: Kit) -> None:
    """No rate limit: skipped; a rate limit: entered. No time limit on a coroutine task:
    skipped, with the limits still resolved for the body; a limit: entered."""

    @kit.app.task(name="t.limited", rate_limit="10/s", time_limit=5)
    async def limited() -> None:
        return None

    limits = Limits(kit.app.settings)
    plain = await make_job(kit.app, "t.add", (1, 2))
    job = await make_job(kit.app, "t.limited")
    assert RateLimit(limits).skips(plain)
    assert not RateLimit(limits).skips(job)
    assert TimeLimit(limits).skips(plain) and plain.time_limits == (None, None)
    assert not TimeLimit(limits).skips(job) and job.time_limits == (5, None)
