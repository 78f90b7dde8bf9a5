"""The provider protocol: what every editing backend takes and gives back.

Names follow the Image Studio plan (`ImageEditProvider`, `ImageEditOptions`);
images travel as bytes, not base64, because nothing inside editq needs text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.providers.catalog import ModelSpec
    from shared.providers.looks import Looker


@dataclass
class ImageEditOptions:
    """One edit request, provider-neutral; each provider maps it onto its own fields."""

    images: list[bytes]
    prompt: str | None = None
    operation: str = "general_edit"
    mask: bytes | None = None
    negative_prompt: str | None = None
    model: str | None = None
    width: int | None = None
    height: int | None = None
    guidance_scale: float | None = None
    steps: int | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # URLs the provider fetches the images (and mask) from instead of being sent their
    # bytes (EDITQ_PROVIDER_FETCHES_INPUTS; a provider that cannot is never given them).
    image_urls: list[str] | None = None
    mask_url: str | None = None


@dataclass(frozen=True)
class OutputImage:
    data: bytes
    content_type: str


@dataclass
class ImageEditResult:
    """What a provider produced, with whatever it said about the call."""

    images: list[OutputImage]
    provider: str
    model: str
    provider_request_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # The provider's own figure when it reports one; the catalog price otherwise.
    cost: Decimal | None = None


@dataclass
class Submitted:
    """A provider's answer to a submit: a request to poll, or (synchronous providers) the result."""

    request_id: str | None = None
    result: ImageEditResult | None = None


class ImageEditProvider(Protocol):
    """An editing backend, split into submit, look and collect so waiting never holds a
    worker.

    The Image Studio plan had one blocking `edit()`; a service cannot afford a
    thread per in-flight edit, so the blocking form is `generate_image_edit()`
    (shared.inflight.generate), which runs the edit as a job through the same steps.
    """

    name: str
    # The provider's own floor on how often one request may be looked at.
    min_look_seconds: float
    # Whether it calls a webhook when a request ends (then looks are only a fallback).
    webhooks: bool
    # Whether it can fetch its inputs from URLs (ImageEditOptions.image_urls).
    fetches_urls: bool

    def validate(self, spec: ModelSpec, options: ImageEditOptions) -> None:
        """Raise a domain `InvalidInput` for a request this provider cannot serve."""
        ...

    def submit(self, spec: ModelSpec, options: ImageEditOptions,
               webhook_url: str | None = None) -> Submitted:
        """Start the edit; raise `ProviderError` (retryable or not) when it cannot start.

        Raises `ProviderOutcomeUnknown` when the request may have been accepted
        (a timeout after sending): the caller must not submit it again blindly.
        """
        ...

    def looker(self, concurrency: int) -> Looker:
        """How the in-flight engine looks at a submitted request (the only way editq
        waits on a provider): a look answers None while the request runs and the
        provider's answer once it is done, and raises `ProviderError` if it failed."""
        ...

    def collect(self, spec: ModelSpec, request_id: str, answer: Any) -> ImageEditResult:
        """Turn a done look's answer into the result (may download; never on the loop)."""
        ...
