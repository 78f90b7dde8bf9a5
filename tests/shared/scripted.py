"""A scripted provider, and `Harness`: a job run as the worker runs it (an attempt, then
the in-flight engine following what it submitted), for tests that drive each step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.inflight.engine import Engine
from shared.jobs.attempt import run_job
from shared.jobs.outcomes import RunOutcome
from shared.models import Job
from shared.providers.base import (
    ImageEditOptions,
    ImageEditResult,
    OutputImage,
    Submitted,
)
from shared.providers.catalog import ModelSpec
from shared.services import Services
from tests.helpers import wait_for

# None: not finished yet (asynchronous looks only). A callable, at a look, is called
# first (a cancel at a known moment, say) and its answer is the look's outcome.
Outcome = Exception | bytes | None | Callable[[], "Exception | bytes | None"]


@dataclass
class Scripted:
    """A provider answering each call with the next scripted outcome.

    `asynchronous`: submit answers a request id and the outcomes come from the engine's
    looks (`ScriptedLooker`).
    """

    script: list[Outcome]
    asynchronous: bool = False
    name: str = "scripted"
    min_look_seconds: float = 0.0
    webhooks: bool = False
    fetches_urls: bool = False
    # The cost the provider reports with each result (None: the catalog's price applies).
    cost: Decimal | None = None
    submits: int = 0
    on_submit: Callable[[], None] | None = None
    # Called just before a result is answered (a cancel racing the finish, say).
    before_return: Callable[[], None] | None = None
    seen: list[str] = field(default_factory=list)
    options_seen: list[ImageEditOptions] = field(default_factory=list)

    def validate(self, spec: ModelSpec, options: ImageEditOptions) -> None:
        return None

    def _next(self, spec: ModelSpec) -> ImageEditResult | None:
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is None:
            return None
        if self.before_return:
            self.before_return()
        return ImageEditResult(images=[OutputImage(outcome, "image/png")], provider=self.name,
                               model=spec.id, cost=self.cost)

    def submit(self, spec: ModelSpec, options: ImageEditOptions,
               webhook_url: str | None = None) -> Submitted:
        self.submits += 1
        self.options_seen.append(options)
        if self.on_submit:
            self.on_submit()
        if self.asynchronous:
            return Submitted(request_id=f"req-{self.submits}")
        return Submitted(result=self._next(spec))

    def looker(self, concurrency: int) -> ScriptedLooker:
        return ScriptedLooker(self)

    def collect(self, spec: ModelSpec, request_id: str, answer: Any) -> ImageEditResult:
        return ImageEditResult(images=[OutputImage(answer, "image/png")], provider=self.name,
                               model=spec.id, provider_request_id=request_id)


def everywhere(provider: Scripted) -> dict[str, Any]:
    """`provider` in place of every real one, for `Services(providers=...)`."""
    return {name: provider for name in ("local", "wavespeed", "stability")}


class ScriptedLooker:
    """The engine's looks at a scripted provider: each takes the next outcome."""

    def __init__(self, provider: Scripted) -> None:
        self.provider = provider
        self.looked_at: list[float] = []  # the loop's clock at each look

    async def look(self, request_id: str) -> Any:
        self.provider.seen.append(request_id)
        self.looked_at.append(time.monotonic())
        outcome = self.provider.script.pop(0) if self.provider.script else None
        if callable(outcome):
            outcome = outcome()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        return None


class Harness:
    """The worker's scheduler, as a test double: an attempt runs when the test says
    (`run`), what it submits goes to a real in-flight engine over the same services,
    which looks (the scripted provider's looker), finishes, settles and charges exactly
    as in a worker. Next attempts are recorded in `runs`, for the test to run."""

    def __init__(self, services: Services, first_look: float | None = 0.0) -> None:
        self.services = services
        # When the engine first looks at what an attempt submitted: at once (tests wait
        # less), or (None) when the schedule says, as in a worker.
        self.first_look = first_look
        self.runs: list[str] = []     # next attempts asked for, by an attempt or a finish
        self.follows: list[str] = []  # requests handed to the engine
        self._ended: dict[str, list[RunOutcome]] = {}
        self._lock = threading.Lock()
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.services, self._run_later, ended=self._end)
            self._engine.start()
        return self._engine

    def run(self, job_id: str) -> RunOutcome:
        """One attempt, and what the worker's run task does with its outcome."""
        outcome = run_job(job_id, self.services)
        if outcome.follow:
            assert outcome.job is not None
            self.follows.append(job_id)
            self.engine.follow(outcome.job, outcome.delay if self.first_look is None
                               else self.first_look)
        elif outcome.run_again:
            self.runs.append(job_id)
        return outcome

    def ended(self, job_id: str, timeout: float = 20.0) -> RunOutcome:
        """The outcome with which the engine stopped following the job (its finish)."""
        def last() -> RunOutcome | None:
            outcomes = self._outcomes(job_id)
            return outcomes[-1] if outcomes else None

        return wait_for(last, timeout, f"the engine to end job {job_id}")

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.stop(hand_back=lambda jobs: None, timeout=2)

    def _outcomes(self, job_id: str) -> list[RunOutcome]:
        with self._lock:
            return list(self._ended.get(job_id, []))

    def _run_later(self, job: Job, delay: float) -> None:
        self.runs.append(job.id)

    def _end(self, outcome: RunOutcome) -> None:
        with self._lock:
            self._ended.setdefault(outcome.job_id, []).append(outcome)
