"""The OpenAPI document: every problem an operation can answer, documented once here.

FastAPI documents only 422 (and only its own validation shape). editq answers
RFC 9457 problems from one place (`api/problems.py`), so which statuses an operation
can answer follows from what it is: authenticated (401; 503 when the database is
unreachable), addressed by id (404), given a body (413, 415), creating paid work
(402 budget, 429 plan), changing state (409), admin only (403), deleted (410). This
module adds those responses, with the problem's schema, to every operation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shared.config import Settings

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details; `code` is stable, and some problems carry "
                   "more members (field, limit, refusals, ...)",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "a URI naming the problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what happened, for a person"},
        "code": {"type": "string", "description": "stable, for programs to switch on"},
        "field": {"type": "string", "description": "the input at fault, when one is"},
    },
    "additionalProperties": True,
}
WHY = {
    "401": "no API key, or not a valid one",
    "402": "the estimate would take the tenant's spend over a budget",
    "403": "the key may not do this (admin only)",
    "404": "no such resource for this tenant",
    "409": "the resource is not in a state that allows this",
    "410": "it was deleted (retention, or a request): gone, not missing",
    "413": "the body, or an image in it, is over its limit",
    "415": "the body is neither JSON nor multipart",
    "422": "the input is not valid: the problem names the field",
    "429": "the plan's limit for this period is reached (Retry-After)",
    "503": "a dependency (database, storage, provider) is unavailable; retry shortly",
}
CREATES_WORK = {("post", "/v1/jobs"), ("post", "/v1/comparisons"), ("post", "/v1/batches")}
CHANGES_STATE = {("post", "/v1/jobs/{job_id}/cancel"), ("post", "/v1/batches/{batch_id}/cancel"),
                 ("post", "/v1/comparisons/{comparison_id}/vote"),
                 ("post", "/v1/webhook-deliveries/{delivery_id}/redeliver"),
                 ("delete", "/v1/jobs/{job_id}/data"), ("delete", "/v1/batches/{batch_id}/data")}
ADMIN_ONLY = {("get", "/v1/costs"), ("delete", "/v1/tenants/{tenant}/data")}
MAY_BE_DELETED = {("get", "/v1/jobs/{job_id}/outputs/{index}")}


def statuses(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    found = {"422"}
    if path.startswith("/v1/"):
        found |= {"401", "503"}
    if "{" in path:
        found.add("404")
    if method in ("post", "put", "patch"):
        found |= {"413", "415"}
    if (method, path) in CREATES_WORK:
        found |= {"402", "429"}
    if (method, path) in CHANGES_STATE:
        found.add("409")
    if (method, path) in ADMIN_ONLY:
        found.add("403")
    if (method, path) in MAY_BE_DELETED:
        found.add("410")
    if path == "/readyz":
        found.add("503")
    return sorted(found)


def install(app: FastAPI, settings: Settings, operations: list[str]) -> None:
    """`settings` and `operations` make the schema say what this deployment accepts:
    the longest `wait`, the operations its catalog serves."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = \
            PROBLEM_SCHEMA
        problem = {"application/problem+json": {"schema": {"$ref":
                                                           "#/components/schemas/Problem"}}}
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                for parameter in operation.get("parameters", []):
                    if parameter["name"] == "wait":
                        parameter["schema"]["maximum"] = settings.max_wait_seconds
                    if parameter["name"] == "operation" and parameter["in"] == "query":
                        parameter["schema"] = _enum(parameter["schema"], operations)
                responses = operation.setdefault("responses", {})
                for status in statuses(method, path, operation):
                    responses[status] = {"description": WHY[status], "content": problem}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _enum(schema: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """The string schema of `schema` (which may be nullable) limited to `values`."""
    choices = {"type": "string", "enum": values}
    if "anyOf" in schema:
        return {**{k: v for k, v in schema.items() if k != "anyOf"},
                "anyOf": [choices, {"type": "null"}]}
    return {**schema, **choices}
