"""The WaveSpeed simulator's state: tasks moving through time, uploads, billing, webhooks.

A task costs a timer and a few references until someone downloads its
output, so a benchmark can keep thousands in flight: images are rendered
lazily, on the first download or base64 poll, in a worker thread.

(Over 300 lines: a task's life, its billing and its webhooks share one clock and
one table of tasks.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from random import Random
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from simulators.common import FaultPlan, Latency, is_loopback_url, parse_fault_rates, render_edit
from simulators.common import identify_image as _identify
from simulators.wavespeed_models import InvalidRequest, ModelSpec

if TYPE_CHECKING:
    from simulators.wavespeed import WaveSpeedSimConfig

TASK_ERRORS = {
    1200: "Content moderation: the request was flagged by the safety checker",
    1400: "Missing parameter",
    1401: "Invalid parameter: an input image could not be decoded",
    1402: "Failed to access media",
    1403: "Task execution failed",
    1405: "Task failed",
    5000: "Internal server error",
    5003: "Service temporarily unavailable",
    5004: "Task timed out",
}
_DATA_URI = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w=.+-]+)*;base64,(?P<data>.*)$", re.DOTALL)


def decode_image_input(name: str, value: str) -> bytes | str:
    """An input image's bytes, or its URL to fetch when the task runs; 400 if neither."""
    if value.startswith(("http://", "https://")):
        return value
    match = _DATA_URI.match(value)
    if value.startswith("data:") and not match:
        raise InvalidRequest(f"{name} is not a valid base64 data URI")
    payload = match.group("data") if match else value
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
        _identify(data)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{name} is not a decodable image: expected an http(s) URL, "
                             "a base64 data URI or base64") from None
    return data


class MediaError(Exception):
    """An input could not be used when the task ran; carries the task error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Task:
    id: str
    spec: ModelSpec
    body: dict[str, Any]
    base_url: str
    started: float
    latency: float
    processing_after: float
    sources: list[tuple[str, bytes | str]]
    webhook: str | None
    fail_code: int | None = None
    created_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"))
    final: str | None = None
    error: str = ""
    image: bytes | None = None
    rendered: list[bytes] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None

    def status(self, now: float) -> str:
        if self.final is not None:
            return self.final
        elapsed = now - self.started
        return "processing" if elapsed >= min(self.processing_after, self.latency) else "created"

    @property
    def ext(self) -> str:
        return self.spec.output_ext(self.body)

    def output_urls(self) -> list[str]:
        return [f"{self.base_url}/outputs/{self.id}/0.{self.ext}"]


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes | None = None


class SimState:
    """Everything one simulator instance remembers; used only from its event loop."""

    def __init__(self, config: WaveSpeedSimConfig) -> None:
        self.config = config
        self.rng = Random(config.seed)
        self.latency = Latency.parse(config.latency)
        self.faults = FaultPlan(self.rng, parse_fault_rates(config.faults))
        secret = config.webhook_secret or secrets.token_hex(24)
        self.webhook_secret = secret if secret.startswith("whsec_") else f"whsec_{secret}"
        self.uploads: dict[str, Upload] = {}
        self.stopping = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.reset()

    def reset(self) -> None:
        for task in getattr(self, "tasks", {}).values():
            if task.timer is not None:
                task.timer.cancel()
        self.tasks: dict[str, Task] = {}
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.config.request_log_size)
        self.counters: Counter[str] = Counter()
        self.submits_by_model: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.billing: dict[str, tuple[int, Decimal]] = {}
        self.webhooks: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.faults.clear()
        self.faults.rates = parse_fault_rates(self.config.faults)  # the start-up ones stay
        self.rate_window = (time.monotonic(), 0)
        self.peak_in_flight = 0

    @property
    def in_flight(self) -> int:
        return self.counters["tasks_created"] - self.counters["completed"] \
            - self.counters["failed"]

    def take_rate_slot(self) -> int | None:
        """None when a submit may go ahead, else the seconds until the minute resets."""
        limit = self.config.rate_limit_per_minute
        if limit is None:
            return None
        now = time.monotonic()
        start, count = self.rate_window
        if now - start >= 60:
            start, count = now, 0
        if count >= limit:
            self.rate_window = (start, count)
            return max(1, int(60 - (now - start) + 0.999))
        self.rate_window = (start, count + 1)
        return None

    def stats(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        total = sum((usd for _, usd in self.billing.values()), Decimal("0"))
        return {
            **{name: self.counters[name] for name in (
                "submits", "polls", "tasks_created", "completed", "failed", "outputs_served",
                "uploads", "rate_limited", "unauthorized")},
            "in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight,
            "submits_by_model": dict(self.submits_by_model),
            "billing": {path: {"images": n, "usd": str(usd)}
                        for path, (n, usd) in self.billing.items()},
            "billed_usd": str(total),
            "faults_injected": dict(self.faults_injected),
            "webhooks": list(self.webhooks),
            "latency": str(self.latency),
            "oldest_in_flight_s": max((now - t.started for t in self.tasks.values()
                                       if t.final is None), default=0.0),
        }

    # ----------------------------------------------------------------- task lifecycle

    def create_task(self, spec: ModelSpec, body: dict[str, Any], base_url: str,
                    sources: list[tuple[str, bytes | str]], webhook: str | None,
                    fail_code: int | None) -> Task:
        loop = asyncio.get_running_loop()
        task = Task(id=uuid.uuid4().hex, spec=spec, body=body, base_url=base_url,
                    started=loop.time(), latency=self.latency.sample(self.rng),
                    processing_after=self.config.processing_after, sources=sources,
                    webhook=webhook, fail_code=fail_code)
        self.tasks[task.id] = task
        self.counters["tasks_created"] += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        task.timer = loop.call_later(task.latency, self._finish, task)
        return task

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.background.add(job)
        job.add_done_callback(self.background.discard)

    def _finish(self, task: Task) -> None:
        task.timer = None
        if self.tasks.get(task.id) is not task:
            return  # reset while running
        if task.fail_code is not None:
            self._settle(task, None, task.fail_code)
        elif isinstance(first := task.sources[0][1], bytes) and not any(
                isinstance(src, str) for _, src in task.sources):
            self._settle(task, first, None)
        else:
            self._spawn(self._finish_with_fetch(task))  # an input is a URL to fetch first

    async def _finish_with_fetch(self, task: Task) -> None:
        try:
            first: bytes | None = None
            for name, src in task.sources:
                data = await self._fetch(name, src) if isinstance(src, str) else src
                first = first or data
            self._settle(task, first, None)
        except MediaError as exc:
            self._settle(task, None, exc.code, str(exc))

    async def _fetch(self, name: str, url: str) -> bytes:
        if not is_loopback_url(url):
            raise MediaError(1402, f"Failed to access media: {name} at {url} (the simulator "
                                   "only fetches loopback URLs)")
        path = urlsplit(url).path.split("/")
        upload = self.uploads.get(path[2]) if len(path) > 2 and path[1] == "media" else None
        if upload is not None and upload.data is not None:
            data = upload.data
        else:
            try:
                assert self.session is not None
                async with self.session.get(url) as resp:
                    if resp.status != 200:
                        raise MediaError(1402, f"Failed to access media: {name} at {url} "
                                               f"answered HTTP {resp.status}")
                    data = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise MediaError(1402, f"Failed to access media: {name} at {url}: "
                                       f"{exc.__class__.__name__}") from exc
        try:
            _identify(data)
        except ValueError:
            raise MediaError(1401, f"Invalid parameter: {name} at {url} is not an image") from None
        return data

    def _settle(self, task: Task, image: bytes | None, code: int | None,
                message: str | None = None) -> None:
        if code is None:
            task.final, task.image = "completed", image
            self.counters["completed"] += 1
            images, usd = self.billing.get(task.spec.path, (0, Decimal("0")))
            count = len(task.output_urls())
            self.billing[task.spec.path] = (images + count,
                                            usd + task.spec.price(task.body) * count)
        else:
            task.final, task.fail_code = "failed", code
            task.error = message or TASK_ERRORS.get(code, "Task failed")
            self.counters["failed"] += 1
        task.sources = []  # the first image is kept for rendering; the rest can go
        task.done.set()
        if task.webhook:
            self._spawn(self._deliver(task))

    async def rendered(self, task: Task) -> list[bytes]:
        if task.rendered is None:
            assert task.image is not None
            size, canvas = task.spec.output_shape(task.body)
            image = await asyncio.to_thread(render_edit, task.image, task.spec.path,
                                            fmt=task.ext, size=size, canvas=canvas)
            task.rendered = [image]
        return task.rendered

    async def task_data(self, task: Task) -> dict[str, Any]:
        """The `data` object of the envelope, as polls, sync submits and webhooks show it."""
        status = task.status(asyncio.get_running_loop().time())
        data: dict[str, Any] = {
            "id": task.id, "model": task.spec.path, "outputs": [],
            "urls": {"get": f"{task.base_url}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [], "status": status, "created_at": task.created_at,
            "error": "", "timings": {"inference": 0},
        }
        if status == "completed":
            if task.body.get("enable_base64_output"):
                data["outputs"] = [base64.b64encode(b).decode() for b in
                                   await self.rendered(task)]
            else:
                data["outputs"] = task.output_urls()
            data["has_nsfw_contents"] = [False] * len(data["outputs"])
            data["timings"] = {"inference": round(task.latency * 1000)}
        elif status == "failed":
            data["error"], data["code"] = task.error, task.fail_code
            data["timings"] = {"inference": round(task.latency * 1000)}
        return data

    # ----------------------------------------------------------------- webhooks

    def sign(self, webhook_id: str, timestamp: str, raw_body: str) -> str:
        key = self.webhook_secret.removeprefix("whsec_").encode()
        digest = hmac.new(key, f"{webhook_id}.{timestamp}.{raw_body}".encode(), hashlib.sha256)
        return f"v3,{digest.hexdigest()}"

    async def _deliver(self, task: Task) -> None:
        url = task.webhook or ""
        event = task.final or ""
        # The id names the message: retries of one delivery share it, as receivers dedupe on it.
        webhook_id = f"msg_{uuid.uuid4().hex}"
        record = {"url": url, "task_id": task.id, "event": event, "webhook_id": webhook_id}
        if not is_loopback_url(url):
            self.webhooks.append({**record, "status": "refused", "attempt": 0})
            return
        raw = json.dumps({**await self.task_data(task), "input": task.body})
        for attempt in range(1, self.config.webhook_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "webhook-id": webhook_id,
                       "webhook-timestamp": timestamp,
                       "webhook-signature": self.sign(webhook_id, timestamp, raw)}
            status: int | str
            try:
                assert self.session is not None
                async with self.session.post(url, data=raw.encode(), headers=headers) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                status = "connection-error"
            self.webhooks.append({**record, "status": status, "attempt": attempt})
            if isinstance(status, int) and 200 <= status < 300:
                return
            if attempt < self.config.webhook_attempts:
                await asyncio.sleep(self.config.webhook_backoff * attempt)

    # ----------------------------------------------------------------- shutdown

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.webhook_timeout)
        self.session = aiohttp.ClientSession(timeout=timeout)

    async def stop(self) -> None:
        self.stopping.set()
        for task in self.tasks.values():
            if task.timer is not None:
                task.timer.cancel()
        for job in list(self.background):
            job.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.session is not None:
            await self.session.close()


STATE = web.AppKey("wavespeed_state", SimState)
