"""Serving the API: uvicorn with limits on a request's head, and an access log without
query strings.

Why a protocol of our own: uvicorn's fast HTTP parser (httptools) enforces no limit
on a request's head, and uvicorn has no setting for one. httptools gathers a header's
value by concatenation, so one connection sending a 128 MB header held the event loop
for 16 s (every other request waited) and 247 MB of memory; a connection that sends
nothing, or a byte now and then, was kept open for good. uvicorn's other parser, h11,
refuses a head over `h11_max_incomplete_event_size` (16 KiB by default) but limits
neither the count of headers nor the time to send them, and costs more CPU per request
than httptools. So editq keeps httptools and adds, before the parser sees the bytes:

- the head (request line and headers) at most `http_max_header_bytes`, else 431;
- at most `http_max_headers` header lines, else 431;
- a head received within `http_header_timeout_seconds` of its first byte, else 408;
  and a new connection's first byte within the keep-alive timeout, else it is closed.

These answers are written here, not by the app (which never sees the request), as
problem+json with a stable code, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.config import Settings

# An idle connection is kept longer than clients keep theirs (httpx, requests and
# browsers: 5 s or less), so the client closes first. With equal timeouts a request sent
# as the server closes the connection is lost (the keep-alive race seen in bench/).
KEEP_ALIVE_SECONDS = 65

_END_OF_HEAD = b"\r\n\r\n"
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _refusal(status: int, code: str, detail: str) -> bytes:
    body = json.dumps({"type": f"https://editq.dev/problems/{code}", "title": detail,
                       "status": status, "detail": detail, "code": code}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body))) + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits above on each request's head."""

    max_header_bytes = 64 * 1024
    max_headers = 100
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: a connection that never
        # sends a byte would otherwise be kept for good.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._awaiting_head and not self._head_fits(data):
            self._refuse(431, "header_too_large",
                         f"the request's head is over {self.max_header_bytes} bytes")
            return
        if self._awaiting_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)
        super().data_received(data)

    def _head_fits(self, data: bytes) -> bool:
        """Whether the head ends within its limit, counting only the bytes before the end
        of the head (a first read often holds the start of the body too)."""
        room = self.max_header_bytes - self._head_bytes
        seen = self._head_tail + data
        if seen.find(_END_OF_HEAD, 0, len(self._head_tail) + room + len(_END_OF_HEAD)) >= 0:
            return True
        self._head_bytes += len(data)
        self._head_tail = seen[-(len(_END_OF_HEAD) - 1):]
        return self._head_bytes <= self.max_header_bytes

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._refuse(431, "too_many_headers",
                         f"the request has more than {self.max_headers} headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._awaiting_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():  # (refused: the parser may still see a body)
            super().on_body(body)

    def on_message_complete(self) -> None:
        # What follows on this connection is the next request's head.
        self._awaiting_head, self._head_bytes, self._head_tail = True, 0, b""
        self._header_count = 0
        if not self.transport.is_closing():
            super().on_message_complete()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._awaiting_head:
            self._refuse(408, "header_timeout",
                         f"the request's head took over {self.header_timeout:g} s to arrive")

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.logger.warning("refused a request: %s", detail)
            self.transport.write(_refusal(status, code, detail))
            self.transport.close()


def protocol_for(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with this deployment's limits (a class per process, made at
    start: uvicorn builds one protocol object per connection from it)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {
        "max_header_bytes": settings.http_max_header_bytes,
        "max_headers": settings.http_max_headers,
        "header_timeout": settings.http_header_timeout_seconds})


# The query string of a logged request line: `?` and everything up to the HTTP version.
_QUERY = re.compile(r"\?[^ ]*")


class QuerylessAccessLog(logging.Filter):
    """Access log lines without query strings: a key sent by mistake as `?api_key=` (or
    any other secret a client puts in a URL) is never written to a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _QUERY.sub("", args[2]), *args[3:])
        return True


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's own logging, with the access log's filter; editq's loggers write in the
    worker's format ("time LEVEL logger message")."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = json.loads(json.dumps(LOGGING_CONFIG))
    config["filters"] = {"queryless": {"()": QuerylessAccessLog}}
    config["handlers"]["access"]["filters"] = ["queryless"]
    config["formatters"]["editq"] = {
        "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    config["handlers"]["editq"] = {"class": "logging.StreamHandler", "formatter": "editq",
                                   "stream": "ext://sys.stderr"}
    config["loggers"]["uvicorn"]["level"] = level.upper()
    config["loggers"]["uvicorn.access"]["level"] = level.upper()
    config["root"] = {"handlers": ["editq"], "level": "INFO"}
    return config


def serve(settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run("api.app:create_app", factory=True, host=host, port=port,
                http=protocol_for(settings), timeout_keep_alive=KEEP_ALIVE_SECONDS,
                log_config=log_config(log_level), log_level=log_level.lower())
