"""Looking at a submitted request without holding a thread: the in-flight engine's half
of a provider (see shared.inflight).

A provider's synchronous `poll()` and its asynchronous `Looker.look()` read the
same answer with the same function, so the two paths cannot disagree about what
"still running", "done" and "failed" mean; only the transport differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from shared.errors import ProviderError
from shared.providers.classify import POLL_TRANSPORT

# What a provider makes of the answer to one look: None while the request runs, the
# provider's own answer (for `collect()`) once it is done; raises ProviderError if it failed.
ReadAnswer = Callable[[httpx.Response], Any]


class Looker:
    """One pooled `httpx.AsyncClient` (keep-alive) for every look at one provider.

    It must be made and used on one event loop: the engine makes it on its own.
    """

    def __init__(self, provider: str, client: httpx.AsyncClient,
                 path: Callable[[str], str], read: ReadAnswer,
                 headers: dict[str, str] | None = None) -> None:
        self.provider = provider
        self.http = client
        self._path = path
        self._read = read
        self._headers = headers or {}

    async def look(self, request_id: str) -> Any:
        try:
            response = await self.http.get(self._path(request_id), headers=self._headers)
        except httpx.TransportError as exc:
            raise ProviderError(f"could not read {self.provider} request {request_id}: "
                                f"{type(exc).__name__}", code=POLL_TRANSPORT.code,
                                retryable=POLL_TRANSPORT.retryable) from exc
        return self._read(response)

    async def aclose(self) -> None:
        await self.http.aclose()


def async_client(base_url: str, headers: dict[str, str], *, timeout: float,
                 max_connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_connections)
    return httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, limits=limits,
                             follow_redirects=False,
                             timeout=httpx.Timeout(timeout, connect=5.0))
