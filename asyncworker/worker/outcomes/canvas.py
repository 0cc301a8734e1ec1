"""Canvas after a task: callbacks, the next chain step, chord parts, failure propagation.

Celery's order is kept: on success, callbacks and the next chain step are
published *before* the result is stored (their ids become the result's
``children``); after the store, a chord member returns its part, and on
failure the error is stored under every later chain step and errbacks run.
A canvas step that fails is logged; it never changes the task's outcome.
"""

from __future__ import annotations

from ... import states
from ...backends.base import exception_to_meta
from ...canvas import Canvas
from ..job import FAILURE, REVOKED, SUCCESS, Job
from . import OutcomeStep

_CHORD_STATE = {SUCCESS: states.SUCCESS, FAILURE: states.FAILURE, REVOKED: states.REVOKED}


class CanvasStep(OutcomeStep):
    """Run Celery's after-task canvas work for the job's outcome."""

    def __init__(self, canvas: Canvas, store_failures: bool) -> None:
        self.canvas = canvas
        # Chain steps get the failure stored under their ids only with a backend.
        self.store_failures = store_failures

    async def before_store(self, job: Job) -> None:
        outcome, request = job.outcome, job.request
        if (outcome is None or request is None or outcome.kind != SUCCESS
                or not (request.callbacks or request.chain)):
            return
        outcome.children = await self.canvas.on_success(request, outcome.value) or None

    async def after_store(self, job: Job) -> None:
        outcome, request = job.outcome, job.request
        if outcome is None or request is None:
            return
        state = _CHORD_STATE.get(outcome.kind)
        if state is None:
            return
        if request.chord and request.group:
            assert outcome.kind == SUCCESS or outcome.exc is not None
            value = outcome.value if outcome.kind == SUCCESS else exception_to_meta(
                outcome.exc)  # type: ignore[arg-type]
            await self.canvas.chord_part_return(request, state, value)
        if outcome.kind == FAILURE and (request.chain or request.errbacks):
            assert outcome.exc is not None
            await self.canvas.on_failure(request, outcome.exc, outcome.traceback or "",
                                         store=self.store_failures)
