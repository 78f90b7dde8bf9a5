"""Reading an edit request from JSON or multipart, for POST /v1/jobs and POST /v1/quotes.

Bodies are capped while they stream in, so an oversized request is refused
before it is held in memory whole.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.body_caps import EDIT_HINT, edit_body_limit
from api.schemas import JobCreate
from shared import user_json
from shared.config import Settings
from shared.errors import (
    ImageTooLarge,
    InvalidInput,
    InvalidJson,
    RequestTooLarge,
    UnsupportedMediaType,
)
from shared.inputs.refs import InputRef, image_value, reference
from shared.jobs.submission import EditRequest
from shared.queue import NORMAL

EDIT_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {
                    "image": {"type": "string", "format": "binary",
                              "description": "a file, or an https:// URL or upload id"},
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "mask": {"type": "string", "format": "binary"},
                    "prompt": {"type": "string"}, "negative_prompt": {"type": "string"},
                    "operation": {"type": "string"}, "model": {"type": "string"},
                    "options": {"type": "string", "description": "JSON object"},
                    "deadline_seconds": {"type": "integer"},
                    "webhook_url": {"type": "string"},
                    "webhook_events": {"type": "string",
                                       "description": "comma-separated event types"},
                    "metadata": {"type": "string", "description": "JSON object"},
                    "retention": {"type": "string",
                                  "description": "JSON object: inputs_days, outputs_days"},
                },
            }},
        },
    }
}


def _from_json(raw: bytes, settings: Settings) -> EditRequest:
    if user_json.values_bound(raw) > user_json.MAX_REQUEST_VALUES:
        raise InvalidInput(f"the body holds more than {user_json.MAX_REQUEST_VALUES} JSON "
                           "values", field="body", limit=user_json.MAX_REQUEST_VALUES)
    try:
        body = JobCreate.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise invalid_of(exc) from exc
    return _request_of(body, settings)


def edit_request_from_dict(data: dict[str, Any], settings: Settings) -> EditRequest:
    """One batch item: the body of a POST /v1/jobs, as an object."""
    try:
        body = JobCreate.model_validate(data)
    except ValidationError as exc:
        raise invalid_of(exc) from exc
    return _request_of(body, settings)


def invalid_of(exc: ValidationError) -> InvalidInput:
    """A body's first validation error as a 422 naming its field (`invalid_json` when the
    body did not parse, `invalid_input` otherwise)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    kind = InvalidJson if first["type"] == "json_invalid" else InvalidInput
    return kind(f"{where}: {first['msg']}", field=where)


def _request_of(body: JobCreate, settings: Settings) -> EditRequest:
    given = ([body.image] if body.image else []) + list(body.images or [])
    def value(text: str, field: str) -> bytes | InputRef:
        return image_value(text, field=field, max_bytes=settings.max_image_bytes,
                           allowed_hosts=settings.input_allowed_host_set)

    images = [value(v, "image" if len(given) == 1 else f"images[{n}]")
              for n, v in enumerate(given)]
    mask = value(body.mask, "mask") if body.mask else None
    return EditRequest(images=images, mask=mask, prompt=body.prompt,
                       negative_prompt=body.negative_prompt, operation=body.operation,
                       model=body.model, options=body.options, metadata=body.metadata,
                       deadline_seconds=body.deadline_seconds, webhook_url=body.webhook_url,
                       retention=body.retention, priority=body.priority,
                       webhook_events=body.webhook_events)


def _body_limit(settings: Settings) -> int:
    return edit_body_limit(settings)


async def _read_capped(request: Request, settings: Settings) -> bytes:
    limit = _body_limit(settings)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the request body is over {limit} bytes{EDIT_HINT}",
                              limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over {limit} bytes{EDIT_HINT}",
                              limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_field(form: Any, name: str) -> dict[str, Any]:
    raw = form.get(name)
    if raw in (None, ""):
        return {}
    if not isinstance(raw, str):
        raise InvalidInput(f"{name} must be a JSON object as text, not a file", field=name)
    value = user_json.loads(raw, field=name)
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object", field=name)
    return value


# The fields of an edit as a form (a comparison's adds `models`): any other is refused by
# name, as JSON refuses an unknown member (a mistyped `modle` would run the default model).
FORM_FIELDS = frozenset({"image", "images", "mask", "prompt", "negative_prompt", "operation",
                         "model", "options", "metadata", "deadline_seconds", "webhook_url",
                         "webhook_events", "retention", "priority"})


async def _from_multipart(request: Request, settings: Settings,
                          extra_fields: frozenset[str] = frozenset()) -> EditRequest:
    """Image fields are files, or text: a URL or an upload id (inline bytes travel as
    files in a form)."""
    form = await request.form()
    unknown = sorted(set(form.keys()) - FORM_FIELDS - extra_fields)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)[:200]}; the fields are "
                           f"{', '.join(sorted(FORM_FIELDS | extra_fields))}",
                           field=unknown[0][:64])
    max_bytes, allowed = settings.max_image_bytes, settings.input_allowed_host_set

    async def image(item: Any, field: str) -> bytes | InputRef:
        if isinstance(item, UploadFile):
            if item.size is not None and item.size > max_bytes:
                # (its size, as sent: not what was read of it)
                raise ImageTooLarge(f"{field} is {item.size} bytes, over the limit of "
                                    f"{max_bytes}", field=field, limit=max_bytes,
                                    bytes=item.size)
            data: bytes = await item.read(max_bytes + 1)
            return data
        return reference(str(item), field=field, allowed_hosts=allowed)

    given = [f for key in ("image", "images") for f in form.getlist(key)]
    images = [await image(item, "image" if len(given) == 1 else f"images[{n}]")
              for n, item in enumerate(given)]
    mask = (await image(form.get("mask"), "mask")
            if form.get("mask") not in (None, "") else None)

    def text(name: str) -> str | None:
        value = form.get(name)
        return value if isinstance(value, str) and value != "" else None

    deadline = text("deadline_seconds")
    # str.isdigit() is true of superscripts and other scripts' digits: ASCII only, and
    # not thousands of them.
    if deadline is not None and not (deadline.isascii() and deadline.isdigit()
                                     and len(deadline) <= 9):
        raise InvalidInput("deadline_seconds must be a whole number of seconds",
                           field="deadline_seconds")
    return EditRequest(images=images, mask=mask, prompt=text("prompt"),
                       negative_prompt=text("negative_prompt"),
                       operation=text("operation") or "", model=text("model"),
                       options=_json_field(form, "options"), metadata=_json_field(form, "metadata"),
                       deadline_seconds=int(deadline) if deadline is not None else None,
                       webhook_url=text("webhook_url"),
                       webhook_events=[e.strip() for e in events.split(",") if e.strip()]
                       if (events := text("webhook_events")) is not None else None,
                       retention=_json_field(form, "retention") or None,
                       priority=text("priority") or NORMAL)


def media_type(request: Request) -> str:
    """The body's media type without parameters: `application/jsonfoo` is not JSON."""
    value = request.headers.get("content-type", "application/json")
    return value.split(";", 1)[0].strip().lower()


async def read_comparison_request(request: Request,
                                  settings: Settings) -> tuple[EditRequest, list[str]]:
    """A comparison's body: an edit request without `model`, and `models` (2 to 6 ids):
    a JSON array, or in a multipart form a comma-separated field."""
    content_type = media_type(request)
    if content_type == "multipart/form-data":
        req = await read_edit_request(request, settings, extra_fields=frozenset({"models"}))
        raw = (await request.form()).get("models")
        models = ([m.strip() for m in raw.split(",") if m.strip()]
                  if isinstance(raw, str) else [])
    elif content_type == "application/json":
        data = user_json.loads(await _read_capped(request, settings) or b"{}", field="body")
        if not isinstance(data, dict):
            raise InvalidInput("the body must be a JSON object", field="body")
        listed = data.pop("models", None)
        if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
            raise InvalidInput("models must be a list of model ids", field="models")
        models = listed
        req = edit_request_from_dict(data, settings)
    else:
        raise UnsupportedMediaType("send application/json or multipart/form-data",
                                   content_type=content_type[:100])
    if req.model is not None:
        raise InvalidInput("a comparison names its models in `models`, not `model`",
                           field="model")
    return req, models


async def read_edit_request(request: Request, settings: Settings,
                            extra_fields: frozenset[str] = frozenset()) -> EditRequest:
    content_type = media_type(request)
    if content_type == "multipart/form-data":
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > _body_limit(settings):
            raise RequestTooLarge(f"the request body is over {_body_limit(settings)} bytes"
                                  f"{EDIT_HINT}")
        return await _from_multipart(request, settings, extra_fields)
    if content_type == "application/json":
        return _from_json(await _read_capped(request, settings), settings)
    raise UnsupportedMediaType("send application/json or multipart/form-data",
                               content_type=content_type[:100])
