"""Pieces every provider simulator shares: latency, faults, serving, images.

They live apart from any one provider so that the Stability simulator injects
the same faults with the same spec language, and a chaos run can describe
both providers with one vocabulary.

(Over 300 lines: the fault language, latency models, serving and image pieces
every simulator needs.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import ipaddress
import random
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

# --------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Latency:
    """How long a simulated task runs; sampled once per task, at submit."""

    kind: Literal["fixed", "uniform", "normal"]
    a: float
    b: float = 0.0
    spec: str = ""

    @classmethod
    def parse(cls, spec: str) -> Latency:
        """Read `"5"`, `"2-8"` or `"normal:5,1"`; refuse anything else readably."""
        text = spec.strip()
        try:
            if text.startswith("normal:"):
                mean_text, sd_text = text.removeprefix("normal:").split(",")
                mean, sd = float(mean_text), float(sd_text)
                if mean < 0 or sd < 0:
                    raise ValueError
                return cls("normal", mean, sd, text)
            if "-" in text.lstrip("-"):
                low_text, high_text = text.split("-", 1)
                low, high = float(low_text), float(high_text)
                if low < 0 or high < low:
                    raise ValueError
                return cls("uniform", low, high, text)
            value = float(text)
            if value < 0:
                raise ValueError
            return cls("fixed", value, 0.0, text)
        except ValueError:
            raise ValueError(
                f"invalid latency {spec!r}: expected seconds like '5', a range like '2-8' "
                "or 'normal:MEAN,SD' (all non-negative)") from None

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return max(0.0, rng.gauss(self.a, self.b))

    def __str__(self) -> str:
        return self.spec


# --------------------------------------------------------------------------- faults

# Faults that change how one HTTP request is answered (or not answered).
REQUEST_FAULTS = frozenset(
    {"429", "429-bare", "500", "502", "503", "hang", "slow", "drop", "drop-after"})
ENDPOINTS = frozenset({"submit", "poll", "output", "upload", "any"})
_TASK_FAULT = re.compile(r"^task-(\d{4})$")


def task_fault_code(kind: str) -> int | None:
    """The provider error code a `task-XXXX` fault makes the task fail with."""
    match = _TASK_FAULT.match(kind)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, eq=False)
class FaultVocabulary:
    """The fault kinds and endpoints one simulator understands.

    `request_kinds` change how one request is answered. `outcome_kinds` change
    the outcome of a request that gets through validation, so a scripted one
    waits at the head of the script for such a request (an invalid request does
    not use it up); with `task_codes`, every `task-XXXX` is an outcome kind
    pinned to submit. `only_on` pins a kind to the one endpoint where it makes
    sense: it is refused with another endpoint and skipped by `any` rules there.
    """

    request_kinds: frozenset[str]
    endpoints: frozenset[str]
    outcome_kinds: frozenset[str] = frozenset()
    only_on: Mapping[str, str] = field(default_factory=dict)
    task_codes: bool = False

    def is_outcome(self, kind: str) -> bool:
        return kind in self.outcome_kinds or (self.task_codes
                                              and task_fault_code(kind) is not None)

    def pinned(self, kind: str) -> str | None:
        """The only endpoint `kind` applies to, if it is pinned to one."""
        if self.task_codes and task_fault_code(kind) is not None:
            return "submit"
        return self.only_on.get(kind)

    def check(self, kind: str, endpoint: str) -> None:
        known = self.request_kinds | self.outcome_kinds
        if kind not in known and not (self.task_codes and task_fault_code(kind) is not None):
            codes = " or task-XXXX" if self.task_codes else ""
            raise ValueError(f"unknown fault kind {kind!r}: expected one of "
                             f"{', '.join(sorted(known))}{codes}")
        if endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r} for fault {kind!r}: expected one "
                             f"of {', '.join(sorted(self.endpoints))}")
        pinned = self.pinned(kind)
        if pinned is not None and endpoint not in (pinned, "any"):
            raise ValueError(f"fault {kind!r} only applies to {pinned}, not {endpoint!r}")

    def applies(self, kind: str, rule_endpoint: str, endpoint: str) -> bool:
        pinned = self.pinned(kind)
        if pinned is not None and endpoint != pinned:
            return False
        return rule_endpoint in ("any", endpoint)


WAVESPEED_FAULTS = FaultVocabulary(REQUEST_FAULTS, ENDPOINTS, only_on={"drop-after": "submit"},
                                   task_codes=True)
"""WaveSpeed's fault language, the default wherever no vocabulary is given."""


@dataclass(frozen=True)
class Fault:
    """One fault: a scripted step (rate unused) or a random rule."""

    kind: str
    endpoint: str = "any"
    rate: float = 1.0
    vocabulary: FaultVocabulary = field(default=WAVESPEED_FAULTS, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.vocabulary.check(self.kind, self.endpoint)
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate for {self.kind!r} must be between 0 and 1")

    @property
    def is_task_fault(self) -> bool:
        """An outcome fault: it waits for a request that gets through validation."""
        return self.vocabulary.is_outcome(self.kind)

    def applies(self, endpoint: str) -> bool:
        return self.vocabulary.applies(self.kind, self.endpoint, endpoint)

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "endpoint": self.endpoint, "rate": self.rate}


def parse_fault_rates(spec: str, vocabulary: FaultVocabulary = WAVESPEED_FAULTS,
                      ) -> list[Fault]:
    """Read `"500=0.1,429=0.05@poll,task-5003=0.02"`; an empty spec means no faults."""
    rules: list[Fault] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, sep, rest = item.partition("=")
        rate_text, _, endpoint = rest.partition("@")
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(f"invalid fault {item!r}: expected KIND=RATE[@ENDPOINT]") from None
        if not sep:
            raise ValueError(f"invalid fault {item!r}: expected KIND=RATE[@ENDPOINT]")
        rules.append(Fault(kind.strip(), endpoint.strip() or "any", rate, vocabulary))
    return rules


class FaultPlan:
    """Which fault, if any, the next request meets: scripted steps first, then dice.

    Scripted steps are consumed strictly in order: a request only takes the
    first step that matches its endpoint, and a `task-*` step waits at the head
    of the script for the next submit that creates a task (an invalid submit
    does not use it up). Everything runs on the simulator's event loop.
    """

    def __init__(self, rng: random.Random, rates: Iterable[Fault] = ()) -> None:
        self._rng = rng
        self.rates: list[Fault] = list(rates)
        self.script: deque[Fault] = deque()

    def clear(self) -> None:
        self.rates = []
        self.script.clear()

    def _scripted(self, endpoint: str, want_task: bool) -> str | None:
        for index, step in enumerate(self.script):
            if step.applies(endpoint):
                if step.is_task_fault != want_task:
                    return None
                del self.script[index]
                return step.kind
        return None

    def _random(self, endpoint: str, want_task: bool) -> str | None:
        rules = [r for r in self.rates
                 if r.is_task_fault == want_task and r.applies(endpoint)]
        if not rules:
            return None
        # One draw against cumulative rates, so each kind happens at its own rate.
        draw, total = self._rng.random(), 0.0
        for rule in rules:
            total += rule.rate
            if draw < total:
                return rule.kind
        return None

    def request_fault(self, endpoint: str) -> str | None:
        """The fault for how this request is answered (never a `task-*`)."""
        return self._scripted(endpoint, False) or self._random(endpoint, False)

    def task_fault(self, endpoint: str = "submit") -> str | None:
        """The outcome fault (`task-*` for WaveSpeed) for a request that passed validation."""
        return self._scripted(endpoint, True) or self._random(endpoint, True)

    def as_json(self) -> dict[str, object]:
        return {"script": [s.as_json() for s in self.script],
                "rates": [r.as_json() for r in self.rates]}


def abort_connection(request: web.BaseRequest) -> None:
    """Reset the TCP connection: the client gets no response, only an RST."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 makes close() send RST instead of FIN: a reset, as a crashed peer would.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def hang(request: web.BaseRequest, seconds: float, stopping: asyncio.Event) -> None:
    """Hold a request open without answering until the client gives up or we stop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=0.2)


# --------------------------------------------------------------------------- serving


class RunningServer:
    """An aiohttp app served from its own thread and event loop, for tests and tools."""

    def __init__(self, app: web.Application, sock: socket.socket,
                 shutdown_timeout: float) -> None:
        self.app = app
        self.host, self.port = sock.getsockname()[:2]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._sock = sock
        self._shutdown_timeout = shutdown_timeout
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.port}", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app, access_log=None,
                               shutdown_timeout=self._shutdown_timeout)
        try:
            self.loop.run_until_complete(runner.setup())
            site = web.SockSite(runner, self._sock, backlog=4096)
            self.loop.run_until_complete(site.start())
        except BaseException as exc:  # handed to the starting thread
            self._error = exc
            self._ready.set()
            self.loop.close()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(runner.cleanup())
            self.loop.close()

    def start(self) -> RunningServer:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError(f"could not start server on {self.url}") from self._error
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving and wait for cleanup; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve_in_thread(app: web.Application, host: str = "127.0.0.1", port: int = 0, *,
                    shutdown_timeout: float = 2.0) -> RunningServer:
    """Serve `app` on a socket bound before returning, so port 0 works and the URL is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return RunningServer(app, sock, shutdown_timeout).start()


# --------------------------------------------------------------------------- images

IMAGE_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"),
                 "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
_TINTS = [(255, 0, 170), (0, 200, 255), (255, 140, 0), (120, 255, 0), (160, 60, 255),
          (255, 40, 40)]


def identify_image(data: bytes) -> tuple[str, int, int]:
    """Format and size from the header alone, cheap enough to run at submit."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format or "", img.width, img.height
    except Exception as exc:  # Pillow raises many kinds for garbage
        raise ValueError("not a decodable image") from exc


def tint_for(label: str) -> tuple[int, int, int]:
    """A saturated colour per label, so each model's output looks different."""
    return _TINTS[hashlib.sha256(label.encode()).digest()[0] % len(_TINTS)]


def _zoom_out(img: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    background = ImageOps.fit(img, canvas).filter(ImageFilter.GaussianBlur(12))
    scale = min(canvas[0] * 0.6 / img.width, canvas[1] * 0.6 / img.height)
    inner = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    background.paste(inner, ((canvas[0] - inner.width) // 2, (canvas[1] - inner.height) // 2))
    return background


def render_edit(source: bytes, label: str, *, fmt: str = "png",
                size: tuple[int, int] | None = None,
                canvas: tuple[int, int] | None = None) -> bytes:
    """A visibly edited copy of `source`: tinted, labelled, resized or zoomed out, encoded.

    `size` crops-and-scales to exactly W x H; `canvas` pastes the image, smaller
    and centred, on a W x H canvas (a zoom-out).
    """
    pil_format = IMAGE_FORMATS[fmt][0]
    with Image.open(io.BytesIO(source)) as opened:
        img = opened.convert("RGB")
    if canvas is not None:
        img = _zoom_out(img, canvas)
    elif size is not None and size != img.size:
        img = ImageOps.fit(img, size)
    img = Image.blend(img, Image.new("RGB", img.size, tint_for(label)), 0.4)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(8, min(img.width, img.height) // 16))
    _, _, right, bottom = draw.textbbox((4, 4), label, font=font)
    draw.rectangle((0, 0, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((4, 4), label, fill=(255, 255, 255), font=font)
    buf = io.BytesIO()
    options: dict[str, object] = {"quality": 85} if pil_format != "PNG" else {"compress_level": 1}
    img.save(buf, pil_format, **options)
    return buf.getvalue()


def label_image(img: Image.Image, label: str) -> Image.Image:
    """Write `label` white on black in the top-left corner, in place; answers `img`."""
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(8, min(img.width, img.height) // 16))
    _, _, right, bottom = draw.textbbox((4, 4), label, font=font)
    draw.rectangle((0, 0, right + 4, bottom + 4), fill=(0, 0, 0, 255)[: len(img.getbands())])
    draw.text((4, 4), label, fill=(255, 255, 255, 255)[: len(img.getbands())], font=font)
    return img


def encode_image(img: Image.Image, fmt: str) -> bytes:
    """`img` in one of IMAGE_FORMATS, quickly (JPEG drops any alpha channel)."""
    pil_format = IMAGE_FORMATS[fmt][0]
    if pil_format == "JPEG" and img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    options: dict[str, object] = {"quality": 85} if pil_format != "PNG" else {"compress_level": 1}
    img.save(buf, pil_format, **options)
    return buf.getvalue()


# --------------------------------------------------------------------------- rate limits


class SlidingWindowLimit:
    """At most `limit` requests in any `window` seconds; the one over it starts a lockout.

    During a lockout every request is refused and not counted; the window starts
    empty when the lockout ends. Times come from the caller (a monotonic clock),
    so it is deterministic to test. Not thread-safe: use it from one event loop.
    """

    def __init__(self, limit: int, window: float, lockout: float) -> None:
        self.configure(limit, window, lockout)

    def configure(self, limit: int, window: float, lockout: float) -> None:
        if limit < 1 or window <= 0 or lockout < 0:
            raise ValueError("rate limit must be >= 1, window > 0 and lockout >= 0")
        self.limit, self.window, self.lockout = limit, window, lockout
        self.clear()

    def clear(self) -> None:
        self._times: deque[float] = deque()
        self.locked_until = 0.0

    def take(self, now: float) -> tuple[float, bool] | None:
        """None when the request may go ahead, else (seconds locked out, lockout just began)."""
        if now < self.locked_until:
            return self.locked_until - now, False
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            self._times.clear()
            self.locked_until = now + self.lockout
            return self.lockout, True
        self._times.append(now)
        return None


def is_loopback_url(url: str) -> bool:
    """Webhooks of the simulators go to loopback only. (editq's own check is in
    shared.address_guard; the simulators import nothing of the service they stand in
    front of, so that they install and run on their own.)"""
    host = urlsplit(url).hostname
    if host == "localhost":
        return True
    try:
        return bool(host) and ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False
