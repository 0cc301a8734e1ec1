"""Outcome steps: what happens once a job has an outcome, around the result store.

Each step has ``before_store`` and ``after_store``; the executor runs every
step's ``before_store``, stores the state, then every ``after_store``, then
settles the message by the ack policy and fires the closing hook. A step may
replace ``job.outcome`` (``retry`` turns a failure into a retry, and a retry
that cannot be published into a failure); after the store, that starts the
round again for the new outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..job import Job


class OutcomeStep:
    """No-op base: override one or both phases."""

    async def before_store(self, job: Job) -> None:
        """Runs before the state is stored (may replace ``job.outcome``)."""

    async def after_store(self, job: Job) -> None:
        """Runs after the state is stored (``job.outcome.stored`` says whether it was)."""
