"""An API process of its own, for tests that measure it from outside (its memory, what
it reads of a body), on the session's database, Redis and S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from cli.stack import Child, Stack
from shared.db import session_scope
from shared.tenants import create_api_key
from tests.conftest import live_env, redis_db


@dataclass(frozen=True)
class ApiProcess:
    host: str
    port: int
    key: str
    child: Child
    database_url: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def api_process(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str,
                env: dict[str, str], log_level: str = "warning") -> Iterator[ApiProcess]:
    """`editq api` serving the app (no worker: accepted jobs stay queued), and a key."""
    sub = Stack(workdir=stack.workdir)
    try:
        sub.env = {**live_env(database_url, redis_db(redis_base, "api"), s3_url, bucket,
                              "http://127.0.0.1:9"), **env}
        child, url = sub.start_api(log_level=log_level)
        host, port = url.removeprefix("http://").split(":")
        with session_scope(database_url) as session:
            key = create_api_key(session, f"api-{uuid.uuid4().hex[:8]}")
        yield ApiProcess(host, int(port), key, child, database_url)
    finally:
        sub.stop()


@pytest.fixture(scope="module")
def api(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str
        ) -> Iterator[ApiProcess]:
    """An API process of the module's own (a module may define its own, with other
    settings); remote models validate that their provider has a key."""
    with api_process(stack, database_url, redis_base, s3_url, bucket,
                     {"EDITQ_WAVESPEED_API_KEY": "unused"}) as api:
        yield api
