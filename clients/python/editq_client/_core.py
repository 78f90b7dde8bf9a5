"""What `Client` and `AsyncClient` share: the settings, how each request is built, the
retry policy, how answers are parsed, and every multi-step operation (run, wait, upload,
the streams and their reconnections), each written once as a *flow*.

A flow is a generator that yields what it needs done (send this request, sleep, read a
line of this stream; _runners.py) and receives the outcome; `SyncRunner` and
`AsyncRunner` carry the effects out with httpx's sync and async clients. So the sync and
async clients differ only in how they wait, never in what they do.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from . import _errors as errors
from ._runners import AsyncRunner, Close, Emit, Flow, Notify, ReadBody, ReadLine, Send, Sleep
from ._runners import SyncRunner as SyncRunner
from ._types import (
    BATCH_FINISHED,
    COMPARISON_FINISHED,
    TERMINAL,
    Batch,
    BatchEstimate,
    BatchResult,
    BatchUpdate,
    Comparison,
    ComparisonUpdate,
    Job,
    JobEvent,
    _Bound,
    keep_answer,
)
from .models import EventOut, QuoteOut

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# Files and bytes larger than this go by direct upload (POST /v1/uploads, then a PUT to
# storage), smaller ones inline as base64: as the CLI does.
UPLOAD_OVER = 4 * 1024 * 1024
# Methods that are safe to send twice; a POST is retried only with an Idempotency-Key.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 503})
IMAGE_PREFIXES = ("https://", "http://", "data:", "upl_")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")

M = TypeVar("M", bound=BaseModel)
ImageInput = bytes | bytearray | str | os.PathLike[str]


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str
    timeout: float = 60.0
    max_retries: int = 3
    poll_interval: float = 1.0
    # A Retry-After longer than this is not waited for: the error is raised at once (a
    # plan's limit resets in days, not seconds).
    max_retry_wait: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    # The `wait` of one long-poll (the API allows up to EDITQ_MAX_WAIT_SECONDS, 60).
    long_poll: int = 20
    # A stream with no byte for this long is presumed dead and reopened (the API sends a
    # heartbeat every 15 s).
    stream_read_timeout: float = 45.0

    @classmethod
    def make(cls, base_url: str | None, api_key: str | None, *, timeout: float,
             max_retries: int, poll_interval: float) -> Config:
        url = base_url or os.environ.get("EDITQ_API_URL") or DEFAULT_BASE_URL
        key = api_key or os.environ.get("EDITQ_API_KEY")
        if not key:
            raise errors.ConfigurationError(
                "no API key: pass api_key= or set EDITQ_API_KEY (`editq keys create "
                "--tenant NAME` makes one)")
        if max_retries < 0:
            raise errors.ConfigurationError("max_retries is 0 or more")
        return cls(base_url=url.rstrip("/"), api_key=key, timeout=timeout,
                   max_retries=max_retries, poll_interval=poll_interval)


def new_idempotency_key() -> str:
    return f"editq-py-{uuid.uuid4()}"


def sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def instant(value: str | date | datetime | None) -> str | None:
    """A date or date-time as the API's query parameters take it (UTC when naive)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat().replace("+00:00", "Z")
    return value.isoformat()


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


@dataclass
class ServerSentEvent:
    event: str
    data: str
    id: str | None
    retry: int | None


class SSEDecoder:
    """Server-Sent Events, line by line, as the WHATWG spec reads them: `field: value`
    lines, comments (`: heartbeat`) skipped, an empty line ends an event."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data and not self._event and self._id is None:
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data),
                                    self._id, self._retry)
            self._event, self._data, self._id, self._retry = "", [], None, None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


class _Deadline(Exception):
    """A flow's deadline passed (internal: run() turns it into a cancel and JobTimeout)."""


def _later(id_: str | None, last: str | None) -> bool:
    """Whether event id `id_` comes after `last` (ids are increasing integers)."""
    if id_ is None or last is None:
        return True
    try:
        return int(id_) > int(last)
    except ValueError:
        return id_ != last


class Core:
    """The shared half of a client: `Client` and `AsyncClient` each hold one."""

    def __init__(self, config: Config, runner: SyncRunner | AsyncRunner) -> None:
        self.config = config
        self.runner = runner

    # --- running a flow from a result (an output reading itself) ---------------------------

    def run_sync(self, flow: Flow[Any]) -> Any:
        if isinstance(self.runner, SyncRunner):
            return self.runner.run(flow)
        with httpx.Client(timeout=self.config.timeout) as http:
            return SyncRunner(http).run(flow)

    async def run_async(self, flow: Flow[Any]) -> Any:
        if isinstance(self.runner, AsyncRunner):
            return await self.runner.run(flow)
        async with httpx.AsyncClient(timeout=self.config.timeout) as http:
            return await AsyncRunner(http).run(flow)

    # --- requests ------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json_body: Any = None, data: Mapping[str, str] | None = None,
                files: Mapping[str, Any] | None = None, content: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: httpx.Timeout | None = None,
                auth: bool = True) -> httpx.Request:
        """One request: to the API (`path` relative to base_url, with the key) or, with
        auth=False, to an absolute URL (presigned storage URLs: never the key)."""
        all_headers = {"User-Agent": f"editq-python/{__version__}", **(headers or {})}
        if auth:
            url = self.config.base_url + path
            all_headers["Authorization"] = f"Bearer {self.config.api_key}"
        else:
            url = path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return httpx.Request(
            method, url, params=query or None, json=json_body, data=data, files=files,
            content=content, headers=all_headers,
            extensions={"timeout": (timeout or httpx.Timeout(self.config.timeout)).as_dict()})

    def backoff(self, attempt: int) -> float:
        """The wait before retry `attempt` (1, 2, ...): exponential, capped, with jitter."""
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2.0 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def retry_delay(self, attempt: int, request: httpx.Request,
                    response: httpx.Response | None) -> float | None:
        """How long to wait before sending `request` again after its `attempt`-th try
        failed (with `response`, or without an answer), or None not to retry.

        Retried: connection errors and 429/503 answers, and only requests safe to send
        twice: GET, PUT, DELETE..., and a POST that carries an Idempotency-Key. A 429 or
        503's Retry-After is honoured, up to `max_retry_wait`; a longer one is not waited
        for (the error is raised)."""
        if attempt > self.config.max_retries:
            return None
        if request.method not in IDEMPOTENT_METHODS and "idempotency-key" not in request.headers:
            return None
        if response is None:
            return self.backoff(attempt)
        if response.status_code not in RETRY_STATUSES:
            return None
        retry_after = errors.parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            return self.backoff(attempt)
        if retry_after > self.config.max_retry_wait:
            return None
        return retry_after

    def call(self, build: Callable[[], httpx.Request], *,
             error: type[errors.EditqError] | None = None) -> Flow[httpx.Response]:
        """Send the request `build` makes (afresh at each try), retrying as `retry_delay`
        says; the 2xx/3xx response, or the error its problem stands for."""
        attempt = 0
        while True:
            attempt += 1
            request = build()
            try:
                response: httpx.Response = yield Send(request)
            except httpx.TransportError as exc:
                delay = self.retry_delay(attempt, request, None)
                if delay is None:
                    raise errors.APIConnectionError(
                        f"{request.method} {request.url.host}{request.url.path}: "
                        f"{type(exc).__name__}: {exc}") from exc
                yield Sleep(delay)
                continue
            if response.status_code < 400:
                return response
            delay = self.retry_delay(attempt, request, response)
            if delay is None:
                raise self.error_of(response, None, error)
            yield Sleep(delay)

    def open_stream(self, build: Callable[[], httpx.Request]) -> Flow[httpx.Response]:
        """Open a streamed response (its status is 2xx), with `call`'s retries."""
        attempt = 0
        while True:
            attempt += 1
            request = build()
            try:
                response: httpx.Response = yield Send(request, stream=True)
            except httpx.TransportError as exc:
                delay = self.retry_delay(attempt, request, None)
                if delay is None:
                    raise errors.APIConnectionError(
                        f"{request.method} {request.url.path}: {type(exc).__name__}: "
                        f"{exc}") from exc
                yield Sleep(delay)
                continue
            if response.status_code < 400:
                return response
            body: bytes = yield ReadBody(response)
            yield Close(response)
            delay = self.retry_delay(attempt, request, response)
            if delay is None:
                raise self.error_of(response, body, None)
            yield Sleep(delay)

    @staticmethod
    def error_of(response: httpx.Response, body: bytes | None,
                 cls: type[errors.EditqError] | None) -> errors.EditqError:
        found = errors.error_from_response(response, body)
        if cls is None:
            return found
        return cls(found.status, f"storage_{found.status}",
                   f"the storage answered {found.status}: {found.detail}", found.problem)

    def parse(self, model: type[M], response: httpx.Response) -> M:
        return self.parse_json(model, response.json())

    def parse_json(self, model: type[M], answer: Any) -> M:
        """`answer` (JSON) as a `model`, bound to this client, and kept for `as_json`."""
        parsed = keep_answer(model.model_validate(answer), answer)
        if isinstance(parsed, _Bound):
            parsed._bind(self)
        return parsed

    def get(self, model: type[M], path: str, params: Mapping[str, Any] | None = None,
            timeout: httpx.Timeout | None = None) -> Flow[M]:
        response = yield from self.call(
            lambda: self.request("GET", path, params=params, timeout=timeout))
        return self.parse(model, response)

    def post(self, model: type[M], path: str, *, json_body: Any = None,
             idempotency_key: str | None = None, **kwargs: Any) -> Flow[M]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = yield from self.call(
            lambda: self.request("POST", path, json_body=json_body, headers=headers, **kwargs))
        return self.parse(model, response)

    # --- images --------------------------------------------------------------------------

    def upload(self, source: ImageInput, content_type: str | None = None) -> Flow[str]:
        """Send an image straight to storage (POST /v1/uploads, then its presigned PUT);
        its upload id. Not retried as a whole: the API takes no Idempotency-Key there
        (an upload slot made twice is only an unused slot, deleted within a day)."""
        data = _read_image(source)
        response = yield from self.call(lambda: self.request("POST", "/v1/uploads", json_body={
            "content_type": content_type or sniff(data), "size": len(data)}))
        slot = response.json()
        yield from self.call(lambda: self.request(
            slot["method"], slot["url"], content=data, headers=slot["headers"], auth=False),
            error=errors.StorageError)
        return str(slot["id"])

    def image(self, image: ImageInput) -> Flow[str]:
        """An image as a request field: a URL, data URI, upload id or base64 text as given;
        bytes or a file inline as base64, or uploaded first when over 4 MiB."""
        if isinstance(image, str) and (image.startswith(IMAGE_PREFIXES)
                                       or (not _is_file(image) and _looks_base64(image))):
            return image
        data = _read_image(image)
        if len(data) > UPLOAD_OVER:
            return (yield from self.upload(data))
        return base64.b64encode(data).decode("ascii")

    def images(self, image: ImageInput | Sequence[ImageInput]) -> Flow[dict[str, Any]]:
        if isinstance(image, list | tuple):
            encoded = []
            for one in image:
                encoded.append((yield from self.image(one)))
            return {"images": encoded}
        return {"image": (yield from self.image(image))}  # type: ignore[arg-type]

    def edit_body(self, image: ImageInput | Sequence[ImageInput], *, mask: ImageInput | None,
                  fields: Mapping[str, Any]) -> Flow[dict[str, Any]]:
        """A POST /v1/jobs (or quote, or comparison) body."""
        body = yield from self.images(image)
        if mask is not None:
            body["mask"] = yield from self.image(mask)
        body.update(_compact(fields))
        return body

    def item_body(self, item: Mapping[str, Any]) -> Flow[dict[str, Any]]:
        """A batch item: its image fields may be bytes, paths, URLs... as for a job."""
        body = dict(item)
        for name in ("image", "mask"):
            if name in body and body[name] is not None:
                body[name] = yield from self.image(body[name])
        if body.get("images") is not None:
            encoded = []
            for one in body["images"]:
                encoded.append((yield from self.image(one)))
            body["images"] = encoded
        return body

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, body: dict[str, Any], idempotency_key: str | None) -> Flow[Job]:
        return (yield from self.post(Job, "/v1/jobs", json_body=body,
                                     idempotency_key=idempotency_key or new_idempotency_key()))

    def submit_edit(self, image: ImageInput | Sequence[ImageInput], mask: ImageInput | None,
                    fields: Mapping[str, Any], idempotency_key: str | None) -> Flow[Job]:
        body = yield from self.edit_body(image, mask=mask, fields=fields)
        return (yield from self.submit(body, idempotency_key))

    def run_edit(self, image: ImageInput | Sequence[ImageInput], mask: ImageInput | None,
                 fields: Mapping[str, Any], *, timeout: float | None,
                 on_queue_update: Callable[[JobEvent], Any] | None,
                 idempotency_key: str | None, raise_on_failure: bool) -> Flow[Job]:
        body = yield from self.edit_body(image, mask=mask, fields=fields)
        return (yield from self.run(body, timeout=timeout, on_queue_update=on_queue_update,
                                    idempotency_key=idempotency_key,
                                    raise_on_failure=raise_on_failure))

    def quote(self, image: ImageInput | Sequence[ImageInput], mask: ImageInput | None,
              fields: Mapping[str, Any]) -> Flow[QuoteOut]:
        body = yield from self.edit_body(image, mask=mask, fields=fields)
        return (yield from self.post(QuoteOut, "/v1/quotes", json_body=body))

    def create_comparison(self, image: ImageInput, mask: ImageInput | None,
                          fields: Mapping[str, Any],
                          idempotency_key: str | None) -> Flow[Comparison]:
        body = yield from self.edit_body(image, mask=mask, fields=fields)
        return (yield from self.post(Comparison, "/v1/comparisons", json_body=body,
                                     idempotency_key=idempotency_key or new_idempotency_key()))

    def get_job(self, job_id: str, wait: int = 0) -> Flow[Job]:
        timeout = httpx.Timeout(self.config.timeout + wait) if wait else None
        return (yield from self.get(Job, f"/v1/jobs/{job_id}",
                                    {"wait": wait} if wait else None, timeout))

    def cancel(self, job_id: str) -> Flow[Job]:
        return (yield from self.post(Job, f"/v1/jobs/{job_id}/cancel"))

    def wait(self, job_id: str, timeout: float | None) -> Flow[Job]:
        """Long-poll (`?wait=N`) until the job has ended; JobTimeout after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = yield from self.get_job(job_id)
        while job.status not in TERMINAL:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.JobTimeout(job_id, timeout, job)
            wait = self.config.long_poll if remaining is None else max(
                1, min(self.config.long_poll, int(remaining)))
            started = time.monotonic()
            job = yield from self.get_job(job_id, wait)
            if job.status not in TERMINAL and time.monotonic() - started < 0.5:
                # answered before its wait (a proxy that cut it short): do not spin
                yield Sleep(self.config.poll_interval)
        return job

    def run(self, body: dict[str, Any], *, timeout: float | None,
            on_queue_update: Callable[[JobEvent], Any] | None, idempotency_key: str | None,
            raise_on_failure: bool) -> Flow[Job]:
        job = yield from self.submit(body, idempotency_key)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if on_queue_update is None:
                job = yield from self.wait(job.id, timeout)
            else:
                job = yield from self.follow_job(job.id, deadline, on_queue_update)
        except (errors.JobTimeout, _Deadline):
            job = yield from self._cancel_for_timeout(job.id, timeout)
        if raise_on_failure and job.status == "canceled":
            raise errors.JobCanceled(job)
        if raise_on_failure and job.status == "failed":
            raise errors.JobFailed(job)
        return job

    def _cancel_for_timeout(self, job_id: str, timeout: float | None) -> Flow[Job]:
        """Cancel a job whose time is up: JobTimeout, unless it ended meanwhile (then the
        job, as it ended)."""
        try:
            job = yield from self.cancel(job_id)
        except errors.JobNotCancelable:
            ended: Job = yield from self.get_job(job_id)
            return ended
        raise errors.JobTimeout(job_id, timeout, job, canceled=True)

    # --- streams -------------------------------------------------------------------------

    def stream_job(self, job_id: str, last_event_id: int | str | None = None) -> Flow[None]:
        """Emit each JobEvent of the job's stream until the one at which it has ended."""
        yield from self.sse(f"/v1/jobs/{job_id}/stream", self._job_event, _job_final,
                            last_event_id=last_event_id, sink=_emit, ended=_job_ended)

    def follow_job(self, job_id: str, deadline: float | None,
                   callback: Callable[[JobEvent], Any]) -> Flow[Job]:
        """Call `callback` for each event while the job is queued or running; the job once
        it has ended. Without a stream endpoint (an older API), its timeline is polled."""
        def sink(event: JobEvent) -> Flow[None]:
            if event.job.status not in TERMINAL:
                yield Notify(callback, event)

        try:
            last: JobEvent = yield from self.sse(
                f"/v1/jobs/{job_id}/stream", self._job_event, _job_final, sink=sink,
                deadline=deadline, ended=_job_ended)
        except errors.NotFound:
            yield from self.get_job(job_id)  # the job exists: the API has no stream
            return (yield from self._wait_polling(job_id, deadline, sink))
        return last.job

    def _wait_polling(self, job_id: str, deadline: float | None,
                  sink: Callable[[JobEvent], Flow[None]]) -> Flow[Job]:
        seen = 0
        while True:
            job = yield from self.get_job(job_id)
            response = yield from self.call(
                lambda: self.request("GET", f"/v1/jobs/{job_id}/events"))
            timeline = response.json()["data"]
            for raw in timeline[seen:]:
                yield from sink(JobEvent(id=raw.get("id"), type=raw["type"],
                                         event=EventOut.model_validate(raw), job=job))
            seen = len(timeline)
            if job.status in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise _Deadline
            yield Sleep(self.config.poll_interval)

    def sse(self, path: str, parse: Callable[[ServerSentEvent, Any], Any],
            final: Callable[[Any], bool], *, sink: Callable[[Any], Flow[None]],
            last_event_id: int | str | None = None, deadline: float | None = None,
            ended: Callable[[Any], bool] | None = None) -> Flow[Any]:
        """Follow a Server-Sent Events stream to its final event (returned), handing each
        event to `sink`. The server closes the stream after it; a stream that ends
        earlier (dropped, or silent past the read timeout) is reopened with
        `Last-Event-ID` (the last id seen), and an event at or before it is never handed
        on twice, unless what was last seen has `ended` (the server closed it on purpose:
        a job's replayed timeline carries the job as it is now). Gives up after
        `max_retries` reopenings in a row that bring nothing new."""
        last = None if last_event_id is None else str(last_event_id)
        latest: Any = None
        failures = 0
        pause: float | None = None
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise _Deadline
            read = self.config.stream_read_timeout
            if deadline is not None:
                read = max(0.05, min(read, deadline - time.monotonic()))
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last is not None:
                headers["Last-Event-ID"] = last
            timeout = httpx.Timeout(self.config.timeout, read=read)

            def build(headers: dict[str, str] = headers,
                      timeout: httpx.Timeout = timeout) -> httpx.Request:
                return self.request("GET", path, headers=headers, timeout=timeout)

            response = yield from self.open_stream(build)
            decoder = SSEDecoder()
            progressed = False
            try:
                while True:
                    line = yield ReadLine(response)
                    if line is None:
                        break
                    message = decoder.feed(line)
                    if message is None:
                        continue
                    if message.retry is not None:
                        pause = message.retry / 1000
                    if not message.data or not _later(message.id, last):
                        continue
                    item = parse(message, json.loads(message.data))
                    if message.id is not None:
                        last = message.id
                    progressed, failures, latest = True, 0, item
                    yield from sink(item)
                    if final(item):
                        yield Close(response)
                        return item
                    if deadline is not None and time.monotonic() >= deadline:
                        yield Close(response)
                        raise _Deadline
            except httpx.TransportError:
                pass  # dropped (or silent past the read timeout): reopened below
            else:
                if latest is not None and ended is not None and ended(latest):
                    yield Close(response)
                    return latest
            yield Close(response)
            if not progressed:
                failures += 1
                if failures > self.config.max_retries:
                    raise errors.APIConnectionError(
                        f"the stream {path} ended {failures} times in a row without an event")
            yield Sleep(pause if pause is not None else self.backoff(failures or 1) / 4)

    def _job_event(self, message: ServerSentEvent, data: Any) -> JobEvent:
        """A job stream's event: `data` is {"event": {...}, "job": {...}}."""
        event = data.get("event") if isinstance(data, dict) else None
        ident = message.id if message.id and message.id.lstrip("-").isdigit() else None
        parsed = JobEvent.model_validate({
            "id": int(ident) if ident is not None else (event or {}).get("id"),
            "type": message.event if message.event != "message" else (event or {}).get(
                "type", ""),
            "event": event, "job": data["job"]})
        keep_answer(parsed.job, data["job"])
        parsed.job._bind(self)
        return parsed

    # --- batches -------------------------------------------------------------------------

    def create_batch(self, *, items: Iterable[Mapping[str, Any]] | None,
                     jsonl: str | os.PathLike[str] | bytes | None,
                     fields: Mapping[str, Any], dry_run: bool,
                     idempotency_key: str | None,
                     reprocess: Mapping[str, Any] | None = None,
                     source: Mapping[str, Any] | None = None) -> Flow[Batch | BatchEstimate]:
        kinds = {"items": items, "jsonl": jsonl, "reprocess": reprocess, "source": source}
        if sum(value is not None for value in kinds.values()) != 1:
            raise ValueError("give one of items=[...], jsonl=<path>, reprocess={...} or "
                             "source={...}")
        key = idempotency_key or new_idempotency_key()
        headers = {"Idempotency-Key": key}
        if jsonl is None:
            body: dict[str, Any]
            if items is not None:
                encoded = []
                for item in items:
                    encoded.append((yield from self.item_body(item)))
                body = {"items": encoded, **_compact(fields)}
            elif reprocess is not None:
                body = {"reprocess": dict(reprocess), **_compact(fields)}
            else:
                assert source is not None
                body = {"source": dict(source), **_compact(fields)}
            if dry_run:
                body["dry_run"] = True
            response = yield from self.call(lambda: self.request(
                "POST", "/v1/batches", json_body=body, headers=headers))
        else:
            name, content = ("items.jsonl", jsonl) if isinstance(jsonl, bytes) else (
                Path(jsonl).name, Path(jsonl).read_bytes())
            form: dict[str, str] = {}
            for field_name, value in _compact(fields).items():
                if field_name in ("defaults", "metadata"):
                    form[field_name] = json.dumps(value)
                elif field_name == "webhook_events":
                    form[field_name] = ",".join(value)
                else:
                    form[field_name] = str(value)
            if dry_run:
                form["dry_run"] = "true"
            response = yield from self.call(lambda: self.request(
                "POST", "/v1/batches", data=form, headers=headers,
                files={"file": (name, content, "application/x-ndjson")}))
        if dry_run:
            return self.parse(BatchEstimate, response)
        return self.parse(Batch, response)

    def batch_results(self, batch_id: str) -> Flow[None]:
        """Emit each BatchResult of GET /v1/batches/{id}/results (JSONL, batch order)."""
        response = yield from self.open_stream(
            lambda: self.request("GET", f"/v1/batches/{batch_id}/results"))
        while True:
            line = yield ReadLine(response)
            if line is None:
                break
            if line.strip():
                yield Emit(self.parse_json(BatchResult, json.loads(line)))
        yield Close(response)

    def stream_batch(self, batch_id: str, poll_fallback: bool) -> Flow[None]:
        yield from self._stream_or_poll(
            f"/v1/batches/{batch_id}", Batch, BATCH_FINISHED,
            lambda id_, batch: BatchUpdate(id=id_, batch=batch), poll_fallback)

    def stream_comparison(self, comparison_id: str, poll_fallback: bool) -> Flow[None]:
        yield from self._stream_or_poll(
            f"/v1/comparisons/{comparison_id}", Comparison, COMPARISON_FINISHED,
            lambda id_, comparison: ComparisonUpdate(id=id_, comparison=comparison),
            poll_fallback)

    def _stream_or_poll(self, path: str, model: type[Batch] | type[Comparison],
                        finished: frozenset[str], wrap: Callable[[int | None, Any], Any],
                        poll_fallback: bool) -> Flow[None]:
        def parse(message: ServerSentEvent, data: Any) -> Any:
            return wrap(int(message.id) if message.id and message.id.isdigit() else None,
                        self.parse_json(model, data))

        def final(update: Any) -> bool:
            view = update.batch if isinstance(update, BatchUpdate) else update.comparison
            return view.status in finished

        try:
            yield from self.sse(path + "/stream", parse, final, sink=_emit)
            return
        except errors.NotFound:
            if not poll_fallback:
                raise
            current = yield from self.get(model, path)  # it exists: the API has no stream
        shown: Any = None
        while True:
            state = current.model_dump(exclude={"updated_at", "manifest_url"})
            if state != shown:
                shown = state
                yield Emit(wrap(None, current))
            if current.status in finished:
                return
            yield Sleep(self.config.poll_interval)
            current = yield from self.get(model, path)

    def wait_view(self, model: type[M], path: str, finished: frozenset[str],
                  timeout: float | None) -> Flow[M]:
        """Poll a batch or comparison until it is finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = yield from self.get(model, path)
            if getattr(view, "status", None) in finished:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.EditqError(None, "wait_timeout",
                                        f"{path} not finished within {timeout} s")
            yield Sleep(self.config.poll_interval)

    # --- outputs -------------------------------------------------------------------------

    def download(self, url: str | None, job_id: str | None, index: int) -> Flow[bytes]:
        """An output's bytes from its presigned URL; when that has expired (or was never
        given), from a fresh one (GET /v1/jobs/{id}/outputs/{n} redirects to it)."""
        if url is not None:
            try:
                response = yield from self.call(
                    lambda: self.request("GET", url, auth=False), error=errors.StorageError)
                return response.content
            except errors.StorageError:
                if job_id is None:
                    raise
        if job_id is None:
            raise errors.DataDeleted(410, "data_deleted", "this output was deleted")
        redirect = yield from self.call(
            lambda: self.request("GET", f"/v1/jobs/{job_id}/outputs/{index}"))
        fresh = redirect.headers["location"]
        response = yield from self.call(lambda: self.request("GET", fresh, auth=False),
                                        error=errors.StorageError)
        return response.content


def _job_final(event: JobEvent) -> bool:
    """The event at which the job ended: its transition to a terminal status."""
    if event.event is not None and event.event.to_status is not None:
        return event.event.to_status in TERMINAL
    return event.id is not None and event.type in TERMINAL and event.job.status in TERMINAL


def _job_ended(event: JobEvent) -> bool:
    return event.job.status in TERMINAL


def _emit(item: Any) -> Flow[None]:
    yield Emit(item)


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_file()
    except (OSError, ValueError):
        return False


def _looks_base64(text: str) -> bool:
    if len(text) < 16 or not _BASE64.fullmatch(text):
        return False
    try:
        base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return False
    return True


def _read_image(source: ImageInput) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(source)[:200]!r} is not a file, nor an https:// URL, a data: URI, an "
                "upload id (upl_...) or base64")
        return path.read_bytes()
    raise TypeError(f"an image is bytes, a path, a URL, a data URI or an upload id, not "
                    f"{type(source).__name__}")
