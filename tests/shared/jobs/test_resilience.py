"""Deadlines, the circuit breaker and fallback as an attempt and the engine apply them: a real
database, S3 and Redis; scripted providers (tests/shared/money/test_ledger.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.errors import ProviderError
from shared.jobs.attempt import run_job
from shared.models import Job
from shared.services import Services
from shared.storage import Storage
from tests.conftest import make_settings, redis_db
from tests.helpers import image_bytes
from tests.shared.money.test_ledger import events, job_row, ledger
from tests.shared.scripted import Harness, Scripted

pytestmark = pytest.mark.timeout(60)

D = Decimal


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str, redis_base: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         wavespeed_api_key="unused", stability_api_key="unused",
                         redis_url=redis_db(redis_base, "api"), breaker_failures=2,
                         breaker_cooldown_seconds=30)


@pytest.fixture(autouse=True)
def fresh_breakers(services: Services) -> None:
    for provider in ("wavespeed", "stability"):
        breaker = services.breaker(provider)
        assert breaker is not None
        breaker.record_success()


def move_deadline(settings: Settings, job_id: str, seconds_from_now: float) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            deadline_at=utcnow() + timedelta(seconds=seconds_from_now)))


def fallback_on(services: Services) -> Services:
    """The same process, with EDITQ_BREAKER_FALLBACK on (and the providers installed)."""
    return Services(services.settings.model_copy(update={"breaker_fallback": True}),
                    storage=services.storage, providers=services.providers)


def open_breaker(services: Services, provider: str) -> None:
    breaker = services.breaker(provider)
    assert breaker is not None
    for _ in range(services.settings.breaker_failures):
        breaker.record_failure()


class TestDeadlines:
    def test_a_job_past_its_deadline_fails_without_a_call(
            self, settings: Settings, storage: Storage, submit: Any, use: Any,
                    services: Services) -> None:
        job_id = submit(deadline_seconds=60)
        move_deadline(settings, job_id, -1)
        provider = use(Scripted([image_bytes()]))
        assert run_job(job_id, services).action == "failed"
        job = job_row(settings, job_id)
        assert (job.status, job.error_code, job.cost_actual) == ("failed",
                                                                 "deadline_exceeded", D(0))
        assert provider.submits == 0

    def test_a_retry_that_would_come_after_the_deadline_fails_instead(
            self, settings: Settings, storage: Storage, submit: Any, use: Any,
                    services: Services) -> None:
        # given a job with 1 s left and a provider asking to come back in 30 s
        job_id = submit(deadline_seconds=60)
        move_deadline(settings, job_id, 1)
        use(Scripted([ProviderError("busy", code="provider_rate_limited", retryable=True,
                                    retry_after=30)]))
        # when the attempt fails
        outcome = run_job(job_id, services)
        # then the job fails with deadline_exceeded rather than waiting past it
        assert (outcome.action, outcome.run_again) == ("failed", False)
        job = job_row(settings, job_id)
        assert job.error_code == "deadline_exceeded"
        assert "provider_rate_limited" in (job.error_message or "")

    def test_a_deadline_passing_while_the_call_is_out_fails_the_job_and_settles_the_call(
            self, settings: Settings, storage: Storage, submit: Any, use: Any,
            services: Services, harness: Harness) -> None:
        # given a call out at the provider, whose deadline passes within 0.5 s, while the
        # provider works on it (the engine looks at once, then after a second)
        job_id = submit("flux-kontext-pro", deadline_seconds=60)
        move_deadline(settings, job_id, 0.5)
        seen: list[Any] = []

        def look_at_the_job() -> bytes:
            seen.append(job_row(settings, job_id))
            return image_bytes()

        use(Scripted([None, None, look_at_the_job], asynchronous=True))
        harness.run(job_id)
        # when the engine looks past the deadline, and the call then completes
        assert harness.ended(job_id).action == "discarded"
        # then the job had failed for its owner at once, its cost not yet known
        assert (seen[0].status, seen[0].error_code, seen[0].cost_actual) == (
            "failed", "deadline_exceeded", None)
        # and the completed call is charged (the provider bills it), nothing kept
        [row] = ledger(settings, job_id)
        assert (row.reason, row.amount) == ("deadline_exceeded", D("0.04"))
        job = job_row(settings, job_id)
        assert (job.status, job.outputs, job.cost_actual) == ("failed", [], D("0.04"))

    def test_a_deadline_out_of_range_is_refused(self, submit: Any) -> None:
        from shared.errors import InvalidInput

        for bad in (0, 8 * 24 * 3600):
            with pytest.raises(InvalidInput, match="deadline_seconds"):
                submit(deadline_seconds=bad)


class TestBreaker:
    def test_failures_in_a_row_open_it_and_jobs_then_wait_without_spending_attempts(
            self, settings: Settings, storage: Storage, submit: Any, use: Any,
                    services: Services) -> None:
        # given WaveSpeed failing with 503s
        first, second, third = submit(), submit(), submit()
        provider = use(Scripted([ProviderError("503", code="provider_unavailable",
                                               retryable=True)] * 2))
        run_job(first, services)
        run_job(second, services)
        # when a third job comes, after two failures in a row
        outcome = run_job(third, services)
        assert outcome.action == "throttled" and outcome.run_again
        # then it was not sent: it waits in the queue, with no attempt spent, and says why
        assert provider.submits == 2 and outcome.delay > 20
        job = job_row(settings, third)
        assert (job.status, job.attempts) == ("queued", 0)
        assert events(settings, third)[-1] == "throttled"
        state = services.breaker("wavespeed").state()  # type: ignore[union-attr]
        assert state["state"] == "open" and state["open_for_seconds"] > 20

    def test_a_rate_limit_or_a_bad_request_does_not_count(
            self, services: Services, submit: Any, use: Any) -> None:
        use(Scripted([ProviderError("429", code="provider_rate_limited", retryable=True),
                      ProviderError("400", code="provider_invalid_request")]))
        run_job(submit(), services)
        run_job(submit(), services)
        assert services.breaker("wavespeed").state()["state"] == "closed"  # type: ignore[union-attr]


class TestFallback:
    def test_off_by_default_a_job_waits_for_its_provider(
            self, settings: Settings, storage: Storage, submit: Any, use: Any,
                    services: Services) -> None:
        job_id = submit("stability-inpaint", operation="inpaint", mask=image_bytes((96, 96)))
        open_breaker(services, "stability")
        use(Scripted([image_bytes()]))
        assert run_job(job_id, services).action == "throttled"

    def test_on_it_moves_to_the_cheapest_model_that_takes_the_job_as_it_is(
            self, settings: Settings, storage: Storage, submit: Any, use: Any,
                    services: Services) -> None:
        # given an inpaint job for Stability (0.05), whose breaker is open, and fallback on
        job_id = submit("stability-inpaint", operation="inpaint", mask=image_bytes((96, 96)))
        open_breaker(services, "stability")
        provider = use(Scripted([image_bytes()]))
        services = fallback_on(services)
        # when it runs
        assert run_job(job_id, services).action == "succeeded"
        # then it ran on WaveSpeed's cheaper inpainting model, and says so
        job = job_row(settings, job_id)
        assert (job.model, job.provider, job.fallback_from) == (
            "z-image-turbo-inpaint", "wavespeed", "stability-inpaint")
        assert "fell_back" in events(settings, job_id) and provider.submits == 1
        # and it was charged what it cost there, within what the user accepted
        [row] = ledger(settings, job_id)
        assert (row.model, row.amount) == ("z-image-turbo-inpaint", D("0.02"))
        assert job.cost_estimated == D("0.05")

    def test_on_it_never_changes_the_request_to_fit_another_model(
            self, settings: Settings, storage: Storage, submit: Any, use: Any,
                    services: Services) -> None:
        # given options only Stability takes (grow_mask): no other model takes the job as is
        job_id = submit("stability-inpaint", operation="inpaint", mask=image_bytes((96, 96)),
                        options={"grow_mask": 10})
        open_breaker(services, "stability")
        use(Scripted([image_bytes()]))
        services = fallback_on(services)
        assert run_job(job_id, services).action == "throttled"
        assert job_row(settings, job_id).model == "stability-inpaint"


