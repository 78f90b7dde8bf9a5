"""WaveSpeed's 14 editing models behind `ImageEditProvider`, driven by the catalog.

Request building is generic: the catalog says which field takes the images
(`image` or `images[]`) and the mask, and option names are WaveSpeed's own,
so a new WaveSpeed model needs a catalog entry and nothing here.
"""

from __future__ import annotations

import base64
from typing import Any

from shared.errors import ProviderError
from shared.images import sniff_content_type
from shared.providers.base import (
    ImageEditOptions,
    ImageEditResult,
    OutputImage,
    Submitted,
)
from shared.providers.catalog import ModelSpec
from shared.providers.classify import task_error
from shared.providers.looks import Looker
from shared.providers.wavespeed_client import WaveSpeedClient

PENDING = {"created", "processing", "pending", "queued"}


def data_uri(data: bytes) -> str:
    return f"data:{sniff_content_type(data)};base64,{base64.b64encode(data).decode()}"


def build_request(spec: ModelSpec, options: ImageEditOptions) -> dict[str, Any]:
    """The JSON body of `POST /api/v3/{model_path}` for this model."""
    body: dict[str, Any] = {}
    if options.prompt:
        body["prompt"] = options.prompt
    # Stored inputs as URLs WaveSpeed fetches itself, when the worker was given them;
    # else the bytes, as data URIs.
    uris = options.image_urls or [data_uri(image) for image in options.images]
    if spec.images.field == "images":
        body["images"] = uris
    else:
        body[spec.images.field] = uris[0]
    if options.mask_url is not None:
        body[spec.mask_field] = options.mask_url
    elif options.mask is not None:
        body[spec.mask_field] = data_uri(options.mask)
    if options.negative_prompt:
        body["negative_prompt"] = options.negative_prompt
    body.update(options.extra)  # checked against the catalog: WaveSpeed's own names
    return body


class WaveSpeedEditProvider:
    name = "wavespeed"
    min_look_seconds = 0.0
    webhooks = True
    fetches_urls = True

    def __init__(self, client: WaveSpeedClient, max_output_bytes: int) -> None:
        self.client = client
        self.max_output_bytes = max_output_bytes

    def validate(self, spec: ModelSpec, options: ImageEditOptions) -> None:
        return None  # the catalog's checks are the whole contract

    def submit(self, spec: ModelSpec, options: ImageEditOptions,
               webhook_url: str | None = None) -> Submitted:
        data = self.client.submit(spec.model_path, build_request(spec, options), webhook_url)
        request_id = data.get("id")
        if not request_id:
            raise ProviderError("WaveSpeed accepted the task but gave no id",
                                code="provider_bad_response")
        return Submitted(request_id=str(request_id))

    def looker(self, concurrency: int) -> Looker:
        client = self.client
        return Looker(self.name, client.base_url, client.headers, client.result_path,
                      lambda answer: self.finished(client.read_result(answer)),
                      timeout=client.look_timeout, connections=concurrency,
                      max_bytes=1 << 20)

    @staticmethod
    def finished(data: dict[str, Any]) -> dict[str, Any] | None:
        """The task's data once it completed, None while it runs; raises if it failed."""
        status = str(data.get("status", ""))
        if status in PENDING:
            return None
        if status == "completed":
            return data
        if status == "failed":
            code = data.get("code")
            raise task_error(int(code) if isinstance(code, int | str) and str(code).isdigit()
                             else None, str(data.get("error") or "task failed"))
        if status == "timeout":
            raise task_error(5004, "WaveSpeed timed the task out")
        raise ProviderError(f"WaveSpeed task ended as {status!r}",
                            code="provider_task_canceled", task_failed=True)

    def collect(self, spec: ModelSpec, request_id: str, data: Any) -> ImageEditResult:
        """The outputs of a completed task, downloaded (blocking: off the event loop)."""
        return self._result(spec, request_id, data)

    def _result(self, spec: ModelSpec, request_id: str, data: dict[str, Any]) -> ImageEditResult:
        images = []
        for output in data.get("outputs") or []:
            text = str(output)
            if text.startswith(("http://", "https://")):
                raw = self.client.download(text, self.max_output_bytes)
            else:  # enable_base64_output: bare base64
                raw = base64.b64decode(text.split(",", 1)[-1])
            images.append(OutputImage(raw, "application/octet-stream"))
        if not images:
            raise ProviderError("WaveSpeed completed the task with no outputs",
                                code="provider_bad_output", task_failed=True)
        return ImageEditResult(
            images=images, provider=self.name, model=spec.id, provider_request_id=request_id,
            metadata={"has_nsfw_contents": data.get("has_nsfw_contents") or [],
                      "inference_ms": (data.get("timings") or {}).get("inference")},
        )
