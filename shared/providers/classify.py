"""How provider failures are classified: one table, used by every provider client.

Retryable means the same work may succeed later (429, 5xx, 5xxx task codes,
network trouble); terminal means the request itself must change (4xx, 1xxx
task codes, moderation). The `code` is what the job shows in `error.code`.
`trips_breaker` marks the failures that say the provider itself is in trouble
(shared.guards.breaker counts them); a 429 is the rate limiter's, a 4xx the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ProviderError


@dataclass(frozen=True)
class Rule:
    code: str
    retryable: bool
    trips_breaker: bool = False


# HTTP statuses a provider answers with.
HTTP_STATUS: dict[int, Rule] = {
    400: Rule("provider_invalid_request", False),
    401: Rule("provider_auth_failed", False),
    402: Rule("provider_insufficient_balance", False),
    403: Rule("provider_forbidden", False),
    404: Rule("provider_not_found", False),
    413: Rule("provider_request_too_large", False),
    422: Rule("provider_rejected", False),
    429: Rule("provider_rate_limited", True),
    500: Rule("provider_internal_error", True, True),
    502: Rule("provider_bad_gateway", True, True),
    503: Rule("provider_unavailable", True, True),
    504: Rule("provider_timeout", True, True),
}

# WaveSpeed's task error codes (`data.code` of a failed task).
TASK_CODES: dict[int, Rule] = {
    1200: Rule("content_moderated", False),
    1400: Rule("provider_missing_parameter", False),
    1401: Rule("provider_invalid_parameter", False),
    1402: Rule("provider_media_access_failed", False),
    1403: Rule("provider_task_failed", False),
    1405: Rule("provider_task_failed", False),
    5000: Rule("provider_internal_error", True, True),
    5003: Rule("provider_unavailable", True, True),
    5004: Rule("provider_timeout", True, True),
}

# Error names in Stability's bodies ({id, name, errors}), where the status is too coarse.
ERROR_NAMES: dict[str, Rule] = {
    "content_moderation": Rule("content_moderated", False),
    "payload_too_large": Rule("provider_request_too_large", False),
    "rate_limit_exceeded": Rule("provider_rate_limited", True),
}

# Network failures, by where they happened.
NOT_SENT = Rule("provider_unreachable", True, True)       # connect failed: nothing reached it
AMBIGUOUS = Rule("provider_outcome_unknown", False, True) # sent, no answer: it may have run
LOOK_TRANSPORT = Rule("provider_unreachable", True, True) # a look at a request failed


# A provider that answers none of these within its timeout is in trouble too.
TIMED_OUT = Rule("provider_timeout", True, True)

BREAKER_CODES = frozenset(rule.code for rules in (HTTP_STATUS, TASK_CODES, ERROR_NAMES)
                          for rule in rules.values() if rule.trips_breaker) | {
    NOT_SENT.code, AMBIGUOUS.code, LOOK_TRANSPORT.code, TIMED_OUT.code}


def trips_breaker(code: str) -> bool:
    return code in BREAKER_CODES


def http_error(status: int, message: str, retry_after: float | None = None) -> ProviderError:
    rule = HTTP_STATUS.get(status) or Rule(
        "provider_internal_error" if status >= 500 else "provider_invalid_request",
        status >= 500)
    return ProviderError(f"HTTP {status}: {message}", code=rule.code, retryable=rule.retryable,
                         retry_after=retry_after, http_status=status)


def task_error(code: int | None, message: str) -> ProviderError:
    """A task the provider ran and that failed; unknown codes go by their thousand."""
    rule = TASK_CODES.get(code or 0) or Rule(
        "provider_internal_error" if (code or 0) >= 5000 else "provider_task_failed",
        (code or 0) >= 5000)
    return ProviderError(message or f"task failed with code {code}", code=rule.code,
                         retryable=rule.retryable, task_failed=True, provider_code=code)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; the HTTP-date form is rare enough to ignore."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
