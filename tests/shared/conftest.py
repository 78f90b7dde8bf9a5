"""Fixtures of the job tests: a tenant, a way to submit jobs, a scripted provider, and
a harness that runs jobs as the worker does.

Each module brings its own `settings` (which providers are configured, which Redis).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.config import Settings
from shared.db import session_scope
from shared.jobs.submission import EditRequest, submit_job
from shared.services import Services
from shared.storage import Storage
from shared.tenants import Principal, authenticate
from tests.helpers import image_bytes
from tests.shared.scripted import Harness, Scripted, everywhere


@pytest.fixture
def principal(settings: Settings, tenant_key: str) -> Principal:
    with session_scope(settings.database_url) as session:
        return authenticate(session, tenant_key)


@pytest.fixture
def submit(settings: Settings, storage: Storage, principal: Principal,
        services: Services) -> Callable[..., str]:
    def make(model: str = "qwen-edit", **fields: Any) -> str:
        fields.setdefault("prompt", "make it blue")
        with session_scope(settings.database_url) as session:
            job, _ = submit_job(session, services, principal,
                                EditRequest(images=[image_bytes((96, 96))], model=model,
                                            **fields))
        return job.id
    return make


@pytest.fixture
def use(services: Services) -> Callable[[Scripted], Scripted]:
    """Install a scripted provider in `services` in place of every real one."""
    def install(provider: Scripted) -> Scripted:
        services.providers.update(everywhere(provider))
        return provider
    return install


@pytest.fixture
def harness(services: Services) -> Iterator[Harness]:
    """Jobs run as the worker runs them (tests/shared/scripted.py), over `services`."""
    runner = Harness(services)
    yield runner
    runner.stop()
