"""Which provider serves a model, and a request in the provider-neutral form every
provider takes (`ImageEditOptions`). The one synchronous entry point,
`generate_image_edit()`, is in shared.inflight.generate: it runs an edit as a job."""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.errors import EditqError, ProviderNotConfigured
from shared.providers.base import ImageEditOptions, ImageEditProvider
from shared.providers.local import LocalProvider

# ImageEditOptions fields that requests carry inside `options{}`.
TYPED_FIELDS = ("width", "height", "guidance_scale", "steps", "seed")


def build_provider(name: str, settings: Settings) -> ImageEditProvider:
    """The provider called `name` with its HTTP client (one connection pool): built once
    per process, by shared.services, the first time a job needs it."""
    if name == "local":
        return LocalProvider()
    if name == "wavespeed":
        from shared.providers.wavespeed import WaveSpeedEditProvider
        from shared.providers.wavespeed_client import WaveSpeedClient

        if settings.wavespeed_api_key is None:
            raise ProviderNotConfigured("WaveSpeed models need EDITQ_WAVESPEED_API_KEY",
                                        provider=name)
        client = WaveSpeedClient(settings.wavespeed_base_url,
                                 settings.wavespeed_api_key.get_secret_value(),
                                 submit_timeout=settings.provider_submit_timeout_seconds,
                                 poll_timeout=settings.provider_poll_timeout_seconds,
                                 download_timeout=settings.provider_download_timeout_seconds,
                                 trusted_hosts=settings.output_allowed_host_set)
        return WaveSpeedEditProvider(client, settings.max_output_bytes)
    if name == "stability":
        from shared.providers.stability import StabilityEditProvider
        from shared.providers.stability_client import StabilityClient

        if settings.stability_api_key is None:
            raise ProviderNotConfigured("Stability operations need EDITQ_STABILITY_API_KEY",
                                        provider=name)
        stability = StabilityClient(settings.stability_base_url,
                                    settings.stability_api_key.get_secret_value(),
                                    timeout=settings.stability_timeout_seconds,
                                    poll_timeout=settings.provider_poll_timeout_seconds,
                                    accept_json=settings.stability_accept_json)
        return StabilityEditProvider(stability,
                                     filtered_is_success=settings.stability_filtered_is_success,
                                     poll_interval=settings.stability_poll_interval,
                                     max_result_bytes=settings.max_output_bytes)
    raise EditqError(f"provider {name!r} is not available in this build")


def build_options(*, images: list[bytes], operation: str, model: str | None,
                  prompt: str | None = None, mask: bytes | None = None,
                  negative_prompt: str | None = None,
                  options: dict[str, Any] | None = None) -> ImageEditOptions:
    """Split a request's `options{}` into typed fields and provider extras."""
    opts = dict(options or {})
    typed = {name: opts[name] for name in TYPED_FIELDS if name in opts}
    return ImageEditOptions(images=images, prompt=prompt, operation=operation, mask=mask,
                            negative_prompt=negative_prompt, model=model, extra=opts, **typed)
