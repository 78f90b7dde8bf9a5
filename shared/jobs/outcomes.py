"""What one step of a job did, and what should happen next.

Why a step answers its next step instead of calling a scheduler: the worker, the
in-flight engine and a test each act on the answer in their own way (a Celery countdown,
a look in the engine's heap, a list a test reads), so the steps stay plain functions of
(job, services) and there is no scheduler protocol to implement, fake or keep in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.models import Job


class Action(StrEnum):
    """What one step did (a `str`: logs and tests read it as text)."""

    SKIPPED = "skipped"        # nothing to do: not queued, or someone else has it
    THROTTLED = "throttled"    # a limit or an open breaker: back in the queue, later
    SUBMITTED = "submitted"    # the provider has it: follow it
    WAITING = "waiting"        # still at the provider: look again later
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"            # a new attempt, later
    DISCARDED = "discarded"    # the job ended meanwhile (canceled): the result is dropped


@dataclass(frozen=True)
class RunOutcome:
    """What a step did; the caller does what comes next, after `delay` seconds:
    follows `job` (SUBMITTED, WAITING) or runs another attempt (THROTTLED, RETRY)."""

    job_id: str
    action: Action
    detail: str = ""
    delay: float = 0.0
    # The job as it now is, for the engine to follow (SUBMITTED, WAITING).
    job: Job | None = None

    @property
    def follow(self) -> bool:
        return self.action in (Action.SUBMITTED, Action.WAITING)

    @property
    def run_again(self) -> bool:
        return self.action in (Action.THROTTLED, Action.RETRY)
