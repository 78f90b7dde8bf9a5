"""A scripted provider and a recording scheduler, for pipeline tests that drive each step."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.models import Job
from shared.providers.base import (
    ImageEditOptions,
    ImageEditResult,
    OutputImage,
    Polled,
    Submitted,
)
from shared.providers.catalog import ModelSpec

Outcome = Exception | bytes | None  # None: not finished yet (async polls only)


@dataclass
class Scripted:
    """A provider answering each call with the next scripted outcome.

    `asynchronous`: submit answers a request id and the outcomes come from polls.
    """

    script: list[Outcome]
    asynchronous: bool = False
    name: str = "scripted"
    min_poll_seconds: float = 0.0
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

    def poll(self, spec: ModelSpec, request_id: str) -> Polled:
        self.seen.append(request_id)
        result = self._next(spec)
        return Polled(done=result is not None, result=result)

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
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        return None


class Steps:
    """A scheduler that records next steps; the test runs them."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.polls: list[str] = []

    def run(self, job_id: str, delay: float) -> None:
        self.runs.append(job_id)

    def follow(self, job: Job, delay: float) -> None:
        self.polls.append(job.id)


