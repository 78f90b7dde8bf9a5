"""The retry policy (shared.jobs.retry): which failures are tried again, how many times,
and after how long. Pure functions: no database."""

from __future__ import annotations

import pytest

from shared.errors import EditqError, ProviderError, StorageUnavailable
from shared.jobs.retry import Retries, backoff_seconds
from tests.conftest import make_settings

pytestmark = pytest.mark.timeout(10)

BUSY = ProviderError("busy", code="provider_unavailable", retryable=True)
MODERATED = ProviderError("nsfw", code="content_moderated")


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    delays = [backoff_seconds(attempt, None, base=1, cap=8) for attempt in range(1, 10)
              for _ in range(50)]
    assert all(0 <= d <= 8 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # full jitter, not a fixed ladder
    assert backoff_seconds(1, 30.0, base=1, cap=8) == 30.0


def test_the_policy_is_read_from_the_settings() -> None:
    # given a deployment allowing 5 attempts, backoff from 0.5 s capped at 4 s
    settings = make_settings(job_max_attempts=5, retry_backoff_base_seconds=0.5,
                             retry_backoff_max_seconds=4)
    # then the policy says so
    assert Retries.of(settings) == Retries(5, 0.5, 4.0)


def test_a_retryable_failure_is_tried_again_until_the_attempts_run_out() -> None:
    # given the default policy of 3 attempts
    retries = Retries(max_attempts=3, base_seconds=1.0, max_seconds=8.0)
    # when attempts 1 and 2 fail retryably, then a next attempt comes within the backoff
    first, second = retries.after(BUSY, 1), retries.after(BUSY, 2)
    assert first is not None and 0 <= first <= 1.0
    assert second is not None and 0 <= second <= 2.0
    # and after the third, none: the job fails
    assert retries.after(BUSY, 3) is None


def test_a_failure_that_is_not_retryable_fails_at_once() -> None:
    retries = Retries(3, 1.0, 8.0)
    assert retries.after(MODERATED, 1) is None
    assert retries.after(EditqError("a bug"), 1) is None


def test_a_providers_retry_after_is_a_floor_even_past_the_cap() -> None:
    # given a 429 asking for 30 s, and a policy capped at 8 s
    limited = ProviderError("slow down", code="provider_rate_limited", retryable=True,
                            retry_after=30.0)
    # then the next attempt waits the 30 s the provider asked for
    assert Retries(3, 1.0, 8.0).after(limited, 1) == 30.0


def test_a_storage_outage_is_retried_like_a_provider_outage() -> None:
    outage = StorageUnavailable("S3 put failed")
    assert outage.retryable
    assert Retries(3, 1.0, 8.0).after(outage, 1) is not None
