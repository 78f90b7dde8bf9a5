"""The failure classification table: retryable or terminal, its code, and whether it says
the provider is in trouble (the breaker counts those)."""

from __future__ import annotations

import pytest

from shared.providers import classify

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("status", "code", "retryable", "trips"), [
    (400, "provider_invalid_request", False, False),
    (401, "provider_auth_failed", False, False),
    (402, "provider_insufficient_balance", False, False),
    (403, "provider_forbidden", False, False),
    (413, "provider_request_too_large", False, False),
    (422, "provider_rejected", False, False),
    (429, "provider_rate_limited", True, False),
    (500, "provider_internal_error", True, True),
    (502, "provider_bad_gateway", True, True),
    (503, "provider_unavailable", True, True),
    (504, "provider_timeout", True, True),
    (418, "provider_invalid_request", False, False),  # unknown 4xx: the request's fault
    (599, "provider_internal_error", True, True),  # unknown 5xx: the provider's
])
def test_http_statuses(status: int, code: str, retryable: bool, trips: bool) -> None:
    error = classify.http_error(status, "x", retry_after=3)
    assert (error.code, error.retryable, error.retry_after) == (code, retryable, 3)
    assert classify.trips_breaker(error.code) is trips


@pytest.mark.parametrize(("task_code", "code", "retryable"), [
    (1200, "content_moderated", False), (1400, "provider_missing_parameter", False),
    (1401, "provider_invalid_parameter", False), (1402, "provider_media_access_failed", False),
    (1403, "provider_task_failed", False), (1405, "provider_task_failed", False),
    (5000, "provider_internal_error", True), (5003, "provider_unavailable", True),
    (5004, "provider_timeout", True), (1999, "provider_task_failed", False),
    (5999, "provider_internal_error", True), (None, "provider_task_failed", False),
])
def test_task_codes(task_code: int | None, code: str, retryable: bool) -> None:
    error = classify.task_error(task_code, "")
    assert (error.code, error.retryable, error.task_failed) == (code, retryable, True)


def test_network_failures_by_where_they_happened() -> None:
    assert (classify.NOT_SENT.retryable, classify.NOT_SENT.trips_breaker) == (True, True)
    # a submit sent and not answered is never retried blindly, but says the provider is ill
    assert (classify.AMBIGUOUS.code, classify.AMBIGUOUS.retryable) == (
        "provider_outcome_unknown", False)
    assert classify.trips_breaker("provider_outcome_unknown")
    assert not classify.trips_breaker("content_moderated")
    assert not classify.trips_breaker("storage_unavailable")


@pytest.mark.parametrize(("header", "seconds"), [
    ("30", 30.0), ("0.5", 0.5), ("-3", 0.0), ("", None), (None, None),
    ("Wed, 21 Oct 2026 07:28:00 GMT", None),
])
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert classify.parse_retry_after(header) == seconds
