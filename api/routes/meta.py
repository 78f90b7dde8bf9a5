"""The model catalog and the health endpoints."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import CeleryDep, SettingsDep, StorageDep
from api.problems import problem
from shared.db import session_scope
from shared.providers.catalog import ModelSpec, get_catalog

log = logging.getLogger(__name__)
router = APIRouter()


def _model_out(spec: ModelSpec) -> dict[str, Any]:
    out = spec.model_dump(mode="json")
    out["pricing"]["per_image"] = str(spec.pricing.per_image)
    return out


@router.get("/v1/models", tags=["models"])
def list_models(operation: str | None = None) -> dict[str, Any]:
    """The catalog; with `operation`, only models that serve it, cheapest first."""
    models = get_catalog().for_operation(operation)
    data = [_model_out(m) for m in models]
    if operation and data:
        data[0]["recommended_for"] = operation
        data[0]["reason"] = f"cheapest model that serves {operation}"
    return {"data": data}


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """The process is up; says nothing about its dependencies (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=None)
def readyz(request: Request, settings: SettingsDep, storage: StorageDep,
           celery: CeleryDep) -> dict[str, Any] | JSONResponse:
    checks: dict[str, str] = {}

    def check(name: str, fn: Any) -> None:
        try:
            fn()
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readyz: %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}"

    def database() -> None:
        with session_scope(settings.database_url) as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    check("database", database)
    check("broker", broker)
    check("storage", storage.ping)
    if all(v == "ok" for v in checks.values()):
        return {"status": "ok", "checks": checks}
    return problem(503, "not_ready", "Not ready", "a dependency is unavailable", {"checks": checks})
