"""Domain errors that carry their own stable code and HTTP status.

Deep code raises these; the API maps them to RFC 9457 problems in one place
(`api/problems.py`), so no module below the routes knows about HTTP responses.
"""

from __future__ import annotations

from typing import Any


class EditqError(Exception):
    """Base class: `code` is the stable machine code clients may switch on."""

    code = "internal_error"
    status = 500
    title = "Internal error"
    # Whether the same work may succeed if tried again later (a worker retries it).
    retryable = False
    retry_after: float | None = None

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidInput(EditqError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"


class InvalidJson(InvalidInput):
    code = "invalid_json"
    title = "The body is not valid JSON"


class InvalidMultipart(InvalidInput):
    code = "invalid_multipart"
    title = "The multipart body could not be read"


class UnknownQueryParameter(InvalidInput):
    code = "unknown_query_parameter"
    title = "Unknown query parameter"


class InvalidImage(InvalidInput):
    code = "invalid_image"
    title = "The image could not be decoded"


class UnsupportedImageFormat(InvalidInput):
    code = "unsupported_image_format"
    title = "Unsupported image format"


class ImageTooLarge(EditqError):
    code = "image_too_large"
    status = 413
    title = "Image too large"


class UnknownModel(InvalidInput):
    code = "unknown_model"
    title = "Unknown model"


class UnsupportedOperation(InvalidInput):
    code = "unsupported_operation"
    title = "Operation not supported by this model"


class PromptRequired(InvalidInput):
    code = "prompt_required"
    title = "A prompt is required"


class UnsupportedOption(InvalidInput):
    code = "unsupported_option"
    title = "Option not supported by this model"


class ModelsRefused(InvalidInput):
    """A comparison some of whose models cannot take the request: `refusals` says why,
    per model, with each model's own code."""

    code = "models_refused"
    title = "Some models cannot take this request"


class IdempotencyConflict(EditqError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency-Key reused with a different request"


class RequestTooLarge(EditqError):
    code = "request_too_large"
    status = 413
    title = "Request too large"


class UnsupportedMediaType(EditqError):
    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class NotFound(EditqError):
    code = "not_found"
    status = 404
    title = "Not found"


class Unauthorized(EditqError):
    code = "unauthorized"
    status = 401
    title = "Missing or invalid API key"


class Conflict(EditqError):
    code = "conflict"
    status = 409
    title = "Conflict"


class JobNotCancelable(Conflict):
    code = "job_not_cancelable"
    title = "The job has already finished"


class NotEnded(Conflict):
    """Data asked to be deleted belongs to a job or batch that has not ended."""

    code = "not_ended"
    title = "It has not ended yet"


class DataDeleted(EditqError):
    """What was asked for was deleted (retention, or a request): it is gone, not missing."""

    code = "data_deleted"
    status = 410
    title = "Deleted"


class StorageUnavailable(EditqError):
    code = "storage_unavailable"
    status = 503
    title = "Object storage is unavailable"
    retryable = True


class StorageObjectMissing(EditqError):
    """A key that should exist does not: retrying cannot bring it back."""

    code = "storage_object_missing"
    status = 500
    title = "A stored object is missing"


class InputRefused(InvalidInput):
    """An image reference editq will not fetch: its form, its address, an upload that is
    not the tenant's or has expired, or what it serves is not an image of an accepted
    size (shared.inputs)."""

    code = "input_refused"
    title = "Input refused"


class InputUnreachable(InvalidInput):
    """An image reference that could not be fetched: no answer, an error status, a
    timeout."""

    code = "input_unreachable"
    title = "Input unreachable"


class ObjectTooLarge(InputRefused):
    """An object (a direct upload, a source bucket's image) over the size it may have."""


class ProviderError(EditqError):
    """A provider call failed; `retryable` decides between a retry and failing the job.

    `task_failed` tells a failed edit (the provider ran it and it failed) from
    a failed conversation about it (a poll that got a 503): the first needs a
    new attempt, the second only another look later.
    """

    code = "provider_error"
    status = 502
    title = "Provider error"

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = False,
                 retry_after: float | None = None, task_failed: bool = False,
                 **extra: Any) -> None:
        super().__init__(message, **extra)
        if code is not None:
            self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.task_failed = task_failed


class ProviderOutcomeUnknown(ProviderError):
    """The submit may or may not have reached the provider; it is never sent again blindly."""

    code = "provider_outcome_unknown"


class ProviderNotConfigured(EditqError):
    code = "provider_not_configured"
    status = 503
    title = "Provider not configured"


class BudgetExceeded(EditqError):
    """The job's estimate would take the tenant's spend over a monthly budget."""

    code = "budget_exceeded"
    status = 402
    title = "Budget exceeded"


class PlanLimitExceeded(EditqError):
    """The tenant's plan allows no more edits in this period."""

    code = "plan_limit_exceeded"
    status = 429
    title = "Plan limit reached"

    def __init__(self, message: str, *, retry_after: float, **extra: object) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class Forbidden(EditqError):
    """The key is valid but may not see this (another tenant's figures, say)."""

    code = "forbidden"
    status = 403
    title = "Forbidden"
