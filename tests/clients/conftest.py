"""The client against the session's live stack (tests/conftest.py: API, worker, beat,
the WaveSpeed simulator), over real HTTP: a key per test, as a user has."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from editq_client import Client

from shared.db import session_scope
from shared.tenants import create_api_key
from tests.conftest import Live


def key_for(live: Live, name: str) -> str:
    """A fresh tenant's key: tenants are the isolation between tests, as between users."""
    with session_scope(live.settings.database_url) as session:
        return create_api_key(session, f"{name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def key(live: Live) -> str:
    return key_for(live, "client")


@pytest.fixture
def editq(live: Live, key: str) -> Iterator[Client]:
    with Client(live.api_url, key, timeout=30) as client:
        yield client


@pytest.fixture
def slow_wavespeed(live: Live) -> Iterator[None]:
    """WaveSpeed's simulator taking 6 s per task (restored after), so a job is still
    running when its time is up."""
    with live.wavespeed_latency("6"):
        yield
