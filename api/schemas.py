"""Request and response bodies as the OpenAPI document shows them.

(Over 300 lines: one declaration per body the API sends or takes, and nothing else;
split by route, they would repeat the shared pieces.)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobCreate(BaseModel):
    """POST /v1/jobs as JSON. Each image is base64, a `data:image/...;base64,` URI, an
    `https://` URL the worker fetches, or an upload id (`upl_...`, POST /v1/uploads)."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="one input image: base64, a data URI, an "
                                                "https:// URL or an upload id (upl_...)")
    images: list[str] | None = Field(None, description="several input images, each in any "
                                                       "of the forms of `image`")
    mask: str | None = Field(None, description="mask image, in any of the forms of `image`")
    prompt: str | None = None
    negative_prompt: str | None = None
    operation: str = Field("", max_length=64,
                           description="default: the model's only operation, if it has one; "
                                       "else general_edit")
    model: str | None = Field(None, max_length=128,
                              description="model id from GET /v1/models; default per operation")
    options: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    deadline_seconds: int | None = Field(
        None, description="fail with deadline_exceeded if not finished this long after "
                          "acceptance (1 to 604800)")
    webhook_url: str | None = Field(None, max_length=2048,
                                    description="where to POST this job's events")
    webhook_events: list[str] | None = Field(
        None, description="job.started, job.succeeded, job.failed, job.canceled "
                          "(default: the terminal ones)")
    priority: Literal["normal", "low"] = Field(
        "normal", description="low: bulk work, run on the bulk queue within bulk's share of "
                              "each provider's limits (EDITQ_BULK_SHARE), yielding to "
                              "normal work (as fal's X-Fal-Queue-Priority: low)")
    retention: dict[str, Any] | None = Field(
        None, description="{\"inputs_days\": n, \"outputs_days\": n}: how long this job's "
                          "images are kept after it ends, in place of the tenant's or the "
                          "deployment's (0: as soon as it has ended and its webhooks are "
                          "delivered)")


class OutputOut(BaseModel):
    url: str | None = Field(description="presigned; null once the output was deleted")
    content_type: str
    width: int
    height: int
    bytes: int
    content_filtered: bool = Field(False, description="Stability blurred it (CONTENT_FILTERED)")


class CostOut(BaseModel):
    estimated: str = Field(description="decimal string, e.g. \"0.04\"")
    actual: str | None = Field(description="what the ledger charged; null while not known "
                                           "(unfinished, or a submit whose outcome is unknown)")
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
    deadline_at: str | None = None
    fallback_from: str | None = Field(
        None, description="the model it was submitted with, if it fell back to another")
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    priority: Literal["normal", "low"] = Field(
        "normal", description="low: bulk work (a batch's jobs by default)")
    batch_id: str | None = Field(None, description="the batch that made it")
    comparison_id: str | None = Field(None, description="the comparison that made it")
    retention: dict[str, Any] | None = Field(
        None, description="how long its inputs and outputs are kept after it ends (days; "
                          "null: for good), and when they go")
    inputs_deleted_at: str | None = None
    outputs_deleted_at: str | None = None
    data_deleted_at: str | None = Field(None, description="when all its stored images went; "
                                                          "its record, events and costs stay")
    queue_position: int | None = Field(
        None, description="while queued: how many jobs are ahead of it on its queue (0: next); "
                          "given by GET /v1/jobs/{id} and its stream, not by lists")


class JobList(BaseModel):
    data: list[JobOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: int = Field(description="increasing per deployment: a stream's Last-Event-ID")
    at: str
    type: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]


class EventList(BaseModel):
    data: list[EventOut]


class PricingOut(BaseModel):
    model: str
    provider: str
    rule: str = Field(description="flat, by_param, quality_size or credits")
    units: str
    unit: str = Field(description="image, or credit (Stability)")
    unit_price: str
    taken: str = Field(description="the date the price was taken")
    source: str


class BudgetUseOut(BaseModel):
    scope: str = Field(description="tenant, or model:<id>")
    budget: str
    spent: str
    in_flight: str
    estimate: str
    remaining: str
    ok: bool


class BudgetOut(BaseModel):
    ok: bool
    plan: str
    plan_limit: int | None
    plan_used: int
    period: str
    budgets: list[BudgetUseOut]


class QuoteOut(BaseModel):
    estimated: str
    currency: str
    pricing: PricingOut
    budget: BudgetOut


class ComparisonOutput(BaseModel):
    url: str
    width: int
    height: int
    content_type: str


class ComparisonResult(BaseModel):
    model: str = Field(description="the model compared")
    served_by: str = Field(description="the model that ran it (differs after a fallback)")
    job_id: str
    status: Status
    outputs: list[ComparisonOutput]
    cost: CostOut
    queue_seconds: float | None = Field(description="accepted to started")
    run_seconds: float | None = Field(description="started to finished")
    error: ErrorOut | None


class VoteOut(BaseModel):
    model: str
    at: str


class ComparisonOut(BaseModel):
    id: str
    status: Literal["running", "completed"]
    operation: str
    prompt: str | None
    models: list[str]
    metadata: dict[str, Any]
    created_at: str
    vote: VoteOut | None
    estimated_total: str
    actual_total: str | None = Field(description="what the ledger charged, once all ended")
    results: list[ComparisonResult]


class ComparisonList(BaseModel):
    data: list[ComparisonOut]
    next_cursor: str | None


class _Open(BaseModel):
    """A documented shape that may carry more members than it names."""

    model_config = ConfigDict(extra="allow")


class PriceRangeOut(BaseModel):
    min: str = Field(description="lowest price of one image, USD")
    max: str = Field(description="highest price of one image, USD")
    varies_by: str | None = Field(description="the option(s) the price depends on")
    text: str = Field(description='in words: "$0.10 to $0.20 by rendering speed"')


class ModelOut(_Open):
    id: str
    provider: str = Field(description="wavespeed, stability or local")
    tier: str = Field(description="budget, mid, premium, variable or specialized")
    description: str
    demo: bool = Field(description="the offline demo model: never recommended for a "
                                   "prompt-driven edit")
    operations: list[str]
    prompt_required: list[str] = Field(description="the operations that need a prompt")
    max_resolution: list[int] = Field(description="largest input sides, [width, height]")
    params: dict[str, Any] = Field(description="the options it takes, with their ranges")
    pricing: dict[str, Any] = Field(description="its pricing rule, with the date taken")
    price_usd: str = Field(description="one image at default options")
    price_range: PriceRangeOut
    rank: int | None = Field(None, description="with ?operation=: its place, cheapest first")
    reason: str | None = Field(None, description="with ?operation=: why it is ranked so")


class ExcludedOut(BaseModel):
    id: str
    reason: str


class ModelList(BaseModel):
    data: list[ModelOut]
    excluded: list[ExcludedOut] | None = Field(
        None, description="with ?operation=: models that serve it but not at this size")


class BatchOut(_Open):
    id: str
    kind: Literal["items", "reprocess", "source"]
    status: str = Field(description="expanding, running, completed or canceled")
    priority: Literal["normal", "low"] = Field(
        "low", description="low (the default): bulk work; normal: its jobs run as "
                           "interactive ones")
    total: int = Field(description="jobs the batch makes")
    expanded: int = Field(description="jobs made so far")
    counts: dict[str, int] = Field(description="its jobs by status")
    progress: dict[str, Any] = Field(description="done, total, fraction")
    cost: dict[str, Any] = Field(description="so_far and estimated_total, USD")
    created_at: str
    finished_at: str | None


class UsageOut(BaseModel):
    bulk_share: float = Field(description="the share of each provider's limits bulk work "
                                          "(priority low) may take (EDITQ_BULK_SHARE)")
    bulk_weight: int = Field(description="your weight when tenants share bulk's part")
    providers: dict[str, Any] = Field(
        description="per rate-limited provider: `rate` (calls in the window) and "
                    "`in_flight` (slots), each with its limit, bulk's cap (bulk_limit), "
                    "what is used in all, by interactive and by bulk work, and your part "
                    "of bulk (an admin key: every tenant's)")


class BatchList(BaseModel):
    data: list[BatchOut]
    next_cursor: str | None


class PickOut(BaseModel):
    model: str | None = Field(description="null when none can be picked (the reason says why)")
    reason: str
    figures: dict[str, Any] = Field(description="price, tier, measured run time and success "
                                                "share, votes")


class RecommendationsOut(_Open):
    operation: str
    window_days: int
    min_jobs: int
    picks: dict[str, PickOut] = Field(description="cheapest, best_tier, fastest, "
                                                  "most_reliable, tenant_pick")
    default: PickOut = Field(description="the model a job gets when it names none, and why")
    models: list[dict[str, Any]] = Field(description="every candidate with its figures")
    excluded: list[ExcludedOut]


class SecretOut(BaseModel):
    secret: str = Field(description="the Standard Webhooks signing secret, whsec_...")
    previous_valid_until: str | None = Field(
        description="after a rotation: until when the previous secret still signs")


class AttemptOut(BaseModel):
    at: str
    status_code: int | None = Field(description="the receiver's answer; null if none came")
    error: str | None
    latency_ms: int


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str = Field(description="the same on every attempt: receivers deduplicate "
                                        "on it")
    job_id: str | None
    event_type: str
    url: str
    status: Literal["pending", "delivered", "failed", "gone"]
    attempts: list[AttemptOut]
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


class CostRowOut(_Open):
    jobs: int
    amount: str = Field(description="decimal USD")


class CostReportOut(BaseModel):
    rows: list[CostRowOut] = Field(description="one per group, keyed by the group_by name "
                                               "(model, provider, operation, day, tenant)")
    total: str
    currency: str
    group_by: str
    from_: str = Field(alias="from")
    to: str


class ReadyOut(BaseModel):
    status: Literal["ok"]
    checks: dict[str, str]
    breakers: dict[str, Any]


class DataErased(_Open):
    """What a deletion did: outputs deleted now, inputs released (deleted by
    `inputs_deleted_by`, unless another kept job of the tenant uses them)."""

    jobs: int
    outputs_deleted: int
    inputs_released: int
    inputs_kept_for_other_jobs: int
    inputs_deleted_by: str
    data_deleted_at: str
