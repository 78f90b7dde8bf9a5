"""The `/_sim` endpoints every simulator shares: stats, the request log, faults, reset, latency.

Each simulator builds one `SimAdmin`, telling it how to reach its state from a
request and in which fault vocabulary scripted steps and rates are read; the
handlers behave and answer the same way for every provider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from simulators.common import Fault, FaultPlan, FaultVocabulary, Latency, parse_fault_rates


class AdminState(Protocol):
    """What the shared handlers need of a simulator's state."""

    latency: Latency

    @property
    def faults(self) -> FaultPlan: ...

    @property
    def requests(self) -> Iterable[dict[str, Any]]: ...

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...


def bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or None when it is not JSON."""
    try:
        return await request.json()
    except ValueError:
        return None


class SimAdmin:
    """The shared `/_sim` handlers, bound to one simulator's state and fault vocabulary."""

    def __init__(self, state: Callable[[web.Request], AdminState],
                 vocabulary: FaultVocabulary) -> None:
        self._state = state
        self._vocabulary = vocabulary

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._state(request).stats())

    async def requests_log(self, request: web.Request) -> web.Response:
        """The last N logged submits, oldest first, without credentials."""
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return bad("limit must be an integer")
        entries = list(self._state(request).requests)
        return web.json_response(entries[-limit:] if limit > 0 else [])

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._state(request).faults.as_json())

    async def set_faults(self, request: web.Request) -> web.Response:
        """`script` replaces the scripted steps and `rates` the random rules, each if given."""
        plan = self._state(request).faults
        body = await read_json(request)
        if not isinstance(body, dict):
            return bad('expected JSON {"script": [{"endpoint", "fault"}...], "rates": "SPEC"}')
        try:
            script = None
            if "script" in body:
                if not isinstance(body["script"], list):
                    raise ValueError("script must be a list")
                script = [Fault(str(step["fault"]), str(step.get("endpoint", "any")),
                                vocabulary=self._vocabulary) for step in body["script"]]
            rates = (parse_fault_rates(str(body["rates"]), self._vocabulary)
                     if "rates" in body else None)
        except (ValueError, KeyError, TypeError) as exc:
            return bad(f"invalid faults: {exc}")
        if script is not None:
            plan.script.clear()
            plan.script.extend(script)
        if rates is not None:
            plan.rates = rates
        return web.json_response(plan.as_json())

    async def clear_faults(self, request: web.Request) -> web.Response:
        self._state(request).faults.clear()
        return web.json_response(self._state(request).faults.as_json())

    async def reset(self, request: web.Request) -> web.Response:
        """Forget results, counters, billing and the log; latency and faults (and any rate
        limit) go back to the configuration's."""
        self._state(request).reset()
        return web.json_response({"reset": True})

    async def get_latency(self, request: web.Request) -> web.Response:
        return web.json_response({"latency": str(self._state(request).latency)})

    async def set_latency(self, request: web.Request) -> web.Response:
        """Applies to requests from now on; running work keeps its sampled latency."""
        body = await read_json(request)
        if not isinstance(body, dict) or "latency" not in body:
            return bad('expected JSON {"latency": "SPEC"}')
        try:
            self._state(request).latency = Latency.parse(str(body["latency"]))
        except ValueError as exc:
            return bad(str(exc))
        return web.json_response({"latency": str(self._state(request).latency)})

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/_sim/stats", self.stats, name="admin-stats")
        r.add_get("/_sim/requests", self.requests_log, name="admin-requests")
        r.add_get("/_sim/faults", self.get_faults, name="admin-faults")
        r.add_post("/_sim/faults", self.set_faults, name="admin-faults-set")
        r.add_delete("/_sim/faults", self.clear_faults, name="admin-faults-clear")
        r.add_post("/_sim/reset", self.reset, name="admin-reset")
        r.add_get("/_sim/latency", self.get_latency, name="admin-latency")
        r.add_put("/_sim/latency", self.set_latency, name="admin-latency-set")
