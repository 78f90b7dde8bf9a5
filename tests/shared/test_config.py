"""shared.config.Settings: defaults, EDITQ_* variables, and every refusal at construction."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from shared.config import MiB, Settings

pytestmark = pytest.mark.timeout(60)

POSTGRES = "postgresql+psycopg://editq:pw@db:5432/editq"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDITQ_* variable of the host may decide what these tests see."""
    for name in list(os.environ):
        if name.upper().startswith("EDITQ_"):
            monkeypatch.delenv(name)


def refusal(**values: Any) -> str:
    """Build Settings that must be refused; answer the error text."""
    with pytest.raises(ValidationError) as info:
        Settings(**values)
    return str(info.value)


class TestDefaults:
    def test_defaults_build_a_development_configuration(self) -> None:
        # given no EDITQ_* variable at all
        # when settings are built
        settings = Settings()
        # then they describe a local development setup with no secrets configured
        assert settings.environment == "development"
        assert settings.database_url == "sqlite:///./editq.db"
        assert settings.is_sqlite is True
        assert settings.broker_url == "redis://127.0.0.1:6379/0"
        assert settings.wavespeed_api_key is None
        assert settings.s3_access_key_id is None
        assert settings.max_wait_seconds == 60
        assert settings.max_image_bytes == 10 * MiB

    def test_postgresql_database_is_not_sqlite(self) -> None:
        # given a PostgreSQL URL with a driver suffix
        # when settings are built
        settings = Settings(database_url=POSTGRES)
        # then it is accepted and not taken for SQLite
        assert settings.database_url == POSTGRES
        assert settings.is_sqlite is False

    def test_base_url_loses_its_trailing_slash(self) -> None:
        # given a provider base URL ending in a slash
        # when settings are built
        settings = Settings(stability_base_url="https://api.example.com/")
        # then the slash is dropped, so paths can be appended with one
        assert settings.stability_base_url == "https://api.example.com"


class TestEnvironment:
    def test_editq_variables_are_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # given EDITQ_* variables in the environment
        monkeypatch.setenv("EDITQ_MAX_WAIT_SECONDS", "30")
        monkeypatch.setenv("EDITQ_S3_BUCKET", "from-env")
        monkeypatch.setenv("EDITQ_DATABASE_URL", POSTGRES)
        # when settings are built with no arguments
        settings = Settings()
        # then the values come from the environment, typed
        assert settings.max_wait_seconds == 30
        assert settings.s3_bucket == "from-env"
        assert settings.database_url == POSTGRES

    def test_a_setting_under_its_old_name_is_refused_with_its_new_one(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        # given a deployment still setting the follow schedule under its old names
        monkeypatch.setenv("EDITQ_POLL_MAX_SECONDS", "20")
        monkeypatch.setenv("EDITQ_STABILITY_POLL_INTERVAL", "12")
        # when settings are built
        with pytest.raises(ValidationError) as info:
            Settings()
        # then start-up stops, naming each new name (the value is not silently ignored)
        assert "EDITQ_POLL_MAX_SECONDS is now EDITQ_FOLLOW_MAX_SECONDS" in str(info.value)
        assert "EDITQ_STABILITY_POLL_INTERVAL is now EDITQ_STABILITY_LOOK_INTERVAL" in str(
            info.value)
        # and under the new name the value is read
        monkeypatch.delenv("EDITQ_POLL_MAX_SECONDS")
        monkeypatch.delenv("EDITQ_STABILITY_POLL_INTERVAL")
        monkeypatch.setenv("EDITQ_FOLLOW_MAX_SECONDS", "20")
        assert Settings().follow_max_seconds == 20

    def test_unprefixed_variables_are_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # given a variable named like a field but without the EDITQ_ prefix
        monkeypatch.setenv("S3_BUCKET", "not-ours")
        # when settings are built
        settings = Settings()
        # then the default stands
        assert settings.s3_bucket == "editq"

    def test_bad_variable_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # given a MySQL database in the environment
        monkeypatch.setenv("EDITQ_DATABASE_URL", "mysql://u:p@db/editq")
        # when settings are built
        with pytest.raises(ValidationError) as info:
            Settings()
        # then they are refused, naming the variable
        assert "EDITQ_DATABASE_URL" in str(info.value)

    def test_empty_provider_key_variable_is_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # given compose's `${VAR:-}` handing over an empty key
        monkeypatch.setenv("EDITQ_WAVESPEED_API_KEY", "")
        # when settings are built
        settings = Settings()
        # then the key counts as not configured
        assert settings.wavespeed_api_key is None

    def test_provider_key_variable_is_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # given a real key in the environment
        monkeypatch.setenv("EDITQ_STABILITY_API_KEY", "sk-very-secret")
        # when settings are built
        settings = Settings()
        # then the key is held as a secret that does not show in the settings' repr
        assert isinstance(settings.stability_api_key, SecretStr)
        assert settings.stability_api_key.get_secret_value() == "sk-very-secret"
        assert "sk-very-secret" not in repr(settings)


class TestEmptyStrings:
    @pytest.mark.parametrize("field", ["wavespeed_api_key", "stability_api_key"])
    def test_empty_provider_key_becomes_none(self, field: str) -> None:
        # given an empty-string provider key
        # when settings are built
        settings = Settings(**{field: ""})
        # then it is None, not an empty secret
        assert getattr(settings, field) is None

    def test_empty_s3_endpoint_becomes_none(self) -> None:
        # given an empty S3 endpoint (AWS itself)
        # when settings are built
        settings = Settings(s3_endpoint_url="")
        # then no endpoint is configured rather than an invalid URL refused
        assert settings.s3_endpoint_url is None


class TestSchemes:
    @pytest.mark.parametrize("url", ["mysql://u:p@db/editq", "postgres://u@db/editq",
                                     "redis://127.0.0.1/0"])
    def test_database_must_be_sqlite_or_postgresql(self, url: str) -> None:
        # given a database URL of another kind
        # when settings are built
        message = refusal(database_url=url)
        # then they are refused, naming the variable
        assert "EDITQ_DATABASE_URL" in message

    def test_unknown_broker_scheme_is_refused(self) -> None:
        # given a broker URL of a kind Celery is not run with here
        # when settings are built
        message = refusal(broker_url="sqs://queue")
        # then they are refused, naming the variable and the scheme
        assert "EDITQ_BROKER_URL" in message
        assert "'sqs'" in message

    @pytest.mark.parametrize("url", ["memory://", "amqp://guest@rabbit//",
                                     "rediss://cache:6380/0"])
    def test_known_broker_schemes_are_accepted(self, url: str) -> None:
        # given a broker URL of a supported kind
        # when settings are built
        settings = Settings(broker_url=url)
        # then it is kept as given
        assert settings.broker_url == url

    def test_redis_url_must_be_redis(self) -> None:
        # given a Redis URL that is really HTTP
        # when settings are built
        message = refusal(redis_url="http://127.0.0.1:6379")
        # then they are refused, naming the variable
        assert "EDITQ_REDIS_URL" in message

    def test_s3_endpoint_must_be_http(self) -> None:
        # given an S3 endpoint that is not an http(s) URL
        # when settings are built
        with pytest.raises(ValidationError) as info:
            Settings(s3_endpoint_url="ftp://minio:9000")
        # then the error is located on that field
        assert info.value.errors()[0]["loc"] == ("s3_endpoint_url",)


class TestProviderTransport:
    @pytest.mark.parametrize("field", ["wavespeed_base_url", "stability_base_url"])
    def test_http_to_a_remote_host_is_refused(self, field: str) -> None:
        # given a provider base URL in clear text to a non-loopback host
        # when settings are built
        message = refusal(**{field: "http://api.example.com"})
        # then they are refused, naming the variable
        assert f"EDITQ_{field.upper()}" in message
        assert "https" in message

    @pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080",
                                     "http://[::1]:8080"])
    def test_http_to_loopback_is_allowed(self, url: str) -> None:
        # given a provider base URL in clear text to loopback (a local fake)
        # when settings are built
        settings = Settings(wavespeed_base_url=url)
        # then it is accepted
        assert settings.wavespeed_base_url == url

    def test_http_to_a_lookalike_of_localhost_is_refused(self) -> None:
        # given a remote host whose name merely starts with "localhost"
        # when settings are built
        message = refusal(stability_base_url="http://localhost.example.com")
        # then it is not taken for loopback
        assert "EDITQ_STABILITY_BASE_URL" in message


class TestS3Credentials:
    def test_key_id_without_secret_is_refused(self) -> None:
        # given an S3 key id alone
        # when settings are built
        message = refusal(s3_access_key_id="AKIA")
        # then they are refused, naming both variables
        assert "EDITQ_S3_ACCESS_KEY_ID" in message
        assert "EDITQ_S3_SECRET_ACCESS_KEY" in message

    def test_secret_without_key_id_is_refused(self) -> None:
        # given an S3 secret alone
        # when settings are built
        message = refusal(s3_secret_access_key="secret")
        # then they are refused, naming both variables
        assert "EDITQ_S3_ACCESS_KEY_ID" in message
        assert "EDITQ_S3_SECRET_ACCESS_KEY" in message

    def test_key_id_and_secret_together_are_accepted(self) -> None:
        # given both halves of an S3 credential
        # when settings are built
        settings = Settings(s3_access_key_id="AKIA", s3_secret_access_key="secret")
        # then both are kept, the secret as a secret
        assert settings.s3_access_key_id == "AKIA"
        assert settings.s3_secret_access_key is not None
        assert settings.s3_secret_access_key.get_secret_value() == "secret"


class TestProduction:
    def test_production_with_postgresql_and_redis_is_accepted(self) -> None:
        # given a production setup with real services
        # when settings are built
        settings = Settings(environment="production", database_url=POSTGRES,
                            broker_url="redis://redis:6379/0")
        # then it is accepted
        assert settings.environment == "production"

    def test_production_with_sqlite_is_refused(self) -> None:
        # given production on SQLite
        # when settings are built
        message = refusal(environment="production", database_url="sqlite:///./prod.db")
        # then they are refused, naming the variable
        assert "EDITQ_DATABASE_URL" in message
        assert "PostgreSQL" in message

    def test_production_with_memory_broker_is_refused(self) -> None:
        # given production on the in-memory broker
        # when settings are built
        message = refusal(environment="production", database_url=POSTGRES,
                          broker_url="memory://")
        # then they are refused because of the broker
        assert "memory://" in message
        assert "broker" in message

    def test_production_with_memory_broker_names_the_variable(self) -> None:
        # given production on the in-memory broker
        # when settings are built
        message = refusal(environment="production", database_url=POSTGRES,
                          broker_url="memory://")
        # then the refusal names the variable to change, as every other refusal does
        assert "EDITQ_BROKER_URL" in message

    def test_unknown_environment_is_refused(self) -> None:
        # given an environment name outside development/test/production
        # when settings are built
        with pytest.raises(ValidationError) as info:
            Settings(environment="staging")
        # then the error is located on the environment field
        assert info.value.errors()[0]["loc"] == ("environment",)


class TestLimits:
    @pytest.mark.parametrize(("field", "value"), [
        ("max_wait_seconds", 0),
        ("max_wait_seconds", 301),
        ("max_image_bytes", 100 * MiB + 1),
        ("max_image_bytes", 1023),
        ("max_image_pixels", 64 * 64 - 1),
        ("max_images_per_job", 33),
        ("presign_expiry_seconds", 59),
        ("job_max_attempts", 0),
        ("job_lease_seconds", 3601),
        ("job_lease_seconds", 4),
        ("worker_concurrency", 0),
    ])
    def test_out_of_range_limit_is_refused(self, field: str, value: int) -> None:
        # given a limit outside its allowed range
        # when settings are built
        with pytest.raises(ValidationError) as info:
            Settings(**{field: value})
        # then the error names that limit
        assert info.value.errors()[0]["loc"] == (field,)
        assert field in str(info.value)

    @pytest.mark.parametrize(("field", "value"), [
        ("max_wait_seconds", 1),
        ("max_wait_seconds", 300),
        ("max_image_bytes", 100 * MiB),
        ("max_image_bytes", 1024),
    ])
    def test_limit_at_its_bound_is_accepted(self, field: str, value: int) -> None:
        # given a limit exactly at an end of its range
        # when settings are built
        settings = Settings(**{field: value})
        # then it is kept
        assert getattr(settings, field) == value

    def test_a_job_lease_shorter_than_a_submit_is_refused(self) -> None:
        # given a lease that a live Stability submit (sync, up to its timeout) outlasts
        # when settings are built
        message = refusal(job_lease_seconds=60, stability_timeout_seconds=120)
        # then the refusal names both settings, and a lease past the timeout is accepted
        assert "EDITQ_JOB_LEASE_SECONDS" in message and "EDITQ_STABILITY_TIMEOUT" in message
        assert Settings(job_lease_seconds=8, stability_timeout_seconds=5,
                        provider_submit_timeout_seconds=3).job_lease_seconds == 8

    def test_limit_from_environment_is_range_checked(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        # given an out-of-range limit in the environment
        monkeypatch.setenv("EDITQ_MAX_IMAGE_BYTES", str(200 * MiB))
        # when settings are built
        with pytest.raises(ValidationError) as info:
            Settings()
        # then the limit is named
        assert "max_image_bytes" in str(info.value)
