"""Running a job: claim, edit, store, finish, on a real database and S3 server.

Providers here are stand-ins registered for one test (the real provider path
is covered end to end in tests/integration).
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from shared.config import Settings
from shared.db import session_scope
from shared.errors import ProviderError
from shared.jobs import lookup, states
from shared.jobs.pipeline import backoff_seconds, run_job
from shared.jobs.submission import EditRequest, submit_job
from shared.models import Job, JobEvent
from shared.services import Services
from shared.storage import Storage
from shared.tenants import authenticate
from tests.helpers import image_bytes, output_key_of
from tests.shared.scripted import Scripted

pytestmark = pytest.mark.timeout(60)


def scripted(script: list[Exception | bytes], **fields: Any) -> Scripted:
    """The shared scripted provider, answering as the local model would (with a cost)."""
    return Scripted(list(script), name="local", cost=Decimal("0.04"), **fields)


@pytest.fixture
def queued_job(settings: Settings, storage: Storage, tenant_key: str, services: Services) -> str:
    with session_scope(settings.database_url) as session:
        principal = authenticate(session, tenant_key)
        job, _ = submit_job(session, services, principal,
                            EditRequest(images=[image_bytes()], operation="grayscale"))
    return job.id


class Retries:
    """A scheduler that records the next steps instead of enqueueing them."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[str, float]] = []
        self.polls: list[tuple[str, float]] = []

    def run(self, job_id: str, delay: float) -> None:
        self.scheduled.append((job_id, delay))

    def follow(self, job: Any, delay: float) -> None:
        self.polls.append((job.id, delay))


def load(settings: Settings, job_id: str) -> tuple[Job, list[str]]:
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        events = list(session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)
                                      .order_by(JobEvent.seq)))
    return job, events


def test_success_stores_outputs_under_the_job_and_records_cost(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services) -> None:
    # given a provider that returns one PNG
    output = image_bytes((30, 20))
    use(scripted([output]))
    # when the job runs
    outcome = run_job(queued_job, services, Retries())
    # then it succeeded, with the output in S3 under the job's id and the provider's cost
    assert outcome.action == "succeeded"
    job, events = load(settings, queued_job)
    assert job.status == "succeeded" and job.attempts == 1
    assert job.cost_actual == Decimal("0.04")
    [stored] = job.outputs
    assert stored["key"] == output_key_of(settings.database_url, queued_job)
    assert (stored["width"], stored["height"], stored["bytes"]) == (30, 20, len(output))
    assert storage.get(stored["key"]) == output
    assert events == ["created", "started", "succeeded"]


def test_a_second_run_of_a_finished_job_changes_nothing(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services) -> None:
    provider = use(scripted([image_bytes(), image_bytes((9, 9))]))
    assert run_job(queued_job, services, Retries()).action == "succeeded"
    # when the same message is delivered again
    again = run_job(queued_job, services, Retries())
    # then it is skipped without calling the provider
    assert again.action == "skipped"
    assert provider.submits == 1
    job, events = load(settings, queued_job)
    assert events.count("started") == 1 and job.attempts == 1


@pytest.mark.every_database
def test_concurrent_claims_have_exactly_one_winner(settings: Settings,
                                                   queued_job: str) -> None:
    # given eight workers racing for the same queued job
    barrier = threading.Barrier(8)
    winners: list[bool] = []

    def race() -> None:
        barrier.wait()
        with session_scope(settings.database_url) as session:
            winners.append(states.claim(session, queued_job, 60) is not None)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # then one claimed it and seven saw it taken
    assert sorted(winners) == [False] * 7 + [True]
    job, events = load(settings, queued_job)
    assert job.status == "running" and job.attempts == 1
    assert events.count("started") == 1


def test_retryable_failure_requeues_with_backoff_then_fails_after_max_attempts(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services) -> None:
    # given a provider that is unavailable three times (the default maximum attempts)
    settings = Settings(**{**settings.model_dump(), "job_max_attempts": 3})
    busy = ProviderError("provider busy", code="provider_unavailable", retryable=True,
                         retry_after=2.0)
    use(scripted([busy, busy, busy]))
    retries = Retries()
    # when the job runs and each scheduled retry runs
    actions = [run_job(queued_job, services, retries).action for _ in range(3)]
    # then two retries were scheduled, honouring Retry-After, and the third attempt failed
    assert actions == ["retry", "retry", "failed"]
    assert [job_id for job_id, _ in retries.scheduled] == [queued_job, queued_job]
    assert all(delay >= 2.0 for _, delay in retries.scheduled)
    job, events = load(settings, queued_job)
    assert (job.status, job.error_code, job.attempts) == ("failed", "provider_unavailable", 3)
    assert events.count("retry_scheduled") == 2


def test_terminal_failure_fails_at_once_without_retry(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services) -> None:
    use(scripted([ProviderError("nsfw", code="content_moderated")]))
    retries = Retries()
    assert run_job(queued_job, services, retries).action == "failed"
    job, _ = load(settings, queued_job)
    assert (job.status, job.error_code, job.error_message) == ("failed", "content_moderated",
                                                                "nsfw")
    # and its cost is known: nothing, since moderated calls are not billed
    assert retries.scheduled == [] and job.cost_actual == Decimal(0)


def test_output_that_is_not_an_image_fails_the_job_and_stores_nothing(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services) -> None:
    use(scripted([b"<html>gateway error</html>"]))
    run_job(queued_job, services, Retries())
    job, _ = load(settings, queued_job)
    assert job.status == "failed" and job.error_code == "provider_bad_output"
    assert not storage.exists(output_key_of(settings.database_url, queued_job))


def test_cancel_while_running_discards_the_result(
        settings: Settings, storage: Storage, queued_job: str, tenant_key: str,
        use: Any, services: Services) -> None:
    # given a job that its owner cancels while the provider is working on it
    with session_scope(settings.database_url) as session:
        tenant_id = authenticate(session, tenant_key).tenant_id

    def cancel() -> None:
        with session_scope(settings.database_url) as session:
            lookup.cancel(session, tenant_id, queued_job)

    use(scripted([image_bytes()], before_return=cancel))
    # when the provider returns
    outcome = run_job(queued_job, services, Retries())
    # then the job stays canceled, without outputs, charged for the call that completed
    assert outcome.action == "discarded"
    job, events = load(settings, queued_job)
    assert (job.status, job.outputs, job.cost_actual) == ("canceled", [], Decimal("0.04"))
    assert events[-2:] == ["canceled", "call_settled"]


def test_storage_outage_during_a_run_is_retried(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
        monkeypatch: pytest.MonkeyPatch, services: Services) -> None:
    # given S3 failing when the output is written
    from shared.errors import StorageUnavailable

    use(scripted([image_bytes()]))

    def broken_put(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("S3 put failed: EndpointConnectionError")

    monkeypatch.setattr(storage, "put", broken_put)
    retries = Retries()
    # when the job runs
    outcome = run_job(queued_job, services, retries)
    # then it goes back to the queue for another attempt instead of failing
    assert outcome.action == "retry"
    job, events = load(settings, queued_job)
    assert job.status == "queued" and events[-1] == "retry_scheduled"
    assert len(retries.scheduled) == 1


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    delays = [backoff_seconds(attempt, None, base=1, cap=8) for attempt in range(1, 10)
              for _ in range(50)]
    assert all(0 <= d <= 8 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # full jitter, not a fixed ladder
    assert backoff_seconds(1, 30.0, base=1, cap=8) == 30.0
