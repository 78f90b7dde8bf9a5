"""The job state machine: the table `shared.jobs.TRANSITIONS`, and each move made on a
real database only from the statuses the table allows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from shared.config import Settings
from shared.db import session_scope
from shared.jobs import states
from shared.jobs.outcomes import Action
from shared.jobs.states import QUEUED, STATUSES, TERMINAL, TRANSITIONS
from shared.models import Job

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]


def test_every_status_is_reachable_from_queued_and_terminal_ones_are_final() -> None:
    reached, frontier = {QUEUED}, [QUEUED]
    while frontier:
        status = frontier.pop()
        for sources, target in TRANSITIONS.values():
            if status in sources and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(STATUSES)
    assert all(not (sources & TERMINAL) for sources, _ in TRANSITIONS.values())


def test_outcomes_are_an_enum_read_as_text() -> None:
    assert Action.SUCCEEDED == "succeeded" and f"{Action.RETRY}" == "retry"


MOVES: dict[str, Callable[..., Any]] = {
    "started": lambda s, j: states.claim(s, j, 60),
    "succeeded": lambda s, j: states.succeed(s, j, []),
    "failed": lambda s, j: states.fail(s, j, "boom", "it broke"),
    "retry_scheduled": lambda s, j: states.requeue(s, j, "again", 1.0),
    "throttled": lambda s, j: states.unclaim(s, j, "limit", 1.0),
    "canceled": lambda s, j: states.transition(s, j, "canceled"),
}


@pytest.mark.parametrize("event", sorted(TRANSITIONS))
@pytest.mark.parametrize("status", STATUSES)
def test_each_move_happens_exactly_from_the_statuses_the_table_allows(
        settings: Settings, submit: Callable[..., str], event: str, status: str) -> None:
    # given a job in `status`
    job_id = submit(model="local-pillow", operation="grayscale", prompt=None)
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))
        session.commit()
    # when the event's move is tried
    with session_scope(settings.database_url) as session:
        moved = bool(MOVES[event](session, job_id))
        session.commit()
        now = session.scalar(select(Job.status).where(Job.id == job_id))
    # then it moved if and only if the table lets the event leave that status
    sources, target = TRANSITIONS[event]
    assert moved == (status in sources)
    assert now == (target if moved else status)



# Each conditional UPDATE below says whether it wrote from its own RETURNING, never from a
# driver's row count (which SQLAlchemy 2.1 with psycopg got wrong for an upsert): each is
# shown answering True when its condition holds and False when it does not, on each database.
WRITES: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    # name: (the status in which it writes, the call)
    "mark_submitting": ("running", lambda s, j: states.mark_submitting(s, j)),
    "record_submitted": ("running", lambda s, j: states.record_submitted(s, j, "req-1", 60)),
    "switch_model": ("running", lambda s, j: states.switch_model(
        s, j, "local-pillow", "local", {}, "fallback")),
    "record_submitted_after_cancel": ("canceled", lambda s, j:
                                      states.record_submitted_after_cancel(s, j, "req-2")),
    "extend_lease": ("running", lambda s, j: states.extend_lease(s, j, 60)),
    "renew_leases": ("running", lambda s, j: states.renew_leases(s, [j, "no-such-job"], 60)),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_conditional_write_answers_whether_it_wrote(
        settings: Settings, submit: Callable[..., str], name: str) -> None:
    status, call = WRITES[name]
    for where, expected in ((status, True), ("succeeded", False)):
        # given a job in the status the write needs, then one in a status it must leave alone
        job_id = submit(model="local-pillow", operation="grayscale", prompt=None)
        with session_scope(settings.database_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(status=where))
        # when the write is tried
        with session_scope(settings.database_url) as session:
            before = _row(session, job_id)
            answer = call(session, job_id)
        # then it answers what it did (a count, for the one that writes many), and a
        # write it refused changed nothing
        wrote = 1 if name == "renew_leases" else True
        assert answer == (wrote if expected else not wrote), (name, where, answer)
        with session_scope(settings.database_url) as session:
            assert (_row(session, job_id) != before) == expected


def _row(session: Any, job_id: str) -> tuple[Any, ...]:
    job = session.scalars(select(Job).where(Job.id == job_id)
                          .execution_options(populate_existing=True)).one()
    return (job.updated_at, job.lease_expires_at, job.provider_state, job.model)
