"""Which provider serves a model, and a request in the provider-neutral form every
provider takes (`ImageEditOptions`). The one synchronous entry point,
`generate_image_edit()`, is in shared.inflight.generate: it runs an edit as a job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.providers.base import ImageEditOptions, ImageEditProvider

if TYPE_CHECKING:
    from shared.providers.registry import Registry

# ImageEditOptions fields that requests carry inside `options{}`.
TYPED_FIELDS = ("width", "height", "guidance_scale", "steps", "seed")


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
    typed = {name: opts[name] for name in TYPED_FIELDS if name in opts}
    return ImageEditOptions(images=images, prompt=prompt, operation=operation, mask=mask,
                            negative_prompt=negative_prompt, model=model, extra=opts, **typed)
