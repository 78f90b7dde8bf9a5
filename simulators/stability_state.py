"""The Stability simulator's state: async results moving through time, billing, counters.

An async result costs a timer and its input bytes until someone fetches it:
its image is rendered lazily, on the first GET after it completes, in a
worker thread, so a benchmark can keep thousands in flight.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
from collections import Counter, deque
from dataclasses import dataclass
from decimal import Decimal
from random import Random
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulators.common import (
    FaultPlan,
    FaultVocabulary,
    Latency,
    SlidingWindowLimit,
    parse_fault_rates,
)
from simulators.stability_ops import MAX_SEED, OPERATIONS, Operation, Valid
from simulators.stability_render import render

if TYPE_CHECKING:
    from simulators.stability import StabilitySimConfig

STABILITY_FAULTS = FaultVocabulary(
    request_kinds=frozenset({"429", "429-bare", "500", "502", "503", "hang", "slow", "drop",
                             "drop-after", "expired"}),
    endpoints=frozenset({"submit", "result", "any"}),
    # moderation and filtered wait for a request that passes validation, as the provider
    # only moderates what it would generate.
    outcome_kinds=frozenset({"moderation", "filtered"}),
    only_on={"moderation": "submit", "filtered": "submit", "drop-after": "submit",
             "expired": "result"},
)
"""Stability's fault language: WaveSpeed's HTTP faults plus moderation, filtered, expired."""

COUNTERS = ("requests", "submits", "result_polls", "results_created", "completed",
            "rate_limited", "lockouts", "moderated", "filtered", "unauthorized", "rejected")


def parse_faults(spec: str) -> list[Any]:
    """`parse_fault_rates` in Stability's vocabulary, e.g. `"500=0.1,moderation=0.05"`."""
    return parse_fault_rates(spec, STABILITY_FAULTS)


@dataclass
class Result:
    """One async generation, from its id until it expires."""

    id: str
    valid: Valid
    seed: int
    filtered: bool
    ready_at: float
    expires_at: float = float("inf")
    done: bool = False
    image: asyncio.Task[bytes] | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def finish_reason(self) -> str:
        return "CONTENT_FILTERED" if self.filtered else "SUCCESS"


class SimState:
    """Everything one simulator instance remembers; used only from its event loop."""

    def __init__(self, config: StabilitySimConfig) -> None:
        self.config = config
        self.rng = Random(config.seed)
        self.faults = FaultPlan(self.rng, parse_faults(config.faults))
        self.limiter = SlidingWindowLimit(config.rate_limit, config.rate_window, config.lockout)
        self.stopping = asyncio.Event()
        self.results: dict[str, Result] = {}
        self.epoch = 0  # generations begun before the last reset are not counted when they end
        self.reset()

    def reset(self) -> None:
        """Back to the configuration's settings, with nothing remembered."""
        for result in self.results.values():
            if result.timer is not None:
                result.timer.cancel()
        self.results = {}
        self._expiry: list[tuple[float, str]] = []
        self.latency = Latency.parse(self.config.latency)
        self.faults.clear()
        self.faults.rates = parse_faults(self.config.faults)
        self.limiter.configure(self.config.rate_limit, self.config.rate_window,
                               self.config.lockout)
        self.counters: Counter[str] = Counter()
        self.by_operation: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.billing: Counter[str] = Counter()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.config.request_log_size)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.epoch += 1

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # ----------------------------------------------------------------- generations

    def draw_seed(self, valid: Valid) -> int:
        seed = int(valid.params.get("seed", 0))
        return seed or self.rng.randint(1, MAX_SEED)

    def begin(self) -> int:
        """A generation starts; answers the epoch to hand to finish() or abandon()."""
        self.counters["results_created"] += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return self.epoch

    def finish(self, op: Operation, filtered: bool, epoch: int) -> None:
        """A result was produced: count and charge it (filtered ones are charged too)."""
        if epoch == self.epoch:
            self.in_flight -= 1
            self.counters["completed"] += 1
            self.counters["filtered"] += filtered
            self.billing[op.name] += 1

    def abandon(self, epoch: int) -> None:
        """A generation that never was (its input did not decode, or the server stopped)."""
        if epoch == self.epoch:
            self.in_flight -= 1
            self.counters["results_created"] -= 1

    def create_result(self, valid: Valid, filtered: bool) -> Result:
        self._purge()
        latency = self.latency.sample(self.rng)
        result = Result(id=secrets.token_hex(32), valid=valid, seed=self.draw_seed(valid),
                        filtered=filtered, ready_at=self.now() + latency)
        self.results[result.id] = result
        self.begin()  # a reset drops the result, so its epoch is always current
        result.timer = asyncio.get_running_loop().call_later(latency, self._complete, result)
        return result

    def _complete(self, result: Result) -> None:
        result.timer = None
        if self.results.get(result.id) is not result:
            return  # reset while running
        result.done = True
        result.expires_at = self.now() + self.config.result_ttl
        heapq.heappush(self._expiry, (result.expires_at, result.id))
        self.finish(result.valid.op, result.filtered, self.epoch)

    def _purge(self) -> None:
        now = self.now()
        while self._expiry and self._expiry[0][0] <= now:
            _, result_id = heapq.heappop(self._expiry)
            self.results.pop(result_id, None)

    def result(self, result_id: str) -> Result | None:
        """The result if it exists and has not expired (results expire `result_ttl` after
        they complete)."""
        self._purge()
        return self.results.get(result_id)

    def expire(self, result_id: str) -> None:
        result = self.results.pop(result_id, None)
        if result is not None and result.timer is not None:
            result.timer.cancel()
            self.in_flight -= 1

    async def image(self, result: Result) -> bytes:
        """The result's encoded image, rendered once, on first demand."""
        if result.image is None:
            result.image = asyncio.ensure_future(
                asyncio.to_thread(render, result.valid, result.filtered))
        return await asyncio.shield(result.image)

    # ----------------------------------------------------------------- reporting

    def stats(self) -> dict[str, Any]:
        billing = {name: {"results": n, "credits": n * OPERATIONS[name].credits,
                          "usd": str(n * OPERATIONS[name].usd)}
                   for name, n in sorted(self.billing.items())}
        credits = sum(n * OPERATIONS[name].credits for name, n in self.billing.items())
        usd = sum((n * OPERATIONS[name].usd for name, n in self.billing.items()), Decimal(0))
        limiter = self.limiter
        return {
            **{name: self.counters[name] for name in COUNTERS},
            "in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight,
            "requests_by_operation": dict(self.by_operation),
            "billing": billing, "billed_credits": credits, "billed_usd": str(usd),
            "faults_injected": dict(self.faults_injected),
            "results_stored": len(self.results),
            "latency": str(self.latency),
            "rate_limit": {"rate_limit": limiter.limit, "rate_window": limiter.window,
                           "lockout": limiter.lockout,
                           "locked_for": round(max(0.0, limiter.locked_until - self.now()), 3)},
        }

    async def stop(self) -> None:
        self.stopping.set()
        for result in self.results.values():
            if result.timer is not None:
                result.timer.cancel()


STATE = web.AppKey("stability_state", SimState)
