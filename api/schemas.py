"""Request and response bodies as the OpenAPI document shows them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobCreate(BaseModel):
    """POST /v1/jobs as JSON. Images are base64 or `data:image/...;base64,` URIs."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="one input image, base64 or a data URI")
    images: list[str] | None = Field(None, description="several input images")
    mask: str | None = Field(None, description="mask image, base64 or a data URI")
    prompt: str | None = None
    negative_prompt: str | None = None
    operation: str = Field("general_edit", min_length=1, max_length=64)
    model: str | None = Field(None, max_length=128,
                              description="model id from GET /v1/models; default per operation")
    options: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class OutputOut(BaseModel):
    url: str
    content_type: str
    width: int
    height: int
    bytes: int
    content_filtered: bool = Field(False, description="Stability blurred it (CONTENT_FILTERED)")


class CostOut(BaseModel):
    estimated: str = Field(description="decimal string, e.g. \"0.040000\"")
    actual: str | None
    currency: str


class ErrorOut(BaseModel):
    code: str
    message: str | None


class JobOut(BaseModel):
    id: str
    status: Status
    operation: str
    model: str
    provider: str
    prompt: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    outputs: list[OutputOut]
    cost: CostOut
    error: ErrorOut | None
    options: dict[str, Any]
    metadata: dict[str, Any]


class JobList(BaseModel):
    data: list[JobOut]
    next_cursor: str | None


class EventOut(BaseModel):
    at: str
    type: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]


class EventList(BaseModel):
    data: list[EventOut]
