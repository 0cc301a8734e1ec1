"""``TaskHandlers``: the task class's ``on_success`` / ``on_failure`` (before the store) and
``on_retry`` (after it), sync or async; a hook that raises never changes the outcome."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from asyncworker import Retry, Task, states
from asyncworker.backends.base import format_traceback
from asyncworker.worker.job import FAILURE, IGNORED, RETRY, REVOKED, SUCCESS, Outcome
from asyncworker.worker.outcomes.handlers import TaskHandlers

from .helpers import Kit, RecordingHooks, make_job

Log = list[tuple[str, tuple[Any, ...]]]


def _base(log: Log, *, use_async: bool = False, raising: bool = False,
          probe: Callable[[], Any] | None = None) -> type[Task]:
    """A Task base class whose hooks append ``(name, args)`` (plus ``probe()``) to ``log``."""

    def note(name: str, args: tuple[Any, ...]) -> None:
        log.append((name, args if probe is None else (*args, probe())))
        if raising:
            raise RuntimeError(f"{name} broke")

    if use_async:
        class AsyncHooked(Task):
            async def on_success(self, *args: Any) -> None:
                note("on_success", args)

            async def on_failure(self, *args: Any) -> None:
                note("on_failure", args)

            async def on_retry(self, *args: Any) -> None:
                note("on_retry", args)

        return AsyncHooked

    class Hooked(Task):
        def on_success(self, *args: Any) -> None:
            note("on_success", args)

        def on_failure(self, *args: Any) -> None:
            note("on_failure", args)

        def on_retry(self, *args: Any) -> None:
            note("on_retry", args)

    return Hooked


def _register(kit: Kit, base: type[Task]) -> None:
    @kit.app.task(name="t.hooked", base=base)
    async def hooked(x: int) -> int:
        return x


def _outcome(kind: str) -> Outcome:
    exc = ValueError("bad")
    retry = Retry(exc=exc, when=None) if kind == RETRY else None
    return Outcome(kind, value=7 if kind == SUCCESS else None,
                   exc=None if kind == SUCCESS else exc, traceback=format_traceback(exc),
                   retry=retry)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("kind", "before", "after"), [
    (SUCCESS, ["on_success"], []),
    (FAILURE, ["on_failure"], []),
    (RETRY, [], ["on_retry"]),
    (REVOKED, [], []),
    (IGNORED, [], []),
])
async def test_each_outcome_calls_its_hook_in_its_phase(
        kit: Kit, use_async: bool, kind: str, before: list[str], after: list[str]) -> None:
    """on_success / on_failure run before the store, on_retry after; nothing else calls one."""
    log: Log = []
    _register(kit, _base(log, use_async=use_async))
    job = await make_job(kit.app, "t.hooked", (1,), kwargs={"k": 2})
    job.outcome = _outcome(kind)
    step = TaskHandlers()
    await step.before_store(job)
    assert [name for name, _ in log] == before
    await step.after_store(job)
    assert [name for name, _ in log] == before + after


async def test_hooks_get_celerys_arguments(kit: Kit) -> None:
    """``on_success(retval, id, args, kwargs)``; ``on_failure`` / ``on_retry(exc, id, args,
    kwargs, einfo)``."""
    log: Log = []
    _register(kit, _base(log))
    job = await make_job(kit.app, "t.hooked", (1,), kwargs={"k": 2})
    step = TaskHandlers()
    for kind in (SUCCESS, FAILURE, RETRY):
        job.outcome = _outcome(kind)
        await step.before_store(job)
        await step.after_store(job)
    (_, success), (_, failure), (_, retried) = log
    assert success == (7, job.id, [1], {"k": 2})
    for args in (failure, retried):
        exc, task_id, pos, kw, einfo = args
        assert isinstance(exc, ValueError) and (task_id, pos, kw) == (job.id, [1], {"k": 2})
        assert "ValueError: bad" in einfo


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_raising_hook_leaves_the_outcome_alone(kit: Kit, use_async: bool) -> None:
    """A hook that raises is swallowed (logged): the outcome object and kind are unchanged."""
    log: Log = []
    _register(kit, _base(log, use_async=use_async, raising=True))
    job = await make_job(kit.app, "t.hooked", (1,))
    for kind in (SUCCESS, FAILURE, RETRY):
        outcome = job.outcome = _outcome(kind)
        await TaskHandlers().before_store(job)
        await TaskHandlers().after_store(job)
        assert job.outcome is outcome and outcome.kind == kind
    assert [name for name, _ in log] == ["on_success", "on_failure", "on_retry"]


async def test_worker_calls_hooks_around_the_store(kit: Kit, rec: RecordingHooks) -> None:
    """In a worker: on_success / on_failure see nothing stored yet; on_retry sees RETRY."""
    log: Log = []
    holder: dict[str, Any] = {}

    def stored_state() -> str | None:
        stored = holder["worker"].backend.results.get(holder["id"])
        return stored.state if stored is not None else None

    @kit.app.task(name="t.phases", base=_base(log, probe=stored_state), bind=True)
    async def phases(self: Task, mode: str) -> str:
        holder["id"] = self.request.id
        if mode == "retry" and not self.request.retries:
            raise self.retry(countdown=0)
        if mode == "fail":
            raise ValueError("bad")
        return mode

    async with kit.run([rec]) as worker:
        holder["worker"] = worker
        for mode in ("ok", "fail", "retry"):
            log.clear()
            result = await phases.delay(mode)
            await worker.stored(result.id)
            await worker.idle()
            seen = [(name, args[-1]) for name, args in log]
            expected = {"ok": [("on_success", None)], "fail": [("on_failure", None)],
                        "retry": [("on_retry", states.RETRY), ("on_success", states.RETRY)]}
            assert seen == expected[mode], mode


async def test_worker_outcome_survives_a_raising_hook(kit: Kit, rec: RecordingHooks) -> None:
    """A raising ``on_success`` still leaves SUCCESS stored, acked and ``task_succeeded``."""
    log: Log = []
    _register(kit, _base(log, raising=True))
    async with kit.run([rec]) as worker:
        result = await kit.app.send_task("t.hooked", (5,))
        assert await worker.result(result.id) == 5
        await worker.idle()
    assert rec.closings(result.id) == ["task_succeeded"]
    assert [name for name, _ in log] == ["on_success"]
