"""shared.changes: a commit that moves a job wakes the listeners watching it, over a real
Redis, and only after the commit; a Redis that is away costs a commit nothing."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from shared import changes
from shared.db import session_scope
from shared.jobs import states
from shared.models import Job
from shared.tenants import get_or_create_tenant

pytestmark = pytest.mark.timeout(60)


def queued_job(database_url: str) -> str:
    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, f"changes-{uuid.uuid4().hex[:8]}")
        job = Job(id=states.new_job_id(), tenant_id=tenant.id, status=states.QUEUED,
                  operation="grayscale", model="local-pillow", provider="local",
                  queue=f"q-{uuid.uuid4().hex[:8]}")
        session.add(job)
        return job.id


@pytest.mark.every_database
def test_a_committed_move_wakes_its_watchers_and_no_one_else(database_url: str,
                                                              redis_base: str) -> None:
    # given a listener on a real Redis, watching one job, and another job nobody watches
    url = f"{redis_base}/4"  # (pub/sub keeps no data: a database number of its own suffices)
    before = changes.PUBLISHERS.get(database_url)
    changes.register(database_url, changes.Publisher(url))
    watched, other = queued_job(database_url), queued_job(database_url)

    async def scenario() -> tuple[bool, bool, bool]:
        listener = changes.Listener(url)
        listener.start()
        try:
            await asyncio.wait_for(listener.subscribed.wait(), 10)
            async with listener.watch(changes.job_key(watched)) as changed:
                changed.clear()  # (subscribing wakes every watcher once)
                # when the other job moves, the watcher hears nothing
                await asyncio.to_thread(claim, database_url, other)
                quiet = not await wait(changed, 0.5)
                # when the watched job moves, but before its transaction commits: nothing
                unit = session_scope(database_url)
                session = unit.__enter__()
                assert states.claim(session, watched, 60) is not None
                before_commit = not await wait(changed, 0.5)
                # and once it commits, the watcher is woken
                unit.__exit__(None, None, None)
                after_commit = await wait(changed, 5)
                return quiet, before_commit, after_commit
        finally:
            await listener.stop()

    try:
        quiet, before_commit, after_commit = asyncio.run(scenario())
    finally:
        if before is not None:
            changes.register(database_url, before)
    assert quiet and before_commit and after_commit


def claim(database_url: str, job_id: str) -> None:
    with session_scope(database_url) as session:
        assert states.claim(session, job_id, 60) is not None


async def wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except TimeoutError:
        return False


def test_a_redis_that_is_away_costs_a_commit_nothing(caplog: pytest.LogCaptureFixture) -> None:
    # given a publisher whose Redis refuses connections
    publisher = changes.Publisher("redis://127.0.0.1:1/0", pause=60)
    caplog.set_level(logging.INFO, "shared.changes")
    # when commits publish one after another
    started = time.monotonic()
    for n in range(100):
        publisher.publish([changes.job_key(f"job_{n}")])
    # then they go on at once, and the outage is said once, at INFO
    assert time.monotonic() - started < 1
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "changes not published while Redis is unavailable (ConnectionError)")]


class Recorder(changes.Publisher):
    """Keeps what is published, with the job's status another session then reads."""

    def __init__(self, database_url: str, job_id: str) -> None:
        self.database_url, self.job_id = database_url, job_id
        self.heard: list[tuple[str, str]] = []

    def publish(self, keys: Iterable[str]) -> None:
        # (read from another thread, as a listener would: on SQLite a thread has one
        # connection, the committing session's)
        with ThreadPoolExecutor(1) as reader:
            status = reader.submit(self.status).result()
        self.heard.append((" ".join(sorted(keys)), status))

    def status(self) -> str:
        with session_scope(self.database_url) as session:
            return str(session.scalar(select(Job.status).where(Job.id == self.job_id)))


@pytest.mark.every_database
def test_a_savepoint_inside_a_move_neither_publishes_it_early_nor_forgets_it(
        database_url: str) -> None:
    # given a move whose transaction then releases one savepoint and rolls another back
    # (as the webhook outbox writes its row in one)
    job_id = queued_job(database_url)
    before = changes.PUBLISHERS.get(database_url)
    recorder = Recorder(database_url, job_id)
    changes.register(database_url, recorder)
    try:
        with session_scope(database_url) as session:
            assert states.claim(session, job_id, 60) is not None
            with session.begin_nested():
                session.flush()
            heard_at_release = list(recorder.heard)
            try:
                with session.begin_nested():
                    raise RuntimeError("undone")
            except RuntimeError:
                pass
            # when the transaction commits
        # then nothing was heard before, and once after: with the move already visible
        assert heard_at_release == []
        assert len(recorder.heard) == 1
        keys, status = recorder.heard[0]
        assert changes.job_key(job_id) in keys.split() and status == states.RUNNING
    finally:
        if before is not None:
            changes.register(database_url, before)
        else:
            changes.PUBLISHERS.pop(database_url, None)
