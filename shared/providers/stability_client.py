"""editq's own HTTP client for Stability AI's REST v2beta Stable Image API.

Sync endpoints answer the POST with the image; async ones answer an id that
is read at `GET /v2beta/results/{id}` (202 while running). As with WaveSpeed,
a POST that was sent but not answered is an ambiguous outcome and is never
sent again.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import httpx

from shared.errors import ProviderError, ProviderOutcomeUnknown
from shared.providers.classify import (
    AMBIGUOUS,
    ERROR_NAMES,
    http_error,
    parse_retry_after,
)
from shared.providers.http import post_once
from shared.providers.looks import Answer

Files = list[tuple[str, tuple[str, bytes, str]]]


@dataclass(frozen=True)
class Artifact:
    """An image Stability produced, with what its headers said about it."""

    data: bytes
    content_type: str
    finish_reason: str
    seed: str | None


def _error(response: httpx.Response | Answer) -> ProviderError:
    """Stability's error body is {id, name, errors: [...]}; the name refines the status."""
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    try:
        body = response.json()
        name = str(body.get("name", ""))
        message = "; ".join(str(e) for e in body.get("errors") or []) or name
    except (ValueError, AttributeError):
        name, message = "", response.text[:200]
    rule = ERROR_NAMES.get(name)
    if rule is not None:
        return ProviderError(f"HTTP {response.status_code} {name}: {message}", code=rule.code,
                             retryable=rule.retryable, retry_after=retry_after,
                             http_status=response.status_code)
    return http_error(response.status_code, f"{name}: {message}" if name else message,
                      retry_after)


class StabilityClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 120.0,
                 look_timeout: float = 10.0, accept_json: bool = False,
                 max_connections: int = 200) -> None:
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        self.accept = "application/json" if accept_json else "image/*"
        self.base_url = base_url
        self.headers = {"authorization": f"Bearer {api_key}", "stability-client-id": "editq"}
        self.look_timeout = look_timeout
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), limits=limits, follow_redirects=False,
            headers=self.headers, timeout=httpx.Timeout(look_timeout, connect=5.0),
        )
        self.timeout = timeout

    def close(self) -> None:
        self.http.close()

    def _artifact(self, response: httpx.Response | Answer) -> Artifact:
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            return Artifact(base64.b64decode(body["image"]), "application/octet-stream",
                            str(body.get("finish_reason") or "SUCCESS"),
                            str(body["seed"]) if body.get("seed") is not None else None)
        return Artifact(response.content, response.headers.get("content-type", ""),
                        response.headers.get("finish-reason", "SUCCESS"),
                        response.headers.get("seed"))

    def submit(self, path: str, fields: dict[str, str], files: Files) -> Artifact | str:
        """POST an operation: the artifact (sync endpoints) or a result id (async ones)."""
        response = post_once(self.http, "Stability", f"/v2beta/stable-image/{path}",
                             data=fields, files=files, headers={"accept": self.accept},
                             timeout=httpx.Timeout(self.timeout, connect=5.0))
        if response.status_code != 200:
            raise _error(response)
        try:
            if response.headers.get("content-type", "").startswith("image/"):
                return self._artifact(response)
            body: dict[str, Any] = response.json()
            if "image" in body:
                return self._artifact(response)
            return str(body["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderOutcomeUnknown("unreadable answer from Stability",
                                         code=AMBIGUOUS.code) from exc

    @staticmethod
    def result_path(result_id: str) -> str:
        return f"/v2beta/results/{result_id}"

    def read_result(self, response: httpx.Response | Answer) -> Artifact | None:
        if response.status_code == 202:
            return None
        if response.status_code == 404:
            # A result that completed and then expired was billed; one that vanished
            # unfinished was not. Which one, editq cannot tell: its cost stays unknown.
            raise ProviderError("Stability no longer has this result (expired or unknown)",
                                code="provider_result_expired", task_failed=True,
                                billing_unknown=True)
        if response.status_code != 200:
            raise _error(response)
        return self._artifact(response)
