"""/v1/uploads: a presigned request that sends an image straight to editq's storage, so
that the API never holds its bytes; a job then names it by id (`upl_...`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, ServicesDep, WorkDep
from shared.inputs import uploads

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


class UploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(max_length=64, description=", ".join(sorted(uploads.CONTENT_TYPES)))
    size: int = Field(ge=1, description="the image's size in bytes, exactly")


class UploadOut(BaseModel):
    """Send the image with `method` to `url`, with `headers`, before `url_expires_at`;
    then name `id` in any image field until `expires_at`."""

    id: str
    method: str
    url: str
    headers: dict[str, str]
    content_type: str
    size: int
    url_expires_at: str
    expires_at: str


@router.post("", status_code=201, response_model=UploadOut)
def create_upload(body: UploadCreate, services: ServicesDep, work: WorkDep,
                  principal: PrincipalDep) -> dict[str, Any]:
    return work.now(lambda session: uploads.create(
        session, services.settings, services.storage, principal.tenant_id,
        body.content_type, body.size))
