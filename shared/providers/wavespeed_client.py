"""editq's own HTTP client for WaveSpeed's REST API v3.

Safety rule, as in WaveSpeed's SDK: the submit POST is sent at most once. A
timeout or a dropped connection after sending is an ambiguous outcome (the
task may exist and be billed), reported as `ProviderOutcomeUnknown`; only a
failure to connect at all is safe to retry. Result GETs are idempotent and
are retried on 429, 5xx and connection errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from shared.errors import ProviderError, ProviderOutcomeUnknown
from shared.fetching import FetchFailed, FetchRefused, fetch, shown
from shared.providers.classify import (
    AMBIGUOUS,
    LOOK_TRANSPORT,
    http_error,
    parse_retry_after,
)
from shared.providers.http import post_once
from shared.providers.looks import Answer

_RETRY_GET = {429, 500, 502, 503, 504}


def _message(response: httpx.Response | Answer) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:500]
    return str(body)[:500]


class WaveSpeedClient:
    def __init__(self, base_url: str, api_key: str, *, submit_timeout: float = 30.0,
                 look_timeout: float = 10.0, download_timeout: float = 60.0,
                 max_connections: int = 200,
                 trusted_hosts: Iterable[str] = ()) -> None:
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}",
                        "Content-Type": "application/json"}
        self.look_timeout = look_timeout
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), limits=limits, follow_redirects=False,
            headers=self.headers, timeout=httpx.Timeout(look_timeout, connect=5.0),
        )
        # Output URLs point at a CDN: they never get the API key. Redirects are followed
        # by hand (`download`), each hop through the address guard.
        self.downloads = httpx.Client(limits=limits, follow_redirects=False,
                                      timeout=httpx.Timeout(download_timeout, connect=5.0))
        # Hosts trusted without the guard: WaveSpeed's own (its base URL: in development,
        # the simulator serves its outputs itself) and EDITQ_OUTPUT_ALLOWED_HOSTS.
        self.trusted_hosts = frozenset({*(h.lower() for h in trusted_hosts),
                                        (urlsplit(base_url).hostname or "").lower()})
        self.submit_timeout = submit_timeout
        self._webhook_secret: str | None = None

    def close(self) -> None:
        self.http.close()
        self.downloads.close()

    @staticmethod
    def _data(response: httpx.Response | Answer) -> dict[str, Any]:
        if response.status_code != 200:
            raise http_error(response.status_code, _message(response),
                             parse_retry_after(response.headers.get("retry-after")))
        try:
            envelope = response.json()
            data = envelope["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError("WaveSpeed answered with an unexpected body",
                                code="provider_bad_response", retryable=True) from exc
        if envelope.get("code", 200) != 200 or not isinstance(data, dict):
            raise http_error(int(envelope.get("code") or 500), _message(response))
        return data

    def submit(self, model_path: str, body: dict[str, Any],
               webhook_url: str | None = None) -> dict[str, Any]:
        params = {"webhook": webhook_url} if webhook_url else None
        response = post_once(self.http, "WaveSpeed", f"/api/v3/{model_path}", json=body,
                             params=params,
                             timeout=httpx.Timeout(self.submit_timeout, connect=5.0))
        if response.status_code == 504:
            raise ProviderOutcomeUnknown(
                "WaveSpeed answered 504 to the submit; the task may still run",
                code=AMBIGUOUS.code)
        try:
            return self._data(response)
        except ProviderError as exc:
            if exc.code == "provider_bad_response" or response.status_code == 200:
                # A 200 we cannot read may still have created a task.
                raise ProviderOutcomeUnknown(f"unreadable answer to the submit: {exc.message}",
                                             code=AMBIGUOUS.code) from exc
            raise

    @staticmethod
    def result_path(request_id: str) -> str:
        return f"/api/v3/predictions/{request_id}/result"

    def read_result(self, response: httpx.Response | Answer) -> dict[str, Any]:
        """The task's data from the answer to one result GET (retryable errors raised)."""
        if response.status_code in _RETRY_GET:
            raise http_error(response.status_code, _message(response),
                             parse_retry_after(response.headers.get("retry-after")))
        return self._data(response)

    def download(self, url: str, max_bytes: int) -> bytes:
        """Stream an output, refusing it past `max_bytes` rather than filling memory.

        The URL, and every redirect's, must pass the webhooks' address guard (public
        addresses only, the connection pinned to the address checked) unless its host
        is trusted: an output URL is written by someone else, and must not make this
        worker fetch from its own network (shared.fetching)."""
        try:
            return fetch(self.downloads, url, max_bytes=max_bytes,
                         trusted=lambda host, _port: host in self.trusted_hosts).data
        except FetchRefused as exc:
            # The task finished (and was billed); its output cannot be fetched safely.
            raise ProviderError(f"output refused: {exc.message}", code="provider_bad_output",
                                task_failed=True, billed=True) from exc
        except FetchFailed as exc:
            if exc.status is not None:
                raise http_error(exc.status, f"downloading {shown(url)}") from exc
            raise ProviderError(f"could not download output: {exc.message}",
                                code=LOOK_TRANSPORT.code, retryable=True) from exc

    def webhook_secret(self) -> str:
        """The account's callback-signing secret, asked once per process: a secret
        rotated at WaveSpeed takes effect here at the next restart."""
        if self._webhook_secret is None:
            data = self._data(self.http.get("/api/v3/webhook/secret"))
            self._webhook_secret = str(data["secret"])
        return self._webhook_secret
