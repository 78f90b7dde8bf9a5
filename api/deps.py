"""Typed dependencies: the app's services (built once, in create_app), the broker, the
caller, and a unit of work.

There is deliberately no request-scoped database session: a handler hands its
work to `Work`, which opens a session inside the thread that uses it and closes
it there, so a request never holds a pooled connection while it waits for a
thread (under a burst that deadlocks the two pools against each other).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from celery import Celery
from fastapi import Depends, Header, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from shared.changes import Listener
from shared.config import Settings
from shared.db import session_scope
from shared.errors import UnknownQueryParameter
from shared.formats import CURSOR_PATTERN
from shared.idempotency import checked_key
from shared.inflight.wakeups import WakePublisher
from shared.services import Services
from shared.storage import Storage
from shared.tenants import Principal, authenticate, note_use

T = TypeVar("T")

# The dependencies that only read what create_app built are `async def`: FastAPI runs a
# plain `def` dependency in a worker thread, a hand-off per request for a getattr.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_storage(services: ServicesDep) -> Storage:
    return services.storage


StorageDep = Annotated[Storage, Depends(get_storage)]


class Work:
    """Runs `fn(session)` in a worker thread, in a session of its own that commits when
    `fn` returns and rolls back when it raises."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def __call__(self, fn: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self.now, fn)

    def now(self, fn: Callable[[Session], T]) -> T:
        """The same, in this thread (a sync handler's, or one already off the loop)."""
        with session_scope(self.database_url) as session:
            return fn(session)


async def get_work(settings: SettingsDep) -> Work:
    return Work(settings.database_url)


WorkDep = Annotated[Work, Depends(get_work)]


async def get_celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


CeleryDep = Annotated[Celery, Depends(get_celery)]


async def get_wakeups(request: Request) -> WakePublisher:
    wakeups: WakePublisher = request.app.state.wakeups
    return wakeups


WakeDep = Annotated[WakePublisher, Depends(get_wakeups)]


async def get_changes(request: Request) -> Listener:
    listener: Listener = request.app.state.changes
    return listener


ChangesDep = Annotated[Listener, Depends(get_changes)]


def get_principal(settings: SettingsDep,
                  authorization: Annotated[str | None, Header()] = None) -> Principal:
    """Its own short session: a long-poll must not hold a connection for its whole wait."""
    scheme, _, key = (authorization or "").partition(" ")
    with session_scope(settings.database_url) as session:
        principal = authenticate(session, key.strip() if scheme.lower() == "bearer" else None)
        if note_use(session, principal):
            session.commit()
        return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def refuse_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is refused with its name, not ignored:
    a mistyped filter (`?batch=` for `?batch_id=`) would otherwise list everything.

    Provider callbacks are exempt: the provider, not a user, writes their URL."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.path.startswith("/v1/providers/"):
        return
    accepted: frozenset[str] | None = getattr(route, "editq_query_names", None)
    if accepted is None:  # computed once per route, kept on the route
        accepted = frozenset(_query_names(route.dependant))
        route.editq_query_names = accepted  # type: ignore[attr-defined]
    unknown = sorted(set(request.query_params) - accepted)
    if unknown:
        raise UnknownQueryParameter(
            f"unknown query parameter(s): {', '.join(unknown)[:300]}; this call takes: "
            f"{', '.join(sorted(accepted)) or 'none'}", field=unknown[0][:64],
            unknown=unknown[:20])


async def get_idempotency_key(
        idempotency_key: Annotated[str | None, Header(
            description="a unique value per request: a retry with the same key and body "
                        "answers what the first made")] = None) -> str | None:
    return checked_key(idempotency_key)


IdempotencyKeyDep = Annotated[str | None, Depends(get_idempotency_key)]


CursorQuery = Annotated[str | None, Query(
    pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page")]
