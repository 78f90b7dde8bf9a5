"""Fetching a URL someone else wrote, from inside our network: an image URL a user gave,
an output URL a provider answered.

Each hop (the URL, then every redirect, followed by hand) goes through the address
guard unless its host is trusted: the guard resolves the host, refuses it unless every
address is public, and the connection is pinned to an address it checked (DNS
rebinding). The body is streamed and refused past its cap, so a fetch never holds more
than `max_bytes`. What went wrong is one of two kinds, for the caller to name in its
own terms: refused (the URL, a redirect or the size; trying again changes nothing) or
failed (no answer, an error status, a timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from shared.address_guard import UnsafeWebhookUrl, check_webhook_url, parse_url, pinned_request

MAX_REDIRECTS = 5


class FetchRefused(Exception):
    """Not fetched, and fetching again would not change that."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FetchFailed(Exception):
    """No usable answer: a connection error, a timeout, or an error status (`status`)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str


def shown(url: str) -> str:
    """A URL as messages may show it: scheme and host only (a presigned URL's path and
    query carry its signature)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/..."


def fetch(client: httpx.Client, url: str, *, max_bytes: int,
          trusted: Callable[[str, int], bool], https_only: bool = False) -> Fetched:
    """GET `url` (following up to MAX_REDIRECTS redirects), at most `max_bytes` of it.

    `trusted(host, port)` exempts a host from the guard (and from `https_only`)."""
    try:
        for _ in range(MAX_REDIRECTS + 1):
            target, headers, extensions = _guarded(url, trusted, https_only)
            with client.stream("GET", target, headers=headers,
                               extensions=extensions) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise FetchFailed(f"{shown(url)} answered {response.status_code}",
                                      status=response.status_code)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchRefused(f"{shown(url)} serves {int(declared)} bytes, over the "
                                       f"limit of {max_bytes}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchRefused(f"{shown(url)} serves over {max_bytes} bytes")
                    chunks.append(chunk)
                return Fetched(b"".join(chunks), response.headers.get("content-type", ""))
    except httpx.TransportError as exc:
        raise FetchFailed(f"{shown(url)}: {type(exc).__name__}") from exc
    raise FetchRefused(f"{shown(url)}: more than {MAX_REDIRECTS} redirects")


def _guarded(url: str, trusted: Callable[[str, int], bool],
             https_only: bool) -> tuple[str, dict[str, str], dict[str, object]]:
    try:
        scheme, host, port, _ = parse_url(url)
        if trusted(host, port):
            return url, {}, {}
        if https_only and scheme != "https":
            raise FetchRefused(f"{shown(url)} is not https")
        addresses = check_webhook_url(url)
    except UnsafeWebhookUrl as exc:
        raise FetchRefused(exc.message.replace("webhook_url refused: ", "")) from None
    return pinned_request(url, addresses[0])
