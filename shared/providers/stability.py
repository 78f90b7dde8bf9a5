"""Stability's edit and upscale operations behind `ImageEditProvider`, driven by the catalog.

Form fields are built generically: the catalog names the image field (and
the reference fields that follow it), the mask field, and parameters under
Stability's own names; values travel as text, as multipart wants them.
"""

from __future__ import annotations

from typing import Any

from shared.errors import ProviderError
from shared.images import EXTENSIONS, sniff_content_type
from shared.providers.base import (
    ImageEditOptions,
    ImageEditResult,
    OutputImage,
    Submitted,
)
from shared.providers.catalog import ModelSpec
from shared.providers.looks import Looker
from shared.providers.stability_client import Artifact, Files, StabilityClient

FILTERED = "CONTENT_FILTERED"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_form(spec: ModelSpec, options: ImageEditOptions) -> tuple[dict[str, str], Files]:
    """The multipart form of `POST /v2beta/stable-image/{model_path}` for this operation."""
    fields = {name: _text(value) for name, value in options.extra.items()}
    if options.prompt:
        fields["prompt"] = options.prompt
    if options.negative_prompt:
        fields["negative_prompt"] = options.negative_prompt
    names = (spec.images.field, *spec.images.extra_fields)
    files: Files = []
    for name, data in zip(names, options.images, strict=False):
        kind = sniff_content_type(data)
        files.append((name, (f"{name}.{EXTENSIONS.get(kind, 'bin')}", data, kind)))
    if options.mask is not None:
        kind = sniff_content_type(options.mask)
        files.append((spec.mask_field, (f"mask.{EXTENSIONS.get(kind, 'bin')}", options.mask,
                                        kind)))
    return fields, files


class StabilityEditProvider:
    name = "stability"
    webhooks = False
    fetches_urls = False  # its API takes files only

    def __init__(self, client: StabilityClient, *, filtered_is_success: bool,
                 look_interval: float, max_result_bytes: int = 64 << 20) -> None:
        self.client = client
        self.max_result_bytes = max_result_bytes
        self.filtered_is_success = filtered_is_success
        # Stability asks for no more than one look per 10 s at each result.
        self.min_look_seconds = look_interval

    def validate(self, spec: ModelSpec, options: ImageEditOptions) -> None:
        return None  # the catalog's checks (limits, requirements) are the whole contract

    def submit(self, spec: ModelSpec, options: ImageEditOptions,
               webhook_url: str | None = None) -> Submitted:
        fields, files = build_form(spec, options)
        answer = self.client.submit(spec.model_path, fields, files)
        if isinstance(answer, str):
            return Submitted(request_id=answer)
        return Submitted(result=self._result(spec, answer, None))

    def looker(self, concurrency: int) -> Looker:
        client = self.client
        return Looker(self.name, client.base_url, {**client.headers, "accept": client.accept},
                      client.result_path, client.read_result, timeout=client.look_timeout,
                      connections=concurrency, max_bytes=self.max_result_bytes)

    def collect(self, spec: ModelSpec, request_id: str, answer: Any) -> ImageEditResult:
        """The artifact came with the look; this only applies the filtered-result rule."""
        return self._result(spec, answer, request_id)

    def _result(self, spec: ModelSpec, artifact: Artifact,
                request_id: str | None) -> ImageEditResult:
        filtered = artifact.finish_reason == FILTERED
        if filtered and not self.filtered_is_success:
            raise ProviderError(
                "Stability filtered the result (finish-reason CONTENT_FILTERED); the call is "
                "billed. EDITQ_STABILITY_FILTERED_IS_SUCCESS=true keeps such results",
                code="content_filtered", task_failed=True, billed=True)
        return ImageEditResult(
            images=[OutputImage(artifact.data, artifact.content_type)], provider=self.name,
            model=spec.id, provider_request_id=request_id,
            metadata={"finish_reason": artifact.finish_reason, "seed": artifact.seed,
                      "content_filtered": filtered},
        )
