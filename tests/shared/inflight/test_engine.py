"""The in-flight engine over a real database and S3, with a scripted provider: what it
writes (only state changes), when it looks (its schedule, or at once when woken), and
what it hands back when it stops. The real path (worker processes, the simulator) is in
tests/integration/test_inflight.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from shared.config import Settings
from shared.db import get_engine, utcnow
from shared.errors import ProviderError
from shared.inflight.engine import HAND_BACK_GRACE_SECONDS, Engine
from shared.models import Job
from shared.services import Services
from shared.storage import Storage
from tests.conftest import make_settings
from tests.helpers import image_bytes, wait_for
from tests.shared.money.test_ledger import events, job_row
from tests.shared.scripted import Harness, Scripted, ScriptedLooker, everywhere

pytestmark = [pytest.mark.timeout(60), pytest.mark.prefer_postgresql]


def settings_with(database_url: str, s3_url: str, bucket: str, **values: Any) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         wavespeed_api_key="unused", stability_api_key="unused", **values)


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    """What `submit` validates with (remote models need a key; nothing is sent)."""
    return settings_with(database_url, s3_url, bucket)


@pytest.fixture
def running(storage: Storage) -> Iterator[Any]:
    """Jobs run as a worker runs them, over `settings` with `provider` installed in their
    services: the harness's engine follows what each attempt submits, first looking when
    the schedule says; stopped afterwards."""
    harnesses: list[Harness] = []

    def start(settings: Settings, provider: Scripted) -> Harness:
        services = Services(settings, storage=storage, providers=everywhere(provider))
        harness = Harness(services, first_look=None)
        harnesses.append(harness)
        return harness

    yield start
    for harness in harnesses:
        harness.stop()


def looker_of(engine: Engine) -> ScriptedLooker:
    looker = wait_for(lambda: next(iter(engine._lookers.values()), None), 10, "a first look")
    assert isinstance(looker, ScriptedLooker)
    return looker


def test_looks_that_find_the_request_running_write_nothing_and_the_finish_records_it(
        database_url: str, s3_url: str, bucket: str, storage: Storage, submit: Any,
        running: Any) -> None:
    # given a job submitted, its request still running at the first four looks
    settings = settings_with(database_url, s3_url, bucket, follow_initial_seconds=0.05,
                             follow_max_seconds=0.1, follow_growth=0.0)
    job_id = submit()
    provider = Scripted([None, None, None, None, image_bytes()], asynchronous=True)
    harness = running(settings, provider)
    engine = harness.engine
    statements: list[float] = []
    database = get_engine(settings.database_url)

    def count(*_: Any) -> None:
        if threading.current_thread() is not threading.main_thread():  # not the test's
            statements.append(time.monotonic())

    event.listen(database, "before_cursor_execute", count)
    try:
        # when it is run and then followed by the engine
        assert harness.run(job_id).action == "submitted"
        wait_for(lambda: job_row(settings, job_id).status == "succeeded", 10, "the job to end")
    finally:
        event.remove(database, "before_cursor_execute", count)
    # then it was looked at five times and nothing was written between the looks
    looks = looker_of(engine).looked_at
    assert len(looks) == 5 and provider.submits == 1
    assert [t for t in statements if looks[0] <= t <= looks[-1]] == []
    assert any(t > looks[-1] for t in statements)  # (the finish's, seen by the same count)
    # and the finish wrote the outcome: outputs stored, charged once
    job = job_row(settings, job_id)
    assert (job.attempts, len(job.outputs)) == (1, 1) and job.cost_actual is not None
    assert storage.exists(job.outputs[0]["key"])


def test_a_look_that_fails_only_the_look_is_made_again_without_a_new_attempt(
        database_url: str, s3_url: str, bucket: str, storage: Storage, submit: Any,
        running: Any) -> None:
    settings = settings_with(database_url, s3_url, bucket, follow_initial_seconds=0.05,
                             follow_max_seconds=0.1)
    job_id = submit()
    flaky = ProviderError("503 on the result GET", code="provider_unavailable", retryable=True)
    provider = Scripted([flaky, image_bytes()], asynchronous=True)
    harness = running(settings, provider)
    harness.run(job_id)
    wait_for(lambda: job_row(settings, job_id).status == "succeeded", 10, "the job to end")
    assert (job_row(settings, job_id).attempts, provider.submits) == (1, 1)


def test_a_wake_looks_at_once_instead_of_at_the_next_scheduled_look(
        database_url: str, s3_url: str, bucket: str, storage: Storage, submit: Any,
        running: Any) -> None:
    # given a job whose first look is 30 s away
    settings = settings_with(database_url, s3_url, bucket, follow_initial_seconds=30,
                             follow_max_seconds=60)
    job_id = submit()
    harness = running(settings, Scripted([image_bytes()], asynchronous=True))
    engine = harness.engine
    harness.run(job_id)
    wait_for(lambda: job_id in engine.held(), 5, "the engine to hold the job")
    # when the provider's webhook wakes it
    woken = time.monotonic()
    engine.wake(job_id)
    # then it is looked at and finished within moments
    wait_for(lambda: job_row(settings, job_id).status == "succeeded", 10, "the job to end")
    assert time.monotonic() - woken < 5


def test_leases_of_followed_jobs_are_renewed_while_the_request_runs(
        database_url: str, s3_url: str, bucket: str, storage: Storage, submit: Any,
        running: Any) -> None:
    # given leases of 0.1 + 0.6 s, renewed every 0.2 s
    settings = settings_with(database_url, s3_url, bucket, follow_initial_seconds=0.05,
                             follow_max_seconds=0.1, follow_lease_margin_seconds=0.6)
    job_id = submit()
    harness = running(settings, Scripted([None] * 10_000, asynchronous=True))
    engine = harness.engine
    harness.run(job_id)
    first = job_row(settings, job_id).lease_expires_at
    assert first is not None
    # then the lease keeps moving ahead of the clock
    wait_for(lambda: (lease := job_row(settings, job_id).lease_expires_at) is not None
             and lease > first, 5, "a renewal", interval=0.1)
    time.sleep(1.0)  # longer than the lease itself: only renewals keep it alive
    lease = job_row(settings, job_id).lease_expires_at
    assert lease is not None and lease > utcnow()
    assert engine.counts["lease_renewals"] >= 3


def test_stop_hands_back_every_job_it_follows_with_its_lease_cut(
        database_url: str, s3_url: str, bucket: str, storage: Storage, submit: Any,
        running: Any) -> None:
    # given two jobs followed, their requests still running
    settings = settings_with(database_url, s3_url, bucket, follow_initial_seconds=0.05,
                             follow_max_seconds=0.1)
    first, second = submit(), submit()
    harness = running(settings, Scripted([None] * 10_000, asynchronous=True))
    engine = harness.engine
    for job_id in (first, second):
        harness.run(job_id)
    wait_for(lambda: len(engine.held()) == 2, 5, "the engine to hold both")
    # when the engine stops
    handed: list[Job] = []
    assert sorted(engine.stop(hand_back=handed.extend)) == sorted([first, second])
    # then both went to the hand-back, their leases end within the grace, and the
    # timelines say so
    assert sorted(job.id for job in handed) == sorted([first, second])
    for job_id in (first, second):
        lease = job_row(settings, job_id).lease_expires_at
        assert lease is not None
        assert (lease - utcnow()).total_seconds() <= HAND_BACK_GRACE_SECONDS
        assert events(settings, job_id)[-1] == "handed_back"
