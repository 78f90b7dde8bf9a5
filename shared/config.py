"""All of editq's settings, in one class, checked once at start-up.

Every process (API, worker, CLI) reads the same `EDITQ_*` variables, so a
misconfiguration is refused the same way everywhere, before any job is taken.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.net import is_loopback_host

MiB = 1024 * 1024

_DB_SCHEMES = ("sqlite", "postgresql")
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "memory")


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
    stability_poll_interval: float = Field(10.0, ge=0.05, le=300)
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

    # Where providers can reach this API (for their webhooks); unset = poll only.
    public_base_url: str | None = None
    # Polling a provider: first look after `initial`, then every `growth` x the
    # time already waited, never more than `max` apart.
    poll_initial_seconds: float = Field(1.0, ge=0.05, le=60)
    poll_max_seconds: float = Field(10.0, ge=0.1, le=300)
    poll_growth: float = Field(0.3, ge=0.0, le=2.0)
    # A poll chain's lease covers its next look plus this margin; past it the
    # reaper presumes the chain lost (its worker died) and restarts it.
    poll_lease_margin_seconds: float = Field(30.0, ge=0.5, le=600)
    # HTTP timeouts towards providers. A submit that times out is an ambiguous
    # outcome (never resent), so this is generous; a poll is cheap to repeat.
    provider_submit_timeout_seconds: float = Field(30.0, ge=0.5, le=600)
    provider_poll_timeout_seconds: float = Field(10.0, ge=0.5, le=120)
    # Give up on a provider request that has not finished after this long.
    provider_timeout_seconds: int = Field(900, ge=10, le=24 * 3600)

    job_max_attempts: int = Field(3, ge=1, le=10)
    # A running job whose lease has expired is presumed abandoned by its worker.
    job_lease_seconds: int = Field(600, ge=30, le=3600)
    worker_concurrency: int = Field(8, ge=1, le=512)

    @field_validator("wavespeed_api_key", "stability_api_key", "s3_access_key_id",
                     "s3_secret_access_key", "s3_endpoint_url", "s3_public_endpoint_url",
                     "public_base_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose's `${VAR:-}` hands over an empty string for "not configured".
        return None if value == "" else value

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
        if self.poll_initial_seconds > self.poll_max_seconds:
            raise ValueError("EDITQ_POLL_INITIAL_SECONDS must not exceed EDITQ_POLL_MAX_SECONDS")
        if self.environment == "production":
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs PostgreSQL, not SQLite (EDITQ_DATABASE_URL)")
            if self.broker_url.startswith("memory"):
                raise ValueError("production needs a real broker, not memory:// (EDITQ_BROKER_URL)")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache after changing the environment."""
    return Settings()
