"""The unified entry point: one call edits with whichever provider serves the model."""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.errors import EditqError
from shared.providers.base import ImageEditOptions, ImageEditProvider, ImageEditResult
from shared.providers.catalog import Catalog, ModelSpec, get_catalog
from shared.providers.local import LocalProvider

# ImageEditOptions fields that requests carry inside `options{}`.
_TYPED_FIELDS = ("width", "height", "guidance_scale", "steps", "seed")


def get_provider(name: str, settings: Settings | None = None) -> ImageEditProvider:
    """The provider called `name`; remote providers read their keys from `settings`."""
    if name == "local":
        return LocalProvider()
    raise EditqError(f"provider {name!r} is not available in this build")


def build_options(*, images: list[bytes], operation: str, model: str | None,
                  prompt: str | None = None,
                  mask: bytes | None = None, negative_prompt: str | None = None,
                  options: dict[str, Any] | None = None) -> ImageEditOptions:
    """Split a request's `options{}` into typed fields and provider extras."""
    opts = dict(options or {})
    typed = {name: opts[name] for name in _TYPED_FIELDS if name in opts}
    return ImageEditOptions(images=images, prompt=prompt, operation=operation, mask=mask,
                            negative_prompt=negative_prompt, model=model, extra=opts, **typed)


def validate_edit(options: ImageEditOptions, *, catalog: Catalog | None = None,
                  settings: Settings | None = None) -> ModelSpec:
    """Pre-flight: everything that can be refused before a job exists is refused here."""
    catalog = catalog or get_catalog()
    spec = catalog.resolve(options.model, options.operation)
    options.extra = spec.check_request(
        operation=options.operation, prompt=options.prompt, image_count=len(options.images),
        has_mask=options.mask is not None, has_negative_prompt=bool(options.negative_prompt),
        options=options.extra,
    )
    for name in _TYPED_FIELDS:
        if name in options.extra:
            setattr(options, name, options.extra[name])
    get_provider(spec.provider, settings).validate(spec, options)
    return spec


def generate_image_edit(options: ImageEditOptions, *, catalog: Catalog | None = None,
                        settings: Settings | None = None) -> ImageEditResult:
    """Route an edit to the provider that serves its model, and run it."""
    catalog = catalog or get_catalog()
    spec = validate_edit(options, catalog=catalog, settings=settings)
    result = get_provider(spec.provider, settings).edit(spec, options)
    if result.cost is None:
        result.cost = spec.estimate(len(result.images))
    return result
