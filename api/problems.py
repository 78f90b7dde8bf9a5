"""The one place where errors become RFC 9457 problem+json responses."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from shared.errors import EditqError

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://editq.dev/problems/"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
               415: "unsupported_media_type"}


def problem(status: int, code: str, title: str, detail: str,
            extra: dict[str, Any] | None = None) -> JSONResponse:
    """A problem+json response; `extra` members never override the standard ones."""
    body = {**(extra or {}), "type": PROBLEM_TYPE + code, "title": title, "status": status,
            "detail": detail, "code": code}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _json_safe(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EditqError)
    if exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    response = problem(exc.status, exc.code, exc.title, exc.message, _json_safe(exc.extra))
    if exc.retry_after and exc.status < 500:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": str(e.get("msg", ""))}
              for e in exc.errors()]
    first = errors[0] if errors else {"loc": "", "msg": "invalid request"}
    detail = f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
    # `field`, as every other 422 has it: the input's name (query.limit -> limit)
    loc = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    field = str(loc[-1]) if loc and loc[0] in ("query", "path", "header") else first["loc"]
    # `invalid_input`, as every other malformed input (the README's one code for it);
    # `errors` lists them all.
    return problem(422, "invalid_input", "Invalid input", detail,
                   {"errors": errors, "field": field})


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: routes are one per method, and
    Starlette's own Allow names only the first route's."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # The body could not be parsed: Starlette's multipart parser (its limits on parts,
        # field sizes and boundaries included) or FastAPI's JSON: invalid input like any
        # other, each with its own code.
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
        if content_type.lower() == "multipart/form-data":
            return problem(422, "invalid_multipart", "The multipart body could not be read",
                           f"the multipart body could not be read: {str(exc.detail)[:300]}",
                           {"field": "body"})
        return problem(422, "invalid_json", "The body is not valid JSON",
                       "the body could not be parsed as JSON", {"field": "body"})
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    response = problem(exc.status_code, code, str(exc.detail), str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    if exc.status_code == 405:
        response.headers["Allow"] = _allowed_methods(request)
    return response


async def _database(_: Request, exc: Exception) -> JSONResponse:
    """Pool exhausted or database unreachable: a retryable 503, never a bare 500."""
    log.warning("database unavailable: %s", type(exc).__name__)
    response = problem(503, "database_unavailable", "Database unavailable",
                       "the database is busy or unreachable; retry shortly")
    response.headers["Retry-After"] = "2"
    return response


async def _gone(request: Request, _: Exception) -> Response:
    """The client went away while its body was being read (a closed tab, a cancelled
    upload): nobody is left to answer, and nothing went wrong on our side."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal_error", "Internal error",
                   "something went wrong on our side; the request can be retried")


def install(app: FastAPI) -> None:
    app.add_exception_handler(EditqError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _database)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _database)
    app.add_exception_handler(ClientDisconnect, _gone)
    app.add_exception_handler(Exception, _unexpected)
