"""A simulator of Stability AI's REST v2beta Stable Image edit and upscale API (PROVIDERS.md).

editq's Stability client is tested against it over real HTTP on loopback.
aiohttp, like the WaveSpeed simulator, because faults must be able to reset a
TCP connection mid-request. Sync operations hold the POST for the sampled
latency and answer the image; async ones (relight, creative upscale) answer an
id to poll at `GET /v2beta/results/{id}`.

Besides the provider's endpoints it serves `/_sim/...` admin endpoints
(stability_admin.py): no key, no rate limit, no faults.

(Over 300 lines: one handler per endpoint of the provider's API.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from simulators.common import (
    IMAGE_FORMATS,
    Latency,
    SlidingWindowLimit,
    abort_connection,
    hang,
)
from simulators.stability_admin import add_admin_routes
from simulators.stability_ops import OPERATIONS, Rejected, Upload, Valid, validate
from simulators.stability_render import Undecodable, check_decodes, render
from simulators.stability_state import STATE, SimState, parse_faults

log = logging.getLogger(__name__)


@dataclass
class StabilitySimConfig:
    """How one simulator instance behaves; specs are checked when the config is made."""

    api_key: str | None = None
    """The only key accepted; None accepts any non-empty bearer key."""
    latency: str = "1"
    """How long a generation takes: '5', '2-8' (uniform) or 'normal:5,1'."""
    faults: str = ""
    """Random faults, e.g. '500=0.1,moderation=0.05,expired=0.01@result'."""
    seed: int | None = None
    rate_limit: int = 150
    """Requests allowed in any `rate_window` seconds; the one over it starts a lockout."""
    rate_window: float = 10.0
    lockout: float = 60.0
    result_ttl: float = 86_400.0
    """Seconds an async result stays readable after it completes."""
    max_body_bytes: int = 10 * 1024 * 1024
    slow_seconds: float = 3.0
    hang_seconds: float = 600.0
    fault_retry_after: int = 1
    """The Retry-After of an injected `429` fault."""
    request_log_size: int = 1000

    def __post_init__(self) -> None:
        Latency.parse(self.latency)
        parse_faults(self.faults)
        SlidingWindowLimit(self.rate_limit, self.rate_window, self.lockout)
        if self.result_ttl < 0:
            raise ValueError("result_ttl must be >= 0")


FAULT = web.RequestKey("stability_fault", str)
CLIENT_HEADERS = ("stability-client-id", "stability-client-user-id", "stability-client-version")
ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 429: "rate_limit_exceeded",
               500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}
HTTP_FAULTS = {"429": 429, "429-bare": 429, "500": 500, "502": 502, "503": 503}
MODERATED = ("Your request was flagged by our content moderation system, as a result your "
             "request was denied and you were not charged.")


def error(status: int, name: str, errors: list[str],
          headers: dict[str, str] | None = None) -> web.Response:
    """Stability's error body: an id to quote to support, a snake_case name, messages."""
    return web.json_response({"id": uuid.uuid4().hex, "name": name, "errors": errors},
                             status=status, headers=headers)


def too_large(limit: int) -> web.Response:
    return error(413, "payload_too_large",
                 [f"request body: larger than the {limit:,} bytes (10 MiB) allowed"])


def unauthorized(request: web.Request) -> web.Response | None:
    state = request.app[STATE]
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key, expected = key.strip(), state.config.api_key
    if scheme.lower() != "bearer" or not key:
        problem = "authorization: missing; send authorization: Bearer <your API key>"
    elif expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
        problem = "authorization: the API key is not valid"
    else:
        return None
    state.counters["unauthorized"] += 1
    return error(401, "unauthorized", [problem])


def accept_mode(request: web.Request) -> str:
    """'image' or 'json' from the accept header.

    Only `image/*` (the default when absent) and `application/json` are taken;
    anything else, `*/*` included, is a 400 (UNCONFIRMED: what the real API does
    with other values is not documented; strict catches a client that forgot it).
    """
    value = request.headers.get("accept", "").split(";", 1)[0].strip().lower()
    if value in ("", "image/*"):
        return "image"
    if value == "application/json":
        return "json"
    raise Rejected(400, "bad_request",
                   [f"accept: must be image/* or application/json, got {value!r}"])


def artifact(image: bytes, fmt: str, finish_reason: str, seed: int, mode: str) -> web.Response:
    if mode == "json":
        return web.json_response({"image": base64.b64encode(image).decode(),
                                  "finish_reason": finish_reason, "seed": seed})
    return web.Response(body=image, content_type=IMAGE_FORMATS[fmt][1],
                        headers={"finish-reason": finish_reason, "seed": str(seed)})


# --------------------------------------------------------------------------- middlewares


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routing errors, oversized bodies and crashes answer in Stability's error shape too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return too_large(request.app[STATE].config.max_body_bytes)
        return error(exc.status, ERROR_NAMES.get(exc.status, "error"),
                     [f"{request.method} {request.path}: {exc.reason}"])
    except Exception:
        log.exception("simulator error on %s %s", request.method, request.path)
        return error(500, "internal_error", ["the simulator failed unexpectedly"])


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts, rate-limits and faults the provider's endpoints (never /_sim)."""
    state = request.app[STATE]
    if not request.path.startswith("/v2beta/"):
        return await handler(request)
    route = request.match_info.route.name or ""
    endpoint = "submit" if route.startswith("submit:") else "result" if route == "result" \
        else None
    state.counters["requests"] += 1
    if endpoint == "submit":
        state.counters["submits"] += 1
        state.by_operation[route.removeprefix("submit:")] += 1
    elif endpoint == "result":
        state.counters["result_polls"] += 1
    # Every request counts toward the limit, result GETs and refused ones included
    # (UNCONFIRMED: the provider documents "150 requests within 10 seconds" without saying
    # which requests count, nor whether the limit is checked before the key).
    locked = state.limiter.take(state.now())
    if locked is not None:
        seconds, began = locked
        state.counters["rate_limited"] += 1
        state.counters["lockouts"] += began
        return error(429, "rate_limit_exceeded",
                     [f"You have exceeded the rate limit of {state.limiter.limit} requests "
                      f"within {state.limiter.window:g} seconds; requests are refused for "
                      f"{state.limiter.lockout:g} seconds"],
                     {"Retry-After": str(max(1, math.ceil(seconds)))})
    fault = state.faults.request_fault(endpoint) if endpoint else None
    if fault is None:
        return await handler(request)
    state.faults_injected[fault] += 1
    if fault in HTTP_FAULTS:
        status = HTTP_FAULTS[fault]
        headers = {"Retry-After": str(state.config.fault_retry_after)} if fault == "429" \
            else None
        return error(status, ERROR_NAMES[status], [f"injected fault {fault}"], headers)
    if fault in ("drop", "hang"):
        if fault == "hang":
            await hang(request, state.config.hang_seconds, state.stopping)
        abort_connection(request)
        return web.Response()  # never written: the transport is gone
    if fault == "slow":
        await asyncio.sleep(state.config.slow_seconds)
    elif fault == "drop-after":
        await handler(request)  # the work is done (and charged), the answer is lost
        abort_connection(request)
        return web.Response()
    request[FAULT] = fault  # expired: carried out by the result handler
    return await handler(request)


# --------------------------------------------------------------------------- provider API


async def read_form(request: web.Request) -> tuple[dict[str, list[str]], dict[str, list[Upload]]]:
    if request.content_type != "multipart/form-data":
        raise Rejected(400, "bad_request", [
            f"content-type: must be multipart/form-data, got {request.content_type!r}"])
    try:
        form = await request.post()
    except ValueError as exc:
        raise Rejected(400, "bad_request", [f"body: not a valid multipart form ({exc})"]) \
            from None
    texts: dict[str, list[str]] = defaultdict(list)
    files: dict[str, list[Upload]] = defaultdict(list)
    for name, value in form.items():
        if isinstance(value, web.FileField):
            files[name].append(Upload(value.file.read(), value.content_type or "",
                                      value.filename or ""))
        else:
            texts[name].append(str(value))
    return dict(texts), dict(files)


def log_entry(request: web.Request, operation: str, texts: dict[str, list[str]],
              files: dict[str, list[Upload]]) -> dict[str, object]:
    return {
        "id": None, "operation": operation,
        "fields": {k: v[0] if len(v) == 1 else v for k, v in texts.items()},
        "files": {k: {"bytes": len(u[0].data), "sha256": hashlib.sha256(u[0].data).hexdigest(),
                      "content_type": u[0].content_type, "filename": u[0].filename}
                  for k, u in files.items()},
        "accept": request.headers.get("accept"),
        "client": {h: request.headers[h] for h in CLIENT_HEADERS if h in request.headers},
    }


async def submit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    op = OPERATIONS[(request.match_info.route.name or "").removeprefix("submit:")]
    limit = state.config.max_body_bytes
    if (request.content_length or 0) > limit:  # announced too large: refused unread
        state.counters["rejected"] += 1
        return too_large(limit)
    try:
        texts, files = await read_form(request)
    except web.HTTPRequestEntityTooLarge:  # too large as actually read (chunked, say)
        state.counters["rejected"] += 1
        return too_large(limit)
    except Rejected as exc:
        state.counters["rejected"] += 1
        return error(exc.status, exc.name, exc.errors)
    entry = log_entry(request, op.name, texts, files)
    state.requests.append(entry)
    if (denied := unauthorized(request)) is not None:
        return denied
    try:
        # An async submit answers JSON whatever it asks for, so its accept is not judged.
        mode = "json" if op.is_async else accept_mode(request)
        valid = validate(op, texts, files)
        if op.is_async:
            await asyncio.to_thread(check_decodes, valid.files[op.main_image].data)
    except Undecodable:
        state.counters["rejected"] += 1
        return error(400, "bad_request", [f"{op.main_image}: could not be decoded as an image"])
    except Rejected as exc:
        state.counters["rejected"] += 1
        return error(exc.status, exc.name, exc.errors)
    fault = state.faults.task_fault("submit")
    if fault is not None:
        state.faults_injected[fault] += 1
    if fault == "moderation":
        state.counters["moderated"] += 1
        return error(403, "content_moderation", [MODERATED])
    if op.is_async:
        result = state.create_result(valid, filtered=fault == "filtered")
        entry["id"] = result.id
        return web.json_response({"id": result.id})
    return await generate(state, valid, mode, filtered=fault == "filtered")


async def generate(state: SimState, valid: Valid, mode: str, filtered: bool) -> web.Response:
    """A sync operation: render now, answer when the sampled latency has passed."""
    started, latency = state.now(), state.latency.sample(state.rng)
    seed = state.draw_seed(valid)
    epoch = state.begin()
    try:
        image = await asyncio.to_thread(render, valid, filtered)
        await asyncio.sleep(max(0.0, started + latency - state.now()))
    except Undecodable:
        state.abandon(epoch)
        state.counters["rejected"] += 1
        return error(400, "bad_request",
                     [f"{valid.op.main_image}: could not be decoded as an image"])
    except BaseException:
        state.abandon(epoch)
        raise
    state.finish(valid.op, filtered, epoch)
    reason = "CONTENT_FILTERED" if filtered else "SUCCESS"
    return artifact(image, valid.output_format, reason, seed, mode)


async def get_result(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if (denied := unauthorized(request)) is not None:
        return denied
    try:
        mode = accept_mode(request)
    except Rejected as exc:
        return error(exc.status, exc.name, exc.errors)
    result_id = request.match_info["result_id"]
    if request.get(FAULT) == "expired":
        state.expire(result_id)
    result = state.result(result_id)
    if result is None:
        return error(404, "not_found", [f"id: result {result_id} not found, or expired"])
    if not result.done:
        return web.json_response({"id": result.id, "status": "in-progress"}, status=202)
    image = await state.image(result)
    return artifact(image, result.valid.output_format, result.finish_reason, result.seed, mode)


def create_app(config: StabilitySimConfig | None = None) -> web.Application:
    config = config or StabilitySimConfig()
    app = web.Application(middlewares=[json_errors, gate], client_max_size=config.max_body_bytes)
    state = SimState(config)
    app[STATE] = state

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await state.stop()

    async def on_shutdown(app: web.Application) -> None:
        state.stopping.set()  # ends hangs now rather than after the shutdown timeout

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    for op in OPERATIONS.values():
        app.router.add_post(f"/v2beta/stable-image/{op.path}", submit, name=f"submit:{op.name}")
    app.router.add_get("/v2beta/results/{result_id}", get_result, name="result")
    add_admin_routes(app)
    return app


def run(config: StabilitySimConfig, host: str = "127.0.0.1", port: int = 8200) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), for `editq sim stability`."""
    web.run_app(create_app(config), host=host, port=port, print=None, shutdown_timeout=2.0)
