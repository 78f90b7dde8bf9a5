"""An attempt: claim, edit, store, finish, on a real database and S3 server.

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
from shared.jobs.submission import EditRequest, submit_job
from shared.models import Job, JobEvent
from shared.services import Services
from shared.storage import Storage
from shared.tenants import authenticate
from tests.helpers import image_bytes, output_key_of
from tests.shared.scripted import Harness, Scripted

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


def load(settings: Settings, job_id: str) -> tuple[Job, list[str]]:
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        events = list(session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)
                                      .order_by(JobEvent.seq)))
    return job, events


def test_success_stores_outputs_under_the_job_and_records_cost(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services,
        harness: Harness) -> None:
    # given a provider that returns one PNG
    output = image_bytes((30, 20))
    use(scripted([output]))
    # when the job runs
    outcome = harness.run(queued_job)
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
                services: Services,
        harness: Harness) -> None:
    provider = use(scripted([image_bytes(), image_bytes((9, 9))]))
    assert harness.run(queued_job).action == "succeeded"
    # when the same message is delivered again
    again = harness.run(queued_job)
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
                services: Services,
        harness: Harness) -> None:
    # given a provider that is unavailable three times (the default maximum attempts)
    settings = Settings(**{**settings.model_dump(), "job_max_attempts": 3})
    busy = ProviderError("provider busy", code="provider_unavailable", retryable=True,
                         retry_after=2.0)
    use(scripted([busy, busy, busy]))
    # when the job runs and each scheduled retry runs
    outcomes = [harness.run(queued_job) for _ in range(3)]
    # then two retries were scheduled, honouring Retry-After, and the third attempt failed
    assert [o.action for o in outcomes] == ["retry", "retry", "failed"]
    assert harness.runs == [queued_job, queued_job]
    assert all(o.delay >= 2.0 for o in outcomes[:2])
    job, events = load(settings, queued_job)
    assert (job.status, job.error_code, job.attempts) == ("failed", "provider_unavailable", 3)
    assert events.count("retry_scheduled") == 2


def test_terminal_failure_fails_at_once_without_retry(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services,
        harness: Harness) -> None:
    use(scripted([ProviderError("nsfw", code="content_moderated")]))
    assert harness.run(queued_job).action == "failed"
    job, _ = load(settings, queued_job)
    assert (job.status, job.error_code, job.error_message) == ("failed", "content_moderated",
                                                                "nsfw")
    # and its cost is known: nothing, since moderated calls are not billed
    assert harness.runs == [] and job.cost_actual == Decimal(0)


def test_output_that_is_not_an_image_fails_the_job_and_stores_nothing(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
                services: Services,
        harness: Harness) -> None:
    use(scripted([b"<html>gateway error</html>"]))
    harness.run(queued_job)
    job, _ = load(settings, queued_job)
    assert job.status == "failed" and job.error_code == "provider_bad_output"
    assert not storage.exists(output_key_of(settings.database_url, queued_job))


def test_cancel_while_running_discards_the_result(
        settings: Settings, storage: Storage, queued_job: str, tenant_key: str,
        use: Any, services: Services,
        harness: Harness) -> None:
    # given a job that its owner cancels while the provider is working on it
    with session_scope(settings.database_url) as session:
        tenant_id = authenticate(session, tenant_key).tenant_id

    def cancel() -> None:
        with session_scope(settings.database_url) as session:
            lookup.cancel(session, tenant_id, queued_job)

    use(scripted([image_bytes()], before_return=cancel))
    # when the provider returns
    outcome = harness.run(queued_job)
    # then the job stays canceled, without outputs, charged for the call that completed
    assert outcome.action == "discarded"
    job, events = load(settings, queued_job)
    assert (job.status, job.outputs, job.cost_actual) == ("canceled", [], Decimal("0.04"))
    assert events[-2:] == ["canceled", "call_settled"]


def test_storage_outage_during_a_run_is_retried(
        settings: Settings, storage: Storage, queued_job: str, use: Any,
        monkeypatch: pytest.MonkeyPatch, services: Services,
        harness: Harness) -> None:
    # given S3 failing when the output is written
    from shared.errors import StorageUnavailable

    use(scripted([image_bytes()]))

    def broken_put(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("S3 put failed: EndpointConnectionError")

    monkeypatch.setattr(storage, "put", broken_put)
    # when the job runs
    outcome = harness.run(queued_job)
    # then it goes back to the queue for another attempt instead of failing
    assert outcome.action == "retry"
    job, events = load(settings, queued_job)
    assert job.status == "queued" and events[-1] == "retry_scheduled"
    assert harness.runs == [queued_job]
