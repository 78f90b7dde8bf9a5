# Generated from editq's OpenAPI document by datamodel-code-generator: do not edit.
# Regenerate with `.venv/bin/python clients/python/generate.py` (from the repository's
# root); tests/clients/test_models_drift.py fails while this file is stale.
# ruff: noqa: E501

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AttemptOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    at: str = Field(..., title="At")
    status_code: int | None = Field(..., title="Status Code")
    """
    the receiver's answer; null if none came
    """
    error: str | None = Field(..., title="Error")
    latency_ms: int = Field(..., title="Latency Ms")


class BatchOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: str = Field(..., title="Id")
    kind: Literal["items", "reprocess", "source"] = Field(..., title="Kind")
    status: str = Field(..., title="Status")
    """
    expanding, running, completed or canceled
    """
    priority: Literal["normal", "low"] | None = Field("low", title="Priority")
    """
    low (the default): bulk work; normal: its jobs run as interactive ones
    """
    total: int = Field(..., title="Total")
    """
    jobs the batch makes
    """
    expanded: int = Field(..., title="Expanded")
    """
    jobs made so far
    """
    counts: dict[str, int] = Field(..., title="Counts")
    """
    its jobs by status
    """
    progress: dict[str, Any] = Field(..., title="Progress")
    """
    done, total, fraction
    """
    cost: dict[str, Any] = Field(..., title="Cost")
    """
    so_far and estimated_total, USD
    """
    created_at: str = Field(..., title="Created At")
    finished_at: str | None = Field(..., title="Finished At")


class BudgetUseOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    scope: str = Field(..., title="Scope")
    """
    tenant, or model:<id>
    """
    budget: str = Field(..., title="Budget")
    spent: str = Field(..., title="Spent")
    in_flight: str = Field(..., title="In Flight")
    estimate: str = Field(..., title="Estimate")
    remaining: str = Field(..., title="Remaining")
    ok: bool = Field(..., title="Ok")


class ComparisonOutput(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    url: str = Field(..., title="Url")
    width: int = Field(..., title="Width")
    height: int = Field(..., title="Height")
    content_type: str = Field(..., title="Content Type")


class CostOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    estimated: str = Field(..., title="Estimated")
    """
    decimal string, e.g. "0.04"
    """
    actual: str | None = Field(..., title="Actual")
    """
    what the ledger charged; null while not known (unfinished, or a submit whose outcome is unknown)
    """
    currency: str = Field(..., title="Currency")


class CostRowOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    jobs: int = Field(..., title="Jobs")
    amount: str = Field(..., title="Amount")
    """
    decimal USD
    """


class DataErased(BaseModel):
    """
    What a deletion did: outputs deleted now, inputs released (deleted by
    `inputs_deleted_by`, unless another kept job of the tenant uses them).
    """

    model_config = ConfigDict(
        extra="allow",
    )
    jobs: int = Field(..., title="Jobs")
    outputs_deleted: int = Field(..., title="Outputs Deleted")
    inputs_released: int = Field(..., title="Inputs Released")
    inputs_kept_for_other_jobs: int = Field(..., title="Inputs Kept For Other Jobs")
    inputs_deleted_by: str = Field(..., title="Inputs Deleted By")
    data_deleted_at: str = Field(..., title="Data Deleted At")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: str = Field(..., title="Id")
    webhook_id: str = Field(..., title="Webhook Id")
    """
    the same on every attempt: receivers deduplicate on it
    """
    job_id: str | None = Field(..., title="Job Id")
    event_type: str = Field(..., title="Event Type")
    url: str = Field(..., title="Url")
    status: Literal["pending", "delivered", "failed", "gone"] = Field(..., title="Status")
    attempts: list[AttemptOut] = Field(..., title="Attempts")
    next_attempt_at: str | None = Field(..., title="Next Attempt At")
    created_at: str = Field(..., title="Created At")
    delivered_at: str | None = Field(..., title="Delivered At")


class ErrorOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    code: str = Field(..., title="Code")
    message: str | None = Field(..., title="Message")


class EventOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: int = Field(..., title="Id")
    """
    increasing per deployment: a stream's Last-Event-ID
    """
    at: str = Field(..., title="At")
    type: str = Field(..., title="Type")
    from_status: str | None = Field(..., title="From Status")
    to_status: str | None = Field(..., title="To Status")
    detail: dict[str, Any] = Field(..., title="Detail")


class ExcludedOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: str = Field(..., title="Id")
    reason: str = Field(..., title="Reason")


class OutputOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    url: str | None = Field(..., title="Url")
    """
    presigned; null once the output was deleted
    """
    content_type: str = Field(..., title="Content Type")
    width: int = Field(..., title="Width")
    height: int = Field(..., title="Height")
    bytes: int = Field(..., title="Bytes")
    content_filtered: bool | None = Field(False, title="Content Filtered")
    """
    Stability blurred it (CONTENT_FILTERED)
    """


class PickOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    model: str | None = Field(..., title="Model")
    """
    null when none can be picked (the reason says why)
    """
    reason: str = Field(..., title="Reason")
    figures: dict[str, Any] = Field(..., title="Figures")
    """
    price, tier, measured run time and success share, votes
    """


class PriceRangeOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    min: str = Field(..., title="Min")
    """
    lowest price of one image, USD
    """
    max: str = Field(..., title="Max")
    """
    highest price of one image, USD
    """
    varies_by: str | None = Field(..., title="Varies By")
    """
    the option(s) the price depends on
    """
    text: str = Field(..., title="Text")
    """
    in words: "$0.10 to $0.20 by rendering speed"
    """


class PricingOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    model: str = Field(..., title="Model")
    provider: str = Field(..., title="Provider")
    rule: str = Field(..., title="Rule")
    """
    flat, by_param, quality_size or credits
    """
    units: str = Field(..., title="Units")
    unit: str = Field(..., title="Unit")
    """
    image, or credit (Stability)
    """
    unit_price: str = Field(..., title="Unit Price")
    taken: str = Field(..., title="Taken")
    """
    the date the price was taken
    """
    source: str = Field(..., title="Source")


class ReadyOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    status: Literal["ok"] = Field(..., title="Status")
    checks: dict[str, str] = Field(..., title="Checks")
    breakers: dict[str, Any] = Field(..., title="Breakers")


class RecommendationsOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    operation: str = Field(..., title="Operation")
    window_days: int = Field(..., title="Window Days")
    min_jobs: int = Field(..., title="Min Jobs")
    picks: dict[str, PickOut] = Field(..., title="Picks")
    """
    cheapest, best_tier, fastest, most_reliable, tenant_pick
    """
    default: PickOut
    """
    the model a job gets when it names none, and why
    """
    models: list[dict[str, Any]] = Field(..., title="Models")
    """
    every candidate with its figures
    """
    excluded: list[ExcludedOut] = Field(..., title="Excluded")


class SecretOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    secret: str = Field(..., title="Secret")
    """
    the Standard Webhooks signing secret, whsec_...
    """
    previous_valid_until: str | None = Field(..., title="Previous Valid Until")
    """
    after a rotation: until when the previous secret still signs
    """


class UploadCreate(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    content_type: str = Field(..., max_length=64, title="Content Type")
    """
    image/jpeg, image/png, image/webp
    """
    size: int = Field(..., ge=1, title="Size")
    """
    the image's size in bytes, exactly
    """


class UploadOut(BaseModel):
    """
    Send the image with `method` to `url`, with `headers`, before `url_expires_at`;
    then name `id` in any image field until `expires_at`.
    """

    model_config = ConfigDict(
        extra="allow",
    )
    id: str = Field(..., title="Id")
    method: str = Field(..., title="Method")
    url: str = Field(..., title="Url")
    headers: dict[str, str] = Field(..., title="Headers")
    content_type: str = Field(..., title="Content Type")
    size: int = Field(..., title="Size")
    url_expires_at: str = Field(..., title="Url Expires At")
    expires_at: str = Field(..., title="Expires At")


class UsageOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    bulk_share: float = Field(..., title="Bulk Share")
    """
    the share of each provider's limits bulk work (priority low) may take (EDITQ_BULK_SHARE)
    """
    bulk_weight: int = Field(..., title="Bulk Weight")
    """
    your weight when tenants share bulk's part
    """
    providers: dict[str, Any] = Field(..., title="Providers")
    """
    per rate-limited provider: `rate` (calls in the window) and `in_flight` (slots), each with its limit, bulk's cap (bulk_limit), what is used in all, by interactive and by bulk work, and your part of bulk (an admin key: every tenant's)
    """


class ValidationError(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    loc: list[str | int] = Field(..., title="Location")
    msg: str = Field(..., title="Message")
    type: str = Field(..., title="Error Type")
    input: Any | None = Field(None, title="Input")
    ctx: dict[str, Any] | None = Field(None, title="Context")


class VoteIn(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    model: str = Field(..., max_length=128, title="Model")
    """
    the model whose output you preferred
    """


class VoteOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    model: str = Field(..., title="Model")
    at: str = Field(..., title="At")


class Problem(BaseModel):
    """
    RFC 9457 problem details; `code` is stable, and some problems carry more members (field, limit, refusals, ...)
    """

    model_config = ConfigDict(
        extra="allow",
    )
    type: str
    """
    a URI naming the problem
    """
    title: str
    status: int
    detail: str
    """
    what happened, for a person
    """
    code: str
    """
    stable, for programs to switch on
    """
    field: str | None = None
    """
    the input at fault, when one is
    """


class BatchList(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    data: list[BatchOut] = Field(..., title="Data")
    next_cursor: str | None = Field(..., title="Next Cursor")


class BudgetOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    ok: bool = Field(..., title="Ok")
    plan: str = Field(..., title="Plan")
    plan_limit: int | None = Field(..., title="Plan Limit")
    plan_used: int = Field(..., title="Plan Used")
    period: str = Field(..., title="Period")
    budgets: list[BudgetUseOut] = Field(..., title="Budgets")


class ComparisonResult(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    model: str = Field(..., title="Model")
    """
    the model compared
    """
    served_by: str = Field(..., title="Served By")
    """
    the model that ran it (differs after a fallback)
    """
    job_id: str = Field(..., title="Job Id")
    status: Literal["queued", "running", "succeeded", "failed", "canceled"] = Field(
        ..., title="Status"
    )
    outputs: list[ComparisonOutput] = Field(..., title="Outputs")
    cost: CostOut
    queue_seconds: float | None = Field(..., title="Queue Seconds")
    """
    accepted to started
    """
    run_seconds: float | None = Field(..., title="Run Seconds")
    """
    started to finished
    """
    error: ErrorOut | None


class CostReportOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    rows: list[CostRowOut] = Field(..., title="Rows")
    """
    one per group, keyed by the group_by name (model, provider, operation, day, tenant)
    """
    total: str = Field(..., title="Total")
    currency: str = Field(..., title="Currency")
    group_by: str = Field(..., title="Group By")
    from_: str = Field(..., alias="from", title="From")
    to: str = Field(..., title="To")


class DeliveryList(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    data: list[DeliveryOut] = Field(..., title="Data")
    next_cursor: str | None = Field(..., title="Next Cursor")


class EventList(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    data: list[EventOut] = Field(..., title="Data")


class HTTPValidationError(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    detail: list[ValidationError] | None = Field(None, title="Detail")


class JobOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: str = Field(..., title="Id")
    status: Literal["queued", "running", "succeeded", "failed", "canceled"] = Field(
        ..., title="Status"
    )
    operation: str = Field(..., title="Operation")
    model: str = Field(..., title="Model")
    provider: str = Field(..., title="Provider")
    prompt: str | None = Field(..., title="Prompt")
    created_at: str = Field(..., title="Created At")
    updated_at: str = Field(..., title="Updated At")
    started_at: str | None = Field(..., title="Started At")
    finished_at: str | None = Field(..., title="Finished At")
    attempts: int = Field(..., title="Attempts")
    outputs: list[OutputOut] = Field(..., title="Outputs")
    cost: CostOut
    error: ErrorOut | None
    options: dict[str, Any] = Field(..., title="Options")
    metadata: dict[str, Any] = Field(..., title="Metadata")
    deadline_at: str | None = Field(None, title="Deadline At")
    fallback_from: str | None = Field(None, title="Fallback From")
    """
    the model it was submitted with, if it fell back to another
    """
    webhook_url: str | None = Field(None, title="Webhook Url")
    webhook_events: list[str] | None = Field(None, title="Webhook Events")
    priority: Literal["normal", "low"] | None = Field("normal", title="Priority")
    """
    low: bulk work (a batch's jobs by default)
    """
    batch_id: str | None = Field(None, title="Batch Id")
    """
    the batch that made it
    """
    comparison_id: str | None = Field(None, title="Comparison Id")
    """
    the comparison that made it
    """
    retention: dict[str, Any] | None = Field(None, title="Retention")
    """
    how long its inputs and outputs are kept after it ends (days; null: for good), and when they go
    """
    inputs_deleted_at: str | None = Field(None, title="Inputs Deleted At")
    outputs_deleted_at: str | None = Field(None, title="Outputs Deleted At")
    data_deleted_at: str | None = Field(None, title="Data Deleted At")
    """
    when all its stored images went; its record, events and costs stay
    """
    queue_position: int | None = Field(None, title="Queue Position")
    """
    while queued: how many jobs are ahead of it on its queue (0: next); given by GET /v1/jobs/{id} and its stream, not by lists
    """


class ModelOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: str = Field(..., title="Id")
    provider: str = Field(..., title="Provider")
    """
    wavespeed, stability or local
    """
    tier: str = Field(..., title="Tier")
    """
    budget, mid, premium, variable or specialized
    """
    description: str = Field(..., title="Description")
    demo: bool = Field(..., title="Demo")
    """
    the offline demo model: never recommended for a prompt-driven edit
    """
    operations: list[str] = Field(..., title="Operations")
    prompt_required: list[str] = Field(..., title="Prompt Required")
    """
    the operations that need a prompt
    """
    max_resolution: list[int] = Field(..., title="Max Resolution")
    """
    largest input sides, [width, height]
    """
    params: dict[str, Any] = Field(..., title="Params")
    """
    the options it takes, with their ranges
    """
    pricing: dict[str, Any] = Field(..., title="Pricing")
    """
    its pricing rule, with the date taken
    """
    price_usd: str = Field(..., title="Price Usd")
    """
    one image at default options
    """
    price_range: PriceRangeOut
    rank: int | None = Field(None, title="Rank")
    """
    with ?operation=: its place, cheapest first
    """
    reason: str | None = Field(None, title="Reason")
    """
    with ?operation=: why it is ranked so
    """


class QuoteOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    estimated: str = Field(..., title="Estimated")
    currency: str = Field(..., title="Currency")
    pricing: PricingOut
    budget: BudgetOut


class ComparisonOut(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    id: str = Field(..., title="Id")
    status: Literal["running", "completed"] = Field(..., title="Status")
    operation: str = Field(..., title="Operation")
    prompt: str | None = Field(..., title="Prompt")
    models: list[str] = Field(..., title="Models")
    metadata: dict[str, Any] = Field(..., title="Metadata")
    created_at: str = Field(..., title="Created At")
    vote: VoteOut | None
    estimated_total: str = Field(..., title="Estimated Total")
    actual_total: str | None = Field(..., title="Actual Total")
    """
    what the ledger charged, once all ended
    """
    results: list[ComparisonResult] = Field(..., title="Results")


class JobList(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    data: list[JobOut] = Field(..., title="Data")
    next_cursor: str | None = Field(..., title="Next Cursor")


class ModelList(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    data: list[ModelOut] = Field(..., title="Data")
    excluded: list[ExcludedOut] | None = Field(None, title="Excluded")
    """
    with ?operation=: models that serve it but not at this size
    """


class ComparisonList(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    data: list[ComparisonOut] = Field(..., title="Data")
    next_cursor: str | None = Field(..., title="Next Cursor")
