"""Falling back to another model when a job's provider is failing (off by default).

With EDITQ_BREAKER_FALLBACK=true, a job whose provider's circuit breaker is
open may move to another provider's model that serves the same operation.
Only a model that takes the request exactly as it is (prompt, images, mask,
options, image limits) and costs no more than the job's estimate is chosen,
cheapest first, so a fallback never changes what the user asked for nor
what they agreed to pay. The job records it (`fallback_from`, a `fell_back`
event). In-process models are never chosen: they do different edits.
"""

from __future__ import annotations

from typing import Any

from shared.errors import EditqError
from shared.images import inspect_image
from shared.models import Job
from shared.providers.catalog import ModelSpec
from shared.providers.router import build_options
from shared.services import Services


def find_fallback(job: Job, spec: ModelSpec, images: list[bytes], mask: bytes | None,
                  services: Services) -> tuple[ModelSpec, dict[str, Any]] | None:
    """The cheapest other model that can take this job as it is, with its options."""
    settings = services.settings
    limits: dict[str, Any] = {"max_bytes": settings.max_image_bytes,
                              "max_pixels": settings.max_image_pixels}
    try:
        infos = [inspect_image(data, field="image", **limits) for data in images]
        mask_info = inspect_image(mask, field="mask", **limits) if mask is not None else None
    except EditqError:
        return None
    for alt in services.catalog.for_operation(job.operation):
        entry = services.registry.find(alt.provider)
        if alt.provider == spec.provider or entry is None or entry.in_process:
            continue
        try:
            options = alt.check_request(
                operation=job.operation, prompt=job.prompt, image_count=len(images),
                has_mask=mask is not None, has_negative_prompt=bool(job.negative_prompt),
                options=job.options)
            alt.check_images(infos, mask_info)
            if alt.estimate(options) > job.cost_estimated:
                continue
            services.provider(alt.provider).validate(alt, build_options(
                images=images, operation=job.operation, model=alt.id, prompt=job.prompt,
                mask=mask, negative_prompt=job.negative_prompt, options=options))
        except EditqError:
            continue
        breaker = services.breaker(alt.provider)
        if breaker is not None and breaker.allow():
            continue
        return alt, options
    return None
