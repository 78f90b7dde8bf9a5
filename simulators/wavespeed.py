"""A simulator of WaveSpeed's REST API v3 (see PROVIDERS.md), served with aiohttp on loopback.

editq's WaveSpeed client is tested against it over real HTTP. aiohttp rather
than FastAPI because faults must be able to reset a TCP connection mid-request,
which only a server that hands out its transport allows.

Besides the provider's endpoints it serves `/_sim/...` admin endpoints (stats,
the submit log, faults, latency, reset). They need no key and never fail.

(Over 300 lines: one handler per endpoint of the provider's API.)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from simulators.common import (
    IMAGE_FORMATS,
    Latency,
    abort_connection,
    hang,
    parse_fault_rates,
    task_fault_code,
)
from simulators.wavespeed_admin import add_admin_routes
from simulators.wavespeed_models import MODELS, InvalidRequest, validate
from simulators.wavespeed_tasks import STATE, SimState, Upload, decode_image_input


@dataclass
class WaveSpeedSimConfig:
    """How one simulator instance behaves; specs are checked when the config is made."""

    api_key: str | None = None
    """The only key accepted; None accepts any non-empty bearer key."""
    latency: str = "1"
    faults: str = ""
    seed: int | None = None
    sync_timeout: float = 30.0
    slow_seconds: float = 3.0
    hang_seconds: float = 600.0
    processing_after: float = 0.1
    """How long a task shows `created` before `processing`."""
    rate_limit_per_minute: int | None = None
    webhook_secret: str | None = None
    """With or without the `whsec_` prefix; None makes a random one per instance."""
    webhook_attempts: int = 3
    webhook_backoff: float = 0.5
    webhook_timeout: float = 10.0
    public_url: str | None = None
    """Base of the URLs the simulator hands out; None uses the Host the client called."""
    max_body_bytes: int = 64 * 1024 * 1024
    request_log_size: int = 1000

    def __post_init__(self) -> None:
        Latency.parse(self.latency)
        parse_fault_rates(self.faults)


# Route name -> fault endpoint. Routes not listed (admin) never meet faults.
ENDPOINT_OF = {"submit": "submit", "poll": "poll", "poll-bare": "poll", "output": "output",
               "upload": "upload", "upload-binary": "upload", "upload-put": "upload",
               "upload-get": "upload", "secret": "other"}
FAULT = web.RequestKey("fault", str)
MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # the SDK's documented upload limit
HTTP_FAULTS = {"429": (429, "Too many requests"), "429-bare": (429, "Too many requests"),
               "500": (500, "Internal server error"), "502": (502, "Bad gateway"),
               "503": (503, "Service unavailable")}


def envelope(data: Any, code: int = 200, message: str = "success") -> web.Response:
    return web.json_response({"code": code, "message": message, "data": data}, status=code)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": status, "message": message, "data": None},
                             status=status, headers=headers)


def base_url(request: web.Request) -> str:
    configured = request.app[STATE].config.public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


def unauthorized(request: web.Request) -> web.Response | None:
    state = request.app[STATE]
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    expected = state.config.api_key
    if scheme.lower() != "bearer" or not key:
        state.counters["unauthorized"] += 1
        return error(401, "Missing API key: send Authorization: Bearer <key>")
    if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
        state.counters["unauthorized"] += 1
        return error(401, "Invalid API key")
    return None


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routing errors under /api/ answer in the envelope too, so clients parse one error shape.

    (The real API's body for these is UNCONFIRMED.)
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        return error(exc.status, exc.reason)


@web.middleware
async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    endpoint = ENDPOINT_OF.get(request.match_info.route.name or "")
    if endpoint is None:
        return await handler(request)
    if endpoint == "submit":
        state.counters["submits"] += 1
        state.submits_by_model[request.match_info["model_path"]] += 1
    elif endpoint == "poll":
        state.counters["polls"] += 1
    fault = state.faults.request_fault(endpoint)
    if fault is None:
        return await handler(request)
    state.faults_injected[fault] += 1
    if fault in HTTP_FAULTS:
        status, message = HTTP_FAULTS[fault]
        headers = {"Retry-After": "1"} if fault == "429" else None
        return error(status, f"{message} (injected fault)", headers)
    if fault in ("drop", "hang"):
        if fault == "hang":
            await hang(request, state.config.hang_seconds, state.stopping)
        abort_connection(request)
        return web.Response()  # never written: the transport is gone
    if fault == "slow":
        await asyncio.sleep(state.config.slow_seconds)
    request[FAULT] = fault  # drop-after is carried out by the submit handler
    return await handler(request)


# --------------------------------------------------------------------------- provider API


async def submit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    model_path = request.match_info["model_path"]
    raw = await request.read()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    entry: dict[str, Any] = {"id": None, "model_path": model_path, "body": body,
                             "query": dict(request.query)}
    state.requests.append(entry)
    if (denied := unauthorized(request)) is not None:
        return denied
    if (retry_after := state.take_rate_slot()) is not None:
        state.counters["rate_limited"] += 1
        return error(429, f"Rate limit exceeded: {state.config.rate_limit_per_minute} "
                          "requests per minute", {"Retry-After": str(retry_after)})
    spec = MODELS.get(model_path)
    if spec is None:
        return error(404, f"Model not found: {model_path}")
    if not isinstance(body, dict):
        return error(400, "The request body must be a JSON object of the model's inputs")
    webhook = request.query.get("webhook") or body.get("webhook_url") or None
    try:
        images = validate(spec, body)
        if webhook is not None and (not isinstance(webhook, str)
                                    or not webhook.startswith(("http://", "https://"))):
            raise InvalidRequest("webhook must be an http(s) URL")
        if webhook and body.get("enable_base64_output"):
            raise InvalidRequest("enable_base64_output cannot be combined with a webhook")
        sources = [(name, decode_image_input(name, value)) for name, value in images]
    except InvalidRequest as exc:
        return error(400, str(exc))
    fault = state.faults.task_fault()
    if fault is not None:
        state.faults_injected[fault] += 1
    task = state.create_task(spec, body, base_url(request), sources, webhook,
                             task_fault_code(fault) if fault else None)
    entry["id"] = task.id
    if request.get(FAULT) == "drop-after":
        abort_connection(request)
        return web.Response()
    if body.get("enable_sync_mode"):
        try:
            await asyncio.wait_for(task.done.wait(), state.config.sync_timeout)
        except TimeoutError:
            data = await state.task_data(task)
            data.update(status="processing", code=5004,
                        error=f"Sync mode timed out after {state.config.sync_timeout:g}s; "
                              "the task is still running: query urls.get")
            return envelope(data)
    return envelope(await state.task_data(task))


async def poll(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if (denied := unauthorized(request)) is not None:
        return denied
    task = state.tasks.get(request.match_info["task_id"])
    if task is None:
        return error(404, f"Prediction not found: {request.match_info['task_id']}")
    return envelope(await state.task_data(task))


async def output(request: web.Request) -> web.StreamResponse:
    """Served without a key, like the provider's CDN links."""
    state = request.app[STATE]
    task = state.tasks.get(request.match_info["task_id"])
    index, _, ext = request.match_info["name"].partition(".")
    if task is None or task.final != "completed" or index != "0" or ext != task.ext:
        return error(404, "Output not found")
    images = await state.rendered(task)
    state.counters["outputs_served"] += 1
    return web.Response(body=images[0], content_type=IMAGE_FORMATS[ext][1])


async def webhook_secret(request: web.Request) -> web.StreamResponse:
    if (denied := unauthorized(request)) is not None:
        return denied
    return envelope({"secret": request.app[STATE].webhook_secret})


async def create_upload(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if (denied := unauthorized(request)) is not None:
        return denied
    try:
        body = await request.json()
    except ValueError:
        return error(400, "The request body must be JSON {filename, size, content_type}")
    if not isinstance(body, dict) or not isinstance(body.get("filename"), str) \
            or not body["filename"]:
        return error(400, "filename is required")
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return error(400, "size must be a non-negative integer")
    content_type = body.get("content_type") or "application/octet-stream"
    if not isinstance(content_type, str):
        return error(400, "content_type must be a string")
    upload_id = uuid.uuid4().hex
    filename = body["filename"].rsplit("/", 1)[-1] or "upload"
    state.uploads[upload_id] = Upload(filename, content_type)
    base = base_url(request)
    return envelope({
        "upload": {"method": "PUT", "url": f"{base}/uploads/{upload_id}",
                   "headers": {"Content-Type": content_type}},
        "download_url": f"{base}/media/{upload_id}/{filename}",
    })


async def put_upload(request: web.Request) -> web.StreamResponse:
    """A pre-signed URL: no key, like the storage it stands for."""
    state = request.app[STATE]
    upload = state.uploads.get(request.match_info["upload_id"])
    if upload is None:
        return error(404, "Upload not found")
    if (request.content_length or 0) > MAX_UPLOAD_BYTES:
        return error(413, f"Uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    data = await request.content.read()
    if len(data) > MAX_UPLOAD_BYTES:
        return error(413, f"Uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    upload.data = data
    state.counters["uploads"] += 1
    return web.Response(status=200)


async def get_media(request: web.Request) -> web.StreamResponse:
    upload = request.app[STATE].uploads.get(request.match_info["upload_id"])
    if upload is None or upload.data is None:
        return error(404, "File not found")
    return web.Response(body=upload.data, content_type=upload.content_type)


async def upload_binary(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if (denied := unauthorized(request)) is not None:
        return denied
    try:
        form = await request.post()
    except ValueError:
        return error(400, "Expected multipart/form-data with a field named file")
    file = form.get("file")
    if not isinstance(file, web.FileField):
        return error(400, "file is required (multipart field)")
    data = file.file.read()
    upload_id = uuid.uuid4().hex
    filename = (file.filename or "upload").rsplit("/", 1)[-1]
    state.uploads[upload_id] = Upload(filename, file.content_type or "application/octet-stream",
                                      data)
    state.counters["uploads"] += 1
    url = f"{base_url(request)}/media/{upload_id}/{filename}"
    return envelope({"type": "file", "download_url": url, "filename": filename,
                     "size": len(data)})


def create_app(config: WaveSpeedSimConfig | None = None) -> web.Application:
    config = config or WaveSpeedSimConfig()
    app = web.Application(middlewares=[envelope_errors, inject_faults],
                          client_max_size=config.max_body_bytes)
    state = SimState(config)
    app[STATE] = state

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    async def on_shutdown(app: web.Application) -> None:
        state.stopping.set()  # ends hangs now rather than after the shutdown timeout

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_post("/api/v3/media/uploads", create_upload, name="upload")
    r.add_post("/api/v3/media/upload/binary", upload_binary, name="upload-binary")
    r.add_get("/api/v3/webhook/secret", webhook_secret, name="secret")
    r.add_get("/api/v3/predictions/{task_id}/result", poll, name="poll")
    r.add_get("/api/v3/predictions/{task_id}", poll, name="poll-bare")
    r.add_post("/api/v3/{model_path:.+}", submit, name="submit")
    r.add_get("/outputs/{task_id}/{name}", output, name="output")
    r.add_put("/uploads/{upload_id}", put_upload, name="upload-put")
    r.add_get("/media/{upload_id}/{filename}", get_media, name="upload-get")
    add_admin_routes(app)
    return app


def run(config: WaveSpeedSimConfig, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), for `editq sim wavespeed`."""
    web.run_app(create_app(config), host=host, port=port, print=None, shutdown_timeout=2.0)

