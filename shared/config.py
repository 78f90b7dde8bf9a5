"""All of editq's settings, in one class, checked once at start-up.

Every process (API, worker, CLI) reads the same `EDITQ_*` variables, so a
misconfiguration is refused the same way everywhere, before any job is taken.

(Over 300 lines because it is the one settings class: each field is declared once,
with its default and its limits, and the checks that refuse unsafe values follow.)
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.address_guard import is_loopback_host

MiB = 1024 * 1024

_DB_SCHEMES = ("sqlite", "postgresql")
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "memory")


# Settings renamed when following a provider request got one name (issue 28).
RENAMED = {
    "EDITQ_POLL_INITIAL_SECONDS": "EDITQ_FOLLOW_INITIAL_SECONDS",
    "EDITQ_POLL_MAX_SECONDS": "EDITQ_FOLLOW_MAX_SECONDS",
    "EDITQ_POLL_GROWTH": "EDITQ_FOLLOW_GROWTH",
    "EDITQ_POLL_LEASE_MARGIN_SECONDS": "EDITQ_FOLLOW_LEASE_MARGIN_SECONDS",
    "EDITQ_PROVIDER_POLL_TIMEOUT_SECONDS": "EDITQ_PROVIDER_LOOK_TIMEOUT_SECONDS",
    "EDITQ_STABILITY_POLL_INTERVAL": "EDITQ_STABILITY_LOOK_INTERVAL",
}


class Settings(BaseSettings):
    """editq's configuration; unsafe or inconsistent values raise at construction."""

    model_config = SettingsConfigDict(env_prefix="EDITQ_", extra="ignore", frozen=True)

    environment: str = Field("development", pattern="^(development|test|production)$")

    database_url: str = "sqlite:///./editq.db"
    # Connections per process (PostgreSQL's default allows 100 in all: size the sum).
    database_pool_size: int = Field(10, ge=1, le=200)
    database_max_overflow: int = Field(10, ge=0, le=400)
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/0"

    s3_endpoint_url: str | None = None
    # Host that presigned URLs should name when clients reach S3 by another
    # address than the workers do (e.g. `minio:9000` inside compose).
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = "editq"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    presign_expiry_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)

    wavespeed_base_url: str = "https://api.wavespeed.ai"
    wavespeed_api_key: SecretStr | None = None
    stability_base_url: str = "https://api.stability.ai"
    stability_api_key: SecretStr | None = None

    # Stability's sync operations answer the POST with the image: a long timeout.
    stability_timeout_seconds: float = Field(120.0, ge=1, le=600)
    # Stability asks for no more than one look per 10 s at each async result.
    stability_look_interval: float = Field(10.0, ge=0.05, le=300)
    # A CONTENT_FILTERED (blurred, billed) result: keep it as a success, or fail the job.
    stability_filtered_is_success: bool = True
    stability_accept_json: bool = False
    # Limits editq keeps itself under, shared by all workers (0 = off). Stability allows
    # 150 requests per 10 s, then locks the account out for 60 s: stay well below, as
    # a busy worker may send a granted request a moment late.
    stability_rate_limit: int = Field(130, ge=0, le=10_000)
    stability_rate_window_seconds: float = Field(10.0, gt=0, le=3600)
    # WaveSpeed's limits depend on the account level (Silver: 500/min, 300 concurrent).
    wavespeed_rate_per_minute: int = Field(500, ge=0, le=1_000_000)
    wavespeed_max_concurrency: int = Field(300, ge=0, le=1_000_000)

    max_image_bytes: int = Field(10 * MiB, ge=1024, le=100 * MiB)
    max_image_pixels: int = Field(40_000_000, ge=64 * 64, le=200_000_000)
    max_images_per_job: int = Field(14, ge=1, le=32)
    max_wait_seconds: int = Field(60, ge=1, le=300)

    max_output_bytes: int = Field(64 * MiB, ge=MiB, le=512 * MiB)

    # A request's head (request line and headers), enforced by the API's server before
    # the app sees it (api/server.py): its size, its header lines, and the time from its
    # first byte to its end. Browsers send a few KB; the 1 MiB ceiling is a sanity cap.
    http_max_header_bytes: int = Field(64 * 1024, ge=8 * 1024, le=MiB)
    http_max_headers: int = Field(100, ge=20, le=1000)
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=120)

    # Where providers can reach this API (for their webhooks); unset = looks only.
    public_base_url: str | None = None
    # Following a provider request (shared.jobs.schedule): first look after `initial`,
    # then every `growth` x the time already waited, never more than `max` apart.
    follow_initial_seconds: float = Field(1.0, ge=0.05, le=60)
    follow_max_seconds: float = Field(10.0, ge=0.1, le=300)
    follow_growth: float = Field(0.3, ge=0.0, le=2.0)
    # A followed job's lease covers its next look plus this margin; past it the
    # reaper presumes its worker dead and has another follow it.
    follow_lease_margin_seconds: float = Field(30.0, ge=0.5, le=600)
    # HTTP timeouts towards providers. A submit that times out is an ambiguous
    # outcome (never resent), so this is generous; a look is cheap to repeat.
    provider_submit_timeout_seconds: float = Field(30.0, ge=0.5, le=600)
    provider_look_timeout_seconds: float = Field(10.0, ge=0.5, le=120)
    # An output download (WaveSpeed's CDN): a hung one holds a finishing thread this long.
    provider_download_timeout_seconds: float = Field(60.0, ge=0.5, le=600)
    # The in-flight engine (shared.inflight): looks out at once per provider in one
    # worker process, and threads that finish jobs (download, verify, store, record).
    inflight_looks_per_provider: int = Field(16, ge=1, le=1000)
    inflight_finish_threads: int = Field(8, ge=1, le=256)
    # Give up on a provider request that has not finished after this long.
    provider_timeout_seconds: int = Field(900, ge=10, le=24 * 3600)

    # Prices: the catalog's, unless overridden here, per model id, as pricing rules
    # ({"qwen-edit": {"usd": "0.025", "taken": "2026-12-01"}}); the file (TOML or JSON,
    # same shape) is read first, the variable wins. Every override must say `taken`.
    price_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    prices_file: Path | None = None
    # Edits a tenant may submit per period, by plan (null: unlimited), as the Image
    # Studio plan had them; a tenant without a plan of its own has the default one.
    plan_limits: dict[str, int | None] = Field(default_factory=lambda: {
        "free": 5, "basic": 25, "pro": 100, "unlimited": None})
    default_plan: str = "unlimited"
    plan_period: Literal["day", "month"] = "month"

    # Recommendations: the window of this deployment's own finished jobs they measure,
    # and how many a model needs in it before a figure is shown instead of "too few".
    recommendation_window_days: int = Field(7, ge=1, le=90)
    recommendation_min_jobs: int = Field(5, ge=1, le=10_000)

    # The reaper: how often beat runs it, and how long past its due time a queued
    # job's message may be before it is presumed lost and sent again (a duplicate
    # message is harmless: the claim is conditional).
    reaper_interval_seconds: float = Field(30.0, ge=0.5, le=3600)
    queued_stale_seconds: int = Field(300, ge=2, le=24 * 3600)

    # Circuit breaker per provider: this many provider-side failures in a row (within
    # the window) open it for the cooldown; 0 turns breakers off. With fallback on, a
    # job whose provider's breaker is open may move to another model (see README).
    breaker_failures: int = Field(5, ge=0, le=1000)
    breaker_window_seconds: float = Field(60.0, gt=0, le=3600)
    breaker_cooldown_seconds: float = Field(30.0, gt=0, le=3600)
    breaker_fallback: bool = False

    # Webhooks to users: the delays between attempts (seconds, comma-separated; the
    # Standard Webhooks schedule by default), each with +-10% jitter; the hosts exempt
    # from the SSRF guard (local development and tests only); how long a rotated-out
    # secret still signs; how often due deliveries are dispatched.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,50400,72000,86400"
    webhook_allowed_hosts: str = ""
    # Provider output URLs go through the same address guard; the provider's own host
    # (its base URL) is trusted, and so are these (comma-separated; development only).
    output_allowed_hosts: str = ""
    webhook_timeout_seconds: float = Field(15.0, gt=0, le=60)
    webhook_secret_overlap_seconds: int = Field(24 * 3600, ge=0, le=30 * 24 * 3600)
    webhook_dispatch_interval_seconds: float = Field(1.0, ge=0.1, le=300)

    # Images by reference (shared/inputs): a body carrying images inline is capped at
    # this, larger images travel by URL or upload; URL inputs are https and public unless
    # their host (or host:port) is listed here (development and tests only); how long the
    # worker may take to fetch one; a direct upload's presigned request lives this long,
    # and the upload, unused or not, is deleted this long after it was made.
    max_inline_body_bytes: int = Field(32 * MiB, ge=MiB, le=512 * MiB)
    # Origins (comma-separated, or *) from which browsers may PUT direct uploads to the
    # bucket and GET outputs: the console's. The API sets the bucket's CORS rules at
    # start when this is set; unset, the console sends files in its forms instead.
    s3_cors_origins: str = ""
    input_allowed_hosts: str = ""
    input_fetch_timeout_seconds: float = Field(30.0, ge=1, le=600)
    upload_url_seconds: int = Field(900, ge=60, le=7 * 24 * 3600)
    upload_expiry_seconds: int = Field(24 * 3600, ge=60, le=30 * 24 * 3600)
    # Retention (shared.retention): how long after its job ends an input and an output are
    # kept, in days (a tenant or a job may say otherwise; unset: for good); how long an
    # input no kept job uses waits before it is deleted (a submission that found it stored
    # has committed by then); how often beat's sweep runs and how many jobs it takes.
    keep_inputs_days: float | None = Field(30.0, ge=0, le=36_500)
    keep_outputs_days: float | None = Field(30.0, ge=0, le=36_500)
    input_release_grace_seconds: int = Field(600, ge=0, le=7 * 24 * 3600)
    retention_sweep_interval_seconds: float = Field(60.0, ge=0.1, le=3600)
    retention_sweep_batch: int = Field(500, ge=1, le=10_000)
    # Buckets a batch may take as its source, by name, each with its own endpoint and
    # credentials where they differ from EDITQ_S3_*: {"photos": {"endpoint_url": ...,
    # "access_key_id": ..., "secret_access_key": ..., "region": ...}} (`{}`: the same).
    source_buckets: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Hand a provider that fetches URLs (WaveSpeed) presigned GET URLs of the stored
    # inputs instead of their bytes: for a storage the provider can reach.
    provider_fetches_inputs: bool = False

    # Bulk: inline items per batch (a JSONL upload may carry more, up to the job cap),
    # the upload's size, jobs created per transaction while expanding, and how many
    # batch jobs may be in flight at once, so interactive jobs keep their latency.
    batch_max_items: int = Field(1000, ge=1, le=100_000)
    batch_max_jobs: int = Field(100_000, ge=1, le=1_000_000)
    batch_max_upload_bytes: int = Field(512 * MiB, ge=MiB, le=4096 * MiB)
    batch_chunk_size: int = Field(500, ge=1, le=10_000)
    bulk_max_in_flight: int = Field(200, ge=1, le=100_000)
    bulk_feed_interval_seconds: float = Field(1.0, ge=0.1, le=300)
    # Fair share (shared.guards.fairshare; README, "Fair share"). Bulk work (priority
    # "low": a batch's jobs unless it says otherwise) may take at most this share of each
    # provider's rate and in-flight limits: the rest is kept for interactive work, which
    # may also borrow what bulk leaves idle. Tenants split bulk's share by their weight.
    bulk_share: float = Field(0.7, gt=0, le=1)
    # The feeder sends a rate-limited provider's bulk jobs at bulk's share of its rate,
    # at most this many seconds' worth at once, not in bursts that the provider answers
    # all together (bench/README.md, "Issue 29").
    bulk_pace_burst_seconds: float = Field(2.0, ge=0.1, le=600)
    # The in-flight engine finishes bulk jobs in a pool of their own, this size, so a wave
    # of bulk answers cannot hold interactive finishes back.
    bulk_finish_threads: int = Field(2, ge=1, le=256)
    # An expanding batch's lease, renewed at each chunk: past it, the reaper presumes its
    # worker dead and another resumes from the cursor (chunks lock the batch row, so
    # even two expanders at once make no job twice). It must outlast one chunk.
    batch_expansion_lease_seconds: float = Field(60.0, ge=1, le=3600)

    job_max_attempts: int = Field(3, ge=1, le=10)
    # Between attempts: full jitter over base x 2^(attempt-1), at most max; a provider's
    # Retry-After is a floor whatever these say.
    retry_backoff_base_seconds: float = Field(1.0, ge=0.01, le=60)
    retry_backoff_max_seconds: float = Field(60.0, ge=0.1, le=3600)
    # A running job whose lease has expired is presumed abandoned by its worker. The
    # lease covers claim to submit, so it must outlast the slowest submit (checked below).
    job_lease_seconds: int = Field(600, ge=5, le=3600)
    worker_concurrency: int = Field(8, ge=1, le=512)

    @field_validator("wavespeed_api_key", "stability_api_key", "s3_access_key_id",
                     "s3_secret_access_key", "s3_endpoint_url", "s3_public_endpoint_url",
                     "public_base_url", "prices_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose's `${VAR:-}` hands over an empty string for "not configured".
        return None if value == "" else value

    @field_validator("plan_limits")
    @classmethod
    def _plan_limits(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        for plan, limit in value.items():
            if limit is not None and limit < 0:
                raise ValueError(f"plan {plan!r}: a limit is a count >= 0, or null")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        try:
            delays = [float(part) for part in value.split(",") if part.strip()]
        except ValueError as exc:
            raise ValueError("EDITQ_WEBHOOK_RETRY_SCHEDULE is seconds, comma-separated") from exc
        if not delays or any(d <= 0 or d > 7 * 24 * 3600 for d in delays):
            raise ValueError("EDITQ_WEBHOOK_RETRY_SCHEDULE needs delays between 0 and 7 days")
        return value

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.webhook_retry_schedule.split(",")
                     if part.strip())

    @property
    def output_allowed_host_set(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.output_allowed_hosts.split(",")
                         if h.strip())

    @property
    def webhook_allowed_host_set(self) -> frozenset[str]:
        return frozenset(h.strip().lower().rstrip(".") for h in
                         self.webhook_allowed_hosts.split(",") if h.strip())

    @property
    def input_allowed_host_set(self) -> frozenset[str]:
        """`host` or `host:port` entries, lower case."""
        return frozenset(h.strip().lower() for h in self.input_allowed_hosts.split(",")
                         if h.strip())

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.split("+")[0]
        if scheme not in _DB_SCHEMES:
            raise ValueError(f"EDITQ_DATABASE_URL must be sqlite or postgresql, not {scheme!r}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in _BROKER_SCHEMES:
            raise ValueError(f"EDITQ_BROKER_URL scheme {scheme!r} is not one of {_BROKER_SCHEMES}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("EDITQ_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("wavespeed_base_url", "stability_base_url", "s3_endpoint_url",
                     "s3_public_endpoint_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _no_renamed(cls, values: Any) -> Any:
        """A setting under its old name would be ignored without a word: refuse it."""
        old = sorted(name for name in RENAMED if name in os.environ)
        if old:
            raise ValueError("; ".join(f"{name} is now {RENAMED[name]}" for name in old))
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Provider keys must never travel in clear text to anything but loopback.
        for name in ("wavespeed_base_url", "stability_base_url"):
            parts = urlsplit(getattr(self, name))
            if parts.scheme != "https" and not is_loopback_host(parts.hostname):
                raise ValueError(
                    f"EDITQ_{name.upper()} must use https unless it points at loopback "
                    f"(got {parts.scheme}://{parts.hostname})"
                )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "EDITQ_S3_ACCESS_KEY_ID and EDITQ_S3_SECRET_ACCESS_KEY must be set together"
            )
        if self.default_plan not in self.plan_limits:
            raise ValueError(f"EDITQ_DEFAULT_PLAN {self.default_plan!r} is not one of "
                             f"EDITQ_PLAN_LIMITS ({', '.join(self.plan_limits)})")
        for model, rule in self.pricing_overrides().items():
            if "taken" not in rule:
                raise ValueError(f"the price override for {model!r} must say when it was "
                                 "taken (\"taken\": \"YYYY-MM-DD\")")
        slowest_submit = max(self.provider_submit_timeout_seconds,
                             self.stability_timeout_seconds)
        if self.job_lease_seconds <= slowest_submit:
            raise ValueError(
                f"EDITQ_JOB_LEASE_SECONDS ({self.job_lease_seconds}) must exceed the slowest "
                f"submit it covers ({slowest_submit:g} s, EDITQ_PROVIDER_SUBMIT_TIMEOUT_SECONDS"
                " / EDITQ_STABILITY_TIMEOUT_SECONDS): a live submit would be taken for lost")
        if self.follow_initial_seconds > self.follow_max_seconds:
            raise ValueError("EDITQ_FOLLOW_INITIAL_SECONDS must not exceed "
                             "EDITQ_FOLLOW_MAX_SECONDS")
        if self.environment == "production" and self.webhook_allowed_hosts:
            raise ValueError("EDITQ_WEBHOOK_ALLOWED_HOSTS is for development and tests: it "
                             "lets webhooks reach private addresses; unset it in production")
        if self.environment == "production" and self.input_allowed_hosts:
            raise ValueError("EDITQ_INPUT_ALLOWED_HOSTS is for development and tests: it "
                             "lets image URLs reach private addresses over plain http; unset "
                             "it in production")
        for name, bucket in self.source_buckets.items():
            unknown = set(bucket) - {"endpoint_url", "region", "access_key_id",
                                     "secret_access_key"}
            if unknown:
                raise ValueError(f"EDITQ_SOURCE_BUCKETS[{name!r}]: unknown fields "
                                 f"{', '.join(sorted(unknown))}")
            if ("access_key_id" in bucket) != ("secret_access_key" in bucket):
                raise ValueError(f"EDITQ_SOURCE_BUCKETS[{name!r}]: access_key_id and "
                                 "secret_access_key go together")
        if self.environment == "production" and self.output_allowed_hosts:
            raise ValueError("EDITQ_OUTPUT_ALLOWED_HOSTS is for development and tests: it "
                             "lets output downloads reach private addresses; unset it in "
                             "production")
        if self.environment == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs PostgreSQL, not SQLite (EDITQ_DATABASE_URL)")
            if self.broker_url.startswith("memory"):
                raise ValueError("production needs a real broker, not memory:// (EDITQ_BROKER_URL)")
        return self

    def pricing_overrides(self) -> dict[str, dict[str, Any]]:
        """The file's overrides, then the variable's, by model id."""
        merged: dict[str, dict[str, Any]] = {}
        if self.prices_file is not None:
            merged.update(_read_prices_file(self.prices_file))
        merged.update(self.price_overrides)
        return merged

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _read_prices_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text()
        raw: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise ValueError(f"EDITQ_PRICES_FILE {str(path)!r} cannot be read: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError(f"EDITQ_PRICES_FILE {str(path)!r} must map model ids to pricing rules")
    return raw

