"""Typed dependencies: settings, storage, the broker, the caller.

There is deliberately no request-scoped database session: handlers open one
inside the thread that uses it (see api/routes/jobs.py).
"""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request

from shared.config import Settings
from shared.db import session_scope
from shared.inflight.wakeups import WakePublisher
from shared.storage import Storage
from shared.tenants import Principal, authenticate


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


StorageDep = Annotated[Storage, Depends(get_storage)]


def get_celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_wakeups(request: Request) -> WakePublisher:
    wakeups: WakePublisher = request.app.state.wakeups
    return wakeups


WakeDep = Annotated[WakePublisher, Depends(get_wakeups)]


def get_principal(settings: SettingsDep,
                  authorization: Annotated[str | None, Header()] = None) -> Principal:
    """Its own short session: a long-poll must not hold a connection for its whole wait."""
    scheme, _, key = (authorization or "").partition(" ")
    with session_scope(settings.database_url) as session:
        return authenticate(session, key.strip() if scheme.lower() == "bearer" else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
