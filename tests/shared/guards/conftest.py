"""The guards' tests run against a real Redis: the session's server (db "api")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import redis_db


@pytest.fixture
def client(redis_base: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_db(redis_base, "api"))
    yield r
    r.close()
