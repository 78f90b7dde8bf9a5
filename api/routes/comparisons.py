"""/v1/comparisons: one input on 2 to 6 models, side by side, and the user's vote."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.bodies import EDIT_REQUEST_BODY, read_comparison_request
from api.deps import (
    CeleryDep,
    CursorQuery,
    IdempotencyKeyDep,
    PrincipalDep,
    ServicesDep,
    StorageDep,
    WorkDep,
)
from api.routes.jobs import enqueue_job
from api.schemas import ComparisonList, ComparisonOut, JobCreate
from shared.selection import comparisons

router = APIRouter(prefix="/v1/comparisons", tags=["comparisons"])


def _comparison_body() -> dict[str, Any]:
    schema = JobCreate.model_json_schema()
    props = {k: v for k, v in schema["properties"].items() if k != "model"}
    props["models"] = {"type": "array", "items": {"type": "string"}, "minItems": 2,
                       "maxItems": 6, "description": "2 to 6 model ids from GET /v1/models"}
    body: Any = EDIT_REQUEST_BODY
    multipart = body["requestBody"]["content"]["multipart/form-data"]
    multipart_props = {k: v for k, v in multipart["schema"]["properties"].items()
                       if k != "model"}
    multipart_props["models"] = {"type": "string", "description": "comma-separated model ids"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {**schema, "properties": props,
                                        "required": ["models"]}},
        "multipart/form-data": {"schema": {"type": "object", "properties": multipart_props,
                                           "required": ["models"]}}}}}


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=128, description="the model whose output you preferred")


@router.post("", status_code=202, response_model=ComparisonOut,
             openapi_extra=_comparison_body())
async def create_comparison(request: Request, response: Response, services: ServicesDep,
                            work: WorkDep, celery: CeleryDep, principal: PrincipalDep,
                            idempotency_key: IdempotencyKeyDep,
                            ) -> dict[str, Any]:
    """Every model's checks run before anything is stored; the total is admitted at once."""
    req, models = await read_comparison_request(request, services.settings)

    def create(session: Session) -> tuple[dict[str, Any], list[tuple[str, str]], bool]:
        found, jobs, created = comparisons.create(session, services, principal, req, models,
                                                  idempotency_key)
        session.commit()
        return (comparisons.view(found, jobs, services.storage),
                [(j.id, j.queue) for j in jobs], created)

    view, job_ids, created = await work(create)
    if created:
        for job_id, queue in job_ids:
            await run_in_threadpool(enqueue_job, celery, work, job_id, queue)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/comparisons/{view['id']}"
    return view


@router.get("", response_model=ComparisonList)
def list_comparisons(work: WorkDep, storage: StorageDep, principal: PrincipalDep,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20,
                     cursor: CursorQuery = None) -> dict[str, Any]:
    def page(session: Session) -> dict[str, Any]:
        rows, next_cursor = comparisons.list_recent(session, principal.tenant_id,
                                                    limit=limit, cursor=cursor)
        data = [comparisons.view(c, comparisons.jobs_of(session, c), storage) for c in rows]
        return {"data": data, "next_cursor": next_cursor}

    return work.now(page)


@router.get("/{comparison_id}", response_model=ComparisonOut)
def get_comparison(comparison_id: str, work: WorkDep, storage: StorageDep,
                   principal: PrincipalDep) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any]:
        found = comparisons.get(session, principal.tenant_id, comparison_id)
        return comparisons.view(found, comparisons.jobs_of(session, found), storage)

    return work.now(read)


@router.post("/{comparison_id}/vote", response_model=ComparisonOut)
def vote(comparison_id: str, body: VoteIn, work: WorkDep, storage: StorageDep,
         principal: PrincipalDep) -> dict[str, Any]:
    """One vote per comparison: voting again changes it."""
    def cast(session: Session) -> dict[str, Any]:
        found = comparisons.vote(session, principal.tenant_id, comparison_id, body.model)
        session.commit()
        return comparisons.view(found, comparisons.jobs_of(session, found), storage)

    return work.now(cast)
