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
from typing import Any

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
from shared.jobs.states import QUEUED, add_event, new_job_id
from shared.models import Job
from shared.money import budgets
from shared.providers.base import ImageEditOptions
from shared.providers.catalog import ModelSpec
from shared.providers.pricing import Price
from shared.providers.router import build_options, validate_edit
from shared.services import Services
from shared.storage import Storage, input_key
from shared.tenants import Principal
from shared.webhooks.outbox import check_events

MAX_PROMPT_CHARS = 10_000


@dataclass
class EditRequest:
    """A job request after transport decoding (JSON or multipart), before validation."""

    images: list[bytes]
    operation: str = "general_edit"
    model: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    mask: bytes | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # The job fails with deadline_exceeded if it has not finished this long after it
    # was accepted.
    deadline_seconds: int | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None

    def fingerprint(self) -> str:
        """Same request, same fingerprint, whichever transport carried it."""
        canonical = {
            "images": [hashlib.sha256(i).hexdigest() for i in self.images],
            "mask": hashlib.sha256(self.mask).hexdigest() if self.mask is not None else None,
            "operation": self.operation, "model": self.model, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "options": self.options,
            "metadata": self.metadata, "deadline_seconds": self.deadline_seconds,
            "webhook_url": self.webhook_url, "webhook_events": self.webhook_events,
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


MAX_DEADLINE_SECONDS = 7 * 24 * 3600


def check_sizes(req: EditRequest, settings: Settings) -> tuple[list[ImageInfo], ImageInfo | None]:
    """The checks that do not depend on the model, and the inspected images."""
    if req.deadline_seconds is not None and not (
            1 <= req.deadline_seconds <= MAX_DEADLINE_SECONDS):
        raise InvalidInput(f"deadline_seconds must be 1 to {MAX_DEADLINE_SECONDS}",
                           field="deadline_seconds")
    if req.webhook_url is not None:
        check_webhook_url(req.webhook_url, settings.webhook_allowed_host_set)
    req.webhook_events = check_events(req.webhook_events)
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
    images = [inspect_image(data, field=f"images[{n}]" if len(req.images) > 1 else "image",
                            **limits) for n, data in enumerate(req.images)]
    mask = inspect_image(req.mask, field="mask", **limits) if req.mask is not None else None
    return images, mask


@dataclass
class Checked:
    """A request that passed every check: the model that will serve it and its price."""

    spec: ModelSpec
    options: ImageEditOptions
    images: list[ImageInfo]
    mask: ImageInfo | None
    price: Price


def check_request(req: EditRequest, services: Services) -> Checked:
    images, mask = check_sizes(req, services.settings)
    return check_for_model(req, services, req.model, images, mask)


def check_for_model(req: EditRequest, services: Services, model: str | None,
                    images: list[ImageInfo], mask: ImageInfo | None) -> Checked:
    """The model's own rules, on images already inspected (a comparison inspects once)."""
    options = build_options(images=req.images, operation=req.operation, model=model,
                            prompt=req.prompt, mask=req.mask,
                            negative_prompt=req.negative_prompt, options=req.options)
    spec = validate_edit(options, services)
    spec.check_images(images, mask)
    return Checked(spec, options, images, mask, spec.price(options.extra))


def pricing_view(spec: ModelSpec, price: Price) -> dict[str, Any]:
    return {"model": spec.id, "provider": spec.provider, "rule": price.rule,
            "units": money(price.units), "unit": price.unit,
            "unit_price": money(price.unit_price), "taken": price.taken.isoformat(),
            "source": price.source}


def quote(session: Session, services: Services, principal: Principal,
          req: EditRequest) -> dict[str, Any]:
    """What the job would cost and whether it fits the tenant's limits; nothing is stored."""
    checked = check_request(req, services)
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
    keys, mask_key = store_inputs(services.storage, checked)
    budgets.admit(session, services.settings, principal.tenant_id, checked.spec.id,
                  checked.price.amount)
    job = new_job(principal, req, checked, keys, mask_key, fingerprint, idempotency_key)
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
            add_created_event(session, job)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        if idempotency_key and (winner := replay(session, Job, principal.tenant_id,
                                                 idempotency_key, fingerprint, what="job")):
            return winner, False
        raise
    return job, True


def store_inputs(storage: Storage, checked: Checked) -> tuple[list[str], str | None]:
    """Put the inputs to S3 under their content's hash: a retry re-uploads nothing."""
    keys = []
    for info in checked.images:
        keys.append(input_key(info.sha256))
        storage.put_if_absent(keys[-1], info.data, info.content_type)
    mask_key = None
    if checked.mask is not None:
        mask_key = input_key(checked.mask.sha256)
        storage.put_if_absent(mask_key, checked.mask.data, checked.mask.content_type)
    return keys, mask_key


def new_job(principal: Principal, req: EditRequest, checked: Checked, keys: list[str],
            mask_key: str | None, fingerprint: str | None, idempotency_key: str | None,
            comparison_id: str | None = None) -> Job:
    """The queued job row for a checked request (not added to the session)."""
    spec, price = checked.spec, checked.price
    now = utcnow()
    return Job(
        id=new_job_id(), tenant_id=principal.tenant_id, status=QUEUED,
        operation=req.operation, model=spec.id, provider=spec.provider, prompt=req.prompt,
        negative_prompt=req.negative_prompt, options=checked.options.extra,
        metadata_=req.metadata, input_keys=keys, mask_key=mask_key, outputs=[], attempts=0,
        cost_estimated=price.amount, currency=price.currency,
        idempotency_key=idempotency_key, request_hash=fingerprint,
        lease_expires_at=now,  # its message is due now (see shared.jobs.recovery)
        deadline_at=(now + timedelta(seconds=req.deadline_seconds)
                     if req.deadline_seconds else None),
        webhook_url=req.webhook_url, webhook_events=req.webhook_events,
        comparison_id=comparison_id,
    )


def add_created_event(session: Session, job: Job) -> None:
    add_event(session, job.id, "created", to_status=QUEUED, model=job.model,
              provider=job.provider, estimated=money(job.cost_estimated))
