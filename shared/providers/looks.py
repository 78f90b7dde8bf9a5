"""Looking at a submitted request without holding a thread: the in-flight engine's half
of a provider (see shared.inflight).

A provider's synchronous `poll()` and its asynchronous `Looker.look()` read the same
answer with the same function, so the two paths cannot disagree about what "still
running", "done" and "failed" mean; only the transport differs.

Why aiohttp here when every other HTTP call of editq is httpx: a look is the one
request editq makes thousands of times a minute, and on this machine (2 cores,
loopback; bench/http_clients.py, results/http_clients.json) httpx.AsyncClient spent
1.4 ms of CPU per GET with one connection and 3.3 ms with 16 (httpcore scans its
whole pool at each request), where aiohttp spent 0.16-0.22 ms. The answer is read
into an `Answer` (status, headers, body) so that the providers' readers stay
transport-neutral.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from shared.errors import ProviderError
from shared.providers.classify import LOOK_TRANSPORT


@dataclass(frozen=True)
class Answer:
    """What a provider answered, whichever client read it."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


# What a provider makes of the answer to one look: None while the request runs, the
# provider's own answer (for `collect()`) once it is done; raises ProviderError if it failed.
ReadAnswer = Callable[[Answer], Any]


class Looker:
    """One pooled keep-alive session for every look at one provider.

    It must be made and used on one event loop: the engine makes it on its own.
    """

    def __init__(self, provider: str, base_url: str, headers: dict[str, str],
                 path: Callable[[str], str], read: ReadAnswer, *, timeout: float,
                 connections: int, max_bytes: int) -> None:
        self.provider = provider
        self._base = base_url.rstrip("/")
        self._headers = headers
        self._path = path
        self._read = read
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=5.0)
        self._connections = connections
        self._max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections))
        return self._session

    async def look(self, request_id: str) -> Any:
        try:
            async with self._client().get(self._base + self._path(request_id),
                                          allow_redirects=False) as response:
                body = await response.content.read(self._max_bytes + 1)
                if len(body) > self._max_bytes:
                    raise ProviderError(f"{self.provider} answered a look with over "
                                        f"{self._max_bytes} bytes",
                                        code="provider_bad_output", task_failed=True)
                answer = Answer(response.status, response.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(f"could not read {self.provider} request {request_id}: "
                                f"{type(exc).__name__}", code=LOOK_TRANSPORT.code,
                                retryable=LOOK_TRANSPORT.retryable) from exc
        return self._read(answer)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
