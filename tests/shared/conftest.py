"""Fixtures of the pipeline tests: a tenant, a way to submit jobs, a scripted provider.

Each module brings its own `settings` (which providers are configured, which Redis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.config import Settings
from shared.db import session_scope
from shared.storage import Storage
from shared.submission import EditRequest, submit_job
from shared.tenants import Principal, authenticate
from tests.helpers import image_bytes
from tests.shared.scripted import Scripted


@pytest.fixture
def principal(settings: Settings, tenant_key: str) -> Principal:
    with session_scope(settings.database_url) as session:
        return authenticate(session, tenant_key)


@pytest.fixture
def submit(settings: Settings, storage: Storage, principal: Principal) -> Callable[..., str]:
    def make(model: str = "qwen-edit", **fields: Any) -> str:
        fields.setdefault("prompt", "make it blue")
        with session_scope(settings.database_url) as session:
            job, _ = submit_job(session, storage, settings, principal,
                                EditRequest(images=[image_bytes((96, 96))], model=model,
                                            **fields))
        return job.id
    return make


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Callable[[Scripted], Scripted]:
    from shared import fallback, pipeline

    def install(provider: Scripted) -> Scripted:
        monkeypatch.setattr(pipeline, "get_provider", lambda name, settings=None: provider)
        monkeypatch.setattr(fallback, "get_provider", lambda name, settings=None: provider)
        return provider
    return install
