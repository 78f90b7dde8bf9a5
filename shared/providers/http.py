"""The submit safety rule, once for every provider client.

A POST that starts paid work is sent at most once: a failure to connect
means nothing was sent (safe to retry); any other transport failure means it
may have arrived (the outcome is unknown, and it is never sent again).
"""

from __future__ import annotations

from typing import Any

import httpx

from shared.errors import ProviderError, ProviderOutcomeUnknown
from shared.providers.classify import AMBIGUOUS, NOT_SENT


def post_once(client: httpx.Client, provider: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.post(url, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ProviderError(f"could not connect to {provider}: {type(exc).__name__}",
                            code=NOT_SENT.code, retryable=NOT_SENT.retryable) from exc
    except httpx.TransportError as exc:
        raise ProviderOutcomeUnknown(
            f"{provider} did not answer the submit ({type(exc).__name__}); the request may "
            "have been accepted and billed, so it is not sent again",
            code=AMBIGUOUS.code) from exc
