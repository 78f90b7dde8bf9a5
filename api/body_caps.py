"""Request bodies capped as their bytes arrive, for every route and content type.

A pure ASGI middleware, because the cap must hold before anything parses the body
and with or without a Content-Length: a declared length over the cap is refused
before a byte is read; otherwise the bytes are counted as they are received, and
the first chunk past the cap ends the request with a 413 (`Connection: close`, so
the rest is never read). A request over its cap thus costs at most the cap in
memory (and disk, for multipart spooling). Starlette has no such limit of its own
(its multipart parser bounds parts, not the body); hence this module.

The caps, per route, from what a legitimate request needs:

- an edit (`POST /v1/jobs`, `/v1/quotes`, `/v1/comparisons`): every image a job may
  carry, as base64 (4/3 of its bytes), plus 1 MiB for the rest, and at most
  `EDITQ_MAX_INLINE_BODY_BYTES` (32 MiB): larger images go by URL or upload, as the
  413 says (`edit_body_limit`);
- a batch (`POST /v1/batches`): its JSONL upload's cap, `EDITQ_BATCH_MAX_UPLOAD_BYTES`;
- everything else (votes, rotations, provider callbacks): 1 MiB.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import MiB, Settings
from shared.errors import RequestTooLarge

OTHER_LIMIT = MiB
EDIT_PATHS = ("/v1/jobs", "/v1/quotes", "/v1/comparisons")


def edit_body_limit(settings: Settings) -> int:
    """Every image a job may carry, as base64, and 1 MiB of prompt, options and fields, up
    to EDITQ_MAX_INLINE_BODY_BYTES. (A mask travels only with one image, so the largest
    request is images alone.)"""
    every_image = (settings.max_image_bytes * 4 // 3 + 4) * settings.max_images_per_job + MiB
    return min(every_image, settings.max_inline_body_bytes)


# What a 413 on an edit route adds: where larger images go.
EDIT_HINT = "; send larger images by URL or as an upload (POST /v1/uploads)"


def body_limit(settings: Settings, method: str, path: str) -> int:
    if method == "POST" and path in EDIT_PATHS:
        return edit_body_limit(settings)
    if method == "POST" and path == "/v1/batches":
        return settings.batch_max_upload_bytes + MiB
    return OTHER_LIMIT


class _Over(RequestTooLarge):
    """Raised into the app from `receive` once the body passes its cap."""


def _problem(limit: int, hint: str) -> bytes:
    return json.dumps({
        "type": "https://editq.dev/problems/request_too_large", "title": "Request too large",
        "status": 413, "code": "request_too_large", "limit": limit,
        "detail": f"the request body is over {limit} bytes{hint}"}).encode()


class BodyCapMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(self.settings, scope["method"], scope["path"])
        hint = EDIT_HINT if scope["path"] in EDIT_PATHS else ""
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit, hint)
            return
        received = 0
        over = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _Over(f"the request body is over {limit} bytes", limit=limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # whatever the app answers, the answer is the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_Over):  # the app let it through: answered below
            await self.app(scope, capped_receive, guarded_send)
        if over and not started:
            await _refuse(send, limit, hint)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None
    return None


async def _refuse(send: Send, limit: int, hint: str) -> None:
    body = _problem(limit, hint)
    headers: list[Any] = [(b"content-type", b"application/problem+json"),
                          (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
