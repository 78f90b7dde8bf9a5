"""The unified entry point: one call edits with whichever provider serves the model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.errors import ProviderError
from shared.providers.base import ImageEditOptions, ImageEditProvider, ImageEditResult
from shared.providers.catalog import ModelSpec

if TYPE_CHECKING:
    from shared.providers.registry import Registry
    from shared.services import Services

# ImageEditOptions fields that requests carry inside `options{}`.
_TYPED_FIELDS = ("width", "height", "guidance_scale", "steps", "seed")


def build_provider(name: str, settings: Settings, registry: Registry) -> ImageEditProvider:
    """The provider called `name` with its HTTP client (one connection pool), as its
    registry entry builds it: built once per process, by shared.services, the first time
    a job needs it."""
    return registry.entry(name).build(settings)


def build_options(*, images: list[bytes], operation: str, model: str | None,
                  prompt: str | None = None, mask: bytes | None = None,
                  negative_prompt: str | None = None,
                  options: dict[str, Any] | None = None) -> ImageEditOptions:
    """Split a request's `options{}` into typed fields and provider extras."""
    opts = dict(options or {})
    typed = {name: opts[name] for name in _TYPED_FIELDS if name in opts}
    return ImageEditOptions(images=images, prompt=prompt, operation=operation, mask=mask,
                            negative_prompt=negative_prompt, model=model, extra=opts, **typed)


def validate_edit(options: ImageEditOptions, services: Services) -> ModelSpec:
    """Pre-flight: everything that can be refused before a job exists is refused here."""
    spec = services.catalog.resolve(options.model, options.operation)
    options.model = spec.id
    options.extra = spec.check_request(
        operation=options.operation, prompt=options.prompt, image_count=len(options.images),
        has_mask=options.mask is not None, has_negative_prompt=bool(options.negative_prompt),
        options=options.extra,
    )
    for name in _TYPED_FIELDS:
        if name in options.extra:
            setattr(options, name, options.extra[name])
    services.provider(spec.provider).validate(spec, options)
    return spec


def generate_image_edit(options: ImageEditOptions, services: Services, *,
                        timeout: float = 600.0, poll_interval: float = 1.0) -> ImageEditResult:
    """Route an edit to the provider that serves its model and wait for it (blocking).

    For scripts and tests; the service itself never waits like this (see
    `shared.jobs.pipeline`, which polls with scheduled tasks instead).
    """
    spec = validate_edit(options, services)
    provider = services.provider(spec.provider)
    submitted = provider.submit(spec, options)
    result = submitted.result
    deadline = time.monotonic() + timeout
    while result is None:
        if submitted.request_id is None or time.monotonic() > deadline:
            raise ProviderError("the provider did not finish in time", code="provider_timeout")
        time.sleep(max(poll_interval, provider.min_poll_seconds))
        result = provider.poll(spec, submitted.request_id).result
    if result.cost is None:
        result.cost = spec.estimate(options.extra, len(result.images))
    return result
