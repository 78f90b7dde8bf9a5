"""Server-Sent Events: a job, a batch or a comparison as it moves.

Each stream waits on the process's one change listener (shared.changes) and reads the
database only when what it watches changed: an idle stream costs no query. FastAPI's
EventSourceResponse frames the events and sends a `: ping` comment every 15 s while a
stream is quiet. Whether the thing exists (and is the tenant's) is a dependency, so a
wrong id is a 404 problem, not an empty stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import ChangesDep, PrincipalDep, StorageDep, WorkDep
from shared import changes
from shared.batches import records
from shared.changes import Listener
from shared.errors import InvalidInput
from shared.jobs import lookup, progress
from shared.jobs.states import CANCELED, QUEUED, TERMINAL
from shared.selection import comparisons

router = APIRouter(tags=["streams"])

BATCH_ENDED = (records.COMPLETED, CANCELED)  # a batch ends as its jobs do
DESCRIPTION = (
    "Server-Sent Events (text/event-stream). A `: ping` comment every 15 s while nothing "
    "happens; the stream ends after the event at which the {what} has ended.")


def _last_event_id(value: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> int:
    """Where a resumed stream starts: after this event (0: from the first)."""
    if value is None or value == "":
        return 0
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput("Last-Event-ID is the id of an event this stream sent",
                           field="Last-Event-ID")
    return int(value)


After = Annotated[int, Depends(_last_event_id)]


async def _job(job_id: str, work: WorkDep, principal: PrincipalDep) -> tuple[str, str]:
    """The job's id and queue, once it is known to be this tenant's."""
    job = await work(lambda session: lookup.get_job(session, principal.tenant_id, job_id))
    return job.id, job.queue


@router.get("/v1/jobs/{job_id}/stream", response_class=EventSourceResponse,
            description=DESCRIPTION.format(what="job") + (
                " Each event's `id` is the job event's id (send it back as Last-Event-ID to "
                "resume), its `event` the event's type, its data `{\"event\": ..., \"job\": "
                "...}`: the event as GET /v1/jobs/{id}/events lists it, and the job as GET "
                "/v1/jobs/{id} answers now. While the job is queued, an event `queue` "
                "(without an id) says when its queue_position changes."))
async def stream_job(job: Annotated[tuple[str, str], Depends(_job)], work: WorkDep,
                     storage: StorageDep, principal: PrincipalDep, listener: ChangesDep,
                     after: After) -> AsyncIterator[ServerSentEvent]:
    job_id, queue = job
    tenant = principal.tenant_id
    position: int | None = None
    sent = False
    view: dict[str, Any] = {}
    moved_up = changes.queue_key(queue)
    async with listener.watch(changes.job_key(job_id)) as changed:
        try:
            while True:
                changed.clear()
                view, events = await work(partial(progress.job_since, storage=storage,
                                                  tenant_id=tenant, job_id=job_id, after=after))
                for event in events:
                    after, sent = event["id"], True
                    yield ServerSentEvent(id=str(event["id"]), event=event["type"],
                                          data={"event": event, "job": view})
                if view["status"] in TERMINAL:
                    break
                if not events and position is not None and view["queue_position"] != position:
                    yield ServerSentEvent(event="queue", data={"job": view})
                position = view["queue_position"]
                # While it is queued, a job ahead starting moves it up: hear those too.
                if view["status"] == QUEUED:
                    listener.add(moved_up, changed)
                else:
                    listener.discard(moved_up, changed)
                await changed.wait()
        finally:
            listener.discard(moved_up, changed)
    if not sent:  # resumed after its end: the terminal event once more, then the end
        _, events = await work(partial(progress.job_since, storage=storage,
                                       tenant_id=tenant, job_id=job_id, after=0))
        if events:
            yield ServerSentEvent(id=str(events[-1]["id"]), event=events[-1]["type"],
                                  data={"event": events[-1], "job": view})


async def _snapshots(listener: Listener, key: str, read: Callable[[], Awaitable[dict[str, Any]]],
                     ended: Callable[[dict[str, Any]], bool]) -> AsyncIterator[ServerSentEvent]:
    """A batch's or a comparison's view at each change, numbered from 1, to its end."""
    number = 0
    async with listener.watch(key) as changed:
        while True:
            changed.clear()
            view = await read()
            number += 1
            yield ServerSentEvent(id=str(number), event="progress", data=view)
            if ended(view):
                return
            await changed.wait()


async def _batch(batch_id: str, work: WorkDep, principal: PrincipalDep) -> str:
    await work(lambda session: records.get_batch(session, principal.tenant_id, batch_id))
    return batch_id


@router.get("/v1/batches/{batch_id}/stream", response_class=EventSourceResponse,
            description=DESCRIPTION.format(what="batch") + (
                " Each event is `progress`, its data the batch as GET /v1/batches/{id} "
                "answers it (counts, progress, cost so far)."))
async def stream_batch(batch_id: Annotated[str, Depends(_batch)], work: WorkDep,
                       storage: StorageDep, principal: PrincipalDep,
                       listener: ChangesDep) -> AsyncIterator[ServerSentEvent]:
    async def read() -> dict[str, Any]:
        return await work(lambda session: records.batch_view(
            session, records.get_batch(session, principal.tenant_id, batch_id), storage))

    async for event in _snapshots(listener, changes.batch_key(batch_id), read,
                                  lambda view: view["status"] in BATCH_ENDED):
        yield event


async def _comparison(comparison_id: str, work: WorkDep, principal: PrincipalDep) -> str:
    await work(lambda session: comparisons.get(session, principal.tenant_id, comparison_id))
    return comparison_id


@router.get("/v1/comparisons/{comparison_id}/stream", response_class=EventSourceResponse,
            description=DESCRIPTION.format(what="comparison") + (
                " Each event is `progress`, its data the comparison as GET "
                "/v1/comparisons/{id} answers it."))
async def stream_comparison(comparison_id: Annotated[str, Depends(_comparison)],
                            work: WorkDep, storage: StorageDep, principal: PrincipalDep,
                            listener: ChangesDep) -> AsyncIterator[ServerSentEvent]:
    async def read() -> dict[str, Any]:
        def view(session: Any) -> dict[str, Any]:
            found = comparisons.get(session, principal.tenant_id, comparison_id)
            return comparisons.view(found, comparisons.jobs_of(session, found), storage)
        return await work(view)

    async for event in _snapshots(listener, changes.comparison_key(comparison_id), read,
                                  lambda view: view["status"] == "completed"):
        yield event
