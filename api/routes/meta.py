"""The model catalog and the health endpoints."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import CeleryDep, PrincipalDep, ServicesDep, StorageDep, WorkDep
from api.problems import problem
from api.schemas import ModelList, ReadyOut, RecommendationsOut
from shared.errors import UnsupportedOperation
from shared.formats import money
from shared.providers.catalog import ModelSpec
from shared.selection.recommendations import recommend

log = logging.getLogger(__name__)
router = APIRouter()


def _model_out(spec: ModelSpec) -> dict[str, Any]:
    out = spec.model_dump(mode="json")
    out["price_usd"] = money(spec.estimate())
    spread = spec.price_range()
    out["price_range"] = {**spread, "min": money(spread["min"]), "max": money(spread["max"])}
    return out


@router.get("/v1/models", tags=["models"], response_model=ModelList)
def list_models(services: ServicesDep, principal: PrincipalDep, operation: str | None = None,
                width: Annotated[int | None, Query(ge=1, le=100_000)] = None,
                height: Annotated[int | None, Query(ge=1, le=100_000)] = None,
                ) -> dict[str, Any]:
    """The catalog. With `operation`, a ranking: the models that serve it (at the image's
    `width` x `height`, when given), cheapest first at default options, each with why."""
    if operation is None:
        return {"data": [_model_out(m) for m in services.catalog.models]}
    candidates = services.catalog.for_operation(operation)
    if not candidates:
        raise UnsupportedOperation(f"no model serves operation {operation!r}",
                                   operation=operation, field="operation")
    fitting = [m for m in candidates if m.fits(width, height)]
    at_size = f" at {width or '?'}x{height or '?'}" if width or height else ""
    data = []
    for rank, spec in enumerate(fitting, start=1):
        out = _model_out(spec)
        out["rank"] = rank
        price = f"{money(spec.estimate())} USD per image"
        out["reason"] = (f"cheapest model that serves {operation}{at_size} ({price})"
                         if rank == 1 else
                         f"serves {operation}{at_size} for {price}, {spec.tier} tier")
        data.append(out)
    return {"data": data,
            "excluded": [{"id": m.id, "reason": f"images over {m.max_resolution[0]}x"
                          f"{m.max_resolution[1]}"} for m in candidates if m not in fitting]}


@router.get("/v1/recommendations", tags=["models"], response_model=RecommendationsOut)
def recommendations(services: ServicesDep, work: WorkDep, principal: PrincipalDep,
                    operation: Annotated[str, Query(min_length=1, max_length=64)],
                    width: Annotated[int | None, Query(ge=1, le=100_000)] = None,
                    height: Annotated[int | None, Query(ge=1, le=100_000)] = None,
                    max_cost: Annotated[Decimal | None, Query(
                        ge=0, le=1000, max_digits=12, decimal_places=6,
                        description="USD per image")] = None,
                    ) -> dict[str, Any]:
    """The cheapest, the best tier within `max_cost`, the fastest and the most reliable
    (from this deployment's own jobs), and your pick (from your comparison votes)."""

    def breaker_open(provider: str) -> bool:
        breaker = services.breaker(provider)
        return breaker is not None and breaker.state().get("state") == "open"

    return work.now(lambda session: recommend(
        session, services.settings, services.catalog, principal.tenant_id,
        operation=operation, width=width, height=height, max_cost=max_cost,
        breaker_open=breaker_open))


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """The process is up; says nothing about its dependencies (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], response_model=None,
            responses={200: {"model": ReadyOut}})
def readyz(request: Request, services: ServicesDep, work: WorkDep, storage: StorageDep,
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
        work.now(lambda session: session.execute(text("SELECT 1")))

    def broker() -> None:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    check("database", database)
    check("broker", broker)
    check("storage", storage.ping)
    # Informational: an open breaker means jobs wait for that provider, not that this
    # process is unready.
    providers = sorted({spec.provider for spec in services.catalog.models})
    breakers = {name: breaker.state() for name in providers
                if (breaker := services.breaker(name)) is not None}
    if all(v == "ok" for v in checks.values()):
        return {"status": "ok", "checks": checks, "breakers": breakers}
    return problem(503, "not_ready", "Not ready", "a dependency is unavailable",
                   {"checks": checks, "breakers": breakers})
