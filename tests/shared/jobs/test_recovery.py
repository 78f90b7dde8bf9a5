"""Jobs whose worker vanished are resumed from what the database knows, never guessed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.jobs.recovery import recover
from shared.jobs.submission import EditRequest, submit_job
from shared.models import Job, JobEvent
from shared.services import Services
from shared.storage import Storage
from shared.tenants import authenticate
from tests.conftest import own_database
from tests.helpers import image_bytes, output_key_of

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]


@pytest.fixture(scope="module")
def database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this module's own: `recover` acts on every stale job it can see, and
    other modules leave jobs queued or running in the session's database."""
    folder: Path = tmp_path_factory.mktemp("recovery-db")
    with own_database(database_url, folder) as url:
        yield url


def running_job(settings: Settings, storage: Storage, key: str, **state: Any) -> str:
    """A job some worker claimed (and maybe submitted) before its lease ran out."""
    with session_scope(settings.database_url) as session:
        principal = authenticate(session, key)
        job, _ = submit_job(session, Services(settings, storage=storage), principal,
                            EditRequest(images=[image_bytes()], operation="grayscale"))
        session.execute(update(Job).where(Job.id == job.id).values(
            **{"status": "running", "attempts": 1,
               "lease_expires_at": utcnow() - timedelta(seconds=5), **state}))
    return job.id


def status_and_events(settings: Settings, job_id: str) -> tuple[str, str | None, list[str]]:
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        events = list(session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id)
                                      .order_by(JobEvent.seq)))
    return job.status, job.error_code, events


def test_a_submitted_job_is_followed_again_on_its_saved_request(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key, provider_request_id="req-1",
                         provider_state="submitted")
    found = recover(settings)
    # then the caller is told to follow it again, on its queue, and to run nothing
    assert found.following == [job_id] and found.queues[job_id] == "interactive"
    assert found.resent == [] and found.requeued == []
    status, _, events = status_and_events(settings, job_id)
    assert status == "running" and events[-1] == "follow_resumed"
    # and a second pass finds nothing: the lease was renewed
    assert recover(settings).following == []


def test_a_job_lost_while_submitting_fails_as_outcome_unknown(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key, provider_state="submitting")
    found = recover(settings)
    assert found.failed == [job_id]
    assert found.following == [] and found.requeued == [] and found.resent == []
    status, code, _ = status_and_events(settings, job_id)
    assert (status, code) == ("failed", "provider_outcome_unknown")


def test_a_job_lost_before_submitting_is_queued_again(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key)
    found = recover(settings)
    assert found.requeued == [job_id] and found.queues[job_id] == "interactive"
    status, _, events = status_and_events(settings, job_id)
    assert status == "queued" and events[-1] == "retry_scheduled"


def test_a_live_lease_is_left_alone(settings: Settings, storage: Storage,
                                    tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key, provider_request_id="req-2")
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            lease_expires_at=utcnow() + timedelta(seconds=60)))
    found = recover(settings)
    assert job_id not in found.following + found.requeued + found.failed


def queued_job(settings: Settings, storage: Storage, key: str, due_ago: timedelta) -> str:
    """A queued job whose run message was due `due_ago` ago and never taken."""
    with session_scope(settings.database_url) as session:
        principal = authenticate(session, key)
        job, _ = submit_job(session, Services(settings, storage=storage), principal,
                            EditRequest(images=[image_bytes()], operation="grayscale"))
        session.execute(update(Job).where(Job.id == job.id).values(
            lease_expires_at=utcnow() - due_ago))
    return job.id


def test_a_queued_job_whose_message_was_lost_is_sent_again_once(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    # given a queued job due two days ago (its message was lost with the broker's data)
    reaper = settings.model_copy(update={"queued_stale_seconds": 3600})
    job_id = queued_job(settings, storage, tenant_key, timedelta(days=2))
    # when the reaper runs
    found = recover(reaper)
    # then its run message is sent again, and the timeline says why
    assert job_id in found.resent and found.queues[job_id] == "interactive"
    status, _, events = status_and_events(settings, job_id)
    assert status == "queued" and events[-1] == "message_resent"
    # and the next pass leaves it alone: the message is due again only after the grace
    assert job_id not in recover(reaper).resent


def test_a_queued_job_merely_waiting_its_turn_is_left_alone(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    reaper = settings.model_copy(update={"queued_stale_seconds": 3600})
    job_id = queued_job(settings, storage, tenant_key, timedelta(seconds=30))
    assert job_id not in recover(reaper).resent


def test_a_canceled_job_whose_follower_died_is_followed_again(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    # given a canceled job whose call is out, and whose follower's worker died
    job_id = running_job(settings, storage, tenant_key, provider_request_id="req-s",
                         provider_state="submitted", status="canceled")
    found = recover(settings)
    # then the call is followed again, so that its cost can settle
    assert job_id in found.following


def test_a_canceled_job_lost_while_submitting_settles_with_its_cost_unknown(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    job_id = running_job(settings, storage, tenant_key, provider_state="submitting",
                         status="canceled")
    found = recover(settings)
    assert job_id in found.settled
    with session_scope(settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
    assert (job.status, job.provider_state, job.cost_actual) == ("canceled", "settled", None)


def test_two_reapers_never_act_on_the_same_job(settings: Settings, storage: Storage,
                                               tenant_key: str) -> None:
    import threading

    job_id = running_job(settings, storage, tenant_key, provider_request_id="req-r",
                         provider_state="submitted")
    found: list[list[str]] = []
    start = threading.Barrier(2)

    def reap() -> None:
        start.wait()
        found.append(recover(settings).following)

    threads = [threading.Thread(target=reap) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(following.count(job_id) for following in found) == 1


def test_an_output_written_by_a_worker_that_died_mid_call_is_not_left_behind(
        settings: Settings, storage: Storage, tenant_key: str) -> None:
    # given a job whose worker stored an output and died before recording it
    job_id = running_job(settings, storage, tenant_key, provider_state="submitting")
    storage.put(output_key_of(settings.database_url, job_id), image_bytes(), "image/png")
    # when the reaper fails it (the call's outcome is unknown)
    found = recover(settings, storage)
    # then the unrecorded output is gone with it
    assert job_id in found.failed
    assert not storage.exists(output_key_of(settings.database_url, job_id))
