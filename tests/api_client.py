"""The suite's raw HTTP helper for editq's API: each answer the dict the API sent, each
problem an `ApiError` with its status and problem object, and no retries but one for a
batch POST with a key, so that a test sees exactly what the API did.

(It was the CLI's own client until the CLI moved to editq_client, clients/python: tests
and benchmarks that want typed results, retries and streams use editq_client.)"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled"}
BATCH_FINISHED = {"completed", "canceled"}
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class ApiError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem


class ApiClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 90.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                 headers={"Authorization": f"Bearer {api_key}"})

    @staticmethod
    def _raise_for_problem(response: httpx.Response) -> None:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            if not isinstance(problem, dict):
                problem = {"detail": str(problem)}
            raise ApiError(response.status_code, problem)

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        self._raise_for_problem(response)
        body: dict[str, Any] = response.json()
        return body

    # Files larger than this travel as direct uploads (POST /v1/uploads), not in the body.
    upload_over = 4 * 1024 * 1024

    def upload(self, data: bytes) -> str:
        """Send an image straight to storage through a presigned request; its upload id."""
        content_type = _sniff(data)
        slot = self._check(self.http.post("/v1/uploads", json={
            "content_type": content_type, "size": len(data)}))
        sent = httpx.request(slot["method"], slot["url"], content=data,
                             headers=slot["headers"], timeout=self.http.timeout)
        if sent.status_code >= 300:
            raise ApiError(sent.status_code, {"code": "upload_failed",
                                              "detail": f"storage answered {sent.status_code}"})
        return str(slot["id"])

    def image_field(self, image: bytes | str) -> str:
        """An image as a field of a request: a URL or upload id as given, a small file as
        base64, a large one uploaded first and named by its upload id."""
        if isinstance(image, str):
            return image
        if len(image) > self.upload_over:
            return self.upload(image)
        return base64.b64encode(image).decode()

    def submit(self, image: bytes | str | list[bytes | str], *, prompt: str | None = None,
               operation: str | None = None, model: str | None = None,
               options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
               mask: bytes | str | None = None, negative_prompt: str | None = None,
               idempotency_key: str | None = None,
               deadline_seconds: int | None = None, webhook_url: str | None = None,
               webhook_events: list[str] | None = None,
               retention: dict[str, float] | None = None,
               priority: str | None = None) -> dict[str, Any]:
        """Submit one image, or a list of images (sent as `images[]`): each the file's
        bytes, an https:// URL or an upload id. `retention`: {"inputs_days": n,
        "outputs_days": n}, how long its images are kept after it ends. Without an
        `operation`, the model's only one, else general_edit."""
        body: dict[str, Any] = {"options": options or {}, "metadata": metadata or {}}
        if isinstance(image, list):
            body["images"] = [self.image_field(i) for i in image]
        else:
            body["image"] = self.image_field(image)
        if mask is not None:
            body["mask"] = self.image_field(mask)
        optional = {"negative_prompt": negative_prompt, "prompt": prompt, "model": model,
                    "operation": operation,
                    "deadline_seconds": deadline_seconds, "webhook_url": webhook_url,
                    "webhook_events": webhook_events, "retention": retention,
                    "priority": priority}
        body.update({name: value for name, value in optional.items() if value is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/v1/jobs", json=body, headers=headers))

    # Comparisons

    def compare(self, image: bytes | str, models: list[str], *, prompt: str | None = None,
                operation: str | None = None, options: dict[str, Any] | None = None,
                metadata: dict[str, Any] | None = None, idempotency_key: str | None = None,
                mask: bytes | str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"image": self.image_field(image), "models": models,
                                "options": options or {}, "metadata": metadata or {}}
        optional = {"prompt": prompt, "operation": operation,
                    "mask": None if mask is None else self.image_field(mask)}
        body.update({name: value for name, value in optional.items() if value is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/v1/comparisons", json=body, headers=headers))

    def get_comparison(self, comparison_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/comparisons/{comparison_id}"))

    def vote(self, comparison_id: str, model: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/comparisons/{comparison_id}/vote",
                                          json={"model": model}))

    def get(self, job_id: str, wait: int = 0) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}", params={"wait": wait}))

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job["status"] not in TERMINAL and time.monotonic() < deadline:
            job = self.get(job_id, wait=int(min(30, max(1, deadline - time.monotonic()))))
        return job

    def models(self, operation: str | None = None) -> dict[str, Any]:
        params = {"operation": operation} if operation else {}
        return self._check(self.http.get("/v1/models", params=params))

    def save_outputs(self, job: dict[str, Any], out_dir: Path,
                     stem: str | None = None) -> list[Path]:
        """Each output as `<stem>.<ext>` (then -1, -2...), the stem the job's id unless
        given."""
        paths = []
        for index, output in enumerate(job["outputs"]):
            data = httpx.get(output["url"], timeout=60).raise_for_status().content
            name = f"{stem or job['id']}" + (f"-{index}" if index or not stem else "")
            path = out_dir / f"{name}.{_EXT.get(output['content_type'], 'bin')}"
            path.write_bytes(data)
            paths.append(path)
        return paths

    # Batches

    def submit_batch(self, jsonl: bytes, *, defaults: dict[str, Any] | None = None,
                     on_error: str = "reject", dry_run: bool = False,
                     webhook_url: str | None = None, webhook_events: list[str] | None = None,
                     metadata: dict[str, Any] | None = None,
                     filename: str = "items.jsonl",
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """Upload a JSONL file of job requests (one POST /v1/jobs body per line) as a
        batch: the batch (202), or the dry run's count and estimate (200)."""
        fields: dict[str, str] = {"on_error": on_error}
        if defaults:
            fields["defaults"] = json.dumps(defaults)
        if metadata:
            fields["metadata"] = json.dumps(metadata)
        if dry_run:
            fields["dry_run"] = "true"
        if webhook_url is not None:
            fields["webhook_url"] = webhook_url
        if webhook_events is not None:
            fields["webhook_events"] = ",".join(webhook_events)
        return self._post_batch(idempotency_key, data=fields,
                                files={"file": (filename, jsonl, "application/x-ndjson")})

    def create_batch(self, body: dict[str, Any],
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/batches as JSON: {items | reprocess, defaults, on_error, dry_run, ...}."""
        return self._post_batch(idempotency_key, json=body)

    def _post_batch(self, idempotency_key: str | None, **request: Any) -> dict[str, Any]:
        """With a key, a POST whose answer was lost on the way is sent once more: the key
        makes the API answer the batch the first one made, if it made one."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            return self._check(self.http.post("/v1/batches", headers=headers, **request))
        except httpx.TransportError:
            if not idempotency_key:
                raise
            return self._check(self.http.post("/v1/batches", headers=headers, **request))

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/batches/{batch_id}"))

    def list_batches(self, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return self._check(self.http.get("/v1/batches", params=params))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/batches/{batch_id}/cancel"))

    def batch_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """The batch's results, one per job in batch order, read as they stream in."""
        with self.http.stream("GET", f"/v1/batches/{batch_id}/results") as response:
            if response.status_code >= 400:
                response.read()
                self._raise_for_problem(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
