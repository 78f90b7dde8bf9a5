"""The only code that does I/O: a runner carries out what a flow (see _core) asks for,
with httpx's sync client or its async one. Everything else, requests, retries, parsing,
the streams' reconnections, is written once, in the flows."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


# --- what a flow asks for ------------------------------------------------------------------

@dataclass
class Send:
    """Send a request; the answer is the response (its body read, unless `stream`)."""

    request: httpx.Request
    stream: bool = False


@dataclass
class ReadLine:
    """The next line of a streamed response, or None at its end."""

    response: httpx.Response


@dataclass
class ReadBody:
    """The rest of a streamed response's body."""

    response: httpx.Response


@dataclass
class Close:
    response: httpx.Response


@dataclass
class Sleep:
    seconds: float


@dataclass
class Notify:
    """Call a user's callback (awaited, when it is a coroutine function, by the async runner)."""

    callback: Any
    value: Any


@dataclass
class Emit:
    """A value for the caller of a streaming method."""

    value: Any


Effect = Send | ReadLine | ReadBody | Close | Sleep | Notify | Emit
Flow = Generator[Effect, Any, T]


@dataclass
class _Result:
    value: Any = None
    streams: dict[int, Any] = field(default_factory=dict)


class SyncRunner:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def run(self, flow: Flow[T]) -> T:
        result = _Result()
        for _ in self._execute(flow, result):
            pass
        value: T = result.value
        return value

    def iterate(self, flow: Flow[Any]) -> Iterator[Any]:
        return self._execute(flow, _Result())

    def _execute(self, flow: Flow[Any], result: _Result) -> Iterator[Any]:
        sent: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(sent)
                except StopIteration as stop:
                    result.value = stop.value
                    return
                sent, error = None, None
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    sent = self._perform(effect, result.streams)
                except Exception as exc:  # the flow decides: retry, reconnect or raise
                    error = exc
        finally:
            for response, _ in result.streams.values():
                response.close()
            flow.close()

    def _perform(self, effect: Effect, streams: dict[int, Any]) -> Any:
        if isinstance(effect, Send):
            response = self.http.send(effect.request, stream=effect.stream)
            if effect.stream:
                streams[id(response)] = (response, response.iter_lines())
            return response
        if isinstance(effect, ReadLine):
            return next(streams[id(effect.response)][1], None)
        if isinstance(effect, ReadBody):
            return effect.response.read()
        if isinstance(effect, Close):
            streams.pop(id(effect.response), None)
            effect.response.close()
            return None
        if isinstance(effect, Sleep):
            time.sleep(max(0.0, effect.seconds))
            return None
        if isinstance(effect, Notify):
            effect.callback(effect.value)
            return None
        raise TypeError(f"unknown effect {effect!r}")


class AsyncRunner:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def run(self, flow: Flow[T]) -> T:
        result = _Result()
        async for _ in self._execute(flow, result):
            pass
        value: T = result.value
        return value

    def iterate(self, flow: Flow[Any]) -> AsyncIterator[Any]:
        return self._execute(flow, _Result())

    async def _execute(self, flow: Flow[Any], result: _Result) -> AsyncIterator[Any]:
        sent: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(sent)
                except StopIteration as stop:
                    result.value = stop.value
                    return
                sent, error = None, None
                if isinstance(effect, Emit):
                    yield effect.value
                    continue
                try:
                    sent = await self._perform(effect, result.streams)
                except Exception as exc:  # the flow decides: retry, reconnect or raise
                    error = exc
        finally:
            for response, _ in result.streams.values():
                await response.aclose()
            flow.close()

    async def _perform(self, effect: Effect, streams: dict[int, Any]) -> Any:
        if isinstance(effect, Send):
            response = await self.http.send(effect.request, stream=effect.stream)
            if effect.stream:
                streams[id(response)] = (response, response.aiter_lines())
            return response
        if isinstance(effect, ReadLine):
            lines = streams[id(effect.response)][1]
            try:
                return await anext(lines)
            except StopAsyncIteration:
                return None
        if isinstance(effect, ReadBody):
            return await effect.response.aread()
        if isinstance(effect, Close):
            streams.pop(id(effect.response), None)
            await effect.response.aclose()
            return None
        if isinstance(effect, Sleep):
            await asyncio.sleep(max(0.0, effect.seconds))
            return None
        if isinstance(effect, Notify):
            outcome = effect.callback(effect.value)
            if inspect.isawaitable(outcome):
                await outcome
            return None
        raise TypeError(f"unknown effect {effect!r}")
