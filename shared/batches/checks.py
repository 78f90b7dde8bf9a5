"""Checking a batch before anything is stored: every item line, or every child of a
reprocessing, checked and priced as the job it would become."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.errors import EditqError, InvalidInput
from shared.formats import iso, parse_instant
from shared.inputs.refs import InputRef
from shared.jobs.submission import Checked as CheckedRequest
from shared.jobs.submission import EditRequest, Stored, check_request, store_inputs
from shared.models import Job
from shared.providers.catalog import Catalog
from shared.providers.pricing import Price
from shared.retention import policy
from shared.services import Services
from shared.tenants import Principal

FILTER_FIELDS = ("model", "operation", "status", "batch_id", "job_ids", "created_after",
                 "created_before", "metadata")


OVERRIDE_FIELDS = ("model", "prompt", "operation", "options")


# What a reprocessing reads of each parent: enough to make its child, no more (rows, not
# ORM objects: accepting 10,000 parents must not cost a second of the API's time).
PARENT_COLUMNS = (Job.seq, Job.id, Job.model, Job.operation, Job.prompt, Job.negative_prompt,
                  Job.options, Job.metadata_, Job.input_keys, Job.mask_key,
                  Job.inputs_upright, Job.inputs_deleted_at)


# What accepting one needs of each parent: less again, JSON left undecoded.
CHECK_COLUMNS = (Job.id, Job.model, Job.operation, Job.prompt, Job.negative_prompt,
                 cast(Job.options, Text).label("options_json"),
                 func.json_array_length(Job.input_keys).label("image_count"), Job.mask_key,
                 Job.inputs_deleted_at)


class BatchInvalid(InvalidInput):
    """Some lines of a batch are not valid jobs; `errors` lists them by line."""

    code = "batch_invalid"
    title = "The batch has invalid items"


# The errors a batch reports by line (all of them are counted).
MAX_REPORTED_ERRORS = 1000


@dataclass
class Checked:
    """What survived checking, kept small: each good item as its JSON line, ready for the
    batch's items.jsonl (a batch costs the API its items' text, not a tree of objects per
    item), with the count and estimate by model; and the errors by line, the first
    MAX_REPORTED_ERRORS of them and how many there were."""

    lines: list[str] = field(default_factory=list)
    count: int = 0
    by_model: dict[str, Decimal] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    invalid: int = 0

    def add(self, item: dict[str, Any], *, keep: bool = True) -> None:
        """Count an item (`keep`: and keep its line; a reprocessing's children are made
        from their parents, so only their model and estimate are counted)."""
        self.count += 1
        self.by_model[item["model"]] = (self.by_model.get(item["model"], Decimal(0))
                                        + Decimal(item["estimate"]))
        if keep:
            self.lines.append(json.dumps(item, separators=(",", ":")))

    def add_many(self, item: dict[str, Any], count: int) -> None:
        """Count `count` items like `item`, keeping none (a bucket source's, listed later)."""
        self.count += count
        self.by_model[item["model"]] = (self.by_model.get(item["model"], Decimal(0))
                                        + Decimal(item["estimate"]) * count)

    def error(self, entry: dict[str, Any]) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(entry)

    @property
    def estimate(self) -> Decimal:
        return sum(self.by_model.values(), Decimal(0))


PRIORITY_IS_THE_BATCHS = ("a batch's jobs take the batch's priority (`priority` on the "
                          "batch: low by default), not an item's")


def check_items(lines: Iterable[tuple[int, dict[str, Any] | EditqError]],
                defaults: dict[str, Any], services: Services, decode: Any,
                principal: Principal,
                store: bool = True, limit: int | None = None) -> Checked:
    """Check each item (a POST /v1/jobs body, over `defaults`), as the lines arrive; store
    the good ones' images (unless `store` is false: a dry run leaves nothing behind, not
    even in S3). A line that could not be read comes as its error. Past `limit` lines,
    valid or not, the batch is refused at once: the cap holds while reading.

    `decode` turns a request body into an EditRequest (the API's JSON decoder), so an
    item is read exactly as a job would be.
    """
    checked = Checked()
    stored: set[str] = set()
    for line, raw in lines:
        if limit is not None and checked.count + checked.invalid >= limit:
            raise InvalidInput(f"a batch holds at most {limit} items", field="items",
                               limit=limit)
        try:
            if isinstance(raw, EditqError):
                raise raw
            if "priority" in raw:
                raise InvalidInput(PRIORITY_IS_THE_BATCHS, field="priority")
            req: EditRequest = decode({**defaults, **raw})
            result = check_request(req, services)
        except EditqError as exc:
            checked.error({"line": line, "code": exc.code, "message": exc.message})
            continue
        # (many items share their images: each is stored once; a dry run stores none)
        where = (store_inputs(services.storage, principal.tenant_id, result, stored) if store
                 else Stored([], None))
        checked.add({"line": line, **item_of(req, result, services.settings, principal),
                     **where.as_item()})
    return checked


def item_of(req: EditRequest, result: CheckedRequest, settings: Settings,
            principal: Principal) -> dict[str, Any]:
    """A checked request as a batch keeps it until its job is made (but its inputs), with
    how long its job will keep its images (the tenant's policy as it is now)."""
    keep = policy.resolve(settings, {"inputs": principal.keep_inputs_seconds,
                                     "outputs": principal.keep_outputs_seconds},
                          req.retention or {})
    return {"keep_inputs_seconds": keep["inputs"], "keep_outputs_seconds": keep["outputs"],
            "operation": req.operation, "model": result.spec.id,
            "provider": result.spec.provider, "prompt": req.prompt,
            "negative_prompt": req.negative_prompt, "options": result.options.extra,
            "metadata": req.metadata, "estimate": str(result.price.amount),
            "currency": result.price.currency, "deadline_seconds": req.deadline_seconds,
            "webhook_url": req.webhook_url, "webhook_events": req.webhook_events}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_source(services: Services, principal: Principal, source: dict[str, Any],
                 defaults: dict[str, Any], decode: Any, *,
                 count: bool) -> tuple[Checked, dict[str, Any]]:
    """A bucket source: its bucket allowed, the job every object makes (from `defaults`)
    checked and priced once; the count is `limit`, the most it may make, unless `count`
    (a dry run) lists the objects to count them. Answers the batch's spec too."""
    bucket, prefix, limit = source["bucket"], source.get("prefix") or "", source["limit"]
    if bucket not in services.settings.source_buckets:
        raise InvalidInput(f"bucket {bucket!r} is not a source this deployment allows "
                           "(EDITQ_SOURCE_BUCKETS)", field="source.bucket")
    if not 1 <= limit <= services.settings.batch_max_jobs:
        raise InvalidInput(f"source.limit must be 1 to {services.settings.batch_max_jobs}",
                           field="source.limit")
    req: EditRequest = decode(defaults)
    req.images = [InputRef("source", f"{bucket}/{prefix}")]
    template = item_of(req, check_request(req, services), services.settings, principal)
    found = limit
    if count:
        found, after = 0, ""
        while found < limit and (keys := source_page(services, bucket, prefix, after,
                                                     limit - found)):
            found, after = found + len(keys[0]), keys[1]
    checked = Checked()
    checked.add_many(template, found)
    return checked, {"source": {"bucket": bucket, "prefix": prefix, "limit": limit},
                     "template": template, "after": ""}


def source_page(services: Services, bucket: str, prefix: str, after: str,
                most: int) -> tuple[list[str], str] | None:
    """Up to `most` image keys under `prefix` after `after`, and the last key listed (the
    next page starts after it); None when the listing is exhausted."""
    listed = services.source(bucket).list_page(prefix, after, min(1000, max(most, 1)))
    if not listed:
        return None
    images = [key for key in listed if key.lower().endswith(IMAGE_SUFFIXES)]
    return images[:most], (images[most - 1] if len(images) > most else listed[-1])


def parents_query(tenant_id: str, filters: dict[str, Any], before: datetime,
                  exclude_batch: str | None = None,
                  columns: tuple[Any, ...] = PARENT_COLUMNS) -> Any:
    """The stored jobs a reprocessing filter selects, oldest first (a stable order to
    expand by, resumable from the last parent's seq), as rows of `columns`."""
    unknown = sorted(set(filters) - set(FILTER_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown filter fields: {', '.join(unknown)}", field="filter")
    query = select(*columns).where(Job.tenant_id == tenant_id, Job.created_at < before,
                              func.coalesce(Job.batch_id, "") != (exclude_batch or "-"))
    for name in ("model", "operation", "status", "batch_id"):
        if filters.get(name) is not None:
            query = query.where(getattr(Job, name) == str(filters[name]))
    if filters.get("job_ids") is not None:
        ids = filters["job_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidInput("filter.job_ids must be a list of job ids", field="filter")
        query = query.where(Job.id.in_(ids))
    for name, op in (("created_after", "__ge__"), ("created_before", "__lt__")):
        if filters.get(name):
            when = parse_instant(str(filters[name]), field=f"filter.{name}")
            query = query.where(getattr(Job.created_at, op)(when))
    metadata = filters.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInput("filter.metadata must be an object", field="filter")
    for key, value in metadata.items():
        query = query.where(Job.metadata_[key].as_string() == str(value))
    return query.order_by(Job.seq)


class Children:
    """The children of parents under one override.

    The check and the price depend on the model, the operation, the options and a few
    facts about the parent (has a prompt, how many images, a mask, a negative prompt),
    not on the parent itself: a 10,000-job reprocessing has a handful of distinct
    combinations, each checked once instead of 10,000 times.
    """

    def __init__(self, override: dict[str, Any], catalog: Catalog) -> None:
        self.override = override
        self.catalog = catalog
        self._checked: dict[tuple[Any, ...], tuple[dict[str, Any], Price] | EditqError] = {}

    def of(self, parent: Any) -> dict[str, Any]:
        """The child of one parent (a row of PARENT_COLUMNS), checked, with its estimate;
        raises the EditqError the catalog gives for it."""
        model, operation, prompt = self._resolve(parent)
        options = self.override.get("options", parent.options)
        checked, price = self._outcome(
            model, operation, prompt, len(parent.input_keys), parent,
            json.dumps(options, sort_keys=True, default=str), lambda: options)
        return {"parent_job_id": parent.id, "operation": operation, "model": model,
                "provider": self.catalog.get(model).provider, "prompt": prompt,
                "negative_prompt": parent.negative_prompt,
                "options": dict(checked), "metadata": parent.metadata_,
                "input_keys": list(parent.input_keys), "mask_key": parent.mask_key,
                "inputs_upright": parent.inputs_upright,
                "estimate": str(price.amount), "currency": price.currency}

    def priced(self, parent: Any) -> tuple[str, Price]:
        """The model and price of one parent's child (a row of CHECK_COLUMNS: its options
        as JSON text, its image count), without building the child; raises likewise."""
        model, operation, prompt = self._resolve(parent)
        if "options" in self.override:
            key = json.dumps(self.override["options"], sort_keys=True, default=str)
        else:
            key = parent.options_json
        _, price = self._outcome(
            model, operation, prompt, parent.image_count or 0, parent, key,
            lambda: self.override.get("options", json.loads(parent.options_json or "{}")))
        return model, price

    def _resolve(self, parent: Any) -> tuple[str, str, str | None]:
        return (self.override.get("model") or parent.model,
                self.override.get("operation") or parent.operation,
                self.override.get("prompt", parent.prompt))

    def _outcome(self, model: str, operation: str, prompt: str | None, image_count: int,
                 parent: Any, options_key: str,
                 options: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Price]:
        has_mask, has_negative = parent.mask_key is not None, bool(parent.negative_prompt)
        key = (model, operation, bool(prompt), bool(prompt and prompt.strip()), image_count,
               has_mask, has_negative, options_key)
        if key not in self._checked:
            try:
                spec = self.catalog.get(model)
                checked = spec.check_request(
                    operation=operation, prompt=prompt, image_count=image_count,
                    has_mask=has_mask, has_negative_prompt=has_negative, options=options())
                self._checked[key] = checked, spec.price(checked)
            except EditqError as exc:
                self._checked[key] = exc
        outcome = self._checked[key]
        if isinstance(outcome, EditqError):
            raise outcome
        return outcome


def check_reprocess(session: Session, catalog: Catalog, tenant_id: str, spec: dict[str, Any],
                    now: datetime) -> Checked:
    """Every child the filter gives, checked and priced (its model and estimate: the jobs
    are made by the expansion); a parent without stored inputs is an error."""
    filters, override = spec.get("filter") or {}, spec.get("override") or {}
    if not isinstance(filters, dict) or not isinstance(override, dict):
        raise InvalidInput("reprocess needs filter{} and override{} objects", field="reprocess")
    unknown = sorted(set(override) - set(OVERRIDE_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown override fields: {', '.join(unknown)}", field="override")
    checked, children = Checked(), Children(override, catalog)
    query = parents_query(tenant_id, filters, now, columns=CHECK_COLUMNS)
    for n, parent in enumerate(session.execute(query)):
        if parent.inputs_deleted_at is not None:
            checked.error({"line": n + 1, "job_id": parent.id, "code": "inputs_deleted",
                           "message": f"job {parent.id}'s inputs were deleted "
                                      f"({iso(parent.inputs_deleted_at)}): retention, or a "
                                      "request"})
            continue
        if not parent.image_count:
            checked.error({"line": n + 1, "job_id": parent.id, "code": "no_stored_inputs",
                           "message": f"job {parent.id} has no stored inputs"})
            continue
        try:
            model, price = children.priced(parent)
        except EditqError as exc:
            checked.error({"line": n + 1, "job_id": parent.id, "code": exc.code,
                           "message": exc.message})
            continue
        checked.add({"model": model, "estimate": str(price.amount)}, keep=False)
    return checked
