"""``CanvasStep``: callbacks and the next chain step before the store (as the result's
children), chord parts and failure propagation after it; a canvas error never changes
the task's outcome."""

from __future__ import annotations

from typing import Any

import pytest

from asyncworker import Request, states
from asyncworker.backends.base import format_traceback
from asyncworker.worker.job import FAILURE, IGNORED, RETRY, REVOKED, SUCCESS, Job, Outcome
from asyncworker.worker.outcomes.canvas import CanvasStep

from .helpers import Kit, RecordingHooks, make_job, signature


class _Canvas:
    """Records what the step asks of the canvas."""

    def __init__(self, children: list[Any] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.children = children if children is not None else [[["child-1", None], None]]

    async def on_success(self, request: Request, retval: Any) -> list[Any]:
        self.calls.append(("on_success", retval))
        return self.children

    async def chord_part_return(self, request: Request, state: str, value: Any) -> None:
        self.calls.append(("chord_part_return", state, value))

    async def on_failure(self, request: Request, exc: BaseException, traceback: str,
                         store: bool) -> None:
        self.calls.append(("on_failure", type(exc).__name__, store))


def _ended(job: Job, kind: str) -> Job:
    exc = None if kind == SUCCESS else ValueError("bad")
    job.outcome = Outcome(kind, value=3 if kind == SUCCESS else None, exc=exc,
                          traceback=format_traceback(exc) if exc else None)
    return job


def _exc_type(call: tuple[Any, ...]) -> tuple[Any, ...]:
    """A chord part's exception meta, shown by its type name."""
    if call[0] == "chord_part_return" and isinstance(call[2], dict):
        return (*call[:2], call[2]["exc_type"])
    return call


async def _run(step: CanvasStep, job: Job) -> None:
    await step.before_store(job)
    await step.after_store(job)


CHORD = {"chord": signature("t.add", 0), "group_id": "g-1", "group_index": 0}


@pytest.mark.parametrize(("kind", "options", "expected"), [
    (SUCCESS, {"link": signature("t.add", 1)}, [("on_success", 3)]),
    (SUCCESS, {"chain": [signature("t.add", 1)]}, [("on_success", 3)]),
    (SUCCESS, {}, []),
    (SUCCESS, CHORD, [("chord_part_return", states.SUCCESS, 3)]),
    (FAILURE, CHORD, [("chord_part_return", states.FAILURE, "ValueError")]),
    (REVOKED, CHORD, [("chord_part_return", states.REVOKED, "ValueError")]),
    (FAILURE, {"chain": [signature("t.add", 1)]}, [("on_failure", "ValueError", True)]),
    (FAILURE, {"link_error": signature("t.add", 1)}, [("on_failure", "ValueError", True)]),
    (FAILURE, {"link": signature("t.add", 1)}, []),
    (RETRY, {"chain": [signature("t.add", 1)], **CHORD}, []),
    (IGNORED, {"chain": [signature("t.add", 1)], **CHORD}, []),
], ids=["callback", "chain", "plain-success", "chord-success", "chord-failure",
        "chord-revoked", "chain-failure", "errback", "failure-skips-callbacks", "retry",
        "ignored"])
async def test_canvas_work_for_each_outcome(kit: Kit, kind: str, options: dict[str, Any],
                                            expected: list[tuple[Any, ...]]) -> None:
    """Which canvas call each outcome makes (chord parts carry the exception's meta)."""
    canvas = _Canvas()
    job = _ended(await make_job(kit.app, "t.add", (1, 2), **options), kind)
    await _run(CanvasStep(canvas, store_failures=True), job)  # type: ignore[arg-type]
    assert [_exc_type(call) for call in canvas.calls] == expected


@pytest.mark.parametrize(("children", "stored"), [
    ([[["child-1", None], None]], [[["child-1", None], None]]), ([], None)])
async def test_children_of_callbacks_go_to_the_outcome(
        kit: Kit, children: list[Any], stored: list[Any] | None) -> None:
    """What the callbacks published becomes ``outcome.children`` (None when nothing)."""
    job = _ended(await make_job(kit.app, "t.add", (1, 2), link=signature("t.add", 1)), SUCCESS)
    await CanvasStep(_Canvas(children), True).before_store(job)  # type: ignore[arg-type]
    assert job.outcome is not None and job.outcome.children == stored


async def test_chain_failures_are_stored_only_with_a_backend(kit: Kit) -> None:
    """``store_failures`` is passed on: without a backend there is nowhere to store them."""
    canvas = _Canvas()
    job = _ended(await make_job(kit.app, "t.add", chain=[signature("t.add", 1)]), FAILURE)
    await _run(CanvasStep(canvas, store_failures=False), job)  # type: ignore[arg-type]
    assert canvas.calls == [("on_failure", "ValueError", False)]


# -- in a worker ---------------------------------------------------------------------
async def test_callback_gets_the_result_and_is_a_child(kit: Kit, rec: RecordingHooks) -> None:
    """``link``: the callback runs with the parent's value first; the parent's outcome
    lists it as a child."""
    async with kit.run([rec]) as worker:
        parent = await kit.add.apply_async((1, 2), link=signature("t.add", 10, task_id="cb"))
        assert await worker.result("cb") == 13
        await worker.idle()
    job = rec.of("task_succeeded", parent.id)[0].job
    assert job is not None and job.outcome is not None
    assert job.outcome.children == [[["cb", None], None]]
    child = rec.of("task_received", "cb")[0].job
    assert child is not None and child.request is not None
    assert (child.request.parent_id, child.request.root_id) == (parent.id, parent.id)


async def test_chain_runs_its_steps_in_order(kit: Kit, rec: RecordingHooks) -> None:
    """A chain embed: each step gets the previous result; the last result is the chain's."""
    chain = [signature("t.add", 100, task_id="third"), signature("t.add", 10, task_id="second")]
    async with kit.run([rec]) as worker:
        first = await kit.add.apply_async((1, 2), chain=chain)
        assert await worker.result("third") == 113
    assert kit.runs == [first.id, "second", "third"]


async def test_chain_failure_is_stored_under_every_later_step(
        kit: Kit, rec: RecordingHooks) -> None:
    """A failing step stores its error under the ids of the steps after it, which never run."""
    chain = [signature("t.add", 1, task_id="s3"), signature("t.add", 2, task_id="s2")]
    async with kit.run([rec]) as worker:
        first = await kit.fail.apply_async(("chain broke",), chain=chain)
        stored = [await worker.stored(i) for i in (first.id, "s2", "s3")]
        await worker.idle()
    assert [(s.state, s.result["exc_type"]) for s in stored] == [(states.FAILURE,
                                                                  "ValueError")] * 3
    assert kit.runs == [first.id]


async def test_errbacks_old_and_new_style(kit: Kit, rec: RecordingHooks) -> None:
    """An old-style errback is published with the failed id; a new-style one runs here with
    ``(request, exc, traceback)``."""
    calls: list[Any] = []

    @kit.app.task(name="t.old_errback")
    async def old_errback(task_id: str) -> None:
        calls.append(("old", task_id))

    @kit.app.task(name="t.new_errback")
    async def new_errback(request: Request, exc: BaseException, traceback: str) -> None:
        calls.append(("new", request.id, type(exc).__name__))

    errbacks = [signature("t.old_errback"), signature("t.new_errback")]
    async with kit.run([rec]) as worker:
        failed = await kit.fail.apply_async(link_error=errbacks)
        await worker.wait_for(lambda: len(calls) == 2)
        await worker.idle()
    assert sorted(calls) == [("new", failed.id, "ValueError"), ("old", failed.id)]


async def test_a_broken_callback_does_not_change_the_outcome(
        kit: Kit, rec: RecordingHooks) -> None:
    """A callback that cannot be published is logged; the task still succeeds and is acked."""
    broken = signature("t.add", 1, countdown="not a number")
    async with kit.run([rec]) as worker:
        result = await kit.add.apply_async((1, 2), link=broken)
        assert await worker.result(result.id) == 3
        await worker.idle()
    assert rec.closings() == ["task_succeeded"]
    assert len(worker.broker.acked) == 1
