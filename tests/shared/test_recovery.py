"""Jobs whose worker vanished are resumed from what the database knows, never guessed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.models import Job, JobEvent
from shared.recovery import recover_expired_leases
from shared.storage import Storage
from shared.submission import EditRequest, submit_job
from shared.tenants import authenticate
from tests.helpers import image_bytes
from tests.shared.test_pipeline import Retries

pytestmark = pytest.mark.timeout(60)


def running_job(settings: Settings, storage: Storage, key: str, **state: Any) -> str:
    """A job some worker claimed (and maybe submitted) before its lease ran out."""
    with session_scope(settings.database_url) as session:
        principal = authenticate(session, key)
        job, _ = submit_job(session, storage, settings, principal,
                            EditRequest(images=[image_bytes()], operation="grayscale"))
        session.execute(update(Job).where(Job.id == job.id).values(
            status="running", attempts=1, lease_expires_at=utcnow() - timedelta(seconds=5),
            **state))
    return job.id


def status_and_events(settings: Settings, job_id: str) -> tuple[str, str | None, list[str]]:
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        events = list(session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)
                                      .order_by(JobEvent.seq)))
    return job.status, job.error_code, events


def test_a_submitted_job_resumes_polling_its_saved_request(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key, provider_request_id="req-1",
                         provider_state="submitted")
    scheduler = Retries()
    found = recover_expired_leases(settings, scheduler)
    assert found.polling == [job_id]
    assert scheduler.polls == [(job_id, 0)] and scheduler.scheduled == []
    status, _, events = status_and_events(settings, job_id)
    assert status == "running" and events[-1] == "poll_resumed"
    # and a second pass finds nothing: the lease was renewed
    assert recover_expired_leases(settings, Retries()).polling == []


def test_a_job_lost_while_submitting_fails_as_outcome_unknown(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key, provider_state="submitting")
    scheduler = Retries()
    found = recover_expired_leases(settings, scheduler)
    assert found.failed == [job_id]
    assert scheduler.polls == [] and scheduler.scheduled == []
    status, code, _ = status_and_events(settings, job_id)
    assert (status, code) == ("failed", "provider_outcome_unknown")


def test_a_job_lost_before_submitting_is_queued_again(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key)
    scheduler = Retries()
    found = recover_expired_leases(settings, scheduler)
    assert found.requeued == [job_id] and scheduler.scheduled == [(job_id, 0)]
    status, _, events = status_and_events(settings, job_id)
    assert status == "queued" and events[-1] == "retry_scheduled"


def test_a_live_lease_is_left_alone(settings: Settings, storage: Storage,
                                    tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key, provider_request_id="req-2")
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            lease_expires_at=utcnow() + timedelta(seconds=60)))
    scheduler = Retries()
    found = recover_expired_leases(settings, scheduler)
    assert job_id not in found.polling + found.requeued + found.failed
    assert scheduler.polls == []
