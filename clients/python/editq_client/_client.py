"""`Client` and `AsyncClient`: the same calls, each one line over a flow of _core (which
builds the requests, retries, parses and follows the streams), run by a sync or an async
runner (_runners)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

import httpx

from ._core import Config, Core, ImageInput, instant
from ._runners import AsyncRunner, SyncRunner
from ._types import (
    BATCH_FINISHED,
    COMPARISON_FINISHED,
    Batch,
    BatchEstimate,
    BatchResult,
    BatchUpdate,
    Budget,
    Comparison,
    ComparisonUpdate,
    CostReport,
    Delivery,
    DeliveryList,
    Job,
    JobEvent,
    ModelList,
    Quote,
    Usage,
    WebhookSecret,
)
from .models import BatchList, EventList

OnError = Literal["reject", "skip"]
DeliveryStatus = Literal["pending", "delivered", "failed", "gone"]
GroupBy = Literal["model", "provider", "operation", "day", "tenant"]
# "low": bulk work, held to bulk's share of each provider's limits (a batch's default).
Priority = Literal["normal", "low"]
When = str | date | datetime | None
JsonlSource = str | os.PathLike[str] | bytes


def _edit_fields(prompt: str | None, operation: str | None, model: str | None,
                 options: Mapping[str, Any] | None, negative_prompt: str | None,
                 metadata: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {"prompt": prompt, "operation": operation, "model": model,
            "options": dict(options) if options is not None else None,
            "negative_prompt": negative_prompt,
            "metadata": dict(metadata) if metadata is not None else None, **extra}


def _job_extra(deadline_seconds: int | None, webhook_url: str | None,
               webhook_events: Sequence[str] | None,
               retention: Mapping[str, float] | None,
               priority: Priority | None) -> dict[str, Any]:
    return {"deadline_seconds": deadline_seconds, "webhook_url": webhook_url,
            "priority": priority,
            "webhook_events": list(webhook_events) if webhook_events is not None else None,
            "retention": dict(retention) if retention is not None else None}


def _batch_fields(defaults: Mapping[str, Any] | None, on_error: OnError | None,
                  webhook_url: str | None, webhook_events: Sequence[str] | None,
                  metadata: Mapping[str, Any] | None,
                  priority: Priority | None) -> dict[str, Any]:
    return {"defaults": dict(defaults) if defaults is not None else None,
            "priority": priority,
            "on_error": on_error, "webhook_url": webhook_url,
            "webhook_events": list(webhook_events) if webhook_events is not None else None,
            "metadata": dict(metadata) if metadata is not None else None}


def _deliveries_params(status: DeliveryStatus | None, job_id: str | None, limit: int,
                       cursor: str | None) -> dict[str, Any]:
    return {"status": status, "job_id": job_id, "limit": limit, "cursor": cursor}


def _costs_params(group_by: GroupBy, from_: When, to: When,
                  tenant: str | None) -> dict[str, Any]:
    return {"group_by": group_by, "from": instant(from_), "to": instant(to), "tenant": tenant}


# --- sync ------------------------------------------------------------------------------------

class Uploads:
    def __init__(self, core: Core, runner: SyncRunner) -> None:
        self._core, self._runner = core, runner

    def create(self, image: bytes | str | os.PathLike[str],
               content_type: str | None = None) -> str:
        """Send an image (bytes or a file) straight to storage; its upload id (`upl_...`),
        for any image argument."""
        return self._runner.run(self._core.upload(image, content_type))


class Batches:
    def __init__(self, core: Core, runner: SyncRunner) -> None:
        self._core, self._runner = core, runner

    def create(self, items: Iterable[Mapping[str, Any]] | None = None, *,
               jsonl: JsonlSource | None = None, reprocess: Mapping[str, Any] | None = None,
               source: Mapping[str, Any] | None = None,
               defaults: Mapping[str, Any] | None = None,
               on_error: OnError | None = None, webhook_url: str | None = None,
               webhook_events: Sequence[str] | None = None,
               metadata: Mapping[str, Any] | None = None,
               priority: Priority | None = None,
               idempotency_key: str | None = None) -> Batch:
        """A batch of jobs, from one of: `items` (job bodies; their images in any form
        `run` takes); a JSONL file (`jsonl`: a path, or its bytes), one job body per line;
        `reprocess` ({"filter": {"model": ..., "created_after": ...}, "override": {"model":
        ...}}), the tenant's stored jobs run again, their inputs reused; `source`
        ({"bucket": ..., "prefix": ..., "limit": n}), one job per image of a bucket the
        operator allows. A batch's jobs are `priority="low"` unless it says "normal"."""
        fields = _batch_fields(defaults, on_error, webhook_url, webhook_events, metadata,
                               priority)
        made = self._runner.run(self._core.create_batch(
            items=items, jsonl=jsonl, reprocess=reprocess, source=source, fields=fields,
            dry_run=False, idempotency_key=idempotency_key))
        assert isinstance(made, Batch)
        return made

    def estimate(self, items: Iterable[Mapping[str, Any]] | None = None, *,
                 jsonl: JsonlSource | None = None, reprocess: Mapping[str, Any] | None = None,
                 source: Mapping[str, Any] | None = None,
                 defaults: Mapping[str, Any] | None = None,
                 on_error: OnError | None = None) -> BatchEstimate:
        """A dry run: the count, the estimated cost and the invalid lines; nothing made."""
        fields = _batch_fields(defaults, on_error, None, None, None, None)
        made = self._runner.run(self._core.create_batch(
            items=items, jsonl=jsonl, reprocess=reprocess, source=source, fields=fields,
            dry_run=True, idempotency_key=None))
        assert isinstance(made, BatchEstimate)
        return made

    def get(self, batch_id: str) -> Batch:
        return self._runner.run(self._core.get(Batch, f"/v1/batches/{batch_id}"))

    def list(self, limit: int = 20, cursor: str | None = None) -> BatchList:
        return self._runner.run(self._core.get(BatchList, "/v1/batches",
                                               {"limit": limit, "cursor": cursor}))

    def cancel(self, batch_id: str) -> Batch:
        return self._runner.run(self._core.post(Batch, f"/v1/batches/{batch_id}/cancel"))

    def stream(self, batch_id: str, *, poll_fallback: bool = True) -> Iterator[BatchUpdate]:
        """Its progress as it changes (GET /v1/batches/{id}/stream), until completed or
        canceled; polled every `poll_interval` where the API has no stream."""
        return self._runner.iterate(self._core.stream_batch(batch_id, poll_fallback))

    def wait(self, batch_id: str, timeout: float | None = None) -> Batch:
        return self._runner.run(self._core.wait_view(
            Batch, f"/v1/batches/{batch_id}", BATCH_FINISHED, timeout))

    def results(self, batch_id: str) -> Iterator[BatchResult]:
        """One result per job, in batch order (the lines of its manifest), as they stream."""
        return self._runner.iterate(self._core.batch_results(batch_id))


class Comparisons:
    def __init__(self, core: Core, runner: SyncRunner) -> None:
        self._core, self._runner = core, runner

    def create(self, image: ImageInput, models: Sequence[str], *, prompt: str | None = None,
               operation: str | None = None, options: Mapping[str, Any] | None = None,
               mask: ImageInput | None = None, negative_prompt: str | None = None,
               metadata: Mapping[str, Any] | None = None,
               idempotency_key: str | None = None) -> Comparison:
        """One input on 2 to 6 models, side by side."""
        fields = _edit_fields(prompt, operation, None, options, negative_prompt, metadata,
                              {"models": list(models)})
        return self._runner.run(self._core.create_comparison(image, mask, fields,
                                                             idempotency_key))

    def get(self, comparison_id: str) -> Comparison:
        return self._runner.run(self._core.get(Comparison, f"/v1/comparisons/{comparison_id}"))

    def vote(self, comparison_id: str, model: str) -> Comparison:
        return self._runner.run(self._core.post(
            Comparison, f"/v1/comparisons/{comparison_id}/vote", json_body={"model": model}))

    def wait(self, comparison_id: str, timeout: float | None = None) -> Comparison:
        return self._runner.run(self._core.wait_view(
            Comparison, f"/v1/comparisons/{comparison_id}", COMPARISON_FINISHED, timeout))

    def stream(self, comparison_id: str, *,
               poll_fallback: bool = True) -> Iterator[ComparisonUpdate]:
        return self._runner.iterate(self._core.stream_comparison(comparison_id, poll_fallback))


class Webhooks:
    """This tenant's webhooks: the secret that signs them (`verify_webhook`'s third
    argument), its rotation, and the deliveries with their attempts."""

    def __init__(self, core: Core, runner: SyncRunner) -> None:
        self._core, self._runner = core, runner

    def secret(self) -> WebhookSecret:
        """The secret that signs this tenant's webhooks (`whsec_...`)."""
        return self._runner.run(self._core.get(WebhookSecret, "/v1/webhook-secret"))

    def rotate_secret(self) -> WebhookSecret:
        """A new secret; the previous one keeps signing too (two signatures) until
        `previous_valid_until`. Never retried: a second rotation would retire the first."""
        return self._runner.run(self._core.post(WebhookSecret, "/v1/webhook-secret/rotate"))

    def deliveries(self, *, status: DeliveryStatus | None = None, job_id: str | None = None,
                   limit: int = 50, cursor: str | None = None) -> DeliveryList:
        """The deliveries, newest first, each with its attempts (time, status code, error,
        latency)."""
        return self._runner.run(self._core.get(
            DeliveryList, "/v1/webhook-deliveries",
            _deliveries_params(status, job_id, limit, cursor)))

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a delivery again now, with the same `webhook-id` (receivers deduplicate on
        it)."""
        return self._runner.run(self._core.post(
            Delivery, f"/v1/webhook-deliveries/{delivery_id}/redeliver"))


class Client:
    """editq's API, synchronously. `base_url` and `api_key` default to EDITQ_API_URL and
    EDITQ_API_KEY. Use it as a context manager, or `close()` it."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, poll_interval: float = 1.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        config = Config.make(base_url, api_key, timeout=timeout, max_retries=max_retries,
                             poll_interval=poll_interval)
        self._http = httpx.Client(transport=transport, follow_redirects=False)
        self._runner = SyncRunner(self._http)
        self._core = Core(config, self._runner)
        self.uploads = Uploads(self._core, self._runner)
        self.batches = Batches(self._core, self._runner)
        self.comparisons = Comparisons(self._core, self._runner)
        self.webhooks = Webhooks(self._core, self._runner)

    @property
    def base_url(self) -> str:
        return self._core.config.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, image: ImageInput | Sequence[ImageInput], *, model: str | None = None,
            operation: str | None = None, prompt: str | None = None,
            options: Mapping[str, Any] | None = None, mask: ImageInput | None = None,
            negative_prompt: str | None = None, metadata: Mapping[str, Any] | None = None,
            timeout: float | None = None,
            on_queue_update: Callable[[JobEvent], Any] | None = None,
            deadline_seconds: int | None = None, webhook_url: str | None = None,
            webhook_events: Sequence[str] | None = None,
            retention: Mapping[str, float] | None = None, priority: Priority | None = None,
            idempotency_key: str | None = None, raise_on_failure: bool = True) -> Job:
        """Submit a job and wait for it; the succeeded job (outputs, cost).

        `image` (and each of a list, and `mask`): bytes, a path, an https:// URL, an upload
        id or a data URI. After `timeout` seconds the job is canceled and JobTimeout
        raised. `on_queue_update(event)` is called for each event of its stream while it
        is queued or running. A failed (canceled) job raises JobFailed (JobCanceled),
        unless `raise_on_failure=False`. `priority="low"` marks it bulk work: it yields to
        interactive jobs for the providers' limits."""
        return self._runner.run(self._core.run_edit(
            image, mask, _edit_fields(prompt, operation, model, options, negative_prompt,
                                      metadata, _job_extra(deadline_seconds, webhook_url,
                                                           webhook_events, retention,
                                                           priority)),
            timeout=timeout, on_queue_update=on_queue_update,
            idempotency_key=idempotency_key, raise_on_failure=raise_on_failure))

    def submit(self, image: ImageInput | Sequence[ImageInput], *, model: str | None = None,
               operation: str | None = None, prompt: str | None = None,
               options: Mapping[str, Any] | None = None, mask: ImageInput | None = None,
               negative_prompt: str | None = None, metadata: Mapping[str, Any] | None = None,
               deadline_seconds: int | None = None, webhook_url: str | None = None,
               webhook_events: Sequence[str] | None = None,
               retention: Mapping[str, float] | None = None,
               priority: Priority | None = None,
               idempotency_key: str | None = None) -> Job:
        """Submit a job (202): the job, queued. A retry of this call is answered with the
        same job (the client sends an Idempotency-Key, its own unless given)."""
        return self._runner.run(self._core.submit_edit(
            image, mask, _edit_fields(prompt, operation, model, options, negative_prompt,
                                      metadata, _job_extra(deadline_seconds, webhook_url,
                                                           webhook_events, retention,
                                                           priority)),
            idempotency_key))

    def get(self, job_id: str) -> Job:
        return self._runner.run(self._core.get_job(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Long-poll until the job has ended; JobTimeout (the job left running) after
        `timeout` seconds."""
        return self._runner.run(self._core.wait(job_id, timeout))

    def cancel(self, job_id: str) -> Job:
        return self._runner.run(self._core.cancel(job_id))

    def events(self, job_id: str) -> EventList:
        """The job's timeline: every transition and retry."""
        return self._runner.run(self._core.get(EventList, f"/v1/jobs/{job_id}/events"))

    def stream(self, job_id: str, last_event_id: int | str | None = None) -> Iterator[JobEvent]:
        """The job's events as they happen (GET /v1/jobs/{id}/stream), each with the job as
        it then is; ends with the event at which it has ended. A dropped connection is
        resumed from the last event seen, without duplicates."""
        return self._runner.iterate(self._core.stream_job(job_id, last_event_id))

    def quote(self, image: ImageInput | Sequence[ImageInput], *, model: str | None = None,
              operation: str | None = None, prompt: str | None = None,
              options: Mapping[str, Any] | None = None, mask: ImageInput | None = None,
              negative_prompt: str | None = None) -> Quote:
        """What the job would cost, and whether the budget allows it; nothing is run."""
        return self._runner.run(self._core.quote(
            image, mask, _edit_fields(prompt, operation, model, options, negative_prompt,
                                      None, {})))

    def models(self, operation: str | None = None, *, width: int | None = None,
               height: int | None = None) -> ModelList:
        """The catalog; with `operation`, the models that serve it, cheapest first."""
        return self._runner.run(self._core.get(
            ModelList, "/v1/models", {"operation": operation, "width": width, "height": height}))

    def costs(self, group_by: GroupBy = "model", *, from_: When = None, to: When = None,
              tenant: str | None = None) -> CostReport:
        """What the ledger charged in [from_, to), grouped."""
        return self._runner.run(self._core.get(
            CostReport, "/v1/costs", _costs_params(group_by, from_, to, tenant)))

    def budget(self) -> Budget:
        return self._runner.run(self._core.get(Budget, "/v1/budget"))

    def usage(self) -> Usage:
        """Each rate-limited provider's limits now: what interactive and bulk work use of
        them, and bulk's share (yours, and how many tenants hold some)."""
        return self._runner.run(self._core.get(Usage, "/v1/usage"))


# --- async -----------------------------------------------------------------------------------

class AsyncUploads:
    def __init__(self, core: Core, runner: AsyncRunner) -> None:
        self._core, self._runner = core, runner

    async def create(self, image: bytes | str | os.PathLike[str],
                     content_type: str | None = None) -> str:
        return await self._runner.run(self._core.upload(image, content_type))


class AsyncBatches:
    def __init__(self, core: Core, runner: AsyncRunner) -> None:
        self._core, self._runner = core, runner

    async def create(self, items: Iterable[Mapping[str, Any]] | None = None, *,
                     jsonl: JsonlSource | None = None,
                     reprocess: Mapping[str, Any] | None = None,
                     source: Mapping[str, Any] | None = None,
                     defaults: Mapping[str, Any] | None = None,
                     on_error: OnError | None = None, webhook_url: str | None = None,
                     webhook_events: Sequence[str] | None = None,
                     metadata: Mapping[str, Any] | None = None,
                     priority: Priority | None = None,
                     idempotency_key: str | None = None) -> Batch:
        fields = _batch_fields(defaults, on_error, webhook_url, webhook_events, metadata,
                               priority)
        made = await self._runner.run(self._core.create_batch(
            items=items, jsonl=jsonl, reprocess=reprocess, source=source, fields=fields,
            dry_run=False, idempotency_key=idempotency_key))
        assert isinstance(made, Batch)
        return made

    async def estimate(self, items: Iterable[Mapping[str, Any]] | None = None, *,
                       jsonl: JsonlSource | None = None,
                       reprocess: Mapping[str, Any] | None = None,
                       source: Mapping[str, Any] | None = None,
                       defaults: Mapping[str, Any] | None = None,
                       on_error: OnError | None = None) -> BatchEstimate:
        fields = _batch_fields(defaults, on_error, None, None, None, None)
        made = await self._runner.run(self._core.create_batch(
            items=items, jsonl=jsonl, reprocess=reprocess, source=source, fields=fields,
            dry_run=True, idempotency_key=None))
        assert isinstance(made, BatchEstimate)
        return made

    async def get(self, batch_id: str) -> Batch:
        return await self._runner.run(self._core.get(Batch, f"/v1/batches/{batch_id}"))

    async def list(self, limit: int = 20, cursor: str | None = None) -> BatchList:
        return await self._runner.run(self._core.get(BatchList, "/v1/batches",
                                                     {"limit": limit, "cursor": cursor}))

    async def cancel(self, batch_id: str) -> Batch:
        return await self._runner.run(self._core.post(Batch, f"/v1/batches/{batch_id}/cancel"))

    def stream(self, batch_id: str, *,
               poll_fallback: bool = True) -> AsyncIterator[BatchUpdate]:
        return self._runner.iterate(self._core.stream_batch(batch_id, poll_fallback))

    async def wait(self, batch_id: str, timeout: float | None = None) -> Batch:
        return await self._runner.run(self._core.wait_view(
            Batch, f"/v1/batches/{batch_id}", BATCH_FINISHED, timeout))

    def results(self, batch_id: str) -> AsyncIterator[BatchResult]:
        return self._runner.iterate(self._core.batch_results(batch_id))


class AsyncComparisons:
    def __init__(self, core: Core, runner: AsyncRunner) -> None:
        self._core, self._runner = core, runner

    async def create(self, image: ImageInput, models: Sequence[str], *,
                     prompt: str | None = None, operation: str | None = None,
                     options: Mapping[str, Any] | None = None, mask: ImageInput | None = None,
                     negative_prompt: str | None = None,
                     metadata: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None) -> Comparison:
        fields = _edit_fields(prompt, operation, None, options, negative_prompt, metadata,
                              {"models": list(models)})
        return await self._runner.run(self._core.create_comparison(image, mask, fields,
                                                                   idempotency_key))

    async def get(self, comparison_id: str) -> Comparison:
        return await self._runner.run(self._core.get(
            Comparison, f"/v1/comparisons/{comparison_id}"))

    async def vote(self, comparison_id: str, model: str) -> Comparison:
        return await self._runner.run(self._core.post(
            Comparison, f"/v1/comparisons/{comparison_id}/vote", json_body={"model": model}))

    async def wait(self, comparison_id: str, timeout: float | None = None) -> Comparison:
        return await self._runner.run(self._core.wait_view(
            Comparison, f"/v1/comparisons/{comparison_id}", COMPARISON_FINISHED, timeout))

    def stream(self, comparison_id: str, *,
               poll_fallback: bool = True) -> AsyncIterator[ComparisonUpdate]:
        return self._runner.iterate(self._core.stream_comparison(comparison_id, poll_fallback))


class AsyncWebhooks:
    def __init__(self, core: Core, runner: AsyncRunner) -> None:
        self._core, self._runner = core, runner

    async def secret(self) -> WebhookSecret:
        return await self._runner.run(self._core.get(WebhookSecret, "/v1/webhook-secret"))

    async def rotate_secret(self) -> WebhookSecret:
        return await self._runner.run(self._core.post(WebhookSecret,
                                                      "/v1/webhook-secret/rotate"))

    async def deliveries(self, *, status: DeliveryStatus | None = None,
                         job_id: str | None = None, limit: int = 50,
                         cursor: str | None = None) -> DeliveryList:
        return await self._runner.run(self._core.get(
            DeliveryList, "/v1/webhook-deliveries",
            _deliveries_params(status, job_id, limit, cursor)))

    async def redeliver(self, delivery_id: str) -> Delivery:
        return await self._runner.run(self._core.post(
            Delivery, f"/v1/webhook-deliveries/{delivery_id}/redeliver"))


class AsyncClient:
    """`Client`'s calls, awaited; `stream()`s are `async for`. Use it as an async context
    manager, or `await aclose()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, poll_interval: float = 1.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        config = Config.make(base_url, api_key, timeout=timeout, max_retries=max_retries,
                             poll_interval=poll_interval)
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self._runner = AsyncRunner(self._http)
        self._core = Core(config, self._runner)
        self.uploads = AsyncUploads(self._core, self._runner)
        self.batches = AsyncBatches(self._core, self._runner)
        self.comparisons = AsyncComparisons(self._core, self._runner)
        self.webhooks = AsyncWebhooks(self._core, self._runner)

    @property
    def base_url(self) -> str:
        return self._core.config.base_url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(self, image: ImageInput | Sequence[ImageInput], *, model: str | None = None,
                  operation: str | None = None, prompt: str | None = None,
                  options: Mapping[str, Any] | None = None, mask: ImageInput | None = None,
                  negative_prompt: str | None = None,
                  metadata: Mapping[str, Any] | None = None, timeout: float | None = None,
                  on_queue_update: Callable[[JobEvent], Any] | None = None,
                  deadline_seconds: int | None = None, webhook_url: str | None = None,
                  webhook_events: Sequence[str] | None = None,
                  retention: Mapping[str, float] | None = None,
                  priority: Priority | None = None,
                  idempotency_key: str | None = None, raise_on_failure: bool = True) -> Job:
        """As `Client.run`; `on_queue_update` may be a coroutine function."""
        return await self._runner.run(self._core.run_edit(
            image, mask, _edit_fields(prompt, operation, model, options, negative_prompt,
                                      metadata, _job_extra(deadline_seconds, webhook_url,
                                                           webhook_events, retention,
                                                           priority)),
            timeout=timeout, on_queue_update=on_queue_update,
            idempotency_key=idempotency_key, raise_on_failure=raise_on_failure))

    async def submit(self, image: ImageInput | Sequence[ImageInput], *,
                     model: str | None = None, operation: str | None = None,
                     prompt: str | None = None, options: Mapping[str, Any] | None = None,
                     mask: ImageInput | None = None, negative_prompt: str | None = None,
                     metadata: Mapping[str, Any] | None = None,
                     deadline_seconds: int | None = None, webhook_url: str | None = None,
                     webhook_events: Sequence[str] | None = None,
                     retention: Mapping[str, float] | None = None,
                     priority: Priority | None = None,
                     idempotency_key: str | None = None) -> Job:
        return await self._runner.run(self._core.submit_edit(
            image, mask, _edit_fields(prompt, operation, model, options, negative_prompt,
                                      metadata, _job_extra(deadline_seconds, webhook_url,
                                                           webhook_events, retention,
                                                           priority)),
            idempotency_key))

    async def get(self, job_id: str) -> Job:
        return await self._runner.run(self._core.get_job(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        return await self._runner.run(self._core.wait(job_id, timeout))

    async def cancel(self, job_id: str) -> Job:
        return await self._runner.run(self._core.cancel(job_id))

    async def events(self, job_id: str) -> EventList:
        return await self._runner.run(self._core.get(EventList, f"/v1/jobs/{job_id}/events"))

    def stream(self, job_id: str,
               last_event_id: int | str | None = None) -> AsyncIterator[JobEvent]:
        return self._runner.iterate(self._core.stream_job(job_id, last_event_id))

    async def quote(self, image: ImageInput | Sequence[ImageInput], *,
                    model: str | None = None, operation: str | None = None,
                    prompt: str | None = None, options: Mapping[str, Any] | None = None,
                    mask: ImageInput | None = None,
                    negative_prompt: str | None = None) -> Quote:
        return await self._runner.run(self._core.quote(
            image, mask, _edit_fields(prompt, operation, model, options, negative_prompt,
                                      None, {})))

    async def models(self, operation: str | None = None, *, width: int | None = None,
                     height: int | None = None) -> ModelList:
        return await self._runner.run(self._core.get(
            ModelList, "/v1/models", {"operation": operation, "width": width, "height": height}))

    async def costs(self, group_by: GroupBy = "model", *, from_: When = None, to: When = None,
                    tenant: str | None = None) -> CostReport:
        return await self._runner.run(self._core.get(
            CostReport, "/v1/costs", _costs_params(group_by, from_, to, tenant)))

    async def budget(self) -> Budget:
        return await self._runner.run(self._core.get(Budget, "/v1/budget"))

    async def usage(self) -> Usage:
        return await self._runner.run(self._core.get(Usage, "/v1/usage"))
