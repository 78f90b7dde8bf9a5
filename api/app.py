"""The FastAPI application: routes, problem handlers and the shared clients."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from api import openapi, problems
from api.body_caps import BodyCapMiddleware
from api.deps import refuse_unknown_query
from api.routes import (
    batches,
    comparisons,
    costs,
    jobs,
    meta,
    providers,
    quotes,
    streams,
    tenants,
    uploads,
    webhooks,
)
from shared.changes import Listener
from shared.config import Settings
from shared.errors import StorageUnavailable
from shared.inflight.wakeups import WakePublisher
from shared.queue import make_celery
from shared.services import Services

log = logging.getLogger(__name__)
CONSOLE_DIR = Path(__file__).with_name("console")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app over `settings` (from the environment when not given): its services are
    built here, once, and reach the routes through api.deps."""
    settings = settings or Settings()
    services = Services(settings)  # a broken catalog stops start-up, not a request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Start even if S3 is down: /readyz reports it, and submissions answer 503.
        try:
            services.storage.ensure_bucket()
        except StorageUnavailable as exc:
            log.warning("storage not ready at start-up: %s", exc.message)
        app.state.changes.start()  # one Redis subscription feeds every stream
        yield
        await app.state.changes.stop()
        app.state.wakeups.close()

    # FastAPIOffline: FastAPI whose /docs and /redoc load their assets from the package,
    # not a CDN, so they work offline.
    app = FastAPIOffline(title="editq", version="0.1.0", lifespan=lifespan,
                  dependencies=[Depends(refuse_unknown_query)],
                  description="Asynchronous image-edit jobs over WaveSpeed, Stability "
                              "and a local Pillow provider.")
    app.state.services = services
    app.state.metrics_registry = costs.metrics_registry(settings.database_url, services)
    app.state.celery = make_celery(settings, name="editq-api")
    app.state.wakeups = WakePublisher(settings.redis_url)
    app.state.changes = Listener(settings.redis_url)
    problems.install(app)
    openapi.install(app, settings, sorted({o for m in services.catalog.models
                                           for o in m.operations}))
    app.add_middleware(BodyCapMiddleware, settings=settings)
    app.include_router(jobs.router)
    app.include_router(streams.router)
    app.include_router(meta.router)
    app.include_router(providers.router)
    app.include_router(quotes.router)
    app.include_router(webhooks.router)
    app.include_router(batches.router)
    app.include_router(costs.router)
    app.include_router(comparisons.router)
    app.include_router(uploads.router)
    app.include_router(tenants.router)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # (browsers ask for it at the root whatever the page says)
        return FileResponse(CONSOLE_DIR / "favicon.svg", media_type="image/svg+xml")

    @app.get("/console", include_in_schema=False)
    def console() -> RedirectResponse:
        # The page's assets are relative to /console/.
        return RedirectResponse("/console/")

    # The console: static files shipped in the package, talking only to /v1.
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    return app
