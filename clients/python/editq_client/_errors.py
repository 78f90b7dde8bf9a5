"""One hierarchy for everything the client raises.

`EditqError(status, code, detail, problem)`: `code` is the API's stable problem code
(RFC 9457 `application/problem+json`, its `code` member) and `problem` the whole problem
object. Errors the API answers map to a class by `code` first, then by status; errors
that happen on this side (a connection that cannot be made, a job that did not finish in
time, a webhook that does not verify) have `status` None and a code of their own.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from ._types import Job


class EditqError(Exception):
    """Base of every error this client raises."""

    def __init__(self, status: int | None, code: str, detail: str,
                 problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}" if status else f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem: dict[str, Any] = problem if problem is not None else {}

    @property
    def retry_after(self) -> float | None:
        """Seconds the API asked to wait (its `Retry-After`), when it did."""
        value = self.problem.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


# --- answered by the API, by status -------------------------------------------------------

class APIStatusError(EditqError):
    """The API answered with an error status (4xx or 5xx)."""


class BadRequest(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: no API key, or not a valid one."""


class PaymentRequired(APIStatusError):
    """402."""


class PermissionDenied(APIStatusError):
    """403: the key may not do this (admin only)."""


class NotFound(APIStatusError):
    """404: no such job, batch, comparison... for this tenant."""


class Conflict(APIStatusError):
    """409: not in a state that allows this."""


class Gone(APIStatusError):
    """410: deleted (retention, or a request)."""


class PayloadTooLarge(APIStatusError):
    """413."""


class UnsupportedMediaType(APIStatusError):
    """415."""


class InvalidRequest(APIStatusError):
    """422: the input is not valid; `problem["field"]` names the field when one is at fault."""


class RateLimited(APIStatusError):
    """429."""


class ServerError(APIStatusError):
    """5xx."""


class ServiceUnavailable(ServerError):
    """503: a dependency (database, storage, provider) is unavailable; retry shortly."""


# --- answered by the API, by code ----------------------------------------------------------

class BudgetExceeded(PaymentRequired):
    """402 `budget_exceeded`: the problem names scope, budget, spent, in_flight, estimate."""


class PlanLimitExceeded(RateLimited):
    """429 `plan_limit_exceeded`: the plan allows no more edits this period (resets_at)."""


class JobNotCancelable(Conflict):
    """409 `job_not_cancelable`: the job has already finished."""


class NotEnded(Conflict):
    """409 `not_ended`."""


class DataDeleted(Gone):
    """410 `data_deleted`."""


class IdempotencyKeyReused(InvalidRequest):
    """422 `idempotency_key_reused`: the same key was sent with another request."""


class ModelsRefused(InvalidRequest):
    """422 `models_refused`: `problem["refusals"]` gives each refused model's reason."""


class BatchInvalid(InvalidRequest):
    """422 `batch_invalid`: `problem["errors"]` lists the invalid lines."""


class InputRefused(InvalidRequest):
    """422 `input_refused`."""


class ProviderNotConfigured(ServiceUnavailable):
    """503 `provider_not_configured`."""


# --- on this side ---------------------------------------------------------------------------

class APIConnectionError(EditqError):
    """The API (or the storage) could not be reached, after the retries."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, "connection_error", detail)


class StorageError(EditqError):
    """A presigned upload or download that the storage refused."""


class JobTimeout(EditqError):
    """The job did not finish within `timeout`. `run()` canceled it first (`job` is then
    the canceled job); `wait()` leaves it running."""

    def __init__(self, job_id: str, timeout: float | None, job: Job | None = None,
                 canceled: bool = False) -> None:
        what = "canceled" if canceled else "still " + (job.status if job else "unfinished")
        super().__init__(None, "job_timeout",
                         f"job {job_id} did not finish within {timeout} s ({what})")
        self.job_id = job_id
        self.job = job
        self.canceled = canceled


class JobFailed(EditqError):
    """`run()`'s job ended without succeeding: `job.error` says why."""

    def __init__(self, job: Job) -> None:
        code = job.error.code if job.error else job.status
        message = job.error.message if job.error and job.error.message else job.status
        super().__init__(None, code, f"job {job.id} {job.status}: {message}")
        self.job_id = job.id
        self.job = job


class JobCanceled(JobFailed):
    """`run()`'s job was canceled (by another caller: a timeout raises JobTimeout)."""


class WebhookVerificationError(EditqError):
    """A webhook delivery that must be refused: a header missing, a timestamp out of
    tolerance, or no signature that matches the secret."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, "webhook_verification_failed", detail)


class ConfigurationError(EditqError):
    """The client cannot be built as asked (no API key, say)."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, "configuration_error", detail)


BY_CODE: dict[str, type[APIStatusError]] = {
    "budget_exceeded": BudgetExceeded,
    "plan_limit_exceeded": PlanLimitExceeded,
    "job_not_cancelable": JobNotCancelable,
    "not_ended": NotEnded,
    "data_deleted": DataDeleted,
    "idempotency_key_reused": IdempotencyKeyReused,
    "models_refused": ModelsRefused,
    "batch_invalid": BatchInvalid,
    "input_refused": InputRefused,
    "provider_not_configured": ProviderNotConfigured,
}
BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequest, 401: AuthenticationError, 402: PaymentRequired, 403: PermissionDenied,
    404: NotFound, 409: Conflict, 410: Gone, 413: PayloadTooLarge, 415: UnsupportedMediaType,
    422: InvalidRequest, 429: RateLimited, 503: ServiceUnavailable,
}


def error_from_response(response: httpx.Response, body: bytes | None = None) -> EditqError:
    """The error an answer of status >= 400 stands for (its body already read, or given)."""
    status = response.status_code
    raw = body if body is not None else response.content
    problem: dict[str, Any]
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        problem = parsed
    else:
        text = raw.decode(errors="replace")[:500] if raw else ""
        problem = {"detail": text or response.reason_phrase}
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is not None:
        problem.setdefault("retry_after", retry_after)
    code = str(problem.get("code") or f"http_{status}")
    detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase)
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or (
        ServerError if status >= 500 else APIStatusError)
    return cls(status, code, detail, problem)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: delta-seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
