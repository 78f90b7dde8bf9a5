"""The in-flight engine: one event loop per worker process follows every provider request
that process is waiting on.

Why not a Celery message per look (what editq did before): every look cost a broker
round trip, a job row read and a lease write, and countdown messages meet Celery's
known limits at scale (redelivery after the visibility timeout on Redis, celery#2599;
about 11 KB of worker memory per held ETA message, celery#2218; ETA prefetch starving
other workers, celery#2541). Here a look that finds the request still running touches
neither the database nor the broker: it is one GET on a pooled keep-alive connection,
and the next look goes into an in-memory heap.

Why hand-written: no library schedules looks at provider requests with per-provider
pools and leases; asyncio and httpx do the I/O, a thread pool does the blocking rest.

What touches the database: state changes only (finished, failed, timed out, deadline
passed), run in a bounded thread pool off the loop, and one UPDATE per interval that
renews the leases of every job held here. A worker that dies loses nothing: the leases
lapse and the reaper hands the saved request ids to another worker's engine. A worker
that stops hands its jobs back first (`stop`), so another takes them at once.

(Over 300 lines: one class whose loop, heap and pools share state that cannot be
split without locks between the parts.)
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.db import session_scope
from shared.errors import EditqError, ProviderError
from shared.jobs.failure import fail_attempt, past_deadline, provider_failed
from shared.jobs.finish import collect_and_finish, look_failed, mark_deadline
from shared.jobs.outcomes import RunOutcome
from shared.jobs.schedule import followed_lease_seconds, next_look_seconds, timed_out
from shared.jobs.states import RUNNING, release_leases, renew_leases
from shared.models import Job
from shared.providers.looks import Looker
from shared.queue import BULK
from shared.services import Services

log = logging.getLogger(__name__)

# A job handed back is the next worker's to take for this long; then the reaper's.
HAND_BACK_GRACE_SECONDS = 5.0
# Starts another attempt of a job later (in the worker: a Celery countdown on its queue).
RunLater = Callable[[Job, float], None]
# Receives the jobs a stopping engine hands back (the worker sends each a follow message).
HandBack = Callable[[list[Job]], None]
# A state change, run in the finishing pool: what it did, and what comes next (another
# look, another attempt, or nothing: see shared.jobs.outcomes).
Step = Callable[[Job], RunOutcome]


@dataclass
class _Followed:
    job: Job
    stamp: int  # heap entries carrying an older stamp are stale
    due: float = 0.0
    busy: bool = False  # a look or a finish is out for it
    woken: bool = False  # a wake came while busy: look again as soon as it is back


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    """Run a side call whose failure must not stop anything (logged, not raised)."""
    try:
        fn(*args)
    except Exception:
        log.exception("engine side call %s failed", getattr(fn, "__name__", fn))


class Engine:
    """Follows submitted requests until they change state; `follow`, `wake` and `stop`
    may be called from any thread."""

    def __init__(self, services: Services, run_later: RunLater,
                 ended: Callable[[RunOutcome], None] | None = None) -> None:
        self.services = services
        self.settings = settings = services.settings
        self.run_later = run_later
        # Told of every finish after which the engine no longer follows the job (one
        # caller waits on it: shared.inflight.generate).
        self.ended = ended
        self.renew_seconds = max(0.2, min(10.0, settings.follow_lease_margin_seconds / 3))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="editq-inflight",
                                        daemon=True)
        self._finishers = ThreadPoolExecutor(settings.inflight_finish_threads,
                                             thread_name_prefix="editq-finish")
        # Bulk jobs finish in a smaller pool of their own: a wave of bulk answers is
        # stored and written a few at a time, and interactive finishes never queue
        # behind it (bench/README.md, "Issue 29").
        self._bulk_finishers = ThreadPoolExecutor(settings.bulk_finish_threads,
                                                  thread_name_prefix="editq-finish-bulk")
        # Pools of their own, not the loop's default one: lease renewals wait on the
        # database (SQLite's lock, up to its busy timeout), and a look must never queue
        # behind them for the breaker's or a limiter's quick Redis call (a chaos run saw
        # a look held 60 s that way).
        self._io = ThreadPoolExecutor(4, thread_name_prefix="editq-engine-io")
        self._leases = ThreadPoolExecutor(1, thread_name_prefix="editq-leases")
        self._followed: dict[str, _Followed] = {}
        self._finishing: set[str] = set()
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._lookers: dict[str, Looker] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._answered_at: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closing = False
        self.counts = {"looks": 0, "finishes": 0, "lease_renewals": 0}

    # -- from any thread ---------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._run(), self._loop)

    def follow(self, job: Job, delay: float) -> None:
        """Look at this job's request in `delay` seconds, and until it changes state."""
        self._loop.call_soon_threadsafe(self._add, job, delay)

    def wake(self, job_id: str) -> None:
        """A provider said the request changed (its webhook): look now, if it is held here."""
        self._loop.call_soon_threadsafe(self._wake, job_id)

    def held(self) -> list[str]:
        return list(self._followed)

    def stop(self, hand_back: HandBack, timeout: float = 8.0) -> list[str]:
        """Stop looking, let the finishes that are out end (within `timeout`), and hand
        every other job back: leases released, then `hand_back`. Answers their ids."""
        if not self._thread.is_alive():
            return []  # never started, or stopped already
        future = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), self._loop)
        try:
            jobs = future.result(timeout + 2.0)
        except Exception as exc:
            log.warning("in-flight engine did not stop cleanly (%r)", exc)
            jobs = [entry.job for entry in list(self._followed.values())]
        if jobs:
            self._release([job.id for job in jobs])
            hand_back(jobs)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2.0)
        self._finishers.shutdown(wait=False, cancel_futures=True)
        self._bulk_finishers.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=False, cancel_futures=True)
        self._leases.shutdown(wait=False, cancel_futures=True)
        return [job.id for job in jobs]

    # -- on the loop -----------------------------------------------------------

    def _add(self, job: Job, delay: float) -> None:
        entry = self._followed.get(job.id)
        if entry is None:
            entry = self._followed[job.id] = _Followed(job, next(self._seq))
        elif entry.busy:
            entry.woken = True  # held here and being looked at (a second adoption)
            return
        entry.job, entry.busy, entry.woken = job, False, False
        if not self._closing:  # else it is handed back with the rest
            self._schedule(entry, delay)

    def _wake(self, job_id: str) -> None:
        entry = self._followed.get(job_id)
        if entry is None or self._closing:
            return
        if entry.busy:
            entry.woken = True
        else:
            self._schedule(entry, 0.0)

    def _schedule(self, entry: _Followed, delay: float) -> None:
        entry.stamp = next(self._seq)
        entry.due = self._loop.time() + max(0.0, delay)
        heapq.heappush(self._heap, (entry.due, entry.stamp, entry.job.id, entry.stamp))
        self._changed.set()

    async def _run(self) -> None:
        renewer = asyncio.create_task(self._renew_forever())
        looks: set[asyncio.Task[None]] = set()
        try:
            while not self._closing:
                now = self._loop.time()
                while self._heap and self._heap[0][0] <= now:
                    _, _, job_id, stamp = heapq.heappop(self._heap)
                    entry = self._followed.get(job_id)
                    if entry is None or entry.stamp != stamp or entry.busy:
                        continue
                    entry.busy = True
                    task = asyncio.create_task(self._look(entry))
                    looks.add(task)
                    task.add_done_callback(looks.discard)
                self._changed.clear()
                wait = self._heap[0][0] - now if self._heap else 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.001, wait))
        finally:
            renewer.cancel()
            for task in looks:
                task.cancel()  # a look is a read: safe to drop
            await asyncio.gather(renewer, *looks, return_exceptions=True)
            self._stopped.set()

    async def _look(self, entry: _Followed) -> None:
        job = entry.job
        assert job.provider_request_id is not None
        try:
            limiter = self.services.limiter(job.provider)
            # Providers that count every request (Stability) take the shared rate.
            if (limiter is not None and limiter.limits.count_looks
                    and (wait := await self._loop.run_in_executor(
                        self._io, limiter.before_look, job.id,
                        self.services.bulk(job)))):
                self._again(entry, wait * random.uniform(1.0, 1.5))
                return
            async with self._gate(job.provider):
                self.counts["looks"] += 1
                answer = await self._looker(job.provider).look(job.provider_request_id)
        except ProviderError as exc:
            if exc.task_failed or not exc.retryable:
                self._finish_off(entry, self._failed(exc))
                return
            # Only the look failed: look again later, and let its breaker hear of it
            # (meanwhile: the next look need not wait for Redis).
            self._look_later(entry, exc.retry_after)
            self._io.submit(_quietly, provider_failed, job.provider, self.services, exc)
            return
        except EditqError as exc:
            self._finish_off(entry, self._failed(exc))
            return
        except Exception:
            log.exception("job %s: a look failed unexpectedly; looking again later", job.id)
            self._look_later(entry, None)
            return
        await self._answered(job.provider)
        if answer is None:
            self._look_later(entry, None)
            return
        services = self.services
        self._finish_off(entry, lambda j: collect_and_finish(j, answer, services))

    def _failed(self, exc: EditqError) -> Step:
        services = self.services
        return lambda job: look_failed(job, exc, services)

    def _look_later(self, entry: _Followed, retry_after: float | None) -> None:
        job, services = entry.job, self.services
        if (timeout := timed_out(job, self.settings)) is not None:
            self._finish_off(entry, lambda j: fail_attempt(j, services, timeout))
        elif job.status == RUNNING and past_deadline(job):
            # Over for its owner now; its call is followed on, as the job now is.
            self._finish_off(entry, lambda j: mark_deadline(j, services))
        else:
            provider = services.provider(job.provider)
            self._again(entry, next_look_seconds(self.settings, provider, job, retry_after))

    def _again(self, entry: _Followed, delay: float) -> None:
        entry.busy = False
        self._schedule(entry, 0.0 if entry.woken else delay)
        entry.woken = False

    def _finish_off(self, entry: _Followed, step: Step) -> None:
        """A state change: `step(job)` runs off the loop, in the finishing pool, and its
        outcome says what comes next: another look (a storage outage, a failed download,
        a deadline passed with the call still out), another attempt, or nothing."""
        job = entry.job
        self._finishing.add(job.id)

        def done(future: asyncio.Future[RunOutcome]) -> None:
            self._finishing.discard(job.id)
            self.counts["finishes"] += 1
            outcome: RunOutcome | None = None
            if not future.cancelled() and (exc := future.exception()) is not None:
                log.error("job %s: finishing failed (%r); its lease lapses and the reaper "
                          "resumes it", job.id, exc)
            elif not future.cancelled():
                outcome = future.result()
                log.info("job %s: %s %s", job.id, outcome.action, outcome.detail)
            if outcome is None or not outcome.follow:
                self._followed.pop(job.id, None)
                return
            entry.job, entry.busy = outcome.job or job, False
            if not self._closing:  # (else it is handed back with the rest)
                self._schedule(entry, 0.0 if entry.woken else outcome.delay)
                entry.woken = False

        pool = self._bulk_finishers if job.queue == BULK else self._finishers
        self._loop.run_in_executor(pool, self._step, step, job).add_done_callback(done)

    def _step(self, step: Step, job: Job) -> RunOutcome:
        """In the finishing pool: the step, then (off the loop: it is a broker send) the
        next attempt it asks for."""
        outcome = step(job)
        if outcome.run_again:
            _quietly(self.run_later, job, outcome.delay)
        if self.ended is not None and not outcome.follow:
            _quietly(self.ended, outcome)
        return outcome

    async def _answered(self, provider: str) -> None:
        """The provider answered: tell its breaker, at most once a second per provider."""
        now = time.monotonic()
        if now - self._answered_at.get(provider, 0.0) < 1.0:
            return
        self._answered_at[provider] = now
        breaker = self.services.breaker(provider)
        if breaker is not None:
            self._io.submit(_quietly, breaker.record_success)

    def _looker(self, provider: str) -> Looker:
        if provider not in self._lookers:
            self._lookers[provider] = self.services.provider(provider).looker(
                self.settings.inflight_looks_per_provider)
        return self._lookers[provider]

    def _gate(self, provider: str) -> asyncio.Semaphore:
        if provider not in self._gates:
            self._gates[provider] = asyncio.Semaphore(self.settings.inflight_looks_per_provider)
        return self._gates[provider]

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_seconds)
            if not self._followed:
                continue
            try:
                await self._loop.run_in_executor(
                    self._leases, self._renew, [e.job for e in self._followed.values()])
            except Exception as exc:  # the database is down: the next tick tries again
                log.warning("could not renew %d lease(s): %r", len(self._followed), exc)

    def _renew(self, jobs: list[Job]) -> None:
        with session_scope(self.settings.database_url) as session:
            renew_leases(session, [job.id for job in jobs],
                         followed_lease_seconds(self.settings))
        self.counts["lease_renewals"] += 1
        by_provider: dict[str, list[str]] = {}
        for job in jobs:
            by_provider.setdefault(job.provider, []).append(job.id)
        for provider, job_ids in by_provider.items():
            limiter = self.services.limiter(provider)
            if limiter is not None:
                limiter.renew(job_ids)  # their in-flight slots, in one round trip

    def _release(self, job_ids: list[str]) -> None:
        try:
            with session_scope(self.settings.database_url) as session:
                release_leases(session, job_ids, HAND_BACK_GRACE_SECONDS)
        except Exception as exc:
            log.warning("could not release %d lease(s) (%r): they lapse instead",
                        len(job_ids), exc)

    async def _shutdown(self, grace: float) -> list[Job]:
        """Answers the jobs to hand back: every one held, but those whose finish is out."""
        self._closing = True
        self._changed.set()
        await self._stopped.wait()
        deadline = self._loop.time() + max(0.0, grace - 1.0)
        while self._finishing and self._loop.time() < deadline:
            await asyncio.sleep(0.05)  # they hold results the provider has billed
        for looker in self._lookers.values():
            await looker.aclose()
        return [entry.job for job_id, entry in self._followed.items()
                if job_id not in self._finishing]
