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
from shared.jobs.pipeline import Action
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

