"""A small HTTP client for editq's API, used by `editq submit` and the demo."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled"}
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

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            raise ApiError(response.status_code, problem)
        body: dict[str, Any] = response.json()
        return body

    def submit(self, image: bytes | list[bytes], *, prompt: str | None = None,
               operation: str = "general_edit", model: str | None = None,
               options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
               mask: bytes | None = None, negative_prompt: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit one image, or a list of images (sent as `images[]`)."""
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        body: dict[str, Any] = {"operation": operation, "options": options or {},
                                "metadata": metadata or {}}
        if isinstance(image, list):
            body["images"] = [b64(i) for i in image]
        else:
            body["image"] = b64(image)
        if mask is not None:
            body["mask"] = b64(mask)
        if negative_prompt is not None:
            body["negative_prompt"] = negative_prompt
        if prompt is not None:
            body["prompt"] = prompt
        if model is not None:
            body["model"] = model
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/v1/jobs", json=body, headers=headers))

    def get(self, job_id: str, wait: int = 0) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}", params={"wait": wait}))

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job["status"] not in TERMINAL and time.monotonic() < deadline:
            job = self.get(job_id, wait=int(min(30, max(1, deadline - time.monotonic()))))
        return job

    def save_outputs(self, job: dict[str, Any], out_dir: Path) -> list[Path]:
        paths = []
        for index, output in enumerate(job["outputs"]):
            data = httpx.get(output["url"], timeout=60).raise_for_status().content
            path = out_dir / f"{job['id']}-{index}.{_EXT.get(output['content_type'], 'bin')}"
            path.write_bytes(data)
            paths.append(path)
        return paths
