"""The tables: tenants, their API keys and budgets, jobs, each job's timeline, the ledger.

The database is the source of truth; the broker only carries job ids. Schema
changes go through Alembic (`shared/migrations`), never `create_all` outside tests.

(Over 300 lines: one declaration per table, kept together so the schema reads as one.)
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, Money, UTCDateTime, utcnow

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for growth.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # None: the configured default plan (EDITQ_DEFAULT_PLAN).
    plan: Mapped[str | None] = mapped_column(String(32), nullable=True)
    monthly_budget: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    # Standard Webhooks signing secret ("whsec_..."); after a rotation the previous one
    # still signs too until `webhook_secret_previous_until`.
    webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook_secret_previous: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook_secret_previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime,
                                                                          nullable=True)
    # Where this tenant's job events go when a job names no webhook_url of its own.
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # Bumped by every submission that must be checked against a limit: the row lock
    # it takes serializes those submissions, so parallel ones cannot overspend.
    admission_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # How long this tenant's inputs and outputs are kept after their job ends, in place of
    # the deployment's EDITQ_KEEP_*_DAYS (None: the deployment's; -1: for good).
    keep_inputs_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    keep_outputs_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # This tenant's weight in bulk's share of each provider's limits (shared.guards.
    # fairshare): an operator's setting (`editq keys create --bulk-weight`), never its own.
    bulk_weight: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class ModelBudget(Base):
    """An optional monthly limit on what one tenant spends on one model."""

    __tablename__ = "model_budgets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    monthly_budget: Mapped[Decimal] = mapped_column(Money)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    # The key itself is shown once; only its SHA-256 is kept.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When a request last used it, to the minute (`editq keys list`).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        Index("ix_jobs_tenant_seq", "tenant_id", "seq"),
        Index("ix_jobs_status_updated", "status", "updated_at"),
        Index("ix_jobs_provider_request", "provider", "provider_request_id"),
        # Budget checks sum the estimates of a tenant's jobs whose cost is not known yet.
        Index("ix_jobs_tenant_cost_pending", "tenant_id", "cost_actual"),
        # A batch's jobs, each created once whatever happens to the expanding worker.
        UniqueConstraint("batch_id", "batch_index", name="uq_jobs_batch_index"),
        Index("ix_jobs_batch_status", "batch_id", "status"),
        # The bulk feeder: which bulk jobs are in flight, which wait to be sent.
        Index("ix_jobs_queue_status_seq", "queue", "status", "seq"),
        Index("ix_jobs_comparison", "comparison_id"),
        # Recommendations read a window of finished jobs per model.
        Index("ix_jobs_model_finished", "model", "finished_at"),
        # The retention sweep: ended jobs whose data is due, by how long each keeps it.
        Index("ix_jobs_keep_outputs", "keep_outputs_seconds", "finished_at"),
        Index("ix_jobs_keep_inputs", "keep_inputs_seconds", "finished_at"),
    )

    # `seq` orders jobs for cursor pagination; `id` is what clients see.
    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    negative_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # S3 keys of the inputs (content-addressed) and of the optional mask.
    input_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    mask_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Inputs given by reference (shared.inputs): {"images": [ref, ...], "mask": ref|null},
    # each ref {"url": ...}, {"upload": "upl_..."}, {"source": {"bucket", "key"}} or an
    # inline one's {"key": ...}. The worker fetches and stores them and fills
    # input_keys (empty until then).
    input_refs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Whether every input is shown as stored (EXIF orientation 1): a provider may then be
    # handed their URLs. None: not known (a job from before this was recorded).
    inputs_upright: Mapped[bool | None] = mapped_column(nullable=True)
    # Retention (shared.retention): how long after the job ends its inputs and outputs are
    # kept (the job's own, else its tenant's, else the deployment's; None: for good), and
    # when they were deleted; `data_deleted_at` once both are gone. The job's record,
    # events and ledger rows stay.
    keep_inputs_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    keep_outputs_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    inputs_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outputs_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    data_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(default=0)
    cost_estimated: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    # What the ledger charged for this job; None while that is not known yet (queued,
    # running, a canceled call still settling, or a submit whose outcome is unknown).
    cost_actual: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # None, "submitting" (the POST may be in flight), "submitted" (request id saved), or
    # "settled" (a canceled job's call has been followed to its end and charged if billed).
    provider_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    provider_submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Where this job's events are POSTed (else the tenant's default), and which events.
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # The job fails with deadline_exceeded once this has passed (deadline_seconds).
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The model the job was submitted with, when it fell back to another one because
    # that model's provider was failing (EDITQ_BREAKER_FALLBACK).
    fallback_from: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Bulk: the batch that made this job, its place in it, and (reprocessing) the stored
    # job whose inputs it reuses.
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"),
                                                 nullable=True)
    batch_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parent_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The comparison that made this job, one job per model compared.
    comparison_id: Mapped[str | None] = mapped_column(
        ForeignKey("comparisons.id", ondelete="CASCADE", name="fk_jobs_comparison"),
        nullable=True)
    queue: Mapped[str] = mapped_column(String(16), default="interactive",
                                       server_default="interactive")
    # Running (or a canceled call settling): until when its worker is presumed alive.
    # Queued: when its message is due; one long overdue was lost (shared.jobs.recovery).
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class JobEvent(Base):
    __tablename__ = "job_events"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    type: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Charge(Base):
    """One charged provider call: the ledger. Rows are only ever added.

    A job makes at most one provider call per attempt, so (job_id, attempt) is
    unique: a second charge for the same call cannot be written, whatever the
    redeliveries. The row keeps the price it used, so a price change never
    rewrites history.
    """

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_ledger_job_attempt"),
        Index("ix_ledger_tenant_charged", "tenant_id", "charged_at"),
        Index("ix_ledger_charged", "charged_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(64))
    provider_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    units: Mapped[Decimal] = mapped_column(Money)
    unit: Mapped[str] = mapped_column(String(16))  # "image" or "credit"
    unit_price: Mapped[Decimal] = mapped_column(Money)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    price_rule: Mapped[str] = mapped_column(String(32))
    price_taken: Mapped[date] = mapped_column(Date)
    price_source: Mapped[str] = mapped_column(String(200), default="")
    # Why the call was charged: "succeeded", "canceled" (completed after a cancel),
    # or the failure code of a billed failure (e.g. "content_filtered").
    reason: Mapped[str] = mapped_column(String(64))
    charged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    charged_on: Mapped[date] = mapped_column(Date)  # the UTC day, for reports by day


class Batch(Base):
    """Many jobs under one id: given as items, or as a filter over stored jobs.

    Expansion creates the jobs in chunks, each chunk and the cursor that says how
    far it got in one transaction, so a worker that dies mid-way is resumed from
    the cursor: no job is created twice, none goes missing.
    """

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_tenant_seq", "tenant_id", "seq"),
                      Index("ix_batches_status", "status"),
                      # A retried POST /v1/batches makes (and charges) one batch, not two.
                      UniqueConstraint("tenant_id", "idempotency_key",
                                       name="uq_batches_tenant_idempotency"))

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # items | reprocess
    # expanding -> running -> completed; canceled at any time before completed.
    status: Mapped[str] = mapped_column(String(16))
    # items: where the checked items wait (S3, JSONL); reprocess: filter and override.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    expanded: Mapped[int] = mapped_column(Integer, default=0)
    # reprocess: the last parent (by seq) already expanded.
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_total: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    # The estimates of the jobs not created yet: budgets count them as in flight.
    estimate_pending: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    manifest_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # While expanding: until when its expanding worker is presumed alive.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expanded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Comparison(Base):
    """One input run on 2 to 6 models, side by side; each model's run is a normal job.

    The vote says which output the user preferred; it may be changed, and the
    recommendations count it as the tenant's pick.
    """

    __tablename__ = "comparisons"
    __table_args__ = (Index("ix_comparisons_tenant_seq", "tenant_id", "seq"),
                      UniqueConstraint("tenant_id", "idempotency_key",
                                       name="uq_comparisons_tenant_idempotency"))

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    operation: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The model ids, in the order asked: the order the results are shown in.
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    vote_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    voted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobInput(Base):
    """Which stored input a job uses: an input (stored once per tenant, shared by its jobs
    that sent the same image) may be deleted only when no job of its tenant whose inputs
    are kept still uses it."""

    __tablename__ = "job_inputs"
    __table_args__ = (Index("ix_job_inputs_tenant_key", "tenant_id", "key"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(32))


class ReleasedInput(Base):
    """An input no kept job used when this was written: deleted once it has stayed so for
    EDITQ_INPUT_RELEASE_GRACE_SECONDS (a submission that found it stored and is about to
    use it has committed by then, and the check, made again, keeps it)."""

    __tablename__ = "released_inputs"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime)


class LayoutMigration(Base):
    """How far `editq storage migrate` has moved a store into tenant prefixes (resumable)."""

    __tablename__ = "layout_migration"

    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Upload(Base):
    """A direct upload: a presigned request that puts an image straight into editq's
    storage, for a job to name by id (`upl_...`) instead of carrying the bytes. The
    tenant's alone; checked as an image when a job first uses it; deleted (row and
    object) once it expires, used or not (a job keeps its own copy of what it used)."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookDelivery(Base):
    """The outbox: one message to one URL, written in the transaction of the event.

    `msg_id` is the Standard Webhooks `webhook-id`: the same on every attempt and
    redelivery, so receivers can drop duplicates. Retries are scheduled here
    (`next_attempt_at`), never as long broker countdowns.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "event_type", name="uq_webhook_job_event"),
        UniqueConstraint("batch_id", "event_type", name="uq_webhook_batch_event"),
        Index("ix_webhook_due", "status", "next_attempt_at"),
        Index("ix_webhook_tenant_seq", "tenant_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    msg_id: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                               nullable=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"),
                                                 nullable=True)
    event_type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    # {type, timestamp, data}; output URLs are presigned at each attempt, so a retry
    # a day later still carries links that work.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending, delivered, failed (schedule exhausted or refused), gone (410).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
