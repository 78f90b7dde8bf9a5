"""Accepting a job: every check that can refuse a request runs before anything is stored.

Order matters: validate (cheap, no side effects), then upload inputs
(content-addressed, so a retry re-uploads nothing), then admit it against the
tenant's limits (which locks the tenant until commit) and insert the job row.
The caller commits and only then enqueues, so a worker never sees a message
for a row that does not exist yet. A quote is the same validation, priced,
with nothing stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import user_json
from shared.address_guard import check_webhook_url
from shared.config import Settings
from shared.db import utcnow
from shared.errors import InvalidInput
from shared.formats import money
from shared.idempotency import checked_key, replay
from shared.images import ImageInfo, inspect_image
from shared.inputs import uploads
from shared.inputs.refs import InputRef
from shared.jobs.states import JOB_COLUMNS, QUEUED, add_event, job_of, new_job_id
from shared.models import Job
from shared.money import budgets
from shared.providers.base import ImageEditOptions
from shared.providers.catalog import ModelSpec
from shared.providers.pricing import Price
from shared.providers.router import TYPED_FIELDS, build_options
from shared.queue import NORMAL, PRIORITIES, queue_for
from shared.retention import policy, uses
from shared.services import Services
from shared.storage import Storage, input_key
from shared.tenants import Principal
from shared.webhooks.outbox import check_events

MAX_PROMPT_CHARS = 10_000


@dataclass
class EditRequest:
    """A job request after transport decoding (JSON or multipart), before validation.
    Each image (and the mask) is its bytes, or a reference the worker fetches."""

    images: list[bytes | InputRef]
    # "" when not given: the model's only operation if it has one, else general_edit.
    operation: str = ""
    model: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    mask: bytes | InputRef | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # The job fails with deadline_exceeded if it has not finished this long after it
    # was accepted.
    deadline_seconds: int | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    # How long this job's inputs and outputs are kept after it ends, in days, in place of
    # its tenant's or the deployment's: {"inputs_days": n, "outputs_days": n}.
    retention: dict[str, Any] | None = None
    # "low": bulk work, on the bulk queue and within bulk's share of the providers' limits.
    priority: str = NORMAL

    def fingerprint(self) -> str:
        """Same request, same fingerprint, whichever transport carried it."""
        def of(image: bytes | InputRef | None) -> Any:
            if isinstance(image, InputRef):
                return image.as_json()
            return hashlib.sha256(image).hexdigest() if image is not None else None

        canonical = {
            "images": [of(i) for i in self.images], "mask": of(self.mask),
            "operation": self.operation, "model": self.model, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "options": self.options,
            "metadata": self.metadata, "deadline_seconds": self.deadline_seconds,
            "webhook_url": self.webhook_url, "webhook_events": self.webhook_events,
            "retention": self.retention,
            # (only when not the default: keys stored before priorities still match)
            **({"priority": self.priority} if self.priority != NORMAL else {}),
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


MAX_DEADLINE_SECONDS = 7 * 24 * 3600


Input = ImageInfo | InputRef  # an image checked from its bytes, or a reference to fetch


def check_sizes(req: EditRequest, settings: Settings) -> tuple[list[Input], Input | None]:
    """The checks that do not depend on the model, and the inspected images."""
    if req.deadline_seconds is not None and not (
            1 <= req.deadline_seconds <= MAX_DEADLINE_SECONDS):
        raise InvalidInput(f"deadline_seconds must be 1 to {MAX_DEADLINE_SECONDS}",
                           field="deadline_seconds")
    if req.priority not in PRIORITIES:
        raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}", field="priority")
    if req.webhook_url is not None:
        check_webhook_url(req.webhook_url, settings.webhook_allowed_host_set)
    req.webhook_events = check_events(req.webhook_events)
    req.retention = policy.check_override(req.retention) or None
    if not req.images:
        raise InvalidInput("send an image (`image`) or images (`images[]`)", field="image")
    if len(req.images) > settings.max_images_per_job:
        raise InvalidInput(f"at most {settings.max_images_per_job} images per job",
                           field="images")
    if req.prompt is not None and len(req.prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"prompt is longer than {MAX_PROMPT_CHARS} characters",
                           field="prompt")
    user_json.check(req.metadata, field="metadata")
    user_json.check(req.options, field="options")
    limits: dict[str, Any] = {"max_bytes": settings.max_image_bytes,
                              "max_pixels": settings.max_image_pixels}
    def checked(data: bytes | InputRef, field: str) -> Input:
        return data if isinstance(data, InputRef) else inspect_image(data, field=field,
                                                                     **limits)

    images = [checked(data, f"images[{n}]" if len(req.images) > 1 else "image")
              for n, data in enumerate(req.images)]
    mask = checked(req.mask, "mask") if req.mask is not None else None
    return images, mask


@dataclass
class Checked:
    """A request that passed every check: the model that will serve it and its price."""

    spec: ModelSpec
    options: ImageEditOptions
    images: list[Input]
    mask: Input | None
    price: Price

    @property
    def inline(self) -> bool:
        """Whether every input came as bytes (none is a reference to fetch)."""
        return not any(isinstance(i, InputRef) for i in [*self.images, self.mask])


def settle_operation(req: EditRequest, services: Services) -> None:
    """An operation not given is the named model's only one (a character model, an
    inpainting one), else general_edit."""
    if req.operation:
        return
    if req.model:
        operations = services.catalog.get(req.model).operations
        if len(operations) == 1:
            req.operation = operations[0]
            return
    req.operation = "general_edit"


def validate_edit(options: ImageEditOptions, services: Services) -> ModelSpec:
    """Pre-flight: everything that can be refused before a job exists is refused here."""
    spec = services.catalog.resolve(options.model, options.operation)
    options.model = spec.id
    options.extra = spec.check_request(
        operation=options.operation, prompt=options.prompt, image_count=len(options.images),
        has_mask=options.mask is not None, has_negative_prompt=bool(options.negative_prompt),
        options=options.extra,
    )
    for name in TYPED_FIELDS:
        if name in options.extra:
            setattr(options, name, options.extra[name])
    services.provider(spec.provider).validate(spec, options)
    return spec


def check_request(req: EditRequest, services: Services) -> Checked:
    settle_operation(req, services)
    images, mask = check_sizes(req, services.settings)
    return check_for_model(req, services, req.model, images, mask)


def check_for_model(req: EditRequest, services: Services, model: str | None,
                    images: list[Input], mask: Input | None) -> Checked:
    """The model's own rules, on images already inspected (a comparison inspects once).
    The rules that need an image's bytes wait for the worker to fetch a referenced one
    (shared.inputs.resolve); the rest (count, mask, options, price) are checked now."""
    options = build_options(images=[i if isinstance(i, bytes) else b"" for i in req.images],
                            operation=req.operation, model=model, prompt=req.prompt,
                            mask=req.mask if not isinstance(req.mask, InputRef) else b"",
                            negative_prompt=req.negative_prompt, options=req.options)
    spec = validate_edit(options, services)
    checked = Checked(spec, options, images, mask, spec.price(options.extra))
    if checked.inline:
        spec.check_images([i for i in images if isinstance(i, ImageInfo)],
                          mask if isinstance(mask, ImageInfo) else None)
    return checked


def check_uploads(session: Session, tenant_id: str, req: EditRequest) -> None:
    """A named upload must be the tenant's and not expired (checked again when used)."""
    named = [("image" if len(req.images) == 1 else f"images[{n}]", i)
             for n, i in enumerate(req.images)] + [("mask", req.mask)]
    for field_name, image in named:
        if isinstance(image, InputRef) and image.kind == "upload":
            uploads.usable(session, tenant_id, image.value, field=field_name)


def pricing_view(spec: ModelSpec, price: Price) -> dict[str, Any]:
    return {"model": spec.id, "provider": spec.provider, "rule": price.rule,
            "units": money(price.units), "unit": price.unit,
            "unit_price": money(price.unit_price), "taken": price.taken.isoformat(),
            "source": price.source}


def quote(session: Session, services: Services, principal: Principal,
          req: EditRequest) -> dict[str, Any]:
    """What the job would cost and whether it fits the tenant's limits; nothing is stored."""
    checked = check_request(req, services)
    check_uploads(session, principal.tenant_id, req)
    verdict = budgets.evaluate(session, services.settings, principal.tenant_id, checked.spec.id,
                               checked.price.amount)
    return {"estimated": money(checked.price.amount), "currency": checked.price.currency,
            "pricing": pricing_view(checked.spec, checked.price), "budget": verdict.as_dict()}


def submit_job(session: Session, services: Services, principal: Principal,
               req: EditRequest, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Validate, store the inputs and insert a queued job; answer (job, created)."""
    idempotency_key = checked_key(idempotency_key)
    fingerprint = req.fingerprint()
    if idempotency_key and (job := replay(session, Job, principal.tenant_id, idempotency_key,
                                          fingerprint, what="job")):
        return job, False

    checked = check_request(req, services)
    check_uploads(session, principal.tenant_id, req)
    stored = store_inputs(services.storage, principal.tenant_id, checked)
    budgets.admit(session, services.settings, principal.tenant_id, checked.spec.id,
                  checked.price.amount)
    job = new_job(services.settings, principal, req, checked, stored, fingerprint,
                  idempotency_key)
    if not idempotency_key:  # nothing to race for: no savepoint (two round trips fewer)
        return _insert_job(session, job), True
    try:
        with session.begin_nested():
            job = _insert_job(session, job)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        if idempotency_key and (winner := replay(session, Job, principal.tenant_id,
                                                 idempotency_key, fingerprint, what="job")):
            return winner, False
        raise
    return job, True


def _insert_job(session: Session, job: Job) -> Job:
    """A Core INSERT of the job, not the ORM's unit of work (9% of the API's CPU per POST:
    bench/README.md, issue 28); answers the job as the row was written (RETURNING: its
    seq, its defaults), detached, as a move answers it."""
    given = {column.name: job.__dict__[key] for key, column in JOB_COLUMNS
             if key in job.__dict__}
    inserted = job_of(session.connection().execute(_INSERT_JOB, given).one())
    add_created_event(session, inserted)
    uses.record(session, [(inserted.id, inserted.tenant_id, key)
                          for key in uses.keys_of(inserted)])
    return inserted


_INSERT_JOB = insert(cast(Table, Job.__table__)).returning(
    *(column for _, column in JOB_COLUMNS))


@dataclass(frozen=True)
class Stored:
    """Where a job's inputs are: their keys (all given inline), or (some are references,
    fetched by the worker) `refs`, inline ones by key and the others as given."""

    keys: list[str]
    mask_key: str | None
    refs: dict[str, Any] | None = None
    upright: bool | None = None

    def as_item(self) -> dict[str, Any]:
        """The fields of a batch item's line that say where its inputs are."""
        return {"input_keys": self.keys, "mask_key": self.mask_key, "input_refs": self.refs,
                "inputs_upright": self.upright}


def store_inputs(storage: Storage, tenant_id: str, checked: Checked,
                 seen: set[str] | None = None) -> Stored:
    """Put the inline inputs to S3 under the tenant, by their content's hash: a retry
    re-uploads nothing (nor does a batch for an image its items share: `seen`, the hashes
    stored already)."""
    def key_of(item: ImageInfo) -> str:
        key = input_key(tenant_id, item.sha256)
        if seen is None or item.sha256 not in seen:
            storage.put_if_absent(key, item.data, item.content_type)
            if seen is not None:
                seen.add(item.sha256)
        return key

    def ref_of(item: Input) -> dict[str, Any]:
        return item.as_json() if isinstance(item, InputRef) else {"key": key_of(item)}

    if not checked.inline:
        return Stored([], None, {"images": [ref_of(i) for i in checked.images],
                                 "mask": ref_of(checked.mask) if checked.mask else None})
    images = [i for i in checked.images if isinstance(i, ImageInfo)]
    mask = checked.mask if isinstance(checked.mask, ImageInfo) else None
    return Stored([key_of(i) for i in images], key_of(mask) if mask is not None else None,
                  upright=all(i.orientation == 1 for i in [*images, *([mask] if mask else [])]))


def new_job(settings: Settings, principal: Principal, req: EditRequest, checked: Checked,
            stored: Stored, fingerprint: str | None, idempotency_key: str | None,
            comparison_id: str | None = None) -> Job:
    """The queued job row for a checked request (not added to the session)."""
    spec, price = checked.spec, checked.price
    now = utcnow()
    keep = policy.resolve(settings, {"inputs": principal.keep_inputs_seconds,
                                     "outputs": principal.keep_outputs_seconds},
                          req.retention or {})
    return Job(
        id=new_job_id(), tenant_id=principal.tenant_id, status=QUEUED,
        operation=req.operation, model=spec.id, provider=spec.provider, prompt=req.prompt,
        negative_prompt=req.negative_prompt, options=checked.options.extra,
        metadata_=req.metadata, input_keys=stored.keys, mask_key=stored.mask_key,
        input_refs=stored.refs, inputs_upright=stored.upright, outputs=[], attempts=0,
        cost_estimated=price.amount, currency=price.currency,
        idempotency_key=idempotency_key, request_hash=fingerprint,
        lease_expires_at=now,  # its message is due now (see shared.jobs.recovery)
        deadline_at=(now + timedelta(seconds=req.deadline_seconds)
                     if req.deadline_seconds else None),
        webhook_url=req.webhook_url, webhook_events=req.webhook_events,
        comparison_id=comparison_id, keep_inputs_seconds=keep["inputs"],
        queue=queue_for(req.priority),
        keep_outputs_seconds=keep["outputs"],
    )


def add_created_event(session: Session, job: Job) -> None:
    add_event(session, job.id, "created", to_status=QUEUED, model=job.model,
              provider=job.provider, estimated=money(job.cost_estimated))
