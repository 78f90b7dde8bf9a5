"""Typed dependencies: settings, a database session, storage, the broker, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope
from shared.storage import Storage
from shared.tenants import Principal, authenticate


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


StorageDep = Annotated[Storage, Depends(get_storage)]


def get_celery(request: Request) -> Celery:
    app: Celery = request.app.state.celery
    return app


CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_principal(settings: SettingsDep,
                  authorization: Annotated[str | None, Header()] = None) -> Principal:
    """Its own short session: a long-poll must not hold a connection for its whole wait."""
    scheme, _, key = (authorization or "").partition(" ")
    with session_scope(settings.database_url) as session:
        return authenticate(session, key.strip() if scheme.lower() == "bearer" else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
