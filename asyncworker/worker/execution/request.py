"""Make ``self.request`` (and ``current_request()``) the job's request while it runs."""

from __future__ import annotations

from ...task import reset_current_request, set_current_request
from ..job import Job
from ..middleware import CallNext


class CurrentRequest:
    """Set the request context variable around the rest of the chain."""

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        token = set_current_request(job.request)
        try:
            await call_next(job)
        finally:
            reset_current_request(token)
